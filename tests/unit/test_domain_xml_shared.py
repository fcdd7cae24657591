"""Shared elements: ``<cpu>`` is written by three fields, ``cpu_model`` (mode and model),
``vcpus`` (topology) and a plugin's CPU feature (``bkt-nested-virt``, in tests/plugins). The
laws hold with all three, patching one never touches another's part, and libvirt's own parser
accepts every domain they write, under both virt_types (libvirt refuses features in a CPU
without a model, which is libvirt's default CPU under qemu)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import bkt_nested_virt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml, serialize
from tests.firmware import DEBIAN12
from tests.strategies import HOME, ISO_CACHE, definitions, exists, on_the_same_bus

VM_SUB = cast(
    VmSubsystem,
    Host(entry_points=False, plugins=[*default_plugins(), ("nested_virt", bkt_nested_virt)])
    .subsystem("vm"),
)  # fmt: skip
MAPPING: DomainMapping = VM_SUB.mapping
EXAMPLES = 100
LAW = settings(max_examples=EXAMPLES, deadline=None)
NESTED = st.sampled_from([None, "vmx", "svm"])


def nested(draw: st.DrawFn) -> dict[str, Any]:
    return {"nested_virt": draw(NESTED)}


def resolve(vm: VmDefinition) -> DomainContext:
    return resolve_context(
        "vm",
        vm,
        home=HOME,
        iso_cache=ISO_CACHE,
        exists=exists,
        facts={"autostart": vm.field("autostart"), "firmware": DEBIAN12},
    )


def changed(vm: VmDefinition, **values: Any) -> VmDefinition:
    """``vm``'s entry with ``values`` written over it, filled as loading fills it."""
    from bkt_vm_plugin.defaults import fill_vm

    return fill_vm("vm", VM_SUB.vm_definition(vm.as_written() | values, home=HOME), VM_SUB.hooks)


def normalized(vm: VmDefinition) -> dict[str, Any]:
    """``vm``'s values: the host's defaults left out, the default CPU model too (what a
    plugin filled is kept: the domain holds it)."""
    from bkt_vm_plugin.definition import plain

    layout = vm.layout
    out = {
        name: plain(vm.field(name))
        for name in layout.names
        if layout.is_required(name) or vm.field(name) != layout.default(name)
    }
    if out.get("cpu_model") == ("qemu64" if vm.virt_type == "qemu" else "host-passthrough"):
        del out["cpu_model"]
    return out


def cpu_parts(xml: str) -> dict[str, Any]:
    """Each owner's part of ``<cpu>``, as text: cpu_model's attributes, model and vendor;
    vcpus' topology; the plugin's features; and the rest."""
    cpu = parse_xml(xml).find("cpu")
    if cpu is None:
        return {"cpu_model": ({}, []), "vcpus": [], "nested_virt": [], "other": []}

    def text(tags: tuple[str, ...], owned: bool = True) -> list[str]:
        kids = [c for c in cpu if isinstance(c.tag, str)]
        return [
            etree.tostring(c, encoding="unicode", with_tail=False)
            for c in kids
            if (c.tag in tags) is owned
            and (c.tag != "feature" or c.get("name") in bkt_nested_virt.FEATURES)
        ]

    return {
        "cpu_model": (dict(cpu.attrib), text(("model", "vendor"))),
        "vcpus": text(("topology",)),
        "nested_virt": text(("feature",)),
        "other": text(("model", "vendor", "topology", "feature"), owned=False),
    }


# -- the laws, with the three fields sharing <cpu> ------------------------------------------------


@LAW
@given(definitions(VM_SUB, nested))
def test_parse_and_capture_give_back_what_render_wrote(vm: VmDefinition) -> None:
    ctx = resolve(vm)
    xml = MAPPING.render(vm, ctx)
    parsed = MAPPING.parse(xml, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, vm, ctx) == []
    values, kept = MAPPING.capture_values(parsed, vm, ctx)
    assert kept == {}
    assert values["nested_virt"] == vm.field("nested_virt")
    assert normalized(changed(vm, **values)) == normalized(vm)
    assert MAPPING.patch(xml, vm, ctx) == xml


@LAW
@given(definitions(VM_SUB, nested), definitions(VM_SUB, nested))
def test_patch_brings_any_rendered_domain_to_the_manifest(
    old: VmDefinition, new: VmDefinition
) -> None:
    new = on_the_same_bus(old, new)
    ctx = resolve(new)
    patched = MAPPING.patch(MAPPING.render(old, resolve(old)), new, ctx)
    parsed = MAPPING.parse(patched, ctx)
    assert parsed.problems() == []
    assert MAPPING.diff(parsed, new, ctx) == []
    assert MAPPING.patch(patched, new, ctx) == patched


@LAW
@given(definitions(VM_SUB, nested), NESTED)
def test_patching_the_feature_leaves_the_cpu_models_part(vm: VmDefinition, value: Any) -> None:
    new = changed(vm, nested_virt=value)
    before = MAPPING.render(vm, resolve(vm))
    after = MAPPING.patch(before, new, resolve(new))
    old_parts, new_parts = cpu_parts(before), cpu_parts(after)
    assert new_parts["vcpus"] == old_parts["vcpus"]
    assert new_parts["other"] == old_parts["other"]
    was = MAPPING.parse(before, resolve(vm)).readings["cpu_model"]
    assert MAPPING.parse(after, resolve(new)).readings["cpu_model"] == was
    if new_parts["cpu_model"] != old_parts["cpu_model"]:
        # The one change: libvirt's default CPU under qemu, named because features came in.
        assert (vm.virt_type, was.value) == ("qemu", None)
        assert old_parts["cpu_model"] == ({}, [])
        assert new_parts["cpu_model"] == ({"mode": "custom"}, ["<model>qemu64</model>"])


@LAW
@given(definitions(VM_SUB, nested), st.sampled_from([None, "host-model", "Skylake-Client"]))
def test_patching_the_cpu_model_leaves_the_features(vm: VmDefinition, model: Any) -> None:
    new = changed(vm, cpu_model=model)
    before = MAPPING.render(vm, resolve(vm))
    after = MAPPING.patch(before, new, resolve(new))
    old_parts, new_parts = cpu_parts(before), cpu_parts(after)
    assert new_parts["nested_virt"] == old_parts["nested_virt"]
    assert new_parts["vcpus"] == old_parts["vcpus"]
    assert MAPPING.parse(after, resolve(new)).readings["nested_virt"].value == vm.field(
        "nested_virt"
    )


# -- the rules, case by case -----------------------------------------------------------------

BASE: dict[str, Any] = {
    "memory_gb": 1,
    "vcpus": 2,
    "disk_path": "/vm.qcow2",
    "disk_size_gb": 1,
    "boot": "bios",
    "network": "none",
    "graphics": "none",
}


def vm(**fields: Any) -> VmDefinition:
    return VM_SUB.vm_definition(BASE | fields)


def cpu_of(xml: str) -> str:
    cpu = parse_xml(xml).find("cpu")
    assert cpu is not None, xml
    return re.sub(r">\s+<", "><", etree.tostring(cpu, encoding="unicode", with_tail=False))


TOPOLOGY = '<topology sockets="1" dies="1" cores="2" threads="1"/>'
VMX = '<feature policy="require" name="vmx"/>'


@pytest.mark.parametrize(
    ("fields", "cpu", "read"),
    [
        # libvirt's default CPU under qemu has no model; with a feature it is named.
        ({"virt_type": "qemu"}, f"<cpu>{TOPOLOGY}</cpu>", None),
        (
            {"virt_type": "qemu", "nested_virt": "vmx"},
            f'<cpu mode="custom"><model>qemu64</model>{TOPOLOGY}{VMX}</cpu>',
            None,
        ),
        (
            {"virt_type": "qemu", "nested_virt": "vmx", "cpu_model": "qemu64"},
            f'<cpu mode="custom"><model>qemu64</model>{TOPOLOGY}{VMX}</cpu>',
            None,
        ),
        (
            {"virt_type": "qemu", "nested_virt": "vmx", "cpu_model": "host-model"},
            f'<cpu mode="host-model">{TOPOLOGY}{VMX}</cpu>',
            "host-model",
        ),
        (
            {"virt_type": "kvm", "nested_virt": "svm"},
            f'<cpu mode="host-passthrough">{TOPOLOGY}<feature policy="require" name="svm"/></cpu>',
            "host-passthrough",
        ),
        (
            {"virt_type": "kvm", "nested_virt": "vmx", "cpu_model": "Skylake-Client"},
            f'<cpu mode="custom"><model>Skylake-Client</model>{TOPOLOGY}{VMX}</cpu>',
            "Skylake-Client",
        ),
    ],
)
def test_render_writes_the_cpu_libvirt_needs(
    fields: dict[str, Any], cpu: str, read: str | None
) -> None:
    definition = vm(**fields)
    ctx = resolve(definition)
    xml = MAPPING.render(definition, ctx)
    assert cpu_of(xml) == cpu
    parsed = MAPPING.parse(xml, ctx)
    assert parsed.readings["cpu_model"].value == read
    values, _ = MAPPING.capture_values(parsed, definition, ctx)
    assert values["nested_virt"] == fields.get("nested_virt")
    # Each CPU model's default (the explicit qemu64 too) is captured as none.
    assert values["cpu_model"] == (None if read == "host-passthrough" else read)


# What libvirt's qemu driver writes back for a qemu domain defined with the default CPU.
LIBVIRT_QEMU = """<domain type='qemu'>
  <name>vm</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='1' dies='1' cores='2' threads='1'/>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def test_a_feature_joins_and_leaves_a_libvirt_written_cpu_touching_nothing_else() -> None:
    plain, on = vm(virt_type="qemu"), vm(virt_type="qemu", nested_virt="vmx")
    changes = MAPPING.diff(MAPPING.parse(LIBVIRT_QEMU, resolve(on)), on, resolve(on))
    assert [str(c) for c in changes] == ["nested_virt: none -> vmx"]
    added = MAPPING.patch(LIBVIRT_QEMU, on, resolve(on))
    assert added == LIBVIRT_QEMU.replace(
        "threads='1'/>\n", "threads='1'/>\n    <feature policy='require' name='vmx'/>\n"
    ).replace("'", '"')
    assert MAPPING.patch(added, plain, resolve(plain)) == serialize(parse_xml(LIBVIRT_QEMU))


def test_a_feature_leaving_a_cpu_it_made_the_model_of_keeps_the_model() -> None:
    plain, on = vm(virt_type="qemu"), vm(virt_type="qemu", nested_virt="svm")
    rendered = MAPPING.render(plain, resolve(plain))
    added = MAPPING.patch(rendered, on, resolve(on))
    assert "<model>qemu64</model>" in cpu_of(added)
    removed = MAPPING.patch(added, plain, resolve(plain))
    # The same CPU, named: neither drift nor a change on the next sync.
    assert cpu_of(removed) == f'<cpu mode="custom"><model>qemu64</model>{TOPOLOGY}</cpu>'
    assert MAPPING.diff(MAPPING.parse(removed, resolve(plain)), plain, resolve(plain)) == []
    assert MAPPING.patch(removed, plain, resolve(plain)) == removed


def test_a_model_change_keeps_every_feature_and_names_the_default_when_needed() -> None:
    user = "<feature policy='disable' name='x2apic'/>"
    xml = LIBVIRT_QEMU.replace(
        "<model fallback='forbid'>qemu64</model>",
        f"<model fallback='forbid'>Skylake-Client</model>{user}<feature name='vmx'/>",
    )
    named = vm(virt_type="qemu", cpu_model="Skylake-Client", nested_virt="vmx")
    assert MAPPING.diff(MAPPING.parse(xml, resolve(named)), named, resolve(named)) == []
    default = vm(virt_type="qemu", nested_virt="vmx")
    patched = MAPPING.patch(xml, default, resolve(default))
    assert cpu_of(patched) == (
        '<cpu mode="custom"><model>qemu64</model><feature policy="disable" name="x2apic"/>'
        f'<feature name="vmx"/>{TOPOLOGY}</cpu>'
    )
    kvm = vm(virt_type="kvm", nested_virt="vmx")
    to_kvm = MAPPING.patch(patched, kvm, resolve(kvm))
    assert cpu_of(to_kvm) == (
        '<cpu mode="host-passthrough"><feature policy="disable" name="x2apic"/>'
        f'<feature name="vmx"/>{TOPOLOGY}</cpu>'
    )


def test_the_plugin_reads_only_the_features_it_owns() -> None:
    def read(features: str) -> Any:
        xml = LIBVIRT_QEMU.replace("<topology", f"{features}<topology")
        return MAPPING.parse(xml, resolve(vm())).readings["nested_virt"]

    assert read("<feature policy='disable' name='x2apic'/>").value is None
    assert read("<feature policy='disable' name='vmx'/>").value is None
    assert read("<feature name='svm'/>").value == "svm"
    assert read("<feature policy='force' name='vmx'/>").value == "vmx"
    assert read("<feature name='vmx'/><feature name='svm'/>").reason == (
        "the CPU requires both vmx and svm"
    )


# -- libvirt's parser accepts what the three fields write -------------------------------------

VIRSH = shutil.which("virsh")


def libvirt_refuses(xml: str, tmp_path: Path) -> str | None:
    """libvirt's error for defining ``xml``, None when it accepts it. libvirt's test driver
    (``test:///default``) runs in virsh's own process, with the domain XML parser libvirtd
    uses: no daemon is involved."""
    assert VIRSH, "virsh is missing: install libvirt-clients"
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    proc = subprocess.run(
        [VIRSH, "-q", "-c", "test:///default", "define", "--file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if proc.returncode == 0 else proc.stderr.strip()


def test_libvirt_refuses_a_feature_without_a_cpu_model(tmp_path: Path) -> None:
    # What a plugin's feature alone would give under qemu: the case cpu_model settles.
    xml = LIBVIRT_QEMU.replace(
        "<cpu mode='custom' match='exact' check='none'>\n    <model fallback='forbid'>qemu64"
        "</model>",
        "<cpu><feature policy='require' name='vmx'/>",
    )
    assert "Non-empty feature list specified without CPU model" in str(
        libvirt_refuses(xml, tmp_path)
    )


@pytest.mark.parametrize("virt_type", ["qemu", "kvm"])
@pytest.mark.parametrize("cpu_model", [None, "host-model", "qemu64", "Skylake-Client"])
def test_libvirt_accepts_every_cpu_the_fields_write(
    virt_type: str, cpu_model: str | None, tmp_path: Path
) -> None:
    for feature in ("vmx", "svm", None):
        definition = vm(virt_type=virt_type, cpu_model=cpu_model, nested_virt=feature)
        ctx = resolve(definition)
        xml = MAPPING.render(definition, ctx)
        assert libvirt_refuses(xml, tmp_path) is None, xml
        # Patched into the domain libvirt writes for the default CPU, and out of it again.
        patched = MAPPING.patch(LIBVIRT_QEMU, definition, ctx)
        assert libvirt_refuses(patched, tmp_path) is None, patched
        plain = vm(virt_type=virt_type, cpu_model=cpu_model)
        assert libvirt_refuses(MAPPING.patch(patched, plain, resolve(plain)), tmp_path) is None
