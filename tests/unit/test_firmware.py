"""libvirt's choice of UEFI firmware, repeated from the host's firmware descriptors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, Parsed, Reading
from bkt_vm_plugin.firmware import HostFirmware, Needs, choose, read_descriptors, search_dirs
from bkt_vm_plugin.model import validate_vm
from bkt_vm_plugin.status import _pending
from bkt_vm_plugin.sync import firmware_change
from bkt_vm_plugin.virsh import Reply
from tests.firmware import DEBIAN12, DEBIAN12_DIR

Q35 = Needs(arch="x86_64", machine="pc-q35-9.2")
LIBVIRT9_XML = (
    Path(__file__).parents[1] / "fixtures" / "libvirt9" / "virt-install-uefi-q35.xml"
).read_text()


def descriptor(path: Path, code: str, *features: str, machines: str = "pc-q35-*") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "executable": {"filename": code, "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": [machines]}],
        "features": list(features),
    }
    path.write_text(json.dumps(doc))


def test_the_first_matching_descriptor_by_file_name_is_chosen() -> None:
    fw = DEBIAN12.choose(Q35).descriptor
    assert fw is not None and fw.executable == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    assert fw.secure_boot and fw.enrolled_keys
    pc = DEBIAN12.choose(Needs(arch="x86_64", machine="pc-i440fx-7.2")).descriptor
    assert pc is not None and pc.executable == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert not pc.secure_boot


def test_etc_overrides_usr_share_by_name_and_an_empty_file_hides_a_descriptor(
    tmp_path: Path,
) -> None:
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    descriptor(usr / "40-sb.json", "/sb.fd", "secure-boot", "enrolled-keys", "requires-smm")
    descriptor(usr / "60-plain.json", "/plain.fd")
    assert choose(read_descriptors([usr, etc]), Q35).descriptor.executable == "/sb.fd"  # type: ignore[union-attr]
    etc.mkdir()
    (etc / "40-sb.json").write_text("")
    assert choose(read_descriptors([usr, etc]), Q35).descriptor.executable == "/plain.fd"  # type: ignore[union-attr]
    descriptor(etc / "40-sb.json", "/mine.fd")
    assert choose(read_descriptors([usr, etc]), Q35).descriptor.executable == "/mine.fd"  # type: ignore[union-attr]
    # A lower name in any directory comes first.
    descriptor(etc / "10-first.json", "/first.fd")
    assert [d.executable for d in read_descriptors([usr, etc])] == [
        "/first.fd",
        "/mine.fd",
        "/plain.fd",
    ]


def test_a_domain_that_needs_more_skips_descriptors_that_lack_it() -> None:
    s4 = Needs(arch="x86_64", machine="pc-q35-9.2", s4=True)
    assert DEBIAN12.choose(s4).descriptor is None
    secure = DEBIAN12.choose(Needs(arch="x86_64", machine="pc-q35-9.2", secure_loader=True))
    assert secure.descriptor is not None and secure.descriptor.enrolled_keys
    assert DEBIAN12.choose(Needs(arch="aarch64", machine="virt")).descriptor is None


def test_smm_off_with_a_firmware_that_needs_it_is_a_domain_that_cannot_start() -> None:
    choice = DEBIAN12.choose(Needs(arch="x86_64", machine="pc-q35-9.2", smm_off=True))
    assert choice.problem is not None and "cannot start" in choice.problem


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "Expecting property name"),
        ("[]", "not a JSON object"),
        ('{"mapping": 3}', "mapping is not an object"),
        ('{"targets": [3]}', "a target is not an object"),
    ],
)
def test_a_descriptor_libvirt_cannot_read_is_reported_with_its_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    (tmp_path / "30-bad.json").write_text(text)
    host = HostFirmware(None, dirs=[tmp_path])
    problem = host.choose(Q35).problem
    assert problem is not None and str(tmp_path / "30-bad.json") in problem and reason in problem


def test_a_fifo_or_a_huge_file_as_a_descriptor_neither_hangs_nor_fills_memory(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "20-fifo.json")
    assert HostFirmware(None, dirs=[tmp_path]).choose(Q35).problem is not None
    os.unlink(tmp_path / "20-fifo.json")
    (tmp_path / "20-big.json").write_bytes(b" " * (2 << 20))
    problem = HostFirmware(None, dirs=[tmp_path]).choose(Q35).problem
    assert problem is not None and "larger than 1 MiB" in problem


@pytest.mark.parametrize(
    ("uri", "env", "found"),
    [
        ("qemu:///system", {}, "system"),
        ("qemu+unix:///system?socket=/run/x", {}, "system"),
        ("qemu:///session", {"HOME": "/home/u"}, "session"),
        (None, {"LIBVIRT_DEFAULT_URI": "qemu:///session", "HOME": "/home/u"}, "session"),
        ("qemu+ssh://host/system", {}, None),
        ("qemu://host/system", {}, None),
        ("test:///default", {}, None),
    ],
)
def test_descriptors_are_read_only_for_a_local_qemu_daemon(
    uri: str | None, env: dict[str, str], found: str | None
) -> None:
    host = HostFirmware(uri, env=env)
    descriptors = host.descriptors
    if found is None:
        assert isinstance(descriptors, str) and "cannot be read" in descriptors
    else:
        assert not isinstance(descriptors, str)
        dirs = search_dirs(found == "session", env, env.get("HOME"))
        assert (Path("/home/u/.config/qemu/firmware") in dirs) == (found == "session")


def test_the_fixture_is_the_machines_own_debian_descriptors_when_they_are_installed() -> None:
    # Keeps the fixture honest: on a Debian 12 host with ovmf it is what libvirt reads.
    real = Path("/usr/share/qemu/firmware")
    if not (real / "40-edk2-x86_64-secure-enrolled.json").exists():
        pytest.skip("Debian's ovmf descriptors are not installed")
    mine = read_descriptors([DEBIAN12_DIR])
    theirs = {d.executable: d for d in read_descriptors([real])}
    for d in mine:
        other = theirs.get(d.executable)
        if other is not None:
            assert (other.features, other.targets) == (d.features, d.targets)


# -- what sync may change without being asked ------------------------------------------------


def _parsed(boot: str, secure: Reading) -> Parsed:
    return Parsed(None, False, {"boot": Reading.clean(boot), "secure_boot": secure})


def _vm(boot: str, secure_boot: bool) -> VmDefinition:
    return validate_vm(
        {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": "/d.qcow2",
            "disk_size_gb": 1,
            "boot": boot,
            "network": "none",
            "graphics": "none",
            "secure_boot": secure_boot,
        }
    )


@pytest.mark.parametrize(
    ("boot", "secure", "wanted", "words"),
    [
        ("uefi", Reading.clean(True), _vm("uefi", True), None),
        ("uefi", Reading.clean(False), _vm("uefi", False), None),
        ("bios", Reading.clean(False), _vm("uefi", True), None),
        ("uefi", Reading.clean(False), _vm("bios", False), None),
        ("uefi", Reading.clean(True), _vm("uefi", False), "SECURE BOOT WOULD BE TURNED OFF"),
        ("uefi", Reading.clean(True), _vm("bios", False), "would boot BIOS"),
        ("uefi", Reading.clean(False), _vm("uefi", True), "no Secure Boot keys enrolled"),
        ("uefi", Reading.unsupported("why"), _vm("uefi", True), "cannot tell what it boots"),
        ("uefi", Reading.unsupported("why"), _vm("bios", False), "THE FIRMWARE WOULD CHANGE"),
    ],
)
def test_sync_asks_before_it_changes_the_kind_of_firmware_of_a_uefi_domain(
    boot: str, secure: Reading, wanted: VmDefinition, words: str | None
) -> None:
    found = firmware_change(_parsed(boot, secure), wanted)
    if words is None:
        assert found is None
    else:
        assert found is not None and words in found


def test_unknown_firmware_is_no_restart_pending() -> None:
    """Over a remote URI an unpinned domain's firmware cannot be read; its running definition
    names the loader libvirt chose. That difference is not a change the next boot makes."""
    from tests.unit.test_domain_xml import MAPPING

    unpinned = LIBVIRT9_XML.replace("@NAME@", "vm").replace("@DISK@", "/vm.qcow2")
    running = unpinned.replace(
        "<os firmware='efi'>",
        "<os><loader readonly='yes' secure='yes' type='pflash'>/OVMF_CODE_4M.ms.fd</loader>",
    )
    remote = DomainContext(
        name="vm", disk_path="/vm.qcow2", facts={"firmware": HostFirmware("qemu+ssh://h/system")}
    )
    persistent = MAPPING.parse(unpinned, remote)
    assert not persistent.readings["secure_boot"].has_value
    live = Reply(("dumpxml", "vm"), running, "", True)
    assert "secure_boot" not in _pending(MAPPING, live, persistent, remote)
