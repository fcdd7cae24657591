"""The knowledge of ``bkt doctor`` that a real daemon cannot show on demand here: KVM that
libvirt offers but QEMU cannot run (the nested-host assertion), KVM libvirt does not offer
at all, missing firmware and swtpm; and the pure parts (qemu.conf, URIs, ACLs). The real
daemon's answers are in ``tests/live/test_doctor_live.py``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bkt_vm_plugin.doctor import (
    HostFacts,
    Place,
    QemuUser,
    allowed,
    doctor,
    parse_acl,
    parse_qemu_conf,
    vm_problems,
)
from bkt_vm_plugin.model import validate_vm
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import DEFAULT_DOMCAPABILITIES, FakeLibvirt, ManifestDir, vm_subsystem
from bkt_vm_plugin.virsh import Reply

#: What QEMU prints on a nested host whose KVM cannot set the guest's MSRs: libvirt's
#: capabilities offer kvm, and the guest dies as it starts.
MSR_ASSERTION = (
    "error: Failed to create domain from /tmp/x/kvm.xml\n"
    "error: internal error: qemu unexpectedly closed the monitor: "
    "2026-01-01T00:00:00.000000Z qemu-system-x86_64: ../../target/i386/kvm/kvm.c:2893: "
    "kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n"
)
NO_KVM = (
    "error: invalid argument: KVM is not supported by '/usr/bin/qemu-system-x86_64' on this host\n"
)


def sick(command: str, target: str | None, said: str) -> FakeLibvirt:
    """A libvirt where ``command`` (for ``target``, else always) prints ``said`` on stderr
    and fails."""
    libvirt = FakeLibvirt()
    libvirt.fail(command, target, said)
    return libvirt


def vm(disks: Path, name: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(disks / f"{name}.qcow2"),
        "disk_size_gb": 1,
        "create_if_missing": True,
        "boot": "bios",
        "network": "none",
        "graphics": "none",
    }
    base.update(fields)
    return base


def subsystem(tmp_path: Path, libvirt: FakeLibvirt, vms: dict[str, object]) -> VmSubsystem:
    manifests = ManifestDir(tmp_path / "manifests")
    manifests.write(vms)
    return vm_subsystem(libvirt.host(manifests))


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        (("create", None, MSR_ASSERTION), "kvm_buf_set_msrs: Assertion"),
        (("domcapabilities", "kvm", NO_KVM), "KVM is not supported"),
    ],
    ids=["qemu-assertion", "no-kvm-domains"],
)
def test_sync_warns_before_defining_a_kvm_vm_where_kvm_is_unusable(
    tmp_path: Path, broken: tuple[str, str | None, str], said: str
) -> None:
    libvirt = sick(*broken)
    sub = subsystem(
        tmp_path,
        libvirt,
        {"fast": vm(tmp_path, "fast"), "slow": vm(tmp_path, "slow", virt_type="qemu")},
    )
    report = sub.sync()
    entries = {e.name: e for e in report.plan.entries}
    (warning,) = entries["fast"].warnings
    assert warning.startswith("KVM is not usable here: "), warning
    assert said in warning
    assert '(fix: set "virt_type": "qemu"' in warning
    assert entries["slow"].warnings == (), "a qemu VM does not care"
    # The warning is part of the plan, read before the defines (one process for it).
    kinds = [[c[0] for c in process] for process in libvirt.processes]
    checks = next(i for i, p in enumerate(kinds) if "domcapabilities" in p)
    assert checks < next(i for i, p in enumerate(kinds) if "define" in p)
    assert json.dumps(report.to_json()).count("KVM is not usable here") == 1


def test_a_sync_that_defines_nothing_checks_nothing(tmp_path: Path) -> None:
    libvirt = sick("create", None, MSR_ASSERTION)
    sub = subsystem(tmp_path, libvirt, {"fast": vm(tmp_path, "fast")})
    sub.sync()
    libvirt.processes.clear()
    report = sub.sync()
    assert [e.action for e in report.plan.entries] == ["unchanged"]
    assert len(libvirt.processes) == 1, libvirt.processes


def test_doctor_fails_kvm_naming_the_vms_that_ask_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    libvirt = sick("create", None, MSR_ASSERTION)
    sub = subsystem(
        tmp_path,
        libvirt,
        {
            "b": vm(tmp_path, "b"),
            "a": vm(tmp_path, "a", boot="uefi"),
            "q": vm(tmp_path, "q", virt_type="qemu"),
        },
    )
    report = doctor(sub)
    assert len(libvirt.processes) == 1, "everything libvirt knows, in one virsh process"
    checks = {c.check: c for c in report.checks}
    kvm = checks["kvm"]
    assert kvm.status == "fail"
    assert kvm.vms == ("a", "b")
    assert "kvm_buf_set_msrs" in kvm.message and kvm.message.endswith("(VMs a, b)")
    assert kvm.hint is not None and '"virt_type": "qemu"' in kvm.hint
    assert [c.check for c in report.failed] == ["kvm"]
    assert report.to_json()["ok"] is False


def test_doctor_warns_only_when_no_vm_needs_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    bare = "<domainCapabilities><os supported='yes'/><devices/></domainCapabilities>"
    libvirt = FakeLibvirt(domcapabilities={"kvm": bare, "qemu": bare})
    libvirt.fail("domcapabilities", "kvm", NO_KVM)
    quiet = subsystem(tmp_path, libvirt, {"q": vm(tmp_path, "q", virt_type="qemu")})
    checks = {c.check: c for c in doctor(quiet).checks}
    assert {k: checks[k].status for k in ("kvm", "uefi", "secure-boot", "swtpm")} == {
        "kvm": "warn",
        "uefi": "warn",
        "secure-boot": "warn",
        "swtpm": "warn",
    }
    needy = subsystem(
        tmp_path, libvirt, {"q": vm(tmp_path, "q", virt_type="qemu", boot="uefi", tpm="2.0")}
    )
    checks = {c.check: c for c in doctor(needy).checks}
    assert checks["uefi"].status == "fail" and checks["uefi"].vms == ("q",)
    assert checks["uefi"].hint == "install UEFI firmware for QEMU (Debian: apt-get install ovmf)"
    assert checks["swtpm"].status == "fail"
    assert checks["swtpm"].message.startswith("libvirt finds no swtpm")


def test_an_unreachable_libvirt_is_one_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    down = FakeLibvirt()
    down.disconnect()
    report = doctor(subsystem(tmp_path, down, {}))
    assert [(c.check, c.status) for c in report.checks] == [
        ("virsh", "ok"),
        ("manifest", "ok"),
        ("libvirt", "fail"),
    ]


def test_without_virsh_nothing_else_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    libvirt = FakeLibvirt()
    report = doctor(subsystem(tmp_path, libvirt, {}))
    ((check),) = report.checks
    assert (check.check, check.status) == ("virsh", "fail")
    assert check.hint == "install virsh (Debian: apt-get install libvirt-clients)"
    assert libvirt.processes == []
    assert libvirt.qemu_img == []


def test_qemu_conf_settings() -> None:
    text = """
# user = "root"
user = "qemu"   # trailing comment
  group="+107"
dynamic_ownership = 0
security_driver = "none"
"""
    assert parse_qemu_conf(text) == {"user": "qemu", "group": "+107", "dynamic_ownership": "0"}
    assert parse_qemu_conf('#user = "root"\n') == {}


@pytest.mark.parametrize(
    ("uri", "local", "system"),
    [
        ("qemu:///system", True, True),
        ("qemu:///session", True, False),
        ("qemu+unix:///system?socket=/run/x", True, True),
        ("qemu+ssh://root@far/system", False, True),
        ("qemu://far/system", False, True),
        ("qemu+tcp://localhost/system", False, True),
    ],
)
def test_where_a_uri_points(uri: str, local: bool, system: bool) -> None:
    place = Place.of(uri)
    assert (place.local, place.system) == (local, system)


def acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


ANY = 0xFFFFFFFF


def test_acl_entries_round_trip_and_junk_is_no_acl() -> None:
    entries = [(1, 7, ANY), (2, 1, 64055), (4, 5, ANY), (0x10, 5, ANY), (0x20, 0, ANY)]
    assert parse_acl(acl(*entries)) == entries
    assert parse_acl(b"") is None
    assert parse_acl(b"\x01\x00\x00\x00") is None
    assert parse_acl(acl(*entries)[:-1]) is None


@pytest.mark.parametrize(
    ("mode", "entries", "uid", "gids", "want", "expected"),
    [
        (0o700, None, 64055, {108}, 1, False),  # /root
        (0o701, None, 64055, {999}, 1, True),
        (0o701, None, 64055, {108}, 1, False),  # the group class matches and denies
        (0o750, None, 64055, {108}, 1, True),  # group kvm may search
        (0o075, None, 0, {108}, 1, False),  # the owner's own bits decide, not other's
        # A named user entry grants search, unless the mask (the mode's group bits) takes
        # it away.
        (0o710, [(1, 7, ANY), (2, 1, 64055), (4, 0, ANY), (0x10, 1, ANY), (0x20, 0, ANY)],
         64055, {108}, 1, True),
        (0o700, [(1, 7, ANY), (2, 1, 64055), (4, 0, ANY), (0x10, 0, ANY), (0x20, 0, ANY)],
         64055, {108}, 1, False),
        # A matching group entry that denies shadows other's grant.
        (0o771, [(1, 7, ANY), (4, 0, ANY), (8, 0, 108), (0x10, 7, ANY), (0x20, 1, ANY)],
         64055, {108}, 1, False),
        (0o770, [(1, 7, ANY), (4, 0, ANY), (8, 5, 108), (0x10, 7, ANY), (0x20, 0, ANY)],
         64055, {108}, 5, True),
    ],
)  # fmt: skip
def test_permission_rule(
    mode: int,
    entries: list[tuple[int, int, int]] | None,
    uid: int,
    gids: set[int],
    want: int,
    expected: bool,
) -> None:
    assert allowed((mode, 0, 108), entries, uid, gids, want) is expected


def test_vm_problems_of_a_healthy_host_are_none(tmp_path: Path) -> None:
    facts = HostFacts(
        domcaps={"kvm": Reply(("domcapabilities",), DEFAULT_DOMCAPABILITIES, "", True)},
        probes={"kvm": Reply(("create",), "", "", True), "smm": Reply(("create",), "", "", True)},
        networks=(
            Reply(("net-list",), "default\n", "", True),
            Reply(("net-list",), "default\n", "", True),
            Reply(("net-list",), "default\n", "", True),
        ),
    )
    definition = validate_vm(
        vm(tmp_path, "a", boot="uefi", secure_boot=True, tpm="2.0", network="default")
    )
    ctx = resolve_context("a", definition, home=None, iso_cache="/c", exists=lambda p: False)
    qemu = QemuUser("nobody", 65534, frozenset({65534}))
    assert vm_problems(facts, Place.of("qemu:///session"), qemu, definition, ctx) == []
