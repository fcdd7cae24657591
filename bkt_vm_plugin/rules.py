"""The rules of ``vms.json`` that look at a VM's name or at several values at once.

They run on the raw parsed document, whatever the model says about it, so that they are
reported together with shape errors. Each rule looks only at values of the JSON type it
expects and leaves the others to the model's own messages.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from bkt_core.diagnostics import Problem, unknown_field_message
from bkt_core.jsonpos import JsonPath, char_repr
from bkt_vm_plugin.definition import IsoPath, IsoUrl
from bkt_vm_plugin.paths import expand_home, local_path_problem

__all__ = ["HYPERV_NEEDS_KVM", "USB_REDIRECTION_NEEDS_SPICE", "name_problem", "vm_rules"]

#: Why ``hyperv: true`` is refused under ``virt_type: "qemu"``.
HYPERV_NEEDS_KVM = (
    'Hyper-V enlightenments need virt_type "kvm" (QEMU\'s software emulation cannot start '
    "such a guest)"
)
#: Why ``usb_redirection`` above 0 is refused without SPICE graphics.
USB_REDIRECTION_NEEDS_SPICE = 'needs graphics "spice" (USB redirection is a SPICE channel)'


NAME_MAX = 64
NAME_PUNCTUATION = "._-"
_GOOD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")

#: Every key of an ISO source, of either form, in schema order.
_ISO_KEYS = list(dict.fromkeys(f.name for t in (IsoPath, IsoUrl) for f in dataclasses.fields(t)))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a VM (libvirt domain) name, if it cannot."""
    if _GOOD_NAME.fullmatch(name):
        return None
    if not 1 <= len(name) <= NAME_MAX:
        return f"VM name must be 1 to {NAME_MAX} characters long (it has {len(name)})"
    for c in name:
        if not (c.isascii() and c.isalnum()) and c not in NAME_PUNCTUATION:
            return f"VM name may hold only letters, digits, '.', '_' and '-', not {char_repr(c)}"
    if name[0] in ".-":
        return "VM name must not start with '.' or '-'"
    return None


def _disk_key(path: str) -> tuple[str, ...]:
    """What makes two absolute paths the same disk: their components, ignoring repeated
    slashes, ``.`` components and a trailing slash (as ``PurePosixPath`` compares them,
    and with ``//`` at the start the same as ``/``)."""
    return tuple(c for c in path.split("/") if c and c != ".")


def _vms(document: Any) -> Mapping[str, Any]:
    vms = document.get("vms") if isinstance(document, dict) else None
    return vms if isinstance(vms, dict) else {}


def vm_rules(document: Any, home: str | None) -> list[Problem]:
    """The VM rules beyond single fields: names, ``secure_boot`` needs UEFI, ``hyperv``
    needs KVM, ``usb_redirection`` needs SPICE, no two VMs on one disk, and the unknown keys
    of an ISO source that has neither form or both."""
    problems: list[Problem] = []
    disks: dict[tuple[str, ...], str] = {}
    for name, vm in _vms(document).items():
        at: JsonPath = ("vms", name)
        problem = name_problem(name)
        if problem is not None:
            problems.append(Problem(at, problem, at_key=True))
        if not isinstance(vm, dict):
            continue
        if vm.get("secure_boot") is True and vm.get("boot") == "bios":
            problems.append(Problem((*at, "secure_boot"), 'needs boot "uefi"'))
        if vm.get("hyperv") is True and vm.get("virt_type") == "qemu":
            problems.append(Problem((*at, "hyperv"), HYPERV_NEEDS_KVM))
        redirection = vm.get("usb_redirection")
        if (
            isinstance(redirection, int)
            and not isinstance(redirection, bool)
            and redirection > 0
            and vm.get("graphics") in ("vnc", "none")
        ):
            problems.append(Problem((*at, "usb_redirection"), USB_REDIRECTION_NEEDS_SPICE))
        disk = vm.get("disk_path")
        if isinstance(disk, str) and local_path_problem(disk, home) is None:
            other = disks.setdefault(_disk_key(expand_home(disk, home)), name)
            if other != name:
                problems.append(
                    Problem(
                        (*at, "disk_path"),
                        f'the same disk as VM "{other}" (two VMs must not share a disk)',
                    )
                )
        problems += _iso_source_keys(vm.get("iso_sources"), (*at, "iso_sources"))
    return problems


def _iso_source_keys(sources: Any, at: JsonPath) -> list[Problem]:
    """The model reports an ISO source with both forms or neither as a whole; its keys of
    no form are reported here, as they are for a source whose form is clear."""
    problems: list[Problem] = []
    if not isinstance(sources, list):
        return problems
    for i, source in enumerate(sources):
        if not isinstance(source, dict) or ("path" in source) != ("url" in source):
            continue
        for key in source:
            if key not in _ISO_KEYS:
                problems.append(
                    Problem((*at, i, key), unknown_field_message(key, _ISO_KEYS), at_key=True)
                )
    return problems
