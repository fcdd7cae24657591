"""The device fields (``disk_bus``, ``nic_model``, ``clock``, ``clock_timers``, ``hyperv``,
``sound``, ``usb_redirection``, ``video``): what each reads from the domains virt-install
makes, what each writes and changes, and that None leaves a domain as it is.

The virt-install domains are ``virt-install --print-xml`` for four operating systems
(``tests/golden/virt-install-xml``); render and patch of each field against libvirt's schema
are the golden cases ``*-devices`` of :mod:`tests.unit.test_domain_xml_golden`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, PatchRefused
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import parse_xml, serialize
from tests.firmware import DEBIAN12

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VIRT_INSTALL = GOLDEN / "virt-install-xml"

DEVICES = (
    "disk_bus",
    "nic_model",
    "clock",
    "clock_timers",
    "hyperv",
    "sound",
    "usb_redirection",
    "video",
)

#: What each virt-install domain's devices read as.
WINDOWS = {
    "disk_bus": "sata",
    "nic_model": "e1000e",
    "clock": "localtime",
    "clock_timers": True,
    "hyperv": True,
    "sound": "ich9",
    "usb_redirection": 2,
    "video": "qxl",
}
LINUX = {
    "disk_bus": "virtio",
    "nic_model": "virtio",
    "clock": "utc",
    "clock_timers": True,
    "hyperv": False,
    "sound": "ich9",
    "usb_redirection": 2,
}
EXPECTED = {
    "win11": WINDOWS,
    "win10": WINDOWS,
    "fedora37": LINUX | {"video": "virtio"},
    "ubuntu22.04": LINUX | {"video": "qxl"},
}


def context(name: str, disk: str = "/tmp/t.qcow2", isos: tuple[str, ...] = ()) -> DomainContext:
    return DomainContext(name=name, disk_path=disk, isos=isos, facts={"firmware": DEBIAN12})


def virt_install(case: str) -> str:
    return (VIRT_INSTALL / f"{case}.xml").read_text()


def definition(**fields: Any) -> VmDefinition:
    base = {
        "memory_gb": 4,
        "vcpus": 2,
        "disk_path": "/tmp/t.qcow2",
        "disk_size_gb": 20,
        "boot": "bios",
        "network": "default",
        "graphics": "spice",
    }
    return VM_SUB.vm_definition(base | fields)


def captured(xml: str, ctx: DomainContext) -> dict[str, Any]:
    values, kept = MAPPING.capture_values(MAPPING.parse(xml, ctx))
    assert kept == {}
    return {k: v for k, v in values.items() if v is not None} | {"disk_size_gb": 20}


# -- what virt-install's domains read as ---------------------------------------------------------


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_virt_install_domain_reads_as_its_devices(case: str) -> None:
    parsed = MAPPING.parse(virt_install(case), context(case))
    assert {name: parsed.readings[name].value for name in DEVICES} == EXPECTED[case]
    assert all(parsed.readings[name].is_clean for name in DEVICES)


#: The domains whose every field bkt can capture: win11's print-xml leaves its firmware and
#: TPM version to libvirt, which fills them in when it defines the domain.
CAPTURABLE = sorted(set(EXPECTED) - {"win11"})


@pytest.mark.parametrize("case", CAPTURABLE)
def test_a_virt_install_domain_is_in_sync_with_its_devices_stated(case: str) -> None:
    xml = virt_install(case)
    ctx = context(case, isos=("/tmp/inst.iso",))
    vm = VM_SUB.vm_definition(captured(xml, ctx))
    assert {name: vm.field(name) for name in DEVICES} == EXPECTED[case]
    assert MAPPING.diff(MAPPING.parse(xml, ctx), vm, ctx) == []
    assert MAPPING.patch(xml, vm, ctx) == serialize(parse_xml(xml))


@pytest.mark.parametrize("case", CAPTURABLE)
def test_a_manifest_that_states_no_device_is_in_sync_with_any_devices(case: str) -> None:
    # The promise to every domain made or captured before the device fields existed: a
    # manifest without them manages none, reports no drift and patches nothing.
    xml = virt_install(case)
    ctx = context(case, isos=("/tmp/inst.iso",))
    values = {k: v for k, v in captured(xml, ctx).items() if k not in DEVICES}
    vm = VM_SUB.vm_definition(values)
    assert {name: vm.field(name) for name in DEVICES} == dict.fromkeys(DEVICES)
    assert MAPPING.diff(MAPPING.parse(xml, ctx), vm, ctx) == []
    # Even with another field to change, nothing of the devices is touched.
    more = vm.replace(memory_gb=vm.memory_gb + 1)
    patched = MAPPING.patch(xml, more, ctx)
    assert [str(c) for c in MAPPING.diff(MAPPING.parse(patched, ctx), more, ctx)] == []
    was, now = MAPPING.parse(xml, ctx).readings, MAPPING.parse(patched, ctx).readings
    assert {n: now[n] for n in DEVICES} == {n: was[n] for n in DEVICES}


def test_a_domain_bkt_made_before_reads_cleanly_and_needs_no_device() -> None:
    xml = (GOLDEN / "render" / "win11.xml").read_text()
    ctx = context("win11", disk="/var/lib/libvirt/images/win11.qcow2")
    parsed = MAPPING.parse(xml, ctx)
    assert {name: parsed.readings[name].value for name in DEVICES} == {
        "disk_bus": "virtio",
        "nic_model": "virtio",
        "clock": "utc",
        "clock_timers": False,
        "hyperv": False,
        "sound": "none",
        "usb_redirection": 0,
        "video": "qxl",
    }
    stated = VM_SUB.vm_definition(_json("render/win11.json"), home="/home/user")
    ctx = context("win11", disk="/var/lib/libvirt/images/win11.qcow2", isos=parsed.cdroms())
    assert MAPPING.diff(parsed, stated, ctx) == []
    # Stating virt-install's Windows devices shows each as a change, and the disk's bus as one
    # that patch refuses.
    windows = stated.replace(**WINDOWS)
    assert [str(c) for c in MAPPING.diff(parsed, windows, ctx)] == [
        "disk_bus: virtio -> sata",
        "nic_model: virtio -> e1000e",
        "clock: utc -> localtime",
        "clock_timers: false -> true",
        "hyperv: false -> true",
        "sound: none -> ich9",
        "usb_redirection: 0 -> 2",
    ]
    with pytest.raises(PatchRefused) as caught:
        MAPPING.patch(xml, windows, ctx)
    assert caught.value.message == (
        "cannot change disk_bus: bkt does not move an existing disk to another bus (a guest "
        "installed on one bus may not boot from another)"
    )
    assert caught.value.hint == "`bkt vm capture NAME` writes the domain's bus into the manifest"


def _json(relative: str) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads((GOLDEN / relative).read_text())
    return data


# -- render -------------------------------------------------------------------------------------


def test_render_without_device_fields_writes_what_bkt_wrote_before() -> None:
    vm = definition()
    root = parse_xml(MAPPING.render(vm, context("vm")))
    assert root.find("clock") is None
    assert root.find("features/hyperv") is None
    assert root.findall("devices/sound") == []
    assert root.findall("devices/redirdev") == []
    assert [d.get("bus") for d in root.iterfind("devices/disk/target")] == ["virtio"]
    assert root.find("devices/interface/model").get("type") == "virtio"  # type: ignore[union-attr]
    assert root.find("devices/video/model").get("type") == "qxl"  # type: ignore[union-attr]


def test_render_writes_the_devices_as_virt_install_does() -> None:
    vm = definition(boot="uefi", iso_sources=[{"path": "/tmp/inst.iso"}], **WINDOWS)
    root = parse_xml(MAPPING.render(vm, context("win", isos=("/tmp/inst.iso",))))
    theirs = parse_xml(virt_install("win11"))
    for path in (
        "clock",
        "features/hyperv/relaxed",
        "features/hyperv/vapic",
        "features/hyperv/spinlocks",
        "devices/sound",
        "devices/interface/model",
    ):
        mine, want = root.find(path), theirs.find(path)
        assert mine is not None and want is not None, path
        assert dict(mine.attrib) == dict(want.attrib), path
    assert [dict(t.attrib) for t in root.iterfind("clock/timer")] == [
        dict(t.attrib) for t in theirs.iterfind("clock/timer")
    ]
    assert [dict(r.attrib) for r in root.iterfind("devices/redirdev")] == [
        dict(r.attrib) for r in theirs.iterfind("devices/redirdev")
    ]
    # The disk is sda on SATA and the installer CD-ROM the next SATA target, as virt-install
    # names them.
    targets = [(t.get("dev"), t.get("bus")) for t in root.iterfind("devices/disk/target")]
    assert targets == [("sda", "sata"), ("sdb", "sata")]


# -- patch, field by field ----------------------------------------------------------------------


def test_a_new_disk_is_added_on_the_manifests_bus() -> None:
    xml = MAPPING.render(definition(disk_bus="sata"), context("vm"))
    root = parse_xml(xml)
    devices = root.find("devices")
    assert devices is not None
    for disk in root.findall("devices/disk"):
        devices.remove(disk)
    vm = definition(disk_bus="sata")
    patched = MAPPING.patch(serialize(root), vm, context("vm"))
    targets = [
        (t.get("dev"), t.get("bus")) for t in parse_xml(patched).iterfind("devices/disk/target")
    ]
    assert targets == [("sda", "sata")]


def test_a_nic_model_change_keeps_the_mac_and_lets_libvirt_place_the_device() -> None:
    xml = virt_install("fedora37").replace(
        '<model type="virtio"/>',
        '<model type="virtio"/><driver queues="4"/>'
        '<address type="pci" domain="0x0000" bus="0x01" slot="0x00" function="0x0"/>',
    )
    ctx = context("f", isos=("/tmp/inst.iso",))
    vm = VM_SUB.vm_definition(captured(xml, ctx) | {"nic_model": "e1000e"})
    patched = parse_xml(MAPPING.patch(xml, vm, ctx))
    interface = patched.find("devices/interface")
    assert interface is not None
    assert [c.tag for c in interface] == ["source", "mac", "model"]
    assert interface.find("mac").get("address") == "52:54:00:07:ba:38"  # type: ignore[union-attr]
    assert interface.find("model").get("type") == "e1000e"  # type: ignore[union-attr]


def test_the_clock_offset_changes_alone_and_other_timers_stay() -> None:
    xml = virt_install("win10").replace(
        '<clock offset="localtime">',
        '<clock offset="variable" adjustment="reset" basis="utc">'
        '<timer name="tsc" frequency="1000000000"/>',
    )
    ctx = context("w", isos=("/tmp/inst.iso",))
    parsed = MAPPING.parse(xml, ctx)
    assert (
        parsed.readings["clock"].reason == "clock offset 'variable' (bkt knows utc and localtime)"
    )
    vm = VM_SUB.vm_definition(captured(xml, ctx) | {"clock": "localtime"})
    clock = parse_xml(MAPPING.patch(xml, vm, ctx)).find("clock")
    assert clock is not None
    assert dict(clock.attrib) == {"offset": "localtime"}
    assert [t.get("name") for t in clock] == ["tsc", "rtc", "pit", "hpet", "hypervclock"]


def test_clock_timers_are_only_rtc_pit_and_hpet() -> None:
    xml = virt_install("win10")
    ctx = context("w", isos=("/tmp/inst.iso",))
    off = VM_SUB.vm_definition(captured(xml, ctx) | {"clock_timers": False})
    patched = MAPPING.patch(xml, off, ctx)
    assert [t.get("name") for t in parse_xml(patched).iterfind("clock/timer")] == ["hypervclock"]
    # Back on, before the timers of others, as virt-install orders them.
    on = off.replace(clock_timers=True)
    again = MAPPING.patch(patched, on, ctx)
    assert [t.get("name") for t in parse_xml(again).iterfind("clock/timer")] == [
        "rtc",
        "pit",
        "hpet",
        "hypervclock",
    ]
    partial = xml.replace('<timer name="pit" tickpolicy="delay"/>', "")
    reading = MAPPING.parse(partial, ctx).readings["clock_timers"]
    assert reading.reason == (
        "timers hpet, rtc set otherwise than RTC catch-up, PIT delay and no HPET"
    )


def test_hyperv_reads_any_set_of_enlightenments_as_true_and_keeps_it() -> None:
    ctx = context("w", isos=("/tmp/inst.iso",))
    vm = VM_SUB.vm_definition(captured(virt_install("win10"), ctx))
    assert vm.hyperv is True
    three = re.search(r"<hyperv>(.*?)</hyperv>", virt_install("win10"), re.S)
    assert three is not None
    # virt-install 5 turns on what the host's libvirt offers: here only spinlocks (a host
    # whose KVM offers no more), elsewhere many more. Either reads as true, and sync of true
    # changes nothing.
    for hyperv in (
        '<hyperv><spinlocks state="on" retries="8191"/></hyperv>',
        f'<hyperv>{three.group(1)}<vpindex state="on"/><synic state="on"/>'
        '<stimer state="on"><direct state="on"/></stimer></hyperv>',
        '<hyperv mode="passthrough"/>',
    ):
        xml = virt_install("win10").replace(three.group(0), hyperv)
        assert hyperv in xml
        assert MAPPING.parse(xml, ctx).readings["hyperv"].value is True, hyperv
        assert MAPPING.patch(xml, vm, ctx) == xml, hyperv
    # Without the timer, or with no enlightenment on, it is neither value; sync of true
    # completes it with the three and keeps a setting (vendor_id) it does not own.
    no_timer = virt_install("win10").replace('<timer name="hypervclock" present="yes"/>', "")
    assert MAPPING.parse(no_timer, ctx).readings["hyperv"].reason == (
        "Hyper-V enlightenments without hypervclock"
    )
    settings = virt_install("win10").replace(
        three.group(1), '<relaxed state="off"/><vendor_id state="on" value="KVMKVMKVM"/>'
    )
    assert MAPPING.parse(settings, ctx).readings["hyperv"].reason == (
        "<hyperv> without an enlightenment on"
    )
    patched = MAPPING.patch(settings, vm, ctx)
    hyperv_element = parse_xml(patched).find("features/hyperv")
    assert hyperv_element is not None
    assert {c.tag: c.get("state") for c in hyperv_element} == {
        "relaxed": "on",
        "vapic": "on",
        "spinlocks": "on",
        "vendor_id": "on",
    }
    assert MAPPING.diff(MAPPING.parse(patched, ctx), vm, ctx) == []
    # Turned off: no <hyperv> and no hypervclock; the other timers stay.
    off = MAPPING.patch(settings, vm.replace(hyperv=False), ctx)
    root = parse_xml(off)
    assert root.find("features/hyperv") is None
    assert [t.get("name") for t in root.iterfind("clock/timer")] == ["rtc", "pit", "hpet"]


def test_a_sound_model_change_keeps_its_audio_backend() -> None:
    xml = virt_install("ubuntu22.04").replace(
        '<sound model="ich9"/>',
        '<sound model="ich9"><codec type="micro"/><audio id="1"/>'
        '<address type="pci" domain="0x0000" bus="0x00" slot="0x1b" function="0x0"/></sound>'
        '<audio id="1" type="spice"/>',
    )
    ctx = context("u", isos=("/tmp/inst.iso",))
    vm = VM_SUB.vm_definition(captured(xml, ctx) | {"sound": "ac97"})
    root = parse_xml(MAPPING.patch(xml, vm, ctx))
    sound = root.find("devices/sound")
    assert sound is not None
    assert sound.get("model") == "ac97"
    assert [c.tag for c in sound] == ["audio"]
    none = parse_xml(MAPPING.patch(xml, vm.replace(sound="none"), ctx))
    assert none.findall("devices/sound") == []
    assert none.find("devices/audio") is not None


def test_usb_redirection_counts_only_spice_channels() -> None:
    tcp = (
        '<redirdev bus="usb" type="tcp">'
        '<source mode="connect" host="h" service="4000"/></redirdev>'
    )
    xml = virt_install("ubuntu22.04").replace("<memballoon", tcp + "<memballoon")
    ctx = context("u", isos=("/tmp/inst.iso",))
    assert MAPPING.parse(xml, ctx).readings["usb_redirection"].value == 2
    vm = VM_SUB.vm_definition(captured(xml, ctx) | {"usb_redirection": 0})
    left = [
        r.get("type") for r in parse_xml(MAPPING.patch(xml, vm, ctx)).iterfind("devices/redirdev")
    ]
    assert left == ["tcp"]
    more = [
        r.get("type")
        for r in parse_xml(MAPPING.patch(xml, vm.replace(usb_redirection=3), ctx)).iterfind(
            "devices/redirdev"
        )
    ]
    assert more == ["spicevmc", "spicevmc", "tcp", "spicevmc"]


def test_video_none_beside_graphics_is_model_none() -> None:
    xml = virt_install("fedora37")
    ctx = context("f", isos=("/tmp/inst.iso",))
    vm = VM_SUB.vm_definition(captured(xml, ctx) | {"video": "none"})
    patched = MAPPING.patch(xml, vm, ctx)
    assert [m.get("type") for m in parse_xml(patched).iterfind("devices/video/model")] == ["none"]
    assert MAPPING.parse(patched, ctx).readings["video"].value == "none"
    odd = xml.replace(
        '<model type="virtio"/>\n    </video>', '<model type="cirrus"/>\n    </video>'
    )
    assert MAPPING.parse(odd, ctx).readings["video"].reason == (
        "video model 'cirrus' (bkt knows qxl, virtio, vga, bochs, none)"
    )


def test_without_an_interface_the_nic_model_is_not_compared() -> None:
    vm = definition(network="none", nic_model="e1000e")
    ctx = context("vm")
    xml = MAPPING.render(vm, ctx)
    assert parse_xml(xml).find("devices/interface") is None
    assert MAPPING.diff(MAPPING.parse(xml, ctx), vm, ctx) == []
    # A NIC added later gets the manifest's model.
    with_nic = vm.replace(network="default")
    patched = MAPPING.patch(xml, with_nic, ctx)
    model = parse_xml(patched).find("devices/interface/model")
    assert model is not None and model.get("type") == "e1000e"
