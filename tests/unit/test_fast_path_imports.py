"""What the commands a shell prompt or a cron check runs import: ``bkt --version``, ``bkt vm
status`` and a ``bkt vm sync`` with nothing to do, run a second time (warm caches). The
validator (pydantic: the manifest comes from the cache of validated manifests), the
rendering of help (rich, rich-click), the schema validator (jsonschema) and the downloader
(urllib's network modules, http) are loaded only by the commands that need them.

Each command runs in a fresh interpreter (:func:`imported_modules`) through
``bkt_core.cli.main``, the console script's entry point, and what ``sys.modules`` holds
afterwards is checked. Either on libvirt's test driver (``test:///default``, inside virsh's
own process) or on :class:`~bkt_vm_plugin.testing.FakeLibvirt`, whose domains persist from
one command to the next, so that ``status`` reports VMs in sync and ``sync`` finds nothing
to do. Only absences are asserted: a module the harness imports itself could hide nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from bkt_core.cli import long_forms
from bkt_vm_plugin.iso import cached_path
from bkt_vm_plugin.testing import FakeLibvirt
from tests.conftest import write_manifest

#: Packages no fast-path command may import, whatever module of theirs.
FORBIDDEN_PACKAGES = ("pydantic", "rich", "rich_click", "jsonschema", "http")
#: Of urllib, only ``urllib.parse`` may be there: pathlib itself imports it (Python 3.11,
#: 3.12); urllib's network modules are the downloader's.
ALLOWED_URLLIB = frozenset({"urllib", "urllib.parse"})

#: Modules that these commands do not need either: the downloader (the ISO cache's lookups
#: are in bkt_vm_plugin.iso_cache), the firmware descriptors (a domain that bkt defined pins
#: its firmware, so libvirt's choice among them never has to be repeated) and hashlib, which
#: loads OpenSSL (the caches' digests come from bkt_core.cache.sha256_hex).
NOT_NEEDED = frozenset({"bkt_vm_plugin.iso", "bkt_vm_plugin.firmware", "hashlib"})

#: What each command does not need besides: creating a class, a dataclass above all, costs
#: every run that imports its module. Status builds no plan (its report is
#: bkt_core.status_report's) and plans nothing; a sync with nothing to do builds no status or
#: capture report; neither looks at a disk (bkt_vm_plugin.disks, what the provision plugin
#: does when its hooks run).
NOT_NEEDED_BY = {
    "status": NOT_NEEDED
    | {"bkt_core.plan", "bkt_core.capture_report", "bkt_vm_plugin.sync", "bkt_vm_plugin.disks"},
    "sync": NOT_NEEDED
    | {"bkt_core.status_report", "bkt_core.capture_report", "bkt_vm_plugin.disks"},
}

URL = "https://example.org/isos/install.iso"
UNCACHED_URL = "https://example.org/isos/other.iso"

# Runs bkt's entry point as the console script does, with the process runner replaced by
# a FakeLibvirt read from a file when one is given (and written back afterwards, so that
# the next command sees what this one defined), then records sys.modules.
_WRAPPER = """
import json, sys
out, state, *argv = sys.argv[1:]
if state:
    import pickle
    from bkt_core import host as host_module
    with open(state, "rb") as f:
        fake = pickle.load(f)
    init = host_module.Host.__init__
    def with_fake(self, *args, **kwargs):
        kwargs["runner"] = fake
        init(self, *args, **kwargs)
    host_module.Host.__init__ = with_fake
from bkt_core.cli import main
code = main(argv)
if state:
    with open(state, "wb") as f:
        pickle.dump(fake, f)
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


class Bkt:
    """Runs ``bkt`` commands in fresh interpreters, with a cache home and a manifest
    directory of the test's own; ``fake`` (a pickled :class:`FakeLibvirt`) when the
    commands should run on it."""

    def __init__(self, tmp_path: Path, *, fake: bool) -> None:
        self.tmp_path = tmp_path
        self.manifests = tmp_path / "manifests"
        self.cache_home = tmp_path / "cache-home"
        self.state: Path | None = None
        if fake:
            self.state = tmp_path / "fake.pickle"
            self.state.write_bytes(pickle.dumps(FakeLibvirt()))

    @property
    def env(self) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
        environ.pop("NO_COLOR", None)
        environ["XDG_CACHE_HOME"] = str(self.cache_home)
        return environ

    def run(self, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
        """Run ``bkt -C MANIFESTS ARGS...``: the process and the modules it imported."""
        return run_recording_modules(
            ["-C", str(self.manifests), *args], self.env, state=self.state, cwd=self.tmp_path
        )


def imported_modules(argv: Sequence[str], env: Mapping[str, str]) -> set[str]:
    """The names in ``sys.modules`` after ``bkt ARGV`` ran in a fresh interpreter with
    ``env`` (on the real virsh)."""
    return run_recording_modules(argv, env)[1]


def run_recording_modules(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    state: Path | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``bkt ARGV`` in a fresh interpreter with ``env``: the finished process (exit
    status of ``main``, its output) and the names in its ``sys.modules`` at the end.
    ``state``: a pickled :class:`FakeLibvirt` that answers the processes bkt starts."""
    handle, name = tempfile.mkstemp(prefix="bkt-modules-", suffix=".json")
    os.close(handle)
    out = Path(name)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(out), str(state or ""), *argv],
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        text = out.read_text()
    finally:
        out.unlink()
    assert text, proc.stderr  # main() raised instead of returning its exit status
    record = json.loads(text)
    proc.returncode = record["code"]
    return proc, set(record["modules"])


def forbidden(modules: Iterable[str]) -> list[str]:
    """The names in ``modules`` that no fast-path command may import."""
    return sorted(
        m
        for m in modules
        if m.split(".")[0] in FORBIDDEN_PACKAGES
        or (m.split(".")[0] == "urllib" and m not in ALLOWED_URLLIB)
    )


def test_forbidden_names_the_packages_and_urllibs_network_modules() -> None:
    modules = ["rich.console", "rich_click", "http.client", "urllib.request", "urllib.error"]
    assert forbidden([*modules, "urllib", "urllib.parse", "click", "richter", "lxml"]) == sorted(
        modules
    )


@pytest.mark.parametrize("command", sorted(NOT_NEEDED_BY))
def test_the_modules_a_command_does_not_need_exist(command: str) -> None:
    # A module renamed or misspelt here would be absent from every run, and prove nothing.
    missing = [m for m in NOT_NEEDED_BY[command] if importlib.util.find_spec(m) is None]
    assert missing == []


def manifest(tmp_path: Path, directory: Path) -> None:
    """Two VMs: ``a`` plain, ``b`` with a local ISO, a URL ISO in the ISO cache and one
    that is not."""
    local_iso = tmp_path / "local.iso"
    local_iso.write_bytes(b"iso")
    disks = tmp_path / "disks"
    disks.mkdir()
    vms = {
        "a": {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": str(disks / "a.qcow2"),
            "disk_size_gb": 1,
            "create_if_missing": True,
            "boot": "bios",
            "network": "default",
            "graphics": "none",
        },
        "b": {
            "memory_gb": 2,
            "vcpus": 2,
            "disk_path": str(disks / "b.qcow2"),
            "disk_size_gb": 1,
            "create_if_missing": True,
            "boot": "uefi",
            "network": "none",
            "graphics": "spice",
            "iso_sources": [{"path": str(local_iso)}, {"url": URL}, {"url": UNCACHED_URL}],
        },
    }
    write_manifest(directory, json.dumps({"vms": vms}, indent=2))


def cache_iso(bkt: Bkt) -> None:
    path = cached_path(URL, bkt.cache_home / "bkt" / "isos")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"iso")


def test_version_imports_the_command_line_module_alone(tmp_path: Path) -> None:
    proc, modules = run_recording_modules(["--version"], os.environ, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"bkt {_version()}\n")
    assert modules == imported_modules(["-V"], os.environ)
    baseline = _interpreter_modules(tmp_path)
    assert modules - baseline == {"bkt_core", "bkt_core.cli", "__future__"}


def _version() -> str:
    from bkt_core import __version__

    return __version__


def _interpreter_modules(tmp_path: Path) -> set[str]:
    """What an interpreter that runs nothing holds in ``sys.modules`` (json included: the
    wrapper writes its record with it)."""
    out = tmp_path / "baseline.json"
    code = f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules)))"
    subprocess.run([sys.executable, "-c", code], check=True)
    return set(json.loads(out.read_text()))


@pytest.mark.skipif(shutil.which("virsh") is None, reason="needs virsh (libvirt-clients)")
@pytest.mark.parametrize("args", [("vm", "status"), ("status",), ("vm", "status", "--json")])
def test_status_on_the_test_driver_imports_nothing_it_does_not_need(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    # libvirt's test driver has none of the manifest's domains: every VM is missing, and
    # status still works out b's ISOs (the cached URL's file, not a download).
    bkt = Bkt(tmp_path, fake=False)
    manifest(tmp_path, bkt.manifests)
    cache_iso(bkt)
    for _warm_up_then_measure in range(2):
        proc, modules = bkt.run("-c", "test:///default", *args)
        assert proc.returncode == 0, proc.stderr
    assert "missing" in proc.stdout
    assert forbidden(modules) == []
    assert modules.isdisjoint(NOT_NEEDED_BY["status"]), modules & NOT_NEEDED_BY["status"]


@pytest.fixture
def in_sync(tmp_path: Path) -> Bkt:
    """A fake libvirt on which a first sync defined the manifest's VMs."""
    bkt = Bkt(tmp_path, fake=True)
    manifest(tmp_path, bkt.manifests)
    cache_iso(bkt)
    proc, _ = bkt.run("vm", "sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "2 created, 0 updated, 0 unchanged, 0 failed"
    return bkt


@pytest.mark.parametrize(
    ("args", "last_line"),
    [
        (("vm", "status"), "b     stopped  in sync"),
        (("status",), "b     stopped  in sync"),
        (("vm", "sync"), "nothing to do: 2 VMs in sync"),
        (("sync",), "nothing to do: 2 VMs in sync"),
        (("-v", "vm", "sync"), "= unchanged b"),
        (("vm", "sync", "--dry-run"), "nothing to do: 2 VMs in sync"),
    ],
)
def test_status_and_a_sync_with_nothing_to_do_import_nothing_they_do_not_need(
    in_sync: Bkt, args: tuple[str, ...], last_line: str
) -> None:
    for _warm_up_then_measure in range(2):
        proc, modules = in_sync.run(*args)
        assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == last_line
    assert forbidden(modules) == []
    not_needed = NOT_NEEDED_BY["status" if "status" in args else "sync"]
    assert modules.isdisjoint(not_needed), modules & not_needed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--help",), {"rich", "rich_click"}),
        (("vm", "sync", "--help"), {"rich", "rich_click"}),
    ],
)
def test_help_is_where_rich_click_is_loaded(
    in_sync: Bkt, args: tuple[str, ...], expected: set[str]
) -> None:
    # The check above would see these modules: help is drawn with them.
    proc, modules = in_sync.run(*args)
    assert proc.returncode == 0, proc.stderr
    assert expected <= {m.split(".")[0] for m in forbidden(modules)}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-C", "d", "-c", "test:///default"],
            ["--manifest-dir", "d", "--connect", "test:///default"],
        ),
        (["-vv", "-q", "vm"], ["--verbose", "--verbose", "--quiet", "vm"]),
        (
            ["--disable-plugin", "-q", "-v", "vm", "-v"],
            ["--disable-plugin", "-q", "--verbose", "vm", "-v"],
        ),
        (["--color", "never", "-C"], ["--color", "never", "-C"]),
        (["-Cd", "--connect=x", "vm"], ["-Cd", "--connect=x", "vm"]),
        (["--", "-v"], ["--", "-v"]),
    ],
)
def test_short_global_options_reach_click_in_their_long_form(
    argv: list[str], expected: list[str]
) -> None:
    # Only before the command; a value is never rewritten, nor an option without its value.
    assert long_forms(argv) == expected


def test_short_global_options_cost_no_misspelling_suggestions(in_sync: Bkt) -> None:
    # click builds "did you mean" suggestions (difflib) for every short option it is given.
    proc, modules = in_sync.run("-c", "test:///default", "-v", "vm", "status")
    assert proc.returncode == 0, proc.stderr
    assert "difflib" not in modules
