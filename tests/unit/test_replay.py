"""A command line run again unchanged runs its command without click (bkt_core.cli).

What these tests prove:

- ``_invocation`` remembers, of a command run through ``run_command`` while click runs a
  command, the body by module and name, the global options and the parameters as JSON, the
  code the parse and the body came from (with each file's signature) and the plugins; and
  nothing when the command could not be run again from that: no click command running, a
  plugin's commands failed, a parameter or option that is not a plain value, a body that is
  not a function its module names;
- ``_check_invocation`` gives back, from the JSON of what ``_invocation`` remembered, the
  very body function with its options and parameters (lists as tuples), and refuses with a
  ValueError a record of another format, malformed, with other global options or values, of
  other plugins or other code, or naming something that is not such a function;
- ``_run_cli`` runs a remembered command without building the command line (and without
  click importable at all), with the remembered options, and maps its error to its exit code;
  a stale one is parsed again, and ``-v`` says why; a command whose plugin's commands failed
  is not remembered;
- end to end through the record of the command line (bkt_core.prestart): the second run of
  a command line runs the remembered body without building the command line.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

import bkt_core
import bkt_core.host
from bkt_core import cli, hookimpl, prestart
from bkt_core.cache import file_signature
from bkt_core.cli import (
    Cli,
    _check_invocation,
    _invocation,
    command_body,
    pass_cli,
    run_command,
)
from bkt_core.errors import OperationError
from bkt_core.host import Host
from bkt_core.output import Printer
from bkt_core.process import SubprocessRunner, start
from bkt_vm_plugin import actions, commands, default_plugins

#: Global options as click parses them for `bkt vm status`.
OPTIONS: dict[str, Any] = {
    "manifest_dir": None,
    "connect": None,
    "verbose": 0,
    "quiet": False,
    "color": "auto",
    "disabled": (),
    "no_cache": False,
}
STATUS_PARAMS: dict[str, Any] = {"names": ("a", "b"), "all_": False, "as_json": True}

#: What the bodies below ran with, in order.
RUNS: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _one_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("BKT_NO_CACHE", "BKT_DISABLE_PLUGINS", "BKT_MANIFEST_DIR", cli.COMPLETE_VAR):
        monkeypatch.delenv(name, raising=False)
    RUNS.clear()
    yield
    prestart.end()


# -- bodies and commands of this module ----------------------------------------------------


@command_body
def replayed(app: Cli, names: tuple[str, ...] = (), *, flag: bool) -> None:
    """A body: says what it ran with."""
    RUNS.append(
        {
            "names": names,
            "flag": flag,
            "options": dict(app.options),
            "verbosity": app.printer.verbosity,
            "manifest_dir": app.host.manifest_dir,
            "uri": app.host.uri,
            "repeatable": app.repeatable,
        }
    )


@command_body
def failing(app: Cli) -> None:
    """A body that fails as a command does."""
    raise OperationError("x")


@command_body
def reading(app: Cli) -> None:
    """A body that, as `bkt vm status` does, starts a prestartable child first."""
    argv = (sys.executable, "-c", f"print({prestart.token()!r})")
    done = start(SubprocessRunner(), argv, timeout=30.0, prestart=True).wait()
    RUNS.append({"returncode": done.returncode, "stdout": done.stdout})


@click.command(name="replay-test")
@click.argument("names", nargs=-1)
@click.option("--flag", is_flag=True)
@pass_cli
def replay_command(app: Cli, names: tuple[str, ...], flag: bool) -> None:
    run_command(app, replayed, names=names, flag=flag)


@click.command(name="read-test")
@pass_cli
def read_command(app: Cli) -> None:
    run_command(app, reading)


class ReplayPlugin:
    """Adds the commands above to `bkt`."""

    bkt_plugin_name = "replay-test"

    @hookimpl
    def bkt_cli_commands(self, cli: click.Group) -> None:
        cli.add_command(replay_command)
        cli.add_command(read_command)


class BrokenCommands:
    """A plugin whose commands cannot be added."""

    bkt_plugin_name = "broken-commands"

    @hookimpl
    def bkt_cli_commands(self, cli: click.Group) -> None:
        raise RuntimeError("no commands today")


def host_with(*plugins: object) -> type[Host]:
    """The Host that `_run_cli` builds, with ``plugins`` registered besides the installed ones."""

    class PluginHost(Host):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, plugins=plugins, **kwargs)

    return PluginHost


# -- helpers -----------------------------------------------------------------------------


def vm_host() -> Host:
    """bkt's plugins and this module's (whose functions may then be remembered)."""
    return Host(entry_points=False, plugins=[*default_plugins(), ReplayPlugin()])


def invocation_in(
    command: click.Command,
    app: Cli,
    body: Callable[..., None],
    params: dict[str, Any],
) -> Any:
    """What ``_invocation`` remembers of ``body(app, **params)`` while click runs ``command``
    (parsed from an empty command line: every value its default)."""
    with command.make_context(command.name, []):
        return _invocation(app, body, params)


def status_invocation(host: Host) -> Any:
    """What `bkt vm status a b --json` remembers, as JSON gives it back."""
    invocation = invocation_in(
        commands.status, Cli(host, Printer(), OPTIONS), actions.run_status, STATUS_PARAMS
    )
    assert invocation is not None
    return json.loads(json.dumps(invocation))


def code_row(module: str) -> list[Any]:
    file = sys.modules[module].__file__
    assert file is not None
    return [module, file, file_signature(file)]


# -- _invocation -------------------------------------------------------------------------


def test_an_invocation_names_the_body_its_parameters_the_code_and_the_plugins() -> None:
    host = vm_host()
    invocation = invocation_in(
        commands.status, Cli(host, Printer(), OPTIONS), actions.run_status, STATUS_PARAMS
    )
    assert invocation == {
        "format": 1,
        "body": ["bkt_vm_plugin.actions", "run_status"],
        "options": {**OPTIONS, "disabled": []},
        "params": {"names": ["a", "b"], "all_": False, "as_json": True},
        # The body's module, the command's click definitions, bkt's global options, click.
        "code": [
            code_row("bkt_core.cli"),
            code_row("bkt_vm_plugin.actions"),
            code_row("bkt_vm_plugin.commands"),
            code_row("click"),
        ],
        "plugins": host.plugin_identity(),
    }
    assert all(row[2] is not None for row in invocation["code"])
    assert json.loads(json.dumps(invocation)) == invocation  # plain JSON


def test_nothing_is_remembered_outside_a_click_command() -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    assert click.get_current_context(silent=True) is None
    assert _invocation(app, actions.run_status, STATUS_PARAMS) is None


def test_nothing_is_remembered_of_an_app_that_is_not_repeatable() -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    app.repeatable = False
    assert invocation_in(commands.status, app, actions.run_status, STATUS_PARAMS) is None


@pytest.mark.parametrize(
    "value",
    [Path("manifests"), [1, 2], ["a"], (1, 2), ("a", None), {"a": 1}, object()],
    ids=[
        "path",
        "list-of-ints",
        "list-of-str",
        "tuple-of-ints",
        "tuple-with-none",
        "dict",
        "object",
    ],
)
def test_nothing_is_remembered_with_a_parameter_that_is_not_a_plain_value(value: object) -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    params = {**STATUS_PARAMS, "names": value}
    assert invocation_in(commands.status, app, actions.run_status, params) is None


@pytest.mark.parametrize(
    "options",
    [
        {},
        {k: v for k, v in OPTIONS.items() if k != "no_cache"},
        {**OPTIONS, "jobs": 4},
        {**OPTIONS, "manifest_dir": Path("manifests")},
    ],
    ids=["none", "one-missing", "one-more", "a-path"],
)
def test_nothing_is_remembered_with_other_global_options(options: dict[str, Any]) -> None:
    app = Cli(vm_host(), Printer(), options)
    assert invocation_in(commands.status, app, actions.run_status, STATUS_PARAMS) is None


def _nested() -> Callable[..., None]:
    def body(app: Cli, **params: Any) -> None:
        pass

    return body


@pytest.mark.parametrize(
    "body",
    [lambda app, **params: None, _nested()],
    ids=["lambda", "nested-function"],
)
def test_nothing_is_remembered_of_a_body_its_module_does_not_name(
    body: Callable[..., None],
) -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    assert invocation_in(commands.status, app, body, {}) is None


def unmarked(app: Cli, **params: Any) -> None:
    """A function of this module, not marked as a command body."""


def test_nothing_is_remembered_of_a_function_not_marked_as_a_command_body() -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    assert invocation_in(commands.status, app, unmarked, {}) is None
    try:
        assert invocation_in(commands.status, app, command_body(unmarked), {}) is not None
    finally:
        del unmarked.__bkt_command_body__  # type: ignore[attr-defined]


class _Callable:
    def __call__(self, app: Cli, **params: Any) -> None:
        replayed(app, **params)


@pytest.mark.parametrize(
    "body", [functools.partial(replayed), _Callable()], ids=["partial", "callable-object"]
)
def test_a_callable_that_is_not_a_function_is_run_and_not_remembered(
    body: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _remembering(monkeypatch)
    app = Cli(vm_host(), Printer(), OPTIONS)
    with replay_command.make_context("replay-test", []):
        run_command(app, body, names=("a",), flag=True)
    assert [(run["names"], run["flag"]) for run in RUNS] == [(("a",), True)]
    assert kept == [None]  # nothing, in place of what the record held


# -- _check_invocation -------------------------------------------------------------------


def test_what_was_remembered_runs_the_same_body_with_the_same_values() -> None:
    host = vm_host()
    body, options, params = _check_invocation(status_invocation(host), host)
    assert body is actions.run_status
    assert options == OPTIONS
    assert type(options["disabled"]) is tuple
    assert params == STATUS_PARAMS
    assert type(params["names"]) is tuple


def test_a_disabled_plugin_and_every_verbosity_come_back() -> None:
    host = vm_host()
    given = {**OPTIONS, "verbose": 3, "disabled": ("os", "cpu_model"), "color": "never"}
    invocation = invocation_in(
        commands.status, Cli(host, Printer(), given), actions.run_status, STATUS_PARAMS
    )
    assert _check_invocation(json.loads(json.dumps(invocation)), host)[1] == given


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(invocation: dict[str, Any]) -> None:
        target: Any = invocation
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(invocation: dict[str, Any]) -> None:
        target: Any = invocation
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _code_of(module: str, file: str, signature: object) -> Callable[[dict[str, Any]], None]:
    def change(invocation: dict[str, Any]) -> None:
        [row] = [row for row in invocation["code"] if row[0] == module]
        row[1:] = [file, signature]

    return change


def _another_file(invocation: dict[str, Any]) -> None:
    # A real file with its real signature, only not the file the module was loaded from.
    other = bkt_core.__file__
    assert other is not None
    _code_of("bkt_vm_plugin.actions", other, file_signature(other))(invocation)


def _signature_of(module: str, signature: object) -> Callable[[dict[str, Any]], None]:
    def change(invocation: dict[str, Any]) -> None:
        [row] = [row for row in invocation["code"] if row[0] == module]
        row[2] = signature

    return change


def _more_code(*row: object) -> Callable[[dict[str, Any]], None]:
    def change(invocation: dict[str, Any]) -> None:
        invocation["code"].append(list(row))

    return change


NOT_REMEMBERED = "is not one this version of bkt remembers"
OTHER_OPTIONS = "has global options this version of bkt does not have"
OTHER_VALUES = "has values this version of bkt does not give"
OTHER_PLUGINS = "ran with other plugins"
OTHER_CODE = "ran other code"
NOT_A_FUNCTION = "which is not a function bkt runs"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(_set("format", value=2), NOT_REMEMBERED, id="another-format"),
        pytest.param(_set("format", value="1"), NOT_REMEMBERED, id="format-as-text"),
        pytest.param(
            _set("body", value="bkt_vm_plugin.actions.run_status"), NOT_REMEMBERED, id="body-str"
        ),
        pytest.param(_set("body", value=["run_status"]), NOT_REMEMBERED, id="body-one-part"),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.actions", "run_status", "x"]),
            NOT_REMEMBERED,
            id="body-three-parts",
        ),
        pytest.param(_set("body", 1, value=None), NOT_REMEMBERED, id="body-part-not-str"),
        pytest.param(_set("options", value=None), NOT_REMEMBERED, id="options-not-a-dict"),
        pytest.param(_set("params", value=[]), NOT_REMEMBERED, id="params-not-a-dict"),
        pytest.param(_set("code", value=[]), NOT_REMEMBERED, id="no-code"),
        pytest.param(_set("code", 0, value=["bkt_core.cli"]), NOT_REMEMBERED, id="short-code-row"),
        pytest.param(_delete("options", "no_cache"), OTHER_OPTIONS, id="option-missing"),
        pytest.param(_set("options", "jobs", value=4), OTHER_OPTIONS, id="option-extra"),
        pytest.param(_set("options", "verbose", value=True), OTHER_OPTIONS, id="verbose-bool"),
        pytest.param(_set("options", "quiet", value=1), OTHER_OPTIONS, id="quiet-int"),
        pytest.param(_set("options", "manifest_dir", value=3), OTHER_OPTIONS, id="dir-int"),
        pytest.param(_set("options", "disabled", value="os"), OTHER_OPTIONS, id="disabled-str"),
        pytest.param(_set("options", "color", value="purple"), OTHER_VALUES, id="unknown-color"),
        pytest.param(_set("options", "disabled", value=[1]), OTHER_VALUES, id="disabled-int"),
        pytest.param(_set("params", "names", value={"a": 1}), OTHER_VALUES, id="param-dict"),
        pytest.param(_set("params", "names", value=[1, 2]), OTHER_VALUES, id="param-ints"),
        pytest.param(_set("params", "names", value=[["a"]]), OTHER_VALUES, id="param-nested"),
        pytest.param(_set("plugins", 0, 2, value="0.0.0"), OTHER_PLUGINS, id="plugin-version"),
        pytest.param(_set("plugins", 0, 5, value=[0, 0]), OTHER_PLUGINS, id="plugin-changed"),
        pytest.param(_set("plugins", value=[]), OTHER_PLUGINS, id="no-plugins"),
        pytest.param(_delete("plugins"), OTHER_PLUGINS, id="plugins-missing"),
        pytest.param(
            _signature_of("bkt_vm_plugin.actions", [0, 0]), OTHER_CODE, id="body-code-changed"
        ),
        pytest.param(
            _signature_of("bkt_vm_plugin.commands", [1, 2]), OTHER_CODE, id="click-code-changed"
        ),
        pytest.param(_signature_of("bkt_core.cli", None), OTHER_CODE, id="signature-none"),
        pytest.param(
            # A file that is gone, and was when it was remembered: not the same file.
            _more_code("bkt_not_loaded", "/no/such/file.py", None),
            OTHER_CODE,
            id="file-gone-then-and-now",
        ),
        pytest.param(_another_file, OTHER_CODE, id="another-file"),
        pytest.param(
            _code_of("bkt_core.cli", "/no/such/file.py", [1, 2]), OTHER_CODE, id="file-gone"
        ),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.actions", "OperationError"]),
            NOT_A_FUNCTION,
            id="body-an-exception-class",
        ),
        pytest.param(
            _set("body", value=["bkt_core.cli", "Cli"]), NOT_A_FUNCTION, id="body-a-class"
        ),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.commands", "status"]),
            NOT_A_FUNCTION,
            id="body-a-click-command",
        ),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.commands", "run_status"]),
            NOT_A_FUNCTION,
            id="body-an-alias",
        ),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.actions", "vm_subsystem"]),
            NOT_A_FUNCTION,
            id="body-a-function-not-marked",
        ),
        pytest.param(
            _set("body", value=["shutil", "rmtree"]),
            NOT_A_FUNCTION,
            id="body-a-function-of-another-module",
        ),
        pytest.param(
            _set("body", value=["bkt_vm_plugin.actions", "no_such_function"]),
            NOT_A_FUNCTION,
            id="body-missing",
        ),
        pytest.param(
            _set("body", value=["bkt_no_such_module", "run_status"]),
            NOT_A_FUNCTION,
            id="body-module-missing",
        ),
    ],
)
def test_what_cannot_run_again_is_refused_with_the_reason(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    host = vm_host()
    invocation = status_invocation(host)
    _check_invocation(invocation, host)  # as remembered, accepted
    change(invocation)
    with pytest.raises(ValueError, match=reason):
        _check_invocation(invocation, host)


@pytest.mark.parametrize("invocation", [None, [], "run_status", {"format": 1}])
def test_what_is_not_an_invocation_is_refused(invocation: object) -> None:
    with pytest.raises(ValueError, match=NOT_REMEMBERED):
        _check_invocation(invocation, vm_host())


def test_another_set_of_plugins_is_other_plugins() -> None:
    invocation = status_invocation(vm_host())
    with pytest.raises(ValueError, match=OTHER_PLUGINS):
        _check_invocation(invocation, Host(entry_points=False, plugins=default_plugins()[:-1]))


def test_a_relative_module_name_is_refused_as_any_other() -> None:
    host = vm_host()
    invocation = status_invocation(host)
    invocation["body"] = [".actions", "run_status"]
    with pytest.raises(ValueError, match=NOT_A_FUNCTION):
        _check_invocation(invocation, host)


def test_parameters_the_body_does_not_take_are_refused() -> None:
    host = vm_host()
    invocation = status_invocation(host)
    invocation["params"] = {**invocation["params"], "colour": True}
    with pytest.raises(ValueError, match="parameters it does not take"):
        _check_invocation(invocation, host)


# -- run_command -------------------------------------------------------------------------


def _remembering(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    remembered: list[object] = []
    monkeypatch.setattr(prestart, "remember", remembered.append)
    return remembered


def test_run_command_remembers_what_it_runs_then_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _remembering(monkeypatch)
    host = vm_host()
    app = Cli(host, Printer(), OPTIONS)
    with replay_command.make_context("replay-test", []):
        run_command(app, replayed, names=("a",), flag=True)
    assert [(run["names"], run["flag"]) for run in RUNS] == [(("a",), True)]
    [invocation] = kept
    assert invocation == invocation_in(
        replay_command, Cli(host, Printer(), OPTIONS), replayed, {"names": ("a",), "flag": True}
    )
    assert _check_invocation(invocation, host)[0] is replayed


def test_a_command_whose_plugin_failed_runs_and_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = _remembering(monkeypatch)
    app = Cli(vm_host(), Printer(), OPTIONS)
    app.repeatable = False
    with replay_command.make_context("replay-test", []):
        run_command(app, replayed, names=("a",), flag=False)
    assert [(run["names"], run["flag"]) for run in RUNS] == [(("a",), False)]
    assert kept == []


def test_the_command_line_remembers_a_command_it_parsed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _remembering(monkeypatch)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    assert cli._run_cli(["replay-test", "a", "-v", "--flag"], began=True) == 0
    assert [(run["names"], run["flag"], run["verbosity"]) for run in RUNS] == [(("a",), True, 1)]
    [invocation] = kept
    host = host_with(ReplayPlugin())(strict=False)
    body, options, params = _check_invocation(json.loads(json.dumps(invocation)), host)
    assert (body, options, params) == (
        replayed,
        {**OPTIONS, "verbose": 1},
        {"names": ("a",), "flag": True},
    )


def test_the_command_line_does_not_remember_a_command_when_a_plugin_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _remembering(monkeypatch)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin(), BrokenCommands()))
    assert cli._run_cli(["replay-test", "a"], began=True) == 0
    assert [(run["names"], run["repeatable"]) for run in RUNS] == [(("a",), False)]
    assert kept == []
    assert "no commands today" in capsys.readouterr().err


# -- _run_cli with a remembered command -------------------------------------------------


REPLAYED_OPTIONS: dict[str, Any] = {
    **OPTIONS,
    "manifest_dir": "/srv/manifests",
    "connect": "qemu:///session",
    "verbose": 2,
    "color": "never",
}


def record_of(body: Callable[..., None], options: dict[str, Any], **params: Any) -> Any:
    """What a run of `bkt replay-test` that ran ``body`` remembers, as the record gives it
    back: of the Host that `_run_cli` builds (the installed plugins and this module's)."""
    app = Cli(host_with(ReplayPlugin())(strict=False), Printer(), options)
    invocation = invocation_in(replay_command, app, body, params)
    assert invocation is not None
    return json.loads(json.dumps(invocation))


def clis_built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, the arguments of each command line click is given (cli.build_cli)."""
    built: list[object] = []
    build_cli = cli.build_cli

    def spy(*args: Any, **kwargs: Any) -> click.Group:
        built.append(args)
        return build_cli(*args, **kwargs)

    monkeypatch.setattr(cli, "build_cli", spy)
    return built


def _no_command_line(*args: object, **kwargs: object) -> click.Group:
    raise AssertionError("the command line was built")


def test_a_remembered_command_runs_without_click(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invocation = record_of(replayed, REPLAYED_OPTIONS, names=("a", "b"), flag=True)
    monkeypatch.setattr(prestart, "remembered", lambda: invocation)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    kept = _remembering(monkeypatch)
    monkeypatch.setattr(cli, "build_cli", _no_command_line)
    # Not even importable: the command must not need click.
    monkeypatch.setitem(sys.modules, "click", None)
    assert cli._run_cli(["-vv", "replay-test", "a", "b", "--flag"], began=True) == 0
    [run] = RUNS
    assert run == {
        "names": ("a", "b"),
        "flag": True,
        "options": REPLAYED_OPTIONS,
        "verbosity": 2,
        "manifest_dir": Path("/srv/manifests"),
        "uri": "qemu:///session",
        "repeatable": True,
    }
    # The record keeps saying what this command line runs.
    assert kept == [invocation]
    assert "parsed again" not in capsys.readouterr().err


def test_the_printer_and_host_follow_the_remembered_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = {**OPTIONS, "quiet": True}
    invocation = record_of(replayed, options, names=(), flag=False)
    monkeypatch.setattr(prestart, "remembered", lambda: invocation)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    monkeypatch.setattr(cli, "build_cli", _no_command_line)
    assert cli._run_cli(["-q", "replay-test"], began=True) == 0
    [run] = RUNS
    assert (run["verbosity"], run["manifest_dir"], run["uri"]) == (-1, Path("manifests"), None)


def test_a_remembered_command_that_fails_exits_with_its_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invocation = record_of(failing, OPTIONS)
    monkeypatch.setattr(prestart, "remembered", lambda: invocation)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    monkeypatch.setattr(cli, "build_cli", _no_command_line)
    monkeypatch.setitem(sys.modules, "click", None)
    assert cli._run_cli(["replay-test"], began=True) == OperationError("x").exit_code
    out, err = capsys.readouterr()
    assert "x" in err.splitlines()[-1]
    assert out == ""


@pytest.mark.parametrize("verbose", [True, False], ids=["-v", "quiet"])
def test_a_stale_command_is_parsed_again(
    verbose: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invocation = record_of(replayed, OPTIONS, names=(), flag=False)
    invocation["plugins"][0][2] = "0.0.0"  # an upgraded plugin
    monkeypatch.setattr(prestart, "remembered", lambda: invocation)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    built = clis_built(monkeypatch)
    args = ["plugins", "--json"]
    assert cli._run_cli(["-v", *args] if verbose else args, began=True) == 0
    assert len(built) == 1
    assert RUNS == []
    out, err = capsys.readouterr()
    assert "vm" in [plugin["name"] for plugin in json.loads(out)["plugins"]]  # as parsed
    note = "the command this command line ran before ran with other plugins: parsed again"
    assert (note in err) is verbose


# -- end to end, through the record of the command line ---------------------------------


def test_the_second_run_of_a_command_line_runs_its_command_without_parsing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The child here is this Python, which bkt itself never starts early.
    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({sys.executable}))
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    args = ["read-test"]
    assert cli.main(args) == 0
    assert len(RUNS) == 1
    [record] = (Path(os.environ["XDG_CACHE_HOME"]) / "bkt").glob("prestart-*.json")
    invocation = json.loads(record.read_text())["invocation"]
    assert invocation["body"] == [__name__, "reading"]

    monkeypatch.setattr(cli, "build_cli", _no_command_line)
    assert cli.main(args) == 0
    assert len(RUNS) == 2
    assert all(run["returncode"] == 0 for run in RUNS)


def test_a_stale_command_is_remembered_anew_with_the_same_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the record remembers is replaced even when the batch it starts early is the same
    # (an upgrade, an edited plugin): the run after the one that parsed again replays.
    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({sys.executable}))
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    args = ["read-test"]
    assert cli.main(args) == 0
    [record] = (Path(os.environ["XDG_CACHE_HOME"]) / "bkt").glob("prestart-*.json")
    stale = json.loads(record.read_text())
    stale["invocation"]["plugins"][0][2] = "0.0.1"  # as if made by another version
    record.write_text(json.dumps(stale))

    built = clis_built(monkeypatch)
    assert cli.main(args) == 0  # parsed again, with the early child of the same batch
    assert len(built) == 1
    fresh = json.loads(record.read_text())
    assert fresh["argv"] == stale["argv"]
    assert fresh["invocation"]["plugins"] != stale["invocation"]["plugins"]
    monkeypatch.setattr(cli, "build_cli", _no_command_line)
    assert cli.main(args) == 0
    assert [run["returncode"] for run in RUNS] == [0, 0, 0]


def test_a_command_within_a_command_neither_replays_nor_remembers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invocation = record_of(replayed, OPTIONS, names=("a",), flag=True)
    monkeypatch.setattr(prestart, "remembered", lambda: invocation)
    monkeypatch.setattr(bkt_core.host, "Host", host_with(ReplayPlugin()))
    kept = _remembering(monkeypatch)
    # began=False: _run did not begin the command (one runs already in this thread).
    assert cli._run_cli(["plugins", "--json"], began=False) == 0
    assert RUNS == []
    assert '"plugins"' in capsys.readouterr().out
    assert cli._run_cli(["replay-test", "b"], began=False) == 0
    assert [run["names"] for run in RUNS] == [("b",)]
    assert kept == []


@command_body
def second(app: Cli) -> None:
    RUNS.append({"second": True})


@click.command(name="two-bodies")
@pass_cli
def two_bodies_command(app: Cli) -> None:
    run_command(app, replayed, names=(), flag=False)
    run_command(app, second)


def test_a_command_that_runs_two_bodies_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = _remembering(monkeypatch)
    app = Cli(vm_host(), Printer(), OPTIONS)
    with two_bodies_command.make_context("two-bodies", [], obj=app) as ctx:
        two_bodies_command.invoke(ctx)
    assert len(RUNS) == 2
    assert kept[0] is not None and kept[1:] == [None]


@click.group(name="grp")
@click.option("--profile")
def group_with_options(profile: str | None) -> None:
    pass


@group_with_options.command(name="go")
@pass_cli
def grouped(app: Cli) -> None:
    run_command(app, replayed, names=(), flag=False)


@pytest.mark.parametrize(
    "case",
    ["group-with-options", "environment-variable", "prompt", "callback", "path-type"],
)
def test_what_does_not_come_from_the_command_line_is_not_remembered(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Cli(vm_host(), Printer(), OPTIONS)
    if case == "group-with-options":
        root = click.Group("bkt", commands=[group_with_options])
        with root.make_context("bkt", ["grp", "--profile", "x", "go"]) as ctx:
            group_ctx = group_with_options.make_context(
                "grp", ["--profile", "x", "go"], parent=ctx
            )
            with grouped.make_context("go", [], parent=group_ctx):
                assert _invocation(app, replayed, {"names": (), "flag": False}) is None
        return
    option = {
        "environment-variable": click.Option(["--who"], envvar="BKT_TEST_WHO"),
        "prompt": click.Option(["--who"], prompt=True),
        "callback": click.Option(["--who"], callback=lambda ctx, param, value: value),
        "path-type": click.Option(["--who"], type=click.Path(exists=False)),
    }[case]
    monkeypatch.setenv("BKT_TEST_WHO", "env")
    monkeypatch.setattr("click.termui.visible_prompt_func", lambda prompt: "typed")
    command = click.Command("who", params=[option], callback=lambda who: None)
    args = ["--who", "x"] if case in ("callback", "path-type") else []
    with command.make_context("who", args):
        assert _invocation(app, replayed, {"names": (), "flag": False}) is None
    plain = click.Command("who", params=[click.Option(["--who"])], callback=lambda who: None)
    with plain.make_context("who", ["--who", "x"]):
        assert _invocation(app, replayed, {"names": (), "flag": False}) is not None


def test_a_body_outside_bkt_and_the_plugins_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = vm_host()
    invocation = status_invocation(host)
    invocation["body"] = ["this", "x"]  # importing it prints the Zen of Python
    monkeypatch.delitem(sys.modules, "this", raising=False)
    with pytest.raises(ValueError, match=NOT_A_FUNCTION):
        _check_invocation(invocation, host)
    assert "this" not in sys.modules
