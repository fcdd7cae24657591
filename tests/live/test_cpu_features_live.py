"""A plugin that adds a CPU feature (``bkt-nested-virt``, pip-installed from tests/plugins)
shares ``<cpu>`` with the default ``cpu_model`` plugin on the real libvirtd: libvirt accepts
the domains of both virt_types (under qemu libvirt refuses features without a CPU model, so
``cpu_model`` names libvirt's default), a feature added to, moved in and removed from a
defined domain leaves the CPU model as libvirt wrote it, and status and capture read both
fields back."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Run, RunBkt
from tests.livelib import domains, inactive_xml, unique_name, uri, virsh, vm, write_vms

pytestmark = pytest.mark.libvirtd

Bkt = Callable[..., Run]


@pytest.fixture
def bkt(run_bkt: RunBkt, tmp_path: Path, plugin_site: Callable[[str], Path]) -> Bkt:
    """``bkt -c URI -C tmp/manifests ARGS`` with bkt-nested-virt installed."""
    site = plugin_site("tests/plugins/bkt-nested-virt")

    def run(*args: str) -> Run:
        return run_bkt(
            "-c", uri(), "-C", str(tmp_path / "manifests"), *args,
            env={"NO_COLOR": "1"}, pythonpath=[site],
        )  # fmt: skip

    return run


def ok(result: Run) -> Run:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def cpu_of(name: str) -> str:
    """The ``<cpu>`` element of ``name``'s inactive definition, as libvirt writes it."""
    found = re.search(r"<cpu[ >].*?</cpu>|<cpu[^>]*/>", inactive_xml(name), re.S)
    assert found, inactive_xml(name)
    return found.group(0)


def status(bkt: Bkt) -> dict[str, tuple[bool | None, list[str]]]:
    rows = json.loads(ok(bkt("vm", "status", "--json")).stdout)["vms"]
    return {r["name"]: (r["in_sync"], r["drift"]) for r in rows}


VMX = "<feature policy='require' name='vmx'/>"
SVM = "<feature policy='require' name='svm'/>"


def test_a_cpu_feature_is_accepted_under_both_virt_types_and_read_back(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    qemu, kvm = sorted([unique_name("nested-qemu"), unique_name("nested-kvm")])
    dir = tmp_path / "manifests"
    with domains(qemu, kvm):
        write_vms(
            dir,
            {
                qemu: vm(disks, qemu, nested_virt="vmx"),
                kvm: vm(disks, kvm, virt_type="kvm", nested_virt="vmx"),
            },
        )
        ok(bkt("vm", "sync"))
        # libvirt took both; under qemu the CPU names libvirt's default model.
        assert VMX in cpu_of(qemu) and ">qemu64</model>" in cpu_of(qemu), cpu_of(qemu)
        assert VMX in cpu_of(kvm) and "mode='host-passthrough'" in cpu_of(kvm), cpu_of(kvm)
        assert status(bkt)[qemu] == (True, [])
        assert status(bkt)[kvm] == (True, [])
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 2 VMs in sync\n"

        # Capture reads both fields back from the domains: the feature as written, the
        # default CPU model as none.
        write_vms(
            dir,
            {
                qemu: vm(disks, qemu, cpu_model="host-model"),
                kvm: vm(disks, kvm, virt_type="kvm", cpu_model="host-model"),
            },
        )
        assert status(bkt)[qemu] == (False, ["cpu_model", "nested_virt"])
        ok(bkt("vm", "capture"))
        back = json.loads((dir / "vms.json").read_text())["vms"]
        for name in (qemu, kvm):
            assert back[name]["nested_virt"] == "vmx", back[name]
            assert back[name].get("cpu_model") is None, back[name]
        assert status(bkt)[qemu] == (True, [])
        assert status(bkt)[kvm] == (True, [])

        # Moved to the other extension, then dropped: only the feature changes; the CPU
        # model libvirt recorded stays as it is.
        model_of_qemu = re.sub(r"\s*<feature[^>]*/>", "", cpu_of(qemu))
        write_vms(
            dir,
            {
                qemu: vm(disks, qemu, nested_virt="svm"),
                kvm: vm(disks, kvm, virt_type="kvm", nested_virt="svm"),
            },
        )
        dry = ok(bkt("vm", "sync", "--dry-run"))
        assert f"~ update {qemu}\n    nested_virt: vmx -> svm\n" in dry.stdout, dry.stdout
        ok(bkt("vm", "sync"))
        assert SVM in cpu_of(qemu) and VMX not in cpu_of(qemu)
        assert re.sub(r"\s*<feature[^>]*/>", "", cpu_of(qemu)) == model_of_qemu
        write_vms(dir, {qemu: vm(disks, qemu), kvm: vm(disks, kvm, virt_type="kvm")})
        ok(bkt("vm", "sync"))
        assert "<feature" not in cpu_of(qemu) and "<feature" not in cpu_of(kvm)
        assert cpu_of(qemu) == model_of_qemu
        assert status(bkt)[qemu] == (True, [])
        assert status(bkt)[kvm] == (True, [])

        # A CPU model change under a feature keeps the feature.
        write_vms(
            dir,
            {
                qemu: vm(disks, qemu, nested_virt="vmx", cpu_model="host-model"),
                kvm: vm(disks, kvm, virt_type="kvm", nested_virt="vmx", cpu_model="host-model"),
            },
        )
        ok(bkt("vm", "sync"))
        assert VMX in cpu_of(qemu) and "mode='host-model'" in cpu_of(qemu), cpu_of(qemu)
        assert VMX in cpu_of(kvm) and "mode='host-model'" in cpu_of(kvm), cpu_of(kvm)
        write_vms(
            dir,
            {
                qemu: vm(disks, qemu, nested_virt="vmx"),
                kvm: vm(disks, kvm, virt_type="kvm", nested_virt="vmx"),
            },
        )
        ok(bkt("vm", "sync"))
        assert VMX in cpu_of(qemu) and ">qemu64</model>" in cpu_of(qemu), cpu_of(qemu)
        assert VMX in cpu_of(kvm) and "mode='host-passthrough'" in cpu_of(kvm), cpu_of(kvm)
        assert status(bkt)[qemu] == (True, [])
        assert status(bkt)[kvm] == (True, [])


def test_a_qemu_guest_with_a_cpu_feature_starts(bkt: Bkt, tmp_path: Path, disks: Path) -> None:
    name = unique_name("nested-run")
    with domains(name):
        # svm: the extension QEMU's software emulation implements.
        write_vms(tmp_path / "manifests", {name: vm(disks, name, nested_virt="svm")})
        ok(bkt("vm", "sync"))
        virsh("start", name)
        assert virsh("domstate", name).strip() == "running"
