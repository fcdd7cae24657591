"""The plugin host: registration, blocking, hook calls that name the failing plugin."""

from __future__ import annotations

import ast
import functools
import gc
import os
import re
import subprocess
import sys
import types
from typing import Any, cast

import pluggy
import pytest
from pydantic import Field

import bkt_vm_plugin.hookspecs
from bkt_core import cli, hookimpl, hookspecs
from bkt_core.errors import ManifestError, PluginError
from bkt_core.host import Host, _PluginManager, disabled_from_env
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.hooks import VmHooks
from bkt_vm_plugin.provision import DiskCreation


def vm_host(*extra: object, disabled: tuple[str, ...] = ()) -> Host:
    return Host(entry_points=False, plugins=[*default_plugins(), *extra], disabled=disabled)


class Color:
    """A plugin object that adds a `color` field."""

    bkt_plugin_name = "color"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any] | None:
        if subsystem != "vm":
            return None
        return {"color": (str, Field(default="blue", description="A colour."))}


class VmSpecs:
    """Declares the VM hooks as the `vm` plugin does, without the VM subsystem."""

    bkt_plugin_name = "vm-specs"

    @hookimpl
    def bkt_add_hookspecs(self, host: Host) -> None:
        host.add_hookspecs(bkt_vm_plugin.hookspecs)


class OtherColor(Color):
    bkt_plugin_name = "other-color"


class Unknown:
    bkt_plugin_name = "unknown"

    @hookimpl
    def bkt_frobnicate(self) -> None:
        pass


class Raises:
    bkt_plugin_name = "raises"

    @hookimpl
    def bkt_validate_manifest(self, subsystem: str, document: Any) -> None:
        raise ZeroDivisionError("boom")


def test_the_default_plugins_are_listed_with_their_hooks() -> None:
    infos = {i.name: i for i in vm_host().plugins()}
    assert set(infos) == {name for name, _ in default_plugins()}
    assert "bkt_subsystems" in infos["vm"].hooks
    assert "bkt_manifest_fields" in infos["cpu_model"].hooks
    assert all(i.status == "active" for i in infos.values())


def test_the_distribution_of_a_plugin_is_the_one_its_listing_gives() -> None:
    """What the manifest cache keys on (Host.distribution_of) is what `bkt plugins` lists,
    for active and blocked plugins alike."""
    host = Host(disabled=["cpu_model"], cache=False)
    listed = {i.name: (i.distribution, i.version) for i in host.plugins()}
    assert listed["vm"][0] == "bkt" and listed["vm"][1]
    assert listed["cpu_model"][0] == "bkt"
    for name, expected in listed.items():
        assert host.distribution_of(name) == expected
    assert host.distribution_of("no-such-plugin") == (None, None)


def test_an_explicit_plugin_adds_a_field_to_the_model_and_schema() -> None:
    vm = vm_host(Color()).subsystem("vm")
    assert "color" in vm.vm_model.model_fields  # type: ignore[attr-defined]
    props = vm.schema()["$defs"]["VmDefinition"]["properties"]
    assert props["color"] == {"default": "blue", "description": "A colour.", "type": "string"}


def test_two_plugins_claiming_one_field_is_an_error_naming_both() -> None:
    with pytest.raises(PluginError) as caught:
        _ = vm_host(Color(), OtherColor()).subsystem("vm").vm_model  # type: ignore[attr-defined]
    message = str(caught.value)
    assert "color" in message and "other-color" in message
    assert "--disable-plugin" in (caught.value.hint or "")


def test_a_plugin_shadowing_a_builtin_field_is_an_error() -> None:
    class Shadow:
        bkt_plugin_name = "shadow"

        @hookimpl
        def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any]:
            return {"memory_gb": (int, Field(default=1))}

    with pytest.raises(PluginError, match=r"plugin shadow.*built-in field"):
        _ = vm_host(Shadow()).subsystem("vm").vm_model  # type: ignore[attr-defined]


def test_an_unknown_hook_is_an_error_naming_the_plugin() -> None:
    with pytest.raises(PluginError, match="plugin unknown: implements bkt_frobnicate"):
        _ = vm_host(Unknown()).pluginmanager


def test_a_lenient_host_unregisters_the_plugin_with_an_unknown_hook() -> None:
    host = Host(entry_points=False, plugins=[Unknown()], strict=False)
    assert [e.plugin for e in host.invalid] == []  # nothing is built yet
    assert [(i.name, i.status) for i in host.plugins()] == [("unknown", "invalid")]
    assert host.invalid[0].plugin == "unknown"


def test_blocked_plugins_are_not_registered() -> None:
    host = vm_host(Color(), disabled=("color", "cpu_model"))
    statuses = {i.name: i.status for i in host.plugins()}
    assert statuses["color"] == "disabled" and statuses["cpu_model"] == "disabled"
    assert "cpu_model" not in host.subsystem("vm").vm_model.model_fields  # type: ignore[attr-defined]


def test_disabled_names_come_from_the_environment() -> None:
    assert disabled_from_env({"BKT_DISABLE_PLUGINS": " a, b ,,c"}) == ["a", "b", "c"]
    assert disabled_from_env({}) == []


def test_a_plugin_that_raises_in_a_hook_is_named(tmp_path: Any) -> None:
    (tmp_path / "vms.json").write_text('{"vms": {}}')
    host = Host(tmp_path, entry_points=False, plugins=[*default_plugins(), Raises()])
    with pytest.raises(PluginError) as caught:
        host.validate("vm")
    assert str(caught.value) == "plugin raises in bkt_validate_manifest: ZeroDivisionError: boom"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_call_blames_the_implementation_in_the_traceback() -> None:
    class Explodes:
        bkt_plugin_name = "explodes"

        @hookimpl
        def bkt_post_sync(self, report: Any, context: Any) -> None:
            raise KeyError("x")

    class Fine:
        bkt_plugin_name = "fine"

        @hookimpl
        def bkt_post_sync(self, report: Any, context: Any) -> None:
            pass

    host = Host(entry_points=False, plugins=[VmSpecs(), Explodes(), Fine()])
    with pytest.raises(PluginError) as caught:
        host.call("bkt_post_sync", report=None, context=None)
    assert caught.value.plugin == "explodes" and caught.value.hook == "bkt_post_sync"


def test_collect_pairs_each_result_with_its_plugin() -> None:
    found = vm_host(Color()).manifest_fields("vm")
    assert [name for name, _ in found] == ["color", "os", "autostart", "cpu_model"]


def test_validation_problems_of_a_plugin_get_positions(tmp_path: Any) -> None:
    class NoTodo:
        bkt_plugin_name = "no-todo"

        @hookimpl
        def bkt_validate_manifest(self, subsystem: str, document: Any) -> list[Any]:
            from bkt_core import Problem

            return [Problem(("vms", "a", "network"), "no networks on fridays")]

    manifest = (
        '{"vms": {"a": {"memory_gb": 1, "vcpus": 1, "disk_path": "/d", "disk_size_gb": 1,\n'
        '  "boot": "bios", "network": "default", "graphics": "none"}}}\n'
    )
    (tmp_path / "vms.json").write_text(manifest)
    host = Host(tmp_path, entry_points=False, plugins=[*default_plugins(), NoTodo()])
    with pytest.raises(ManifestError) as caught:
        host.validate("vm")
    (diagnostic,) = caught.value.diagnostics
    assert str(diagnostic).endswith(":2:30: vms.a.network: no networks on fridays")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vm", "sync", "-C", "d"], ["-C", "d", "vm", "sync"]),
        (["vm", "-vv", "status", "--all"], ["-vv", "vm", "status", "--all"]),
        (
            ["vm", "stop", "x", "--connect=qemu:///system"],
            ["--connect=qemu:///system", "vm", "stop", "x"],
        ),
        (["-Cdir", "vm", "validate", "-q"], ["-Cdir", "-q", "vm", "validate"]),
        (["vm", "sync", "--", "-C"], ["vm", "sync", "--", "-C"]),
        (["vm", "sync", "--disable-plugin", "a"], ["--disable-plugin", "a", "vm", "sync"]),
    ],
)
def test_global_flags_are_hoisted(argv: list[str], expected: list[str]) -> None:
    from bkt_core.cli import hoist_globals

    assert hoist_globals(argv) == expected


def test_a_wrapper_on_a_hook_called_one_by_one_is_refused() -> None:
    class Wraps:
        bkt_plugin_name = "wraps"

        @hookimpl(wrapper=True)
        def bkt_validate_manifest(self) -> Any:
            return (yield)

    with pytest.raises(PluginError, match="plugin wraps: wraps bkt_validate_manifest"):
        _ = vm_host(Wraps()).pluginmanager
    lenient = Host(entry_points=False, plugins=[Wraps()], strict=False)
    assert [(i.name, i.status) for i in lenient.plugins()] == [("wraps", "invalid")]


def test_a_wrapper_on_a_firstresult_hook_wraps_the_default() -> None:
    seen: list[Any] = []

    class Wraps:
        bkt_plugin_name = "wraps"

        @hookimpl(wrapper=True)
        def bkt_disk_provision(self, creation: Any) -> Any:
            result = yield
            seen.append((creation, result))
            return result

    class Provides:
        bkt_plugin_name = "provides"

        @hookimpl
        def bkt_disk_provision(self, creation: Any) -> bool:
            return True

    host = Host(entry_points=False, plugins=[VmSpecs(), Provides(), Wraps()])
    creation = DiskCreation("/srv/vm/c.qcow2", 1)
    assert VmHooks(host).disk_provision(creation, cast(Any, None)) is True
    assert seen == [(creation, True)]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], True),
        (["vm"], True),
        (["-C", "vm", "vm"], True),
        (["vm", "sync", "--help"], True),
        (["-h"], True),
        (["vm", "status"], False),
        (["-C", "dir", "plugins"], False),
        (["vm", "sync", "--", "--help"], False),
    ],
)
def test_rich_click_is_loaded_only_for_help(argv: list[str], expected: bool) -> None:
    from bkt_core.cli import wants_help

    assert wants_help(argv, lambda: {"vm"}) is expected


def test_a_group_alone_is_help_only_when_a_subsystem_names_it() -> None:
    from bkt_core.cli import wants_help

    asked: list[str] = []

    def groups() -> set[str]:
        asked.append("asked")
        return {"toy"}

    assert wants_help(["toy"], groups) and not wants_help(["vm"], groups)
    assert not wants_help(["vm"])
    # bkt's own commands run alone: the plugins are not asked.
    asked.clear()
    assert not wants_help(["status"], groups) and not wants_help(["plugins"], groups)
    assert asked == []


class BadFields:
    """Implements a VM hook, returning what the hook does not declare."""

    bkt_plugin_name = "bad-fields"

    @hookimpl
    def bkt_domain_fields(self) -> Any:
        return "not a field"


@pytest.mark.parametrize("first", [True, False])
def test_a_vm_hook_is_checked_whether_its_plugin_comes_before_vm_or_after(first: bool) -> None:
    extra: list[object] = [BadFields()]
    plugins = [*extra, *default_plugins()] if first else [*default_plugins(), *extra]
    host = Host(entry_points=False, plugins=plugins)
    with pytest.raises(PluginError) as caught:
        _ = host.subsystem("vm").mapping  # type: ignore[attr-defined]
    assert (caught.value.plugin, caught.value.hook) == ("bad-fields", "bkt_domain_fields")
    assert "returned a str, expected an iterable of DomainField" in caught.value.message


def test_a_wrapper_on_a_vm_hook_called_one_by_one_is_refused_before_vm_too() -> None:
    class Wraps:
        bkt_plugin_name = "wraps"

        @hookimpl(wrapper=True)
        def bkt_post_sync(self) -> Any:
            return (yield)

    host = Host(entry_points=False, plugins=[Wraps(), *default_plugins()])
    with pytest.raises(PluginError, match="plugin wraps: wraps bkt_post_sync"):
        _ = host.pluginmanager


def test_a_vm_hook_with_vm_blocked_is_an_error_naming_plugin_hook_and_the_block() -> None:
    with pytest.raises(PluginError) as caught:
        _ = vm_host(BadFields(), disabled=("vm",)).pluginmanager
    error = caught.value
    assert error.plugin in {"cpu_model", "autostart", "provision", "bad-fields"}
    found = re.search(r"implements (bkt_\w+), which no active plugin declares$", error.message)
    assert found is not None and found[1] in bkt_vm_plugin.hookspecs.hook_names()
    assert "is the plugin that declares it blocked? (blocked: vm)" in (error.hint or "")
    assert f"--disable-plugin {error.plugin}" in (error.hint or "")
    # Listing the plugins still works: each one implementing a VM hook is shown as invalid.
    lenient = Host(
        entry_points=False,
        plugins=[*default_plugins(), BadFields()],
        disabled=("vm",),
        strict=False,
    )
    statuses = {i.name: i.status for i in lenient.plugins()}
    assert statuses == {
        "vm": "disabled",
        "cpu_model": "invalid",
        "autostart": "invalid",
        "provision": "invalid",
        "os": "invalid",
        "host_overrides": "active",
        "bad-fields": "invalid",
    }


def test_a_misspelt_hook_is_still_not_a_bkt_hook() -> None:
    with pytest.raises(PluginError, match="implements bkt_frobnicate, which is not a bkt hook"):
        _ = vm_host(Unknown()).pluginmanager


def test_add_hookspecs_names_a_plugin_whose_arguments_the_spec_lacks() -> None:
    class Extra:
        bkt_plugin_name = "extra"

        @hookimpl
        def bkt_post_sync(self, report: Any, colour: Any) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        _ = Host(entry_points=False, plugins=[Extra(), VmSpecs()]).pluginmanager
    assert caught.value.plugin == "extra"
    assert "colour" in caught.value.message


def test_add_hookspecs_merges_the_contract_once() -> None:
    host = Host(entry_points=False, plugins=[VmSpecs(), *default_plugins()])
    host.add_hookspecs(bkt_vm_plugin.hookspecs)  # again: nothing changes
    assert host.pluginmanager.hook.bkt_disk_plan.spec is not None
    assert host._results["bkt_disk_plan"] == bkt_vm_plugin.hookspecs.RESULTS["bkt_disk_plan"]
    assert "bkt_post_sync" in host._one_by_one
    bare = Host(entry_points=False)
    assert "bkt_disk_plan" not in bare._results and "bkt_post_sync" not in bare._one_by_one


def _hooks_found(manager: pluggy.PluginManager, plugins: list[tuple[str, object]]) -> list[Any]:
    manager.add_hookspecs(hookspecs)
    manager.add_hookspecs(bkt_vm_plugin.hookspecs)
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    return sorted(
        (
            hook,
            caller.spec.opts if caller.spec else None,
            [(i.plugin_name, i.function, i.tryfirst, i.trylast) for i in caller.get_hookimpls()],
        )
        for hook, caller in vars(manager.hook).items()
    )


def test_the_hosts_manager_finds_what_pluggys_own_finds_in_a_module() -> None:
    # Its quick skip of names that carry no marker must not skip one that does, whatever
    # the value: a marked function, one with other attributes, marked static and class
    # methods in a module, and values that are no hook at all.
    odd = types.ModuleType("odd")

    def bkt_subsystems(host: Host) -> None:
        return None

    @functools.wraps(bkt_subsystems)
    def unmarked(host: Host) -> None:
        return None

    class Compiled:
        """What a compiled function (Cython's, Nuitka's) looks like to inspect: a method
        descriptor, no FunctionType."""

        def __get__(self, obj: object, cls: object = None) -> Compiled:
            return self

        def __call__(self, subsystem: str) -> None:
            return None

    values: dict[str, object] = {
        "bkt_manifest_sources": hookimpl(cast(Any, Compiled())),
        "bkt_subsystems": hookimpl(bkt_subsystems),
        "unmarked": unmarked,
        "bkt_manifest_fields": staticmethod(hookimpl(lambda subsystem: None)),
        "bkt_cli_commands": hookimpl(cast(Any, classmethod(lambda cls, cli: None))),
        "constant": 3,
        "Cls": Color,
    }
    for name, value in values.items():
        setattr(odd, name, value)
    plugins = [*default_plugins(), ("odd", odd), ("color", Color())]
    found = _hooks_found(_PluginManager(hookspecs.PROJECT), plugins)
    assert found == _hooks_found(pluggy.PluginManager(hookspecs.PROJECT), plugins)
    hooks = {(impl[0], hook) for hook, _spec, impls in found for impl in impls}
    assert ("odd", "bkt_subsystems") in hooks


def test_the_bkt_process_runs_with_the_collectors_slower_pace() -> None:
    # The console script (console_main) sets it for its process; main(), called by an
    # embedder, leaves the embedder's own alone.
    code = (
        "import gc, sys; from bkt_core import cli; print(gc.get_threshold()); "
        "cli._run_cli = lambda args, began: print(gc.get_threshold()) or 0; "
        "sys.argv = ['bkt', 'plugins']; cli.console_main()"
    )
    environ = {**os.environ, "BKT_NO_CACHE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    ).stdout
    # Python's own pace in a fresh process (this one's may have been changed by another test).
    python, bkt = (ast.literal_eval(line) for line in out.split("\n")[:2])
    assert python[0] != cli.GC_THRESHOLD
    assert bkt == (cli.GC_THRESHOLD, *python[1:])
    before = gc.get_threshold()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BKT_NO_CACHE", "1")
        patch.setattr(cli, "_run_cli", lambda args, began: 0)
        assert cli.main(["plugins"]) == 0
    assert gc.get_threshold() == before


_EXIT_PROBE = """
import atexit, sys
from bkt_core import cli

class Teardown:
    def __del__(self):
        print("teardown", flush=True)

kept = Teardown()  # freed only by the interpreter's teardown
if sys.argv[1] == "handler-first":
    atexit.register(lambda: print("earlier handler", flush=True))

def run(args, began):
    # What a plugin may do while the command runs: an exit handler, output left unflushed.
    atexit.register(lambda: print("plugin handler", flush=True))
    sys.stdout.write("unflushed output")
    return 3

cli._run_cli = run
sys.argv = ["bkt", "plugins"]
cli.console_main()
"""


@pytest.mark.parametrize("case", ["alone", "handler-first"])
def test_the_bkt_process_ends_after_its_exit_handlers_without_the_teardown(case: str) -> None:
    # The console script's main() exits with the command's status once the exit handlers
    # ran and the output is flushed; Python's teardown (which would free `kept`) is skipped,
    # unless an exit handler registered before main() would have run after it.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE, case],
        env={**os.environ, "BKT_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == ""
    if case == "alone":
        assert done.stdout == "unflushed outputplugin handler\n"
    else:
        assert done.stdout == "unflushed outputplugin handler\nearlier handler\nteardown\n"


def test_main_called_by_an_embedder_keeps_the_embedders_exit() -> None:
    # main() without argv exits with sys.exit; a caller that catches that, and exits with a
    # status of its own (or fails), ends as Python ends it: bkt's end of the process is the
    # console script's only.
    code = (
        "import sys; from bkt_core import cli; sys.argv = ['bkt', '--version']\n"
        "try:\n    cli.main()\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (3, f"bkt {cli.version()}\n"), done.stderr
