"""bkt-base-image without a daemon: the field and its rules, the plan it makes for the VMs
that set it (and leaves to the default for the others), and the overlay qemu-img creates."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import bkt_base_image
import pytest
from bkt_base_image.overlay import OverlayCreation

from bkt_core import Completed, FakeRunner, Host, ManifestError, OperationError, SubprocessRunner
from bkt_core.process import CommandRunner
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.provision import (
    DiskCreation,
    ProvisionContext,
    disk_request,
    plan_disk,
    provision_all,
)
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.virsh import Reply, Virsh

GIB = 1024**3


class NoPools(Virsh):
    """A libvirt without storage pools: every batched command succeeds and prints nothing."""

    def batch(self, commands: Sequence[Sequence[str]]) -> list[Reply]:
        return [Reply(tuple(c), "", "", True) for c in commands]


def vm_sub(dir: Path | str = "manifests") -> VmSubsystem:
    host = Host(
        dir, entry_points=False, plugins=[*default_plugins(), ("bkt-base-image", bkt_base_image)]
    )
    return cast(VmSubsystem, host.subsystem("vm"))


def fake_qemu_img(virtual_size: int = GIB, fmt: str = "qcow2") -> FakeRunner:
    info = json.dumps({"format": fmt, "virtual-size": virtual_size})
    return (
        FakeRunner()
        .reply(lambda argv: argv[:2] == ("qemu-img", "info"), stdout=info)
        .reply(lambda argv: argv[:2] == ("qemu-img", "create"))
    )


def context(runner: CommandRunner) -> ProvisionContext:
    return ProvisionContext(NoPools(runner), runner, writable=lambda _: True, remote=False)


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
def base(tmp_path: Path) -> Path:
    path = tmp_path / "golden.qcow2"
    path.write_bytes(b"QFI\xfb")
    return path


def plan_for(sub: VmSubsystem, tmp_path: Path, ctx: ProvisionContext, **fields: Any) -> Any:
    vm = sub.vm_definition(entry(tmp_path, "web", **fields))
    return plan_disk(sub.host, "web", vm, disk_request("web", vm, None), ctx)


def test_the_field_is_optional_and_in_the_schema() -> None:
    sub = vm_sub()
    assert sub.field_owners["base_image"] == "bkt-base-image"
    props = sub.schema()["$defs"]["VmDefinition"]["properties"]
    assert props["base_image"]["type"] == "string"


def test_a_vm_with_base_image_is_planned_as_an_overlay(tmp_path: Path, base: Path) -> None:
    runner = fake_qemu_img()
    creation = plan_for(vm_sub(), tmp_path, context(runner), base_image=str(base))
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
    assert runner.calls == [("qemu-img", "info", "--output=json", "-U", "--", str(base))]


def test_a_vm_without_base_image_is_left_to_the_default(tmp_path: Path) -> None:
    creation = plan_for(vm_sub(), tmp_path, context(fake_qemu_img()))
    assert type(creation) is DiskCreation and creation.plugin == "provision"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"base_image": "/nonexistent/golden.qcow2"}, "does not exist"),
        ({"disk_size_gb": 1}, "an overlay cannot be smaller than its base"),
    ],
)
def test_a_refusal_names_the_disk_and_the_reason(
    tmp_path: Path, base: Path, fields: dict[str, Any], why: str
) -> None:
    fields = {"base_image": str(base), **fields}
    with pytest.raises(OperationError) as caught:
        plan_for(vm_sub(), tmp_path, context(fake_qemu_img(virtual_size=2 * GIB)), **fields)
    assert caught.value.message.startswith(f"cannot create disk {tmp_path}/web.qcow2 as an")
    assert why in caught.value.message


def test_provisioning_runs_qemu_img_with_the_backing_file(tmp_path: Path, base: Path) -> None:
    disk = f"{tmp_path}/web.qcow2"
    overlay = json.dumps({"format": "qcow2", "virtual-size": 2 * GIB})
    runner = FakeRunner().reply(lambda argv: argv[-1] == disk, stdout=overlay)
    runner.rules += fake_qemu_img(fmt="raw").rules

    def create(argv: tuple[str, ...], _input: str | None) -> Completed:
        Path(argv[-2]).write_bytes(b"QFI\xfb")
        return Completed(argv, 0, "", "")

    runner.rules.insert(1, (lambda argv: argv[:2] == ("qemu-img", "create"), create))
    ctx = context(runner)
    sub = vm_sub()
    creation = plan_for(sub, tmp_path, ctx, base_image=str(base))
    assert provision_all(sub.host, [creation], ctx) == {creation.path: None}
    created = runner.calls[-2]
    assert created[:10] == (
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", "--",
    )  # fmt: skip
    assert created[10:] == (created[10].rsplit("/", 1)[0] + "/web.qcow2", "2G")
    assert runner.calls[-1][:2] == ("qemu-img", "info"), "bkt checked what was made"
    # A disk that appeared since planning is never replaced.
    again = provision_all(sub.host, [creation], ctx)
    assert again == {
        disk: f"plugin bkt-base-image in bkt_disk_provision: disk {disk} appeared after "
        "planning; it is left as it is"
    }


def test_a_real_overlay_records_its_base(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (qemu-utils)")
    runner = SubprocessRunner()
    golden = tmp_path / "golden.qcow2"
    done = runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "1G"], timeout=60)
    assert done.returncode == 0, done.stderr
    ctx = context(runner)
    sub = vm_sub()
    creation = plan_for(sub, tmp_path, ctx, base_image=str(golden))
    assert provision_all(sub.host, [creation], ctx) == {creation.path: None}
    info = runner.run(["qemu-img", "info", "--output=json", "-U", creation.path], timeout=60)
    got = json.loads(info.stdout)
    assert (got["format"], got["backing-filename"], got["virtual-size"]) == (
        "qcow2",
        str(golden),
        2 * GIB,
    )


def test_the_rules_are_reported_with_positions(tmp_path: Path) -> None:
    vms = {
        "a": entry(tmp_path, "a", base_image="golden.qcow2"),
        "b": entry(tmp_path, "b", base_image=str(tmp_path / "b.qcow2")),
        "c": entry(tmp_path, "c", base_image=7),
    }
    (tmp_path / "vms.json").write_text(json.dumps({"vms": vms}, indent=2) + "\n")
    with pytest.raises(ManifestError) as caught:
        vm_sub(tmp_path).validate()
    shown = [str(d).removeprefix(f"{tmp_path}/vms.json:") for d in caught.value.diagnostics]
    assert shown == [
        "12:21: vms.a.base_image: must be an absolute path (after ~ expansion), "
        'not "golden.qcow2"',
        "23:21: vms.b.base_image: must not be the VM's own disk_path",
        "34:21: vms.c.base_image: expected a string, found a number",
    ], shown
