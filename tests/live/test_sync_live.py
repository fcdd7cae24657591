"""sync, status, start and stop against the real libvirtd, through the CLI as a user runs it.

Every domain has a unique name and is removed afterwards even when a test fails."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import RunBkt
from tests.livelib import (
    UNREACHABLE,
    define_plain_domain,
    domain_names,
    domains,
    inactive_xml,
    traced,
    unique_name,
    virsh,
    vm,
    write_vms,
)

pytestmark = pytest.mark.libvirtd


def element(xml: str, pattern: str) -> str:
    found = re.search(pattern, xml)
    assert found, f"{pattern} not in {xml}"
    return found.group(0)


def test_create_then_a_second_sync_defines_nothing(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    a, b = sorted([unique_name("create"), unique_name("create")])
    with domains(a, b):
        write_vms(
            tmp_path / "manifests",
            {
                a: vm(disks, a),
                b: vm(disks, b, boot="uefi", tpm="2.0", graphics="spice", autostart=True),
            },
        )
        result = bkt("vm", "sync", "-vv")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"+ create {a}\n" in result.stdout and f"+ create {b}\n" in result.stdout
        assert "    autostart: false -> true\n" in result.stdout
        assert result.stdout.endswith("2 created, 0 updated, 0 unchanged, 0 failed\n")
        processes = traced(result.stderr)
        # observe, the storage pools (read because disks are created: one or two processes),
        # the host checks (because VMs are defined), define, read back, autostart: the same
        # virsh processes for any number of VMs.
        others = [p for p in processes if not p[0].startswith("pool-")]
        assert [p[0].split()[0] for p in others] == [
            "list", "domcapabilities", "define", "list", "autostart"
        ]  # fmt: skip
        assert [c.split()[0] for c in others[2]] == ["define", "define"]
        assert (disks / f"{a}.qcow2").exists()
        assert virsh("list", "--all", "--name", "--autostart").split() == [b]

        before = (inactive_xml(a), inactive_xml(b))
        again = bkt("vm", "sync", "-vv")
        assert again.returncode == 0
        assert again.stdout == f"= unchanged {a}\n= unchanged {b}\n"
        assert len(traced(again.stderr)) == 1, "a no-op sync is one read and no define"
        assert (inactive_xml(a), inactive_xml(b)) == before

        quiet = bkt("vm", "sync")
        assert (quiet.returncode, quiet.stdout) == (0, "nothing to do: 2 VMs in sync\n")


def test_update_keeps_what_the_manifest_does_not_own(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("update")
    with domains(name):
        # The network is defined on every libvirt; it need not run, since nothing starts.
        write_vms(
            tmp_path / "manifests", {name: vm(disks, name, graphics="vnc", network="default")}
        )
        assert bkt("vm", "sync").returncode == 0
        # A person edits the domain by hand, as with `virsh edit`: a virtio RNG and a VNC
        # password.
        xml = inactive_xml(name)
        edited = xml.replace(
            "</devices>",
            "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n</devices>",
        ).replace(
            "<graphics type='vnc' port='-1' autoport='yes'",
            "<graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'",
        )
        assert "s3cret" in edited
        (tmp_path / "edited.xml").write_text(edited)
        virsh("define", str(tmp_path / "edited.xml"))
        uuid = element(xml, r"<uuid>[^<]+</uuid>")
        mac = element(xml, r"<mac address='[^']+'/>")

        write_vms(
            tmp_path / "manifests",
            {
                name: vm(
                    disks,
                    name,
                    memory_gb=2,
                    vcpus=2,
                    graphics="spice",
                    tpm="2.0",
                    boot="uefi",
                    network="bridge:bkt-test-br0",
                )
            },
        )
        result = bkt("vm", "sync")
        assert result.returncode == 0, result.stdout + result.stderr
        for line in [
            f"~ update {name}\n",
            "    memory_gb: 1 -> 2\n",
            "    vcpus: 1 -> 2\n",
            "    boot: bios -> uefi\n",
            "    tpm: none -> 2.0\n",
            "    network: default -> bridge:bkt-test-br0\n",
            "    graphics: vnc -> spice\n",
        ]:
            assert line in result.stdout, result.stdout
        assert "note: the firmware changes from BIOS to UEFI" in result.stdout

        after = inactive_xml(name)
        assert element(after, r"<uuid>[^<]+</uuid>") == uuid
        assert element(after, r"<mac address='[^']+'/>") == mac, "the NIC keeps its MAC"
        assert "<source bridge='bkt-test-br0'/>" in after
        assert "<rng model='virtio'>" in after, "the hand-added device is kept"
        assert "passwd='s3cret'" in after, "the graphics password is kept"
        assert "<memory unit='KiB'>2097152</memory>" in after
        assert "<graphics type='spice'" in after and "type='vnc'" not in after
        assert "<tpm model='tpm-crb'>" in after
        assert "<os firmware='efi'>" in after
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("stopped  in sync"), status.stdout


def test_a_running_vm_is_updated_for_its_next_boot(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("running")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name)})
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "start", name).stdout == f"{name}: started\n"
        assert bkt("vm", "start", name).stdout == f"{name}: already running\n"

        write_vms(tmp_path / "manifests", {name: vm(disks, name, memory_gb=2)})
        result = bkt("vm", "sync")
        assert result.returncode == 0
        assert (
            f"note: {name} is running; the new definition takes effect at its next boot"
            in result.stdout
        )
        assert "<memory unit='KiB'>2097152</memory>" in inactive_xml(name)
        assert "<memory unit='KiB'>1048576</memory>" in virsh("dumpxml", name), (
            "the live domain keeps its memory"
        )
        # Until it restarts, status says what the next boot changes: the definitions in one
        # process, and the running one of each VM that runs in a second.
        status = bkt("-vv", "vm", "status", name)
        assert status.stdout.splitlines()[1].endswith(
            "running  in sync (restart pending: memory_gb)"
        ), status.stdout
        processes = traced(status.stderr)
        assert processes[1:] == [[f"dumpxml --security-info --domain {name}"]], status.stderr
        assert f"dumpxml --inactive --security-info --domain {name}" in processes[0]
        assert not any("dumpxml --security-info" in c for c in processes[0])
        (row,) = json.loads(bkt("vm", "status", "--json", name).stdout)["vms"]
        assert (row["in_sync"], row["pending_restart"]) == (True, ["memory_gb"])
        report = json.loads(bkt("vm", "sync", "--dry-run", "--json").stdout)
        assert report["plan"]["vms"] == [{"name": name, "action": "unchanged"}]
        # After a restart nothing is pending.
        assert bkt("vm", "stop", "--force", name).returncode == 0
        assert bkt("vm", "start", name).returncode == 0
        assert bkt("vm", "status", name).stdout.splitlines()[1].endswith("running  in sync")


def test_status_shows_running_stopped_missing_and_unmanaged(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    running, stopped, missing, other = (
        unique_name(t) for t in ("st-run", "st-stop", "st-miss", "st-other")
    )
    with domains(running, stopped, other):
        define_plain_domain(other, tmp_path)
        vms = {running: vm(disks, running), stopped: vm(disks, stopped)}
        write_vms(tmp_path / "manifests", vms)
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "start", running).returncode == 0
        # The manifest now wants more memory for `stopped` and knows a VM libvirt has not.
        vms[stopped] = vm(disks, stopped, memory_gb=2)
        vms[missing] = vm(disks, missing)
        write_vms(tmp_path / "manifests", vms)

        result = bkt("vm", "status", "--all", "--json")
        assert result.returncode == 0
        rows = {r["name"]: r for r in json.loads(result.stdout)["vms"]}
        assert rows[running] == {
            "name": running, "state": "running", "managed": True, "in_sync": True, "drift": [],
            "pending_restart": [],
        }  # fmt: skip
        assert rows[stopped] == {
            "name": stopped,
            "state": "stopped",
            "managed": True,
            "in_sync": False,
            "drift": ["memory_gb"],
            "pending_restart": [],
        }
        assert rows[missing] == {
            "name": missing, "state": "missing", "managed": True, "in_sync": None, "drift": [],
            "pending_restart": [],
        }  # fmt: skip
        assert rows[other] == {
            "name": other, "state": "stopped", "managed": False, "in_sync": None, "drift": [],
            "pending_restart": [],
        }  # fmt: skip

        table = bkt("vm", "status")
        assert table.returncode == 0, "drift is not an error"
        lines = table.stdout.splitlines()
        assert lines[0].startswith("NAME") and lines[0].endswith("STATE    SYNC")
        assert any(
            line.startswith(stopped) and line.endswith("stopped  drift: memory_gb")
            for line in lines
        )
        assert any(line.startswith(missing) and line.endswith("missing  -") for line in lines)
        assert other not in table.stdout, "unmanaged domains only with --all or by name"

        named = bkt("vm", "status", other)
        assert named.stdout.splitlines()[-1].endswith("stopped  unmanaged")
        nowhere = bkt("vm", "status", "bkt-test-nowhere")
        assert nowhere.returncode == 2
        assert nowhere.stderr == (
            f"error: VM bkt-test-nowhere is not in {tmp_path / 'manifests' / 'vms.json'}\n"
            "hint: it is not a libvirt domain either; `bkt vm status --all` lists the VMs\n"
        )
        assert (
            bkt("vm", "stop", running, "--force").stdout == f"{running}: powered off (destroyed)\n"
        )


def test_one_broken_vm_does_not_stop_the_others(bkt: RunBkt, tmp_path: Path, disks: Path) -> None:
    good, broken = sorted([unique_name("good"), unique_name("broken")])
    missing_disk = disks / "not-there.qcow2"
    with domains(good, broken):
        write_vms(
            tmp_path / "manifests",
            {
                good: vm(disks, good),
                broken: vm(disks, broken, create_if_missing=False, disk_path=str(missing_disk)),
            },
        )
        dry = bkt("vm", "sync", "--dry-run")
        assert dry.returncode == 1, dry.stdout + dry.stderr
        assert dry.stderr.endswith(f"error: could not sync 1 VM: {broken}\n")
        assert good not in domain_names(), "a dry run changes nothing"

        result = bkt("vm", "sync")
        assert result.returncode == 1
        assert f"+ create {good}\n" in result.stdout
        assert f"! error {broken}: disk {missing_disk} does not exist" in result.stdout
        assert result.stdout.endswith("1 created, 0 updated, 0 unchanged, 1 failed\n")
        assert result.stderr.endswith(f"error: could not sync 1 VM: {broken}\n")
        assert virsh("domstate", good).strip() == "shut off"
        assert broken not in domain_names()


def test_domains_outside_the_manifest_are_left_byte_identical(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    managed, other = unique_name("mine"), unique_name("theirs")
    with domains(managed, other):
        define_plain_domain(other, tmp_path)
        before = inactive_xml(other)
        write_vms(tmp_path / "manifests", {managed: vm(disks, managed)})
        assert bkt("vm", "sync").returncode == 0
        write_vms(tmp_path / "manifests", {managed: vm(disks, managed, vcpus=2)})
        assert bkt("sync").returncode == 0
        assert bkt("status").returncode == 0
        assert inactive_xml(other) == before


def test_sync_with_libvirt_unreachable_is_a_clear_error(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    write_vms(tmp_path / "manifests", {"anything": vm(disks, "anything")})
    result = bkt("vm", "sync", connect=UNREACHABLE)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: `virsh -q -c {UNREACHABLE} <4 commands>` failed (exit status 1): "
        "failed to connect to the hypervisor"
    ), result.stderr
    assert result.stderr.endswith(
        "hint: start libvirtd (or virtqemud), or pass --connect qemu:///session\n"
    )
    assert "Traceback" not in result.stderr
    assert not (disks / "anything.qcow2").exists(), "nothing was created"


def test_turning_secure_boot_on_says_how_to_enrol_the_keys(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("secure")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name, boot="uefi")})
        assert bkt("vm", "sync").returncode == 0
        write_vms(tmp_path / "manifests", {name: vm(disks, name, boot="uefi", secure_boot=True)})
        # Its NVRAM stays, without keys: a change of firmware that sync makes only when asked.
        refused = bkt("vm", "sync")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "THE FIRMWARE WOULD CHANGE" in refused.stdout
        result = bkt("vm", "sync", "--allow-firmware-change")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "    secure_boot: false -> true\n" in result.stdout
        assert f"`virsh start --reset-nvram {name}`" in result.stdout
        assert "in sync" in bkt("vm", "status", name).stdout


def test_check_exits_1_when_anything_would_change(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("check")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name)})
        result = bkt("vm", "sync", "--check")
        assert result.returncode == 1
        assert result.stderr.splitlines()[-2:] == [
            "error: libvirt does not match the manifest",
            "hint: `bkt vm sync` makes these changes",
        ]
        assert name not in domain_names()
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "sync", "--check").returncode == 0


def test_sync_json_is_the_documented_shape(bkt: RunBkt, tmp_path: Path, disks: Path) -> None:
    name = unique_name("json")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name, autostart=True)})
        result = bkt("vm", "sync", "--json")
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1
        report = json.loads(result.stdout)
        assert report == {
            "dry_run": False,
            "plan": {
                "vms": [
                    {
                        "name": name,
                        "action": "create",
                        "changes": [{"field": "autostart", "old": "false", "new": "true"}],
                        "create_disk": {
                            "path": str(disks / f"{name}.qcow2"),
                            "size_gb": 1,
                            "format": "qcow2",
                        },
                    }
                ]
            },
            "results": [{"name": name, "result": "created"}],
            "summary": {"created": 1, "updated": 0, "unchanged": 0, "failed": 0},
        }


def test_start_stop_and_the_timeout_that_suggests_force(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    name, other = unique_name("ctl"), unique_name("ctl-other")
    with domains(name, other):
        define_plain_domain(other, tmp_path)
        write_vms(tmp_path / "manifests", {name: vm(disks, name)})
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "stop", name).stdout == f"{name}: already stopped\n"
        assert bkt("vm", "start", name).returncode == 0
        # The guest has no OS: it ignores the ACPI request, so the wait ends in the timeout.
        slow = bkt("vm", "stop", name, "--timeout", "1")
        assert slow.returncode == 1
        assert slow.stderr.splitlines() == [
            f"error: VM {name} did not shut down within 1 s",
            "hint: the guest may not react to ACPI shutdown; "
            f"`bkt vm stop {name} --force` powers it off at once",
        ]
        assert virsh("domstate", name).strip() == "running"
        assert bkt("vm", "stop", name, "--force").returncode == 0
        assert virsh("domstate", name).strip() == "shut off"

        refused = bkt("vm", "start", other)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1] == (
            "hint: it is a libvirt domain: pass --unmanaged to act on it anyway"
        )
        assert bkt("vm", "start", other, "--unmanaged").stdout == f"{other}: started\n"
        assert bkt("vm", "stop", other, "--unmanaged", "--force").returncode == 0
        gone = bkt("vm", "start", "bkt-test-nowhere")
        assert gone.returncode == 2
        assert gone.stderr.splitlines()[-1] == "hint: `bkt vm status --all` lists the VMs"


def test_a_graceful_stop_of_a_guest_that_shuts_down(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    """virsh shutdown on a guest without ACPI support is refused by qemu only sometimes; a
    guest that powers off by itself while bkt waits must end in `shut down`."""
    name = unique_name("graceful")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name)})
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "start", name).returncode == 0

        def power_off_soon() -> None:
            time.sleep(1.5)
            virsh("destroy", name, check=False)

        thread = threading.Thread(target=power_off_soon)
        thread.start()
        result = bkt("vm", "stop", name, "--timeout", "30")
        thread.join()
        assert (result.returncode, result.stdout) == (0, f"{name}: shut down\n"), result.stderr


def test_a_running_host_model_vm_has_no_restart_pending(
    bkt: RunBkt, tmp_path: Path, disks: Path
) -> None:
    # libvirt writes the CPU it computed for host-model into the running definition.
    name = unique_name("hostmodel")
    with domains(name):
        write_vms(tmp_path / "manifests", {name: vm(disks, name, cpu_model="host-model")})
        assert bkt("vm", "sync").returncode == 0
        assert bkt("vm", "start", name).returncode == 0
        assert "host-model" not in virsh("dumpxml", name)
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("running  in sync"), status.stdout
        (row,) = json.loads(bkt("vm", "status", "--json", name).stdout)["vms"]
        assert row["pending_restart"] == []
