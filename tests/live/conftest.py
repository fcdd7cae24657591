"""Fixtures for the tests that drive the real libvirt daemon.

- ``test_uri``: ``$BKT_TEST_URI``, else ``qemu:///system`` (:data:`URI`).
- ``name_prefix``: ``bkt-test-<random>-``, unique to one test; every domain a test makes is
  named with it, so tests running side by side (or another engineer's) never meet.
- ``virsh``: ``virsh("dumpxml", name)`` runs ``virsh -q -c URI ...`` and returns stdout
  (``check=False`` returns the completed process instead of raising).
- ``lab``: the domains of one test (:class:`Lab`): ``lab.name("web")`` gives a prefixed name,
  ``lab.define(xml)`` defines one; at teardown, pass or fail, every domain whose name starts
  with the prefix is destroyed and undefined with its NVRAM, TPM state, managed save, and
  snapshot and checkpoint metadata. A session finalizer sweeps every prefix handed out once
  more, in case a test's own teardown could not run to the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

URI = os.environ.get("BKT_TEST_URI", "qemu:///system")
UNDEFINE_FLAGS = (
    "--nvram",
    "--tpm",
    "--managed-save",
    "--snapshots-metadata",
    "--checkpoints-metadata",
)

_PREFIXES: list[str] = []


class VirshFailed(AssertionError):
    pass


def virsh(*args: str, check: bool = True, uri: str = URI) -> str:
    """``virsh -q -c URI ARGS...``'s stdout; raises :class:`VirshFailed` when it fails."""
    proc = run_virsh(*args, uri=uri)
    if check and proc.returncode != 0:
        raise VirshFailed(f"virsh {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def run_virsh(*args: str, uri: str = URI) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", uri, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=120,
        check=False,
    )


def domains_with_prefix(prefix: str, uri: str = URI) -> list[str]:
    proc = run_virsh("list", "--all", "--name", uri=uri)
    return [n for n in proc.stdout.split() if n.startswith(prefix)]


def remove_domain(name: str, uri: str = URI) -> None:
    """Destroys and undefines ``name`` with everything libvirt keeps for it; quiet when it
    is already gone. Falls back to fewer flags for a libvirt that refuses some of them."""
    run_virsh("destroy", "--domain", name, uri=uri)
    for flags in (UNDEFINE_FLAGS, ("--nvram", "--managed-save"), ("--nvram",), ()):
        proc = run_virsh("undefine", *flags, "--domain", name, uri=uri)
        if proc.returncode == 0 or "failed to get domain" in proc.stderr:
            return


def sweep(prefix: str, uri: str = URI) -> None:
    for name in domains_with_prefix(prefix, uri):
        remove_domain(name, uri)


@dataclass
class Lab:
    """The domains of one test, all named ``prefix + suffix``."""

    prefix: str
    directory: Path
    uri: str = URI
    defined: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def define(self, xml: str) -> str:
        """Defines a domain from ``xml`` (whose ``<name>`` must carry the prefix)."""
        from lxml import etree

        name = str(etree.fromstring(xml.encode()).findtext("name"))
        assert name.startswith(self.prefix), f"domain {name} lacks the test prefix"
        path = self.directory / f"{name}.xml"
        path.write_text(xml)
        self.defined.append(name)
        virsh("define", "--file", str(path), uri=self.uri)
        return name

    def dumpxml(self, name: str) -> str:
        return virsh("dumpxml", "--inactive", "--security-info", "--domain", name, uri=self.uri)

    def names(self) -> list[str]:
        return domains_with_prefix(self.prefix, self.uri)

    def cleanup(self) -> None:
        sweep(self.prefix, self.uri)


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
