"""The hook signature checker: mypy --strict over a stub that calls each implementation as its
hook's specification would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bkt_core.host import Host
from bkt_core.typecheck import check_modules, main
from bkt_vm_plugin import default_plugins

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"

WRONG = """
from __future__ import annotations

from bkt_core import hookimpl


@hookimpl
def bkt_disk_plan(name: int, vm: object) -> str:
    return "x"


@hookimpl
def bkt_post_sync(report: object) -> bool:
    return True


@hookimpl
def bkt_manifest_fields(subsystem: str, colour: str) -> None:
    return None


@hookimpl
def bkt_frobnicate() -> None:
    pass


@hookimpl(wrapper=True)
def bkt_disk_provision(creation: object) -> object:
    return (yield)
"""


@pytest.fixture(autouse=True)
def mypy_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache for the module's runs: the second one is fast.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def vm_host() -> Host:
    return Host(entry_points=False, plugins=default_plugins())


def test_the_default_and_the_example_plugins_match_their_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for example in ("bkt-power-state", "bkt-base-image"):
        monkeypatch.syspath_prepend(str(EXAMPLES / example))
    modules = [
        "bkt_vm_plugin",
        "bkt_vm_plugin.cpu_model",
        "bkt_vm_plugin.autostart",
        "bkt_vm_plugin.provision",
        "bkt_power_state",
        "bkt_base_image",
    ]
    report = check_modules(modules, host=vm_host())
    assert report.problems == []
    # Every implementation was checked: vm 5, cpu_model 3, autostart 3, provision 2,
    # bkt-power-state 3, bkt-base-image 4.
    assert report.checked == 20


#: The test plugins that break the contract at import or registration, on purpose.
BROKEN_ON_PURPOSE = ("bkt-bad-hook", "bkt-broken")


def test_the_test_plugins_match_their_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = ROOT / "tests" / "plugins"
    modules = []
    for project in sorted(plugins.iterdir()):
        if project.name in BROKEN_ON_PURPOSE or not project.is_dir():
            continue
        monkeypatch.syspath_prepend(str(project))
        modules.append(project.name.replace("-", "_"))
    assert len(modules) >= 8
    report = check_modules(modules, host=vm_host())
    assert report.problems == []
    assert report.checked >= len(modules)


def test_a_wrong_plugin_fails_with_mypys_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wrong_plugin.py").write_text(WRONG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wrong_plugin", raising=False)
    report = check_modules(["wrong_plugin"], host=vm_host())
    assert report.checked == 2
    assert sorted(report.problems) == sorted(
        [
            'wrong_plugin.bkt_disk_plan: error: Argument "name" to "bkt_disk_plan" has '
            'incompatible type "str"; expected "int"  [arg-type]',
            'wrong_plugin.bkt_disk_plan: error: Incompatible return value type (got "str", '
            'expected "DiskCreation | None")  [return-value]',
            "wrong_plugin.bkt_post_sync: error: Incompatible types in assignment (expression "
            'has type "Callable[[object], bool]", variable has type "Callable[..., None]")  '
            "[assignment]",
            "wrong_plugin.bkt_manifest_fields: error: accepts 'colour', which "
            "bkt_manifest_fields does not pass (it passes subsystem)",
            "wrong_plugin.bkt_frobnicate: error: bkt_frobnicate is not a hook of bkt",
        ]
    )
    # The command line: mypy's messages on stdout, exit status 1.
    assert main(["wrong_plugin"]) == 1
    assert "Incompatible return value type" in capsys.readouterr().out


def test_a_module_that_cannot_be_imported_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["no_such_plugin_module"]) == 2
    assert "cannot import no_such_plugin_module" in capsys.readouterr().err
    assert main([]) == 2


OBJECT_PLUGIN = """
from __future__ import annotations

from bkt_core import hookimpl


class Plugin:
    @hookimpl
    def bkt_disk_provision(self, creation: int, context: object) -> bool | None:
        return None

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> None:
        return None

    def helper(self) -> None:
        pass


plugin = Plugin()
"""


def test_hooks_that_are_methods_of_an_object_are_checked_as_module_colon_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "object_plugin.py").write_text(OBJECT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "object_plugin", raising=False)
    report = check_modules(["object_plugin:plugin"], host=vm_host())
    assert report.checked == 2
    assert report.problems == [
        'object_plugin:plugin.bkt_disk_provision: error: Argument "creation" to '
        '"bkt_disk_provision" of "Plugin" has incompatible type "DiskCreation"; expected '
        '"int"  [arg-type]'
    ]
    assert main(["object_plugin:plugin"]) == 1
    assert 'expected "int"' in capsys.readouterr().out


def test_a_module_without_hook_implementations_fails_and_says_where_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "object_plugin.py").write_text(OBJECT_PLUGIN)
    (tmp_path / "empty_plugin.py").write_text("from bkt_core import hookimpl\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("object_plugin", "empty_plugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    report = check_modules(["object_plugin", "empty_plugin"], host=vm_host())
    assert report.checked == 0
    assert report.problems == [
        "object_plugin: error: no hook implementation found (a bkt_* function marked with "
        "@hookimpl); its hooks are methods of an object: check object_plugin:plugin",
        "empty_plugin: error: no hook implementation found (a bkt_* function marked with "
        "@hookimpl)",
    ]
    assert main(["empty_plugin"]) == 1
    out = capsys.readouterr().out
    assert "no hook implementation found" in out
    assert "ok:" not in out


def test_an_object_the_module_does_not_have_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "object_plugin.py").write_text(OBJECT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "object_plugin", raising=False)
    assert main(["object_plugin:nothing"]) == 2
    assert "module object_plugin has no 'nothing'" in capsys.readouterr().err
