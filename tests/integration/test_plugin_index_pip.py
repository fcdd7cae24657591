"""The index of bkt entry points as users meet it: written by a command, bypassed by
``--no-cache`` and ``$BKT_NO_CACHE``, and outdated by real ``pip`` runs (install, a second
plugin, upgrade, uninstall, editable install) so that the next command sees the change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pluggy
import pytest

import bkt_core
from tests.conftest import ROOT, RunBkt

#: How long after a change the index is stored again (bkt_core.plugin_index.RACY_SECONDS).
RACY = 2.0


def indexes(cache_home: Path) -> list[Path]:
    return sorted((cache_home / "bkt").glob("entry-points-*.json"))


@pytest.mark.parametrize(
    ("args", "env", "written"),
    [
        (["plugins"], {}, True),
        (["plugins"], {"BKT_NO_CACHE": "0"}, True),
        (["plugins", "--no-cache"], {}, False),
        (["--no-cache", "plugins"], {}, False),
        (["plugins"], {"BKT_NO_CACHE": "1"}, False),
    ],
)
def test_a_command_writes_the_index_unless_told_not_to(
    run_bkt: RunBkt, tmp_path: Path, args: list[str], env: dict[str, str], written: bool
) -> None:
    cache_home = tmp_path / "cache-home"
    result = run_bkt(*args, env={"XDG_CACHE_HOME": str(cache_home), **env})
    assert (result.returncode, result.stderr) == (0, "")
    assert "vm " in result.stdout
    assert bool(indexes(cache_home)) is written


def test_a_corrupt_index_is_reported_only_with_v(run_bkt: RunBkt, tmp_path: Path) -> None:
    cache_home = tmp_path / "cache-home"
    env = {"XDG_CACHE_HOME": str(cache_home)}
    expected = run_bkt("plugins", env=env)
    (index,) = indexes(cache_home)
    index.write_text('{"format": 1, "trunc')

    quiet = run_bkt("plugins", env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, expected.stdout, "")
    assert json.loads(index.read_text())["format"] == 1, "replaced by a good index"

    index.write_text("[]")
    verbose = run_bkt("-v", "plugins", env=env)
    assert (verbose.returncode, verbose.stdout) == (0, expected.stdout)
    assert verbose.stderr == f"the plugin index {index} is not an index: not used\n"


def test_help_lists_no_cache(run_bkt: RunBkt) -> None:
    result = run_bkt("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "--no-cache" in result.stdout
    assert "Neither read nor write bkt's caches (also $BKT_NO_CACHE=1)." in result.stdout


# -- real pip runs ----------------------------------------------------------------------------


class Venv:
    """A virtual environment with no packages of its own: bkt and its dependencies come
    from this test run's environment through a ``.pth`` file, plugins are installed into
    it with pip, and ``bin/bkt`` runs bkt with its Python."""

    def __init__(self, base: Path) -> None:
        self.root = base / "venv"
        self.cache_home = base / "cache-home"
        self.work = base / "work"
        self.work.mkdir()
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.root)], check=True)
        self.python = self.root / "bin" / "python"
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.site = Path(purelib)
        # bkt's own distribution (its entry points), pluggy, click, setuptools for builds.
        packages = {str(Path(pluggy.__file__).parents[1]), str(Path(bkt_core.__file__).parents[1])}
        (self.site / "bkt-under-test.pth").write_text("".join(f"{p}\n" for p in sorted(packages)))
        self.bkt = self.root / "bin" / "bkt"
        self.bkt.write_text(f"#!{self.python}\nfrom bkt_core.cli import main\nmain()\n")
        self.bkt.chmod(0o755)

    def pip(self, *args: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(self.python),
                "--disable-pip-version-check",
                "--quiet",
                *args,
            ],
            check=True,
            capture_output=True,
            cwd=self.work,
        )

    def install(self, project: Path, *options: str) -> None:
        self.pip("install", "--no-deps", "--no-build-isolation", *options, str(project))

    def plugins(self) -> dict[str, tuple[str | None, str | None, str]]:
        """``bkt plugins --json`` by name: (distribution, version, status)."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
        environ["XDG_CACHE_HOME"] = str(self.cache_home)
        proc = subprocess.run(
            [str(self.bkt), "plugins", "--json"],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.work,
        )
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        return {
            p["name"]: (p["distribution"], p["version"], p["status"])
            for p in json.loads(proc.stdout)["plugins"]
        }

    def index_used(self) -> bool:
        """Whether a command finds the plugins without importing importlib.metadata."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
        environ["XDG_CACHE_HOME"] = str(self.cache_home)
        proc = subprocess.run(
            [str(self.python), "-X", "importtime", str(self.bkt), "plugins"],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
            cwd=self.work,
        )
        return "importlib.metadata" not in proc.stderr

    def settle(self) -> None:
        """Wait out the racy window, then run a command: the index is written."""
        time.sleep(RACY + 0.2)
        self.plugins()
        assert indexes(self.cache_home), "the index was written"
        assert self.index_used()


def project(base: Path, name: str, version: str | None = None) -> Path:
    """A copy of tests/plugins/NAME (at ``version``), built from outside the repository."""
    target = base / f"{name}-{version or 'orig'}"
    shutil.copytree(ROOT / "tests" / "plugins" / name, target)
    if version is not None:
        pyproject = target / "pyproject.toml"
        text = pyproject.read_text()
        start = text.index('version = "')
        end = text.index('"', start + len('version = "'))
        pyproject.write_text(text[:start] + f'version = "{version}' + text[end:])
    return target


def test_pip_install_upgrade_uninstall_and_editable_install_are_seen_at_once(
    tmp_path: Path,
) -> None:
    venv = Venv(tmp_path)
    assert "toy" not in venv.plugins()
    venv.settle()

    venv.install(project(tmp_path, "bkt-toy"))
    assert venv.plugins()["toy"] == ("bkt-toy", "0.1.0", "active")
    venv.settle()

    venv.install(project(tmp_path, "bkt-notes"))
    found = venv.plugins()
    assert found["notes"] == ("bkt-notes", "1.2.3", "active")
    assert found["toy"] == ("bkt-toy", "0.1.0", "active")
    venv.settle()

    venv.install(project(tmp_path, "bkt-notes", "1.3.0"), "--upgrade")
    assert venv.plugins()["notes"] == ("bkt-notes", "1.3.0", "active")
    venv.settle()

    venv.pip("uninstall", "--yes", "bkt-toy")
    found = venv.plugins()
    assert "toy" not in found and found["notes"] == ("bkt-notes", "1.3.0", "active")
    venv.settle()

    venv.install(project(tmp_path, "bkt-toy", "0.2.0"), "--editable")
    assert venv.plugins()["toy"] == ("bkt-toy", "0.2.0", "active")
    venv.settle()

    venv.pip("uninstall", "--yes", "bkt-toy")
    assert "toy" not in venv.plugins()
