"""A provisioning plugin that lies: it plans every disk whose file name contains "liar" and
then, as ``$BKT_LIAR_DOES`` says, creates nothing and returns ``"yes"`` (``yes``), creates
nothing and returns True (``nothing``), leaves an empty file (``empty``), or makes a qcow2
image of 1 GiB whatever was planned (``small``). bkt must not count any of them as created.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from typing import cast

from bkt_core import hookimpl
from bkt_vm_plugin.api import DiskCreation, DiskRequest

NAME = "liar"


@hookimpl
def bkt_disk_plan(disk: DiskRequest) -> DiskCreation | None:
    if NAME not in posixpath.basename(disk.path):
        return None
    return DiskCreation(path=disk.path, size_gb=disk.size_gb, plugin=NAME)


@hookimpl
def bkt_disk_provision(creation: DiskCreation) -> bool | None:
    if creation.plugin != NAME:
        return None
    does = os.environ.get("BKT_LIAR_DOES", "yes")
    if does == "yes":
        return cast(bool, "yes")  # the lie bkt must catch: a value that is not a bool
    if does == "empty":
        with open(creation.path, "xb"):
            pass
    elif does == "small":
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", creation.path, "1G"], check=True
        )
    return True
