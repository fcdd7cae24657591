"""bkt-power-state without a daemon: sync and status of a host with the plugin, against an
in-memory libvirt that answers the virsh batches bkt sends."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import bkt_power_state
import pytest

from bkt_core import FakeRunner, Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.virsh import Reply, Virsh


class MemoryLibvirt(Virsh):
    """Domains kept as XML text; ``start`` of a name in :attr:`refuse` fails."""

    def __init__(self) -> None:
        info = json.dumps({"format": "qcow2"})
        super().__init__(FakeRunner().reply(lambda argv: argv[0] == "qemu-img", stdout=info))
        self.xml: dict[str, str] = {}
        self.active: set[str] = set()
        self.refuse: set[str] = set()
        self.processes: list[list[tuple[str, ...]]] = []

    def batch(self, commands: Sequence[Sequence[str]]) -> list[Reply]:
        self.processes.append([tuple(c) for c in commands])
        return [self._one(tuple(c)) for c in commands]

    def _one(self, c: tuple[str, ...]) -> Reply:
        def ok(out: str = "") -> Reply:
            return Reply(c, out, "", True)

        def fail(message: str) -> Reply:
            return Reply(c, "", f"error: {message}\n", False)

        if c[0] == "list":
            names = set() if "--autostart" in c else self.xml if "--all" in c else self.active
            return ok("".join(f"{n}\n" for n in sorted(names)))
        if c[0] == "define":
            xml = Path(c[c.index("--file") + 1]).read_text()
            found = re.search(r"<name>([^<]+)</name>", xml)
            assert found
            self.xml[found.group(1)] = xml
            return ok()
        if c[0] == "uri":  # asked by sync's host checks before it defines a VM
            return ok("qemu:///session\n")
        name = c[c.index("--domain") + 1]
        if name not in self.xml:
            return fail(f"failed to get domain '{name}'")
        if c[0] == "dumpxml":
            return ok(self.xml[name])
        if c[0] == "start":
            if name in self.active:
                return fail("Requested operation is not valid: domain is already active")
            if name in self.refuse:
                return fail("internal error: qemu unexpectedly closed the monitor")
            self.active.add(name)
            return ok()
        raise AssertionError(c)


def entry(tmp_path: Path, name: str, **fields: Any) -> dict[str, Any]:
    disk = tmp_path / f"{name}.qcow2"
    disk.write_bytes(b"QFI\xfb")  # an image (bkt refuses an empty file as a disk)
    return {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(disk),
        "disk_size_gb": 1,
        "boot": "bios",
        "network": "none",
        "graphics": "none",
        "virt_type": "qemu",
        **fields,
    }


@pytest.fixture
def libvirt() -> MemoryLibvirt:
    return MemoryLibvirt()


def vm_sub(tmp_path: Path, libvirt: MemoryLibvirt, vms: dict[str, Any]) -> VmSubsystem:
    (tmp_path / "vms.json").write_text(json.dumps({"vms": vms}))
    plugins = [*default_plugins(), ("bkt-power-state", bkt_power_state)]
    host = Host(tmp_path, entry_points=False, plugins=plugins)
    sub = cast(VmSubsystem, host.subsystem("vm"))
    sub.__dict__["virsh"] = libvirt  # the cached property, replaced
    return sub


def test_the_field_is_in_the_schema(tmp_path: Path, libvirt: MemoryLibvirt) -> None:
    props = vm_sub(tmp_path, libvirt, {}).schema()["$defs"]["VmDefinition"]["properties"]
    assert props["running"] == {
        "default": False,
        "description": (
            "Start the VM after sync when it is not running; false leaves its power state "
            "alone (plugin bkt-power-state)."
        ),
        "type": "boolean",
    }


def test_sync_starts_the_vms_that_should_run_in_one_process(
    tmp_path: Path, libvirt: MemoryLibvirt
) -> None:
    vms = {
        "a": entry(tmp_path, "a", running=True),
        "b": entry(tmp_path, "b"),
        "c": entry(tmp_path, "c", running=True),
    }
    sub = vm_sub(tmp_path, libvirt, vms)
    plan = sub.plan()
    assert [[str(c) for c in e.changes] for e in plan.entries] == [
        ["running: false -> true"],
        [],
        ["running: false -> true"],
    ]
    report = sub.sync()
    assert report.failed == []
    assert libvirt.active == {"a", "c"}
    assert libvirt.processes[-1] == [("start", "--domain", "a"), ("start", "--domain", "c")]
    assert [r.in_sync for r in sub.status().rows] == [True, True, True]
    # In sync now: nothing is planned, nothing is started.
    count = len(libvirt.processes)
    assert all(e.action == "unchanged" for e in sub.sync().plan.entries)
    assert len(libvirt.processes) == count + 1  # the observation only


def test_status_shows_drift_when_a_vm_that_should_run_is_stopped(
    tmp_path: Path, libvirt: MemoryLibvirt
) -> None:
    sub = vm_sub(tmp_path, libvirt, {"a": entry(tmp_path, "a", running=True)})
    sub.sync()
    libvirt.active.clear()  # it was shut down from inside
    (row,) = sub.status().rows
    assert (row.state, row.in_sync, row.drift) == ("stopped", False, ("running",))
    entry_plan = sub.plan().entries[0]
    assert entry_plan.action == "update" and entry_plan.payload.xml is None  # nothing to define


def test_a_running_vm_without_the_field_is_left_alone(
    tmp_path: Path, libvirt: MemoryLibvirt
) -> None:
    sub = vm_sub(tmp_path, libvirt, {"a": entry(tmp_path, "a")})
    sub.sync()
    libvirt.active.add("a")
    assert sub.status().rows[0].in_sync is True
    assert sub.plan().entries[0].action == "unchanged"


def test_a_vm_that_cannot_start_fails_and_the_others_start(
    tmp_path: Path, libvirt: MemoryLibvirt
) -> None:
    vms = {"a": entry(tmp_path, "a", running=True), "b": entry(tmp_path, "b", running=True)}
    libvirt.refuse.add("a")
    report = vm_sub(tmp_path, libvirt, vms).sync()
    assert [(r.name, r.result, r.message) for r in report.results or ()] == [
        ("a", "failed", "cannot start it: internal error: qemu unexpectedly closed the monitor"),
        ("b", "created", None),
    ]
    assert libvirt.active == {"b"}
