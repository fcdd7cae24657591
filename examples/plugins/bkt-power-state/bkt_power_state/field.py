"""The ``running`` field's piece of the mapping: not in the domain XML (``in_xml = False``).

Its reading is the observed fact ``active`` (``virsh list --name``: running or paused), which
sync, status and capture pass in :attr:`DomainContext.facts`. What it must read is
``true`` for ``running: true``; for ``running: false`` it is whatever libvirt says, so that
a VM left alone never drifts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.api import DomainContext, DomainField, Reading

if TYPE_CHECKING:
    from bkt_vm_plugin.api import Element, VmDefinition

__all__ = ["RunningField"]

FIELD = "running"


def _active(ctx: DomainContext) -> bool:
    return bool(ctx.facts.get("active", False))


class RunningField(DomainField):
    """``running``: the domain is active; applied by the plugin's post-sync action."""

    fields = (FIELD,)
    in_xml = False

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {FIELD: Reading.clean(_active(ctx))}

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {FIELD: True if vm.field(FIELD) else _active(ctx)}
