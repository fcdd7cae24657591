"""bkt-power-state without a daemon: sync and status of a host with the plugin, against the
in-memory libvirt of bkt's test kit (the ``bkt_*`` fixtures come with bkt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bkt_power_state
import pytest

from bkt_core import Host
from bkt_vm_plugin.api import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, vm_subsystem


@pytest.fixture
def bkt_plugins() -> Sequence[object]:
    """The plugin under test, registered on ``bkt_host`` after bkt's default plugins."""
    return [("bkt-power-state", bkt_power_state)]


@pytest.fixture
def sub(bkt_host: Host) -> VmSubsystem:
    return vm_subsystem(bkt_host)


def entry(libvirt: FakeLibvirt, tmp_path: Path, name: str, **fields: Any) -> dict[str, Any]:
    disk = libvirt.add_image(tmp_path / f"{name}.qcow2")  # an existing qcow2 image
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


def active(libvirt: FakeLibvirt) -> set[str]:
    return {name for name, domain in libvirt.domains.items() if domain.active}


def test_the_field_is_in_the_schema(sub: VmSubsystem, bkt_manifest_dir: ManifestDir) -> None:
    bkt_manifest_dir.write({})
    props = sub.schema()["$defs"]["VmDefinition"]["properties"]
    assert props["running"] == {
        "default": False,
        "description": (
            "Start the VM after sync when it is not running; false leaves its power state "
            "alone (plugin bkt-power-state)."
        ),
        "type": "boolean",
    }


def test_sync_starts_the_vms_that_should_run_in_one_process(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt
) -> None:
    libvirt = bkt_fake_libvirt
    bkt_manifest_dir.write(
        {
            "a": entry(libvirt, tmp_path, "a", running=True),
            "b": entry(libvirt, tmp_path, "b"),
            "c": entry(libvirt, tmp_path, "c", running=True),
        }
    )
    plan = sub.plan()
    assert [[str(c) for c in e.changes] for e in plan.entries] == [
        ["running: false -> true"],
        [],
        ["running: false -> true"],
    ]
    report = sub.sync()
    assert report.failed == []
    assert active(libvirt) == {"a", "c"}
    assert libvirt.processes[-1] == [("start", "--domain", "a"), ("start", "--domain", "c")]
    assert [r.in_sync for r in sub.status().rows] == [True, True, True]
    # In sync now: nothing is planned, nothing is started.
    count = len(libvirt.processes)
    assert all(e.action == "unchanged" for e in sub.sync().plan.entries)
    assert len(libvirt.processes) == count + 1  # the observation only


def test_status_shows_drift_when_a_vm_that_should_run_is_stopped(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt
) -> None:
    bkt_manifest_dir.write({"a": entry(bkt_fake_libvirt, tmp_path, "a", running=True)})
    sub.sync()
    bkt_fake_libvirt.set_state("a", "shut off")  # it was shut down from inside
    (row,) = sub.status().rows
    assert (row.state, row.in_sync, row.drift) == ("stopped", False, ("running",))
    entry_plan = sub.plan().entries[0]
    assert entry_plan.action == "update" and entry_plan.payload.xml is None  # nothing to define


def test_a_running_vm_without_the_field_is_left_alone(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt
) -> None:
    bkt_manifest_dir.write({"a": entry(bkt_fake_libvirt, tmp_path, "a")})
    sub.sync()
    bkt_fake_libvirt.set_state("a", "running")
    assert sub.status().rows[0].in_sync is True
    assert sub.plan().entries[0].action == "unchanged"


def test_a_vm_that_cannot_start_fails_and_the_others_start(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt
) -> None:
    libvirt = bkt_fake_libvirt
    bkt_manifest_dir.write(
        {
            "a": entry(libvirt, tmp_path, "a", running=True),
            "b": entry(libvirt, tmp_path, "b", running=True),
        }
    )
    libvirt.fail("start", "a", "internal error: qemu unexpectedly closed the monitor")
    report = sub.sync()
    assert [(r.name, r.result, r.message) for r in report.results or ()] == [
        ("a", "failed", "cannot start it: internal error: qemu unexpectedly closed the monitor"),
        ("b", "created", None),
    ]
    assert active(libvirt) == {"b"}
