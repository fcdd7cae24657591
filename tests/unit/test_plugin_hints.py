"""A plugin's refusal (a BktError it raises on purpose, with a hint) in every kind of VM hook
fails that VM only, names the plugin and keeps its hint: in the report, in its JSON form and
on the terminal. bkt's own plugins' refusals are printed as they were, and an error without a
hint adds no ``hint`` key to the JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from bkt_core import SyncReport, hookimpl
from bkt_core.errors import OperationError
from bkt_core.output import Printer
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.provision import DiskCreation, DiskRequest
from bkt_vm_plugin.report import print_plan, print_results
from bkt_vm_plugin.testing import FakeLibvirt
from bkt_vm_plugin.xmltree import Element, child, make
from tests.unit.test_robustness import World

HINT = "ask the paint shop"


@pytest.fixture
def world(tmp_path: Path) -> World:
    disks = tmp_path / "disks"
    disks.mkdir()
    return World(tmp_path, disks, FakeLibvirt())


def refusal() -> OperationError:
    return OperationError("out of paint", hint=HINT)


class PaintField(DomainField):
    """``color`` as the domain's ``<title>``; refuses in ``refuse`` (one of render, parse,
    patch) for the VM named ``bad``."""

    fields = ("color",)

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse

    def _check(self, method: str, ctx: DomainContext) -> None:
        if method == self.refuse and ctx.name == "bad":
            raise refusal()

    def render(self, domain: Element, vm: Any, ctx: DomainContext) -> None:
        self._check("render", ctx)
        domain.append(make("title", text=str(vm.field("color"))))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        self._check("parse", ctx)
        title = child(domain, "title")
        return {"color": Reading.clean(title.text if title is not None else None)}

    def patch(self, domain: Element, vm: Any, ctx: DomainContext) -> None:
        self._check("patch", ctx)
        title = child(domain, "title")
        assert title is not None
        title.text = str(vm.field("color"))


class Paint:
    bkt_plugin_name = "paint"

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        return {"color": (str, Field(default="blue"))}

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [PaintField(self.refuse)]


class RefusingPlan:
    bkt_plugin_name = "paint"

    @hookimpl
    def bkt_disk_plan(self, name: str, disk: DiskRequest) -> DiskCreation | None:
        if name == "bad":
            raise refusal()
        return None


class RefusingProvision:
    bkt_plugin_name = "paint"

    @hookimpl
    def bkt_disk_plan(self, name: str, disk: DiskRequest) -> DiskCreation | None:
        return DiskCreation(disk.path, disk.size_gb, plugin="paint") if name == "bad" else None

    @hookimpl
    def bkt_disk_provision(self, creation: DiskCreation) -> bool | None:
        if creation.plugin == "paint":
            raise refusal()
        return None


class RefusingPostSyncVm:
    bkt_plugin_name = "paint"

    @hookimpl
    def bkt_post_sync_vm(self, name: str) -> None:
        if name == "bad":
            raise refusal()


class RefusingPostSync:
    bkt_plugin_name = "paint"

    @hookimpl
    def bkt_post_sync(self, report: SyncReport) -> None:
        raise refusal()


def printed(report: SyncReport) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(0, "never", out, err)
    print_plan(printer, report.plan)
    print_results(printer, report)
    return out.getvalue(), err.getvalue()


def failure_of(report: SyncReport, name: str) -> dict[str, Any]:
    (result,) = [r for r in report.to_json()["results"] if r["name"] == name]
    return dict(result)


@pytest.mark.parametrize("method", ["render", "parse"])
def test_a_field_refusing_a_new_vm_names_the_plugin_and_keeps_the_hint(
    world: World, method: str
) -> None:
    report = world.sync(Paint(refuse=method))
    message = (
        f"plugin paint in bkt_domain_fields: {method} failed for VM bad (field color): "
        "out of paint"
    )
    plan = report.to_json()["plan"]["vms"]
    assert plan[0] == {"name": "bad", "action": "error", "message": message, "hint": HINT}
    assert "hint" not in plan[1]
    assert failure_of(report, "bad") == {
        "name": "bad",
        "result": "failed",
        "message": message,
        "hint": HINT,
    }
    assert failure_of(report, "good") == {"name": "good", "result": "created"}
    out, err = printed(report)
    assert f"! error bad: {message}\n" in out
    assert err == (f"hint: {HINT}\nerror: VM bad: {message}\nhint: {HINT}\n"), (
        "the plan's hint, then the result's"
    )
    assert set(world.libvirt.domains) == {"good"}


def test_a_field_refusing_a_patch_names_the_plugin_and_keeps_the_hint(world: World) -> None:
    assert world.sync(Paint()).summary().created == 2
    world.libvirt.define(
        world.libvirt.xml("bad").replace("<title>blue</title>", "<title>green</title>")
    )
    report = world.sync(Paint(refuse="patch"))
    message = (
        "plugin paint in bkt_domain_fields: patch failed for VM bad (field color): out of paint"
    )
    assert failure_of(report, "bad") == {
        "name": "bad",
        "result": "failed",
        "message": message,
        "hint": HINT,
    }
    assert "<title>green</title>" in world.libvirt.xml("bad"), "nothing was defined"
    out, err = printed(report)
    assert f"! error bad: {message}\n" in out
    assert err == f"hint: {HINT}\nerror: VM bad: {message}\nhint: {HINT}\n"


@pytest.mark.parametrize(
    ("plugin", "hook"),
    [
        (RefusingPlan(), "bkt_disk_plan"),
        (RefusingProvision(), "bkt_disk_provision"),
        (RefusingPostSyncVm(), "bkt_post_sync_vm"),
    ],
)
def test_a_hook_refusing_one_vm_names_the_plugin_and_keeps_the_hint(
    world: World, plugin: object, hook: str
) -> None:
    report = world.sync(plugin)
    message = f"plugin paint in {hook}: out of paint"
    assert failure_of(report, "bad") == {
        "name": "bad",
        "result": "failed",
        "message": message,
        "hint": HINT,
    }
    assert failure_of(report, "good") == {"name": "good", "result": "created"}
    out, err = printed(report)
    assert f"error: VM bad: {message}\nhint: {HINT}\n" in err
    assert out.endswith("1 created, 0 updated, 0 unchanged, 1 failed\n")


def test_a_whole_run_hook_refusing_fails_every_changed_vm_with_the_hint(world: World) -> None:
    report = world.sync(RefusingPostSync())
    message = "plugin paint in bkt_post_sync: out of paint"
    for name in ("bad", "good"):
        assert failure_of(report, name) == {
            "name": name,
            "result": "failed",
            "message": message,
            "hint": HINT,
        }
    _out, err = printed(report)
    assert err == "".join(f"error: VM {n}: {message}\nhint: {HINT}\n" for n in ("bad", "good"))


def test_bkt_own_refusals_keep_their_message_and_hint(world: World) -> None:
    # An empty file where the disk should be: the provision plugin's own refusal.
    (world.disks / "bad.qcow2").write_bytes(b"")
    report = world.sync()
    bad = report.to_json()["plan"]["vms"][0]
    assert bad["action"] == "error"
    assert bad["message"].startswith(f"disk {world.disks / 'bad.qcow2'} is an empty file")
    assert bad["hint"].startswith("remove it (with create_if_missing, sync then creates")
    assert failure_of(report, "bad")["hint"] == bad["hint"]
    assert failure_of(report, "good") == {"name": "good", "result": "created"}


# -- a VM name the manifest does not have ------------------------------------------------------


@pytest.mark.parametrize("command", ["sync", "dry-run", "status", "start", "stop", "capture"])
def test_a_vm_not_in_the_manifest_is_one_usage_error_in_every_command(
    world: World, command: str
) -> None:
    from bkt_core.errors import UsageError
    from bkt_vm_plugin import ops

    sub = world.sub()
    world.libvirt.define("<domain type='kvm'><name>other</name></domain>")
    calls: dict[str, Callable[[], object]] = {
        "sync": lambda: sub.sync(["nope"]),
        "dry-run": lambda: sub.sync(["nope"], dry_run=True),
        "status": lambda: sub.status(["nope"]),
        "start": lambda: ops.start(sub, "nope"),
        "stop": lambda: ops.stop(sub, "nope"),
    }
    if command == "capture":
        # Capture adds domains the manifest does not have: a name libvirt does not have
        # either is an operation error (exit 1), the rule for a domain that is not there.
        with pytest.raises(OperationError) as refused:
            sub.capture(["nope"])
        assert refused.value.message == "VM nope is not a libvirt domain"
        assert refused.value.exit_code == 1
        return
    with pytest.raises(UsageError) as caught:
        calls[command]()
    assert caught.value.message == f"VM nope is not in {world.file}"
    assert caught.value.exit_code == 2
    assert caught.value.hint


# -- through the command line ------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_bkt_vm_sync_prints_the_plugin_and_its_hint(world: World, as_json: bool) -> None:
    from click.testing import CliRunner

    from bkt_core.cli import build_cli

    sub = world.sub(RefusingPlan())
    cli = build_cli(sub.host)
    args = ["-C", str(world.dir), "--color", "never", "vm", "sync"]
    result = CliRunner().invoke(cli, [*args, "--json"] if as_json else args)
    assert isinstance(result.exception, OperationError)
    assert result.exception.message == "could not sync 1 VM: bad"
    message = "plugin paint in bkt_disk_plan: out of paint"
    if as_json:
        document = json.loads(result.stdout)
        assert document["plan"]["vms"][0] == {
            "name": "bad",
            "action": "error",
            "message": message,
            "hint": HINT,
        }
        assert document["results"][0] == {
            "name": "bad",
            "result": "failed",
            "message": message,
            "hint": HINT,
        }
        assert result.stderr == ""
    else:
        assert result.stdout.startswith(f"! error bad: {message}\n+ create good\n")
        assert result.stderr == f"hint: {HINT}\nerror: VM bad: {message}\nhint: {HINT}\n"


# -- host-level hooks ----------------------------------------------------------------------------


class HostLevelRefusal:
    """Raises ``exc`` from the host-level hook ``hook`` (and only there)."""

    bkt_plugin_name = "paint"

    def __init__(self, hook: str, exc: BaseException) -> None:
        self.hook = hook
        self.exc = exc

    def _raise(self, hook: str) -> None:
        if hook == self.hook:
            raise self.exc

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> None:
        self._raise("bkt_manifest_fields")

    @hookimpl
    def bkt_validate_manifest(self, subsystem: str) -> None:
        self._raise("bkt_validate_manifest")

    @hookimpl
    def bkt_manifest_sources(self, subsystem: str) -> None:
        self._raise("bkt_manifest_sources")

    @hookimpl
    def bkt_subsystems(self) -> None:
        self._raise("bkt_subsystems")

    @hookimpl
    def bkt_add_hookspecs(self) -> None:
        self._raise("bkt_add_hookspecs")

    @hookimpl
    def bkt_cli_commands(self) -> None:
        self._raise("bkt_cli_commands")


HOST_LEVEL_HOOKS = [
    "bkt_manifest_fields",
    "bkt_validate_manifest",
    "bkt_manifest_sources",
    "bkt_subsystems",
]


@pytest.mark.parametrize("hook", HOST_LEVEL_HOOKS)
def test_a_host_level_refusal_names_the_plugin_and_keeps_the_hint(world: World, hook: str) -> None:
    from bkt_core.errors import PluginError

    host = world.libvirt.host(world.dir, [HostLevelRefusal(hook, refusal())])
    with pytest.raises(PluginError) as caught:
        host.validate("vm")
    assert caught.value.message == f"plugin paint in {hook}: out of paint"
    assert caught.value.hint == HINT
    assert (caught.value.plugin, caught.value.hook) == ("paint", hook)
    assert caught.value.exit_code == 1
    assert isinstance(caught.value.__cause__, OperationError)


@pytest.mark.parametrize("hook", HOST_LEVEL_HOOKS)
def test_a_host_level_failure_names_the_plugin_as_before(world: World, hook: str) -> None:
    from bkt_core.errors import PluginError

    host = world.libvirt.host(world.dir, [HostLevelRefusal(hook, RuntimeError("oops"))])
    with pytest.raises(PluginError) as caught:
        host.validate("vm")
    assert caught.value.message == f"plugin paint in {hook}: RuntimeError: oops"
    assert caught.value.hint is None


def test_a_refusal_while_the_host_is_built_names_the_plugin(world: World) -> None:
    from bkt_core.errors import PluginError

    host = world.libvirt.host(world.dir, [HostLevelRefusal("bkt_add_hookspecs", refusal())])
    with pytest.raises(PluginError) as caught:
        host.plugins()
    assert caught.value.message == "plugin paint in bkt_add_hookspecs: out of paint"
    assert caught.value.hint == HINT


def test_a_refusal_to_add_commands_is_a_failure_naming_the_plugin(world: World) -> None:
    import click

    from bkt_core.errors import PluginError

    host = world.libvirt.host(world.dir, [HostLevelRefusal("bkt_cli_commands", refusal())])
    (failure,) = host.add_cli_commands(click.Group("bkt"))
    assert isinstance(failure, PluginError)
    assert failure.message == "plugin paint in bkt_cli_commands: out of paint"
    assert failure.hint == HINT


def test_a_refusal_to_contribute_domain_fields_names_the_plugin(world: World) -> None:
    from bkt_core.errors import PluginError

    class NoFields:
        bkt_plugin_name = "paint"

        @hookimpl
        def bkt_domain_fields(self) -> None:
            raise refusal()

    with pytest.raises(PluginError) as caught:
        world.sync(NoFields())
    assert caught.value.message == "plugin paint in bkt_domain_fields: out of paint"
    assert caught.value.hint == HINT


def test_a_manifest_error_from_a_plugins_source_names_it_and_keeps_its_positions(
    world: World,
) -> None:
    from bkt_core.errors import Diagnostic, ManifestError

    diagnostic = Diagnostic("extra.json", 3, 7, "vms.bad", "not a number")
    refused = ManifestError("extra.json is invalid", diagnostics=[diagnostic], hint=HINT)
    host = world.libvirt.host(world.dir, [HostLevelRefusal("bkt_manifest_sources", refused)])
    with pytest.raises(ManifestError) as caught:
        host.validate("vm")
    assert caught.value.message == "plugin paint in bkt_manifest_sources: extra.json is invalid"
    assert caught.value.diagnostics == (diagnostic,)
    assert caught.value.hint == HINT
    assert caught.value.exit_code == 2


def test_bkt_own_host_level_refusals_keep_their_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_vm_plugin.host_overrides import HOSTNAME_ENV

    # host_overrides (bkt's own) refuses a host name that cannot name a file.
    monkeypatch.setenv(HOSTNAME_ENV, "a/b")
    with pytest.raises(OperationError) as caught:
        world.libvirt.host(world.dir).validate("vm")
    assert type(caught.value) is OperationError
    assert caught.value.message == f"${HOSTNAME_ENV} 'a/b' cannot name a manifest override file"
    assert caught.value.hint is not None
    assert caught.value.plugin == "host_overrides"


def test_bkt_vm_validate_fails_with_a_host_level_refusal(world: World) -> None:
    from click.testing import CliRunner

    from bkt_core.cli import build_cli
    from bkt_core.errors import PluginError

    host = world.libvirt.host(world.dir, [HostLevelRefusal("bkt_validate_manifest", refusal())])
    args = ["-C", str(world.dir), "--color", "never", "vm", "validate"]
    result = CliRunner().invoke(build_cli(host), args)
    assert isinstance(result.exception, PluginError)
    assert result.exception.message == "plugin paint in bkt_validate_manifest: out of paint"
    assert result.exception.hint == HINT
    assert result.stdout == ""


# -- status and capture --------------------------------------------------------------------------

PARSE_FAILED = (
    "plugin paint in bkt_domain_fields: parse failed for VM bad (field color): out of paint"
)


def status_of(world: World, *plugins: object, as_json: bool = False) -> Any:
    from click.testing import CliRunner

    from bkt_core.cli import build_cli

    cli = build_cli(world.sub(*plugins).host)
    args = ["-C", str(world.dir), "--color", "never", "vm", "status"]
    return CliRunner().invoke(cli, [*args, "--json"] if as_json else args)


def test_status_keeps_a_vm_it_cannot_read_with_the_plugins_message_and_hint(
    world: World,
) -> None:
    assert world.sync(Paint()).summary().created == 2
    report = world.sub(Paint(refuse="parse")).status()
    bad, good = report.rows
    assert bad.to_json() == {
        "name": "bad",
        "state": "stopped",
        "managed": True,
        "in_sync": False,
        "drift": ["(definition unreadable)"],
        "pending_restart": [],
        "message": PARSE_FAILED,
        "hint": HINT,
    }
    assert "message" not in good.to_json() and "hint" not in good.to_json()
    assert report.failed == ["bad"]


@pytest.mark.parametrize("as_json", [False, True])
def test_bkt_vm_status_prints_why_a_vm_is_unreadable_and_fails(
    world: World, as_json: bool
) -> None:
    assert world.sync(Paint()).summary().created == 2
    result = status_of(world, Paint(refuse="parse"), as_json=as_json)
    assert isinstance(result.exception, OperationError)
    assert result.exception.message == "could not read 1 VM: bad"
    if as_json:
        rows = json.loads(result.stdout)["vms"]
        assert [(r["name"], r.get("message"), r.get("hint")) for r in rows] == [
            ("bad", PARSE_FAILED, HINT),
            ("good", None, None),
        ]
        assert result.stderr == ""
    else:
        assert result.stdout == (
            "NAME  STATE    SYNC\n"
            "bad   stopped  drift: (definition unreadable)\n"
            "good  stopped  in sync\n"
        )
        assert result.stderr == f"error: VM bad: {PARSE_FAILED}\nhint: {HINT}\n"


def test_bkt_vm_status_fails_for_a_definition_libvirt_does_not_give(world: World) -> None:
    assert world.sync(Paint()).summary().created == 2
    world.libvirt.fail("dumpxml", "bad", "domain is locked")
    result = status_of(world, Paint(), as_json=True)
    assert isinstance(result.exception, OperationError)
    assert result.exception.message == "could not read 1 VM: bad"
    bad, good = json.loads(result.stdout)["vms"]
    assert bad["drift"] == ["(definition unreadable)"]
    assert bad["message"] == "cannot read its definition: domain is locked"
    assert "hint" not in bad
    assert good["in_sync"] is True


def test_bkt_vm_status_in_sync_prints_the_same_table_and_succeeds(world: World) -> None:
    assert world.sync(Paint()).summary().created == 2
    result = status_of(world, Paint(), as_json=True)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vms"][0] == {
        "name": "bad",
        "state": "stopped",
        "managed": True,
        "in_sync": True,
        "drift": [],
        "pending_restart": [],
    }


def test_capture_skips_a_vm_it_cannot_read_with_the_plugins_hint(world: World) -> None:
    from bkt_vm_plugin.report import format_capture

    assert world.sync(Paint()).summary().created == 2
    report = world.sub(Paint(refuse="parse")).capture(dry_run=True)
    (bad,) = [e for e in report.to_json()["vms"] if e["name"] == "bad"]
    assert bad == {"name": "bad", "kind": "skipped", "reasons": [PARSE_FAILED], "hint": HINT}
    (good,) = [e for e in report.to_json()["vms"] if e["name"] == "good"]
    assert "hint" not in good
    lines = format_capture(report)
    skip = lines.index(("out", f"! skip bad: {PARSE_FAILED}"))
    assert lines[skip + 1] == ("hint", HINT)
    out, err = io.StringIO(), io.StringIO()
    from bkt_vm_plugin.report import print_capture

    print_capture(Printer(0, "never", out, err), report)
    assert f"! skip bad: {PARSE_FAILED}\n" in out.getvalue()
    assert f"hint: {HINT}\n" in err.getvalue()
