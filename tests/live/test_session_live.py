"""User-mode networking on any URI, and a VM of an unprivileged user's own session daemon.

The second test runs only against ``qemu:///session`` (CI runs the live tests a second time
as an unprivileged user, with ``BKT_TEST_URI=qemu:///session``): a VM whose disk bkt creates
under the user's home, with user-mode networking (the only network such a VM can have
without help from root), synced, started, stopped and captured by that user.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import RunBkt
from tests.livelib import URI, domains, inactive_xml, unique_name, vm, write_vms

pytestmark = pytest.mark.libvirtd

SESSION = URI.rstrip("/").endswith("/session")


def bkt(run_bkt: RunBkt, directory: Path, home: Path, *args: str) -> tuple[int, str, str]:
    done = run_bkt(
        "-c", URI, "-C", str(directory), *args, env={"NO_COLOR": "1", "HOME": str(home)}
    )
    return done.returncode, done.stdout, done.stderr


def interface_types(xml: str) -> list[str | None]:
    return [i.get("type") for i in etree.fromstring(xml.encode()).iterfind("devices/interface")]


def test_user_mode_networking_is_synced_read_back_and_captured(
    run_bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("usernet")
    directory = tmp_path / "manifests"
    with domains(name):
        write_vms(directory, {name: vm(disks, name, network="user")})
        code, out, err = bkt(run_bkt, directory, tmp_path, "vm", "sync")
        assert code == 0, out + err
        assert interface_types(inactive_xml(name)) == ["user"]
        # Switching to none and back touches only the interface.
        write_vms(directory, {name: vm(disks, name, network="none")})
        assert bkt(run_bkt, directory, tmp_path, "vm", "sync")[0] == 0
        assert interface_types(inactive_xml(name)) == []
        write_vms(directory, {name: vm(disks, name, network="user")})
        assert bkt(run_bkt, directory, tmp_path, "vm", "sync")[0] == 0
        before = inactive_xml(name)
        # Captured into a fresh manifest, it is network "user" again, and in sync.
        fresh = tmp_path / "fresh"
        code, out, err = bkt(run_bkt, fresh, tmp_path, "vm", "capture", name)
        assert code == 0, out + err
        captured = json.loads((fresh / "vms.json").read_text())["vms"][name]
        assert captured["network"] == "user"
        code, out, err = bkt(run_bkt, fresh, tmp_path, "vm", "sync", "--check")
        assert code == 0, out + err
        assert inactive_xml(name) == before


@pytest.mark.skipif(not SESSION, reason="needs BKT_TEST_URI=qemu:///session (CI's user run)")
def test_a_session_vm_lives_in_the_users_home_and_runs_as_the_user(
    run_bkt: RunBkt, tmp_path: Path
) -> None:
    assert os.geteuid() != 0, "the session run is for an unprivileged user"
    home = tmp_path / "home"
    home.mkdir()
    name = unique_name("session")
    directory = home / "dotfiles" / "manifests"
    entry = vm(home, name, network="user", disk_path=f"~/vms/{name}.qcow2")
    (home / "vms").mkdir()
    with domains(name):
        write_vms(directory, {name: entry})
        code, out, err = bkt(run_bkt, directory, home, "vm", "sync")
        assert code == 0, out + err
        disk = home / "vms" / f"{name}.qcow2"
        # No storage pool in a fresh session: qemu-img made it, as the user.
        info = disk.stat()
        assert info.st_uid == os.geteuid() and stat.S_ISREG(info.st_mode)
        assert "in storage pool" not in out
        assert f"<source file='{disk}'/>" in inactive_xml(name)
        assert bkt(run_bkt, directory, home, "vm", "start", name)[0] == 0
        code, out, _ = bkt(run_bkt, directory, home, "vm", "status")
        assert code == 0 and re.search(rf"^{name} +running +in sync$", out, re.M), out
        # QEMU runs as the user, not as libvirt-qemu.
        assert qemu_owner(name) == os.geteuid()
        code, out, err = bkt(run_bkt, directory, home, "vm", "capture", name, "--dry-run")
        assert code == 0 and "unchanged" in out, out + err
        assert bkt(run_bkt, directory, home, "vm", "stop", name, "--force")[0] == 0
        code, out, _ = bkt(run_bkt, directory, home, "vm", "status", "--json")
        assert json.loads(out)["vms"][0]["state"] == "stopped"


def qemu_owner(name: str) -> int | None:
    """The uid of the QEMU process that runs domain ``name``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"guest={name},".encode() in (proc / "cmdline").read_bytes():
                return proc.stat().st_uid
        except OSError:
            continue
    return None
