"""A third-party domain field is a peer of the built-in ones: it renders, parses and patches
through the same hook, the laws hold with it installed, and its mistakes name it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkt_core.errors import PluginError
from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml
from tests.firmware import DEBIAN12
from tests.strategies import HOME, ISO_CACHE, definitions, exists, on_the_same_bus
from tests.unit.domain_xml_kvm_hidden import BrokenPlugin, ClashingPlugin, KvmHiddenPlugin


def subsystem(*plugins: tuple[str, object]) -> VmSubsystem:
    host = Host(entry_points=False, plugins=[*default_plugins(), *plugins])
    return cast(VmSubsystem, host.subsystem("vm"))


VM_SUB = subsystem(("kvm_hidden", KvmHiddenPlugin()))
MAPPING: DomainMapping = VM_SUB.mapping
EXAMPLES = 100


def kvm_hidden(draw: st.DrawFn) -> dict[str, Any]:
    return {"kvm_hidden": draw(st.booleans())}


def resolve(vm: VmDefinition) -> DomainContext:
    return resolve_context(
        "vm",
        vm,
        home=HOME,
        iso_cache=ISO_CACHE,
        exists=exists,
        facts={"autostart": vm.field("autostart"), "firmware": DEBIAN12},
    )


def test_the_plugin_field_is_mapped_after_the_core_fields_and_tagged() -> None:
    owners = {name: f.plugin for f in MAPPING.fields for name in f.fields}
    assert owners["kvm_hidden"] == "kvm_hidden"
    assert owners["memory_gb"] == "vm"
    assert owners["cpu_model"] == "cpu_model"
    assert "kvm_hidden" in VM_SUB.vm_fields.plugin_names


@settings(max_examples=EXAMPLES, deadline=None)
@given(definitions(VM_SUB, kvm_hidden))
def test_parse_gives_back_what_render_wrote_with_the_plugin(vm: VmDefinition) -> None:
    ctx = resolve(vm)
    xml = MAPPING.render(vm, ctx)
    parsed = MAPPING.parse(xml, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, vm, ctx) == []
    assert MAPPING.capture_values(parsed, vm, ctx)[0]["kvm_hidden"] is vm.field("kvm_hidden")
    assert MAPPING.patch(xml, vm, ctx) == xml


@settings(max_examples=EXAMPLES, deadline=None)
@given(definitions(VM_SUB, kvm_hidden), definitions(VM_SUB, kvm_hidden))
def test_patch_brings_a_rendered_domain_to_the_manifest_with_the_plugin(
    old: VmDefinition, new: VmDefinition
) -> None:
    xml = MAPPING.render(old, resolve(old))
    new = on_the_same_bus(old, new)
    ctx = resolve(new)
    patched = MAPPING.patch(xml, new, ctx)
    parsed = MAPPING.parse(patched, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, new, ctx) == []
    assert parsed.has_marker
    assert MAPPING.patch(patched, new, ctx) == patched


WIN11 = {
    "memory_gb": 8,
    "vcpus": 4,
    "disk_path": "/var/lib/libvirt/images/win11.qcow2",
    "disk_size_gb": 80,
    "boot": "uefi",
    "tpm": "2.0",
    "network": "default",
    "graphics": "spice",
}


def test_the_plugin_element_is_valid_libvirt_xml(tmp_path: Path) -> None:
    validate = shutil.which("virt-xml-validate")
    assert validate, "virt-xml-validate is missing: install libvirt-clients"
    on = VM_SUB.vm_definition(WIN11 | {"kvm_hidden": True})
    xml = MAPPING.render(on, resolve(on))
    root = parse_xml(xml)
    assert root.find("features/kvm/hidden") is not None
    assert root.find("clock/timer[@name='kvmclock']") is not None
    off = VM_SUB.vm_definition(WIN11)
    for case, text in (("on", xml), ("off", MAPPING.patch(xml, off, resolve(off)))):
        path = tmp_path / f"{case}.xml"
        path.write_text(text)
        proc = subprocess.run([validate, str(path), "domain"], capture_output=True, check=False)
        assert proc.returncode == 0, (case, proc.stderr, text)
    assert [str(c) for c in MAPPING.diff(MAPPING.parse(xml, resolve(off)), off, resolve(off))] == [
        "kvm_hidden: true -> false"
    ]


def test_a_field_claimed_by_two_mappings_names_both_plugins() -> None:
    with pytest.raises(PluginError) as caught:
        subsystem(("clash", ClashingPlugin())).mapping  # noqa: B018 (the property builds it)
    assert "plugin clash" in str(caught.value)
    assert "'memory_gb'" in str(caught.value)
    assert "plugin vm" in str(caught.value)


def test_a_field_method_that_raises_names_its_plugin() -> None:
    sub = subsystem(("broken", BrokenPlugin()))
    vm = sub.vm_definition(WIN11)
    ctx = resolve(vm)
    xml = sub.mapping.render(vm, ctx)
    with pytest.raises(PluginError) as caught:
        sub.mapping.parse(xml, ctx)
    assert str(caught.value) == (
        "plugin broken in bkt_domain_fields: parse failed for VM vm (field kvm_hidden): "
        "RuntimeError: the feature table is gone"
    )
    assert isinstance(caught.value.__cause__, RuntimeError)
