"""What the commands that read a manifest import once the manifest is in the cache of validated
manifests: ``bkt vm status`` and a ``bkt vm sync`` that changes nothing run without pydantic.

Each command runs in a process of its own, through ``bkt_core.cli.main``, against the fake
libvirt of the test kit (whose domains are kept in files between the processes), with the
default plugins found through the entry points as a user's command finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bkt_vm_plugin.testing import FakeLibvirt
from tests.conftest import ROOT

#: Modules a warm command must not import (or a package of them): what only validation needs.
NOT_ON_THE_FAST_PATH = ("pydantic", "pydantic_core")

#: Runs ``bkt ARGS...`` with the fake libvirt; the domains are read from and written back to
#: STATE/*.xml; the exit status and every module imported go to STATE/result.json.
RUNNER = """
import json, sys
from pathlib import Path

import bkt_core.process
from bkt_vm_plugin.testing import FakeLibvirt

state = Path(sys.argv[1])
fake = FakeLibvirt()
for file in sorted(state.glob("*.xml")):
    fake.define(file.read_text())
bkt_core.process.SubprocessRunner = lambda: fake

from bkt_core.cli import main

code = main(sys.argv[2:])
for name in fake.domains:
    (state / f"{name}.xml").write_text(fake.xml(name))
(state / "result.json").write_text(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def vm(disk: Path) -> dict[str, object]:
    return {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(disk),
        "disk_size_gb": 1,
        "boot": "bios",
        "network": "default",
        "graphics": "none",
        "virt_type": "qemu",
        "autostart": False,
    }


class Commands:
    """``bkt`` commands on one manifest directory and one fake libvirt."""

    def __init__(self, base: Path) -> None:
        self.state = base / "state"
        self.state.mkdir()
        self.manifests = base / "manifests"
        self.manifests.mkdir()
        disks = base / "disks"
        disks.mkdir()
        vms = {}
        for name in ("web", "db"):
            disk = disks / f"{name}.qcow2"
            FakeLibvirt().add_image(disk)  # an image file the fake's qemu-img reads
            vms[name] = vm(disk)
        (self.manifests / "vms.json").write_text(json.dumps({"vms": vms}, indent=2))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
        self.env["XDG_CACHE_HOME"] = str(base / "cache-home")
        self.env["HOME"] = str(base)

    def run(self, *args: str) -> set[str]:
        """Run ``bkt -C MANIFESTS ARGS...``; the modules it imported (the fake's included)."""
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(self.state), "-C", str(self.manifests), *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = json.loads((self.state / "result.json").read_text())
        assert result["code"] == 0, (args, done.stdout, done.stderr)
        return set(result["modules"])


def forbidden(modules: set[str]) -> list[str]:
    """The modules of :data:`NOT_ON_THE_FAST_PATH` (or their submodules) in ``modules``."""
    return sorted(m for m in modules if m.split(".")[0] in NOT_ON_THE_FAST_PATH)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Commands:
    """Commands whose manifest was validated, and synced, before."""
    commands = Commands(tmp_path_factory.mktemp("fast-path"))
    cold = commands.run("vm", "sync")
    assert "pydantic" in cold, "a manifest not in the cache is validated"
    return commands


def test_a_warm_status_imports_no_pydantic(warm: Commands) -> None:
    assert forbidden(warm.run("vm", "status")) == []
    assert forbidden(warm.run("vm", "status", "--json")) == []


def test_a_warm_no_op_sync_imports_no_pydantic(warm: Commands) -> None:
    # --check exits 1 when anything would change: the sync below changes nothing.
    assert forbidden(warm.run("vm", "sync", "--check")) == []
    assert forbidden(warm.run("vm", "sync")) == []
    assert forbidden(warm.run("sync")) == []


def test_a_changed_manifest_is_validated_again(warm: Commands) -> None:
    path = warm.manifests / "vms.json"
    original = path.read_text()
    path.write_text(original.replace('"vcpus": 1', '"vcpus": 2', 1))
    try:
        assert forbidden(warm.run("vm", "status")) != [], "validated: the manifest changed"
        assert forbidden(warm.run("vm", "status")) == []
    finally:
        path.write_text(original)  # for the other tests, in whatever order they run
    assert forbidden(warm.run("vm", "status")) == [], "the original is still cached"


def test_the_check_sees_what_it_looks_for() -> None:
    assert forbidden({"pydantic.main", "pydantic_core", "json"}) == [
        "pydantic.main",
        "pydantic_core",
    ]
