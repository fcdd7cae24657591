"""The ``vms.json`` manifest: pydantic models, their defaults, and the rules of one field.

The models are strict: ``1.0`` is not an integer and ``"2"`` is not a number. Optional fields
have their SPEC.md default here and nowhere else; whether the author wrote a field is kept by
pydantic (``model_fields_set``), so an explicit ``"tpm": "none"`` survives a capture.
Rules that look at several fields, or at a VM's name (the key of ``vms``), are checked on the
raw document by :mod:`bkt_vm_plugin.rules`, so that they are reported together with shape
errors. ``autostart`` and ``cpu_model`` are not here: their plugins declare them.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Annotated, Any, Literal

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

from bkt_core.manifest import char_repr, json_type_name

__all__ = [
    "CONTROL_MESSAGE",
    "Boot",
    "Graphics",
    "IsoPath",
    "IsoSource",
    "IsoUrl",
    "Tpm",
    "VirtType",
    "VmDefinition",
    "VmManifest",
    "expand_home",
    "home_dir",
    "iso_url_file_name",
    "json_type_name",
    "local_path_problem",
    "network_kind",
    "xml_problem",
]

Boot = Literal["uefi", "bios"]
Tpm = Literal["2.0", "none"]
Graphics = Literal["spice", "vnc", "none"]
VirtType = Literal["kvm", "qemu"]

U32_MAX = 4294967295
CONTROL_MESSAGE = "must not contain control characters"
BRIDGE_PREFIX = "bridge:"


def home_dir() -> str | None:
    """``$HOME`` when it is set and not empty: what ``~`` means in paths."""
    return os.environ.get("HOME") or None


def expand_home(path: str, home: str | None) -> str:
    """Expands ``~`` and ``~/...`` with ``home``; ``~user`` is left as it is (and is then not
    absolute, which validation reports)."""
    if home is not None and (path == "~" or path.startswith("~/")):
        return posixpath.join(home, path[1:].lstrip("/"))
    return path


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode Cc
_SPACE_OR_CONTROL = re.compile("[\\s\x00-\x1f\x7f-\x9f]")
_SHA256 = re.compile("[0-9a-fA-F]{64}")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


#: A character that XML 1.0 cannot carry, even escaped: a C0 control other than tab, LF and
#: CR, a surrogate, U+FFFE or U+FFFF (the complement of its ``Char`` production).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_problem(text: str) -> str | None:
    """Why ``text`` cannot be written into the domain XML, if it cannot."""
    found = _NOT_XML.search(text)
    if found is None:
        return None
    if has_control(found.group()):
        return CONTROL_MESSAGE
    return f"must not contain {char_repr(found.group())}, a character XML cannot hold"


def _xml_problem_in(value: Any) -> str | None:
    """The first :func:`xml_problem` of a field's value: a string, or the strings (keys
    included) of a list or dict a plugin declared. Nested manifest models check themselves."""
    if isinstance(value, str):
        return xml_problem(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            problem = _xml_problem_in(item)
            if problem is not None:
                return problem
    return None


def local_path_problem(path: str, home: str | None) -> str | None:
    """Why ``path`` cannot be a disk or ISO path, if it cannot."""
    if has_control(path):
        return CONTROL_MESSAGE
    if path.startswith("~") and home is None:
        return "starts with ~ but HOME is not set"
    expanded = expand_home(path, home)
    if not expanded.startswith("/"):
        return f'must be an absolute path (after ~ expansion), not "{path}"'
    if ".." in expanded.split("/"):
        return 'must not contain ".."'
    return None


def iso_url_file_name(url: str) -> str:
    """The file name under which the ISO cache keeps ``url``'s download.

    Raises ``ValueError`` with the user-facing reason when ``url`` cannot be an ISO source.
    """
    if _SPACE_OR_CONTROL.search(url):
        raise ValueError("must be a URL without spaces or control characters")
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            break
    else:
        raise ValueError("must be an http:// or https:// URL")
    for cut in "?#":
        rest = rest.split(cut, 1)[0]
    host, _, path = rest.partition("/")
    if not host:
        raise ValueError("URL has no host")
    name = path.rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise ValueError("URL must end in a file name (the ISO cache stores it under that name)")
    return name


def network_kind(network: str) -> tuple[Literal["network", "bridge", "none"], str]:
    """What a ``network`` value means: a libvirt network, a host bridge, or no interface."""
    if network == "none":
        return "none", ""
    if network.startswith(BRIDGE_PREFIX):
        return "bridge", network[len(BRIDGE_PREFIX) :]
    return "network", network


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
        raise _rule('must name a libvirt network, "bridge:NAME" or "none"')
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
    # so the built-in VmDefinition's own validator is never built at all.
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


class IsoPath(_Closed):
    """A local installer ISO."""

    path: LocalPath


class IsoUrl(_Closed):
    """An installer ISO to download with ``bkt vm fetch-iso`` into the ISO cache."""

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
        return "url" if isinstance(value, IsoUrl) else "path"
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
    Annotated[IsoPath, Tag("path")] | Annotated[IsoUrl, Tag("url")],
    Discriminator(_iso_form),
    BeforeValidator(_check_iso_form),
]


class VmDefinition(_Closed):
    """A single VM definition."""

    memory_gb: Count = Field(description="Memory in GiB.")
    vcpus: Count = Field(description="Number of virtual CPUs.")
    disk_path: LocalPath = Field(
        description="Absolute path of the VM's disk image (`~` is expanded)."
    )
    disk_size_gb: Count = Field(
        description="Size in GiB used when the disk is provisioned; never used to resize."
    )
    create_if_missing: bool = Field(default=False, description="Provision disk_path if missing.")
    boot: Boot = Field(description="Firmware.")
    tpm: Tpm = Field(default="none", description="Emulated TPM.")
    network: Annotated[str, AfterValidator(_check_network)] = Field(
        description="A libvirt network name, `bridge:NAME` for a host bridge, or `none`."
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

    def field(self, name: str) -> Any:
        """The effective value of a field, plugin fields included (their default when the
        plugin is installed but the author left the field out)."""
        return getattr(self, name)

    def normalized(self) -> dict[str, Any]:
        """The definition as capture writes it: every field whose value is its default left
        out, in schema order."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if not info.is_required() and value == info.get_default(call_default_factory=True):
                continue
            out[name] = _plain(value)
        return out

    def as_written(self) -> dict[str, Any]:
        """The definition as its author wrote it: explicit defaults kept, schema order."""
        return {
            name: _plain(getattr(self, name))
            for name in type(self).model_fields
            if name in self.model_fields_set
        }


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class VmManifest(BaseModel):
    """The vms.json manifest."""

    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True, title="VmManifest", defer_build=True
    )

    schema_: str | None = Field(default=None, alias="$schema")
    vms: dict[str, VmDefinition] = Field(
        description="VM definitions keyed by VM name; the name is the libvirt domain name."
    )
