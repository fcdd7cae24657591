"""The ``autostart`` plugin: start a VM when the host boots (``virsh autostart``).

Its field is read from the observation batch (``virsh list --autostart``), so it drifts like
any other field, and it is applied after the definitions are written, by a post-sync action
that batches every ``virsh autostart`` of the run into one virsh process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl
from bkt_vm_plugin import SUBSYSTEM_NAME
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading

if TYPE_CHECKING:
    from bkt_core.plan import SyncReport
    from bkt_vm_plugin.sync import PostSyncContext
    from bkt_vm_plugin.xmltree import Element

__all__ = ["AutostartField", "bkt_domain_fields", "bkt_manifest_fields", "bkt_post_sync"]


class AutostartField(DomainField):
    """``autostart``: not in the domain XML. Observed as ``ctx.facts["autostart"]`` (from
    ``virsh list --autostart``) and applied by :func:`bkt_post_sync`, so a change of it alone
    needs no ``virsh define``."""

    fields = ("autostart",)
    in_xml = False

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {"autostart": Reading.clean(bool(ctx.facts.get("autostart", False)))}


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != SUBSYSTEM_NAME:
        return None
    from pydantic import Field

    return {
        "autostart": (
            bool,
            Field(
                default=False, description="Start the VM when the host boots (`virsh autostart`)."
            ),
        )
    }


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    """:class:`AutostartField`."""
    return [AutostartField()]


@hookimpl
def bkt_post_sync(report: SyncReport, context: PostSyncContext) -> None:
    # One virsh process for every autostart change of the run: VMs that were created with
    # autostart on, and VMs whose autostart drifted.
    commands: list[list[str]] = []
    owners: list[str] = []
    results = {r.name: r.result for r in report.results or ()}
    for entry in report.plan.entries:
        if results.get(entry.name) in (None, "failed"):
            continue
        change = next((c for c in entry.changes if c.field == "autostart"), None)
        if change is None:
            continue
        flag = [] if change.new == "true" else ["--disable"]
        commands.append(["autostart", *flag, "--domain", entry.name])
        owners.append(entry.name)
    if not commands:
        return
    for name, reply in zip(owners, context.virsh.batch(commands), strict=True):
        if not reply.ok:
            context.fail(name, f"cannot set autostart: {reply.message}")
