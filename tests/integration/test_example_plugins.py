"""The plugin guide and the examples, checked from the outside: the guide's complete plugin,
copied out of ``docs/plugins.md`` exactly as a reader would, installs with pip and works, and
its test file, copied out too, passes with pytest against the installed copy (and fails
against a broken one); every hook is documented; the example projects are complete and
type-check with ``mypy --strict``, as does the embedding example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bkt_core import hookspecs as core_specs
from bkt_vm_plugin import hookspecs as vm_specs
from tests.conftest import ROOT, RunBkt, write_manifest

GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "examples" / "plugins"
PROJECTS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "pyproject.toml").exists())
MYPY = [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml")]

_FILE = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)```\n", re.S)


def guide_files() -> dict[str, str]:
    """The files the guide tells a reader to create, by path."""
    return {m["path"]: m["body"] for m in _FILE.finditer(GUIDE.read_text())}


def pip_install_target(project: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--target", str(target), str(project),
        ],
        check=True,
        capture_output=True,
        cwd=project.parent,
    )  # fmt: skip


def test_the_guide_documents_every_hook() -> None:
    text = GUIDE.read_text()
    names = [*core_specs.hook_names(), *vm_specs.hook_names()]
    missing = [name for name in names if f"### `{name}(" not in text]
    assert missing == []


def copy_the_guides_plugin(tmp_path: Path) -> Path:
    """The guide's plugin project, written out as a reader would, and pip-installed into a
    directory of its own; that directory."""
    files = guide_files()
    assert sorted(files) == [
        "bkt-owner/bkt_owner.py",
        "bkt-owner/pyproject.toml",
        "bkt-owner/tests/test_bkt_owner.py",
    ]
    for path, body in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    site = tmp_path / "site"
    pip_install_target(tmp_path / "bkt-owner", site)
    return site


def run_the_guides_tests(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """pytest on the guide's test file, in the project's directory, with the installed copy
    of the plugin on the path, not the source next to the tests (``-P``: the working
    directory is not put on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "tests"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_guides_plugin_works_when_copied(run_bkt: RunBkt, tmp_path: Path) -> None:
    site = copy_the_guides_plugin(tmp_path)

    listed = json.loads(run_bkt("plugins", "--json", pythonpath=[site]).stdout)["plugins"]
    owner = next(p for p in listed if p["name"] == "bkt-owner")
    assert (owner["distribution"], owner["version"], owner["status"]) == (
        "bkt-owner",
        "0.1.0",
        "active",
    )
    assert owner["hooks"] == ["bkt_domain_fields", "bkt_manifest_fields", "bkt_validate_manifest"]
    table = run_bkt("plugins", pythonpath=[site]).stdout
    assert re.search(r"^bkt-owner +bkt-owner +0\.1\.0 +bkt_domain_fields", table, re.M)

    schema = json.loads(run_bkt("schema", "vms", pythonpath=[site]).stdout)
    prop = schema["$defs"]["VmDefinition"]["properties"]["owner"]
    assert prop["type"] == "string"

    vm = (
        '{ "memory_gb": 1, "vcpus": 1, "disk_path": "/d.qcow2", "disk_size_gb": 1, '
        '"boot": "bios", "network": "none", "graphics": "none", "owner": "OWNER" }'
    )
    write_manifest(
        tmp_path / "manifests", '{"vms": {\n  "a": ' + vm.replace("OWNER", "ops") + "}}"
    )
    bad = run_bkt("vm", "validate", pythonpath=[site])
    assert bad.returncode == 2
    column = (tmp_path / "manifests" / "vms.json").read_text().splitlines()[1].index('"ops"') + 1
    assert f"manifests/vms.json:2:{column}: vms.a.owner: must be an e-mail address" in bad.stderr
    write_manifest(tmp_path / "manifests", '{"vms": {"a": ' + vm.replace("OWNER", "o@x") + "}}")
    assert run_bkt("vm", "validate", pythonpath=[site]).stdout == "ok: 1 VM\n"
    gone = run_bkt("vm", "validate")
    assert gone.returncode == 2 and 'vms.a.owner: unknown field "owner"' in gone.stderr

    project = tmp_path / "bkt-owner"
    checked = subprocess.run(
        [*MYPY, "bkt_owner.py", "tests"], cwd=project, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
    signatures = subprocess.run(
        [sys.executable, "-m", "bkt_core.typecheck", "bkt_owner"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert signatures.returncode == 0, signatures.stdout + signatures.stderr


def test_the_guides_tests_pass_and_catch_a_broken_plugin(tmp_path: Path) -> None:
    site = copy_the_guides_plugin(tmp_path)
    project = tmp_path / "bkt-owner"
    passed = run_the_guides_tests(project, site)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert re.search(r"^5 passed", passed.stdout, re.M), passed.stdout

    # The tests test the installed plugin: one whose patch leaves the old owner in place fails.
    installed = site / "bkt_owner.py"
    text = installed.read_text()
    broken = text.replace("            set_text(node, owner)\n", "            pass\n")
    assert broken != text
    installed.write_text(broken)
    failed = run_the_guides_tests(project, site)
    assert failed.returncode == 1, failed.stdout
    assert "test_a_new_owner_changes_only_the_owner" in failed.stdout


@pytest.mark.parametrize("project", PROJECTS)
def test_an_example_project_is_complete(project: str) -> None:
    root = EXAMPLES / project
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    # The entry-point name is the distribution's: the name users see, block and uninstall.
    assert list(meta["project"]["entry-points"]["bkt"]) == [meta["project"]["name"]]
    assert (root / "README.md").is_file()
    package = meta["project"]["entry-points"]["bkt"][project]
    assert (root / package / "py.typed").is_file()
    tests = sorted(p.name for p in (root / "tests").glob("test_*.py"))
    assert tests, f"{project} has no tests"


def test_example_test_modules_have_unique_names() -> None:
    # bkt's own run collects them all, with rootdir-relative imports and no __init__ files.
    names = [p.name for p in EXAMPLES.glob("*/tests/test_*.py")]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("project", PROJECTS)
def test_an_example_project_type_checks(project: str) -> None:
    root = EXAMPLES / project
    package = project.replace("-", "_")
    checked = subprocess.run(
        [*MYPY, package, "tests"], cwd=root, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout


def test_the_embedding_example_type_checks() -> None:
    checked = subprocess.run(
        [*MYPY, "examples/embed/sync_one.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
