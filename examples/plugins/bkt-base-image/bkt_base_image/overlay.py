"""Planning and creating a qcow2 overlay, and the manifest rules of ``base_image``.

Every check is made while planning (so ``sync --dry-run`` shows a refusal), and creation
repeats the one that can change in between: the disk must still be absent. qemu-img runs
through the :class:`~bkt_vm_plugin.api.ProvisionContext` (bkt's one process runner),
so it shows in ``-vv`` traces and unit tests can answer it.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bkt_core import CommandError, OperationError, Problem
from bkt_vm_plugin.api import (
    DiskCreation,
    DiskRequest,
    ProvisionContext,
    expand_home,
    home_dir,
    local_path_problem,
)

__all__ = ["OverlayCreation", "plan", "provision", "rules"]

PLUGIN_NAME = "bkt-base-image"
FIELD = "base_image"
BASE_FORMATS = ("qcow2", "raw")
GIB = 1024**3


@dataclass(frozen=True)
class OverlayCreation(DiskCreation):
    """A qcow2 overlay at ``path`` on ``base`` (an image in ``base_format``)."""

    base: str = ""
    base_format: str = "qcow2"

    def describe(self) -> str:
        return (
            f"create disk {self.path} ({self.size_gb} GiB, qcow2 overlay on {self.base}, "
            f"{self.base_format})"
        )

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "base_image": self.base, "base_format": self.base_format}


def _refuse(path: str, why: str) -> OperationError:
    return OperationError(f"cannot create disk {path} as an overlay: {why}")


def plan(disk: DiskRequest, base_image: str, context: ProvisionContext) -> OverlayCreation:
    """The overlay for ``disk`` on ``base_image``; raises :class:`OperationError` when it
    cannot be made (that VM fails, the others go on)."""
    path = disk.path
    base = expand_home(base_image, home_dir())
    if context.remote:
        raise _refuse(path, "libvirt is on another host, and qemu-img runs on this one")
    entry = context.look(base)
    if entry.kind != "file":
        what = {"missing": "does not exist", "dir": "is a directory"}.get(entry.kind)
        raise _refuse(path, f"base image {base} {what or 'is not a regular file'}")
    info = _info(base, path, context)
    base_format = str(info.get("format"))
    if base_format not in BASE_FORMATS:
        raise _refuse(path, f"base image {base} is a {base_format} image (qcow2 or raw only)")
    virtual = info.get("virtual-size")
    if isinstance(virtual, int) and virtual > disk.size_gb * GIB:
        raise _refuse(
            path,
            f"disk_size_gb is {disk.size_gb} but base image {base} is {_gib(virtual)} GiB; "
            "an overlay cannot be smaller than its base",
        )
    directory = posixpath.dirname(path)
    if context.look(directory).kind != "dir":
        raise _refuse(path, f"directory {directory} does not exist (bkt creates no directories)")
    if not context.writable(directory):
        raise _refuse(path, f"you cannot write to {directory}")
    return OverlayCreation(
        path=path,
        size_gb=disk.size_gb,
        format="qcow2",
        plugin=PLUGIN_NAME,
        base=base,
        base_format=base_format,
    )


def _gib(size: int) -> str:
    return f"{size / GIB:g}"


def _info(base: str, path: str, context: ProvisionContext) -> Mapping[str, Any]:
    try:
        out = context.qemu_img(["info", "--output=json", "-U", "--", base])
    except CommandError as exc:
        raise _refuse(path, f"cannot read base image {base}: {exc.message}") from None
    try:
        info = json.loads(out)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise _refuse(path, f"cannot read base image {base}: qemu-img printed no JSON object")
    return info


def provision(creation: OverlayCreation, context: ProvisionContext) -> None:
    """Creates the overlay with bkt's own ``create_image``: a disk that appeared since
    planning is never replaced, and no one else can redirect the new file."""
    context.create_image(creation, ["-b", creation.base, "-F", creation.base_format])


def rules(document: Mapping[str, Any], home: str | None) -> list[Problem]:
    """``base_image`` is an absolute path (after ``~``), and not the disk itself."""
    vms = document.get("vms")
    if not isinstance(vms, dict):
        return []
    problems: list[Problem] = []
    for name, vm in vms.items():
        if not isinstance(vm, dict) or not isinstance(vm.get(FIELD), str):
            continue
        base: str = vm[FIELD]
        at = ("vms", name, FIELD)
        problem = local_path_problem(base, home)
        if problem is not None:
            problems.append(Problem(at, problem))
        elif isinstance(vm.get("disk_path"), str) and posixpath.normpath(
            expand_home(base, home)
        ) == posixpath.normpath(expand_home(vm["disk_path"], home)):
            problems.append(Problem(at, "must not be the VM's own disk_path"))
    return problems
