"""Fixtures shared by every test folder.

- an autouse fixture gives each test a cache directory of its own (``$XDG_CACHE_HOME``).
- ``run_bkt``: runs the installed ``bkt`` console script in a subprocess, as a user would.
- ``plugin_site``: pip-installs plugin projects (``tests/plugins/*``, ``examples/plugins/*``)
  into a directory of their own, once per session, and gives the ``PYTHONPATH`` that makes
  their entry points visible to ``bkt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# scripts/fuzz: many examples per run of the fuzz target (tests/unit/test_fuzz_manifest.py).
settings.register_profile("fuzz", max_examples=2000)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BKT = str(BIN / "bkt")


# For tests with an HTTP server on this machine: no proxy from the environment may stand
# between bkt and it.
NO_PROXY = {
    "http_proxy": "",
    "HTTP_PROXY": "",
    "https_proxy": "",
    "HTTPS_PROXY": "",
    "all_proxy": "",
    "ALL_PROXY": "",
    "no_proxy": "*",
    "NO_PROXY": "*",
}


@pytest.fixture(autouse=True)
def _own_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """bkt's caches (the plugin index, validated manifests) go to a directory of each test's
    own: neither the user's cache nor another test's changes what a test sees."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


RunBkt = Callable[..., Run]


@pytest.fixture
def run_bkt(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> RunBkt:
    """``run_bkt(*args, env={...}, plugins=[...], cwd=...)`` runs ``bkt`` and returns its exit
    status and output. ``plugins`` names projects to make importable (see ``plugin_site``).
    bkt's caches go to a directory of the test's own (``$XDG_CACHE_HOME``) unless ``env``
    says otherwise: what the user's cache holds changes no test."""
    cache_home = tmp_path_factory.mktemp("cache-home")

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[Path] = (),
        cwd: Path | None = None,
        input: str | None = None,
    ) -> Run:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
        environ.pop("NO_COLOR", None)
        environ["XDG_CACHE_HOME"] = str(cache_home)
        environ.update(env or {})
        if pythonpath:
            environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        proc = subprocess.run(
            [BKT, *args],
            cwd=cwd or tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            input=input,
            timeout=300,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``plugin_site("tests/plugins/bkt-notes")`` pip-installs that project into a directory
    of its own (once per session) and returns the directory, for ``PYTHONPATH``."""
    installed: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("plugins")

    def install(project: str) -> Path:
        if project not in installed:
            target = base / Path(project).name
            # Build from a copy: pip's in-tree build would leave build/ and *.egg-info behind.
            source = base / "src" / Path(project).name
            shutil.copytree(ROOT / project, source)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-build-isolation",
                    "--target",
                    str(target),
                    str(source),
                ],
                check=True,
                capture_output=True,
                cwd=tmp_path_factory.mktemp("build"),
            )
            installed[project] = target
        return installed[project]

    yield install
    shutil.rmtree(base, ignore_errors=True)


def write_manifest(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vms.json"
    path.write_text(text)
    return path
