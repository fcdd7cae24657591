"""XML trees: bkt's one hardened parser, serialization, and the helpers that edit a tree the
way libvirt lays it out.

The parser refuses what libvirt never writes and what could reach outside the text: no
network, no entity expansion, no DTD or DOCTYPE, no huge trees. Whitespace and comments are
kept, so that a document edited in place differs from the original only where it changed.
Every value goes in as an attribute value or a text node, so it can never add markup.

This is the only module of bkt's packages that imports lxml, and it does so when a tree is
first parsed or built, not when it is imported: plugin modules that subclass
:class:`bkt_vm_plugin.domain_xml.DomainField` stay cheap to load.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bkt_core.errors import BktError

if TYPE_CHECKING:
    from lxml import etree
    from lxml.etree import _Element as Element

__all__ = [
    "CHILD_ORDER",
    "INDENT",
    "DomainXmlError",
    "Element",
    "add_device",
    "append",
    "at",
    "child",
    "children",
    "depth",
    "devices",
    "elements",
    "ensure_child",
    "insert_after",
    "insert_before",
    "insert_child",
    "make",
    "parse_xml",
    "remove",
    "replace",
    "retain_attrs",
    "retain_children",
    "serialize",
    "serialize_pretty",
    "set_text",
    "text_of",
]


def __getattr__(name: str) -> Any:
    # ``Element`` (the type of every node) is lxml's; importing it imports lxml.
    if name == "Element":
        from lxml import etree

        return etree._Element
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DomainXmlError(BktError):
    """A text that is not an XML document bkt can read (not well-formed, a DOCTYPE, another
    root element)."""


# -- parsing and serialization ---------------------------------------------------------------


@functools.cache
def _parser() -> etree.XMLParser:
    # Whitespace and comments are kept (remove_blank_text off) so that a patched document
    # differs from the original only where an owned element changed.
    from lxml import etree

    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
        encoding="utf-8",
    )


def prepare() -> None:
    """Import lxml and make the parser now: a command that waits for virsh calls this
    meanwhile, so that its first :func:`parse_xml` does not pay for them."""
    _parser()


def parse_xml(text: str, root_tag: str | None = "domain") -> Element:
    """The root element of ``text``, which must be ``<root_tag>`` (``<domain>`` unless told;
    None takes any root). Raises :class:`DomainXmlError`."""
    from lxml import etree

    what = "domain XML" if root_tag == "domain" else "XML"
    # Parsed as UTF-8 bytes (the parser's encoding overrides any declaration): lxml refuses
    # str input that carries an encoding declaration.
    try:
        root = etree.fromstring(text.encode("utf-8", "surrogatepass"), _parser())
    except (etree.XMLSyntaxError, UnicodeError, ValueError) as exc:
        raise DomainXmlError(f"{what} is not well-formed: {exc}") from None
    if root is None:  # pragma: no cover - lxml raises for an empty document
        raise DomainXmlError(f"{what} is not well-formed: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        # libvirt never writes a DOCTYPE; refusing it rules out entity tricks entirely.
        raise DomainXmlError(f"{what} is not well-formed: a DOCTYPE is not allowed")
    if root_tag is not None and root.tag != root_tag:
        qname = etree.QName(root)
        shown = f"{root.prefix}:{qname.localname}" if root.prefix else qname.localname
        raise DomainXmlError(f"not a {what}: the root element is <{shown}>, not <{root_tag}>")
    return root


def serialize(root: Element) -> str:
    """The document of ``root`` as text, kept as it is (patch output), with a final newline."""
    from lxml.etree import tostring

    # Comments and processing instructions around the root each go on a line of their own
    # (libxml2 keeps no text outside the root element).
    before = [tostring(n, encoding="unicode", with_tail=False) for n in _outside(root, True)]
    after = [tostring(n, encoding="unicode", with_tail=False) for n in _outside(root, False)]
    body = tostring(root, encoding="unicode", with_tail=False)
    return "\n".join([*before, body, *after]) + "\n"


def _outside(root: Element, preceding: bool) -> list[Element]:
    found = list(root.itersiblings(preceding=preceding))
    return found[::-1] if preceding else found


def serialize_pretty(root: Element) -> str:
    """``root`` indented with two spaces per level (render output), with a final newline."""
    from lxml import etree

    etree.indent(root, space=INDENT)
    return etree.tostring(root, encoding="unicode") + "\n"


# -- tree helpers ----------------------------------------------------------------------------

# Where a new element goes when its parent has none of the same name: libvirt's own order
# (the order of `virsh dumpxml`), so a rendered domain reads like a defined one and an
# inserted element lands where libvirt would put it.
CHILD_ORDER: dict[str, tuple[str, ...]] = {
    "domain": (
        "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
        "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus",
        "iothreads", "iothreadids", "defaultiothread", "cputune", "numatune", "resource",
        "sysinfo", "bootloader", "bootloader_args", "os", "idmap", "features", "cpu", "clock",
        "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices",
        "seclabel", "keywrap", "launchSecurity",
    ),
    "os": (
        "type", "firmware", "loader", "nvram", "kernel", "initrd", "cmdline", "shim", "dtb",
        "acpi", "boot", "bootmenu", "smbios", "bios", "init", "initarg", "initenv", "initdir",
        "inituser", "initgroup",
    ),
    "features": (
        "acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "xen",
        "pvspinlock", "capabilities", "pmu", "vmport", "gic", "smm", "ioapic", "hpt",
        "vmcoreinfo", "htm", "nested-hv", "msrs", "ccf-assist", "cfpc", "sbbc", "ibs", "tcg",
        "async-teardown", "ras",
    ),
    "cpu": ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa"),
    "interface": (
        "mac", "source", "virtualport", "ip", "route", "script", "downscript",
        "backenddomain", "target", "guest", "model", "driver", "backend", "filterref", "tune",
        "teaming", "link", "mtu", "bandwidth", "vlan", "port", "coalesce", "rom", "boot",
        "acpi", "alias", "address",
    ),
    "disk": (
        "driver", "auth", "source", "backingStore", "backenddomain", "geometry", "blockio",
        "target", "iotune", "boot", "readonly", "shareable", "transient", "serial", "wwn",
        "vendor", "product", "encryption", "alias", "address",
    ),
    "devices": (
        "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard",
        "serial", "parallel", "console", "channel", "input", "tpm", "graphics", "sound",
        "audio", "video", "hostdev", "redirdev", "redirfilter", "hub", "watchdog",
        "memballoon", "rng", "panic", "shmem", "memory", "iommu", "vsock", "crypto", "pstore",
    ),
}  # fmt: skip

INDENT = "  "


def elements(parent: Element) -> list[Element]:
    """The child elements of ``parent``, in document order."""
    return [c for c in parent if isinstance(c.tag, str)]


def children(parent: Element, tag: str) -> list[Element]:
    """The child elements ``<tag>`` (in no namespace) of ``parent``."""
    if tag.isidentifier():
        return list(parent.iterchildren(tag))  # as below, the scan in lxml's C
    return [c for c in parent if c.tag == tag]


def child(parent: Element | None, tag: str) -> Element | None:
    """The first child element ``<tag>`` of ``parent`` (None for no parent or no such child)."""
    if parent is None:
        return None
    if tag.isidentifier():
        # lxml's scan, in C: each domain's parse looks up dozens of elements, and the tag
        # of every child passed would be made a Python string. A name with no namespace,
        # prefix or wildcard matches there exactly the elements whose tag equals it.
        return next(parent.iterchildren(tag), None)
    for c in parent:
        if c.tag == tag:
            return c
    return None


def at(parent: Element | None, *path: str) -> Element | None:
    """The element at ``path`` below ``parent``, following the first match at each step."""
    node = parent
    for tag in path:
        node = child(node, tag)
    return node


def devices(domain: Element, tag: str) -> list[Element]:
    """The ``<devices>`` children ``<tag>`` of ``domain``, in document order."""
    found = child(domain, "devices")
    return children(found, tag) if found is not None else []


def add_device(domain: Element, new: Element) -> Element:
    """Adds the device ``new`` to ``domain``'s ``<devices>`` (created when missing), after the
    last device of its name, else at libvirt's place for it."""
    return insert_child(ensure_child(domain, "devices"), new)


def text_of(node: Element) -> str:
    """The own text of element ``node``, exactly (comments and child elements are not
    text)."""
    return "".join([node.text or "", *(c.tail or "" for c in node)])


def set_text(node: Element, text: str) -> None:
    """Replaces the content of element ``node`` (its children too) with ``text``."""
    for c in list(node):
        node.remove(c)
    node.text = text


def depth(node: Element) -> int:
    """How many elements enclose ``node`` (0 for the root)."""
    return sum(1 for _ in node.iterancestors())


def _blank(text: str | None) -> bool:
    return text is None or text.strip() == ""


def _leading(node: Element) -> str | None:
    """The text right before ``node``: its previous sibling's tail, or its parent's text."""
    prev = node.getprevious()
    if prev is not None:
        return prev.tail
    parent = node.getparent()
    return parent.text if parent is not None else None


def _set_leading(node: Element, text: str | None) -> None:
    prev = node.getprevious()
    if prev is not None:
        prev.tail = text
    else:
        parent = node.getparent()
        if parent is not None:
            parent.text = text


def _indent_before(node: Element) -> str:
    """The whitespace that puts an element on its own line at ``node``'s level."""
    leading = _leading(node)
    if leading is not None and _blank(leading) and "\n" in leading:
        return "\n" + leading.rsplit("\n", 1)[1]
    return "\n" + INDENT * depth(node)


def _layout(new: Element, indent: str) -> None:
    """Lays out the inside of a new element whose own line starts with ``indent``: each child
    on a line of its own, one level deeper."""
    kids = elements(new)
    if not kids:
        return
    inner = indent + INDENT
    if _blank(new.text):
        new.text = inner
    for kid in kids:
        if _blank(kid.tail):
            kid.tail = inner
        _layout(kid, inner)
    if _blank(kids[-1].tail):
        kids[-1].tail = indent


def insert_after(anchor: Element, new: Element) -> Element:
    """Inserts ``new`` right after ``anchor``, on a line of its own, indented like it."""
    indent = _indent_before(anchor)
    new.tail = anchor.tail
    anchor.addnext(new)
    anchor.tail = indent
    _layout(new, indent)
    return new


def insert_before(anchor: Element, new: Element) -> Element:
    """Inserts ``new`` right before ``anchor``, on a line of its own, indented like it."""
    indent = _indent_before(anchor)
    anchor.addprevious(new)
    new.tail = indent
    _layout(new, indent)
    return new


def append(parent: Element, new: Element) -> Element:
    """Inserts ``new`` as the last child element of ``parent``."""
    last = elements(parent)
    if last:
        return insert_after(last[-1], new)
    # No element inside: one level deeper than the parent's own line.
    outer = _indent_before(parent) if parent.getparent() is not None else "\n"
    inner = outer + INDENT
    if list(parent):  # only comments or processing instructions inside
        tail_holder = parent[-1]
        tail_holder.tail = inner
        tail_holder.addnext(new)
    else:
        if _blank(parent.text):
            parent.text = inner
        parent.append(new)
    new.tail = outer
    _layout(new, inner)
    return new


def insert_child(parent: Element, new: Element) -> Element:
    """Inserts ``new`` into ``parent``: after the last element of the same name, else at its
    place in :data:`CHILD_ORDER` (at the end for names the table does not know)."""
    tag = new.tag
    same = children(parent, tag) if isinstance(tag, str) else []
    if same:
        return insert_after(same[-1], new)
    order = CHILD_ORDER.get(parent.tag if isinstance(parent.tag, str) else "", ())
    if isinstance(tag, str) and tag in order:
        rank = order.index(tag)
        kids = elements(parent)
        before = [k for k in kids if k.tag in order and order.index(k.tag) < rank]
        if before:
            return insert_after(before[-1], new)
        after = [k for k in kids if k.tag in order and order.index(k.tag) > rank]
        if after:
            return insert_before(after[0], new)
    return append(parent, new)


def ensure_child(parent: Element, tag: str) -> Element:
    """The first ``<tag>`` child of ``parent``, created at its place if there is none."""
    found = child(parent, tag)
    return found if found is not None else insert_child(parent, make(tag))


def remove(node: Element) -> None:
    """Removes ``node`` together with the whitespace that indents it."""
    parent = node.getparent()
    if parent is None:
        return
    leading = _leading(node)
    tail = node.tail
    if _blank(leading):
        _set_leading(node, tail)
    else:
        _set_leading(node, (leading or "") + (tail or ""))
    node.tail = None
    parent.remove(node)


def replace(old: Element, new: Element) -> Element:
    """Puts ``new`` where ``old`` is."""
    new.tail = old.tail
    parent = old.getparent()
    if parent is not None:
        parent.replace(old, new)
    _layout(new, _indent_before(new))
    return new


def retain_children(node: Element, keep: Iterable[str]) -> None:
    """Removes every child element of ``node`` but those named in ``keep``."""
    kept = set(keep)
    for c in elements(node):
        if c.tag not in kept:
            remove(c)


def retain_attrs(node: Element, keep: Iterable[str]) -> None:
    """Removes every attribute of ``node`` but those named in ``keep``."""
    kept = set(keep)
    for name in list(node.attrib):
        if name not in kept:
            del node.attrib[name]


def make(
    tag: str,
    attrs: Sequence[tuple[str, str]] = (),
    *kids: Element,
    text: str = "",
    nsmap: Mapping[str, str] | None = None,
) -> Element:
    """A new element ``tag`` with the attributes ``attrs`` (name, value pairs) in order, the
    children ``kids`` and ``text`` (values escaped by lxml).
    ``tag`` may be ``{namespace}name``, with ``nsmap`` giving the prefix to write
    (``{"bkt": "urn:bkt:vm:1"}``)."""
    from lxml import etree

    node = etree.Element(tag, nsmap=dict(nsmap) if nsmap else None)
    for name, value in attrs:
        node.set(name, value)
    if text:
        node.text = text
    for kid in kids:
        node.append(kid)
    return node
