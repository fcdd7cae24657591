"""Domain XML: render, parse and patch are one mapping.

The manifest owns a small set of elements of a libvirt domain. Each
piece of that set is a :class:`DomainField`, contributed through the ``bkt_domain_fields``
hook (the built-in ones live in :mod:`bkt_vm_plugin.mapping`), with its render, parse and patch
side by side. :class:`DomainMapping` runs every field:

- :meth:`DomainMapping.render` builds a complete domain for a new VM;
- :meth:`DomainMapping.parse` reads each field back, saying why when it cannot round-trip;
- :meth:`DomainMapping.patch` edits ``virsh dumpxml --inactive --security-info`` output in
  place, calling a field only when it is out of sync, so that everything the manifest does not
  own (UUID, MACs, addresses, extra devices, passwords, metadata, comments) survives;
- :meth:`DomainMapping.diff` is the one definition of "in sync".

This is the only module of the VM plugin (with :mod:`bkt_vm_plugin.mapping`) that imports
lxml, and it has the one parser: no network, no entity expansion, no DTD, no huge trees.
Documents are edited as lxml trees, so a manifest value is always an attribute value or a text
node and can never add markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lxml import etree

from bkt_core.errors import BktError, PluginError
from bkt_core.plan import FieldChange

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition

__all__ = [
    "MARKER_NAMESPACE",
    "AttachedIso",
    "DomainContext",
    "DomainField",
    "DomainMapping",
    "DomainXmlError",
    "Element",
    "Parsed",
    "PatchRefused",
    "Reading",
    "parse_xml",
]

Element = etree._Element

#: The namespace of bkt's marker in ``<metadata>``: ``<bkt:vm xmlns:bkt="urn:bkt:vm:1"/>``.
MARKER_NAMESPACE = "urn:bkt:vm:1"
MARKER_PREFIX = "bkt"
MARKER_NAME = "vm"
MARKER_TAG = f"{{{MARKER_NAMESPACE}}}{MARKER_NAME}"

HOOK = "bkt_domain_fields"


# -- errors --------------------------------------------------------------------------------


class DomainXmlError(BktError):
    """A text that is not a domain XML bkt can read."""


class PatchRefused(BktError):
    """A change that bkt does not make to this domain (a NUMA guest's memory, ...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"cannot change {field}: {reason}")
        self.field = field
        self.reason = reason


# -- parsing and serialization ---------------------------------------------------------------

# Whitespace and comments are kept (remove_blank_text off) so that a patched document differs
# from the original only where an owned element changed.
_PARSER = etree.XMLParser(
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


def parse_xml(text: str, root_tag: str = "domain") -> Element:
    """The ``<domain>`` (or ``root_tag``) element of ``text``. Raises :class:`DomainXmlError`."""
    # Parsed as UTF-8 bytes (the parser's encoding overrides any declaration): lxml refuses
    # str input that carries an encoding declaration.
    try:
        root = etree.fromstring(text.encode("utf-8", "surrogatepass"), _PARSER)
    except (etree.XMLSyntaxError, UnicodeError, ValueError) as exc:
        raise DomainXmlError(f"domain XML is not well-formed: {exc}") from None
    if root is None:  # pragma: no cover - lxml raises for an empty document
        raise DomainXmlError("domain XML is not well-formed: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        # libvirt never writes a DOCTYPE; refusing it rules out entity tricks entirely.
        raise DomainXmlError("domain XML is not well-formed: a DOCTYPE is not allowed")
    if root.tag != root_tag:
        qname = etree.QName(root)
        shown = f"{root.prefix}:{qname.localname}" if root.prefix else qname.localname
        raise DomainXmlError(f"not a domain XML: the root element is <{shown}>, not <{root_tag}>")
    return root


def serialize(root: Element) -> str:
    """The document of ``root`` as text, kept as it is (patch output), with a final newline."""
    # Comments and processing instructions around the root each go on a line of their own
    # (libxml2 keeps no text outside the root element).
    before = [etree.tostring(n, encoding="unicode", with_tail=False) for n in _outside(root, True)]
    after = [etree.tostring(n, encoding="unicode", with_tail=False) for n in _outside(root, False)]
    body = etree.tostring(root, encoding="unicode", with_tail=False)
    return "\n".join([*before, body, *after]) + "\n"


def _outside(root: Element, preceding: bool) -> list[Element]:
    found = list(root.itersiblings(preceding=preceding))
    return found[::-1] if preceding else found


def serialize_pretty(root: Element) -> str:
    """``root`` indented with two spaces per level (render output), with a final newline."""
    etree.indent(root, space="  ")
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
    return [c for c in parent if c.tag == tag]


def child(parent: Element | None, tag: str) -> Element | None:
    """The first child element ``<tag>`` of ``parent``; None when there is none (or no
    ``parent``)."""
    if parent is None:
        return None
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


def text_of(node: Element) -> str:
    """The element's own text, exactly (comments and child elements are not text)."""
    return "".join([node.text or "", *(c.tail or "" for c in node)])


def set_text(node: Element, text: str) -> None:
    """Replaces the element's content with ``text``."""
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
    return found if found is not None else insert_child(parent, etree.Element(tag))


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
    tag: str, attrs: Sequence[tuple[str, str]] = (), *kids: Element, text: str = ""
) -> Element:
    """A new element with attributes in order, children and text (values escaped by lxml)."""
    node = etree.Element(tag)
    for name, value in attrs:
        node.set(name, value)
    if text:
        node.text = text
    for kid in kids:
        node.append(kid)
    return node


def has_marker(domain: Element) -> bool:
    """Whether ``<metadata>`` holds bkt's marker (by namespace and name; any prefix)."""
    metadata = child(domain, "metadata")
    return metadata is not None and any(c.tag == MARKER_TAG for c in metadata)


# -- what the mapping passes around ----------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What a domain says about one field.

    Clean: ``reason`` is None and ``value`` is the field's value. Lossy: the owned element
    holds ``value`` but the domain has more than the manifest can describe; drift compares the
    value, capture does not write it. Unsupported: no manifest value describes it (``value``
    is None); it is drift against any manifest, and patch replaces it.
    """

    value: Any | None = None
    reason: str | None = None
    lossy: bool = False

    @classmethod
    def clean(cls, value: Any) -> Reading:
        return cls(value)

    @classmethod
    def unsupported(cls, reason: str) -> Reading:
        return cls(None, reason)

    @classmethod
    def lossy_(cls, value: Any, reason: str) -> Reading:
        return cls(value, reason, lossy=True)

    @property
    def is_clean(self) -> bool:
        return self.reason is None

    @property
    def has_value(self) -> bool:
        """Whether drift can compare a value (clean or lossy)."""
        return self.reason is None or self.lossy


@dataclass(frozen=True)
class AttachedIso:
    """An ISO source of the manifest and the file that holds it."""

    source: Any
    path: str


@dataclass(frozen=True)
class DomainContext:
    """The facts about a VM that are not in its manifest entry, computed once and shared by
    render, patch, parse and diff so that they agree.

    ``disk_path`` is the expanded path, ``disk_format`` the image's format (``qcow2`` or
    ``raw``; qcow2 for a disk yet to be created; status passes the domain's own format, so
    that it never reports ``disk_format``). ``isos`` are the ISO files to attach, in manifest
    order; a source left out because its file is missing (``missing``) or not cached
    (``left_out``) is not drift, and ``warnings`` say so. ``facts`` are observed facts about
    the domain that its XML does not hold (``autostart``, ``active``).
    """

    name: str
    disk_path: str
    disk_format: str = "qcow2"
    isos: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    attached: tuple[AttachedIso, ...] = ()
    missing: tuple[AttachedIso, ...] = ()
    left_out: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    home: str | None = None
    iso_cache: str | None = None


def spell(value: Any) -> str:
    """A value as the manifest spells it, for a field change: numbers in decimal,
    enums as written, booleans ``true``/``false``, lists joined with ``, `` or ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


class DomainField:
    """One piece of the manifest <-> domain XML mapping: the manifest fields in ``fields``
    (in diff order), with their render, parse and patch side by side.

    Subclass it, set ``fields``, and implement :meth:`parse` plus (when ``in_xml``)
    :meth:`render` and :meth:`patch`. ``extra`` names values that are compared (and so can
    drift) but are not manifest fields (``disk_format``). A field with ``in_xml = False``
    (``autostart``) is not in the domain XML: it reads ``ctx.facts`` and a change of it alone
    needs no ``virsh define``. ``plugin`` is set to the contributing plugin's name when the
    mapping is built, so that its failures name it.

    The laws, checked for every installed field by bkt's property tests: parse of render
    gives :meth:`desired` back; patch changes only elements this field owns, and parse of
    patch gives :meth:`desired` back. The mapping calls :meth:`patch` only when the field is
    out of sync, but patch must be a no-op when it is not.
    """

    fields: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    in_xml: bool = True
    plugin: str = "(unregistered)"

    @property
    def compared(self) -> tuple[str, ...]:
        """Every value diff compares: the manifest fields, then ``extra``."""
        return self.fields + self.extra

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Add this field's elements to ``domain``, a new domain being built."""

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        """A :class:`Reading` for each name in :attr:`compared`. Must not raise for any
        well-formed ``<domain>``."""
        raise NotImplementedError

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        """What :meth:`parse` must read once ``vm`` is applied, for each name in
        :attr:`compared`. The default: the definition's values of :attr:`fields`."""
        return {name: vm.field(name) for name in self.fields}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Bring the elements this field owns in ``domain`` to ``vm``, changing nothing
        else. Raise :class:`PatchRefused` for a change bkt does not make."""

    def spell(self, name: str, value: Any) -> str:
        """``value`` of ``name`` as a field change shows it (and as diff compares it)."""
        return spell(value)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        """The manifest values capture writes for the clean readings of :attr:`fields`.
        ``readings`` holds every field's reading (a field may depend on another's, as the CPU
        model's default depends on the domain type); ``base`` is the definition capture starts
        from and ``ctx`` its context, when there is one. The default writes each clean value
        as it is."""
        return {name: readings[name].value for name in self.fields if readings[name].is_clean}


@dataclass(frozen=True)
class Parsed:
    """What :meth:`DomainMapping.parse` observed: the ``<name>``, whether bkt's marker is in
    ``<metadata>`` (never part of the manifest), and a reading for each compared value."""

    name: str | None
    has_marker: bool
    readings: Mapping[str, Reading]
    manifest_fields: tuple[str, ...] = ()

    def cdroms(self) -> tuple[str, ...]:
        """The files of the domain's own CD-ROMs, as ``iso_sources`` read them."""
        reading = self.readings.get("iso_sources")
        if reading is None or not reading.has_value or not reading.value:
            return ()
        return tuple(str(path) for path in reading.value)

    def problems(self) -> list[tuple[str, str]]:
        """Every manifest field that cannot be captured cleanly, with the reason."""
        return [
            (name, reading.reason)
            for name in self.manifest_fields
            if (reading := self.readings[name]).reason is not None
        ]


# The order in which the built-in fields' changes are listed. Other fields follow in
# the order they were registered, and fields that are not in the XML (autostart) come last.
DIFF_ORDER = (
    "memory_gb", "vcpus", "disk_path", "disk_format", "boot", "tpm", "network", "graphics",
    "iso_sources", "cpu_model", "virt_type", "secure_boot",
)  # fmt: skip

_T = TypeVar("_T")


def _failed(mapping_field: DomainField, method: str, args: Iterable[Any]) -> str:
    """What failed, for a field's error: which method, for which VM and which of its fields
    (what the user can look at in the manifest)."""
    vm = next((f" for VM {a.name}" for a in args if isinstance(a, DomainContext)), "")
    names = mapping_field.fields
    return f"{method} failed{vm} (field{'s' if len(names) > 1 else ''} {', '.join(names)})"


class DomainMapping:
    """Every :class:`DomainField` of a host, in the order they apply."""

    def __init__(self, fields: Iterable[DomainField]) -> None:
        self.fields: tuple[DomainField, ...] = tuple(fields)
        owners: dict[str, str] = {}
        for mapping_field in self.fields:
            for name in mapping_field.compared:
                if name in owners:
                    raise PluginError(
                        mapping_field.plugin,
                        HOOK,
                        f"maps VM field {name!r}, which plugin {owners[name]} maps too",
                    )
                owners[name] = mapping_field.plugin
        self.owners = owners
        names = [n for f in self.fields for n in f.compared]
        in_xml = {n: f.in_xml for f in self.fields for n in f.compared}

        def rank(name: str) -> tuple[int, int]:
            if not in_xml[name]:
                return (2, names.index(name))
            if name in DIFF_ORDER:
                return (0, DIFF_ORDER.index(name))
            return (1, names.index(name))

        self._order = {n: i for i, n in enumerate(sorted(names, key=rank))}
        self.manifest_fields: tuple[str, ...] = tuple(n for f in self.fields for n in f.fields)

    def _call(
        self, mapping_field: DomainField, method: str, call: Callable[..., _T], *args: Any
    ) -> _T:
        try:
            return call(*args)
        except BktError as exc:
            from bkt_vm_plugin.blame import is_own, plugin_error

            # A refusal on purpose: bkt's own fields speak as bkt; another plugin's names
            # the plugin and keeps its hint.
            if isinstance(exc, PluginError) or is_own(type(mapping_field).__module__):
                raise
            detail = f"{_failed(mapping_field, method, args)}: {exc.message}"
            raise plugin_error(mapping_field.plugin, HOOK, detail, exc) from exc
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin is its failure too
            detail = f"{_failed(mapping_field, method, args)}: {type(exc).__name__}: {exc}"
            raise PluginError(mapping_field.plugin, HOOK, detail) from exc

    def field_of(self, name: str) -> DomainField:
        for mapping_field in self.fields:
            if name in mapping_field.compared:
                return mapping_field
        raise KeyError(name)

    # -- the four directions ---------------------------------------------------------------

    def render(self, vm: VmDefinition, ctx: DomainContext) -> str:
        """The domain XML of a new VM ``ctx.name`` described by ``vm``."""
        domain = etree.Element("domain")
        insert_child(domain, make("name", text=ctx.name))
        metadata = insert_child(domain, make("metadata"))
        metadata.append(etree.Element(MARKER_TAG, nsmap={MARKER_PREFIX: MARKER_NAMESPACE}))
        for f in self.fields:
            if f.in_xml:
                self._call(f, "render", f.render, domain, vm, ctx)
        return serialize_pretty(domain)

    def parse(self, xml: str, ctx: DomainContext) -> Parsed:
        """What ``xml`` (best ``dumpxml --inactive``) says about every field. Raises only
        :class:`DomainXmlError` (and :class:`PluginError` for a failing plugin)."""
        domain = parse_xml(xml)
        return self.parse_tree(domain, ctx)

    def parse_tree(self, domain: Element, ctx: DomainContext) -> Parsed:
        readings: dict[str, Reading] = {}
        for f in self.fields:
            readings.update(self._readings(f, domain, ctx))
        name_node = child(domain, "name")
        return Parsed(
            name=text_of(name_node) if name_node is not None else None,
            has_marker=has_marker(domain),
            readings=readings,
            manifest_fields=self.manifest_fields,
        )

    def _readings(
        self, mapping_field: DomainField, domain: Element, ctx: DomainContext
    ) -> dict[str, Reading]:
        got = self._call(mapping_field, "parse", mapping_field.parse, domain, ctx)
        out: dict[str, Reading] = {}
        for name in mapping_field.compared:
            reading = got.get(name) if isinstance(got, Mapping) else None
            if not isinstance(reading, Reading):
                raise PluginError(
                    mapping_field.plugin, HOOK, f"parse failed: it gave no reading for {name!r}"
                )
            out[name] = reading
        return out

    def patch(self, xml: str, vm: VmDefinition, ctx: DomainContext) -> str:
        """``xml`` (``dumpxml --inactive --security-info``) with every owned element brought
        to ``vm``. A field in sync is not touched, so an in-sync domain comes back as it was
        (as lxml writes it). The name is never changed. Raises :class:`PatchRefused`."""
        domain = parse_xml(xml)
        for f in self.fields:
            if not f.in_xml:
                continue
            # Read on the tree as the earlier fields left it (virt_type decides what the CPU
            # model reads as).
            if not self._changes(f, self._readings(f, domain, ctx), vm, ctx):
                continue
            self._call(f, "patch", f.patch, domain, vm, ctx)
        return serialize(domain)

    def _changes(
        self,
        mapping_field: DomainField,
        readings: Mapping[str, Reading],
        vm: VmDefinition,
        ctx: DomainContext,
    ) -> list[FieldChange]:
        f = mapping_field
        wanted = self._call(f, "desired", f.desired, vm, ctx)
        changes = []
        for name in f.compared:
            if name not in wanted:
                raise PluginError(f.plugin, HOOK, f"desired failed: it gave no value for {name!r}")
            new = self._call(f, "spell", f.spell, name, wanted[name])
            reading = readings[name]
            if reading.has_value:
                old = self._call(f, "spell", f.spell, name, reading.value)
                if old == new:
                    continue
            else:
                old = f"({reading.reason})"
            changes.append(FieldChange(name, old, new))
        return changes

    def diff(self, parsed: Parsed, vm: VmDefinition, ctx: DomainContext) -> list[FieldChange]:
        """The changes that bring the observed domain to ``vm``, old -> new in manifest
        spelling, in :data:`DIFF_ORDER`. Empty means in sync: the one definition of it."""
        changes = [
            change for f in self.fields for change in self._changes(f, parsed.readings, vm, ctx)
        ]
        return sorted(changes, key=lambda c: self._order[c.field])

    def needs_define(self, changes: Iterable[FieldChange]) -> bool:
        """Whether ``changes`` touch the domain XML (a change of autostart alone does not)."""
        return any(self.field_of(c.field).in_xml for c in changes)

    def capture_values(
        self,
        parsed: Parsed,
        base: VmDefinition | None = None,
        ctx: DomainContext | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """What capture writes: ``values`` of every manifest field read cleanly (in manifest
        spelling; with ``base`` and its ``ctx``, the disk path and ISO sources keep
        ``base``'s spelling), and ``kept``: the fields that keep ``base``'s value, with why."""
        values: dict[str, Any] = {}
        kept: dict[str, str] = {}
        for f in self.fields:
            readings = {name: parsed.readings[name] for name in f.compared}
            for name in f.fields:
                reason = readings[name].reason
                if reason is not None:
                    kept[name] = reason
            values.update(self._call(f, "capture", f.capture, parsed.readings, base, ctx))
        return values, kept
