"""A plugin that takes over disk provisioning for disks whose file name contains "overlay".

Such a disk is created as a qcow2 overlay of the planned size on a base image (``qemu-img
create -f qcow2 -b BASE -F qcow2``, through the context's ``create_image``):
``$BKT_OVERLAY_BASE`` when set, else ``base.qcow2`` beside the disk. Every other disk is left
to the next plugin (the default), by returning None.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

from bkt_core import OperationError, hookimpl
from bkt_vm_plugin.api import DiskCreation, DiskRequest, ProvisionContext

NAME = "overlay"


@dataclass(frozen=True)
class OverlayCreation(DiskCreation):
    base: str = ""

    def describe(self) -> str:
        return f"create disk {self.path} (qcow2 overlay on {self.base})"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "base": self.base}


def _base_of(path: str) -> str:
    return os.environ.get("BKT_OVERLAY_BASE") or posixpath.join(
        posixpath.dirname(path), "base.qcow2"
    )


@hookimpl
def bkt_disk_plan(disk: DiskRequest, context: ProvisionContext) -> DiskCreation | None:
    if NAME not in posixpath.basename(disk.path):
        return None
    base = _base_of(disk.path)
    if not os.path.isfile(base):
        raise OperationError(f"cannot create overlay {disk.path}: base image {base} is missing")
    return OverlayCreation(path=disk.path, size_gb=disk.size_gb, plugin=NAME, base=base)


@hookimpl
def bkt_disk_provision(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    if creation.plugin != NAME or not isinstance(creation, OverlayCreation):
        return None
    context.create_image(creation, ["-b", creation.base, "-F", "qcow2"])
    return True
