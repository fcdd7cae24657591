"""bkt-base-image without a daemon: the field and its rules, the plan it makes for the VMs
that set it (and leaves to the default for the others), and the overlay qemu-img creates.

The hooks are tested two ways: called directly with a :class:`ProvisionContext` on bkt's
in-memory libvirt (what the plugin decides), and through a host's plan and sync (how bkt
uses them, the default provisioning included)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bkt_base_image
import pytest
from bkt_base_image.overlay import OverlayCreation

from bkt_core import CommandRunner, Host, ManifestError, OperationError, SubprocessRunner
from bkt_vm_plugin.api import DiskRequest, ProvisionContext, Virsh, VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, vm_subsystem

GIB = 1024**3


@pytest.fixture
def bkt_plugins() -> Sequence[object]:
    """The plugin under test, registered on ``bkt_host`` after bkt's default plugins."""
    return [("bkt-base-image", bkt_base_image)]


@pytest.fixture
def sub(bkt_host: Host) -> VmSubsystem:
    return vm_subsystem(bkt_host)


def context(runner: CommandRunner) -> ProvisionContext:
    """What planning looks at: ``runner`` answers virsh (a libvirt without storage pools when
    it is a fresh :class:`FakeLibvirt`) and qemu-img; every directory is writable."""
    return ProvisionContext(Virsh(runner), writable=lambda _: True, remote=False)


def entry(tmp_path: Path, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(tmp_path / f"{name}.qcow2"),
        "disk_size_gb": 2,
        "create_if_missing": True,
        "boot": "bios",
        "network": "none",
        "graphics": "none",
        **fields,
    }


@pytest.fixture
def base(tmp_path: Path, bkt_fake_libvirt: FakeLibvirt) -> Path:
    """A qcow2 image of 1 GiB."""
    return bkt_fake_libvirt.add_image(tmp_path / "golden.qcow2", size=GIB)


def plan_for(
    sub: VmSubsystem, tmp_path: Path, ctx: ProvisionContext, **fields: Any
) -> OverlayCreation | None:
    """What the plugin's ``bkt_disk_plan`` plans for VM ``web`` with ``fields``."""
    vm = sub.vm_definition(entry(tmp_path, "web", **fields))
    disk = DiskRequest("web", vm.disk_path, vm.disk_size_gb, vm.create_if_missing)
    return bkt_base_image.bkt_disk_plan("web", vm, disk, ctx)


def created(libvirt: FakeLibvirt) -> list[tuple[str, ...]]:
    """The ``qemu-img create`` command lines that ran."""
    return [argv for argv in libvirt.qemu_img if argv[1] == "create"]


def test_the_field_is_optional_and_in_the_schema(sub: VmSubsystem) -> None:
    assert sub.field_owners["base_image"] == "bkt-base-image"
    props = sub.schema()["$defs"]["VmDefinition"]["properties"]
    assert props["base_image"]["type"] == "string"


def test_a_vm_with_base_image_is_planned_as_an_overlay(
    tmp_path: Path, base: Path, sub: VmSubsystem, bkt_fake_libvirt: FakeLibvirt
) -> None:
    creation = plan_for(sub, tmp_path, context(bkt_fake_libvirt), base_image=str(base))
    assert isinstance(creation, OverlayCreation)
    assert (creation.plugin, creation.base, creation.base_format) == (
        "bkt-base-image",
        str(base),
        "qcow2",
    )
    assert creation.describe() == (
        f"create disk {tmp_path}/web.qcow2 (2 GiB, qcow2 overlay on {base}, qcow2)"
    )
    assert creation.to_json()["base_image"] == str(base)
    assert bkt_fake_libvirt.qemu_img == [
        ("qemu-img", "info", "--output=json", "-U", "--", str(base))
    ]


def test_a_vm_without_base_image_is_left_to_the_default(
    tmp_path: Path,
    base: Path,
    sub: VmSubsystem,
    bkt_manifest_dir: ManifestDir,
    bkt_fake_libvirt: FakeLibvirt,
) -> None:
    assert plan_for(sub, tmp_path, context(bkt_fake_libvirt)) is None
    bkt_manifest_dir.write(
        {"plain": entry(tmp_path, "plain"), "thin": entry(tmp_path, "thin", base_image=str(base))}
    )
    plain, thin = sub.plan().entries
    assert plain.details["create_disk"] == {
        "path": f"{tmp_path}/plain.qcow2",
        "size_gb": 2,
        "format": "qcow2",
    }
    assert thin.details["create_disk"]["base_image"] == str(base)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"base_image": "/nonexistent/golden.qcow2"}, "does not exist"),
        ({"disk_size_gb": 1}, "an overlay cannot be smaller than its base"),
    ],
)
def test_a_refusal_names_the_disk_and_the_reason(
    tmp_path: Path,
    sub: VmSubsystem,
    bkt_fake_libvirt: FakeLibvirt,
    fields: dict[str, Any],
    why: str,
) -> None:
    base = bkt_fake_libvirt.add_image(tmp_path / "golden.qcow2", size=2 * GIB)
    fields = {"base_image": str(base), **fields}
    with pytest.raises(OperationError) as caught:
        plan_for(sub, tmp_path, context(bkt_fake_libvirt), **fields)
    assert caught.value.message.startswith(f"cannot create disk {tmp_path}/web.qcow2 as an")
    assert why in caught.value.message


def test_a_refusal_fails_that_vm_and_names_the_plugin(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir
) -> None:
    bkt_manifest_dir.write(
        {
            "a": entry(tmp_path, "a", base_image="/nonexistent/golden.qcow2"),
            "b": entry(tmp_path, "b"),
        }
    )
    a, b = sub.plan().entries
    assert (a.action, b.action) == ("error", "create")
    assert a.message == (
        f"plugin bkt-base-image in bkt_disk_plan: cannot create disk {tmp_path}/a.qcow2 as "
        "an overlay: base image /nonexistent/golden.qcow2 does not exist"
    )


def test_sync_creates_the_overlay_with_qemu_img(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt
) -> None:
    base = bkt_fake_libvirt.add_image(tmp_path / "golden.img", format="raw", size=GIB)
    bkt_manifest_dir.write({"web": entry(tmp_path, "web", base_image=str(base))})
    report = sub.sync()
    assert [(r.name, r.result) for r in report.results or ()] == [("web", "created")]
    (argv,) = created(bkt_fake_libvirt)
    assert argv[:10] == (
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", "--",
    )  # fmt: skip
    assert argv[10:] == (argv[10].rsplit("/", 1)[0] + "/web.qcow2", "2G")
    assert "web" in bkt_fake_libvirt.domains


def test_a_disk_that_appeared_after_planning_is_never_replaced(
    tmp_path: Path, base: Path, sub: VmSubsystem, bkt_fake_libvirt: FakeLibvirt
) -> None:
    ctx = context(bkt_fake_libvirt)
    creation = plan_for(sub, tmp_path, ctx, base_image=str(base))
    assert creation is not None
    assert bkt_base_image.bkt_disk_provision(creation, ctx) is True
    with pytest.raises(OperationError) as caught:
        bkt_base_image.bkt_disk_provision(creation, ctx)
    assert caught.value.message == (
        f"disk {creation.path} appeared after planning; it is left as it is"
    )
    assert len(created(bkt_fake_libvirt)) == 1  # qemu-img did not run again


def test_a_real_overlay_records_its_base(tmp_path: Path, sub: VmSubsystem) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (qemu-utils)")
    runner = SubprocessRunner()
    golden = tmp_path / "golden.qcow2"
    done = runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "1G"], timeout=60)
    assert done.returncode == 0, done.stderr
    ctx = context(runner)
    creation = plan_for(sub, tmp_path, ctx, base_image=str(golden))
    assert creation is not None
    assert bkt_base_image.bkt_disk_provision(creation, ctx) is True
    info = runner.run(["qemu-img", "info", "--output=json", "-U", creation.path], timeout=60)
    got = json.loads(info.stdout)
    assert (got["format"], got["backing-filename"], got["virtual-size"]) == (
        "qcow2",
        str(golden),
        2 * GIB,
    )


def test_the_rules_are_reported_with_positions(
    tmp_path: Path, sub: VmSubsystem, bkt_manifest_dir: ManifestDir
) -> None:
    vms = {
        "a": entry(tmp_path, "a", base_image="golden.qcow2"),
        "b": entry(tmp_path, "b", base_image=str(tmp_path / "b.qcow2")),
        "c": entry(tmp_path, "c", base_image=7),
    }
    bkt_manifest_dir.write(vms)
    with pytest.raises(ManifestError) as caught:
        sub.validate()
    shown = [str(d).removeprefix(f"{bkt_manifest_dir.file}:") for d in caught.value.diagnostics]
    assert shown == [
        "12:21: vms.a.base_image: must be an absolute path (after ~ expansion), "
        'not "golden.qcow2"',
        "23:21: vms.b.base_image: must not be the VM's own disk_path",
        "34:21: vms.c.base_image: expected a string, found a number",
    ], shown
