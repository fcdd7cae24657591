"""Hand-written hypothesis strategies for valid VM definitions.

Every field and every enum value is drawn; text carries XML's special characters, spaces and
non-ASCII (``'"<>&``, ``é``) but no control characters (validation rejects those). A drawn
definition is validated with the host's fields (plugin fields included), so what the
strategies give is what a manifest can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.subsystem import VmSubsystem

__all__ = [
    "HOME",
    "ISO_CACHE",
    "OS_IDS",
    "UNCACHED_SUFFIX",
    "definitions",
    "disk_formats",
    "exists",
    "has_os_database",
    "iso_sources",
    "local_paths",
    "networks",
    "on_the_same_bus",
    "raw_definitions",
    "texts",
    "vm_names",
]

HOME = "/home/user"
ISO_CACHE = "/home/user/.cache/bkt/isos"
#: URL sources whose file name ends so are not in the ISO cache; local paths so do not exist.
UNCACHED_SUFFIX = "-x.iso"
U32_MAX = 2**32 - 1
#: Short ids of the installed osinfo database the ``os`` field is drawn from (Windows that
#: requires UEFI, an older Windows, two Linux distributions), and None (no OS named).
OS_IDS = ("win11", "win10", "fedora37", "ubuntu22.04", None)

_ALPHABET = "abcXYZ019 ._-'\"<>&é"


def texts(min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[str]:
    """Text with XML's special characters, spaces and non-ASCII."""
    return st.text(alphabet=_ALPHABET, min_size=min_size, max_size=max_size)


def vm_names() -> st.SearchStrategy[str]:
    """Domain names as ``<name>`` holds them (hostile ones included: render must escape)."""
    valid = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)
    return st.one_of(valid, texts().filter(lambda t: t.strip() != ""))


def _part() -> st.SearchStrategy[str]:
    return texts().map(lambda p: "dot" if p in (".", "..") else p)


def local_paths() -> st.SearchStrategy[str]:
    """Absolute paths, or ``~/...`` ones, without ``..`` components."""
    return st.builds(
        lambda tilde, parts: ("~/" if tilde else "/") + "/".join(parts),
        st.booleans(),
        st.lists(_part(), min_size=1, max_size=3),
    )


def iso_sources() -> st.SearchStrategy[dict[str, Any]]:
    """A local ISO or a URL one, as a manifest writes it."""
    path = st.builds(
        lambda p, missing: {"path": p + (UNCACHED_SUFFIX if missing else ".iso")},
        local_paths(),
        st.booleans(),
    )
    url = st.builds(
        lambda name, uncached, sha: {
            "url": f"https://example.org/isos/{name}{UNCACHED_SUFFIX if uncached else '.iso'}",
            **({"sha256": sha} if sha else {}),
        },
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        st.booleans(),
        st.one_of(st.none(), st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True)),
    )
    return st.one_of(path, url)


def networks() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("none"),
        st.just("user"),
        st.just("default"),
        texts().map(lambda n: f"bridge:{n}"),
        texts().filter(lambda n: n not in ("none", "user") and not n.startswith("bridge:")),
    )


def cpu_models() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.sampled_from(["host-passthrough", "host-model", "qemu64", "Skylake-Client"]),
        texts().filter(lambda m: m.strip() != ""),
    )


def _optional(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``{key: value}`` or ``{}``: an optional field written or left out."""
    return st.one_of(st.just({}), values.map(lambda v: {key: v}))


def has_os_database() -> bool:
    """Whether the osinfo database the ``os`` field reads is installed here."""
    from bkt_vm_plugin.osinfo import DatabaseMissing, default_database

    try:
        database = default_database()
    except DatabaseMissing:
        return False
    return all(short_id in database for short_id in OS_IDS if short_id is not None)


@st.composite
def raw_definitions(draw: st.DrawFn, with_os: bool = False) -> dict[str, Any]:
    """A VM definition as JSON-like data that validation accepts (with the default plugins:
    ``cpu_model`` and ``autostart`` included; ``os`` from :data:`OS_IDS` too when
    ``with_os``)."""
    data: dict[str, Any] = {
        "memory_gb": draw(st.one_of(st.integers(1, 64), st.just(U32_MAX))),
        "vcpus": draw(st.one_of(st.integers(1, 16), st.just(4096))),
        "disk_path": draw(local_paths()),
        "disk_size_gb": draw(st.integers(1, 1000)),
        "boot": draw(st.sampled_from(["uefi", "bios"])),
        "network": draw(networks()),
        "graphics": draw(st.sampled_from(["spice", "vnc", "none"])),
    }
    for key, values in (
        ("create_if_missing", st.booleans()),
        ("tpm", st.sampled_from(["2.0", "none"])),
        ("iso_sources", st.lists(iso_sources(), max_size=4)),
        ("virt_type", st.sampled_from(["kvm", "qemu"])),
        ("secure_boot", st.booleans()),
        ("autostart", st.booleans()),
        ("cpu_model", cpu_models()),
        ("disk_bus", st.sampled_from(["virtio", "sata"])),
        ("nic_model", st.sampled_from(["virtio", "e1000e", "e1000", "rtl8139"])),
        ("clock", st.sampled_from(["utc", "localtime"])),
        ("clock_timers", st.booleans()),
        ("hyperv", st.booleans()),
        ("sound", st.sampled_from(["ich9", "ich6", "ac97", "none"])),
        ("usb_redirection", st.integers(0, 8)),
        ("video", st.sampled_from(["qxl", "virtio", "vga", "bochs", "none"])),
        *((("os", st.sampled_from(OS_IDS)),) if with_os else ()),
    ):
        data.update(draw(_optional(key, values)))
    # The combinations validation rejects.
    if data["boot"] == "bios" and data.get("secure_boot"):
        data["secure_boot"] = False
    if data.get("virt_type") == "qemu" and data.get("cpu_model") == "host-passthrough":
        data["cpu_model"] = "host-model"
    if data.get("cpu_model", "") is None:
        del data["cpu_model"]
    if data.get("virt_type") == "qemu" and data.get("hyperv"):
        data["hyperv"] = False
    if data["graphics"] != "spice" and data.get("usb_redirection"):
        data["usb_redirection"] = 0
    return data


def definitions(
    sub: VmSubsystem,
    extra: Callable[[st.DrawFn], dict[str, Any]] | None = None,
) -> st.SearchStrategy[VmDefinition]:
    """Valid definitions of the VM subsystem ``sub`` (its fields, plugin fields included),
    filled as loading the manifest fills them (the plugins' ``bkt_vm_defaults``); ``extra``
    draws the fields of plugins beyond the default ones. With the ``os`` plugin (and the
    osinfo database) installed, ``os`` is drawn too."""
    from bkt_vm_plugin.defaults import fill_vm

    with_os = "os" in sub.vm_fields.names and has_os_database()

    @st.composite
    def build(draw: st.DrawFn) -> VmDefinition:
        data = draw(raw_definitions(with_os=with_os))
        if extra is not None:
            data.update(extra(draw))
        return fill_vm("vm", sub.vm_definition(data, home=HOME), sub.hooks)

    return build()


def on_the_same_bus(old: VmDefinition, new: VmDefinition) -> VmDefinition:
    """``new``, but with its disk on the bus of the domain rendered from ``old`` when it states
    another one: patch never moves an existing disk to another bus (it refuses)."""
    bus = old.disk_bus or "virtio"
    return new if new.disk_bus in (None, bus) else new.replace(disk_bus=bus)


def disk_formats() -> st.SearchStrategy[str]:
    return st.sampled_from(["qcow2", "raw"])


def exists(path: str) -> bool:
    """The file system of the strategies: everything exists but ``*-x.iso``."""
    return not path.endswith(UNCACHED_SUFFIX)
