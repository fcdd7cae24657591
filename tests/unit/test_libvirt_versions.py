"""The same domains as libvirt 9.0 (Debian 12) and libvirt 11.3 (Debian 13) store them.

``tests/golden/versions/<version>/<case>.xml`` is ``virsh dumpxml --inactive --security-info``
after defining the same input on each version (UUIDs redacted, disks moved to
/var/lib/libvirt/images): ``bkt-*`` rendered by bkt from one manifest, ``virt-install-*`` made
by that Debian's own ``virt-install --print-xml`` (``uefi`` and ``bios`` with no OS, ``win11``,
``win10``, ``fedora`` (fedora37, UEFI), ``debian`` (debian11) with ``--osinfo``).

What libvirt 11 adds at define time: the firmware it picks for ``<os firmware='efi'>`` (its
``<firmware>`` features, ``<loader>`` and ``<nvram>`` with their ``format``), ``<smm>`` with a
Secure Boot firmware, an ``itco`` watchdog on q35, ``clusters='1'`` in ``<topology>``; and it
names the newer machine type and orders the controllers its own way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml, serialize
from tests.firmware import DEBIAN12

VERSIONS = Path(__file__).resolve().parents[1] / "golden" / "versions"
OLD, NEW = "9.0", "11.3"
CASES = sorted(p.stem for p in (VERSIONS / NEW).glob("*.xml"))

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping


def dump(version: str, case: str) -> str:
    return (VERSIONS / version / f"{case}.xml").read_text()


# Both sets of dumps are read with Debian 12's firmware descriptors: libvirt 9 chooses an
# unpinned UEFI domain's firmware from them when it starts; libvirt 11 has written its choice
# (from Debian 13's descriptors, in the same order) into the definition.
FACTS = {"firmware": DEBIAN12}


def context(case: str, xml: str) -> DomainContext:
    disk = parse_xml(xml).find("devices/disk/source")
    assert disk is not None
    return DomainContext(name=case, disk_path=str(disk.get("file")), facts=FACTS)


def readings(version: str, case: str) -> dict[str, Any]:
    xml = dump(version, case)
    parsed = MAPPING.parse(xml, context(case, xml))
    assert parsed.problems() == [], (version, case)
    return {name: r.value for name, r in parsed.readings.items()}


def test_both_versions_hold_the_same_cases() -> None:
    assert len(CASES) == 9
    assert sorted(p.stem for p in (VERSIONS / OLD).glob("*.xml")) == CASES


#: The newer virt-install gives a Windows guest under TCG (domain type qemu) only the
#: spinlocks enlightenment (those the host's libvirt offers), the older one relaxed, vapic
#: and spinlocks: both read as Hyper-V on.
HYPERV = {"virt-install-win10", "virt-install-win11"}


@pytest.mark.parametrize("case", CASES)
def test_both_versions_read_the_same(case: str) -> None:
    # Even where virt-install left <os firmware='efi'> unpinned (win11, fedora: q35), which
    # libvirt 9 keeps as it is and libvirt 11 pins at define time to the Secure Boot firmware
    # with Microsoft's keys, with <smm state='on'/>.
    old, new = readings(OLD, case), readings(NEW, case)
    assert old == new
    assert old["hyperv"] is (case in HYPERV)


@pytest.mark.parametrize("version", [OLD, NEW])
@pytest.mark.parametrize("case", CASES)
def test_capture_then_patch_is_a_no_op(version: str, case: str) -> None:
    xml = dump(version, case)
    ctx = context(case, xml)
    values, kept = MAPPING.capture_values(MAPPING.parse(xml, ctx))
    assert kept == {}
    vm = VM_SUB.vm_definition(values | {"disk_size_gb": 10})
    ctx = resolve_context(
        case,
        vm,
        home=None,
        iso_cache="/cache",
        exists=lambda _: True,
        facts={"autostart": vm.field("autostart"), **FACTS},
    )
    assert MAPPING.diff(MAPPING.parse(xml, ctx), vm, ctx) == []
    assert MAPPING.patch(xml, vm, ctx) == serialize(parse_xml(xml))


@pytest.mark.parametrize("case", ["bkt-uefi", "bkt-sb", "bkt-bios"])
def test_a_vcpu_change_gives_the_topology_libvirt_stores(case: str) -> None:
    # libvirt 11 stores clusters='1' in every topology; a changed count keeps it, so that the
    # patched definition is what libvirt 11 stores, and libvirt 9's gains nothing.
    for version in (OLD, NEW):
        xml = dump(version, case)
        ctx = context(case, xml)
        values, _ = MAPPING.capture_values(MAPPING.parse(xml, ctx))
        vm = VM_SUB.vm_definition(values | {"disk_size_gb": 10, "vcpus": 6})
        topology = parse_xml(MAPPING.patch(xml, vm, ctx)).find("cpu/topology")
        before = parse_xml(xml).find("cpu/topology")
        assert topology is not None and before is not None
        assert list(topology.attrib) == list(before.attrib), version
        assert topology.get("cores") == "6" and topology.get("clusters") in (None, "1")
