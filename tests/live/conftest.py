"""Fixtures for the tests that drive the real libvirt daemon.

- ``test_uri``: ``$BKT_TEST_URI``, else ``qemu:///system`` (:data:`URI`).
- ``name_prefix``: ``bkt-test-<random>-``, unique to one test; every domain a test makes is
  named with it, so tests running side by side (or another engineer's) never meet.
- ``virsh``: ``virsh("dumpxml", name)`` runs ``virsh -q -c URI ...`` and returns stdout
  (``check=False`` returns the completed process instead of raising).
- ``bkt``: ``bkt("vm", "sync")`` runs ``bkt -c URI -C tmp/manifests vm sync`` (some test
  modules have a ``bkt`` of their own).
- ``lab``: the domains of one test (:class:`Lab`): ``lab.name("web")`` gives a prefixed name,
  ``lab.define(xml)`` defines one; at teardown, pass or fail, every domain whose name starts
  with the prefix is destroyed and undefined with its NVRAM, TPM state, managed save, and
  snapshot and checkpoint metadata. A session finalizer sweeps every prefix handed out once
  more, in case a test's own teardown could not run to the end.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunBkt
from tests.livelib import URI, Lab, sweep, virsh

_PREFIXES: list[str] = []


@pytest.fixture(scope="session")
def test_uri() -> str:
    return URI


@pytest.fixture
def name_prefix() -> str:
    prefix = f"bkt-test-{secrets.token_hex(4)}-"
    _PREFIXES.append(prefix)
    return prefix


@pytest.fixture(name="virsh")
def virsh_fixture() -> Callable[..., str]:
    """:func:`virsh` as a fixture."""
    return virsh


@pytest.fixture
def lab(name_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = Lab(name_prefix, tmp_path_factory.mktemp("lab"))
    try:
        yield the_lab
    finally:
        the_lab.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_domains() -> Iterator[None]:
    yield
    for prefix in _PREFIXES:
        sweep(prefix)


@pytest.fixture
def bkt(run_bkt: RunBkt, tmp_path: Path) -> RunBkt:
    """``bkt -c URI -C tmp/manifests ARGS`` (``connect=`` for another URI)."""

    def run(*args: str, connect: str | None = None) -> object:
        return run_bkt(
            "-c", connect or URI, "-C", str(tmp_path / "manifests"), *args,
            env={"NO_COLOR": "1"},
        )  # fmt: skip

    return run  # type: ignore[return-value]


@pytest.fixture
def disks() -> Iterator[Path]:
    """A directory for disk images that QEMU (the libvirt-qemu user) can reach: pytest's own
    temporary directories are private to their owner."""
    path = Path(tempfile.mkdtemp(prefix="bkt-test-disks-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
