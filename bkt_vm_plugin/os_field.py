"""The ``os`` plugin: which operating system a VM runs, as an osinfo short id (``"win11"``,
``"fedora40"``, ``"ubuntu24.04"``; ``osinfo-query os`` lists them).

It is written against the public plugin API only, as a third party's plugin would be, with
the osinfo database reader :mod:`bkt_vm_plugin.osinfo` as its own library. To go without it,
block it: ``--disable-plugin os`` (``os`` is then an unknown field).

- :func:`bkt_manifest_fields` declares ``os`` (a string; absent: no OS is named).
- :func:`bkt_validate_manifest` checks it against the osinfo database: an unknown id is an
  error naming the closest ids, no database an error naming the package that installs it; a
  ``memory_gb`` or ``disk_size_gb`` below the OS's minimum or recommended value, or BIOS for
  an OS that boots only from UEFI, is a warning.
- :class:`OsField` writes libosinfo's ``<metadata>`` entry as virt-install does
  (``<libosinfo:libosinfo><libosinfo:os id='URI'/>``), next to bkt's own marker, so that
  virt-manager shows the OS; capture reads the OS back from it.
- :func:`bkt_vm_defaults` fills the device fields the entry does not state with what the OS
  supports out of the box, choosing as virt-install does (:func:`defaults_for`).
- :func:`bkt_manifest_cache_key` is the database's identity: a validated manifest cached
  with one database is validated again when it changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core import hookimpl
from bkt_vm_plugin.api import DomainField, Reading, append, child, ensure_child, make, remove

if TYPE_CHECKING:
    from bkt_core import Problem
    from bkt_vm_plugin.api import DomainContext, Element, VmDefinition
    from bkt_vm_plugin.osinfo import OsDatabase, OsProfile

__all__ = [
    "LIBOSINFO_NAMESPACE",
    "OsField",
    "bkt_domain_fields",
    "bkt_manifest_cache_key",
    "bkt_manifest_fields",
    "bkt_validate_manifest",
    "bkt_vm_defaults",
    "defaults_for",
    "os_rules",
]

#: The VM subsystem's name (the plugin API's subsystem).
SUBSYSTEM = "vm"

#: libosinfo's namespace in a domain's ``<metadata>``, with the prefix virt-install writes.
LIBOSINFO_NAMESPACE = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
LIBOSINFO_PREFIX = "libosinfo"
LIBOSINFO_TAG = f"{{{LIBOSINFO_NAMESPACE}}}libosinfo"
OS_TAG = f"{{{LIBOSINFO_NAMESPACE}}}os"

GIB = 1024**3


def _database(cache: bool | None = None) -> OsDatabase:
    """The installed database. Its index is cached in bkt's cache directory unless bkt's
    caches are off (``--no-cache``, ``$BKT_NO_CACHE``, ``Host(cache=False)``): in a hook,
    :func:`bkt_core.cache_enabled` says so (``cache`` None); a domain field passes what
    it was told when its hook built it."""
    from bkt_vm_plugin.osinfo import default_database

    return default_database(cache)


# -- the plugin's hooks ----------------------------------------------------------------------


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    """Declares ``os``: an osinfo short id, None for no OS named."""
    if subsystem != SUBSYSTEM:
        return None
    from pydantic import Field

    return {
        "os": (
            str | None,
            Field(
                default=None,
                description=(
                    "The operating system, as an osinfo short id (`win11`, `fedora40`, "
                    "`ubuntu24.04`; `osinfo-query os` lists them). Fields left out get the "
                    "devices it supports, as virt-install chooses them."
                ),
                json_schema_extra={"type": ["string", "null"]},
            ),
        )
    }


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Mapping[str, Any]) -> Iterable[Problem] | None:
    """:func:`os_rules` with the installed database."""
    if subsystem != SUBSYSTEM:
        return None
    return os_rules(document, _database)


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    """:class:`OsField`, told whether bkt's caches are on."""
    from bkt_core import cache_enabled

    return [OsField(cache=cache_enabled())]


@hookimpl
def bkt_vm_defaults(vm: VmDefinition) -> Mapping[str, Any] | None:
    """:func:`defaults_for` the VM's OS; nothing for a VM that names none (or one the
    database does not know: validation says so)."""
    short_id = vm.field("os")
    if not isinstance(short_id, str):
        return None
    from bkt_vm_plugin.osinfo import OsinfoError

    try:
        profile = _database().profile(short_id)
    except OsinfoError:
        return None
    return defaults_for(profile, virt_type=vm.virt_type, graphics=vm.graphics, boot=vm.boot)


@hookimpl
def bkt_manifest_cache_key(subsystem: str) -> str | None:
    """The identity of the osinfo database (``none`` without one)."""
    if subsystem != SUBSYSTEM:
        return None
    from bkt_vm_plugin.osinfo_location import database_identity, database_roots

    return f"osinfo:{database_identity(database_roots()) or 'none'}"


# -- the defaults an OS gets -----------------------------------------------------------------


def defaults_for(
    profile: OsProfile, *, virt_type: str, graphics: str, boot: str
) -> dict[str, Any]:
    """The device fields for a VM running ``profile`` on bkt's machine (x86_64, Q35), as
    virt-install 4 chooses them for that OS, with the VM's ``virt_type`` (``kvm``/``qemu``),
    ``graphics`` (``spice``/``vnc``/``none``) and ``boot`` (``uefi``/``bios``):

    - virtio disk and NIC when the OS has the drivers out of the box, else SATA and e1000e
      (the Q35 NIC); an OS that predates Q35 (virt-install gives it an i440FX machine,
      which bkt does not make) gets the NIC it knows, e1000 or rtl8139;
    - Windows keeps local time; every guest gets the timers virt-install sets for x86
      (rtc catchup, pit delay, no hpet); Hyper-V enlightenments for Windows under KVM;
    - with SPICE, ICH9 sound (ICH6 for an OS that predates Q35) and two USB redirection
      channels; without, neither;
    - video: virtio when the OS has the driver, else QXL with SPICE, else bochs under UEFI,
      else VGA (none without graphics: left as bkt renders it);
    - a TPM 2.0 for a UEFI guest (virt-install's rule: UEFI means a modern platform), and
      Secure Boot for a Windows that boots only from UEFI (Windows 11 requires it).
    """
    from bkt_vm_plugin.osinfo import E1000, Q35, RTL8139, VIRTIO_DISK, VIRTIO_GPU, VIRTIO_NET

    spice = graphics == "spice"
    uefi = boot == "uefi"
    q35 = profile.supports(Q35)
    if profile.supports(*VIRTIO_NET):
        nic = "virtio"
    elif q35:
        nic = "e1000e"
    else:
        nic = "rtl8139" if profile.supports(RTL8139) and not profile.supports(E1000) else "e1000"
    values: dict[str, Any] = {
        "disk_bus": "virtio" if profile.supports(*VIRTIO_DISK) else "sata",
        "nic_model": nic,
        "clock": "localtime" if profile.is_windows or profile.family == "solaris" else "utc",
        "clock_timers": True,
        "hyperv": profile.is_windows and virt_type == "kvm",
        "sound": ("ich9" if q35 else "ich6") if spice else "none",
        "usb_redirection": 2 if spice else 0,
    }
    if graphics != "none":
        if profile.supports(*VIRTIO_GPU):
            values["video"] = "virtio"
        elif spice:
            values["video"] = "qxl"
        elif uefi:
            values["video"] = "bochs"
        else:
            values["video"] = "vga"
    if uefi:
        values["tpm"] = "2.0"
        if profile.is_windows and profile.requires_efi():
            values["secure_boot"] = True
    return values


# -- rules -----------------------------------------------------------------------------------


def _size(value: int) -> str:
    gib = value / GIB
    return f"{gib:g} GiB" if gib >= 1 else f"{value // (1024 * 1024)} MiB"


def os_rules(document: Any, database: Any) -> list[Problem]:
    """The problems with each VM's ``os`` in ``document``; ``database`` is called (once) for
    the :class:`~bkt_vm_plugin.osinfo.OsDatabase`. Errors: an empty or unknown id (naming the
    closest), no database. Warnings: ``memory_gb`` or ``disk_size_gb`` below the OS's
    minimum or recommended value; ``boot: "bios"`` for an OS that boots only from UEFI.
    Values of another JSON type are left to the model's own messages."""
    from bkt_core import Problem
    from bkt_vm_plugin.osinfo import OsinfoError

    problems: list[Problem] = []
    vms = document.get("vms") if isinstance(document, dict) else None
    opened: list[Any] = []
    for name, vm in (vms if isinstance(vms, dict) else {}).items():
        if not isinstance(vm, dict):
            continue
        short_id = vm.get("os")
        if not isinstance(short_id, str):
            continue
        at = ("vms", name, "os")
        if not short_id.strip():
            problems.append(Problem(at, "must not be empty"))
            continue
        try:
            if not opened:
                opened.append(database())
            profile = opened[0].profile(short_id)
        except OsinfoError as exc:
            problems.append(Problem(at, str(exc)))
            continue
        problems += _resource_warnings(name, vm, profile)
        if vm.get("boot") == "bios" and profile.supports_firmware("bios") is False:
            problems.append(
                Problem(
                    ("vms", name, "boot"),
                    f'{profile.short_id} does not boot from BIOS firmware; use "uefi"',
                    warning=True,
                )
            )
    return problems


def _resource_warnings(name: str, vm: Mapping[str, Any], profile: OsProfile) -> list[Problem]:
    from bkt_core import Problem

    found: list[Problem] = []
    for field, resource in (("memory_gb", "ram"), ("disk_size_gb", "storage")):
        value = vm.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            continue
        minimum = profile.resource("minimum", resource)
        recommended = profile.resource("recommended", resource)
        size = value * GIB
        if minimum is not None and size < minimum:
            what = f"below the minimum of {profile.short_id} ({_size(minimum)})"
        elif recommended is not None and size < recommended:
            what = f"below what {profile.short_id} recommends ({_size(recommended)})"
        else:
            continue
        found.append(Problem(("vms", name, field), f"{value} GiB is {what}", warning=True))
    return found


# -- the domain XML --------------------------------------------------------------------------


def _libosinfo(domain: Element) -> Element | None:
    metadata = child(domain, "metadata")
    if metadata is None:
        return None
    return next((c for c in metadata if c.tag == LIBOSINFO_TAG), None)


def _uri(short_id: str, cache: bool) -> str:
    from bkt_core import OperationError
    from bkt_vm_plugin.osinfo import OsinfoError

    try:
        return _database(cache).profile(short_id).id
    except OsinfoError as exc:
        raise OperationError(f"cannot name the OS {short_id!r} in the domain: {exc}") from exc


def _canonical(short_id: str, cache: bool) -> str:
    """The first short id of the OS ``short_id`` names (``centos7`` is ``centos7.0``): what
    the domain's entry reads back as. An id the database does not know stays as it is."""
    from bkt_vm_plugin.osinfo import OsinfoError

    try:
        return _database(cache).profile(short_id).short_ids[0]
    except (OsinfoError, IndexError):
        return short_id


class OsField(DomainField):
    """``os`` -> ``<metadata><libosinfo:libosinfo><libosinfo:os id='URI'/>``, the entry
    virt-install writes and virt-manager reads. The rest of ``<metadata>`` (bkt's marker,
    other applications' entries) is left alone. None leaves the domain's entry as it is.

    An OS has several short ids (``debian11`` is ``debianbullseye`` too); the entry names the
    OS, so any of them is in sync with it, and capture keeps the one the manifest uses."""

    fields = ("os",)
    #: ``os`` absent from the manifest: whatever the domain says is left as it is.
    unmanaged_when_none = ("os",)

    def __init__(self, *, cache: bool = True) -> None:
        #: Whether the database's index may come from bkt's cache directory (it is read
        #: when the mapping runs, outside any hook, so the hook that builds this asks).
        self.cache = cache

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        short_id = vm.field("os")
        return {"os": None if short_id is None else _canonical(short_id, self.cache)}

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        reading = readings["os"]
        if not reading.is_clean:
            return {}
        written = base.field("os") if base is not None else None
        if isinstance(written, str) and _canonical(written, self.cache) == reading.value:
            return {"os": written}
        return {"os": reading.value}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        short_id = vm.field("os")
        if short_id is None:
            return
        entry = make(
            LIBOSINFO_TAG,
            [],
            make(OS_TAG, [("id", _uri(short_id, self.cache))]),
            nsmap={LIBOSINFO_PREFIX: LIBOSINFO_NAMESPACE},
        )
        append(ensure_child(domain, "metadata"), entry)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        entry = _libosinfo(domain)
        node = None if entry is None else next((c for c in entry if c.tag == OS_TAG), None)
        uri = None if node is None else node.get("id")
        if not uri:
            return {"os": Reading.clean(None)}
        from bkt_vm_plugin.osinfo import OsinfoError

        try:
            short_id = _database(self.cache).short_id_of(uri)
        except OsinfoError as exc:
            return {"os": Reading.unsupported(f"the OS {uri} cannot be looked up: {exc}")}
        if short_id is None:
            return {"os": Reading.unsupported(f"the OS {uri} is not in the osinfo database")}
        return {"os": Reading.clean(short_id)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        short_id = vm.field("os")
        if short_id is None:
            return
        uri = _uri(short_id, self.cache)
        entry = _libosinfo(domain)
        if entry is None:
            self.render(domain, vm, ctx)
            return
        nodes = [c for c in entry if c.tag == OS_TAG]
        if nodes and nodes[0].get("id") == uri:
            return
        for extra in nodes[1:]:
            remove(extra)
        if nodes:
            nodes[0].set("id", uri)
        else:
            append(entry, make(OS_TAG, [("id", uri)]))
