"""``bkt doctor`` and sync's host warnings against the real libvirtd: networks the test
defines, bridges, an ISO QEMU cannot reach, and KVM as it really is on this host (the test
starts a kvm guest itself and compares)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunBkt
from tests.livelib import (
    URI,
    domains,
    run_virsh,
    traced,
    unique_name,
    uri,
    virsh,
    vm,
    write_vms,
)

pytestmark = pytest.mark.libvirtd

#: Networks, bridges and the QEMU user's reach are a system daemon's, checked as root.
system_root = pytest.mark.skipif(
    not URI.rstrip("/").endswith("/system") or os.geteuid() != 0,
    reason="needs root and a qemu:///system URI",
)


@pytest.fixture
def network(name_prefix: str, tmp_path: Path) -> Iterator[str]:
    """An isolated libvirt network of this test, defined but not started."""
    name = f"{name_prefix}net"
    path = tmp_path / "net.xml"
    path.write_text(f"<network><name>{name}</name></network>\n")
    virsh("net-define", "--file", str(path))
    try:
        yield name
    finally:
        run_virsh("net-destroy", "--network", name)
        run_virsh("net-undefine", "--network", name)


def kvm_starts(tmp_path: Path, smm: bool) -> bool:
    """Whether a kvm guest as bkt renders one (q35, host-passthrough) starts here, paused."""
    name = unique_name("kvm-truth")
    features = "<features><smm state='on'/></features>" if smm else ""
    path = tmp_path / f"{name}.xml"
    path.write_text(
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>"
        f"<os><type machine='q35'>hvm</type></os>{features}<cpu mode='host-passthrough'/>"
        "</domain>"
    )
    with domains(name):
        return run_virsh("create", "--paused", "--file", str(path)).returncode == 0


def lines(stdout: str) -> dict[str, str]:
    """Each doctor line by its check name."""
    out = {}
    for line in stdout.splitlines():
        status, check, message = re.split(r"\s{2,}", line, maxsplit=2)
        out[check] = f"{status}  {message}"
    return out


@system_root
def test_doctor_checks_networks_bridges_paths_and_kvm(
    bkt: RunBkt, tmp_path: Path, disks: Path, network: str
) -> None:
    private = disks / "private"
    private.mkdir(mode=0o700)
    iso = private / "installer.iso"
    iso.write_bytes(b"")
    a, b, c = unique_name("dr-net"), unique_name("dr-br"), unique_name("dr-iso")
    write_vms(
        tmp_path / "manifests",
        {
            a: vm(disks, a, network=network),
            b: vm(disks, b, network="bridge:bkt-nobr0"),
            c: vm(disks, c, iso_sources=[{"path": str(iso)}]),
        },
    )
    result = bkt("doctor")
    assert result.returncode == 1, result.stdout + result.stderr
    seen = lines(result.stdout)
    assert seen["libvirt"].startswith(f"ok  {uri()} reachable as root"), seen
    assert seen[f"network {network}"] == (
        f"fail  network {network} is not active (VM {a}) (fix: `virsh net-start {network}`, "
        f"and `virsh net-autostart {network}` for every boot)"
    )
    assert seen["bridge bkt-nobr0"].startswith(
        f"fail  host bridge bkt-nobr0 does not exist (VM {b})"
    )
    assert seen[f"path {iso}"].startswith(
        f"fail  libvirt-qemu cannot search {private} (drwx------ root:root) (VM {c}) "
        f"(fix: `setfacl -m u:libvirt-qemu:x {private}`"
    )
    # What doctor says about KVM is what happens when a kvm guest starts.
    assert seen["kvm"].startswith("ok" if kvm_starts(tmp_path, smm=False) else "warn"), seen
    assert seen["uefi"].startswith("ok") and seen["swtpm"].startswith("ok"), seen
    assert result.stderr.startswith("error: 3 of ")
    assert not [n for n in virsh("list", "--all", "--name").split() if "bkt-probe" in n]

    document = json.loads(bkt("doctor", "--json").stdout)
    assert document["ok"] is False
    by_check = {c["check"]: c for c in document["checks"]}
    assert by_check[f"network {network}"] == {
        "check": f"network {network}",
        "status": "fail",
        "message": f"network {network} is not active (VM {a})",
        "hint": f"`virsh net-start {network}`, and `virsh net-autostart {network}` for every boot",
        "vms": [a],
    }
    assert {c["status"] for c in document["checks"]} <= {"ok", "warn", "fail", "skip"}

    # Started, the network passes with a warning; its bridge is a real one; the ISO moves.
    virsh("net-start", "--network", network)
    bridge = re.search(r"Bridge:\s+(\S+)", virsh("net-info", "--network", network))
    assert bridge
    private.chmod(0o711)
    write_vms(
        tmp_path / "manifests",
        {
            a: vm(disks, a, network=network),
            b: vm(disks, b, network=f"bridge:{bridge.group(1)}"),
            c: vm(disks, c, iso_sources=[{"path": str(iso)}]),
        },
    )
    seen = lines(bkt("doctor").stdout)
    assert seen[f"network {network}"].startswith(
        f"warn  network {network} is active but not started when the host boots"
    )
    assert seen[f"bridge {bridge.group(1)}"].startswith("ok  host bridge")
    assert seen["paths"] == "ok  libvirt-qemu can reach every disk and ISO path"
    virsh("net-autostart", "--network", network)
    seen = lines(bkt("doctor").stdout)
    assert seen[f"network {network}"].startswith("ok  ")


@system_root
def test_sync_warns_before_defining_and_pays_only_when_it_defines(
    bkt: RunBkt, tmp_path: Path, disks: Path, network: str
) -> None:
    name = unique_name("dr-sync")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name, network=network)})
        dry = bkt("-vv", "vm", "sync", "--dry-run")
        warning = (
            f"warning: VM {name}: network {network} is not active (fix: `virsh net-start "
            f"{network}`, and `virsh net-autostart {network}` for every boot)\n"
        )
        assert warning in dry.stderr
        processes = traced(dry.stderr)
        checks = [p for p in processes if "net-list --all --name" in p]
        assert len(checks) == 1, processes
        assert not any("create" in c or "domcapabilities" in c[:15] for c in checks[0]), (
            "a qemu VM without UEFI or TPM needs no probe and no capabilities"
        )

        synced = bkt("-vv", "vm", "sync")
        assert synced.returncode == 0 and warning in synced.stderr
        processes = traced(synced.stderr)
        at = {i for i, p in enumerate(processes) if "net-list --all --name" in p}
        first_define = next(i for i, p in enumerate(processes) if p[0].startswith("define"))
        assert len(at) == 1 and min(at) < first_define, processes

        # Nothing to define: no host checks, no warning, one virsh process.
        again = bkt("-vv", "vm", "sync")
        assert again.stdout == f"= unchanged {name}\n"
        assert "warning" not in again.stderr
        assert len(traced(again.stderr)) == 1


def test_sync_warns_about_a_kvm_vm_exactly_when_kvm_cannot_run_it(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    plain, secure = unique_name("dr-kvm"), unique_name("dr-kvm-sb")
    write_vms(
        tmp_path / "manifests",
        {
            plain: vm(disks, plain, virt_type="kvm"),
            secure: vm(disks, secure, virt_type="kvm", boot="uefi", secure_boot=True),
        },
    )
    dry = bkt("vm", "sync", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    warnings = {e["name"]: e.get("warnings", []) for e in json.loads(dry.stdout)["plan"]["vms"]}
    kvm_ok = kvm_starts(tmp_path, smm=False)
    smm_ok = kvm_starts(tmp_path, smm=True)
    kvm_warning = [w for w in warnings[plain] if w.startswith("KVM is not usable here")]
    assert bool(kvm_warning) is not kvm_ok, warnings
    secure_warnings = [w for w in warnings[secure] if '"virt_type": "qemu"' in w]
    assert bool(secure_warnings) is not (kvm_ok and smm_ok), warnings
    assert not [n for n in virsh("list", "--all", "--name").split() if "bkt-probe" in n]
    assert os.path.exists(disks) and not any(disks.iterdir()), "a dry run creates nothing"


def test_doctor_without_a_manifest_checks_the_host(run_bkt: RunBkt, tmp_path: Path) -> None:
    result = run_bkt("-c", uri(), "-C", str(tmp_path / "none"), "doctor")
    seen = lines(result.stdout)
    assert seen["manifest"].startswith("skip  no ")
    assert "paths" not in seen
    # A check's message may quote QEMU's own "failed ..."; only a check's status counts.
    failed = any(line.startswith("fail ") for line in result.stdout.splitlines())
    assert result.returncode == (1 if failed else 0)
