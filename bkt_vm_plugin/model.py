"""The ``vms.json`` manifest's pydantic models: they validate a manifest and produce its JSON
Schema, and :func:`to_manifest` turns a validated manifest into the plain
:class:`~bkt_vm_plugin.definition.VmManifest` that everything else uses.

The models are strict: ``1.0`` is not an integer and ``"2"`` is not a number. Optional fields
have their default here and nowhere else; whether the author wrote a field is kept by
pydantic (``model_fields_set``) and handed on, so an explicit ``"tpm": "none"`` survives a
capture. Rules that look at several fields, or at a VM's name (the key of ``vms``), are
checked on the raw document by :mod:`bkt_vm_plugin.rules`, so that they are reported together
with shape errors. ``autostart`` and ``cpu_model`` are not here: their plugins declare them.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from bkt_core.diagnostics import json_type_name
from bkt_core.jsonpos import char_repr
from bkt_vm_plugin.definition import (
    U32_MAX,
    USB_REDIRECTION_MAX,
    Boot,
    Clock,
    DiskBus,
    Graphics,
    IsoPath,
    IsoUrl,
    NicModel,
    Sound,
    Tpm,
    Video,
    VirtType,
    VmDefinition,
    VmFields,
    VmManifest,
)
from bkt_vm_plugin.paths import (
    BRIDGE_PREFIX,
    CONTROL_MESSAGE,
    has_control,
    home_dir,
    iso_url_file_name,
    local_path_problem,
    xml_problem,
)

__all__ = [
    "SCHEMA_NAMES",
    "IsoPathModel",
    "IsoUrlModel",
    "ManifestModel",
    "VmModel",
    "fields_of",
    "to_definition",
    "to_manifest",
    "validate_vm",
]

_SHA256 = re.compile("[0-9a-fA-F]{64}")


def _xml_problem_in(value: Any) -> str | None:
    """The first :func:`~bkt_vm_plugin.paths.xml_problem` of a field's value: a string, or the
    strings (keys included) of a list, dict or model a plugin declared. The manifest's own
    nested models check themselves."""
    if isinstance(value, str):
        return xml_problem(value)
    if isinstance(value, _Closed):
        return None
    if isinstance(value, BaseModel):
        value = [getattr(value, name) for name in type(value).model_fields]
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            problem = _xml_problem_in(item)
            if problem is not None:
                return problem
    return None


def _rule(message: str) -> PydanticCustomError:
    return PydanticCustomError("bkt_rule", message)


def _check_local_path(value: str, info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    problem = local_path_problem(value, context.get("home", home_dir()))
    if problem:
        raise _rule(problem)
    return value


def _check_url(value: str) -> str:
    try:
        iso_url_file_name(value)
    except ValueError as exc:
        raise _rule(str(exc)) from None
    return value


def _check_sha256(value: str) -> str:
    want = "must be a SHA-256 digest: 64 hexadecimal digits"
    if len(value) != 64:
        raise _rule(f"{want}, not {len(value)} characters")
    if not _SHA256.fullmatch(value):
        bad = next(c for c in value if c not in "0123456789abcdefABCDEF")
        raise _rule(f"{want}, not {char_repr(bad)}")
    return value


def _check_network(value: str) -> str:
    if value == "":
        raise _rule('must name a libvirt network, "bridge:NAME", "user" or "none"')
    if value == BRIDGE_PREFIX:
        raise _rule('"bridge:" needs a bridge name')
    if has_control(value):
        raise _rule(CONTROL_MESSAGE)
    return value


LocalPath = Annotated[str, AfterValidator(_check_local_path)]
Count = Annotated[int, Field(ge=1, le=U32_MAX)]


class _Closed(BaseModel):
    # defer_build: a model's validator is built when first used, not when its class is
    # defined; a host with plugin fields validates with a subclass (VmSubsystem.vm_model),
    # so the built-in VmModel's own validator is never built at all.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    # Every string of a VM may end up in its domain XML, a plugin's fields too: each field,
    # of this model or of a subclass with plugin fields, holds only what XML can carry.
    @field_validator("*")
    @classmethod
    def _xml_characters(cls, value: Any) -> Any:
        problem = _xml_problem_in(value)
        if problem is not None:
            raise _rule(problem)
        return value


# Each model's docstring is its description in the JSON Schema and its title the name the
# schema gives it (SCHEMA_NAMES): both are what users see, whatever the class is called.


class IsoPathModel(_Closed):
    """A local installer ISO."""

    model_config = ConfigDict(title="IsoPath")

    path: LocalPath


class IsoUrlModel(_Closed):
    """An installer ISO to download with ``bkt vm fetch-iso`` into the ISO cache."""

    model_config = ConfigDict(title="IsoUrl")

    url: Annotated[str, AfterValidator(_check_url)]
    sha256: Annotated[
        str | None,
        AfterValidator(lambda v: v if v is None else _check_sha256(v)),
        Field(
            default=None,
            description=(
                "SHA-256 of the file (64 hexadecimal digits); `bkt vm fetch-iso` accepts a "
                "download only when it matches."
            ),
            json_schema_extra={"type": "string"},
        ),
    ]


def _iso_form(value: Any) -> str:
    """Which form an ISO source is, by its required key (checked by :func:`_check_iso_form`)."""
    if isinstance(value, BaseModel):
        return "url" if isinstance(value, IsoUrlModel) else "path"
    return "path" if "path" in value else "url"


def _check_iso_form(value: Any) -> Any:
    """Says which of the two forms an ISO source misses, before pydantic picks one."""
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "bkt_iso_form",
            'expected an object with "path" or "url", found {found}',
            {"found": json_type_name(value)},
        )
    has_path, has_url = "path" in value, "url" in value
    if has_path and has_url:
        raise PydanticCustomError(
            "bkt_iso_form", 'must have exactly one of "path" or "url", not both'
        )
    if not (has_path or has_url):
        raise PydanticCustomError("bkt_iso_form", 'must have "path" or "url"')
    return value


IsoSource = Annotated[
    Annotated[IsoPathModel, Tag("path")] | Annotated[IsoUrlModel, Tag("url")],
    Discriminator(_iso_form),
    BeforeValidator(_check_iso_form),
]


class VmModel(_Closed):
    """A single VM definition."""

    model_config = ConfigDict(title="VmDefinition")

    memory_gb: Count = Field(description="Memory in GiB.")
    vcpus: Count = Field(description="Number of virtual CPUs.")
    disk_path: LocalPath = Field(
        description="Absolute path of the VM's disk image (`~` is expanded)."
    )
    disk_size_gb: Count = Field(
        description="Size in GiB used when the disk is provisioned; never used to resize."
    )
    create_if_missing: bool = Field(default=False, description="Provision disk_path if missing.")
    allow_system_paths: bool = Field(
        default=False,
        description=(
            "Allow disk_path and ISO paths in the host's system directories (/etc, /usr, "
            "/boot, /proc, /sys, /dev, /run, ...), refused otherwise."
        ),
    )
    boot: Boot = Field(description="Firmware.")
    tpm: Tpm = Field(default="none", description="Emulated TPM.")
    network: Annotated[str, AfterValidator(_check_network)] = Field(
        description="A libvirt network name, `bridge:NAME` for a host bridge, `user` for "
        "user-mode networking (QEMU's own NAT, for unprivileged VMs), or `none`."
    )
    graphics: Graphics = Field(description="Graphical console.")
    iso_sources: list[IsoSource] = Field(
        default_factory=list,
        description="Installer ISOs, attached as read-only CD-ROMs in this order.",
    )
    virt_type: VirtType = Field(
        default="kvm",
        description=(
            "Domain type: `kvm`, or `qemu` for software emulation where KVM is not usable."
        ),
    )
    secure_boot: bool = Field(
        default=False, description='UEFI Secure Boot (needs `boot: "uefi"`; implies SMM).'
    )
    # The device fields: absent (or null, as VmDefinition.as_json() gives it) means bkt does
    # not manage the device: a new domain gets bkt's own choice, an existing domain keeps
    # what it has.
    disk_bus: DiskBus | None = Field(
        default=None,
        description="The disk's bus. Absent: not managed (virtio for a new VM). An existing "
        "disk's bus is never changed.",
        json_schema_extra={"type": ["string", "null"]},
    )
    nic_model: NicModel | None = Field(
        default=None,
        description="The network interface's model. Absent: not managed (virtio for a new VM).",
        json_schema_extra={"type": ["string", "null"]},
    )
    clock: Clock | None = Field(
        default=None,
        description="What the hardware clock keeps: `utc`, or `localtime` (Windows). Absent: "
        "not managed (libvirt's default is utc).",
        json_schema_extra={"type": ["string", "null"]},
    )
    clock_timers: bool | None = Field(
        default=None,
        description="The x86 timers virt-install sets: RTC catch-up, PIT delay, no HPET "
        "(`false`: none of these timers). Absent: not managed.",
        json_schema_extra={"type": ["boolean", "null"]},
    )
    hyperv: bool | None = Field(
        default=None,
        description="Hyper-V enlightenments for Windows guests: relaxed, vapic, spinlocks "
        '(8191 retries) and the hypervclock timer (needs `virt_type: "kvm"`). Absent: not '
        "managed.",
        json_schema_extra={"type": ["boolean", "null"]},
    )
    sound: Sound | None = Field(
        default=None,
        description="The sound device's model, or `none`. Absent: not managed (none for a "
        "new VM).",
        json_schema_extra={"type": ["string", "null"]},
    )
    usb_redirection: Annotated[int, Field(ge=0, le=USB_REDIRECTION_MAX)] | None = Field(
        default=None,
        description="How many USB devices a SPICE client can redirect into the guest (needs "
        '`graphics: "spice"`). Absent: not managed (none for a new VM).',
        json_schema_extra={"type": ["integer", "null"]},
    )
    video: Video | None = Field(
        default=None,
        description="The video device's model, or `none`. Absent: not managed (qxl with "
        "SPICE, vga with VNC for a new VM).",
        json_schema_extra={"type": ["string", "null"]},
    )


class ManifestModel(BaseModel):
    """The vms.json manifest."""

    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True, title="VmManifest", defer_build=True
    )

    schema_: str | None = Field(default=None, alias="$schema")
    vms: dict[str, VmModel] = Field(
        description="VM definitions keyed by VM name; the name is the libvirt domain name."
    )


#: The name the JSON Schema gives each model (its key in ``$defs``): the names of the plain
#: types a plugin sees, not of these classes.
SCHEMA_NAMES = {
    "IsoPathModel": "IsoPath",
    "IsoUrlModel": "IsoUrl",
    "VmModel": "VmDefinition",
    "ManifestModel": "VmManifest",
}


# -- from the models to the plain definition ------------------------------------------------


#: Each VM model's fields, made once: every definition of a host shares them. Weak, so that
#: a host's model (a class made for its plugins) goes when the host goes.
_FIELDS: weakref.WeakKeyDictionary[type[VmModel], VmFields] = weakref.WeakKeyDictionary()


def fields_of(model: type[VmModel]) -> VmFields:
    """The fields of VM model ``model`` (built-in and plugin fields, schema order) with their
    defaults, as every definition made from it carries them."""
    found = _FIELDS.get(model)
    if found is None:
        defaults: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            if not info.is_required():
                defaults[name] = _runtime(name, info.get_default(call_default_factory=True))
        found = _FIELDS[model] = VmFields(tuple(model.model_fields), defaults)
    return found


def _runtime(name: str, value: Any) -> Any:
    """Field ``name``'s validated value as a definition holds it: ISO sources as plain
    objects in a tuple; any other value as pydantic made it, which the definition then makes
    immutable (:func:`~bkt_vm_plugin.definition.frozen`: a plugin's model becomes a read-only
    mapping of its dump without ``None`` fields, as capture writes it)."""
    if name != "iso_sources":
        return value
    return tuple(
        IsoPath(s.path) if isinstance(s, IsoPathModel) else IsoUrl(s.url, s.sha256) for s in value
    )


def to_definition(vm: VmModel) -> VmDefinition:
    """The plain definition of validated VM ``vm``: every field's value, and which fields its
    author wrote."""
    layout = fields_of(type(vm))
    values = {name: _runtime(name, getattr(vm, name)) for name in type(vm).model_fields}
    plugin = {name: values.pop(name) for name in layout.plugin_names}
    return VmDefinition(
        **values, plugin_values=plugin, layout=layout, written=frozenset(vm.model_fields_set)
    )


def to_manifest(manifest: BaseModel) -> VmManifest:
    """The plain manifest of validated ``manifest`` (a :class:`ManifestModel`, as the
    manifest loader returns it)."""
    if not isinstance(manifest, ManifestModel):
        raise TypeError(f"expected a ManifestModel, not {type(manifest).__name__}")
    return VmManifest(
        {name: to_definition(vm) for name, vm in manifest.vms.items()}, schema=manifest.schema_
    )


def validate_vm(
    data: Mapping[str, Any], *, model: type[VmModel] = VmModel, home: str | None = None
) -> VmDefinition:
    """One VM's manifest entry (JSON data: dicts, lists, strings, numbers) validated with
    ``model`` (the built-in fields by default; a host's model with its plugin fields is
    :attr:`VmSubsystem.vm_model <bkt_vm_plugin.subsystem.VmSubsystem.vm_model>`) into a plain
    definition. ``~`` in paths means ``home``, by default ``$HOME``. Only the model's own
    checks run, not the manifest rules of :mod:`bkt_vm_plugin.rules`. Raises
    ``pydantic.ValidationError``."""
    context = {"home": home if home is not None else home_dir()}
    return to_definition(model.model_validate(data, strict=True, context=context))
