"""The test kit itself: FakeLibvirt answers the processes bkt starts as virsh and qemu-img
answer them (what the real daemon answers to the same batch is compared in
``tests/live/test_testing_kit_live.py``), and the pytest fixtures are wired to it."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bkt_core.errors import CommandError
from bkt_core.host import Host
from bkt_vm_plugin import testing
from bkt_vm_plugin.provision import ProvisionContext, pool_target, volume_format_of
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, split_virsh_line, vm_subsystem
from bkt_vm_plugin.virsh import CONNECT_HINT, DomainState, Reply, Virsh, memory_files, quote

ODD = 'it\'s a;#"name" $HOME'


def domain_xml(name: str, uuid: str | None = None, memory: int = 65536) -> str:
    uuid_line = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (
        f"<domain type='qemu'><name>{name.replace('&', '&amp;').replace('<', '&lt;')}</name>"
        f"{uuid_line}<memory unit='KiB'>{memory}</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


def batch(fake: FakeLibvirt, *commands: list[str], files: tuple[str, ...] = ()) -> list[Reply]:
    """``commands`` in one virsh process; ``{0}``, ``{1}``... in an argument are the paths of
    in-memory files holding ``files``."""
    with memory_files(files) as paths:
        return Virsh(fake, "qemu:///system").batch(
            [[arg.format(*paths) for arg in command] for command in commands]
        )


# -- the virsh command language -------------------------------------------------------------


def test_a_batch_line_splits_as_virsh_splits_it() -> None:
    line = " ; ".join(
        f"echo -- {quote('m')} ; {quote('dumpxml')} {quote('--domain')} {quote(arg)}"
        for arg in (ODD, "back\\slash", "new\nline")
    )
    assert split_virsh_line(line)[1::2] == [
        ["dumpxml", "--domain", ODD],
        ["dumpxml", "--domain", "back\\slash"],
        ["dumpxml", "--domain", "new\nline"],
    ]
    assert split_virsh_line('a "b\\"c" d\\ e # rest ; f') == [["a", 'b"c', "d e"]]
    for broken in ("echo 'open", 'echo "open', "echo \\"):
        with pytest.raises(ValueError):
            split_virsh_line(broken)


# -- domains ------------------------------------------------------------------------------------


def test_define_list_dumpxml_domstate_undefine_in_one_batch() -> None:
    fake = FakeLibvirt()
    xml = domain_xml(ODD)
    defined, listed, dumped, state, undefined, gone = batch(
        fake,
        ["define", "--file", "{0}"],
        ["list", "--all", "--name"],
        ["dumpxml", "--inactive", "--security-info", "--domain", ODD],
        ["domstate", "--domain", ODD],
        ["undefine", "--nvram", "--domain", ODD],
        ["domstate", "--domain", ODD],
        files=(xml,),
    )
    assert defined.ok and defined.stdout == ""
    assert [line for line in listed.stdout.splitlines() if line] == [ODD]
    assert dumped.stdout == xml, "the XML is kept as it was given"
    assert DomainState.parse(state.stdout) is DomainState.SHUT_OFF
    assert undefined.ok
    assert not gone.ok and gone.message == f"failed to get domain '{ODD}'"
    assert fake.domains == {}
    assert [c[0] for c in fake.commands()] == [
        "define", "list", "dumpxml", "domstate", "undefine", "domstate",
    ]  # fmt: skip
    assert len(fake.processes) == 1


def test_malformed_xml_fails_its_define_only() -> None:
    fake = FakeLibvirt()
    bad, good, no_name, not_domain = batch(
        fake,
        ["define", "--file", "{0}"],
        ["define", "--file", "{1}"],
        ["define", "--file", "{2}"],
        ["define", "--file", "{3}"],
        files=(
            "<domain type='qemu'><name>x",
            domain_xml("good"),
            "<domain type='qemu'><memory>1</memory></domain>",
            "<pool type='dir'><name>p</name></pool>",
        ),
    )
    assert not bad.ok and bad.message.startswith("Failed to define domain from /proc/")
    assert "(domain_definition):1:" in bad.message
    assert good.ok
    assert no_name.message.endswith("missing name information")
    assert not_domain.message.endswith("unexpected root element <pool>, expecting <domain>")
    assert list(fake.domains) == ["good"]
    with pytest.raises(ValueError, match="missing name information"):
        fake.define("<domain type='kvm'/>")


NO_MODEL = "XML error: Non-empty feature list specified without CPU model"


def with_cpu(name: str, cpu: str) -> str:
    """A small domain with ``cpu`` (a ``<cpu>`` element's markup)."""
    return domain_xml(name).replace("</domain>", f"{cpu}</domain>")


def test_cpu_features_without_a_model_are_refused_as_libvirt_refuses_them() -> None:
    fake = FakeLibvirt()
    feature = "<feature policy='require' name='vmx'/>"
    refused = {
        "bare": f"<cpu>{feature}</cpu>",
        "custom": f"<cpu mode='custom' match='exact'>{feature}</cpu>",
        "empty-model": f"<cpu><model fallback='allow'/>{feature}</cpu>",
    }
    accepted = {
        "model": f"<cpu mode='custom'><model>qemu64</model>{feature}</cpu>",
        "blank-model": f"<cpu><model> </model>{feature}</cpu>",
        "host-model": f"<cpu mode='host-model'>{feature}</cpu>",
        "passthrough": f"<cpu mode='host-passthrough'>{feature}</cpu>",
        "maximum": f"<cpu mode='maximum'>{feature}</cpu>",
        "no-feature": "<cpu mode='custom'><topology sockets='1' cores='1' threads='1'/></cpu>",
    }
    cases = {**refused, **accepted}
    replies = batch(
        fake,
        *(["define", "--file", f"{{{i}}}"] for i in range(len(cases))),
        ["create", "--file", "{0}"],
        files=tuple(with_cpu(name, cpu) for name, cpu in cases.items()),
    )
    said = {name: r.message for name, r in zip(cases, replies, strict=False)}
    for name in refused:
        assert said[name].startswith("Failed to define domain from ")
        assert said[name].endswith(NO_MODEL), name
    assert [n for n in accepted if said[n]] == []
    assert replies[-1].message.startswith("Failed to create domain from ")
    assert replies[-1].message.endswith(NO_MODEL)
    assert sorted(fake.domains) == sorted(accepted)
    with pytest.raises(ValueError, match=NO_MODEL):
        fake.define(with_cpu("again", refused["bare"]))
    assert "again" not in fake.domains


def test_a_redefinition_keeps_the_uuid_and_refuses_another() -> None:
    fake = FakeLibvirt()
    first = fake.define(domain_xml("a", "11111111-2222-3333-4444-555555555555"))
    fake.define(domain_xml("a", memory=131072))
    assert fake.domains["a"].uuid == first.uuid
    assert "131072" in fake.xml("a")
    with pytest.raises(ValueError, match="already exists with uuid 11111111-"):
        fake.define(domain_xml("a", "99999999-2222-3333-4444-555555555555"))
    with pytest.raises(ValueError, match="domain 'a' is already defined with uuid"):
        fake.define(domain_xml("b", first.uuid))
    (listed,) = batch(fake, ["list", "--all", "--uuid"])
    assert listed.stdout.split() == [first.uuid]


def test_running_domains_have_a_live_definition_and_stop() -> None:
    fake = FakeLibvirt()
    fake.define(domain_xml("web"))
    fake.define(domain_xml("idle"))
    started, again = batch(fake, ["start", "--domain", "web"], ["start", "--domain", "web"])
    assert started.ok
    assert again.message == "Domain is already active", "virsh's own check"
    fake.define(domain_xml("web", memory=131072))  # a pending change
    live, inactive, running, every = batch(
        fake,
        ["dumpxml", "--security-info", "--domain", "web"],
        ["dumpxml", "--inactive", "--security-info", "--domain", "web"],
        ["list", "--name"],
        ["list", "--all", "--name"],
    )
    assert "65536" in live.stdout and "131072" in inactive.stdout
    assert running.stdout.split() == ["web"]
    assert every.stdout.split() == ["web", "idle"], "running ones first, then by name"
    virsh = Virsh(fake)
    assert virsh.domain_state("web") is DomainState.RUNNING
    virsh.run(["shutdown", "--mode", "acpi", "--domain", "web"])
    assert virsh.domain_state("web") is DomainState.SHUT_OFF
    with pytest.raises(CommandError, match="domain is not running"):
        virsh.run(["destroy", "--domain", "web"])
    fake.domains["web"].obeys_acpi = False
    fake.set_state("web", "running")
    virsh.run(["shutdown", "--mode", "acpi", "--domain", "web"])
    assert fake.domains["web"].active, "a guest that ignores ACPI keeps running"
    virsh.run(["destroy", "--domain", "web"])
    assert virsh.domain_state("web") is DomainState.SHUT_OFF


def test_autostart_and_transient_domains() -> None:
    fake = FakeLibvirt()
    fake.define(domain_xml("a"))
    fake.define(domain_xml("b"))
    on, off, listed, made, transient_autostart, paused, destroyed = batch(
        fake,
        ["autostart", "--domain", "a"],
        ["autostart", "--disable", "--domain", "b"],
        ["list", "--all", "--name", "--autostart"],
        ["create", "--paused", "--file", "{0}"],
        ["autostart", "--domain", "probe"],
        ["domstate", "--domain", "probe"],
        ["destroy", "--domain", "probe"],
        files=(domain_xml("probe"),),
    )
    assert on.ok and off.ok and made.ok and destroyed.ok
    assert listed.stdout.split() == ["a"]
    assert "cannot set autostart for transient domain" in transient_autostart.message
    assert paused.stdout.strip() == "paused"
    assert sorted(fake.domains) == ["a", "b"], "a destroyed transient domain is gone"


def test_an_unknown_command_or_option_runs_nothing() -> None:
    fake = FakeLibvirt()
    for command in (["frobnicate"], ["domblkstat", "--domain", "a"], ["list", "--bogus"]):
        with pytest.raises(CommandError) as caught:
            batch(fake, ["define", "--file", "{0}"], command, files=(domain_xml("a"),))
        assert "virsh -q -c qemu:///system <2 commands>" in caught.value.message
        assert fake.domains == {}, "virsh parses the whole line before running any of it"
    with pytest.raises(CommandError, match="unknown command: 'frobnicate'"):
        Virsh(fake).run(["frobnicate"])
    with pytest.raises(CommandError, match="doesn't support option --bogus"):
        Virsh(fake).run(["list", "--bogus"])
    with pytest.raises(CommandError, match="requires <domain> option"):
        Virsh(fake).run(["domstate"])


def test_other_programs_are_not_installed() -> None:
    with pytest.raises(CommandError) as caught:
        FakeLibvirt().run(["swtpm", "--version"], timeout=1)
    assert caught.value.kind == "spawn"


# -- injected failures ------------------------------------------------------------------------


def test_a_failure_hits_its_target_only_and_the_batch_goes_on() -> None:
    fake = FakeLibvirt()
    fake.define(domain_xml("a"))
    fake.define(domain_xml("b"))
    fake.fail("start", "a", "internal error: qemu unexpectedly closed the monitor")
    a, b = batch(fake, ["start", "--domain", "a"], ["start", "--domain", "b"])
    assert (a.ok, b.ok) == (False, True)
    assert a.stderr == "error: internal error: qemu unexpectedly closed the monitor\n"
    assert not fake.domains["a"].active, "a failed command does nothing"
    (again,) = batch(fake, ["start", "--domain", "a"])
    assert not again.ok, "a failure stays armed"
    fake.failures.clear()
    fake.fail("start", message="error: boom", once=True)
    first, second = batch(fake, ["start", "--domain", "a"], ["destroy", "--domain", "b"])
    assert first.message == "boom" and second.ok
    assert batch(fake, ["start", "--domain", "a"])[0].ok, "once: only the next run"


def test_without_a_connection_nothing_runs() -> None:
    fake = FakeLibvirt()
    fake.disconnect()
    with pytest.raises(CommandError) as caught:
        batch(fake, ["list", "--all", "--name"])
    assert caught.value.hint == CONNECT_HINT
    fake.reconnect()
    assert batch(fake, ["list", "--all", "--name"])[0].ok


# -- storage ------------------------------------------------------------------------------------


def test_pools_and_volumes_read_as_bkt_reads_them(tmp_path: Path) -> None:
    fake = FakeLibvirt()
    fake.add_pool("images", tmp_path)
    fake.add_pool("asleep", "/srv/asleep", active=False)
    every, active, dumped = batch(
        fake,
        ["pool-list", "--all", "--name"],
        ["pool-list", "--name"],
        ["pool-dumpxml", "--pool", "images"],
    )
    assert every.stdout.split() == ["asleep", "images"]
    assert active.stdout.split() == ["images"]
    assert pool_target(dumped.stdout) == str(tmp_path)

    created, dumped, listed, twice, asleep = batch(
        fake,
        ["vol-create-as", "--pool", "images", "--name", "a.qcow2", "--capacity", "2GiB",
         "--format", "qcow2"],
        ["vol-dumpxml", "--pool", "images", "--vol", "a.qcow2"],
        ["vol-list", "--pool", "images"],
        ["vol-create-as", "--pool", "images", "--name", "a.qcow2", "--capacity", "1GiB"],
        ["vol-create-as", "--pool", "asleep", "--name", "b", "--capacity", "1GiB"],
    )  # fmt: skip
    assert created.ok
    assert volume_format_of(dumped.stdout) == "qcow2"
    assert "<capacity unit='bytes'>2147483648</capacity>" in dumped.stdout
    assert listed.stdout.split() == ["a.qcow2", str(tmp_path / "a.qcow2")]
    assert "already in use" in twice.message
    assert "storage pool 'asleep' is not active" in asleep.message
    ctx = ProvisionContext(Virsh(fake), remote=False)
    assert ctx.volume_format("images", "a.qcow2") == "qcow2"
    assert ctx.volume_format("images", "nothing.qcow2") is None
    assert [(p.name, p.active) for p in ctx.pools()] == [("asleep", False), ("images", True)]
    info = json.loads(
        ctx.qemu_img(["info", "--output=json", "-U", "--", str(tmp_path / "a.qcow2")])
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", 2 << 30), "the volume's file"


def test_qemu_img_creates_and_reads_images(tmp_path: Path) -> None:
    fake = FakeLibvirt()
    ctx = ProvisionContext(Virsh(fake), remote=False)
    base = tmp_path / "base.img"
    base.write_bytes(b"\0" * 4096)
    overlay = tmp_path / "overlay.qcow2"
    ctx.qemu_img(["create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", "--",
                  str(overlay), "3G"])  # fmt: skip
    info = json.loads(ctx.qemu_img(["info", "--output=json", "-U", "--", str(overlay)]))
    assert info["format"] == "qcow2" and info["virtual-size"] == 3 << 30
    assert info["backing-filename"] == str(base)
    raw = json.loads(ctx.qemu_img(["info", "--output=json", "-U", "--", str(base)]))
    assert (raw["format"], raw["virtual-size"]) == ("raw", 4096), "a file it does not know"
    with pytest.raises(CommandError, match="Could not open"):
        ctx.qemu_img(["info", "--output=json", "-U", "--", str(tmp_path / "missing")])
    fake.fail("qemu-img create", str(tmp_path / "full.qcow2"), "No space left on device")
    with pytest.raises(CommandError, match="No space left on device"):
        ctx.qemu_img(["create", "-q", "-f", "qcow2", "--", str(tmp_path / "full.qcow2"), "1G"])
    assert not (tmp_path / "full.qcow2").exists()
    assert [argv[1] for argv in fake.qemu_img] == ["create", "info", "info", "info", "create"]


def test_an_image_known_by_its_path_alone_has_no_file() -> None:
    fake = FakeLibvirt()
    fake.add_image("/srv/vm/a.qcow2", format="raw", size=3 << 30, virtual=True)
    assert not Path("/srv/vm/a.qcow2").exists()
    ctx = ProvisionContext(Virsh(fake), remote=False)
    info = json.loads(ctx.qemu_img(["info", "--output=json", "-U", "--", "/srv/vm/a.qcow2"]))
    assert (info["format"], info["virtual-size"]) == ("raw", 3 << 30)
    assert batch(fake, ["list", "--all", "--name"])[0].ok
    assert [argv[0] for argv in fake.calls] == ["qemu-img", "virsh"], "every process, in order"


def test_domblkinfo_reads_the_disk_of_the_domain(tmp_path: Path) -> None:
    fake = FakeLibvirt()
    disk = fake.add_image(tmp_path / "a.qcow2", size=5 << 30)
    xml = domain_xml("a").replace(
        "</domain>",
        f"<devices><disk type='file' device='disk'><source file='{disk}'/>"
        "<target dev='vda'/></disk></devices></domain>",
    )
    fake.define(xml)
    info, stranger = batch(
        fake,
        ["domblkinfo", "--domain", "a", "--device", str(disk)],
        ["domblkinfo", "--domain", "a", "--device", "/elsewhere.qcow2"],
    )
    assert info.stdout.splitlines()[0].split() == ["Capacity:", str(5 << 30)]
    assert "not assigned to domain" in stranger.message
    disk.unlink()
    (missing,) = batch(fake, ["domblkinfo", "--domain", "a", "--device", str(disk)])
    assert "No such file or directory" in missing.message


def test_host_checks_answer_as_a_healthy_host() -> None:
    fake = FakeLibvirt()
    uri, version, kvm, networks = batch(
        fake,
        ["uri"],
        ["version"],
        ["domcapabilities", "--virttype", "kvm", "--machine", "q35"],
        ["net-list", "--all", "--name"],
    )
    assert uri.stdout.strip() == "qemu:///system"
    assert "Running hypervisor: QEMU" in version.stdout
    assert "<value>efi</value>" in kvm.stdout
    assert networks.stdout.split() == ["default"]
    assert Virsh(fake).run(["uri"]).strip() == "qemu:///session", "the default without -c"


# -- a host on the fake --------------------------------------------------------------------------


def vm(disks: Path, name: str, **fields: object) -> dict[str, object]:
    return {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(disks / f"{name}.qcow2"),
        "disk_size_gb": 1,
        "create_if_missing": True,
        "boot": "bios",
        "network": "default",
        "graphics": "none",
        "virt_type": "qemu",
        **fields,
    }


def test_a_host_on_the_fake_syncs_and_is_then_in_sync(tmp_path: Path) -> None:
    fake = FakeLibvirt()
    manifests = ManifestDir(tmp_path / "manifests")
    manifests.write({"web": vm(tmp_path, "web", autostart=True)})
    host = fake.host(manifests)
    report = host.sync("vm")
    assert [(r.name, r.result) for r in report.results or ()] == [("web", "created")]
    assert fake.domains["web"].autostart
    assert "<name>web</name>" in fake.xml("web")
    assert [e.action for e in host.plan("vm").entries] == ["unchanged"]
    assert [r.in_sync for r in host.status("vm").rows] == [True]
    info = json.loads(
        fake.run(
            ["qemu-img", "info", "--output=json", "--", str(tmp_path / "web.qcow2")], timeout=1
        ).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30), "the disk was made"


def test_vm_subsystem_is_the_typed_vm_subsystem(tmp_path: Path) -> None:
    host = FakeLibvirt().host(tmp_path, disabled=["autostart"])
    sub = vm_subsystem(host)
    assert sub is host.subsystem("vm")
    assert "autostart" not in sub.field_owners


# -- the pytest plugin ---------------------------------------------------------------------------


def test_the_fixtures_are_wired_together(
    bkt_host: Host, bkt_manifest_dir: ManifestDir, bkt_fake_libvirt: FakeLibvirt, tmp_path: Path
) -> None:
    assert bkt_host.manifest_dir == bkt_manifest_dir.path == tmp_path / "manifests"
    assert bkt_host.runner() is bkt_fake_libvirt
    assert [p.name for p in bkt_host.plugins()] == [
        "autostart",
        "cpu_model",
        "host_overrides",
        "os",
        "provision",
        "vm",
    ]
    bkt_manifest_dir.write({"a": vm(tmp_path, "a")}, **{"$schema": "vms.schema.json"})
    assert bkt_manifest_dir.read()["$schema"] == "vms.schema.json"
    assert bkt_host.validate("vm") == 1


def test_the_pytest_plugin_is_registered_and_imports_nothing_heavy() -> None:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "bkt"]
    assert entry.value == "bkt_vm_plugin.pytest_plugin"
    code = (
        "import sys, bkt_vm_plugin.pytest_plugin\n"
        "heavy = {'bkt_vm_plugin.testing', 'bkt_core.host', 'pydantic', 'lxml', 'rich'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_every_public_name_of_the_kit_is_documented() -> None:
    for name in testing.__all__:
        member = getattr(testing, name)
        if isinstance(member, type):
            assert inspect.getdoc(member), name
            for attr, value in vars(member).items():
                if not attr.startswith("_") and callable(value):
                    assert inspect.getdoc(value), f"{name}.{attr}"
        elif callable(member):
            assert inspect.getdoc(member), name
