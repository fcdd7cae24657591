"""``examples/embed/sync_one.py`` against the real libvirtd: an embedder's program, with an
explicit plugin list, validates, prints the plan as JSON and syncs one VM of a manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, RunBkt
from tests.livelib import domain_names, domains, unique_name, uri, vm, write_vms

pytestmark = pytest.mark.libvirtd

SCRIPT = ROOT / "examples" / "embed" / "sync_one.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        timeout=300,
        check=False,
    )


def documents(text: str) -> list[Any]:
    """The JSON documents printed one after the other."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


def test_it_plans_then_syncs_only_the_vm_named(
    tmp_path: Path, disks: Path, run_bkt: RunBkt
) -> None:
    a, b = sorted([unique_name("embed"), unique_name("embed")])
    manifests = tmp_path / "manifests"
    with domains(a, b):
        write_vms(manifests, {a: vm(disks, a), b: vm(disks, b)})
        cli = run_bkt("-c", uri(), "-C", str(manifests), "vm", "sync", a, "--dry-run", "--json")
        expected_plan = json.loads(cli.stdout)["plan"]

        result = run(str(manifests), a, "--connect", uri())
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        plan, results = documents(result.stdout)
        assert plan == expected_plan
        assert plan["vms"][0]["action"] == "create"
        assert results == {"results": [{"name": a, "result": "created"}]}
        names = domain_names()
        assert a in names and b not in names

        again = run(str(manifests), a, "--connect", uri())
        assert again.returncode == 0
        assert documents(again.stdout)[0] == {"vms": [{"name": a, "action": "unchanged"}]}


def test_plugins_in_the_environment_play_no_part(
    tmp_path: Path, disks: Path, plugin_site: Any
) -> None:
    """An entry-point plugin that declares a field is not loaded: its field stays unknown."""
    site = plugin_site("examples/plugins/bkt-power-state")
    name = unique_name("embed")
    manifests = tmp_path / "manifests"
    write_vms(manifests, {name: vm(disks, name, running=True)})
    result = run(str(manifests), name, "--connect", uri(), env={"PYTHONPATH": str(site)})
    assert result.returncode == 2
    assert f'vms.{name}.running: unknown field "running"' in result.stderr
    assert result.stdout == ""


def test_an_unknown_vm_is_a_usage_error(tmp_path: Path, disks: Path) -> None:
    manifests = tmp_path / "manifests"
    write_vms(manifests, {"a": vm(disks, "a")})
    result = run(str(manifests), "nope", "--connect", uri())
    assert result.returncode == 2
    assert result.stderr.startswith("error: VM nope is not in ")
