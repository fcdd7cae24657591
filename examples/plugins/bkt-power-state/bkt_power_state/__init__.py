"""bkt-power-state: a desired power state, ``"running": true``.

A **post-sync action**: after sync has defined every VM, the plugin starts the VMs that should
run and do not, all in one virsh process. The field is read from what libvirt observes (the
domain is active: running or paused), not from the domain XML, so ``bkt vm status`` shows
``drift: running`` for a VM that should run and is stopped, ``sync --check`` exits 1 for it,
and a change of it alone defines nothing.

``running: false`` (the default) means "leave the power state alone": sync never stops a VM
(``bkt vm stop`` does that, gracefully). Capture writes ``running: true`` for a domain that is
active, so that capture then sync leaves it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core import hookimpl

if TYPE_CHECKING:
    from bkt_core import SyncReport
    from bkt_vm_plugin.api import DomainField, PostSyncContext

__all__ = ["bkt_domain_fields", "bkt_manifest_fields", "bkt_post_sync", "to_start"]

__version__ = "1.0.0"

FIELD = "running"


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != "vm":
        return None
    from pydantic import Field

    return {
        FIELD: (
            bool,
            Field(
                default=False,
                description=(
                    "Start the VM after sync when it is not running; false leaves its power "
                    "state alone (plugin bkt-power-state)."
                ),
            ),
        )
    }


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    from bkt_power_state.field import RunningField

    return [RunningField()]


def to_start(report: SyncReport) -> list[str]:
    """The VMs of a sync to start: those whose plan says ``running: false -> true`` and that
    did not fail (a domain that could not be defined is not started)."""
    failed = set(report.failed)
    return [
        entry.name
        for entry in report.plan.entries
        if entry.name not in failed
        and any(c.field == FIELD and c.new == "true" for c in entry.changes)
    ]


@hookimpl
def bkt_post_sync(report: SyncReport, context: PostSyncContext) -> None:
    names = to_start(report)
    if not names:
        return
    # One virsh process for every start of the run; each reply is checked on its own.
    replies = context.virsh.batch([["start", "--domain", name] for name in names])
    for name, reply in zip(names, replies, strict=True):
        # Started by someone else since the plan was made: what was wanted.
        if not reply.ok and "already active" not in reply.message:
            context.fail(name, f"cannot start it: {reply.message}")
