"""The ``os`` field against the real libvirt daemon: a domain virt-install made for an OS is
captured with its ``os``, and sync then leaves it byte for byte as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live.test_capture_live import (
    assert_sync_is_a_no_op,
    capture,
    disk,
    manifest,
    virt_install,
)
from tests.livelib import Lab

pytestmark = [
    pytest.mark.libvirtd,
    pytest.mark.skipif(
        not Path("/usr/share/osinfo/os").is_dir(), reason="osinfo-db is not installed here"
    ),
]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()


def test_virt_install_guests_are_captured_with_their_os(lab: Lab, tmp_path: Path) -> None:
    oses = {lab.name(short_id.replace(".", "-")): short_id for short_id in ("win11", "fedora37")}
    for name, short_id in oses.items():
        lab.define(
            virt_install(
                name,
                disk(tmp_path, name),
                "--network",
                "network=default",
                directory=tmp_path,
                osinfo=short_id,
                graphics="spice",
            )
        )
    directory = tmp_path / "manifests"
    report = capture(directory, *oses)
    # virt-install turns Hyper-V on for Windows under software emulation too, which bkt's
    # hyperv refuses (such a guest cannot start): that one is skipped, with the reason. The
    # equivalence tests capture virt-install's Windows guests under KVM.
    (windows,) = (name for name, short_id in oses.items() if short_id == "win11")
    kinds = {e.name: e.kind for e in report.entries}
    assert kinds == dict.fromkeys(oses, "added") | {windows: "skipped"}
    (skipped,) = (e for e in report.entries if e.name == windows)
    assert any('need virt_type "kvm"' in r for r in skipped.reasons), skipped.reasons
    added = {name: short_id for name, short_id in oses.items() if name != windows}
    vms = manifest(directory)["vms"]
    assert {name: vms[name].get("os") for name in added} == added
    assert_sync_is_a_no_op(lab, directory, list(added))
