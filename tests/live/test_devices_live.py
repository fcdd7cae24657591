"""The device fields against the real libvirtd: a domain defined with an explicit value for each
field is stored by libvirt as bkt wrote it (read back with ``virsh dumpxml --inactive``), is in
sync, and capture then sync changes nothing, byte for byte; changes are made in place; a
manifest that states none of them leaves a domain's devices alone; a virt-install guest is
captured with its devices. Hyper-V enlightenments need KVM to start, so only software-emulated
(qemu) guests are started."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, RunBkt
from tests.livelib import domains, inactive_xml, unique_name, virsh, vm, write_vms

pytestmark = pytest.mark.libvirtd

VIRT_INSTALL = Path(__file__).resolve().parents[1] / "golden" / "virt-install-xml"

WINDOWS = {
    "disk_bus": "sata",
    "nic_model": "e1000e",
    "clock": "localtime",
    "clock_timers": True,
    "hyperv": True,
    "sound": "ich9",
    "usb_redirection": 2,
    "video": "qxl",
}
#: The other value of each, a change of every device but the disk's bus.
CHANGED = {
    "nic_model": "rtl8139",
    "clock": "utc",
    "clock_timers": False,
    "hyperv": False,
    "sound": "ac97",
    "usb_redirection": 1,
    "video": "virtio",
}


def ok(result: Run) -> Run:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def status(bkt: RunBkt, name: str) -> tuple[bool | None, list[str]]:
    rows = json.loads(ok(bkt("vm", "status", "--json", name)).stdout)["vms"]
    (row,) = rows
    return row["in_sync"], row["drift"]


def capture_changes_nothing(bkt: RunBkt, manifest: Path, name: str) -> None:
    """Capture writes nothing new (byte for byte), and sync then has nothing to do."""
    before = manifest.read_bytes()
    captured = ok(bkt("vm", "capture", name))
    assert captured.stderr == "", captured.stderr
    assert manifest.read_bytes() == before
    assert ok(bkt("vm", "sync")).stdout == "nothing to do: 1 VM in sync\n"


def elements(xml: str, pattern: str) -> list[str]:
    return re.findall(pattern, xml, re.S)


def device_parts(xml: str) -> dict[str, list[str]]:
    """What the device fields own in a stored domain, as libvirt writes it."""
    return {
        "disk": elements(xml, r"<target dev='\w+' bus='\w+'/>"),
        "nic": elements(xml, r"<interface.*?</interface>"),
        "clock": elements(xml, r"<clock[^>]*/>|<clock.*?</clock>"),
        "hyperv": elements(xml, r"<hyperv.*?</hyperv>"),
        "sound": elements(xml, r"<sound .*?</sound>"),
        "redirdev": elements(xml, r"<redirdev .*?</redirdev>"),
        "video": elements(xml, r"<video>.*?</video>"),
    }


def test_each_device_field_is_stored_as_written_and_round_trips(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("devices")
    dir = tmp_path / "manifests"
    fields: dict[str, Any] = {"virt_type": "kvm", "graphics": "spice", "network": "default"}
    manifest = write_vms(dir, {name: vm(disks, name, **fields, **WINDOWS)})
    with domains(name):
        ok(bkt("vm", "sync"))
        xml = inactive_xml(name)
        assert "<target dev='sda' bus='sata'/>" in xml
        assert "<model type='e1000e'/>" in xml
        assert "<clock offset='localtime'>" in xml
        assert elements(xml, r"<timer [^>]*/>") == [
            "<timer name='rtc' tickpolicy='catchup'/>",
            "<timer name='pit' tickpolicy='delay'/>",
            "<timer name='hpet' present='no'/>",
            "<timer name='hypervclock' present='yes'/>",
        ]
        hyperv = re.search(r"<hyperv mode='custom'>(.*?)</hyperv>", xml, re.S)
        assert hyperv is not None, xml
        assert elements(hyperv.group(1), r"<\w+ [^>]*/>") == [
            "<relaxed state='on'/>",
            "<vapic state='on'/>",
            "<spinlocks state='on' retries='8191'/>",
        ]
        assert elements(xml, r"<sound model='(\w+)'") == ["ich9"]
        assert len(elements(xml, r"<redirdev bus='usb' type='spicevmc'>")) == 2
        assert elements(xml, r"<model type='(qxl)'") == ["qxl"]
        assert status(bkt, name) == (True, [])
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 1 VM in sync\n"
        capture_changes_nothing(bkt, manifest, name)

        # Every other device changed in place, in one sync; the domain keeps its UUID.
        uuid = virsh("domuuid", name).strip()
        write_vms(dir, {name: vm(disks, name, **fields, **(WINDOWS | CHANGED))})
        dry = ok(bkt("vm", "sync", "--dry-run")).stdout
        for line in (
            "nic_model: e1000e -> rtl8139",
            "clock: localtime -> utc",
            "clock_timers: true -> false",
            "hyperv: true -> false",
            "sound: ich9 -> ac97",
            "usb_redirection: 2 -> 1",
            "video: qxl -> virtio",
        ):
            assert f"    {line}\n" in dry, dry
        ok(bkt("vm", "sync"))
        changed = inactive_xml(name)
        assert virsh("domuuid", name).strip() == uuid
        assert "<hyperv" not in changed and "<timer" not in changed, changed
        assert "<clock offset='utc'/>" in changed
        assert elements(changed, r"<sound model='(\w+)'") == ["ac97"]
        assert len(elements(changed, r"<redirdev bus='usb' type='spicevmc'>")) == 1
        assert "<model type='rtl8139'/>" in changed
        assert elements(changed, r"<video>\s*<model type='(\w+)'") == ["virtio"]
        assert status(bkt, name) == (True, [])
        capture_changes_nothing(bkt, manifest, name)

        # The disk stays on its bus: sync refuses, and says how to keep it.
        moved = WINDOWS | CHANGED | {"disk_bus": "virtio"}
        write_vms(dir, {name: vm(disks, name, **fields, **moved)})
        refused = bkt("vm", "sync")
        assert refused.returncode != 0
        assert "cannot change disk_bus: bkt does not move an existing disk" in refused.stdout + (
            refused.stderr
        )
        assert "`bkt vm capture NAME` writes the domain's bus into the manifest" in (
            refused.stdout + refused.stderr
        )
        assert "<target dev='sda' bus='sata'/>" in inactive_xml(name)


def test_a_manifest_without_device_fields_leaves_the_devices_alone(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("unmanaged")
    dir = tmp_path / "manifests"
    fields: dict[str, Any] = {"virt_type": "kvm", "graphics": "spice"}
    write_vms(dir, {name: vm(disks, name, **fields, **WINDOWS)})
    with domains(name):
        ok(bkt("vm", "sync"))
        before = inactive_xml(name)
        # The same VM as a manifest written before the device fields existed.
        manifest = write_vms(dir, {name: vm(disks, name, **fields)})
        assert status(bkt, name) == (True, [])
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 1 VM in sync\n"
        # Another change leaves every device as it was.
        write_vms(dir, {name: vm(disks, name, **fields, memory_gb=2)})
        ok(bkt("vm", "sync"))
        after = inactive_xml(name)
        assert "<memory unit='KiB'>2097152</memory>" in after
        assert device_parts(after) == device_parts(before)
        # Capture does not start writing them into the entry.
        manifest = write_vms(dir, {name: vm(disks, name, **fields, memory_gb=2)})
        capture_changes_nothing(bkt, manifest, name)
        assert not set(WINDOWS) & set(json.loads(manifest.read_text())["vms"][name])


def virt_install_domain(case: str, name: str, disks: Path, kvm: bool) -> str:
    """virt-install's ``--print-xml`` for ``case`` as this host can define it: a disk in
    ``disks``, no installer CD-ROM, no fixed MAC; without ``kvm``, software emulation with
    QEMU's own CPU."""
    xml = (VIRT_INSTALL / f"{case}.xml").read_text()
    if not kvm:
        xml = xml.replace('<domain type="kvm">', '<domain type="qemu">')
        xml = xml.replace('<cpu mode="host-passthrough"/>', "")
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml)
    xml = re.sub(r"\s*<uuid>[^<]*</uuid>", "", xml)
    xml = xml.replace("/tmp/t.qcow2", str(disks / f"{name}.qcow2"))
    xml = re.sub(r"\s*<disk type=\"file\" device=\"cdrom\">.*?</disk>", "", xml, flags=re.S)
    xml = re.sub(r"\s*<boot dev=\"cdrom\"/>", "", xml)
    xml = re.sub(r"\s*<mac address=\"[^\"]*\"/>", "", xml)
    return xml


@pytest.mark.parametrize(
    ("case", "kvm", "devices"),
    [
        (
            "fedora37",
            False,
            {"clock_timers": True, "sound": "ich9", "usb_redirection": 2, "video": "virtio"},
        ),
        (
            # Defined under KVM (Hyper-V needs it) but never started.
            "win10",
            True,
            {
                "disk_bus": "sata",
                "nic_model": "e1000e",
                "clock": "localtime",
                "clock_timers": True,
                "hyperv": True,
                "sound": "ich9",
                "usb_redirection": 2,
            },
        ),
    ],
)
def test_a_virt_install_guest_is_captured_with_its_devices(
    bkt: RunBkt, tmp_path: Path, disks: Path, case: str, kvm: bool, devices: dict[str, Any]
) -> None:
    import subprocess

    name = unique_name(case.replace(".", ""))
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(disks / f"{name}.qcow2"), "1G"],
        check=True,
    )
    path = tmp_path / "domain.xml"
    path.write_text(virt_install_domain(case, name, disks, kvm))
    with domains(name):
        virsh("define", str(path))
        captured = ok(bkt("vm", "capture", name))
        assert f"+ add {name}" in captured.stdout, captured.stdout + captured.stderr
        assert "warning" not in captured.stderr, captured.stderr
        manifest = tmp_path / "manifests" / "vms.json"
        entry = json.loads(manifest.read_text())["vms"][name]
        # Captured with its os, which fills each of these devices as the domain has them: so
        # none is written (a filled value never is).
        assert entry["os"] == case
        assert {k: entry[k] for k in WINDOWS if k in entry} == {}
        assert status(bkt, name) == (True, [])
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 1 VM in sync\n"
        capture_changes_nothing(bkt, manifest, name)
        # Without the os plugin nothing fills them: each device that differs from what bkt
        # gives a new domain is written.
        manifest.unlink()
        alone = ok(bkt("--disable-plugin", "os", "vm", "capture", name))
        assert f"+ add {name}" in alone.stdout, alone.stdout + alone.stderr
        entry = json.loads(manifest.read_text())["vms"][name]
        assert "os" not in entry
        assert {k: entry[k] for k in WINDOWS if k in entry} == devices
        assert ok(bkt("--disable-plugin", "os", "vm", "sync")).stdout == (
            "nothing to do: 1 VM in sync\n"
        )


def test_a_qemu_guest_with_its_devices_starts(bkt: RunBkt, tmp_path: Path, disks: Path) -> None:
    name = unique_name("devstart")
    devices = WINDOWS | {"hyperv": False}  # Hyper-V enlightenments need KVM to start
    write_vms(tmp_path / "manifests", {name: vm(disks, name, graphics="spice", **devices)})
    with domains(name):
        ok(bkt("vm", "sync"))
        assert ok(bkt("vm", "start", name)).stdout == f"{name}: started\n"
        live = virsh("dumpxml", name)
        assert len(elements(live, r"<redirdev bus='usb' type='spicevmc'>")) == 2
        assert elements(live, r"<sound model='(\w+)'") == ["ich9"]
        assert status(bkt, name) == (True, [])
        ok(bkt("vm", "stop", "--force", name))
