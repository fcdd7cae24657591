"""Helpers for tests that drive the real libvirt daemon: the test URI, unique domain names,
cleanup that runs even when a test fails, and small manifests of software-emulated VMs."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/sock"


def uri() -> str:
    """qemu:///system unless ``$BKT_TEST_URI`` says otherwise."""
    return os.environ.get("BKT_TEST_URI", "qemu:///system")


def virsh(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["virsh", "-q", "-c", uri(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def unique_name(tag: str) -> str:
    """A domain name no other test or test run uses."""
    return f"bkt-test-{uuid.uuid4().hex[:8]}-{tag}"


def remove_domain(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", "--nvram", "--tpm", "--managed-save", name, check=False)
    # Without --tpm support (older libvirt) the plain form still removes the domain.
    virsh("undefine", "--nvram", name, check=False)


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
