"""Completion of libvirt's domain names, from the real libvirtd: for ``capture``, after
``--unmanaged`` and for ``status --all``, in one ``virsh list`` process on the ``-c`` URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_manifest
from tests.integration.test_completion import MANIFEST, values
from tests.livelib import UNREACHABLE, Lab, virsh_shim

pytestmark = pytest.mark.libvirtd


def plain_domain(lab: Lab, suffix: str) -> str:
    return lab.define(
        f"""<domain type='qemu'>
  <name>{lab.name(suffix)}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
"""
    )


@pytest.fixture
def logged_virsh(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose ``virsh`` is the real one behind a script that logs each run."""
    log = tmp_path / "virsh.log"
    script = f'#!/bin/sh\necho "$*" >> {log}\nexec {{virsh}} "$@"\n'
    return {"PATH": virsh_shim(tmp_path, script)}, log


@pytest.mark.parametrize(
    "words",
    [
        ["vm", "capture", "{prefix}"],
        ["vm", "start", "--unmanaged", "{prefix}"],
        ["vm", "stop", "--force", "--unmanaged", "{prefix}"],
        ["vm", "status", "--all", "{prefix}"],
    ],
)
def test_libvirt_domains_complete_in_one_virsh_process(
    lab: Lab,
    tmp_path: Path,
    test_uri: str,
    logged_virsh: tuple[dict[str, str], Path],
    words: list[str],
) -> None:
    write_manifest(tmp_path / "manifests", MANIFEST)
    names = sorted([plain_domain(lab, "web"), plain_domain(lab, "db")])
    env, log = logged_virsh
    line = ["-c", test_uri, *(w.format(prefix=lab.prefix) for w in words)]
    assert values("bash", line, tmp_path, env) == names
    assert log.read_text().splitlines() == [f"-q -c {test_uri} list --all --name"]
    # The manifest's VMs are offered beside them.
    assert {"alpha", "beta", "gamma", *names} <= set(values("bash", [*line[:-1], ""], tmp_path))


def test_without_unmanaged_only_manifest_names_and_no_virsh(
    lab: Lab, tmp_path: Path, test_uri: str, logged_virsh: tuple[dict[str, str], Path]
) -> None:
    write_manifest(tmp_path / "manifests", MANIFEST)
    plain_domain(lab, "web")
    env, log = logged_virsh
    assert values("bash", ["-c", test_uri, "vm", "start", lab.prefix], tmp_path, env) == []
    assert values("bash", ["-c", test_uri, "vm", "sync", ""], tmp_path, env) == [
        "alpha",
        "beta",
        "gamma",
    ]
    assert not log.exists()


def test_an_unreachable_libvirt_leaves_the_manifest_names_and_says_nothing(
    tmp_path: Path,
) -> None:
    write_manifest(tmp_path / "manifests", MANIFEST)
    # `values` asserts exit status 0 and an empty stderr.
    words = ["--connect", UNREACHABLE, "vm", "capture", ""]
    assert values("bash", words, tmp_path) == ["alpha", "beta", "gamma"]
