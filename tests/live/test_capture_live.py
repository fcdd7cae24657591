"""``bkt vm capture`` against the real libvirt daemon, through the embedding API and the CLI.

The property that matters most: a domain made by hand or by virt-install, once captured, is
in sync, so ``sync --check`` exits 0 and a real sync leaves its definition byte for byte as
it was. Every domain is named with the test's unique prefix and removed afterwards (``lab``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from bkt_core.host import Host
from bkt_core.plan import CaptureReport
from tests.conftest import BKT, RunBkt
from tests.livelib import URI, Lab, virsh

pytestmark = pytest.mark.libvirtd

GIB = 1024**3


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()


def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def disk(directory: Path, name: str, size_gb: int = 1, fmt: str = "qcow2") -> str:
    path = directory / f"{name}.{'img' if fmt == 'raw' else 'qcow2'}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), f"{size_gb}G"], check=True)
    return str(path)


def host(directory: Path) -> Host:
    return Host(directory, uri=URI)


def capture(directory: Path, *names: str, **options: Any) -> CaptureReport:
    return host(directory).capture("vm", names, **options)


def manifest(directory: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((directory / "vms.json").read_text()))


def assert_sync_is_a_no_op(lab: Lab, directory: Path, names: Sequence[str]) -> None:
    """``sync --dry-run`` plans nothing, and a real sync leaves each definition byte for byte
    as it was."""
    before = {n: lab.dumpxml(n) for n in names}
    the_host = host(directory)
    plan = the_host.plan("vm", names=names)
    assert {e.name: e.action for e in plan.entries} == dict.fromkeys(names, "unchanged"), [
        e.to_json() for e in plan.entries
    ]
    report = the_host.sync("vm", names=names)
    assert report.failed == []
    assert {n: lab.dumpxml(n) for n in names} == before


def hand_made(name: str, disk_path: str, iso: str, *, extra: str = "") -> str:
    """A domain as a person writes it for virsh: other units, a VNC password, devices bkt
    does not describe, an IDE CD-ROM."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='GiB'>2</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk_path}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{iso}'/>
      <target dev='sdb' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <graphics type='vnc' autoport='yes' passwd='s3cret'/>
    <video><model type='vga'/></video>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    {extra}
  </devices>
</domain>
"""


def test_a_hand_made_domain_is_captured_exactly_and_sync_then_changes_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    name = lab.name("hand")
    path = disk(tmp_path, "hand", 3)
    iso = tmp_path / "install.iso"
    iso.write_bytes(b"\0" * 2048)
    lab.define(hand_made(name, path, str(iso)))
    directory = tmp_path / "manifests"
    report = capture(directory, name)
    assert [(e.name, e.kind) for e in report.entries] == [(name, "added")]
    assert report.warnings == ()
    assert manifest(directory) == {
        "$schema": "vms.schema.json",
        "vms": {
            name: {
                "memory_gb": 2,
                "vcpus": 2,
                "disk_path": path,
                "disk_size_gb": 3,
                "boot": "bios",
                "network": "default",
                "graphics": "vnc",
                "iso_sources": [{"path": str(iso)}],
                "virt_type": "qemu",
            }
        },
    }
    assert (directory / "vms.schema.json").exists()
    assert_sync_is_a_no_op(lab, directory, [name])


def test_changes_are_captured_field_by_field_and_kept_fields_warn(
    lab: Lab, tmp_path: Path
) -> None:
    name = lab.name("chg")
    path = disk(tmp_path, "chg")
    iso = tmp_path / "a.iso"
    iso.write_bytes(b"\0" * 2048)
    lab.define(hand_made(name, path, str(iso)))
    directory = tmp_path / "manifests"
    capture(directory, name)
    # By hand: 4 vCPUs, spice, autostart on, and memory that is not a whole GiB.
    xml = lab.dumpxml(name)
    xml = xml.replace("<vcpu placement='static'>2</vcpu>", "<vcpu placement='static'>4</vcpu>")
    xml = xml.replace(">2097152<", ">1572864<")
    lab.define(xml.replace("type='vnc'", "type='spice'"))

    virsh("autostart", "--domain", name)
    report = capture(directory, name)
    (entry,) = report.entries
    assert entry.kind == "changed"
    assert entry.changes == (
        ("vcpus", "2", "4"),
        ("graphics", '"vnc"', '"spice"'),
        ("autostart", "(absent)", "true"),
    )
    assert report.warnings == (
        f"VM {name}: memory_gb keeps its manifest value: 1572864 KiB is not a whole number of GiB",
    )
    vm = manifest(directory)["vms"][name]
    assert (vm["memory_gb"], vm["vcpus"], vm["autostart"]) == (2, 4, True)


def test_explicit_defaults_and_unknowable_fields_survive_and_the_file_is_not_rewritten(
    lab: Lab, tmp_path: Path
) -> None:
    name = lab.name("keep")
    (tmp_path / "home" / "disks").mkdir()
    disk(tmp_path / "home" / "disks", "keep")
    vm = {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": "~/disks/keep.qcow2",
        "disk_size_gb": 1,
        "create_if_missing": True,
        "boot": "bios",
        "tpm": "none",
        "network": "none",
        "graphics": "none",
        "iso_sources": [
            {"url": "https://example.org/isos/os.iso", "sha256": "0" * 64},
            {"path": "~/missing.iso"},
        ],
        "virt_type": "qemu",
        "secure_boot": False,
        "autostart": False,
    }
    directory = tmp_path / "manifests"
    directory.mkdir()
    text = json.dumps({"$schema": "vms.schema.json", "vms": {name: vm}}, indent=2) + "\n"
    (directory / "vms.json").write_text(text)
    assert host(directory).sync("vm", names=[name]).failed == []
    mtime = (directory / "vms.json").stat().st_mtime_ns
    report = capture(directory, name)
    assert [(e.name, e.kind) for e in report.entries] == [(name, "unchanged")]
    assert not report.written
    assert (directory / "vms.json").read_text() == text
    assert (directory / "vms.json").stat().st_mtime_ns == mtime
    assert_sync_is_a_no_op(lab, directory, [name])


def test_dry_run_writes_nothing(lab: Lab, tmp_path: Path) -> None:
    name = lab.name("dry")
    iso = tmp_path / "dry.iso"
    iso.write_bytes(b"\0" * 2048)
    lab.define(hand_made(name, disk(tmp_path, "dry"), str(iso)))
    directory = tmp_path / "not-yet"
    report = capture(directory, name, dry_run=True)
    assert [e.kind for e in report.entries] == ["added"]
    assert not report.written and not directory.exists()
    assert report.notes == (
        f"{directory} does not exist: capture would create it",
        f"{directory / 'vms.json'} does not exist: capture would create it",
        "dry run: nothing was written",
    )


def test_a_domain_whose_cdrom_file_is_missing_captures_and_syncs_as_it_is(
    lab: Lab, tmp_path: Path, run_bkt: RunBkt
) -> None:
    name = lab.name("gone")
    iso = tmp_path / "gone.iso"
    lab.define(hand_made(name, disk(tmp_path, "gone"), str(iso)))
    directory = tmp_path / "manifests"
    report = capture(directory, name)
    (entry,) = report.entries
    assert entry.kind == "added"
    assert manifest(directory)["vms"][name]["iso_sources"] == [{"path": str(iso)}]
    before = lab.dumpxml(name)
    check = run_bkt("-c", lab.uri, "-C", str(directory), "vm", "sync")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout == "nothing to do: 1 VM in sync\n"
    assert "the domain keeps its CD-ROM" in check.stderr
    assert lab.dumpxml(name) == before


# -- virt-install ------------------------------------------------------------------------------


def virt_install(
    name: str,
    disk_path: str,
    *options: str,
    directory: Path,
    osinfo: str = "detect=on,require=off",
    graphics: str = "none",
) -> str:
    """What ``virt-install --print-xml --import`` makes of the disk at ``disk_path``, for the
    OS ``osinfo`` (an osinfo short id, or let virt-install detect it) with ``options``."""
    if shutil.which("virt-install") is None:
        pytest.fail("virt-install is missing: scripts/setup installs the Debian package virtinst")
    # virt-install defines (and starts) a storage pool for the disk's directory, even with
    # --print-xml; the pools it adds are removed again below.
    pools_before = set(virsh("pool-list", "--all", "--name").split())
    proc = subprocess.run(
        [
            "virt-install",
            "--connect",
            URI,
            "--print-xml",
            "--name",
            name,
            "--virt-type",
            "qemu",
            "--memory",
            "1024",
            "--vcpus",
            "1",
            "--disk",
            f"path={disk_path},format=qcow2",
            "--import",
            "--osinfo",
            osinfo,
            "--graphics",
            graphics,
            "--noautoconsole",
            "--check",
            "path_in_use=off",
            *options,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(directory)},
    )
    for pool in set(virsh("pool-list", "--all", "--name").split()) - pools_before:
        virsh("pool-destroy", pool, check=False)
        virsh("pool-undefine", pool, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


VIRT_INSTALL_CASES = {
    "bios-network": ("--network", "network=default"),
    "uefi-network": ("--boot", "uefi", "--network", "network=default"),
    "uefi-bridge": ("--boot", "uefi", "--network", "bridge=bkt-nobr0"),
    "bios-no-nic": ("--network", "none"),
}


def test_virt_install_domains_capture_and_then_sync_is_a_no_op_byte_for_byte(
    lab: Lab, tmp_path: Path, run_bkt: RunBkt
) -> None:
    names = []
    for case, options in VIRT_INSTALL_CASES.items():
        name = lab.name(case)
        xml = virt_install(name, disk(tmp_path, case), *options, directory=tmp_path)
        lab.define(xml)
        names.append(name)
    uefi = lab.dumpxml(lab.name("uefi-network"))
    # virt-install writes <os firmware='efi'> alone. libvirt 9 keeps it so; libvirt 11 picks
    # the firmware at define time and writes its features, loader and NVRAM: on this i440fx
    # machine, the firmware without Secure Boot. Either way no Secure Boot is pinned.
    assert "firmware='efi'" in uefi and "<feature enabled='yes'" not in uefi
    directory = tmp_path / "manifests"
    report = capture(directory, *names)
    assert {e.name: e.kind for e in report.entries} == dict.fromkeys(names, "added"), [
        e.to_json() for e in report.entries
    ]
    assert report.warnings == ()
    vms = manifest(directory)["vms"]
    assert vms[lab.name("uefi-network")]["boot"] == "uefi"
    assert vms[lab.name("uefi-network")]["tpm"] == "2.0"
    assert "secure_boot" not in vms[lab.name("uefi-network")]
    assert vms[lab.name("uefi-bridge")]["network"] == "bridge:bkt-nobr0"
    assert vms[lab.name("bios-no-nic")]["network"] == "none"
    assert vms[lab.name("bios-network")]["boot"] == "bios"
    check = run_bkt(
        "-c", URI, "-C", str(directory), "vm", "sync", "--check", *names, env=env(tmp_path)
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert_sync_is_a_no_op(lab, directory, names)
    # And a second capture finds every VM unchanged, and does not rewrite the file.
    again = capture(directory, *names)
    assert {e.kind for e in again.entries} == {"unchanged"} and not again.written


# -- concurrency -------------------------------------------------------------------------------


def test_four_concurrent_captures_lose_no_write(lab: Lab, tmp_path: Path) -> None:
    iso = tmp_path / "c.iso"
    iso.write_bytes(b"\0" * 2048)
    names = [lab.name(f"c{i}") for i in range(4)]
    for i, name in enumerate(names):
        lab.define(hand_made(name, disk(tmp_path, f"c{i}"), str(iso)))
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "vms.json").write_text('{"vms": {}}\n')
    procs = [
        subprocess.Popen(
            [BKT, "-c", URI, "-C", str(directory), "vm", "capture", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env(tmp_path)},
        )
        for name in names
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    assert sorted(manifest(directory)["vms"]) == sorted(names)
    assert sorted(p.name for p in directory.iterdir()) == ["vms.json"]


# -- the CLI -----------------------------------------------------------------------------------


def test_the_cli_prints_the_capture_and_its_notes(
    lab: Lab, tmp_path: Path, run_bkt: RunBkt
) -> None:
    name = lab.name("cli")
    iso = tmp_path / "cli.iso"
    iso.write_bytes(b"\0" * 2048)
    path = disk(tmp_path, "cli")
    lab.define(hand_made(name, path, str(iso)))
    directory = tmp_path / "new" / "manifests"
    args = ("-c", URI, "-C", str(directory), "vm", "capture")
    dry = run_bkt(*args, name, "--dry-run", env=env(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == f"+ add {name}"
    assert "    memory_gb: 2" in dry.stdout.splitlines()
    assert dry.stdout.splitlines()[-1] == (
        "captured 1 VM: 1 added, 0 changed, 0 unchanged; skipped 0"
    )
    assert dry.stderr.splitlines()[-1] == "dry run: nothing was written"
    assert not directory.exists()
    done = run_bkt(*args, name, env=env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"created directory {directory}" in done.stderr
    again = run_bkt("-v", *args, name, env=env(tmp_path))
    assert again.stdout.splitlines() == [
        f"= unchanged {name}",
        "captured 1 VM: 0 added, 0 changed, 1 unchanged; skipped 0",
    ]
    check = run_bkt("-c", URI, "-C", str(directory), "vm", "sync", "--check", env=env(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    missing = run_bkt(*args, lab.name("nope"), env=env(tmp_path))
    assert missing.returncode == 1
    assert f"VM {lab.name('nope')} is not a libvirt domain" in missing.stderr
    (directory / "vms.json").write_text('{"vms": {"a": {"memory_gb": 0}}}\n')
    invalid = run_bkt(*args, env=env(tmp_path))
    assert invalid.returncode == 2


def test_a_per_host_override_is_read_and_capture_writes_each_field_to_its_file(
    lab: Lab, tmp_path: Path, run_bkt: RunBkt
) -> None:
    name = lab.name("ovr")
    iso = tmp_path / "ovr.iso"
    iso.write_bytes(b"\0" * 2048)
    lab.define(hand_made(name, disk(tmp_path, "ovr"), str(iso)))
    directory = tmp_path / "manifests"
    capture(directory, name)
    base_before = manifest(directory)
    override = directory / "vms.labhost.json"
    override.write_text(json.dumps({"vms": {name: {"vcpus": 2}}}) + "\n")
    laptop = {**env(tmp_path), "BKT_HOSTNAME": "labhost"}
    elsewhere = {**env(tmp_path), "BKT_HOSTNAME": "elsewhere"}
    bkt = ("-c", URI, "-C", str(directory), "vm")

    # By hand: 4 vCPUs (the override's field) and spice (vms.json's).
    xml = lab.dumpxml(name)
    xml = xml.replace("<vcpu placement='static'>2</vcpu>", "<vcpu placement='static'>4</vcpu>")
    lab.define(xml.replace("type='vnc'", "type='spice'"))
    status = run_bkt(*bkt, "status", "--json", name, env=laptop)
    assert set(json.loads(status.stdout)["vms"][0]["drift"]) == {"vcpus", "graphics"}, status

    done = run_bkt(*bkt, "capture", name, env=laptop)
    assert done.returncode == 0, done.stderr
    assert json.loads(override.read_text()) == {"vms": {name: {"vcpus": 4}}}
    vm = manifest(directory)["vms"][name]
    assert (vm["vcpus"], vm["graphics"]) == (base_before["vms"][name]["vcpus"], "spice")
    assert f"wrote {override}" in done.stderr

    in_sync = run_bkt(*bkt, "status", "--json", name, env=laptop)
    assert json.loads(in_sync.stdout)["vms"][0]["in_sync"] is True, in_sync.stdout
    drifted = run_bkt(*bkt, "status", "--json", name, env=elsewhere)
    assert json.loads(drifted.stdout)["vms"][0]["drift"] == ["vcpus"], drifted.stdout
