"""The built-in pieces of the domain XML mapping, one :class:`DomainField` per owned part.

Each class holds render, parse and patch of its part side by side; parse is also patch's
comparator (the mapping calls patch only for a field that is out of sync), so a domain in sync
comes back unchanged. Each field says what it reads, what it treats as the default, and why a
value it cannot describe does not round-trip.

Not read at all, so never drift and never enforced on existing domains: machine and
arch, boot order, video model, serial/console, tablet, SPICE channel, TPM model, disk and
CD-ROM bus/target/readonly, interface model, autoport/port, acpi/apic, ``on_*``, ``maxMemory``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.domain_xml import (
    DomainContext,
    DomainField,
    Element,
    PatchRefused,
    Reading,
    append,
    at,
    child,
    children,
    devices,
    elements,
    ensure_child,
    insert_after,
    insert_before,
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

__all__ = [
    "CORE_FIELDS",
    "AutostartField",
    "BootField",
    "CpuModelField",
    "DiskField",
    "GraphicsField",
    "IsoField",
    "MemoryField",
    "NetworkField",
    "TpmField",
    "VcpusField",
    "VirtTypeField",
    "target_index",
    "target_name",
]

HOST_PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"
QEMU_DEFAULT_CPU_MODEL = "qemu64"
BRIDGE_PREFIX = "bridge:"

KIB = 1024
GIB = 1024**3
U32_MAX = 2**32 - 1
_UNSIGNED = re.compile(r"[0-9]+")


def _unsigned(text: str) -> int | None:
    text = text.strip()
    return int(text) if _UNSIGNED.fullmatch(text) else None


def _add_device(domain: Element, new: Element) -> Element:
    """Adds a device after the last device of its name, else at libvirt's place for it."""
    return insert_child(ensure_child(domain, "devices"), new)


def _has_numa_cells(domain: Element) -> bool:
    return at(domain, "cpu", "numa", "cell") is not None


def target_name(prefix: str, index: int) -> str:
    """The ``index``-th target name on a bus: ``sda`` ... ``sdz``, ``sdaa`` (libvirt's
    bijective base 26)."""
    letters = []
    i = index
    while True:
        letters.append(chr(ord("a") + i % 26))
        if i < 26:
            break
        i = i // 26 - 1
    return prefix + "".join(reversed(letters))


def target_index(prefix: str, name: str) -> int | None:
    """The inverse of :func:`target_name`."""
    if not name.startswith(prefix):
        return None
    letters = name[len(prefix) :]
    if not letters or not all("a" <= c <= "z" for c in letters):
        return None
    n = 0
    for c in letters:
        n = n * 26 + (ord(c) - ord("a") + 1)
    return n - 1


def _used_targets(domain: Element, prefix: str) -> list[int]:
    used = []
    for disk in devices(domain, "disk"):
        target = child(disk, "target")
        index = target_index(prefix, target.get("dev", "")) if target is not None else None
        if index is not None:
            used.append(index)
    return used


def _next_free(used: list[int]) -> int:
    """The smallest index above every used one, so new disks sort after the old ones."""
    return max(used) + 1 if used else 0


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


# -- disk_path (and the image format) --------------------------------------------------------


def _managed_disk(domain: Element) -> Element | None:
    """The managed disk: the first ``<disk>`` whose device (default ``disk``) is ``disk``."""
    for disk in devices(domain, "disk"):
        if disk.get("device", "disk") == "disk":
            return disk
    return None


def _is_file(disk: Element) -> bool:
    return disk.get("type", "file") == "file"


def _source_file(disk: Element) -> str | None:
    source = child(disk, "source")
    return source.get("file") if source is not None else None


def _disk(path: str, disk_format: str, target: str) -> Element:
    return make(
        "disk",
        [("type", "file"), ("device", "disk")],
        make("driver", [("name", "qemu"), ("type", disk_format)]),
        make("source", [("file", path)]),
        make("target", [("dev", target), ("bus", "virtio")]),
    )


class DiskField(DomainField):
    """``disk_path`` -> the first ``device='disk'`` file disk on virtio; its driver type is
    compared with the image's format as ``disk_format`` (not a manifest field)."""

    fields = ("disk_path",)
    extra = ("disk_format",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"disk_path": ctx.disk_path, "disk_format": ctx.disk_format}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        _add_device(domain, _disk(ctx.disk_path, ctx.disk_format, target_name("vd", 0)))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        disk = _managed_disk(domain)
        if disk is None:
            none = Reading.unsupported("no disk")
            return {"disk_path": none, "disk_format": none}
        source = _source_file(disk)
        if not _is_file(disk):
            path = Reading.unsupported(f"the first disk is type='{disk.get('type')}', not a file")
        elif source is None:
            path = Reading.unsupported("the first disk has no source file")
        else:
            path = Reading.clean(source)
        driver = child(disk, "driver")
        kind = driver.get("type") if driver is not None else None
        if kind is None:
            # libvirt treats a disk without a format as raw (it does not probe formats).
            disk_format = Reading.clean("raw")
        elif kind in ("qcow2", "raw"):
            disk_format = Reading.clean(kind)
        else:
            disk_format = Reading.unsupported(f"image format '{kind}' (bkt knows qcow2 and raw)")
        return {"disk_path": path, "disk_format": disk_format}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        disk = _managed_disk(domain)
        if disk is None:
            target = target_name("vd", _next_free(_used_targets(domain, "vd")))
            _add_device(domain, _disk(ctx.disk_path, ctx.disk_format, target))
            return
        readings = self.parse(domain, ctx)
        if readings["disk_path"] != Reading.clean(ctx.disk_path):
            was_file = _is_file(disk)
            disk.set("type", "file")
            source = child(disk, "source")
            if source is not None and was_file:
                source.set("file", ctx.disk_path)
            else:
                # Another kind of source (block device, network, volume): none of it applies.
                if source is not None:
                    remove(source)
                insert_child(disk, make("source", [("file", ctx.disk_path)]))
            # The backing chain described the old image.
            chain = child(disk, "backingStore")
            if chain is not None:
                remove(chain)
        if readings["disk_format"] != Reading.clean(ctx.disk_format):
            driver = child(disk, "driver")
            if driver is None:
                driver = insert_child(disk, make("driver", [("name", "qemu")]))
            driver.set("type", ctx.disk_format)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        reading = readings["disk_path"]
        if not reading.is_clean:
            return {}
        if base is not None and ctx is not None and reading.value == ctx.disk_path:
            return {"disk_path": base.disk_path}  # keeps "~/..." as the author wrote it
        return {"disk_path": reading.value}


# -- boot and secure_boot --------------------------------------------------------------------


def _firmware_features(secure_boot: bool) -> Element:
    # Always written for UEFI, so that every host picks the same kind of firmware: without a
    # feature list libvirt takes the host's first firmware descriptor, Secure Boot on Debian
    # and Fedora. Features rather than a loader path: autoselection then picks this host's
    # matching firmware and NVRAM template.
    enabled = "yes" if secure_boot else "no"
    return make(
        "firmware",
        [],
        make("feature", [("enabled", enabled), ("name", "enrolled-keys")]),
        make("feature", [("enabled", enabled), ("name", "secure-boot")]),
    )


def _feature(os: Element | None, name: str) -> bool | None:
    firmware = child(os, "firmware")
    if firmware is None:
        return None
    for feature in children(firmware, "feature"):
        if feature.get("name") == name:
            return feature.get("enabled") == "yes"
    return None


class BootField(DomainField):
    """``boot`` -> ``<os firmware='efi'>`` (or none, BIOS); ``secure_boot`` -> the firmware
    feature list and ``<smm state='on'/>``."""

    fields = ("boot", "secure_boot")

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"boot": vm.boot, "secure_boot": vm.boot == "uefi" and vm.secure_boot}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        uefi = vm.boot == "uefi"
        secure = uefi and vm.secure_boot
        os = insert_child(domain, make("os", [("firmware", "efi")] if uefi else []))
        os.append(make("type", [("arch", "x86_64"), ("machine", "q35")], text="hvm"))
        if uefi:
            os.append(_firmware_features(secure))
        os.append(make("boot", [("dev", "hd")]))
        features = insert_child(domain, make("features", [], make("acpi"), make("apic")))
        if secure:
            features.append(make("smm", [("state", "on")]))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        os = child(domain, "os")
        loader = child(os, "loader")
        pflash = loader is not None and loader.get("type") == "pflash"
        if (os is None or os.get("firmware") != "efi") and not pflash:
            return {"boot": Reading.clean("bios"), "secure_boot": Reading.clean(False)}
        return {
            "boot": Reading.clean("uefi"),
            "secure_boot": self._secure(domain, os, loader, ctx),
        }

    @staticmethod
    def _secure(
        domain: Element, os: Element | None, loader: Element | None, ctx: DomainContext
    ) -> Reading:
        secure, keys = _feature(os, "secure-boot"), _feature(os, "enrolled-keys")
        smm = at(domain, "features", "smm")
        smm_off = smm is not None and smm.get("state") == "off"
        if secure is True:
            if keys is True:
                if smm_off:
                    return Reading.unsupported("Secure Boot firmware with SMM off")
                return Reading.clean(True)
            if keys is False:
                return Reading.unsupported(
                    "Secure Boot firmware without enrolled keys (Secure Boot is not enforced)"
                )
            return Reading.unsupported(
                "firmware feature secure-boot without enrolled-keys: libvirt picks the keys "
                "when the VM starts"
            )
        if keys is True:
            return Reading.unsupported("firmware feature enrolled-keys without secure-boot")
        if secure is False:
            return Reading.clean(False)
        if keys is False or (loader is not None and (loader.text or "").strip()):
            # enrolled-keys off is libvirt's own way to say "no Secure Boot"; a loader path
            # is the firmware itself.
            return Reading.clean(loader is not None and loader.get("secure") == "yes")
        return _autoselected(domain, loader, ctx)

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        wanted = self.desired(vm, ctx)
        secure = bool(wanted["secure_boot"])
        os = ensure_child(domain, "os")
        # The old firmware choice: its features and its loader no longer apply.
        for tag in ("firmware", "loader"):
            node = child(os, tag)
            if node is not None:
                remove(node)
        nvram = child(os, "nvram")
        if vm.boot == "bios":
            os.attrib.pop("firmware", None)
            if nvram is not None:
                remove(nvram)
            return
        os.set("firmware", "efi")
        if nvram is not None:
            # Keep the NVRAM file (boot entries), not the template of another firmware, nor
            # the template's format (libvirt 10 and later write templateFormat, which their
            # schema allows only with a template).
            nvram.attrib.pop("template", None)
            nvram.attrib.pop("templateFormat", None)
        insert_child(os, _firmware_features(secure))
        if secure:
            smm = ensure_child(ensure_child(domain, "features"), "smm")
            smm.set("state", "on")
        # Turning Secure Boot off leaves SMM on: it does no harm, and other things need it.


def _autoselected(domain: Element, loader: Element | None, ctx: DomainContext) -> Reading:
    """Secure Boot of a UEFI domain that leaves its firmware to libvirt (what virt-install
    and virt-manager write for every UEFI guest): the firmware libvirt will boot it with,
    which on a q35 machine is usually OVMF with Secure Boot and enrolled keys."""
    from bkt_vm_plugin.firmware import Needs

    host = ctx.facts.get("firmware")
    if host is None:
        return Reading.unsupported(UNPINNED + "; the host's firmware was not looked up")
    kind = at(domain, "os", "type")
    pm = child(domain, "pm")
    smm = at(domain, "features", "smm")
    needs = Needs(
        arch=(kind.get("arch") if kind is not None else None) or "x86_64",
        machine=(kind.get("machine") if kind is not None else None) or "",
        s3=_enabled(child(pm, "suspend-to-mem")),
        s4=_enabled(child(pm, "suspend-to-disk")),
        secure_loader=loader is not None and loader.get("secure") == "yes",
        smm_off=smm is not None and smm.get("state") == "off",
    )
    if child(domain, "launchSecurity") is not None:
        return Reading.unsupported(UNPINNED + " with launch security, which bkt does not model")
    choice = host.choose(needs)
    fw = choice.descriptor
    if choice.problem is not None or fw is None:
        return Reading.unsupported(f"{UNPINNED}: {choice.problem}")
    if fw.secure_boot and not fw.enrolled_keys:
        return Reading.unsupported(
            f"libvirt boots it with {fw.executable}: Secure Boot firmware without enrolled keys "
            "(Secure Boot is not enforced)"
        )
    return Reading.clean(fw.secure_boot)


UNPINNED = "its UEFI firmware is chosen by libvirt"


def _enabled(element: Element | None) -> bool:
    return element is not None and element.get("enabled") == "yes"


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
            _add_device(domain, _tpm())

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
            _add_device(domain, _tpm())


# -- network ---------------------------------------------------------------------------------


USER_NETWORK = "user"
# The interface types a manifest's network names; any other is rebuilt on a change.
_ATTACHMENTS = ("network", "bridge", "user")


def _attachment(network: str) -> tuple[str, Element | None] | None:
    """(interface type, its ``<source>``) of a manifest ``network``; None for none. User-mode
    networking (QEMU's own NAT, no libvirt network or bridge: what an unprivileged
    ``qemu:///session`` VM can have) has no source. What a value means is decided by
    :func:`~bkt_vm_plugin.paths.network_kind`, as ``bkt doctor`` reads it too."""
    from bkt_vm_plugin.paths import network_kind

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
            _add_device(domain, _interface(attachment))

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
            _add_device(domain, _interface(attachment))
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
            _add_device(domain, _serial())
            _add_device(domain, _console())
            return
        _add_device(domain, _graphics(kind))
        _add_device(domain, make("video", [], _video_model(kind)))
        if kind == "spice":
            _add_device(domain, _spice_channel())
        _add_device(domain, _tablet())

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
                _add_device(domain, _serial())
                _add_device(domain, _console())
            return
        if not graphics:
            _add_device(domain, _graphics(kind))
        else:
            old = graphics[0]
            new = _graphics(kind)
            for attr in _GRAPHICS_KEEP_ATTRS:
                value = old.get(attr)
                if value is not None:
                    new.set(attr, value)
            _replace_keeping(old, new, ("listen",))
        if not videos:
            _add_device(domain, make("video", [], _video_model(kind)))
        else:
            # A new video model: the old one's settings, driver and address no longer apply.
            video = videos[0]
            retain_children(video, ("alias",))
            append(video, _video_model(kind))
        if kind == "spice" and not any(
            c.get("type") == "spicevmc" for c in devices(domain, "channel")
        ):
            _add_device(domain, _spice_channel())
        if not any(i.get("type") == "tablet" for i in devices(domain, "input")):
            _add_device(domain, _tablet())

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


# -- iso_sources -----------------------------------------------------------------------------


def _iso_cdroms(domain: Element) -> list[Element]:
    """The CD-ROMs that hold ISO files: ``device='cdrom'`` file disks with a source. Empty
    drives and host drives are not the manifest's."""
    return [
        disk
        for disk in devices(domain, "disk")
        if disk.get("device") == "cdrom" and _is_file(disk) and _source_file(disk) is not None
    ]


def _cdrom(path: str, target: str) -> Element:
    return make(
        "disk",
        [("type", "file"), ("device", "cdrom")],
        make("driver", [("name", "qemu"), ("type", "raw")]),
        make("source", [("file", path)]),
        make("target", [("dev", target), ("bus", "sata")]),
        make("readonly"),
    )


def _add_cdrom_boot(domain: Element) -> None:
    """Adds ``<boot dev='cdrom'/>`` after the hd entry (else after the last entry) of a domain
    that orders boot devices in ``<os>``, unless it already boots from CD-ROM."""
    os = child(domain, "os")
    boots = children(os, "boot") if os is not None else []
    if os is None or not boots or any(b.get("dev") == "cdrom" for b in boots):
        return
    found = child(domain, "devices")
    for device in elements(found) if found is not None else []:
        if child(device, "boot") is not None:
            return  # per-device <boot order>, which libvirt refuses together with <os><boot>
    anchor = next((b for b in boots if b.get("dev") == "hd"), boots[-1])
    insert_after(anchor, make("boot", [("dev", "cdrom")]))


class IsoField(DomainField):
    """``iso_sources`` -> read-only SATA CD-ROMs holding the attached ISOs, in order; the
    desired files are ``ctx.isos`` (a source left out for a missing file is not drift)."""

    fields = ("iso_sources",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"iso_sources": tuple(ctx.isos)}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        for index, path in enumerate(ctx.isos):
            _add_device(domain, _cdrom(path, target_name("sd", index)))
        if ctx.isos:
            # An empty disk fails to boot, and the installer on the CD-ROM starts.
            _add_cdrom_boot(domain)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        paths = tuple(_source_file(d) or "" for d in _iso_cdroms(domain))
        return {"iso_sources": Reading.clean(paths)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        owned = _iso_cdroms(domain)
        wanted = list(ctx.isos)
        for node, path in zip(owned, wanted, strict=False):
            source = child(node, "source")
            if source is not None and source.get("file") != path:
                # In place: the drive keeps its target and bus (an IDE hda stays one).
                source.set("file", path)
        for node in owned[len(wanted) :]:
            remove(node)
        first = _next_free(_used_targets(domain, "sd"))
        for offset, path in enumerate(wanted[len(owned) :]):
            _add_device(domain, _cdrom(path, target_name("sd", first + offset)))
        # ISOs added to a domain that had none
        # become bootable, as they are for a new VM: `<boot dev='cdrom'/>` goes after the hd
        # entry, so an installed system still boots first and an empty disk falls through to
        # the installer. Only when the domain orders boot devices in <os> (with per-device
        # <boot order> libvirt refuses <os><boot>, and without any <boot> the implicit hd would
        # be lost), only when the first ISO CD-ROM is added (a user who dropped the CD-ROM
        # boot entry while ISOs were attached keeps that choice), and never removed: boot
        # order is not owned, so removing ISOs leaves it (libvirt skips a missing device).
        if not owned and wanted:
            _add_cdrom_boot(domain)

    def spell(self, name: str, value: Any) -> str:
        return ", ".join(value) if value else "none"

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        paths: tuple[str, ...] = readings["iso_sources"].value or ()
        if base is None or ctx is None:
            return {"iso_sources": [{"path": p} for p in paths]}
        if paths == tuple(ctx.isos):
            return {"iso_sources": [_plain(s) for s in base.iso_sources]}
        # Each CD-ROM maps back to the source of base that resolves to it, or becomes a path;
        # base's sources that are neither attached nor included (uncached URLs, missing files)
        # follow at the end.
        known = {iso.path: iso.source for iso in (*ctx.attached, *ctx.missing)}
        sources: list[Any] = [known.get(p) or {"path": p} for p in paths]
        attached = [iso.source for iso in ctx.attached]
        for source in base.iso_sources:
            if source not in attached and source not in sources:
                sources.append(source)
        return {"iso_sources": [_plain(s) for s in sources]}


def _plain(source: Any) -> Any:
    from bkt_vm_plugin.definition import plain

    return plain(source)


# -- cpu_model (the cpu_model plugin) --------------------------------------------------------

# The <cpu> children that describe the guest's layout rather than its model.
_CPU_LAYOUT = ("topology", "numa", "cache", "maxphysaddr")


def effective_cpu_model(vm: VmDefinition) -> str | None:
    """The CPU model ``vm`` asks for: its ``cpu_model``, else host-passthrough under kvm; None
    is libvirt's default, which only ``virt_type: qemu`` names (``qemu64`` is that too)."""
    model: str | None = vm.field("cpu_model")
    if vm.virt_type == "qemu":
        return None if model in (None, QEMU_DEFAULT_CPU_MODEL) else model
    return HOST_PASSTHROUGH if model is None else model


class CpuModelField(DomainField):
    """``cpu_model`` -> ``<cpu mode=...>`` and its ``<model>`` (the topology is vcpus')."""

    fields = ("cpu_model",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"cpu_model": effective_cpu_model(vm)}

    def spell(self, name: str, value: Any) -> str:
        return "libvirt's default" if value is None else str(value)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        model = effective_cpu_model(vm)
        # Under qemu with libvirt's default there is no mode and no model: <cpu> holds only
        # the topology (libvirt then records the custom model qemu64).
        cpu = ensure_child(domain, "cpu")
        self._set_model(cpu, model)

    @staticmethod
    def _set_model(cpu: Element, model: str | None) -> None:
        if model in (HOST_PASSTHROUGH, HOST_MODEL):
            cpu.set("mode", str(model))
        elif model is not None:
            cpu.set("mode", "custom")
            node = make("model", text=model)
            kids = elements(cpu)
            if kids:
                insert_before(kids[0], node)
            else:
                append(cpu, node)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        qemu = domain.get("type") == "qemu"

        def named(model: str) -> Reading:
            return Reading.clean(None if qemu and model == QEMU_DEFAULT_CPU_MODEL else model)

        cpu = child(domain, "cpu")
        if cpu is None:
            return {"cpu_model": named(QEMU_DEFAULT_CPU_MODEL)}
        mode = cpu.get("mode", "custom")
        if mode in (HOST_PASSTHROUGH, HOST_MODEL):
            return {"cpu_model": Reading.clean(mode)}
        if mode == "custom":
            model = child(cpu, "model")
            text = text_of(model) if model is not None else ""  # exact, not trimmed
            return {"cpu_model": named(text or QEMU_DEFAULT_CPU_MODEL)}
        return {"cpu_model": Reading.unsupported(f"CPU mode '{mode}'")}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        model = effective_cpu_model(vm)
        cpu = child(domain, "cpu")
        if cpu is None:
            if model is None:
                return
            cpu = ensure_child(domain, "cpu")
        # The old mode's attributes, model, vendor and features belong to the old model.
        retain_attrs(cpu, ())
        retain_children(cpu, _CPU_LAYOUT)
        self._set_model(cpu, model)
        if model is None and not elements(cpu):
            remove(cpu)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        reading = readings["cpu_model"]
        if not reading.is_clean:
            return {}
        # Written only when it is not the default for the domain's type: libvirt's
        # default (None) under qemu is already None; host-passthrough is kvm's default.
        virt_type = readings.get("virt_type")
        kvm = virt_type is None or virt_type.value != "qemu"
        value = reading.value
        return {"cpu_model": None if kvm and value == HOST_PASSTHROUGH else value}


# -- autostart (the autostart plugin) ---------------------------------------------------------


class AutostartField(DomainField):
    """``autostart``: not in the domain XML. Observed as ``ctx.facts["autostart"]`` (from
    ``virsh list --autostart``) and applied by the autostart plugin's post-sync action, so a
    change of it alone needs no ``virsh define``."""

    fields = ("autostart",)
    in_xml = False

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {"autostart": Reading.clean(bool(ctx.facts.get("autostart", False)))}


CORE_FIELDS: list[DomainField] = [
    VirtTypeField(),
    MemoryField(),
    VcpusField(),
    DiskField(),
    BootField(),
    TpmField(),
    NetworkField(),
    GraphicsField(),
    IsoField(),
]
