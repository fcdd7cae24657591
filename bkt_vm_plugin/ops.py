"""``bkt vm start`` and ``bkt vm stop``: control one domain's power state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bkt_core.errors import OperationError, UsageError
from bkt_vm_plugin.virsh import DomainState

if TYPE_CHECKING:
    from bkt_vm_plugin.subsystem import VmSubsystem

POLL_SECONDS = 0.25


def not_in_manifest(sub: VmSubsystem, name: str, *, hint: str) -> UsageError:
    """The error for a VM name the manifest does not have, whichever command was given it: a
    usage error (exit 2), with ``hint`` saying what the user can do instead."""
    return UsageError(f"VM {name} is not in {sub.manifest_path}", hint=hint)


def check_name(sub: VmSubsystem, name: str, *, unmanaged: bool) -> None:
    """``name`` is a manifest VM (or ``unmanaged`` allows any domain) that libvirt has. The
    whole manifest is validated first, even with ``unmanaged``."""
    manifest = sub.load()
    in_manifest = name in manifest.vms
    in_libvirt = name in sub.virsh.domain_names()
    if not in_manifest and not unmanaged:
        raise not_in_manifest(
            sub,
            name,
            hint="it is a libvirt domain: pass --unmanaged to act on it anyway"
            if in_libvirt
            else "`bkt vm status --all` lists the VMs",
        )
    if not in_libvirt:
        raise OperationError(
            f"libvirt has no domain named {name}",
            hint="`bkt vm sync` defines it"
            if in_manifest
            else "`bkt vm status --all` lists the VMs",
        )


def _state(sub: VmSubsystem, name: str) -> DomainState:
    try:
        return sub.virsh.domain_state(name)
    except OperationError as exc:
        raise OperationError(f"VM {name}: {exc.message}", hint=exc.hint) from None


def _run(sub: VmSubsystem, name: str, *args: str) -> None:
    try:
        sub.virsh.run([*args, "--domain", name])
    except OperationError as exc:
        raise OperationError(f"VM {name}: {exc.message}", hint=exc.hint) from None


def start(sub: VmSubsystem, name: str, *, unmanaged: bool = False) -> str:
    """Start ``name``; what happened, as the CLI says it."""
    check_name(sub, name, unmanaged=unmanaged)
    state = _state(sub, name)
    if state.is_active:
        return f"{name}: already {state}"
    _run(sub, name, "start")
    return f"{name}: started"


def stop(
    sub: VmSubsystem,
    name: str,
    *,
    force: bool = False,
    timeout: float = 120.0,
    unmanaged: bool = False,
) -> str:
    """Stop ``name``: an ACPI shutdown request and a wait of up to ``timeout`` seconds, or
    with ``force`` a power-off at once."""
    check_name(sub, name, unmanaged=unmanaged)
    if not _state(sub, name).is_active:
        return f"{name}: already stopped"
    if force:
        _run(sub, name, "destroy")
        return f"{name}: powered off (destroyed)"
    _run(sub, name, "shutdown", "--mode", "acpi")
    deadline = time.monotonic() + timeout
    while True:
        if not _state(sub, name).is_active:
            return f"{name}: shut down"
        left = deadline - time.monotonic()
        if left <= 0:
            raise OperationError(
                f"VM {name} did not shut down within {timeout:g} s",
                hint="the guest may not react to ACPI shutdown; "
                f"`bkt vm stop {name} --force` powers it off at once",
            )
        time.sleep(min(POLL_SECONDS, left))
