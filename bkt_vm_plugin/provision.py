"""Disk provisioning: the ``provision`` default plugin.

Its two hooks are the default plan and creation of a missing disk, ``trylast`` so that a
third-party plugin's answer wins. The rules every disk is held to, the data the hooks are
given and return (:class:`DiskRequest`, :class:`DiskCreation`, :class:`ProvisionContext`)
and the functions sync calls are in :mod:`bkt_vm_plugin.disks`; every name of theirs is
also a name of this module, as it has always been.

Every command registers this plugin, and most never provision a disk (status, a sync of
disks that exist): registering it needs only its hooks, so the rest is imported when a hook
runs or one of those names is first used (that import costs about 1 ms of CPU).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkt_vm_plugin.disks import (
        FILE_POOL_TYPES,
        DiskCreation,
        DiskRequest,
        Entry,
        PathEntry,
        Pool,
        ProvisionContext,
        create_disks,
        disk_format,
        disk_request,
        look,
        plan_disk,
        pool_target,
        provision_all,
        volume_format_of,
    )

__all__ = [
    "FILE_POOL_TYPES",
    "PLUGIN_NAME",
    "DiskCreation",
    "DiskRequest",
    "Entry",
    "PathEntry",
    "Pool",
    "ProvisionContext",
    "bkt_disk_plan",
    "bkt_disk_provision",
    "create_disks",
    "disk_format",
    "disk_request",
    "is_remote_uri",
    "look",
    "plan_disk",
    "pool_target",
    "provision_all",
    "volume_format_of",
]

#: The entry-point name of this plugin; :attr:`DiskCreation.plugin` of what it plans.
PLUGIN_NAME = "provision"


def is_remote_uri(uri: str | None, environ: dict[str, str] | None = None) -> bool:
    """Whether libvirt at ``uri`` (None: ``$LIBVIRT_DEFAULT_URI``, else local) may be on
    another host: the URI names a host (``qemu+ssh://host/system``)."""
    if uri is None:
        uri = (os.environ if environ is None else environ).get("LIBVIRT_DEFAULT_URI") or None
    if uri is None:
        return False
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(uri).hostname)
    except ValueError:
        return True


@hookimpl(trylast=True)
def bkt_disk_plan(name: str, disk: DiskRequest, context: ProvisionContext) -> DiskCreation:
    """The default plan: a volume of the active pool whose target is the disk's directory,
    else a qcow2 file made with ``qemu-img`` in a directory the user can write."""
    from bkt_vm_plugin.disks import plan_default

    return plan_default(name, disk, context)


@hookimpl(trylast=True)
def bkt_disk_provision(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    """The default provisioning of what :func:`bkt_disk_plan` planned: ``virsh
    vol-create-as`` in a pool (batched by :func:`provision_all`), else ``qemu-img create``
    behind an exclusive placeholder. Never overwrites anything."""
    from bkt_vm_plugin.disks import provision_default

    return provision_default(creation, context)


#: The names of disk provisioning this module has always offered, from where they live now;
#: a fixed set, so that looking up any other name (pluggy's, an embedder's) imports nothing.
_DISKS = frozenset(__all__) | {"FORMATS", "QEMU_IMG_TIMEOUT", "plan_default", "provision_default"}


def __getattr__(name: str) -> Any:
    # Every other name of disk provisioning, from where it lives.
    if name in _DISKS:
        from bkt_vm_plugin import disks

        return getattr(disks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
