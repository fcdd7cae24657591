"""bkt-base-image: provision a VM's disk as a qcow2 overlay on a base image.

A VM that sets ``"base_image": "/var/lib/libvirt/images/debian-12.qcow2"`` (and
``create_if_missing: true``) gets its missing disk made with ``qemu-img create -f qcow2 -b
BASE -F FMT``: a thin copy-on-write layer over a golden image instead of an empty disk. The
plugin **overrides** the default provisioning for those VMs only: its ``bkt_disk_plan`` and
``bkt_disk_provision`` answer for them and return None for every other VM, which the
default ``provision`` plugin (``trylast``) then handles as before.

``base_image`` matters only when the disk is created, like ``disk_size_gb``: sync never
re-bases an existing disk, status does not compare it, and capture keeps the manifest's value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core import hookimpl

if TYPE_CHECKING:
    from bkt_base_image.overlay import OverlayCreation
    from bkt_core import Problem
    from bkt_vm_plugin.api import DiskCreation, DiskRequest, ProvisionContext, VmDefinition

__all__ = [
    "PLUGIN_NAME",
    "bkt_disk_plan",
    "bkt_disk_provision",
    "bkt_manifest_fields",
    "bkt_validate_manifest",
]

__version__ = "1.0.0"

#: The entry-point name, which is also :attr:`DiskCreation.plugin` of what this plugin plans.
PLUGIN_NAME = "bkt-base-image"
FIELD = "base_image"


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != "vm":
        return None
    from pydantic import Field

    return {
        FIELD: (
            str | None,
            Field(
                default=None,
                description=(
                    "A qcow2 or raw image the disk is created on as a qcow2 overlay (`qemu-img "
                    "create -b`), when sync provisions it; absolute, `~` is expanded (plugin "
                    "bkt-base-image)."
                ),
                json_schema_extra={"type": "string"},
            ),
        )
    }


@hookimpl
def bkt_validate_manifest(
    subsystem: str, document: Mapping[str, Any], home: str | None
) -> Iterable[Problem] | None:
    if subsystem != "vm":
        return None
    from bkt_base_image.overlay import rules

    return rules(document, home)


@hookimpl
def bkt_disk_plan(
    name: str, vm: VmDefinition | None, disk: DiskRequest, context: ProvisionContext
) -> OverlayCreation | None:
    base = vm.field(FIELD) if vm is not None else None
    if base is None:
        return None  # not ours: the default provisioning plans it
    from bkt_base_image.overlay import plan

    return plan(disk, str(base), context)


@hookimpl
def bkt_disk_provision(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    from bkt_base_image.overlay import OverlayCreation, provision

    if not isinstance(creation, OverlayCreation) or creation.plugin != PLUGIN_NAME:
        return None
    provision(creation, context)
    return True
