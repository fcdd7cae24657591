"""The typed facade of the VM hooks (:mod:`bkt_vm_plugin.hookspecs`): the one way bkt calls
them, so that mypy checks every call's arguments and results.

Each method has the arguments and result of its hook. The ones that collect or act (domain
fields, post-sync actions) go implementation by implementation, naming the plugin of every
result and every failure; the first-result ones (disk plan and provision) are called as
pluggy calls them, wrappers included. A plugin's exception becomes a
:class:`~bkt_core.PluginError` naming it, a :class:`~bkt_core.BktError` it raises on purpose
passes unchanged (the host's guard, :class:`bkt_core.host.Host`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkt_core.host import Host
    from bkt_core.plan import EntryResult, PlanEntry, SyncReport
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.domain_xml import DomainField
    from bkt_vm_plugin.provision import DiskCreation, DiskRequest, ProvisionContext
    from bkt_vm_plugin.sync import PostSyncContext

__all__ = ["VmHooks"]


class VmHooks:
    """The VM hooks of ``host``'s plugins, as typed methods."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def domain_fields(self) -> list[tuple[str, DomainField]]:
        """Every :class:`DomainField` the plugins contribute
        (:func:`~bkt_vm_plugin.hookspecs.bkt_domain_fields`), each with the name of its
        plugin, in the order they apply. A refusal names its plugin (:meth:`Host.named`)."""
        from bkt_core.errors import BktError

        try:
            collected = self.host.collect("bkt_domain_fields")
        except BktError as exc:
            error = self.host.named(exc)
            if error is exc:
                raise
            raise error from exc
        return [
            (plugin, mapping_field)
            for plugin, contributed in collected
            for mapping_field in contributed
        ]

    def vm_defaults(self, vm: VmDefinition) -> list[tuple[str, Mapping[str, Any]]]:
        """Every plugin's defaults for ``vm`` (:func:`~bkt_vm_plugin.hookspecs.bkt_vm_defaults`),
        each with the name of its plugin, in pluggy's order; unchecked (field names and
        values are checked, and applied, by :mod:`bkt_vm_plugin.defaults`). A refusal names
        its plugin (:meth:`Host.named`)."""
        from bkt_core.errors import BktError

        try:
            collected = self.host.collect("bkt_vm_defaults", vm=vm)
        except BktError as exc:
            error = self.host.named(exc)
            if error is exc:
                raise
            raise error from exc
        return [(plugin, values) for plugin, values in collected]

    def disk_plan(
        self, name: str, vm: VmDefinition, disk: DiskRequest, context: ProvisionContext
    ) -> DiskCreation | None:
        """The first plugin's plan for VM ``name``'s missing disk
        (:func:`~bkt_vm_plugin.hookspecs.bkt_disk_plan`), None when no plugin plans it."""
        creation: DiskCreation | None = self.host.call(
            "bkt_disk_plan", name=name, vm=vm, disk=disk, context=context
        )
        return creation

    def disk_provision(self, creation: DiskCreation, context: ProvisionContext) -> bool | None:
        """The first plugin's answer to creating ``creation``
        (:func:`~bkt_vm_plugin.hookspecs.bkt_disk_provision`): True when one created it,
        None when none did."""
        done: bool | None = self.host.call(
            "bkt_disk_provision", creation=creation, context=context
        )
        return done

    def post_sync_vm(
        self,
        name: str,
        entry: PlanEntry,
        result: EntryResult | None,
        context: PostSyncContext,
    ) -> Iterator[tuple[str, Callable[[], None]]]:
        """The implementations of :func:`~bkt_vm_plugin.hookspecs.bkt_post_sync_vm` for VM
        ``name``, one by one: yields (plugin name, the call), so that the caller fails only
        that VM when one raises and the others still run."""
        return self.host.each(
            "bkt_post_sync_vm", name=name, entry=entry, result=result, context=context
        )

    def post_sync(
        self, report: SyncReport, context: PostSyncContext
    ) -> Iterator[tuple[str, Callable[[], None]]]:
        """The implementations of :func:`~bkt_vm_plugin.hookspecs.bkt_post_sync`, one by one:
        yields (plugin name, the call), so that every implementation runs even after another
        raised."""
        return self.host.each("bkt_post_sync", report=report, context=context)
