"""parse and patch over the real libvirt domain XMLs in tests/fixtures/libvirt-domains
(libvirt 9.9.0's own test data, under its own licence; see the README there)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from lxml import etree
from pydantic import ValidationError

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import (
    DomainContext,
    DomainMapping,
    Parsed,
    PatchRefused,
)
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml, serialize
from tests.firmware import DEBIAN12

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "libvirt-domains"
RNG = Path("/usr/share/libvirt/schemas/domain.rng")

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping


@cache
def fixtures() -> list[tuple[str, str]]:
    if not FIXTURES.is_dir():
        pytest.fail(f"the libvirt domain fixtures are missing at {FIXTURES}")
    files = sorted(FIXTURES.glob("*.xml"))
    assert len(files) == 400, f"expected the 400 fixtures in {FIXTURES}"
    return [(p.name, p.read_text()) for p in files]


def test_every_fixture_comes_with_its_source_and_licence() -> None:
    # The corpus is LGPL-2.1-or-later: it may be redistributed (in this repository and the
    # sdist) only together with the licence text and where each file came from.
    assert (FIXTURES / "COPYING.LESSER").read_text().startswith("                  GNU LESSER")
    assert "LGPL-2.1-or-later" in (FIXTURES / "README.md").read_text()
    rows = (FIXTURES / "SOURCES.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["fixture", "source_path_in_libvirt-9.9.0"]
    sources = {row.split("\t")[0]: row.split("\t")[1] for row in rows[1:]}
    assert sorted(sources) == [name for name, _ in fixtures()]
    assert all(path.startswith("tests/") for path in sources.values())


def resolve(vm: VmDefinition, disk_format: str) -> DomainContext:
    return resolve_context(
        "fixture",
        vm,
        home=None,
        iso_cache="/cache",
        disk_format=disk_format,
        exists=lambda _: True,
        facts={"autostart": vm.field("autostart"), "firmware": DEBIAN12},
    )


SKELETON: dict[str, Any] = {
    "memory_gb": 1,
    "vcpus": 1,
    "disk_path": "/skeleton.qcow2",
    "disk_size_gb": 1,
    "boot": "bios",
    "network": "none",
    "graphics": "none",
}


def observed_format(parsed: Parsed) -> str:
    reading = parsed.readings["disk_format"]
    return str(reading.value) if reading.is_clean else "qcow2"


def definition_of(parsed: Parsed) -> VmDefinition:
    """A definition from everything ``parsed`` holds cleanly (dummy values elsewhere; a value
    the manifest cannot hold, such as a relative CD-ROM path, is left out)."""
    skeleton = VM_SUB.vm_definition(SKELETON)
    values, _ = MAPPING.capture_values(parsed, skeleton, resolve(skeleton, "qcow2"))
    while True:
        try:
            return VM_SUB.vm_definition(SKELETON | values)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors()}
            assert bad & set(values), exc
            values = {k: v for k, v in values.items() if k not in bad}


def modified(vm: VmDefinition, variant: int) -> VmDefinition:
    """A definition that differs from ``vm`` in every field the domain XML carries; ``variant``
    picks among the other values of fields that have more than two."""
    graphics = ["spice", "vnc", "none"]
    next_graphics = graphics[(graphics.index(vm.graphics) + 1 + variant % 2) % 3]
    networks = ["default", "bridge:br-test", "none"]
    network = next(
        (n for i, n in enumerate(networks) if n != vm.network and i != variant % 3), "default"
    )
    boot = "bios" if vm.boot == "uefi" else "uefi"
    virt_type = "kvm" if vm.virt_type == "qemu" else "qemu"
    cpu_model = "Skylake-Client" if vm.field("cpu_model") == "host-model" else "host-model"
    count = (len(vm.iso_sources) + 1 + variant) % 4
    data = {name: value for name, value in vm.as_json().items() if value is not None} | {
        "memory_gb": vm.memory_gb + 1,
        "vcpus": vm.vcpus + 1,
        "disk_path": f"/var/lib/libvirt/images/patched-{variant}.qcow2",
        "boot": boot,
        "tpm": "none" if vm.tpm == "2.0" else "2.0",
        "network": network,
        "graphics": next_graphics,
        "iso_sources": [{"path": f"/isos/patched-{variant}-{i}.iso"} for i in range(count)],
        "cpu_model": cpu_model,
        "virt_type": virt_type,
        "secure_boot": boot == "uefi" and variant % 2 == 0,
        "autostart": not vm.field("autostart"),
    }
    return VM_SUB.vm_definition(data)


def patch_to(
    xml: str, vm: VmDefinition, current: VmDefinition, ctx: DomainContext
) -> tuple[str | None, VmDefinition]:
    """Patches ``xml`` to ``vm``. Where bkt refuses to resize a NUMA guest, the test keeps its
    memory and vCPUs as they are; no text when even that is refused."""
    refused: list[str] = []
    while True:
        try:
            return MAPPING.patch(xml, vm, ctx), vm
        except PatchRefused as exc:
            if exc.field in refused or exc.field not in ("memory_gb", "vcpus"):
                return None, vm
            refused.append(exc.field)
            vm = vm.replace(**{exc.field: current.field(exc.field)})


@dataclass
class Variant:
    variant: int
    vm: VmDefinition
    ctx: DomainContext
    patched: str | None


@cache
def variants(xml: str) -> list[Variant]:
    parsed = MAPPING.parse(xml, resolve(VM_SUB.vm_definition(SKELETON), "qcow2"))
    current = definition_of(parsed)
    disk_format = observed_format(parsed)
    out = []
    for variant in range(3):
        vm = modified(current, variant)
        ctx = resolve(vm, "raw" if disk_format == "qcow2" else "qcow2")
        patched, vm = patch_to(xml, vm, current, ctx)
        out.append(Variant(variant, vm, ctx, patched))
    return out


def reason_kind(field: str, reason: str) -> str:
    """A reason with its numbers taken out, so that reasons of one kind count together."""
    return f"{field}: " + re.sub(r"[0-9]+", "N", reason)


#: How many fixtures round-trip cleanly, and how many fixtures have each kind of problem
#: (a fixture can have several). No fixture is `firmware='efi'` without features or a
#: loader (firmware libvirt chooses), so the host's firmware descriptors never matter here.
EXPECTED_CAPTURABLE = 40
EXPECTED_REASONS = {
    "disk_path: no disk": 208,
    "disk_path: the first disk is type='block', not a file": 113,
    "disk_path: the first disk is type='network', not a file": 8,
    "disk_path: the first disk is type='nvme', not a file": 2,
    "disk_path: the first disk is type='vhostuser', not a file": 2,
    "disk_path: the first disk is type='vhostvdpa', not a file": 1,
    "graphics: N graphics devices; the manifest describes only the first": 5,
    "graphics: graphics type 'dbus' (bkt knows spice and vnc)": 6,
    "graphics: graphics type 'egl-headless' (bkt knows spice and vnc)": 2,
    "graphics: graphics type 'sdl' (bkt knows spice and vnc)": 4,
    "memory_gb: N KiB is not a whole number of GiB": 242,
    "memory_gb: currentMemory (N KiB) differs from memory (N KiB): a balloon target": 15,
    "memory_gb: no <memory> element (the size comes from NUMA cells)": 1,
    "network: N interfaces; the manifest describes only the first": 14,
    "network: an interface type='client' (bkt knows network, bridge and user)": 1,
    "network: an interface type='ethernet' (bkt knows network, bridge and user)": 11,
    "network: an interface type='hostdev' (bkt knows network, bridge and user)": 5,
    "network: an interface type='mcast' (bkt knows network, bridge and user)": 1,
    "network: an interface type='server' (bkt knows network, bridge and user)": 1,
    "network: an interface type='udp' (bkt knows network, bridge and user)": 1,
    "network: an interface type='vdpa' (bkt knows network, bridge and user)": 3,
    "network: an interface type='vhostuser' (bkt knows network, bridge and user)": 2,
    "secure_boot: Secure Boot firmware without enrolled keys (Secure Boot is not enforced)": 3,
    "tpm: a TPM with a external backend, not an emulated one": 1,
    "tpm: a TPM with a passthrough backend, not an emulated one": 2,
    "tpm: an emulated TPM of version N.N": 1,
    "vcpus: N of N vCPUs are enabled at boot (CPU hotplug)": 5,
}


def test_parse_reads_every_fixture_and_says_why_fields_do_not_round_trip() -> None:
    ctx = resolve(VM_SUB.vm_definition(SKELETON), "qcow2")
    capturable = 0
    reasons: Counter[str] = Counter()
    for name, xml in fixtures():
        parsed = MAPPING.parse(xml, ctx)  # raises only DomainXmlError, which fails the test
        assert parsed.name, name
        problems = parsed.problems()
        capturable += not problems
        reasons.update({reason_kind(f, r) for f, r in problems})
    listing = "\n".join(f"    {k!r}: {n}," for k, n in sorted(reasons.items()))
    assert (capturable, dict(reasons)) == (EXPECTED_CAPTURABLE, EXPECTED_REASONS), (
        f"capturable: {capturable}; reasons:\n{listing}"
    )


def test_patching_a_capturable_fixture_with_its_own_definition_changes_nothing() -> None:
    checked = 0
    for name, xml in fixtures():
        parsed = MAPPING.parse(xml, resolve(VM_SUB.vm_definition(SKELETON), "qcow2"))
        if parsed.problems():
            continue
        vm = definition_of(parsed)
        ctx = resolve(vm, observed_format(parsed))
        assert MAPPING.diff(MAPPING.parse(xml, ctx), vm, ctx) == [], name
        assert MAPPING.patch(xml, vm, ctx) == serialize(parse_xml(xml)), name
        checked += 1
    assert checked == EXPECTED_CAPTURABLE


def _name(node: etree._Element) -> str:
    return node.tag if isinstance(node.tag, str) else ""


def _parent_name(node: etree._Element) -> str:
    parent = node.getparent()
    return _name(parent) if parent is not None else ""


def canonical(root: etree._Element) -> bytes:
    """A whitespace-insensitive serialization."""
    for node in root.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return etree.tostring(root, method="c14n")


def unowned(xml: str, all_interfaces: bool) -> bytes:
    """The document without what the manifest owns, or what patch may change along with it."""
    root = parse_xml(xml)
    root.attrib.pop("type", None)
    os = root.find("os")
    if os is not None:
        os.attrib.pop("firmware", None)
    disks = root.findall("devices/disk")
    managed = next((d for d in disks if d.get("device", "disk") == "disk"), None)
    first_interface = root.find("devices/interface")

    def owned(n: etree._Element) -> bool:
        parent, name = _parent_name(n), _name(n)
        if parent == "domain" and name in ("memory", "currentMemory", "vcpu", "cpu"):
            return True
        if parent == "os" and name in ("firmware", "loader", "nvram"):
            return True
        # The first ISO CD-ROM becomes bootable.
        if parent == "os" and name == "boot" and n.get("dev") == "cdrom":
            return True
        if parent == "features" and name == "smm":
            return True
        if parent == "domain" and name == "features":
            # Patch creates <features> to hold <smm>.
            return all(_name(c) == "smm" for c in n if isinstance(c.tag, str))
        if parent != "devices":
            return False
        if name == "disk":
            file = n.get("type", "file") == "file"
            source = n.find("source")
            has_source = source is not None and source.get("file") is not None
            return n is managed or (n.get("device") == "cdrom" and file and has_source)
        if name == "interface":
            return all_interfaces or n is first_interface
        if name in ("graphics", "video", "audio", "tpm", "serial", "console"):
            return True
        if name == "input":
            return n.get("type") == "tablet"
        return n.get("type") in ("spicevmc", "spiceport")

    for node in [n for n in root.iter() if isinstance(n.tag, str) and owned(n)]:
        parent = node.getparent()
        if parent is not None:
            parent.remove(node)
    return canonical(root)


def first_device_attr(xml: str, device: str, child: str | None, name: str) -> str | None:
    node = parse_xml(xml).find(f"devices/{device}")
    if node is not None and child is not None:
        node = node.find(child)
    return node.get(name) if node is not None else None


def test_patch_brings_every_fixture_to_the_manifest_and_keeps_everything_else() -> None:
    refused = []
    for name, xml in fixtures():
        before = MAPPING.parse(xml, resolve(VM_SUB.vm_definition(SKELETON), "qcow2"))
        for v in variants(xml):
            where = f"{name}, variant {v.variant}"
            if v.patched is None:
                refused.append(where)
                continue
            after = MAPPING.parse(v.patched, v.ctx)
            assert MAPPING.diff(after, v.vm, v.ctx) == [], f"{where}:\n{v.patched}"
            assert after.name == before.name, where
            all_interfaces = v.vm.network == "none"
            assert unowned(xml, all_interfaces) == unowned(v.patched, all_interfaces), (
                f"{where}: patch changed what the manifest does not own"
            )
            # What the managed devices carry that does not depend on their kind survives.
            if v.vm.network != "none":
                mac: Callable[[str], str | None] = lambda x: first_device_attr(  # noqa: E731
                    x, "interface", "mac", "address"
                )
                assert mac(xml) == mac(v.patched), f"{where}: MAC"
            if v.vm.graphics != "none":
                for child, attr in ((None, "passwd"), (None, "keymap"), ("listen", "address")):
                    assert first_device_attr(xml, "graphics", child, attr) == first_device_attr(
                        v.patched, "graphics", child, attr
                    ), f"{where}: graphics {attr}"
            # Patching again with the same definition is a no-op.
            assert MAPPING.patch(v.patched, v.vm, v.ctx) == v.patched, where
    # bkt refuses to resize NUMA guests and to change per-vCPU lists; here that is every
    # refusal, and only those whose own memory or vCPUs the manifest cannot hold.
    numa = {
        f"{name}, variant {v}"
        for name, xml in fixtures()
        if "<cell" in xml or "<vcpus>" in xml
        for v in range(3)
    }
    assert set(refused) <= numa, refused
    assert len(refused) == 3 * 13, refused


@cache
def schema() -> etree.RelaxNG:
    if not RNG.exists():
        pytest.fail(f"libvirt's schema is missing at {RNG}: install libvirt-clients")
    return etree.RelaxNG(etree.parse(str(RNG)))


def schema_valid_fixtures() -> list[tuple[str, str]]:
    """The fixtures that this host's libvirt schema accepts (schema-invalid.txt lists those
    that need a newer one)."""
    lines = (FIXTURES / "schema-invalid.txt").read_text().splitlines()
    invalid = {line.split("\t")[0] for line in lines if line and not line.startswith("#")}
    return [(name, xml) for name, xml in fixtures() if name not in invalid]


def test_patched_fixtures_pass_libvirts_schema() -> None:
    # lxml's RelaxNG is libxml2's, which is what virt-xml-validate runs (through xmllint);
    # in-process it checks ~1000 documents in a second instead of a process each.
    rng = schema()
    checked = 0
    for name, xml in schema_valid_fixtures():
        assert rng.validate(etree.fromstring(xml.encode())), f"{name}: {rng.error_log}"
        for v in variants(xml):
            if v.patched is None:
                continue
            doc = etree.fromstring(v.patched.encode())
            assert rng.validate(doc), f"{name}, variant {v.variant}: {rng.error_log}\n{v.patched}"
            checked += 1
    assert checked > 900
