"""Device-by-device differences between two libvirt domain definitions, as readable lines.

Made for comparing what ``virsh dumpxml --inactive`` stores for a domain that virt-install
wrote with what it stores for the domain bkt defined from a manifest entry: both have passed
through libvirt, which fills in the same implicit devices and defaults for both, so what is
left are the choices each tool made. :func:`compare_domains` returns one line per
difference, sorted, such as::

    devices/sound: virt-install model=ich9, bkt (none)
    devices/disk[disk]/target@bus: virt-install sata, bkt virtio
    devices/controller[pci pcie-root-port]: virt-install 14, bkt 6
    os/boot: virt-install hd, bkt hd, cdrom

A path names an element the way XPath would, with the attributes that tell devices of one
kind apart in brackets (``disk[cdrom]``, ``controller[usb qemu-xhci]``, ``timer[rtc]``,
``input[tablet usb]``); ``@name`` is an attribute. An element present on one side only is
summarised by its attributes and children (:func:`summary`). Where one side has several
elements of a kind (root ports, redirection channels, CD-ROMs), the two lists are compared
as a whole (in order for ``<boot>``, as multisets otherwise) and shown as ``Nx summary``, or
as the bare count when the elements carry nothing but their kind.

What naturally differs between any two domains is left out (:func:`strip_incidental`): the
name and UUID, bkt's own ``<metadata>`` marker, every ``<address>`` and ``<alias>``, MAC
addresses, the files behind disks and CD-ROMs (whether a CD-ROM holds a medium still
counts), the target device names libvirt derives from the order of the disks
(``vda``/``sda``; the bus still counts), controller indexes, the chassis and port numbers
libvirt gives PCI controllers, and the NVRAM path (named after the domain).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from lxml import etree

__all__ = [
    "BKT_NAMESPACE",
    "Element",
    "compare_domains",
    "differences_by_path",
    "strip_incidental",
    "summary",
]

Element = etree._Element

BKT_NAMESPACE = "urn:bkt:vm:1"
# Prefixes for the namespaced metadata a reader meets in domains: libosinfo's (virt-install,
# virt-manager) and bkt's marker.
PREFIXES = {
    "http://libosinfo.org/xmlns/libvirt/domain/1.0": "libosinfo",
    BKT_NAMESPACE: "bkt",
}
# Children compared in document order (their order is their meaning), each shown as the
# value of one attribute.
ORDERED = {"boot": "dev"}


def compare_domains(
    first: str | bytes, second: str | bytes, labels: tuple[str, str] = ("virt-install", "bkt")
) -> list[str]:
    """The differences between two domain XML documents, sorted, one readable line each
    (``PATH: FIRST-LABEL value, SECOND-LABEL value``); empty when they are equivalent."""
    a = strip_incidental(_parse(first))
    b = strip_incidental(_parse(second))
    lines: list[str] = []
    _compare("", a, b, labels, lines)
    return sorted(lines)


def _parse(xml: str | bytes) -> Element:
    data = xml.encode() if isinstance(xml, str) else xml
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True, resolve_entities=False)
    return etree.fromstring(data, parser)


def strip_incidental(domain: Element) -> Element:
    """A copy of ``domain`` without what differs between any two domains (see the module's
    docstring)."""
    root = etree.fromstring(etree.tostring(domain))
    for tag in ("name", "uuid"):
        _remove_all(root.findall(tag))
    _remove_all(root.findall(f"metadata/{{{BKT_NAMESPACE}}}*"))
    metadata = root.find("metadata")
    if metadata is not None and len(metadata) == 0:
        _remove_all([metadata])
    _remove_all(root.iter("address", "alias"))
    _remove_all(root.findall("devices/interface/mac"))
    _remove_all(root.findall("os/nvram"))
    for disk in root.findall("devices/disk"):
        for source in disk.findall("source"):
            for attribute in ("file", "dev", "dir", "name"):
                source.attrib.pop(attribute, None)
        for target in disk.findall("target"):
            target.attrib.pop("dev", None)
    for controller in root.findall("devices/controller"):
        controller.attrib.pop("index", None)
        if controller.get("type") == "pci":
            _remove_all(controller.findall("model"))
            _remove_all(controller.findall("target"))
    return root


def _remove_all(elements: Iterable[Element]) -> None:
    for element in list(elements):
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)


def _tag(element: Element) -> str:
    qname = etree.QName(element)
    if qname.namespace is None:
        return qname.localname
    return f"{PREFIXES.get(qname.namespace, qname.namespace)}:{qname.localname}"


def _key(element: Element, parent: str) -> tuple[str, tuple[str, ...]]:
    """The path step of ``element`` below the element at path ``parent``, and the attributes
    that step already names (left out of its summary)."""
    tag = _tag(element)

    def named(*attributes: str) -> tuple[str, tuple[str, ...]]:
        values = [str(element.get(a)) for a in attributes if element.get(a) is not None]
        return (f"{tag}[{' '.join(values)}]" if values else tag), attributes

    if parent == "devices":
        if tag == "disk":
            return named("device")
        if tag == "controller":
            return named("type", "model")
        if tag == "input":
            return named("type", "bus")
        if tag == "channel":
            target = element.find("target")
            name = target.get("name") if target is not None else None
            return (f"channel[{name}]" if name else tag), ()
    if tag in ("timer", "feature"):
        return named("name")
    return tag, ()


def _value(text: str | None) -> str:
    return "(none)" if text is None else text


def summary(element: Element, skip: tuple[str, ...] = ()) -> str:
    """A compact description of ``element``: ``name=value`` for each attribute but those in
    ``skip``, then each child as ``tag(summary)`` (or just ``tag`` when it is empty), then
    its text."""
    parts = [f"{k}={v}" for k, v in element.attrib.items() if k not in skip]
    text = (element.text or "").strip()
    for child in element:
        inner = summary(child)
        parts.append(f"{_tag(child)}({inner})" if inner else _tag(child))
    if text:
        parts.append(text)
    return " ".join(parts)


def _item(element: Element, skip: tuple[str, ...]) -> str:
    shown_by = ORDERED.get(_tag(element))
    if shown_by is not None and set(element.attrib) == {shown_by} and len(element) == 0:
        return str(element.get(shown_by))
    return summary(element, skip)


def _describe(elements: list[Element], skip: tuple[str, ...], counted: bool) -> str:
    """``(none)``; the summary of one element; ``Nx summary`` of several alike ones, or just
    ``N`` when they carry nothing but their kind (``counted``: either side has several)."""
    if not elements:
        return "(none)"
    summaries = [_item(e, skip) for e in elements]
    if len(set(summaries)) == 1:
        only = summaries[0]
        if not only:
            return str(len(summaries)) if counted else "(present)"
        return only if len(summaries) == 1 else f"{len(summaries)}x {only}"
    return ", ".join(summaries)


def _compare(path: str, a: Element, b: Element, labels: tuple[str, str], lines: list[str]) -> None:
    first, second = labels

    def differ(where: str, x: str, y: str) -> None:
        lines.append(f"{where}: {first} {x}, {second} {y}")

    for attribute in sorted(set(a.attrib) | set(b.attrib)):
        x, y = a.get(attribute), b.get(attribute)
        if x != y:
            differ(f"{path}@{attribute}", _value(x), _value(y))
    x_text, y_text = (a.text or "").strip(), (b.text or "").strip()
    if x_text != y_text:
        differ(path or "/", x_text or "(none)", y_text or "(none)")
    groups_a, skips = _group(a, path)
    groups_b, skips_b = _group(b, path)
    skips.update(skips_b)
    for key in sorted(set(groups_a) | set(groups_b)):
        la, lb = groups_a.get(key, []), groups_b.get(key, [])
        where = f"{path}/{key}" if path else key
        if len(la) == 1 and len(lb) == 1:
            _compare(where, la[0], lb[0], labels, lines)
            continue
        skip = skips[key]
        sa, sb = [_item(e, skip) for e in la], [_item(e, skip) for e in lb]
        same = sa == sb if _tag((la or lb)[0]) in ORDERED else Counter(sa) == Counter(sb)
        if not same:
            counted = max(len(la), len(lb)) > 1
            differ(where, _describe(la, skip, counted), _describe(lb, skip, counted))


def _group(
    element: Element, path: str
) -> tuple[dict[str, list[Element]], dict[str, tuple[str, ...]]]:
    groups: dict[str, list[Element]] = {}
    skips: dict[str, tuple[str, ...]] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        key, skip = _key(child, path)
        groups.setdefault(key, []).append(child)
        skips[key] = skip
    return groups, skips


def differences_by_path(lines: Iterable[str]) -> dict[str, str]:
    """``{path: rest of the line}`` for lines of :func:`compare_domains` (for assertions
    that look one path up)."""
    result: dict[str, str] = {}
    for line in lines:
        path, _, rest = line.partition(": ")
        result[path] = rest
    return result
