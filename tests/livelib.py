"""Helpers for tests that drive the real libvirt daemon: the test URI, virsh, unique domain
names, cleanup that runs even when a test fails, and small manifests of software-emulated
VMs. The fixtures built on them are in ``tests/live/conftest.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URI = os.environ.get("BKT_TEST_URI", "qemu:///system")
UNDEFINE_FLAGS = (
    "--nvram",
    "--tpm",
    "--managed-save",
    "--snapshots-metadata",
    "--checkpoints-metadata",
)


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


def uri() -> str:
    """qemu:///system unless ``$BKT_TEST_URI`` says otherwise."""
    return URI


UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/sock"


def unique_name(tag: str) -> str:
    """A domain name no other test or test run uses."""
    return f"bkt-test-{uuid.uuid4().hex[:8]}-{tag}"


@contextmanager
def domains(*names: str) -> Iterator[None]:
    """Removes these domains afterwards, pass or fail."""
    try:
        yield
    finally:
        for name in names:
            remove_domain(name)


def inactive_xml(name: str) -> str:
    return virsh("dumpxml", "--inactive", "--security-info", name)


def domain_names() -> list[str]:
    return [line for line in virsh("list", "--all", "--name").splitlines() if line]


def vm(disks: Path, name: str, **fields: Any) -> dict[str, Any]:
    """A small software-emulated VM whose disk sync creates in ``disks``."""
    base: dict[str, Any] = {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": str(disks / f"{name}.qcow2"),
        "disk_size_gb": 1,
        "create_if_missing": True,
        "boot": "bios",
        "network": "none",
        "graphics": "none",
        "virt_type": "qemu",
    }
    base.update(fields)
    return base


def write_vms(directory: Path, vms: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vms.json"
    path.write_text(json.dumps({"vms": vms}, indent=2) + "\n")
    return path


def define_plain_domain(name: str, directory: Path) -> None:
    """A small hand-written domain, as a person would define it with virsh: no disk, so it
    sits in the firmware when started and never reacts to an ACPI shutdown."""
    xml = f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><console type='pty'/></devices>
</domain>
"""
    path = directory / f"{name}.xml"
    path.write_text(xml)
    virsh("define", str(path))


def traced(stderr: str) -> list[list[str]]:
    """From a ``-vv`` trace: the commands of each virsh process, in order."""
    processes: list[list[str]] = []
    for line in stderr.splitlines():
        if line.startswith("virsh "):
            batched = line.endswith(("commands>", "command>"))
            processes.append([] if batched else [line.split(" ", 4)[-1]])
        elif line.startswith("  ") and processes:
            processes[-1].append(line.strip())
    return processes


def virsh_shim(directory: Path, script: str) -> str:
    """A PATH whose first ``virsh`` is ``script`` (shell; ``{virsh}`` in it is the real
    virsh), written to ``directory/bin``: a test sees or steers each virsh bkt runs."""
    real = shutil.which("virsh")
    assert real is not None, "virsh is not installed"
    shim = directory / "bin"
    shim.mkdir()
    (shim / "virsh").write_text(script.format(virsh=real))
    (shim / "virsh").chmod(0o755)
    return f"{shim}{os.pathsep}{os.environ['PATH']}"
