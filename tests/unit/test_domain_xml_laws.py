"""The laws of the domain XML mapping over generated valid definitions: parse gives back what
render wrote, patch brings any rendered domain to the manifest, and a manifest value can never
add markup."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, PatchRefused
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from tests.firmware import DEBIAN12
from tests.strategies import (
    HOME,
    ISO_CACHE,
    OS_IDS,
    definitions,
    disk_formats,
    exists,
    has_os_database,
    on_the_same_bus,
    vm_names,
)

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping

#: Examples per property; the three properties together run in a few seconds.
EXAMPLES = 150
LAW = settings(max_examples=EXAMPLES, deadline=None)


def resolve(name: str, vm: VmDefinition, disk_format: str) -> DomainContext:
    """``vm``'s context: every file exists but ``*-x.iso``; autostart as the manifest says
    (the post-sync action applied it)."""
    return resolve_context(
        name,
        vm,
        home=HOME,
        iso_cache=ISO_CACHE,
        disk_format=disk_format,
        exists=exists,
        facts={"autostart": vm.field("autostart"), "active": False, "firmware": DEBIAN12},
    )


def normalized(vm: VmDefinition) -> dict[str, Any]:
    """``vm``'s values as capture reads them back: the host's defaults left out, the default
    CPU model too. What a plugin filled (the ``os`` plugin's devices) is kept: the domain
    holds it, and capture reads it like any value (it leaves it out of ``vms.json`` only
    because loading fills it again)."""
    from bkt_vm_plugin.definition import plain as plain_value

    layout = vm.layout
    out = {
        name: plain_value(vm.field(name))
        for name in layout.names
        if layout.is_required(name) or vm.field(name) != layout.default(name)
    }
    default_cpu = "qemu64" if vm.virt_type == "qemu" else "host-passthrough"
    if out.get("cpu_model") == default_cpu:
        del out["cpu_model"]
    return out


def plain(vm: VmDefinition) -> dict[str, Any]:
    """Every field of ``vm`` as JSON-like data."""
    return {name: value for name, value in vm.as_json().items() if value is not None}


#: Another value of each device field, for :func:`elsewhere`.
OTHER_DEVICE: dict[str, dict[Any, Any]] = {
    "disk_bus": {"virtio": "sata", "sata": "virtio"},
    "nic_model": {"virtio": "e1000e", "e1000e": "e1000", "e1000": "rtl8139", "rtl8139": "virtio"},
    "clock": {"utc": "localtime", "localtime": "utc"},
    "clock_timers": {True: False, False: True},
    "hyperv": {True: False, False: True},
    "sound": {"ich9": "ac97", "ich6": "none", "ac97": "ich6", "none": "ich9"},
    "usb_redirection": {n: (n + 1) % 9 for n in range(9)},
    "video": {"qxl": "vga", "virtio": "bochs", "vga": "none", "bochs": "qxl", "none": "virtio"},
}


def elsewhere(vm: VmDefinition) -> VmDefinition:
    """``vm`` with every field the domain XML carries set to something else; what capture takes
    from the definition it starts from (fields not in the XML, the spelling of paths) kept. A
    device field that ``vm`` does not manage stays unmanaged (capture leaves such a field out
    of an entry that leaves it out), and so does the NIC model of a VM without a NIC (the
    domain has no NIC to read it from)."""
    devices = {
        name: others[value]
        for name, others in OTHER_DEVICE.items()
        if (value := vm.field(name)) is not None
        and not (name == "nic_model" and vm.network == "none")
    }
    data = (
        plain(vm)
        | devices
        | {
            "memory_gb": vm.memory_gb % 7 + 100,
            "vcpus": vm.vcpus % 7 + 100,
            "boot": "bios",
            "secure_boot": False,
            "tpm": "none",
            "network": "elsewhere",
            "graphics": "none",
            "cpu_model": "elsewhere",
            "virt_type": "kvm",
            "autostart": not vm.field("autostart"),
        }
    )
    return VM_SUB.vm_definition(data, home=HOME)


def merge(base: VmDefinition, values: dict[str, Any]) -> VmDefinition:
    """``base`` with what capture read, filled as loading the manifest fills it."""
    from bkt_vm_plugin.defaults import fill_vm

    return fill_vm("vm", VM_SUB.vm_definition(plain(base) | values, home=HOME), VM_SUB.hooks)


def element_names(xml: str) -> list[str]:
    return [str(e.tag) for e in etree.fromstring(xml.encode()).iter() if isinstance(e.tag, str)]


@LAW
@given(vm_names(), definitions(VM_SUB), disk_formats())
def test_parse_gives_back_what_render_wrote(name: str, vm: VmDefinition, disk_format: str) -> None:
    ctx = resolve(name, vm, disk_format)
    parsed = MAPPING.parse(MAPPING.render(vm, ctx), ctx)
    assert parsed.name == name
    assert parsed.has_marker
    assert {k: r for k, r in parsed.readings.items() if r.reason is not None} == {}
    assert MAPPING.diff(parsed, vm, ctx) == []
    values, kept = MAPPING.capture_values(parsed, elsewhere(vm), ctx)
    assert kept == {}
    assert normalized(merge(elsewhere(vm), values)) == normalized(vm)


@LAW
@given(definitions(VM_SUB), definitions(VM_SUB), disk_formats(), disk_formats())
def test_patch_brings_any_rendered_domain_to_the_manifest(
    old: VmDefinition, new: VmDefinition, old_format: str, new_format: str
) -> None:
    xml = MAPPING.render(old, resolve("vm", old, old_format))
    if on_the_same_bus(old, new) != new:
        # An existing disk is never moved to another bus.
        with pytest.raises(PatchRefused, match="cannot change disk_bus"):
            MAPPING.patch(xml, new, resolve("vm", new, new_format))
        new = on_the_same_bus(old, new)
    ctx = resolve("vm", new, new_format)
    patched = MAPPING.patch(xml, new, ctx)
    parsed = MAPPING.parse(patched, ctx)
    assert parsed.problems() == []
    assert parsed.readings["disk_format"].is_clean
    assert MAPPING.diff(parsed, new, ctx) == []
    assert parsed.has_marker
    assert parsed.name == "vm"
    # In sync, patch changes nothing.
    assert MAPPING.patch(patched, new, ctx) == patched


@LAW
@given(definitions(VM_SUB), disk_formats())
def test_patching_a_rendered_domain_to_its_own_definition_changes_nothing(
    vm: VmDefinition, disk_format: str
) -> None:
    ctx = resolve("vm", vm, disk_format)
    xml = MAPPING.render(vm, ctx)
    assert MAPPING.patch(xml, vm, ctx) == xml


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["qcow2", "raw"]))
def test_render_is_deterministic(disk_format: str) -> None:
    vm = VM_SUB.vm_definition(
        {
            "memory_gb": 2,
            "vcpus": 2,
            "disk_path": "/d.qcow2",
            "disk_size_gb": 1,
            "boot": "uefi",
            "network": "default",
            "graphics": "spice",
        }
    )
    ctx = resolve("vm", vm, disk_format)
    assert MAPPING.render(vm, ctx) == MAPPING.render(vm, ctx)


@pytest.mark.skipif(not has_os_database(), reason="osinfo-db is not installed here")
def test_the_definitions_name_an_os_and_are_filled_as_loading_fills_them() -> None:
    from hypothesis import find

    for short_id in OS_IDS:
        vm = find(definitions(VM_SUB), lambda v, s=short_id: v.field("os") == s)  # type: ignore[misc]
        assert vm.field("os") == short_id
    win11 = find(
        definitions(VM_SUB),
        lambda v: v.field("os") == "win11" and "disk_bus" not in (v.written or ()),
    )
    assert win11.disk_bus == win11.filled["disk_bus"] == "sata"
    assert win11.filled_by["disk_bus"] == "os"


EVIL = "x'\"<>&</source><evil a='1'/>&amp;]]>"


def test_manifest_values_cannot_inject_markup() -> None:
    base = {
        "memory_gb": 8,
        "vcpus": 4,
        "disk_size_gb": 80,
        "boot": "uefi",
        "tpm": "2.0",
        "graphics": "spice",
    }
    plain_vm = VM_SUB.vm_definition(
        base
        | {
            "disk_path": "/disk.qcow2",
            "network": "default",
            "cpu_model": "Skylake",
            "iso_sources": [{"path": "/a.iso"}],
        }
    )
    injected = VM_SUB.vm_definition(
        base
        | {
            "disk_path": f"/{EVIL}.qcow2",
            "network": EVIL,
            "cpu_model": EVIL,
            "iso_sources": [{"path": f"/{EVIL}"}],
        }
    )
    ctx = resolve(EVIL, injected, "qcow2")
    xml = MAPPING.render(injected, ctx)
    plain_ctx = resolve("plain", plain_vm, "qcow2")
    plain_xml = MAPPING.render(plain_vm, plain_ctx)
    assert element_names(xml) == element_names(plain_xml), xml
    parsed = MAPPING.parse(xml, ctx)
    assert parsed.name == EVIL
    assert parsed.readings["disk_path"].value == f"/{EVIL}.qcow2"
    assert parsed.readings["network"].value == EVIL
    assert parsed.readings["cpu_model"].value == EVIL
    assert parsed.readings["iso_sources"].value == (f"/{EVIL}",)
    assert MAPPING.diff(parsed, injected, ctx) == []

    # Patching the same values into a plain domain adds no markup either.
    patched = MAPPING.patch(plain_xml, injected, ctx)
    assert element_names(patched) == element_names(plain_xml), patched
    assert MAPPING.diff(MAPPING.parse(patched, ctx), injected, ctx) == []
