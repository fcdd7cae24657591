"""The ``vms.json`` manifest: pydantic models, their defaults, and the rules of one field.

The models are strict: ``1.0`` is not an integer and ``"2"`` is not a number. Optional fields
have their default here and nowhere else; whether the author wrote a field is kept by
pydantic (``model_fields_set``), so an explicit ``"tpm": "none"`` survives a capture.
Rules that look at several fields, or at a VM's name (the key of ``vms``), are checked on the
raw document by :mod:`bkt_vm_plugin.rules`, so that they are reported together with shape
errors. ``autostart`` and ``cpu_model`` are not here: their plugins declare them.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

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

from bkt_core.diagnostics import char_repr, json_type_name

if TYPE_CHECKING:
    from urllib.parse import SplitResult

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
    "parse_url",
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
    included) of a list, dict or model a plugin declared. The manifest's own nested models
    check themselves."""
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


#: A host name or IPv4 address: what a URL's host may be outside brackets. Labels of 1 to 63
#: characters, as the resolver takes them.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_~-]{1,63}\.)*[A-Za-z0-9_~-]{1,63}\.?")
#: Longest file name an ISO URL may end in: the cache adds a digest and suffixes to it and
#: a file system allows 255 bytes.
MAX_FILE_NAME = 200


def parse_url(url: str) -> SplitResult:
    """``url`` split, when it is an http or https URL that ``bkt vm fetch-iso`` can fetch.

    Manifest validation and the downloader (for the manifest's URL and for every redirect)
    both call this, so that validation accepts exactly what the downloader can fetch and a
    malformed URL is reported at its place in the file, never by the HTTP library. Raises
    ``ValueError`` with the user-facing reason; the reason never quotes the URL, which could
    hold a password.
    """
    from urllib.parse import urlsplit

    if _SPACE_OR_CONTROL.search(url):
        raise ValueError("must be a URL without spaces or control characters")
    if not url.isascii():
        raise ValueError(
            "must be a URL of ASCII characters (percent-encode others, and write a host name "
            "in its xn-- form)"
        )
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    authority = re.split("[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        # The manifest is kept in git, and the downloader would not send them anyway.
        raise ValueError("must not contain a user name or password (user:password@)")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("URL has an [IPv6] address without its closing ]")
        host, after = authority[1:end], authority[end + 1 :]
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("URL has an invalid IPv6 address in brackets") from None
        if "%" in host:
            raise ValueError("URL must not have a zone in its IPv6 address")
    else:
        host = authority.split(":", 1)[0]
        after = authority[len(host) :]
        if not host:
            raise ValueError("URL has no host")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(
                "URL host must be a host name (labels of 1 to 63 letters, digits, '-', '_' "
                "or '~', between dots), an IPv4 address or an [IPv6] address"
            )
    if after and not after.startswith(":"):
        raise ValueError("URL must have nothing but :port after its [IPv6] address")
    port = after[1:]
    if port and not (len(port) <= 5 and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("URL port must be a number from 1 to 65535")
    try:
        return urlsplit(url)
    except ValueError:  # pragma: no cover - the checks above leave nothing it refuses
        raise ValueError("is not a valid URL") from None


def iso_url_file_name(url: str) -> str:
    """The file name ``url`` ends in (the last segment of its path). The ISO cache keeps the
    download under a name made from it (:func:`bkt_vm_plugin.iso.cache_name`).

    Raises ``ValueError`` with the user-facing reason when ``url`` cannot be an ISO source.
    """
    name = parse_url(url).path.rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise ValueError("URL must end in a file name (the ISO cache stores it under that name)")
    if len(name) > MAX_FILE_NAME:
        raise ValueError(f"URL's file name must be at most {MAX_FILE_NAME} characters")
    return name


def network_kind(network: str) -> tuple[Literal["network", "bridge", "user", "none"], str]:
    """What a ``network`` value means: a libvirt network, a host bridge, user-mode networking,
    or no interface."""
    if network == "none":
        return "none", ""
    if network == "user":
        return "user", ""
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
