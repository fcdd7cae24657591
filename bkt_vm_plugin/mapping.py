"""The core fields of the domain XML mapping, one :class:`DomainField` per owned part: the
domain type, memory, vCPUs, TPM, network and graphics here; the disk and the ISO CD-ROMs in
:mod:`bkt_vm_plugin.mapping_disks`, the firmware in :mod:`bkt_vm_plugin.mapping_boot`, the
devices an OS cares about (NIC and video model, clock, Hyper-V, sound, USB redirection) in
:mod:`bkt_vm_plugin.mapping_devices`. The
``vm`` plugin contributes them (:data:`CORE_FIELDS`); ``cpu_model`` and ``autostart`` are the
fields of plugins of their own (:mod:`bkt_vm_plugin.cpu_model`, :mod:`bkt_vm_plugin.autostart`).

Each class holds render, parse and patch of its part side by side; parse is also patch's
comparator (the mapping calls patch only for a field that is out of sync), so a domain in sync
comes back unchanged. Each field says what it reads, what it treats as the default, and why a
value it cannot describe does not round-trip.

Not read at all, so never drift and never enforced on existing domains: machine and
arch, boot order, serial/console, tablet, SPICE channel, TPM model, disk and CD-ROM
target/readonly, CD-ROM bus, autoport/port, acpi/apic, ``on_*``, ``maxMemory``. The disk bus,
NIC model and video model are read only when the manifest manages them (``disk_bus``,
``nic_model``, ``video``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkt_vm_plugin.definition import GIB, U32_MAX
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, PatchRefused, Reading
from bkt_vm_plugin.mapping_boot import BootField
from bkt_vm_plugin.mapping_devices import (
    ClockField,
    HypervField,
    NicModelField,
    SoundField,
    UsbRedirectionField,
    VideoField,
)
from bkt_vm_plugin.mapping_disks import DiskBusField, DiskField, IsoField
from bkt_vm_plugin.paths import BRIDGE_PREFIX, network_kind
from bkt_vm_plugin.xmltree import (
    add_device,
    append,
    at,
    child,
    children,
    devices,
    elements,
    ensure_child,
    insert_child,
    make,
    remove,
    replace,
    retain_attrs,
    retain_children,
    set_text,
    text_of,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "CORE_FIELDS",
    "GraphicsField",
    "MemoryField",
    "NetworkField",
    "TpmField",
    "VcpusField",
    "VirtTypeField",
]


KIB = 1024
_UNSIGNED = re.compile(r"[0-9]+")


def _unsigned(text: str) -> int | None:
    text = text.strip()
    return int(text) if _UNSIGNED.fullmatch(text) else None


def _has_numa_cells(domain: Element) -> bool:
    return at(domain, "cpu", "numa", "cell") is not None


# -- virt_type ---------------------------------------------------------------------------------


class VirtTypeField(DomainField):
    """``virt_type`` -> ``<domain type>``."""

    fields = ("virt_type",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        domain.set("type", vm.virt_type)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        kind = domain.get("type")
        if kind in ("kvm", "qemu"):
            return {"virt_type": Reading.clean(kind)}
        if kind is None:
            return {"virt_type": Reading.unsupported("the domain has no type")}
        return {"virt_type": Reading.unsupported(f"domain type '{kind}' (bkt knows kvm and qemu)")}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        domain.set("type", vm.virt_type)


# -- memory_gb ---------------------------------------------------------------------------------

_UNITS = {
    "b": 1, "bytes": 1, "KB": 1000, "k": KIB, "KiB": KIB, "MB": 1000**2, "M": KIB**2,
    "MiB": KIB**2, "GB": 1000**3, "G": KIB**3, "GiB": KIB**3, "TB": 1000**4, "T": KIB**4,
    "TiB": KIB**4,
}  # fmt: skip


def _bytes(node: Element) -> int | None:
    """A libvirt memory size in bytes (``unit`` as libvirt reads it; KiB when absent)."""
    value = _unsigned(text_of(node))
    unit = _UNITS.get(node.get("unit", "KiB"))
    return None if value is None or unit is None else value * unit


def _describe_bytes(n: int) -> str:
    return f"{n // KIB} KiB" if n % KIB == 0 else f"{n} bytes"


class MemoryField(DomainField):
    """``memory_gb`` -> ``<memory>`` and ``<currentMemory>`` in KiB."""

    fields = ("memory_gb",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        kib = str(vm.memory_gb * 1024 * 1024)
        insert_child(domain, make("memory", [("unit", "KiB")], text=kib))
        insert_child(domain, make("currentMemory", [("unit", "KiB")], text=kib))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {"memory_gb": self._read(domain)}

    @staticmethod
    def _read(domain: Element) -> Reading:
        memory = child(domain, "memory")
        if memory is None:
            return Reading.unsupported("no <memory> element (the size comes from NUMA cells)")
        total = _bytes(memory)
        if total is None:
            return Reading.unsupported("<memory> is not a size libvirt can read")
        current = child(domain, "currentMemory")
        if current is not None:
            now = _bytes(current)
            if now is None:
                return Reading.unsupported("<currentMemory> is not a size libvirt can read")
            if now != total:
                return Reading.unsupported(
                    f"currentMemory ({_describe_bytes(now)}) differs from memory "
                    f"({_describe_bytes(total)}): a balloon target"
                )
        if total % GIB:
            return Reading.unsupported(f"{_describe_bytes(total)} is not a whole number of GiB")
        gb = total // GIB
        if gb == 0:
            return Reading.unsupported("memory is 0")
        if gb > U32_MAX:
            return Reading.unsupported(f"{gb} GiB is too large")
        return Reading.clean(gb)

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if _has_numa_cells(domain):
            raise PatchRefused(
                "memory_gb", "the memory is split over NUMA cells, which bkt does not resize"
            )
        kib = str(vm.memory_gb * 1024 * 1024)
        for tag in ("memory", "currentMemory"):
            node = ensure_child(domain, tag)
            node.set("unit", "KiB")
            set_text(node, kib)
        # maxMemory (the hotplug ceiling) is left as it is.


# -- vcpus -------------------------------------------------------------------------------------

_TOPOLOGY_ATTRS = ("sockets", "dies", "clusters", "cores", "threads")


def _topology(vcpus: int) -> Element:
    # One socket of N cores: without a topology libvirt gives every vCPU a socket of its own,
    # and Windows client editions use at most two sockets.
    return make(
        "topology",
        [("sockets", "1"), ("dies", "1"), ("cores", str(vcpus)), ("threads", "1")],
    )


def _topology_count(topology: Element) -> int | None:
    count = 1
    for name in _TOPOLOGY_ATTRS:
        value = topology.get(name)
        if value is None:
            continue
        n = _unsigned(value)
        if n is None:
            return None
        count *= n
    return count


class VcpusField(DomainField):
    """``vcpus`` -> ``<vcpu>``, and the count of a ``<cpu><topology>`` (one socket)."""

    fields = ("vcpus",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        insert_child(domain, make("vcpu", [("placement", "static")], text=str(vm.vcpus)))
        insert_child(ensure_child(domain, "cpu"), _topology(vm.vcpus))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {"vcpus": self._read(domain)}

    @staticmethod
    def _read(domain: Element) -> Reading:
        vcpu = child(domain, "vcpu")
        if vcpu is None:
            return Reading.clean(1)  # libvirt's default
        count = _unsigned(text_of(vcpu))
        if count is None or count > U32_MAX:
            return Reading.unsupported("<vcpu> is not a number")
        if count == 0:
            return Reading.unsupported("vcpu count is 0")
        current_attr = vcpu.get("current")
        if current_attr is not None:
            current = _unsigned(current_attr)
            if current is None or current > U32_MAX:
                return Reading.unsupported("vcpu current= is not a number")
            if current != count:
                return Reading.unsupported(
                    f"{current} of {count} vCPUs are enabled at boot (CPU hotplug)"
                )
        return Reading.clean(count)

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if _has_numa_cells(domain):
            raise PatchRefused(
                "vcpus", "the vCPUs are assigned to NUMA cells, which bkt does not change"
            )
        if child(domain, "vcpus") is not None:
            raise PatchRefused(
                "vcpus",
                "the domain lists its vCPUs one by one (<vcpus>), which bkt does not change",
            )
        vcpu = ensure_child(domain, "vcpu")
        vcpu.attrib.pop("current", None)
        set_text(vcpu, str(vm.vcpus))
        # A topology is changed only when there is one
        # and it no longer adds up to the count (libvirt refuses that); none is added.
        topology = at(domain, "cpu", "topology")
        if topology is not None and _topology_count(topology) != vm.vcpus:
            # libvirt 10 and later write clusters='1' into every topology; it stays, so that
            # the definition changes only in its count.
            clusters = topology.get("clusters")
            retain_attrs(topology, ())
            for name, value in _topology(vm.vcpus).attrib.items():
                topology.set(name, value)
                if name == "dies" and clusters is not None:
                    topology.set("clusters", "1")


# -- tpm -------------------------------------------------------------------------------------


def _tpm() -> Element:
    return make(
        "tpm",
        [("model", "tpm-crb")],
        make("backend", [("type", "emulator"), ("version", "2.0")]),
    )


class TpmField(DomainField):
    """``tpm`` -> ``<tpm model='tpm-crb'>`` with an emulated TPM 2.0 (any model reads as
    2.0)."""

    fields = ("tpm",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.tpm == "2.0":
            add_device(domain, _tpm())

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        tpms = devices(domain, "tpm")
        if not tpms:
            return {"tpm": Reading.clean("none")}
        if len(tpms) > 1:
            return {"tpm": Reading.unsupported(f"{len(tpms)} TPM devices")}
        backend = child(tpms[0], "backend")
        kind = (backend.get("type") if backend is not None else None) or "none"
        version = backend.get("version") if backend is not None else None
        if kind == "emulator" and version == "2.0":
            return {"tpm": Reading.clean("2.0")}
        if kind == "emulator":
            shown = version if version is not None else "(libvirt's default)"
            return {"tpm": Reading.unsupported(f"an emulated TPM of version {shown}")}
        return {"tpm": Reading.unsupported(f"a TPM with a {kind} backend, not an emulated one")}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        for node in devices(domain, "tpm"):
            remove(node)
        if vm.tpm == "2.0":
            add_device(domain, _tpm())


# -- network ---------------------------------------------------------------------------------


USER_NETWORK = "user"
# The interface types a manifest's network names; any other is rebuilt on a change.
_ATTACHMENTS = ("network", "bridge", "user")


def _attachment(network: str) -> tuple[str, Element | None] | None:
    """(interface type, its ``<source>``) of a manifest ``network``; None for none. User-mode
    networking (QEMU's own NAT, no libvirt network or bridge: what an unprivileged
    ``qemu:///session`` VM can have) has no source. What a value means is decided by
    :func:`~bkt_vm_plugin.paths.network_kind`, as ``bkt doctor`` reads it too."""
    kind, name = network_kind(network)
    if kind == "none":
        return None
    if kind == "user":
        return ("user", None)
    # The <source> attribute is named after the type: network='...' or bridge='...'.
    return (kind, make("source", [(kind, name)]))


def _interface(attachment: tuple[str, Element | None]) -> Element:
    kind, source = attachment
    parts = [source] if source is not None else []
    return make("interface", [("type", kind)], *parts, make("model", [("type", "virtio")]))


# The <interface> children that do not depend on how the interface attaches.
_INTERFACE_KEEP = ("mac", "boot", "address", "alias", "link", "mtu", "rom", "coalesce")


def _interface_network(interface: Element) -> tuple[str | None, str | None]:
    """The manifest spelling of an interface's attachment, or why it has none."""
    kind = interface.get("type", "")
    source = child(interface, "source")

    def named(attr: str) -> str | None:
        value = source.get(attr) if source is not None else None
        return value or None

    if kind == "network":
        name = named("network")
        if name is None:
            return None, "an interface type='network' without a source network"
        if name in ("none", USER_NETWORK) or name.startswith(BRIDGE_PREFIX):
            return None, f"a libvirt network named '{name}', which the manifest cannot name"
        return name, None
    if kind == "bridge":
        name = named("bridge")
        if name is None:
            return None, "an interface type='bridge' without a source bridge"
        return BRIDGE_PREFIX + name, None
    if kind == "user":
        if child(interface, "backend") is not None:
            # passt instead of QEMU's own user networking: another program, other options.
            return None, "an interface type='user' with a backend"
        return USER_NETWORK, None
    return None, f"an interface type='{kind}' (bkt knows network, bridge and user)"


def _replace_keeping(old: Element, new: Element, keep: tuple[str, ...]) -> Element:
    """Puts ``new`` where ``old`` is, moving ``old``'s children named in ``keep`` to its end."""
    kept = [c for c in elements(old) if c.tag in keep]
    replace(old, new)
    for c in kept:
        c.tail = None
        append(new, c)
    return new


class NetworkField(DomainField):
    """``network`` -> the first ``<interface>``: on a libvirt network, on a bridge, user-mode,
    or none."""

    fields = ("network",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        attachment = _attachment(vm.network)
        if attachment is not None:
            add_device(domain, _interface(attachment))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        interfaces = devices(domain, "interface")
        if not interfaces:
            return {"network": Reading.clean("none")}
        value, reason = _interface_network(interfaces[0])
        if reason is not None:
            return {"network": Reading.unsupported(reason)}
        if len(interfaces) > 1:
            return {
                "network": Reading.lossy_(
                    value, f"{len(interfaces)} interfaces; the manifest describes only the first"
                )
            }
        return {"network": Reading.clean(value)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        interfaces = devices(domain, "interface")
        attachment = _attachment(vm.network)
        if attachment is None:
            for node in interfaces:  # "none" is no interface at all
                remove(node)
            return
        if not interfaces:
            add_device(domain, _interface(attachment))
            return
        first = interfaces[0]
        kind, new = attachment
        if first.get("type") in _ATTACHMENTS and child(first, "backend") is None:
            first.set("type", kind)
            old = child(first, "source")
            if old is not None and new is not None:
                replace(old, new)
            elif old is not None:
                remove(old)
            elif new is not None:
                insert_child(first, new)
        else:
            # Another kind (direct, ethernet, passt, ...): rebuilt as render's interface,
            # keeping the MAC, the PCI address and the settings that do not depend on the kind.
            _replace_keeping(first, _interface(attachment), _INTERFACE_KEEP)


# -- graphics --------------------------------------------------------------------------------

# <graphics> attributes that mean the same for SPICE and VNC (`connected` does not: VNC knows
# only `keep`). The <listen> children are kept too.
_GRAPHICS_KEEP_ATTRS = ("passwd", "passwdValidTo", "keymap", "listen")


def _graphics(kind: str) -> Element:
    return make("graphics", [("type", kind), ("autoport", "yes")])


def _video_model(kind: str) -> Element:
    # QXL for SPICE; for VNC the standard VGA, which every guest and both firmwares drive.
    return make("model", [("type", "qxl" if kind == "spice" else "vga")])


def _spice_channel() -> Element:
    # The SPICE guest agent's channel (clipboard, display resizing).
    return make(
        "channel",
        [("type", "spicevmc")],
        make("target", [("type", "virtio"), ("name", "com.redhat.spice.0")]),
    )


def _tablet() -> Element:
    # An absolute pointer, so that the mouse follows the client's without grabbing.
    return make("input", [("type", "tablet"), ("bus", "usb")])


def _serial() -> Element:
    return make("serial", [("type", "pty")], make("target", [("port", "0")]))


def _console() -> Element:
    return make("console", [("type", "pty")], make("target", [("type", "serial"), ("port", "0")]))


class GraphicsField(DomainField):
    """``graphics`` -> the first ``<graphics>`` (spice or vnc, autoport) with its video
    device, SPICE agent channel and tablet; ``none`` -> a serial console instead."""

    fields = ("graphics",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        kind = vm.graphics
        if kind == "none":
            add_device(domain, _serial())
            add_device(domain, _console())
            return
        add_device(domain, _graphics(kind))
        add_device(domain, make("video", [], _video_model(kind)))
        if kind == "spice":
            add_device(domain, _spice_channel())
        add_device(domain, _tablet())

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        found = devices(domain, "graphics")
        if not found:
            return {"graphics": Reading.clean("none")}
        kind = found[0].get("type", "")
        if kind not in ("spice", "vnc"):
            return {
                "graphics": Reading.unsupported(
                    f"graphics type '{kind}' (bkt knows spice and vnc)"
                )
            }
        if len(found) > 1:
            reason = f"{len(found)} graphics devices; the manifest describes only the first"
            return {"graphics": Reading.lossy_(kind, reason)}
        return {"graphics": Reading.clean(kind)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        kind = vm.graphics
        if kind != "spice":
            self._leave_spice(domain)
        graphics = devices(domain, "graphics")
        videos = devices(domain, "video")
        if kind == "none":
            for node in graphics + videos:
                remove(node)
            if not devices(domain, "serial") and not devices(domain, "console"):
                add_device(domain, _serial())
                add_device(domain, _console())
            return
        if not graphics:
            add_device(domain, _graphics(kind))
        else:
            old = graphics[0]
            new = _graphics(kind)
            for attr in _GRAPHICS_KEEP_ATTRS:
                value = old.get(attr)
                if value is not None:
                    new.set(attr, value)
            _replace_keeping(old, new, ("listen",))
        if not videos:
            add_device(domain, make("video", [], _video_model(kind)))
        else:
            # A new video model: the old one's settings, driver and address no longer apply.
            video = videos[0]
            retain_children(video, ("alias",))
            append(video, _video_model(kind))
        if kind == "spice" and not any(
            c.get("type") == "spicevmc" for c in devices(domain, "channel")
        ):
            add_device(domain, _spice_channel())
        if not any(i.get("type") == "tablet" for i in devices(domain, "input")):
            add_device(domain, _tablet())

    @staticmethod
    def _leave_spice(domain: Element) -> None:
        """Drops what libvirt refuses without SPICE graphics: spicevmc/spiceport devices
        (agent channels, USB redirection), and SPICE audio, which becomes no audio (its id
        stays, for the sound devices that name it)."""
        found = child(domain, "devices")
        if found is None:
            return
        for node in elements(found):
            if node.get("type") in ("spicevmc", "spiceport"):
                remove(node)
        for audio in children(found, "audio"):
            if audio.get("type") == "spice":
                audio.set("type", "none")
                retain_children(audio, ())


# The order they apply in: a field that adjusts another's element comes after it (the disk's
# bus after the disk, the NIC model after the interface, the video model after graphics, the
# hypervclock timer after the clock's own timers).
CORE_FIELDS: list[DomainField] = [
    VirtTypeField(),
    MemoryField(),
    VcpusField(),
    DiskField(),
    DiskBusField(),
    BootField(),
    TpmField(),
    NetworkField(),
    NicModelField(),
    GraphicsField(),
    VideoField(),
    SoundField(),
    UsbRedirectionField(),
    IsoField(),
    ClockField(),
    HypervField(),
]
