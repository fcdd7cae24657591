"""The plugin contract from the command line, with a pip-installed plugin that breaks it
(``tests/plugins/bkt-misbehaves``, told how by ``$MISBEHAVE``): every failure is an error
naming the plugin and the hook, never a traceback, a silent exit or a hang, and a broken
command hook never locks the user out of ``bkt plugins``, ``--version`` and
``--disable-plugin``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bkt_core import __version__
from tests.conftest import RunBkt, write_manifest

PluginSite = Callable[[str], Path]

PLUGIN = "tests/plugins/bkt-misbehaves"
FIELDS = "expected a mapping of field names to (annotation, FieldInfo) pairs (or None)"


@pytest.fixture
def site(plugin_site: PluginSite, tmp_path: Path) -> Path:
    write_manifest(tmp_path / "manifests", '{"vms": {}}')
    return plugin_site(PLUGIN)


@pytest.mark.parametrize(
    ("misbehave", "error"),
    [
        ("exit", "plugin misbehaves in bkt_validate_manifest: SystemExit: 7"),
        ("interrupt", "plugin misbehaves in bkt_validate_manifest: KeyboardInterrupt"),
        ("wrong-type", f"plugin misbehaves in bkt_manifest_fields: returned a list, {FIELDS}"),
    ],
)
def test_a_plugin_that_breaks_the_contract_is_an_error_naming_it(
    run_bkt: RunBkt, site: Path, misbehave: str, error: str
) -> None:
    result = run_bkt("vm", "validate", pythonpath=[site], env={"MISBEHAVE": misbehave})
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {error}\n")
    fine = run_bkt("vm", "validate", pythonpath=[site])
    assert (fine.returncode, fine.stdout, fine.stderr) == (0, "ok: 0 VMs\n", "")


def test_a_plugin_that_exits_while_imported_is_a_warning_naming_it(
    run_bkt: RunBkt, site: Path
) -> None:
    result = run_bkt("vm", "validate", pythonpath=[site], env={"MISBEHAVE": "import-exit"})
    assert (result.returncode, result.stdout) == (0, "ok: 0 VMs\n")
    assert result.stderr == (
        "warning: plugin misbehaves: cannot be loaded: SystemExit: 5\n"
        "hint: pass --disable-plugin misbehaves to run without it\n"
    )


def test_a_hook_past_the_time_limit_is_an_error_naming_it(run_bkt: RunBkt, site: Path) -> None:
    result = run_bkt(
        "vm",
        "validate",
        pythonpath=[site],
        env={"MISBEHAVE": "sleep", "BKT_HOOK_TIMEOUT": "0.5"},
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: plugin misbehaves in bkt_validate_manifest: did not return within 0.5 s\n"
        "hint: BKT_HOOK_TIMEOUT=SECONDS sets the limit (0: none); --disable-plugin misbehaves "
        "runs without the plugin\n"
    )


def test_a_bad_hook_time_limit_is_a_usage_error(run_bkt: RunBkt, site: Path) -> None:
    result = run_bkt("vm", "validate", pythonpath=[site], env={"BKT_HOOK_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert result.stderr == (
        "error: BKT_HOOK_TIMEOUT must be a number of seconds from 0.01 to 1000000 (0: no limit), "
        "not 'soon'\n"
    )


@pytest.mark.parametrize(
    ("misbehave", "detail"),
    [("cli-raise", "RuntimeError: no commands today"), ("cli-exit", "SystemExit: 3")],
)
def test_a_broken_command_hook_does_not_lock_the_user_out(
    run_bkt: RunBkt, site: Path, tmp_path: Path, misbehave: str, detail: str
) -> None:
    env = {"MISBEHAVE": misbehave}
    warning = (
        f"warning: plugin misbehaves in bkt_cli_commands: {detail}\n"
        "hint: pass --disable-plugin misbehaves to run without it\n"
    )
    listed = run_bkt("plugins", pythonpath=[site], env=env)
    assert (listed.returncode, listed.stderr) == (0, warning)
    assert "misbehaves" in listed.stdout and "bkt_cli_commands" in listed.stdout
    # The built-in commands are all there, the other plugins' too.
    validated = run_bkt("vm", "validate", pythonpath=[site], env=env)
    assert (validated.returncode, validated.stdout, validated.stderr) == (
        0,
        "ok: 0 VMs\n",
        warning,
    )
    # --version runs no plugin at all, wherever it stands.
    for args in (["--version"], ["-C", str(tmp_path), "--version"], ["-q", "-V"]):
        version = run_bkt(*args, pythonpath=[site], env=env)
        assert (version.returncode, version.stdout, version.stderr) == (
            0,
            f"bkt {__version__}\n",
            "",
        ), args
    blocked = run_bkt(
        "--disable-plugin", "misbehaves", "vm", "validate", pythonpath=[site], env=env
    )
    assert (blocked.returncode, blocked.stderr) == (0, "")
