"""Golden files of the domain XML mapping.

``tests/golden/render/<case>.json`` (a VM definition as ``vms.json`` holds it; the case is
the VM's name) renders exactly ``<case>.xml``. ``tests/golden/patch/<case>.json`` patched
into ``<case>-in.xml`` (``virsh dumpxml --inactive --security-info`` output of libvirt 9.0, or
of libvirt 11.3 for the ``libvirt11-`` cases; UUIDs redacted) gives exactly
``<case>-out.xml``. ``BKT_REGENERATE_GOLDEN=1`` rewrites the outputs; review the diff. Every
golden XML passes ``virt-xml-validate FILE domain`` (of libvirt 11 for the ``libvirt11-``
cases).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml, serialize
from tests.firmware import DEBIAN12

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
RENDER = GOLDEN / "render"
PATCH = GOLDEN / "patch"
HOME = "/home/user"
ISO_CACHE = "/home/user/.cache/bkt/isos"
REGENERATE = os.environ.get("BKT_REGENERATE_GOLDEN") == "1"

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping

RENDER_CASES = sorted(p.stem for p in RENDER.glob("*.json"))
PATCH_CASES = sorted(p.stem for p in PATCH.glob("*.json"))


def load(path: Path) -> VmDefinition:
    return VM_SUB.vm_definition(json.loads(path.read_text()), home=HOME)


def resolve(name: str, vm: VmDefinition) -> DomainContext:
    """Every file exists; an ``.img`` disk is raw, any other qcow2."""
    return resolve_context(
        name,
        vm,
        home=HOME,
        iso_cache=ISO_CACHE,
        disk_format="raw" if vm.disk_path.endswith(".img") else "qcow2",
        exists=lambda _: True,
        facts={"autostart": vm.field("autostart"), "firmware": DEBIAN12},
    )


def check_golden(path: Path, text: str) -> None:
    if REGENERATE:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run with BKT_REGENERATE_GOLDEN=1"
    assert path.read_text() == text, (
        f"{path} differs (rerun with BKT_REGENERATE_GOLDEN=1 and review the diff):\n{text}"
    )


def test_the_cases_are_there() -> None:
    assert len(RENDER_CASES) >= 11
    assert len(PATCH_CASES) >= 6


@pytest.mark.parametrize("case", RENDER_CASES)
def test_render_matches_the_golden_file(case: str) -> None:
    vm = load(RENDER / f"{case}.json")
    ctx = resolve(case, vm)
    xml = MAPPING.render(vm, ctx)
    check_golden(RENDER / f"{case}.xml", xml)
    parsed = MAPPING.parse(xml, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, vm, ctx) == []


@pytest.mark.parametrize("case", PATCH_CASES)
def test_patch_matches_the_golden_file(case: str) -> None:
    vm = load(PATCH / f"{case}.json")
    before = (PATCH / f"{case}-in.xml").read_text()
    name = MAPPING.parse(before, resolve("", vm)).name or ""
    ctx = resolve(name, vm)
    patched = MAPPING.patch(before, vm, ctx)
    check_golden(PATCH / f"{case}-out.xml", patched)
    parsed = MAPPING.parse(patched, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, vm, ctx) == []
    assert MAPPING.patch(patched, vm, ctx) == patched


def test_every_golden_file_belongs_to_a_case() -> None:
    expected = {f"{c}{ext}" for c in RENDER_CASES for ext in (".json", ".xml")}
    assert {p.name for p in RENDER.iterdir()} == expected
    expected = {f"{c}{ext}" for c in PATCH_CASES for ext in (".json", "-in.xml", "-out.xml")}
    assert {p.name for p in PATCH.iterdir()} == expected


def golden_xml_files() -> list[Path]:
    return sorted(RENDER.glob("*.xml")) + sorted(PATCH.glob("*.xml"))


def libvirt_major() -> int:
    """The major version of the installed libvirt (its client, whose schemas validate)."""
    proc = subprocess.run(["virsh", "--version"], capture_output=True, text=True, check=True)
    return int(proc.stdout.split(".")[0])


def test_golden_files_pass_libvirts_schema() -> None:
    validate = shutil.which("virt-xml-validate")
    assert validate, "virt-xml-validate is missing: install libvirt-clients (scripts/setup does)"
    files = golden_xml_files()
    assert len(files) >= len(RENDER_CASES) + 2 * len(PATCH_CASES)
    if libvirt_major() < 11:
        # libvirt 11's own output (clusters= in <topology>, format= on <loader>) is not valid
        # for older schemas; scripts/test-libvirt11 checks those files against libvirt 11.
        files = [path for path in files if not path.name.startswith("libvirt11-")]
    for path in files:
        proc = subprocess.run(
            [validate, str(path), "domain"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"{path} fails libvirt's schema:\n{proc.stdout}{proc.stderr}"


# -- what the patch cases show ---------------------------------------------------------------


def _os_of(xml: str) -> bytes:
    from lxml import etree

    os_element = parse_xml(xml).find("os")
    assert os_element is not None
    return etree.tostring(os_element)


def test_a_virt_install_uefi_domain_is_captured_and_patched_for_memory_only() -> None:
    # <os firmware='efi'> without firmware features leaves the firmware to libvirt, which on
    # this (Debian-like) host boots a q35 machine with Secure Boot and enrolled keys: it reads
    # as secure_boot true, and patching memory leaves <os> as it is.
    before = (PATCH / "virt-install-uefi-memory-in.xml").read_text()
    skeleton = load(PATCH / "virt-install-uefi-memory.json")
    ctx = resolve("win11", skeleton)
    parsed = MAPPING.parse(before, ctx)
    assert parsed.problems() == []
    assert parsed.readings["boot"].value == "uefi"
    assert parsed.readings["secure_boot"].value is True
    values, kept = MAPPING.capture_values(parsed, skeleton, ctx)
    assert kept == {}
    captured = VM_SUB.vm_definition(skeleton.as_json() | values, home=HOME)
    assert MAPPING.diff(parsed, captured, ctx) == []
    assert MAPPING.patch(before, captured, ctx) == serialize(parse_xml(before))

    wanted = load(PATCH / "virt-install-uefi-memory.json")
    assert captured.replace(memory_gb=wanted.memory_gb) == wanted
    changes = MAPPING.diff(parsed, wanted, ctx)
    assert [str(c) for c in changes] == ["memory_gb: 8 -> 16"]
    after = (PATCH / "virt-install-uefi-memory-out.xml").read_text()
    assert _os_of(after) == _os_of(before)


def _topology(xml: str) -> dict[str, str] | None:
    node = parse_xml(xml).find("cpu/topology")
    return dict(node.attrib) if node is not None else None


def test_a_vcpus_change_touches_a_topology_only_when_it_no_longer_matches() -> None:
    def io(case: str) -> tuple[str, str]:
        return (PATCH / f"{case}-in.xml").read_text(), (PATCH / f"{case}-out.xml").read_text()

    before, after = io("vcpus-no-topology")
    assert _topology(before) is None and _topology(after) is None
    before, after = io("vcpus-topology")
    assert _topology(before) == {"sockets": "1", "dies": "1", "cores": "2", "threads": "1"}
    assert _topology(after) == {"sockets": "1", "dies": "1", "cores": "6", "threads": "1"}
    before, after = io("vcpus-hotplug")
    assert (
        _topology(before)
        == _topology(after)
        == {
            "sockets": "2",
            "dies": "1",
            "cores": "2",
            "threads": "1",
        }
    )
    vcpu = parse_xml(after).find("vcpu")
    assert vcpu is not None and vcpu.get("current") is None and vcpu.text == "4"


def test_isos_added_to_a_domain_without_cdroms_become_bootable() -> None:
    # <boot dev='cdrom'/> goes after the hd entry.
    after = parse_xml((PATCH / "isos-added-out.xml").read_text())
    assert [b.get("dev") for b in after.findall("os/boot")] == ["hd", "cdrom"]
    before = parse_xml((PATCH / "isos-added-in.xml").read_text())
    assert [b.get("dev") for b in before.findall("os/boot")] == ["hd"]
