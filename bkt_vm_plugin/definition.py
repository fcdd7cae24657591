"""The VM definition as bkt, its plugins and embedders use it: plain, immutable values.

A :class:`VmManifest` holds one :class:`VmDefinition` per VM of ``vms.json``. They are made
from a validated manifest (:mod:`bkt_vm_plugin.model` validates it and produces the JSON
Schema) and are never validated again: whoever builds one in code is trusted with its
values. Nothing here imports pydantic, so reading a definition costs no validation machinery.

A plugin reads any field, its own or a built-in one, with :meth:`VmDefinition.field`; the
built-in fields are attributes too (``vm.memory_gb``). A plugin field's value is immutable
all the way down (:func:`frozen`): what a plugin reads can neither be changed in place nor
make a definition unhashable.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "BUILTIN_FIELDS",
    "CHOICES",
    "GIB",
    "U32_MAX",
    "USB_REDIRECTION_MAX",
    "Boot",
    "Clock",
    "DiskBus",
    "Graphics",
    "IsoPath",
    "IsoSource",
    "IsoUrl",
    "NicModel",
    "Sound",
    "Tpm",
    "Video",
    "VirtType",
    "VmDefinition",
    "VmFields",
    "VmManifest",
    "builtin_value_problem",
    "frozen",
    "plain",
]

#: Bytes in a GiB, the unit of ``memory_gb`` and ``disk_size_gb``.
GIB = 1024**3
#: The largest number a count field (``memory_gb``, ``vcpus``, ``disk_size_gb``) may hold:
#: libvirt keeps them in unsigned 32-bit integers.
U32_MAX = 2**32 - 1

#: Firmware a VM boots with.
Boot: TypeAlias = Literal["uefi", "bios"]
#: The emulated TPM of a VM.
Tpm: TypeAlias = Literal["2.0", "none"]
#: The graphical console of a VM.
Graphics: TypeAlias = Literal["spice", "vnc", "none"]
#: The libvirt domain type: hardware virtualization, or QEMU's software emulation.
VirtType: TypeAlias = Literal["kvm", "qemu"]
#: The bus of a VM's disk.
DiskBus: TypeAlias = Literal["virtio", "sata"]
#: The model of a VM's network interface.
NicModel: TypeAlias = Literal["virtio", "e1000e", "e1000", "rtl8139"]
#: What the guest's hardware clock keeps: UTC, or the host's local time (what Windows expects).
Clock: TypeAlias = Literal["utc", "localtime"]
#: The model of a VM's sound device, or ``none``.
Sound: TypeAlias = Literal["ich9", "ich6", "ac97", "none"]
#: The model of a VM's video device, or ``none``.
Video: TypeAlias = Literal["qxl", "virtio", "vga", "bochs", "none"]

#: The most USB redirection channels a VM may have. Each takes a port of the guest's USB
#: controller (QEMU's xHCI has 15, and the tablet uses one); SPICE clients redirect a few
#: devices at a time.
USB_REDIRECTION_MAX = 8

#: The values each built-in field with a fixed set of values accepts, so that a value a
#: plugin fills (``bkt_vm_defaults``) is checked without the manifest's model.
CHOICES: Mapping[str, tuple[Any, ...]] = types.MappingProxyType(
    {
        "boot": ("uefi", "bios"),
        "tpm": ("2.0", "none"),
        "graphics": ("spice", "vnc", "none"),
        "virt_type": ("kvm", "qemu"),
        "disk_bus": ("virtio", "sata"),
        "nic_model": ("virtio", "e1000e", "e1000", "rtl8139"),
        "clock": ("utc", "localtime"),
        "sound": ("ich9", "ich6", "ac97", "none"),
        "video": ("qxl", "virtio", "vga", "bochs", "none"),
    }
)


@dataclass(frozen=True, slots=True)
class IsoPath:
    """A local installer ISO, the file at ``path``."""

    #: The ISO file's path as the manifest writes it (``~`` not expanded).
    path: str

    def as_json(self) -> dict[str, Any]:
        """The source as ``vms.json`` writes it: ``{"path": ...}``."""
        return {"path": self.path}


@dataclass(frozen=True, slots=True)
class IsoUrl:
    """An installer ISO to download with ``bkt vm fetch-iso`` into the ISO cache, from
    ``url``, checked against ``sha256`` when it is given."""

    #: The http or https URL the ISO is downloaded from.
    url: str
    #: The SHA-256 digest the download must have (hexadecimal), or None: not checked.
    sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The source as ``vms.json`` writes it: ``{"url": ...}``, with ``sha256`` when set."""
        out: dict[str, Any] = {"url": self.url}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out


#: One installer ISO of a VM: a local file or a URL.
IsoSource: TypeAlias = IsoPath | IsoUrl


def frozen(value: Any) -> Any:
    """``value`` made immutable all the way down, as a definition holds a plugin field's
    value: lists and tuples as tuples, dicts and other mappings as read-only mappings
    (:class:`types.MappingProxyType` of a new dict), sets as frozensets, a pydantic model
    (anything with ``model_dump``) dumped without its ``None`` fields and a dataclass
    instance by its fields, both as read-only mappings; each item frozen in turn. Anything
    else (strings, numbers, booleans, None, ISO sources) is returned as it is."""
    if value is None or isinstance(value, str | int | float | IsoPath | IsoUrl):
        return value
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, set | frozenset):
        return frozenset(frozen(v) for v in value)
    dump = getattr(value, "model_dump", None)
    if dump is not None and not isinstance(value, type):
        return frozen(dump(exclude_none=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return frozen({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


@dataclass(frozen=True, slots=True, eq=False)
class VmFields:
    """The fields a VM definition has on one host: the built-in ones, then every plugin's,
    in schema order, with the default of each optional one.

    Every :class:`VmDefinition` of a host refers to the same one (:attr:`VmDefinition.layout`);
    :data:`BUILTIN_FIELDS` is the layout of a host without plugin fields.
    """

    #: Every field name, in schema order (the order capture writes them in).
    names: tuple[str, ...]
    #: The default of each optional field; a required field is not in it.
    defaults: Mapping[str, Any]

    def __post_init__(self) -> None:
        defaults = {name: frozen(value) for name, value in self.defaults.items()}
        object.__setattr__(self, "defaults", types.MappingProxyType(defaults))

    @property
    def plugin_names(self) -> tuple[str, ...]:
        """The fields plugins declare, in schema order."""
        return tuple(n for n in self.names if n not in _BUILTIN_NAMES)

    def is_required(self, name: str) -> bool:
        """Whether the manifest must give field ``name`` (it has no default)."""
        return name not in self.defaults

    def default(self, name: str) -> Any:
        """The default of optional field ``name``; raises KeyError for a required field."""
        return self.defaults[name]


#: What :attr:`VmDefinition.layout` is until ``__post_init__`` sets it.
_UNSET = VmFields((), {})


@dataclass(frozen=True, slots=True, kw_only=True)
class VmDefinition:
    """One VM of the manifest: the built-in fields as attributes, every field (plugin fields
    included) through :meth:`field`.

    Two definitions are equal when every field has the same value; which fields the author
    wrote (:attr:`written`) and the host's :attr:`layout` do not count. A definition is
    hashable: its plugin values are made immutable when it is built (:func:`frozen`), so
    none can change in place.

    Build one with :meth:`bkt_vm_plugin.api.VmSubsystem.vm_definition` (which validates) or
    from the manifest (:class:`VmManifest`). The built-in fields, as attributes:
    ``memory_gb`` (GiB), ``vcpus``, ``disk_path`` (as written, ``~`` not expanded),
    ``disk_size_gb`` (used when the disk is created), ``create_if_missing``,
    ``allow_system_paths``, ``boot`` (``uefi`` or ``bios``), ``tpm`` (``2.0`` or ``none``),
    ``network``, ``graphics`` (``spice``, ``vnc`` or ``none``), ``iso_sources`` (a tuple of
    :data:`IsoSource`), ``virt_type`` (``kvm`` or ``qemu``), ``secure_boot``, and the device
    fields, each None when bkt does not manage the device: ``disk_bus`` (``virtio`` or
    ``sata``), ``nic_model`` (``virtio``, ``e1000e``, ``e1000``, ``rtl8139``), ``clock``
    (``utc`` or ``localtime``), ``clock_timers``, ``hyperv``, ``sound`` (``ich9``, ``ich6``,
    ``ac97`` or ``none``), ``usb_redirection`` (a count) and ``video`` (``qxl``, ``virtio``,
    ``vga``, ``bochs`` or ``none``).
    ``plugin_values`` holds each plugin field's value, ``written`` the fields the author
    wrote, ``filled`` the values plugins filled for the others (:meth:`default`),
    ``filled_by`` the plugin that filled each, and ``layout`` the fields of the host with
    their defaults.
    """

    #: Memory in GiB.
    memory_gb: int
    #: Number of virtual CPUs.
    vcpus: int
    #: The disk image's path as the manifest writes it (``~`` not expanded).
    disk_path: str
    #: Size in GiB used when the disk is provisioned; never used to resize.
    disk_size_gb: int
    #: Provision ``disk_path`` when it does not exist.
    create_if_missing: bool = False
    #: Allow ``disk_path`` and ISO paths in the host's system directories.
    allow_system_paths: bool = False
    #: Firmware: ``"uefi"`` or ``"bios"``.
    boot: Boot
    #: Emulated TPM: ``"2.0"`` or ``"none"``.
    tpm: Tpm = "none"
    #: A libvirt network name, ``bridge:NAME``, ``user`` or ``none``.
    network: str
    #: Graphical console: ``"spice"``, ``"vnc"`` or ``"none"``.
    graphics: Graphics
    #: Installer ISOs, attached as read-only CD-ROMs in this order.
    iso_sources: tuple[IsoSource, ...] = ()
    #: Domain type: ``"kvm"``, or ``"qemu"`` for software emulation.
    virt_type: VirtType = "kvm"
    #: UEFI Secure Boot.
    secure_boot: bool = False
    #: The disk's bus, ``"virtio"`` or ``"sata"``; None: not managed (a new domain's disk is
    #: on virtio, an existing domain's keeps its bus).
    disk_bus: DiskBus | None = None
    #: The network interface's model (``"virtio"``, ``"e1000e"``, ``"e1000"``,
    #: ``"rtl8139"``); None: not managed (virtio for a new domain).
    nic_model: NicModel | None = None
    #: What the hardware clock keeps, ``"utc"`` or ``"localtime"``; None: not managed.
    clock: Clock | None = None
    #: The x86 timer settings virt-install writes (RTC catch-up, PIT delay, no HPET), or
    #: none of those timers; None: not managed.
    clock_timers: bool | None = None
    #: Hyper-V enlightenments for Windows guests (relaxed, vapic, spinlocks and the
    #: hypervclock timer; needs ``virt_type: "kvm"``); None: not managed.
    hyperv: bool | None = None
    #: The sound device's model (``"ich9"``, ``"ich6"``, ``"ac97"``) or ``"none"``; None:
    #: not managed (a new domain has none).
    sound: Sound | None = None
    #: The number of SPICE USB redirection channels (needs ``graphics: "spice"``); None: not
    #: managed (a new domain has none).
    usb_redirection: int | None = None
    #: The video device's model (``"qxl"``, ``"virtio"``, ``"vga"``, ``"bochs"``) or
    #: ``"none"``; None: not managed (qxl with SPICE, VGA with VNC for a new domain).
    video: Video | None = None
    #: The value of each plugin field (its default when the author left it out). Read a
    #: field with :meth:`field`; this mapping is what a definition is built from.
    plugin_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The fields this VM has on its host, in schema order, with their defaults. Left out,
    #: it is :data:`BUILTIN_FIELDS` plus the keys of :attr:`plugin_values` (required).
    layout: VmFields = dataclasses.field(default=_UNSET, compare=False, repr=False)
    #: The fields the manifest's author wrote, defaults included; None (a VM built in code):
    #: every field.
    written: frozenset[str] | None = dataclasses.field(default=None, compare=False)
    #: The values plugins filled for fields the author did not write
    #: (:func:`~bkt_vm_plugin.hookspecs.bkt_vm_defaults`), by field name; they are this VM's
    #: defaults (:meth:`default`), so capture does not write them back.
    filled: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}), compare=False, repr=False
    )
    #: The plugin that filled each field of :attr:`filled`, by field name (sync names it
    #: when it refuses to change an existing domain for a filled value).
    filled_by: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "iso_sources", tuple(self.iso_sources))
        values = {name: frozen(value) for name, value in self.plugin_values.items()}
        object.__setattr__(self, "plugin_values", types.MappingProxyType(values))
        clash = sorted(_BUILTIN_NAMES.intersection(self.plugin_values))
        if clash:
            raise ValueError(f"plugin_values holds built-in field {clash[0]!r}")
        if self.layout is _UNSET:
            names = (*BUILTIN_FIELDS.names, *self.plugin_values)
            layout = VmFields(names, BUILTIN_FIELDS.defaults)
            object.__setattr__(self, "layout", layout)
        if self.written is not None:
            object.__setattr__(self, "written", frozenset(self.written))
        if not isinstance(self.filled, types.MappingProxyType):
            filled = {name: frozen(value) for name, value in self.filled.items()}
            object.__setattr__(self, "filled", types.MappingProxyType(filled))
        if not isinstance(self.filled_by, types.MappingProxyType):
            object.__setattr__(self, "filled_by", types.MappingProxyType(dict(self.filled_by)))

    def __hash__(self) -> int:
        builtin = tuple(getattr(self, n) for n in BUILTIN_FIELDS.names)
        return hash((builtin, _hashable(dict(self.plugin_values))))

    def field(self, name: str) -> Any:
        """The value of field ``name``: a built-in or a plugin field (its default when the
        plugin is installed but the author left the field out). Raises KeyError for a field
        the host does not have (a plugin field whose plugin is not installed).

        A plugin field's value is plain and immutable, whatever type the plugin declared it
        with: ``str``, ``int``, ``float``, ``bool`` or None; a tuple of such values for a
        list or tuple; a read-only mapping (:class:`types.MappingProxyType`) of them for a
        dict, a TypedDict or a pydantic model (a model's fields that are None are left out,
        as capture writes them). Compare a list field with a tuple (``("a",)``, not
        ``["a"]``); :meth:`as_json` gives JSON lists and dicts back."""
        if name in _BUILTIN_NAMES:
            return getattr(self, name)
        try:
            return self.plugin_values[name]
        except KeyError:
            raise KeyError(f"VM field {name!r} is not a field of this host") from None

    def replace(self, **changes: Any) -> VmDefinition:
        """A copy with ``changes`` (built-in or plugin fields, by name) made; the changed
        fields count as written. Nothing is validated: build from JSON data with
        :meth:`VmSubsystem.vm_definition <bkt_vm_plugin.subsystem.VmSubsystem.vm_definition>`
        to have values checked. Raises KeyError for a field the host does not have."""
        layout = self.layout
        unknown = [n for n in changes if n not in layout.names]
        if unknown:
            raise KeyError(f"VM field {unknown[0]!r} is not a field of this host")
        builtin = {n: v for n, v in changes.items() if n in _BUILTIN_NAMES}
        plugin = {n: v for n, v in changes.items() if n not in _BUILTIN_NAMES}
        written = None if self.written is None else self.written | changes.keys()
        return dataclasses.replace(
            self,
            **builtin,
            plugin_values={**self.plugin_values, **plugin},
            written=written,
        )

    def default(self, name: str) -> Any:
        """This VM's default of optional field ``name``: the value a plugin filled for it
        (:attr:`filled`), else the host's default (:attr:`layout`). Raises KeyError for a
        required field or one the host does not have."""
        if name in self.filled:
            return self.filled[name]
        return self.layout.default(name)

    def normalized(self) -> dict[str, Any]:
        """The definition as capture writes it, as plain JSON data: every field whose value
        is this VM's default (:meth:`default`: a value a plugin filled counts) left out, in
        schema order."""
        out: dict[str, Any] = {}
        layout = self.layout
        for name in layout.names:
            value = self.field(name)
            if not layout.is_required(name) and value == self.default(name):
                continue
            out[name] = plain(value)
        return out

    def as_json(self) -> dict[str, Any]:
        """Every field, defaults included, as plain JSON data in schema order."""
        return {name: plain(self.field(name)) for name in self.layout.names}

    def as_written(self) -> dict[str, Any]:
        """The definition as its author wrote it, as plain JSON data: explicit defaults kept,
        schema order."""
        return {
            name: plain(self.field(name))
            for name in self.layout.names
            if self.written is None or name in self.written
        }


_BUILTIN_NAMES = frozenset(
    f.name
    for f in dataclasses.fields(VmDefinition)
    if f.name not in ("plugin_values", "layout", "written", "filled", "filled_by")
)

#: The layout of a host without plugin fields: the built-in fields and their defaults.
BUILTIN_FIELDS = VmFields(
    tuple(f.name for f in dataclasses.fields(VmDefinition) if f.name in _BUILTIN_NAMES),
    {
        f.name: f.default
        for f in dataclasses.fields(VmDefinition)
        if f.name in _BUILTIN_NAMES and f.default is not dataclasses.MISSING
    },
)


@dataclass(frozen=True, slots=True)
class VmManifest:
    """The ``vms.json`` manifest: its VMs by name (the libvirt domain name), in file order, in
    the read-only mapping ``vms``; ``schema`` is the ``$schema`` the file names, or None."""

    #: Each VM's definition by its name; read-only.
    vms: Mapping[str, VmDefinition]
    #: The ``$schema`` the file names, or None.
    schema: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vms", types.MappingProxyType(dict(self.vms)))

    def __hash__(self) -> int:
        return hash((tuple(self.vms.items()), self.schema))


def builtin_value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not a value of built-in field ``name``, or None when it is one: the
    cheap check of a value a plugin fills, without the manifest's model. A value is of the
    field's JSON type (``true`` is not a number) and, for a field with a fixed set of values,
    one of :data:`CHOICES`."""
    if name not in _BUILTIN_NAMES:
        return f"{name!r} is not a built-in field"
    choices = CHOICES.get(name)
    if choices is not None:
        if isinstance(value, str) and value in choices:
            return None
        return f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}"
    kind = _KINDS.get(name)
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, not {value!r}"
        low, high = _BOUNDS[name]
        if not low <= value <= high:
            return f"must be {low} to {high}, not {value}"
        return None
    if kind is str:
        return None if isinstance(value, str) else f"must be a string, not {value!r}"
    return f"{name!r} cannot be filled by a plugin"


#: The JSON type of each built-in field without a fixed set of values.
_KINDS: dict[str, type] = {
    "memory_gb": int,
    "vcpus": int,
    "disk_size_gb": int,
    "usb_redirection": int,
    "create_if_missing": bool,
    "allow_system_paths": bool,
    "secure_boot": bool,
    "clock_timers": bool,
    "hyperv": bool,
    "network": str,
}
_BOUNDS: dict[str, tuple[int, int]] = {
    "memory_gb": (1, U32_MAX),
    "vcpus": (1, U32_MAX),
    "disk_size_gb": (1, U32_MAX),
    "usb_redirection": (0, USB_REDIRECTION_MAX),
}


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: ISO sources as the objects ``vms.json`` writes, tuples
    and lists as lists, mappings (the read-only ones of :func:`frozen` too) as dicts, a
    plugin's model (anything with ``model_dump``) dumped without its ``None`` fields;
    anything else as it is."""
    if isinstance(value, IsoPath | IsoUrl):
        return value.as_json()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if dump is not None and not isinstance(value, type):
        return plain(dump(exclude_none=True))
    return value


def _hashable(value: Any) -> Any:
    """``value`` made hashable with the same equality: lists as tuples, dicts and sets as
    frozensets."""
    if isinstance(value, dict | types.MappingProxyType):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, set):
        return frozenset(_hashable(v) for v in value)
    return value
