"""The hooks of the VM subsystem: domain XML fields, disk provisioning, post-sync actions.

The ``vm`` plugin adds these specifications to the host from
:func:`~bkt_core.hookspecs.bkt_add_hookspecs`; with ``vm`` blocked, no plugin may implement
them. They are called through :class:`bkt_vm_plugin.hooks.VmHooks`, whose methods carry the
same types. Implement them as any bkt hook: a function with the hook's name, marked with
:data:`bkt_core.hookimpl`, accepting any subset of the arguments (by name).

Wrappers (``wrapper=True``) may wrap ``bkt_disk_plan`` and ``bkt_disk_provision``; the hooks in
:data:`CALLED_ONE_BY_ONE` are called implementation by implementation, and a wrapper on them
is a start-up error. Every result is checked against :data:`RESULTS`, as for the host's own
hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookspec

if TYPE_CHECKING:
    from bkt_core.plan import EntryResult, PlanEntry, SyncReport
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.domain_xml import DomainField
    from bkt_vm_plugin.provision import DiskCreation, DiskRequest, ProvisionContext
    from bkt_vm_plugin.sync import PostSyncContext

__all__ = ["CALLED_ONE_BY_ONE", "RESULTS", "hook_names"]

#: The VM hooks bkt calls implementation by implementation, so that every result and every
#: failure is tied to its plugin; wrappers on them are refused at start-up.
CALLED_ONE_BY_ONE = frozenset(
    {"bkt_domain_fields", "bkt_post_sync_vm", "bkt_post_sync", "bkt_vm_defaults"}
)

#: What each VM hook's implementations may return, in the format of
#: :data:`bkt_core.hookspecs.RESULTS`.
RESULTS: dict[str, tuple[str, str]] = {
    "bkt_domain_fields": ("iterable", "bkt_vm_plugin.domain_xml:DomainField"),
    "bkt_disk_plan": ("value", "bkt_vm_plugin.provision:DiskCreation"),
    "bkt_disk_provision": ("value", "builtins:bool"),
    "bkt_post_sync": ("none", ""),
    "bkt_post_sync_vm": ("none", ""),
    "bkt_vm_defaults": ("value", "collections.abc:Mapping"),
}


# -- domain XML ----------------------------------------------------------------------------


@hookspec
def bkt_domain_fields() -> Iterable[DomainField] | None:
    """Contribute pieces of the manifest <-> libvirt domain XML mapping.

    Called once per host. Return :class:`bkt_vm_plugin.api.DomainField` objects; each
    owns one or more manifest fields and has their ``render`` (a new domain), ``parse``
    (capture and drift) and ``patch`` (an update that changes only what it owns) side by side,
    so the round-trip laws hold for every field, built-in or not. Fields are applied in the
    order pluggy calls the plugins (use ``tryfirst``/``trylast`` to move), and within one
    result in list order. A manifest field owned by two mappings is a start-up error naming
    both plugins.
    """


# -- defaults ----------------------------------------------------------------------------


@hookspec
def bkt_vm_defaults(vm: VmDefinition) -> Mapping[str, Any] | None:
    """Values for fields this VM's manifest entry does not state: defaults that depend on
    the VM (an operating system's preferred devices, ...).

    Called once per VM each time the manifest is loaded (after validation, or from the
    cache), and by ``capture`` for each domain it reads, with the VM's
    :class:`~bkt_vm_plugin.api.VmDefinition` as its author wrote it (nothing filled yet).
    Return a mapping of field names (built-in or plugin fields) to values in their JSON
    form, or None. Only fields the author did not write (not in ``vm.written``) take the
    value: the author's values always win, silently. The filled values are the VM's defaults
    (``vm.default(name)``, ``vm.filled``; ``vm.filled_by`` names the plugin): ``capture``
    does not write them into ``vms.json``, and sync uses them for new domains only (an
    existing domain that differs is drift, and sync refuses to change it until the entry
    states the field).

    An unknown field, a value the field does not accept (``"disk_bus": "ide"``,
    ``"hyperv": true`` under ``virt_type: "qemu"``), or two plugins filling one field with
    different values is an error naming the plugin(s) and this hook. Keep it cheap: it runs
    on every command that loads the manifest.
    """


# -- disk provisioning ---------------------------------------------------------------------


@hookspec(firstresult=True)
def bkt_disk_plan(
    name: str, vm: VmDefinition, disk: DiskRequest, context: ProvisionContext
) -> DiskCreation | None:
    """Plan the creation of VM ``name``'s missing disk (``create_if_missing: true``).

    Called during planning (``sync``, also ``--dry-run``) for each VM whose disk file does not
    exist. ``vm`` is its :class:`~bkt_vm_plugin.api.VmDefinition`, ``disk`` the
    :class:`~bkt_vm_plugin.api.DiskRequest` (the VM's name, the expanded path, the size) and
    ``context`` the :class:`~bkt_vm_plugin.api.ProvisionContext` (virsh, qemu-img, pools, the
    file system). Return a :class:`~bkt_vm_plugin.api.DiskCreation` describing what will be
    created, or raise
    :class:`~bkt_core.OperationError` to refuse (that VM fails). First non-None result wins;
    the default (storage pool volume, else ``qemu-img``) is ``trylast``. Must not change
    anything: ``bkt_disk_provision`` does.
    """


@hookspec(firstresult=True)
def bkt_disk_provision(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    """Create a disk planned by :func:`bkt_disk_plan`.

    Called during ``sync`` (never in a dry run) before the domains are defined. ``creation``
    is the :class:`~bkt_vm_plugin.api.DiskCreation` a plugin returned, ``context`` as in
    ``bkt_disk_plan``. Return True when this plugin created it (None to leave it to another
    plugin, typically when ``creation.plugin`` is not yours), or raise
    :class:`~bkt_core.OperationError`; the VM then fails and the others go on. Any other
    value fails the VM too, and so does a disk that is not then a regular file of the planned
    format and size. First result wins; the default is ``trylast``. Never overwrite an
    existing file: ``context.create_image`` creates one as the default does.
    """


# -- post-sync actions ---------------------------------------------------------------------


@hookspec
def bkt_post_sync(report: SyncReport, context: PostSyncContext) -> None:
    """Act after ``sync`` has executed its plan (never in a dry run or ``--check``).

    ``report`` is the :class:`~bkt_core.SyncReport` with every VM's plan entry and result;
    ``context`` (:class:`~bkt_vm_plugin.api.PostSyncContext`) gives the manifest, the
    :class:`~bkt_vm_plugin.api.Virsh` to batch commands through, and ``fail(name,
    message)`` to mark a VM failed. Every implementation runs, even when another raised:
    an exception fails every VM the run touched, naming the plugin. Returns nothing.
    """


@hookspec
def bkt_post_sync_vm(
    name: str, entry: PlanEntry, result: EntryResult | None, context: PostSyncContext
) -> None:
    """Act on one VM after ``sync`` has executed its plan (never in a dry run or ``--check``).

    Called once per VM of the plan, ``name``, after every definition was written and read
    back, and before :func:`bkt_post_sync`. ``entry`` is the VM's
    :class:`~bkt_core.PlanEntry` (what was planned: create, update with its field changes,
    unchanged, error), ``result`` its :class:`~bkt_core.EntryResult` so far (None when the
    plan did not run it), ``context`` as in :func:`bkt_post_sync`. Every implementation runs;
    one that raises fails that VM only, naming the plugin. Prefer :func:`bkt_post_sync` to
    batch virsh commands over all VMs.
    Returns nothing.
    """


def hook_names() -> list[str]:
    """The names of every VM hook, in declaration order."""
    return [name for name in globals() if name.startswith("bkt_")]
