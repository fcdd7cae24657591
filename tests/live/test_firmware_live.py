"""Secure Boot as libvirt really boots it, against the real libvirt daemon.

A UEFI domain that leaves its firmware to libvirt (virt-install's and virt-manager's default)
boots with whatever libvirt picks: on Debian and Fedora, for q35, OVMF with Secure Boot and
Microsoft's keys enrolled. libvirt 9 picks when the domain starts and keeps its definition
unpinned; libvirt 11 picks at define time (and when it loads an older definition) and writes
the choice into it. These tests start such domains paused to see what libvirt chose, and
check that bkt reads, captures and syncs exactly that on whichever libvirt runs them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import RunBkt
from tests.live.test_capture_live import (
    assert_sync_is_a_no_op,
    capture,
    disk,
    env,
    manifest,
    virt_install,
)
from tests.livelib import URI, Lab, virsh

pytestmark = pytest.mark.libvirtd

LIBVIRT9_DEFINITION = (
    Path(__file__).parents[1] / "fixtures" / "libvirt9" / "virt-install-uefi-q35.xml"
)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()


def booted_secure(name: str) -> bool:
    """Starts ``name`` paused and reads the firmware libvirt chose: Secure Boot is a loader
    restricted to SMM (``secure='yes'``); the domain is powered off again."""
    virsh("start", "--paused", name)
    try:
        loader = etree.fromstring(virsh("dumpxml", name).encode()).find("os/loader")
    finally:
        virsh("destroy", name)
    assert loader is not None and (loader.text or "").strip(), "libvirt chose no loader"
    return loader.get("secure") == "yes"


def libvirt_major() -> int:
    found = re.search(r"Running against daemon: (\d+)", virsh("version", "--daemon"))
    assert found is not None
    return int(found.group(1))


def test_virt_install_uefi_guests_are_read_as_the_firmware_libvirt_boots(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    cases = {"q35": ("--machine", "q35"), "pc": ("--machine", "pc")}
    names = []
    for case, options in cases.items():
        name = lab.name(case)
        xml = virt_install(
            name,
            disk(disks, case),
            "--boot",
            "uefi",
            "--network",
            "none",
            *options,
            directory=tmp_path,
        )
        lab.define(xml)
        names.append(name)
    directory = tmp_path / "manifests"
    report = capture(directory, *names)
    assert {e.name: e.kind for e in report.entries} == dict.fromkeys(names, "added")
    vms = manifest(directory)["vms"]
    for name in names:
        assert vms[name]["boot"] == "uefi"
        assert vms[name].get("secure_boot", False) is booted_secure(name), name
    # Debian's (and Fedora's) first firmware for q35 is Secure Boot with enrolled keys; for
    # the older pc machine only plain OVMF fits.
    assert vms[lab.name("q35")]["secure_boot"] is True
    assert "secure_boot" not in vms[lab.name("pc")]
    check = run_bkt("-c", URI, "-C", str(directory), "vm", "sync", "--check", env=env(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert_sync_is_a_no_op(lab, directory, names)


def test_sync_never_turns_secure_boot_off_without_the_flag(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    name = lab.name("win")
    options = ("--boot", "uefi", "--machine", "q35", "--network", "none")
    lab.define(virt_install(name, disk(disks, "win"), *options, directory=tmp_path))
    directory = tmp_path / "manifests"
    capture(directory, name)
    # The manifest as bkt wrote it before it read unpinned firmware: no Secure Boot.
    text = (directory / "vms.json").read_text()
    (directory / "vms.json").write_text(
        text.replace('"secure_boot": true', '"secure_boot": false')
    )
    bkt = ["-c", URI, "-C", str(directory), "vm"]

    status = run_bkt(*bkt, "status", "--json", env=env(tmp_path))
    assert '"drift":["secure_boot"]' in status.stdout, status.stdout

    before = lab.dumpxml(name)
    refused = run_bkt(*bkt, "sync", env=env(tmp_path))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    out = refused.stdout + refused.stderr
    assert "SECURE BOOT WOULD BE TURNED OFF" in out and "--allow-firmware-change" in out
    assert lab.dumpxml(name) == before
    assert booted_secure(name)

    allowed = run_bkt(*bkt, "sync", "--allow-firmware-change", env=env(tmp_path))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "SECURE BOOT WOULD BE TURNED OFF" in allowed.stdout + allowed.stderr
    assert not booted_secure(name)
    again = run_bkt(*bkt, "sync", "--check", env=env(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_definition_written_by_libvirt_9_keeps_secure_boot_on_this_libvirt(
    lab: Lab, disks: Path, tmp_path: Path, run_bkt: RunBkt
) -> None:
    # The upgrade: libvirt 9 wrote this definition without firmware features; libvirt 11
    # resolves them when it loads (here: defines) it, and bkt must read the same VM either
    # way, so that a manifest captured before the upgrade stays in sync after it.
    name = lab.name("upgraded")
    xml = LIBVIRT9_DEFINITION.read_text()
    lab.define(xml.replace("@NAME@", name).replace("@DISK@", disk(disks, "upgraded")))
    stored = lab.dumpxml(name)
    if libvirt_major() >= 11:
        assert "<feature enabled='yes' name='secure-boot'/>" in stored
        assert "<feature enabled='yes' name='enrolled-keys'/>" in stored
    else:
        assert "<firmware>" not in stored and "<loader" not in stored
    directory = tmp_path / "manifests"
    capture(directory, name)
    assert manifest(directory)["vms"][name]["secure_boot"] is True
    bkt = ["-c", URI, "-C", str(directory), "vm"]
    status = run_bkt(*bkt, "status", "--json", env=env(tmp_path))
    assert '"in_sync":true' in status.stdout, status.stdout
    assert_sync_is_a_no_op(lab, directory, [name])
    assert booted_secure(name)
