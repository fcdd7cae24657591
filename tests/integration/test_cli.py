"""The command line as a user meets it: global flags, exit codes, streams, plugins found
through real entry points of pip-installed projects."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunBkt, write_manifest

PluginSite = Callable[[str], Path]

GOOD = """{
  "vms": {
    "a": { "memory_gb": 1, "vcpus": 1, "disk_path": "/var/lib/a.qcow2", "disk_size_gb": 1,
           "boot": "bios", "network": "default", "graphics": "none" },
    "b": { "memory_gb": 2, "vcpus": 2, "disk_path": "/var/lib/b.qcow2", "disk_size_gb": 1,
           "boot": "uefi", "network": "none", "graphics": "spice" }
  }
}
"""


def test_version_answers_without_importing_any_plugin() -> None:
    code = (
        "import sys; from bkt_core.cli import main; main(['--version']);"
        "bad = [m for m in sys.modules if m.startswith(('bkt_vm_plugin', 'pydantic', 'rich'))];"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("bkt ")


def test_commands_other_than_help_do_not_load_rich_click(tmp_path: Path) -> None:
    write_manifest(tmp_path / "m", GOOD)
    code = (
        "import sys; from bkt_core.cli import main;"
        f"code = main(['-C', {str(tmp_path / 'm')!r}, 'vm', 'validate']);"
        "assert code == 0, code; assert 'rich_click' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_validate_says_ok(run_bkt: RunBkt, tmp_path: Path) -> None:
    write_manifest(tmp_path / "m", GOOD)
    result = run_bkt("vm", "validate", "-C", str(tmp_path / "m"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok: 2 VMs\n", "")


def test_validate_reads_this_hosts_override_and_names_its_errors(
    run_bkt: RunBkt, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    write_manifest(directory, GOOD)
    override = directory / "vms.laptop.json"
    override.write_text('{"vms": {"a": {"vcpus": 0}},\n "c": 1}\n')
    laptop = {"BKT_HOSTNAME": "laptop"}
    result = run_bkt("vm", "validate", "-C", str(directory), env=laptop)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{override}:1:25: vms.a.vcpus: must be >= 1",
        f'{override}:2:2: c: unknown field "c" (expected one of: $schema, vms)',
        f"error: {override} is not valid (2 errors); nothing was changed",
    ]
    # Another host, or the plugin blocked: vms.json alone.
    elsewhere = run_bkt("vm", "validate", "-C", str(directory), env={"BKT_HOSTNAME": "desk"})
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "ok: 2 VMs\n")
    blocked = ("--disable-plugin", "host_overrides", "vm", "validate", "-C", str(directory))
    assert run_bkt(*blocked, env=laptop).returncode == 0
    override.write_text('{"vms": {"c": {"memory_gb": 1, "vcpus": 1, "disk_path": "/c.qcow2",'
                        ' "disk_size_gb": 1, "boot": "bios", "network": "none",'
                        ' "graphics": "none"}}}')  # fmt: skip
    added = run_bkt("vm", "validate", "-C", str(directory), env=laptop)
    assert (added.returncode, added.stdout) == (0, "ok: 3 VMs\n"), added.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["-C", "{dir}", "vm", "validate"],
        ["vm", "-C", "{dir}", "validate"],
        ["vm", "validate", "-C", "{dir}"],
        ["vm", "validate", "--manifest-dir={dir}"],
    ],
)
def test_global_flags_stand_anywhere(run_bkt: RunBkt, tmp_path: Path, args: list[str]) -> None:
    write_manifest(tmp_path / "m", GOOD)
    result = run_bkt(*[a.format(dir=tmp_path / "m") for a in args])
    assert result.returncode == 0, result.stderr


def test_manifest_dir_comes_from_the_environment(run_bkt: RunBkt, tmp_path: Path) -> None:
    write_manifest(tmp_path / "m", GOOD)
    result = run_bkt("vm", "validate", env={"BKT_MANIFEST_DIR": str(tmp_path / "m")})
    assert result.returncode == 0, result.stderr


def test_an_invalid_manifest_lists_every_problem_and_exits_2(
    run_bkt: RunBkt, tmp_path: Path
) -> None:
    write_manifest(
        tmp_path / "manifests",
        GOOD.replace('"vcpus": 2', '"vcpus": 0').replace('"boot": "bios"', '"boot": "BIOS"'),
    )
    result = run_bkt("vm", "validate")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "manifests/vms.json:4:20: vms.a.boot: "
        'must be one of "uefi", "bios" (did you mean "bios"?)',
        "manifests/vms.json:5:37: vms.b.vcpus: must be >= 1",
        "error: manifests/vms.json is not valid (2 errors); nothing was changed",
    ]
    assert "Traceback" not in result.stderr


def test_no_manifest_is_a_usage_error_with_a_hint(run_bkt: RunBkt) -> None:
    result = run_bkt("vm", "validate")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: no manifest at manifests/vms.json",
        "hint: pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds "
        "vms.json",
    ]


def test_color_always_paints_the_error_label(run_bkt: RunBkt) -> None:
    result = run_bkt("--color", "always", "vm", "validate")
    assert result.stderr.startswith("\x1b[1;31merror:\x1b[0m ")


def test_quiet_and_verbose_conflict(run_bkt: RunBkt) -> None:
    result = run_bkt("-q", "-v", "vm", "validate")
    assert result.returncode == 2
    assert "-q and -v" in result.stderr


def test_an_unknown_command_is_exit_2(run_bkt: RunBkt) -> None:
    result = run_bkt("vm", "frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_schema_prints_the_checked_in_schema(run_bkt: RunBkt) -> None:
    result = run_bkt("schema", "vms")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "manifests" / "vms.schema.json").read_text()


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef bkt"), ("fish", "complete --no-files")],
)
def test_completions(run_bkt: RunBkt, shell: str, marker: str) -> None:
    result = run_bkt("completions", shell)
    assert result.returncode == 0
    assert marker in result.stdout and "_BKT_COMPLETE" in result.stdout


def test_help_shows_the_verbose_counter_as_a_flag(run_bkt: RunBkt) -> None:
    result = run_bkt("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if "--verbose" in line)
    assert "-v " in line and "repeat for more" in line
    assert "INTEGER" not in result.stdout and "RANGE" not in result.stdout


def test_plugins_json_lists_the_defaults(run_bkt: RunBkt) -> None:
    result = run_bkt("plugins", "--json")
    assert result.returncode == 0
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert {"vm", "cpu_model", "autostart"} <= set(plugins)
    assert plugins["vm"]["distribution"] == "bkt"
    assert "bkt_subsystems" in plugins["vm"]["hooks"]


def test_a_pip_installed_plugin_extends_the_manifest(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    site = plugin_site("tests/plugins/bkt-notes")
    manifest = GOOD.replace('"graphics": "none" }', '"graphics": "none", "notes": "TODO" }')
    write_manifest(tmp_path / "manifests", manifest)

    listed = run_bkt("plugins", "--json", pythonpath=[site])
    notes = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "notes")
    assert (notes["distribution"], notes["version"]) == ("bkt-notes", "1.2.3")

    schema = json.loads(run_bkt("schema", "vms", pythonpath=[site]).stdout)
    assert "notes" in schema["$defs"]["VmDefinition"]["properties"]

    result = run_bkt("vm", "validate", pythonpath=[site])
    assert result.returncode == 2
    assert "manifests/vms.json:4:79: vms.a.notes: must not say TODO" in result.stderr

    # Without the plugin the field is unknown again.
    without = run_bkt("vm", "validate")
    assert without.returncode == 2
    assert 'vms.a.notes: unknown field "notes"' in without.stderr
    blocked = run_bkt("--disable-plugin", "notes", "vm", "validate", pythonpath=[site])
    assert 'unknown field "notes"' in blocked.stderr
    by_env = run_bkt("vm", "validate", pythonpath=[site], env={"BKT_DISABLE_PLUGINS": "notes"})
    assert 'unknown field "notes"' in by_env.stderr


def test_two_plugins_claiming_a_field(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    sites = [plugin_site("tests/plugins/bkt-notes"), plugin_site("tests/plugins/bkt-notes-clash")]
    write_manifest(tmp_path / "manifests", GOOD)
    result = run_bkt("vm", "validate", pythonpath=sites)
    assert result.returncode == 1
    assert "notes_clash" in result.stderr and "plugin notes " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_with_an_unknown_hook(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    site = plugin_site("tests/plugins/bkt-bad-hook")
    write_manifest(tmp_path / "manifests", GOOD)
    result = run_bkt("vm", "validate", pythonpath=[site])
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: plugin bad_hook: implements bkt_not_a_hook, which is not a bkt hook\n"
    )
    # Not locked out: the listing, the version and blocking still work.
    listed = run_bkt("plugins", pythonpath=[site])
    assert listed.returncode == 0 and "bad_hook" in listed.stdout and "invalid" in listed.stdout
    assert run_bkt("--version", pythonpath=[site]).returncode == 0
    blocked = run_bkt("--disable-plugin", "bad_hook", "vm", "validate", pythonpath=[site])
    assert blocked.returncode == 0, blocked.stderr


def test_blocking_vm_names_each_plugin_that_implements_a_vm_hook(
    run_bkt: RunBkt, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "manifests", GOOD)
    result = run_bkt("--disable-plugin", "vm", "sync", "--dry-run")
    assert result.returncode == 1
    assert result.stderr == (
        "error: plugin autostart: implements bkt_domain_fields, which no active plugin "
        "declares\nhint: is the plugin that declares it blocked? (blocked: vm); pass "
        "--disable-plugin autostart too to run without it\n"
    )
    listed = run_bkt("--disable-plugin", "vm", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    statuses = {p["name"]: p["status"] for p in json.loads(listed.stdout)["plugins"]}
    assert statuses == {
        "vm": "disabled",
        "cpu_model": "invalid",
        "autostart": "invalid",
        "provision": "invalid",
        "os": "invalid",
        "host_overrides": "active",
    }


def test_a_plugin_that_cannot_be_imported_is_named_and_skipped(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    site = plugin_site("tests/plugins/bkt-broken")
    write_manifest(tmp_path / "manifests", GOOD)
    result = run_bkt("vm", "validate", pythonpath=[site])
    assert result.returncode == 0
    assert result.stderr.startswith(
        "warning: plugin broken: cannot be loaded: ModuleNotFoundError"
    )
    assert "hint: pass --disable-plugin broken" in result.stderr
    listed = run_bkt("plugins", "--json", pythonpath=[site])
    broken = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "broken")
    assert broken["status"] == "failed"
    quiet = run_bkt("--disable-plugin", "broken", "vm", "validate", pythonpath=[site])
    assert quiet.stderr == ""


def test_a_plugin_that_raises_is_named_without_a_traceback(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    site = plugin_site("tests/plugins/bkt-raises")
    write_manifest(tmp_path / "manifests", GOOD)
    result = run_bkt("vm", "validate", pythonpath=[site])
    assert result.returncode == 1
    assert result.stderr == (
        "error: plugin raises in bkt_validate_manifest: RuntimeError: the rule exploded\n"
    )
    verbose = run_bkt("-v", "vm", "validate", pythonpath=[site])
    assert "Traceback" in verbose.stderr and "the rule exploded" in verbose.stderr


def test_a_plugin_adds_a_subsystem_and_a_command(
    run_bkt: RunBkt, plugin_site: PluginSite, tmp_path: Path
) -> None:
    site = plugin_site("tests/plugins/bkt-toy")
    write_manifest(tmp_path / "manifests", '{"vms": {}}')
    hello = run_bkt("toy", "hello", pythonpath=[site])
    assert (hello.returncode, hello.stdout) == (0, "hello from toys.json\n"), hello.stderr
    assert "toy" in run_bkt("--help", pythonpath=[site]).stdout
    # The top-level commands run every subsystem: the VM one (an empty manifest needs no
    # libvirt to plan) and the toy one, which prints its report as JSON.
    synced = run_bkt("sync", "--dry-run", pythonpath=[site])
    assert synced.returncode == 0, synced.stderr
    lines = synced.stdout.splitlines()
    assert lines[0] == "nothing to do: no VMs to sync"
    assert json.loads(lines[1])["plan"] == {"toys": [{"name": "teddy", "action": "unchanged"}]}
    listed = json.loads(run_bkt("plugins", "--json", pythonpath=[site]).stdout)
    toy = next(p for p in listed["plugins"] if p["name"] == "toy")
    assert toy["hooks"] == ["bkt_cli_commands", "bkt_subsystems"]
