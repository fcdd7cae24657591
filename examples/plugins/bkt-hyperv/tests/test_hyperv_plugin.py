"""bkt-hyperv without a daemon: the field joins the model and the schema, and its piece of
the mapping renders valid libvirt XML, parses it back, patches only what it owns, drifts and
captures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bkt_hyperv
import pytest

from bkt_core import Host, ManifestError
from bkt_vm_plugin.api import (
    DomainContext,
    Reading,
    VmDefinition,
    VmSubsystem,
    default_plugins,
    parse_xml,
)
from bkt_vm_plugin.testing import vm_subsystem

WIN11: dict[str, Any] = {
    "memory_gb": 8,
    "vcpus": 4,
    "disk_path": "/var/lib/libvirt/images/win11.qcow2",
    "disk_size_gb": 80,
    "boot": "uefi",
    "tpm": "2.0",
    "network": "default",
    "graphics": "spice",
}

# What virt-manager writes for a Windows guest: three enlightenments, a vendor_id of the
# user's own, and a clock of its own.
VIRT_MANAGER = """<domain type='kvm'>
  <name>win</name>
  <memory unit='KiB'>8388608</memory>
  <vcpu>4</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='8191'/>
      <vendor_id state='on' value='KVMKVMKVM'/>
    </hyperv>
  </features>
  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='hypervclock' present='yes'/>
  </clock>
</domain>
"""


def vm_sub(dir: Path | None = None) -> VmSubsystem:
    host = Host(
        dir or "manifests",
        entry_points=False,
        plugins=[*default_plugins(), ("bkt-hyperv", bkt_hyperv)],
    )
    return vm_subsystem(host)


SUB = vm_sub()
MAPPING = SUB.mapping


def definition(**fields: Any) -> VmDefinition:
    return SUB.vm_definition(WIN11 | fields)


def context(vm: VmDefinition) -> DomainContext:
    """The context of VM ``win`` (no ISO, a disk path without ``~``): what sync would pass."""
    return DomainContext("win", vm.disk_path)


def hyperv_of(xml: str, vm: VmDefinition) -> Reading:
    return MAPPING.parse(xml, context(vm)).readings["hyperv"]


def test_the_field_is_declared_with_its_default_and_in_the_schema() -> None:
    assert SUB.field_owners["hyperv"] == "bkt-hyperv"
    assert definition().field("hyperv") is False
    props = SUB.schema()["$defs"]["VmDefinition"]["properties"]
    assert props["hyperv"]["type"] == "boolean"
    assert props["hyperv"]["default"] is False


def test_render_writes_every_enlightenment_and_the_timer() -> None:
    on = definition(hyperv=True)
    root = parse_xml(MAPPING.render(on, context(on)))
    hyperv = root.find("features/hyperv")
    assert hyperv is not None and hyperv.get("mode") == "custom"
    assert [(e.tag, e.get("state")) for e in hyperv] == [
        (name, "on") for name, _ in bkt_hyperv.field.ENLIGHTENMENTS
    ]
    spinlocks = hyperv.find("spinlocks")
    assert spinlocks is not None and spinlocks.get("retries") == "8191"
    assert root.find("clock/timer[@name='hypervclock']").get("present") == "yes"  # type: ignore[union-attr]
    off = definition()
    plain = parse_xml(MAPPING.render(off, context(off)))
    assert plain.find("features/hyperv") is None and plain.find("clock") is None


def test_parse_gives_back_what_render_wrote() -> None:
    for value in (True, False):
        vm = definition(hyperv=value)
        xml = MAPPING.render(vm, context(vm))
        assert hyperv_of(xml, vm).value is value
        assert MAPPING.diff(MAPPING.parse(xml, context(vm)), vm, context(vm)) == []


def test_rendered_and_patched_domains_pass_libvirts_schema(tmp_path: Path) -> None:
    validate = shutil.which("virt-xml-validate")
    if validate is None:
        pytest.skip("virt-xml-validate is not installed (libvirt-clients)")
    on, off = definition(hyperv=True), definition()
    rendered = MAPPING.render(on, context(on))
    cases = {
        "rendered": rendered,
        "patched-off": MAPPING.patch(rendered, off, context(off)),
        "patched-on": MAPPING.patch(VIRT_MANAGER, on, context(on)),
    }
    for case, text in cases.items():
        path = tmp_path / f"{case}.xml"
        path.write_text(text)
        proc = subprocess.run(
            [validate, str(path), "domain"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, (case, proc.stderr, text)


def test_a_partial_set_reads_as_neither_value_and_drifts() -> None:
    on = definition(hyperv=True)
    reading = hyperv_of(VIRT_MANAGER, on)
    assert reading.value is None
    assert reading.reason == (
        "Hyper-V enlightenments without vpindex, synic, stimer, reset, frequencies on"
    )
    changes = MAPPING.diff(MAPPING.parse(VIRT_MANAGER, context(on)), on, context(on))
    assert "hyperv" in [c.field for c in changes]


def test_patch_completes_the_set_and_keeps_everything_else() -> None:
    on = definition(hyperv=True)
    patched = MAPPING.patch(VIRT_MANAGER, on, context(on))
    assert hyperv_of(patched, on).value is True
    root = parse_xml(patched)
    # The user's vendor_id, the clock's offset and its other timer stay.
    assert root.find("features/hyperv/vendor_id").get("value") == "KVMKVMKVM"  # type: ignore[union-attr]
    assert root.find("clock").get("offset") == "localtime"  # type: ignore[union-attr]
    assert root.find("clock/timer[@name='rtc']") is not None
    tags = [e.tag for e in root.find("features/hyperv")]  # type: ignore[union-attr]
    assert tags[:3] == ["relaxed", "vapic", "spinlocks"] and tags[-1] == "vendor_id"
    # In sync now: patching again changes nothing.
    assert MAPPING.patch(patched, on, context(on)) == patched


def test_patch_off_removes_only_what_the_field_owns() -> None:
    off = definition()
    patched = MAPPING.patch(VIRT_MANAGER, off, context(off))
    assert hyperv_of(patched, off).value is False
    root = parse_xml(patched)
    assert root.find("features/hyperv") is None
    assert root.find("features/acpi") is not None
    assert [t.get("name") for t in root.iterfind("clock/timer")] == ["rtc"]
    assert root.find("clock").get("offset") == "localtime"  # type: ignore[union-attr]


def test_capture_writes_a_clean_value_and_keeps_the_manifest_for_a_partial_set() -> None:
    on = definition(hyperv=True)
    rendered = MAPPING.render(on, context(on))
    values, kept = MAPPING.capture_values(MAPPING.parse(rendered, context(on)), on, context(on))
    assert values["hyperv"] is True and "hyperv" not in kept
    values, kept = MAPPING.capture_values(MAPPING.parse(VIRT_MANAGER, context(on)), on)
    assert "hyperv" not in values
    assert kept["hyperv"].startswith("Hyper-V enlightenments without vpindex")


def test_a_wrong_type_and_qemu_are_reported_with_positions(tmp_path: Path) -> None:
    vms = {"a": WIN11 | {"hyperv": "yes"}, "b": WIN11 | {"hyperv": True, "virt_type": "qemu"}}
    (tmp_path / "vms.json").write_text(json.dumps({"vms": vms}, indent=2) + "\n")
    with pytest.raises(ManifestError) as caught:
        vm_sub(tmp_path).validate()
    shown = [str(d) for d in caught.value.diagnostics]
    file = tmp_path / "vms.json"
    # Line 12, column 17: the value of "hyperv" in VM a (json.dumps puts it after 8 fields).
    assert any(s.startswith(f"{file}:12:17: vms.a.hyperv: ") for s in shown), shown
    assert any("vms.b.hyperv" in s and 'virt_type "kvm"' in s for s in shown), shown
