"""The disk and CD-ROM fields of the core mapping: ``disk_path`` (with the image's format)
and ``iso_sources``.

The managed disk is the first ``device='disk'`` ``<disk>``; the ISO CD-ROMs are the
``device='cdrom'`` file disks with a source. Other disks and drives (a second data disk, an
empty CD-ROM drive, a host drive) are the user's. Which ISO files a VM should have is decided
before the mapping runs (:func:`bkt_vm_plugin.observe.resolve_context`, given here as
``ctx.isos``); these fields only put them into the domain and read them back.

The managed disk's bus is ``disk_bus`` (:class:`DiskBusField`); when it is not managed the
disk of a new domain is on virtio. Not read, so never drift: the target names, the CD-ROMs'
bus and readonly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.domain_xml import DomainContext, DomainField, PatchRefused, Reading
from bkt_vm_plugin.xmltree import (
    add_device,
    child,
    children,
    devices,
    elements,
    insert_after,
    insert_child,
    make,
    remove,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = ["DiskBusField", "DiskField", "IsoField", "target_index", "target_name"]

#: The target name prefix of each disk bus bkt writes: libvirt names virtio disks vda, vdb,
#: ... and SATA (and SCSI) disks sda, sdb, ...
BUS_PREFIX = {"virtio": "vd", "sata": "sd"}


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


def _disk(path: str, disk_format: str, target: str, bus: str) -> Element:
    return make(
        "disk",
        [("type", "file"), ("device", "disk")],
        make("driver", [("name", "qemu"), ("type", disk_format)]),
        make("source", [("file", path)]),
        make("target", [("dev", target), ("bus", bus)]),
    )


def _new_disk(domain: Element, vm: VmDefinition, ctx: DomainContext) -> Element:
    """The managed disk of ``vm`` for a domain that has none, on its ``disk_bus`` (virtio
    when not managed), with the first free target name of that bus."""
    bus = vm.disk_bus or "virtio"
    prefix = BUS_PREFIX[bus]
    target = target_name(prefix, _next_free(_used_targets(domain, prefix)))
    return _disk(ctx.disk_path, ctx.disk_format, target, bus)


class DiskField(DomainField):
    """``disk_path`` -> the first ``device='disk'`` file disk on virtio; its driver type is
    compared with the image's format as ``disk_format`` (not a manifest field)."""

    fields = ("disk_path",)
    extra = ("disk_format",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"disk_path": ctx.disk_path, "disk_format": ctx.disk_format}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        add_device(domain, _new_disk(domain, vm, ctx))

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
            add_device(domain, _new_disk(domain, vm, ctx))
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


# -- disk_bus ----------------------------------------------------------------------------------


class DiskBusField(DomainField):
    """``disk_bus`` -> the ``<target bus>`` of the managed disk (:class:`DiskField` writes
    it, for a new domain and for a disk it adds). The bus of an existing disk is never
    changed: a guest installed on one bus may not boot from another (Windows has no driver
    for a bus it was not installed on), so a change is refused."""

    fields = ("disk_bus",)
    unmanaged_when_none = ("disk_bus",)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        disk = _managed_disk(domain)
        if disk is None:
            return {"disk_bus": Reading.unsupported("no disk")}
        target = child(disk, "target")
        bus = target.get("bus") if target is not None else None
        if bus is None:
            # libvirt always writes the bus it picked; without one it is the target's.
            return {"disk_bus": Reading.unsupported("the disk's target names no bus")}
        if bus not in BUS_PREFIX:
            return {
                "disk_bus": Reading.unsupported(f"disk bus '{bus}' (bkt knows virtio and sata)")
            }
        return {"disk_bus": Reading.clean(bus)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if _managed_disk(domain) is None:
            return  # the disk DiskField adds is on vm's bus
        from bkt_vm_plugin.defaults import is_filled, state_hint

        hint = "`bkt vm capture NAME` writes the domain's bus into the manifest"
        if is_filled(vm, "disk_bus"):
            # Capture would also drop what the domain does not hold yet (a new `os`).
            reading = self.parse(domain, ctx)["disk_bus"]
            hint = state_hint(vm, "disk_bus", reading.value if reading.is_clean else None)
        raise PatchRefused(
            "disk_bus",
            "bkt does not move an existing disk to another bus (a guest installed on one bus "
            "may not boot from another)",
            hint=hint,
        )


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
        # After a SATA disk (sda) when there is one.
        first = _next_free(_used_targets(domain, "sd"))
        for index, path in enumerate(ctx.isos):
            add_device(domain, _cdrom(path, target_name("sd", first + index)))
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
            add_device(domain, _cdrom(path, target_name("sd", first + offset)))
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
