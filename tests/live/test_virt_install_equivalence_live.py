"""The ``os`` field against virt-install, through the real libvirtd and virsh.

- The README's Windows 11 entry (``examples/manifests/vms.json``, which says ``"os":
  "win11"``) gives the domain ``virt-install --osinfo win11`` makes for the same sizes,
  device by device, as libvirt stores both (``virsh dumpxml --inactive``), except for the
  differences listed below, each with the reason it stays: :data:`REMAINING`, the CPU
  topology, the PCIe root ports, and what depends on the versions (libvirt 9 leaves
  virt-install's UEFI firmware unpinned; virt-install 5 turns on the Hyper-V
  enlightenments the host offers) or on KVM (none of them without it).
- Guests virt-install made for Windows 11, Windows 10 and Fedora 37, captured into a
  manifest that does not have them, are recorded with their ``os``; sync then changes none
  of them, byte for byte.
- With the plugin blocked (``--disable-plugin os``), ``os`` is an unknown field again.

virt-install runs with ``--print-xml 2``: the definition it leaves behind once the guest is
installed, which is what libvirt keeps (the first step only boots the installer CD-ROM
first and ends at the first reboot). It chooses the domain type itself (``kvm`` where the
host has KVM's capabilities); bkt's entry takes the same one. Defining a domain never starts
it, so the sizes are the README's: 8 GiB, 4 vCPUs, an 80 GiB disk (qcow2, which takes a few
MiB on the host until a guest writes to it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import ROOT, Run, RunBkt
from tests.domain_compare import Element, compare_domains, summary
from tests.livelib import URI, Lab, virsh

pytestmark = pytest.mark.libvirtd

EXAMPLE = ROOT / "examples" / "manifests" / "vms.json"

# What still differs between the domain of the README's win11 entry and virt-install's, as
# compare_domains() spells it, and why bkt leaves it so.
REMAINING = {
    # virt-install adds a serial console to every guest; bkt adds one only without graphics.
    "devices/console: virt-install type=pty target(type=serial port=0), bkt (none)": "console",
    "devices/serial: virt-install type=pty target(type=isa-serial port=0"
    " model(name=isa-serial)), bkt (none)": "console",
    # virt-install reserves 15 USB ports on the xHCI controller (libvirt's default is 8
    # for qemu-xhci, enough for the tablet and two redirected devices).
    "devices/controller[usb qemu-xhci]@ports: virt-install 15, bkt (none)": "usb ports",
    # virt-install turns on discard for a disk it creates; bkt's qcow2 disks leave QEMU's
    # default (freed guest blocks are not returned to the host).
    "devices/disk[disk]/driver@discard: virt-install unmap, bkt (none)": "discard",
    # virt-install turns SPICE's image compression off (it assumes a local display).
    "devices/graphics/image: virt-install compression=off, bkt (none)": "spice compression",
    # virt-install turns VMware's I/O port off; QEMU's default keeps it on (harmless).
    "features/vmport: virt-install state=off, bkt (none)": "vmport",
    # virt-install turns guest suspend (S3, S4) off; bkt leaves QEMU's default.
    "pm: virt-install suspend-to-mem(enabled=no) suspend-to-disk(enabled=no), bkt (none)": "pm",
    # bkt keeps the installer CD-ROM bootable after the disk (an empty disk falls through to
    # the installer); virt-install's final definition boots only the disk.
    "os/boot: virt-install hd, bkt hd, cdrom": "boot order",
}
# virt-install adds 14 PCIe root ports (room for hot-plugged devices); bkt leaves them to
# libvirt, which adds one for each PCIe device the domain has.
ROOT_PORTS = "devices/controller[pci pcie-root-port]: virt-install 14, bkt {}"
# Kept on purpose: Windows client editions use 1 (Home) or 2 (Pro) sockets, so virt-install's
# N sockets of 1 core leave the other vCPUs unused; bkt writes 1 socket of N cores (libvirt 11
# adds clusters='1').
TOPOLOGY = "cpu/topology: virt-install (none), bkt {}"
# virt-install 5 and later turn on the Hyper-V enlightenments the host's libvirt offers for
# the domain type (its domain capabilities: on most hosts many more than these three, on a
# host whose KVM offers only spinlocks just that one); bkt's hyperv turns on virt-install 4's
# three and keeps any set a domain has.
BKT_ENLIGHTENMENTS = {"relaxed", "vapic", "spinlocks"}
# libvirt before 10 keeps virt-install's <os firmware='efi'> unpinned and chooses the
# firmware when the domain starts: on Debian and Fedora, for q35, OVMF with Secure Boot and
# Microsoft's keys, which bkt names. libvirt 10 and later write that choice at define time.
UNPINNED_FIRMWARE = (
    "features/smm: virt-install (none), bkt state=on",
    "os/firmware: virt-install (none), bkt feature(enabled=yes name=enrolled-keys)"
    " feature(enabled=yes name=secure-boot)",
)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()


def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "NO_COLOR": "1"}


def virt_install(name: str, osinfo: str, disks: Path, iso: Path, *options: str) -> str:
    """The domain XML virt-install leaves defined after installing ``osinfo`` from ``iso``
    (its second step), for a new 80 GiB disk in ``disks`` (which it creates: that decides
    its discard setting)."""
    # virt-install defines (and starts) a storage pool for the directories of the disk and
    # the ISO, even with --print-xml; the pools it adds are removed again below.
    pools_before = set(virsh("pool-list", "--all", "--name").split())
    proc = subprocess.run(
        [
            "virt-install",
            "--connect", URI,
            "--print-xml", "2",
            "--name", name,
            "--osinfo", osinfo,
            "--memory", "8192",
            "--vcpus", "4",
            "--disk", f"path={disks / (name + '.qcow2')},size=80,format=qcow2",
            "--cdrom", str(iso),
            "--network", "network=default",
            "--noautoconsole",
            "--check", "path_in_use=off",
            *options,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(disks)},
    )  # fmt: skip
    for pool in set(virsh("pool-list", "--all", "--name").split()) - pools_before:
        virsh("pool-destroy", pool, check=False)
        virsh("pool-undefine", pool, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse(xml: str) -> Element:
    return etree.fromstring(xml.encode())


def domain_type(xml: str) -> str:
    return str(parse(xml).get("type"))


def virt_install_version() -> tuple[int, ...]:
    out = subprocess.run(["virt-install", "--version"], capture_output=True, text=True).stdout
    return tuple(int(part) for part in out.strip().split(".")[:2])


def offered_enlightenments() -> set[str]:
    """The Hyper-V enlightenments the host's libvirt offers to a q35 KVM guest."""
    caps = parse(virsh("domcapabilities", "--virttype", "kvm", "--machine", "q35"))
    return {v.text or "" for v in caps.iterfind("features/hyperv/enum[@name='features']/value")}


def fake_iso(disks: Path) -> Path:
    iso = disks / "Win11_25H2_English_x64.iso"
    iso.write_bytes(b"\0" * 2048)
    return iso


def the_example_win11() -> dict[str, Any]:
    vms: dict[str, Any] = json.loads(EXAMPLE.read_text())["vms"]
    return dict(vms["win11"])


def write_vms(directory: Path, vms: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vms.json").write_text(json.dumps({"vms": vms}, indent=2) + "\n")


def bkt(run_bkt: RunBkt, tmp_path: Path, *args: str) -> Run:
    return run_bkt("-c", URI, "-C", str(tmp_path / "manifests"), *args, env=env(tmp_path))


def test_the_example_entry_matches_virt_install_device_by_device(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    iso = fake_iso(disks)
    theirs = lab.name("virt-install")
    xml = virt_install(theirs, "win11", disks, iso)
    lab.define(xml)

    entry = the_example_win11()
    assert entry["os"] == "win11"
    assert [s for s in entry["iso_sources"] if "path" in s] == entry["iso_sources"]
    ours = lab.name("bkt")
    entry.update(
        disk_path=str(disks / "bkt.qcow2"),
        create_if_missing=True,
        iso_sources=[{"path": str(iso)}],
    )
    if domain_type(xml) != "kvm":
        entry["virt_type"] = domain_type(xml)
    write_vms(tmp_path / "manifests", {ours: entry})
    done = bkt(run_bkt, tmp_path, "vm", "sync")
    assert done.returncode == 0, done.stdout + done.stderr

    theirs_xml, ours_xml = lab.dumpxml(theirs), lab.dumpxml(ours)
    lines = compare_domains(theirs_xml, ours_xml)
    topology = parse(ours_xml).find("cpu/topology")
    assert topology is not None
    assert (topology.get("sockets"), topology.get("cores")) == ("1", "4")
    expected = {*REMAINING, TOPOLOGY.format(summary(topology))}
    ports = ours_xml.count("model='pcie-root-port'")
    if ports != 14:
        expected.add(ROOT_PORTS.format(ports))
    if "<firmware>" not in theirs_xml:
        expected.update(UNPINNED_FIRMWARE)
    hyperv = parse(theirs_xml).find("features/hyperv")
    assert hyperv is not None
    if domain_type(xml) != "kvm":
        # Hyper-V's enlightenments need KVM: os turns them off under software emulation.
        expected.add(f"features/hyperv: virt-install {summary(hyperv)}, bkt (none)")
        expected.add("clock/timer[hypervclock]: virt-install present=yes, bkt (none)")
    elif virt_install_version() >= (5,):
        # virt-install 5 turns on those the host offers; bkt writes virt-install 4's three.
        offered = offered_enlightenments()
        theirs_on = {e.tag for e in hyperv}
        assert theirs_on <= offered, (theirs_on, offered)
        expected.update(
            f"features/hyperv/{e.tag!s}: virt-install {summary(e)}, bkt (none)"
            for e in hyperv
            if e.tag not in BKT_ENLIGHTENMENTS
        )
        ours_hyperv = parse(ours_xml).find("features/hyperv")
        assert ours_hyperv is not None
        expected.update(
            f"features/hyperv/{e.tag!s}: virt-install (none), bkt {summary(e)}"
            for e in ours_hyperv
            if e.tag not in theirs_on
        )
        assert {e.tag for e in ours_hyperv} == BKT_ENLIGHTENMENTS
    assert lines == sorted(expected), "\n".join(lines)

    # And the domain bkt made is in sync with its entry.
    check = bkt(run_bkt, tmp_path, "vm", "sync", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


GUESTS = {"win11": "win11", "win10": "win10", "fedora": "fedora37"}


def test_virt_install_guests_are_captured_with_their_os_and_sync_then_changes_nothing(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    iso = fake_iso(disks)
    names = {}
    for suffix, osinfo in GUESTS.items():
        names[osinfo] = lab.define(virt_install(lab.name(suffix), osinfo, disks, iso))
    write_vms(tmp_path / "manifests", {})
    captured = bkt(run_bkt, tmp_path, "vm", "capture", *names.values())
    assert captured.returncode == 0, captured.stdout + captured.stderr
    vms = json.loads((tmp_path / "manifests" / "vms.json").read_text())["vms"]
    assert {osinfo: vms[name].get("os") for osinfo, name in names.items()} == {
        osinfo: osinfo for osinfo in names
    }
    if virt_install_version()[0] == 4 and domain_type(lab.dumpxml(names["win11"])) == "kvm":
        # The os plugin mirrors virt-install 4's choices: with the OS recorded, each device
        # field equals what os fills in, so capture states none of them (nor tpm and
        # secure_boot for Windows 11). Fedora's final definition has its CD-ROM emptied.
        required = {"memory_gb", "vcpus", "disk_path", "disk_size_gb", "boot", "network"}
        required |= {"graphics"}
        assert {o: sorted(set(vms[name]) - required) for o, name in names.items()} == {
            "win11": ["iso_sources", "os"],
            "win10": ["iso_sources", "os"],
            "fedora37": ["os"],
        }

    before = {name: lab.dumpxml(name) for name in names.values()}
    check = bkt(run_bkt, tmp_path, "vm", "sync", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    done = bkt(run_bkt, tmp_path, "vm", "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "nothing to do: 3 VMs in sync\n"
    assert {name: lab.dumpxml(name) for name in names.values()} == before
    again = bkt(run_bkt, tmp_path, "vm", "capture", *names.values())
    assert again.stdout.splitlines()[-1] == (
        "captured 3 VMs: 0 added, 0 changed, 3 unchanged; skipped 0"
    )


def test_with_the_plugin_blocked_os_is_an_unknown_field_and_sync_defines_nothing(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    name = lab.name("blocked")
    entry = the_example_win11()
    entry.update(disk_path=str(disks / "blocked.qcow2"), iso_sources=[])
    write_vms(tmp_path / "manifests", {name: entry})
    assert bkt(run_bkt, tmp_path, "vm", "validate").returncode == 0
    for command in (("vm", "validate"), ("vm", "sync")):
        blocked = bkt(run_bkt, tmp_path, "--disable-plugin", "os", *command)
        assert blocked.returncode == 2, blocked.stdout + blocked.stderr
        assert f'vms.{name}.os: unknown field "os"' in blocked.stderr
    assert lab.names() == []
