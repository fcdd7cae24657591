"""The rules of each field of the domain XML mapping: what parse reads, what drift says, what
patch changes, and the tree mechanics they share."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.domain_xml import (
    DomainContext,
    DomainMapping,
    Parsed,
    PatchRefused,
    Reading,
)
from bkt_vm_plugin.iso import cache_name
from bkt_vm_plugin.mapping_disks import target_index, target_name
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.xmltree import DomainXmlError, insert_child, make, parse_xml, remove, serialize
from tests.firmware import DEBIAN12

VM_SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
MAPPING: DomainMapping = VM_SUB.mapping
CTX = DomainContext(name="vm", disk_path="/vm.qcow2", facts={"firmware": DEBIAN12})

BASE: dict[str, Any] = {
    "memory_gb": 2,
    "vcpus": 2,
    "disk_path": "/vm.qcow2",
    "disk_size_gb": 10,
    "boot": "uefi",
    "network": "default",
    "graphics": "vnc",
    "virt_type": "qemu",
}


def vm(**changes: Any) -> VmDefinition:
    return VM_SUB.vm_definition(BASE | changes)


def ctx_of(definition: VmDefinition, cached: str = "cached.iso") -> DomainContext:
    return resolve_context(
        "vm",
        definition,
        home="/home/user",
        iso_cache="/cache",
        exists=lambda p: p.endswith(cached) or p.startswith("/isos/"),
        facts={"autostart": False},
    )


def domain(body: str, kind: str = "kvm") -> Parsed:
    return MAPPING.parse(f"<domain type='{kind}'>{body}</domain>", CTX)


def reading(body: str, field: str, kind: str = "kvm") -> Reading:
    return domain(body, kind).readings[field]


def devices(xml: str, field: str) -> Reading:
    return reading(f"<devices>{xml}</devices>", field)


# -- documents -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "<domain>", "<domain/><domain/>", "<domain>&nope;</domain>"])
def test_what_is_not_well_formed_is_an_error(text: str) -> None:
    with pytest.raises(DomainXmlError, match=r"^domain XML is not well-formed: "):
        parse_xml(text)


def test_what_is_not_a_domain_is_an_error() -> None:
    with pytest.raises(DomainXmlError) as caught:
        parse_xml("<network/>")
    assert str(caught.value) == "not a domain XML: the root element is <network>, not <domain>"
    with pytest.raises(DomainXmlError, match="<x:domain>, not <domain>"):
        parse_xml("<x:domain xmlns:x='urn:y'/>")


def test_entities_are_never_expanded() -> None:
    bomb = (
        "<!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;'>]><domain>&b;</domain>"
    )
    with pytest.raises(DomainXmlError, match="DOCTYPE"):
        parse_xml(bomb)
    with pytest.raises(DomainXmlError):
        parse_xml("<!DOCTYPE domain SYSTEM 'http://example.org/x.dtd'><domain/>")


def test_comments_declarations_and_whitespace_survive() -> None:
    text = (
        "<?xml version='1.0' encoding='UTF-8'?>\n<!-- made by hand -->\n"
        "<domain>\n  <!-- x -->\n  <name>a</name>\n</domain>\n"
    )
    assert serialize(parse_xml(text)) == text.split("\n", 1)[1].replace("'", '"')
    assert domain("<name>a<!-- b -->c</name>").name == "ac"


def test_the_marker_is_bkts_namespace_only() -> None:
    def marker(xml: str) -> bool:
        return domain(f"<metadata>{xml}</metadata>").has_marker

    assert marker("<bkt:vm xmlns:bkt='urn:bkt:vm:1'/>")
    assert marker("<other:vm xmlns:other='urn:bkt:vm:1'/>")
    assert not marker("<bkt:vm xmlns:bkt='http://example.org/bkt'/>")
    assert not marker("<vm/>")
    assert not domain("").has_marker


# -- parse, field by field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "gb"),
    [
        ("<memory unit='GiB'>2</memory>", 2),
        ("<memory>2097152</memory>", 2),
        ("<memory unit='M'>3072</memory>", 3),
        ("<memory unit='b'>1073741824</memory>", 1),
        ("<memory unit='KiB'> 1048576 </memory><currentMemory>1048576</currentMemory>", 1),
    ],
)
def test_memory_is_read_in_any_libvirt_unit(xml: str, gb: int) -> None:
    assert reading(xml, "memory_gb") == Reading.clean(gb)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<memory unit='MiB'>1536</memory>", "1572864 KiB is not a whole number of GiB"),
        (
            "<memory unit='GB'>1</memory>",
            "976562.5" and "1000000000 bytes is not a whole number of GiB",
        ),
        ("<memory unit='KiB'>0</memory>", "memory is 0"),
        ("<memory unit='parsec'>1</memory>", "<memory> is not a size libvirt can read"),
        ("<memory>lots</memory>", "<memory> is not a size libvirt can read"),
        ("<memory>-1</memory>", "<memory> is not a size libvirt can read"),
        ("", "no <memory> element (the size comes from NUMA cells)"),
        ("<memory unit='TiB'>4194304</memory>", "4294967296 GiB is too large"),
        (
            "<memory unit='GiB'>2</memory><currentMemory unit='MiB'>1024</currentMemory>",
            "currentMemory (1048576 KiB) differs from memory (2097152 KiB): a balloon target",
        ),
        (
            "<memory unit='GiB'>2</memory><currentMemory unit='x'>1</currentMemory>",
            "<currentMemory> is not a size libvirt can read",
        ),
    ],
)
def test_memory_that_is_not_whole_gib_does_not_round_trip(xml: str, reason: str) -> None:
    assert reading(xml, "memory_gb") == Reading.unsupported(reason)


def test_vcpus_default_to_one_and_hotplug_does_not_round_trip() -> None:
    assert reading("", "vcpus") == Reading.clean(1)
    assert reading("<vcpu placement='static'> 4 </vcpu>", "vcpus") == Reading.clean(4)
    assert reading("<vcpu current='4'>4</vcpu>", "vcpus") == Reading.clean(4)
    assert reading("<vcpu current='2'>4</vcpu>", "vcpus").reason == (
        "2 of 4 vCPUs are enabled at boot (CPU hotplug)"
    )
    assert reading("<vcpu>four</vcpu>", "vcpus").reason == "<vcpu> is not a number"
    assert reading("<vcpu>0</vcpu>", "vcpus").reason == "vcpu count is 0"
    assert reading("<vcpu current='x'>2</vcpu>", "vcpus").reason == "vcpu current= is not a number"


EFI = "<os firmware='efi'>"


def features(secure: str, keys: str) -> str:
    return (
        f"<firmware><feature enabled='{keys}' name='enrolled-keys'/>"
        f"<feature enabled='{secure}' name='secure-boot'/></firmware>"
    )


@pytest.mark.parametrize(
    ("xml", "boot", "secure"),
    [
        ("<os><type>hvm</type></os>", "bios", False),
        ("<os firmware='bios'/>", "bios", False),
        ("<os><loader type='rom'>/usr/share/seabios/bios.bin</loader></os>", "bios", False),
        # What virt-install and virt-manager write for a UEFI guest: libvirt chooses the
        # firmware, here (Debian's descriptors) Secure Boot with keys for q35, plain for pc.
        (f"{EFI}<type machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>", "uefi", True),
        (f"{EFI}<type machine='pc-i440fx-7.2'>hvm</type></os>", "uefi", False),
        (
            f"{EFI}<type machine='virt'>hvm</type></os>",
            "uefi",
            "its UEFI firmware is chosen by libvirt: no UEFI firmware descriptor matches "
            "machine virt",
        ),
        (
            f"{EFI}<type machine='pc-q35-7.2'>hvm</type></os><pm><suspend-to-disk "
            "enabled='yes'/></pm>",
            "uefi",
            "its UEFI firmware is chosen by libvirt: no UEFI firmware descriptor matches "
            "machine pc-q35-7.2",
        ),
        (
            f"{EFI}<type machine='pc-q35-7.2'>hvm</type></os><features><smm state='off'/>"
            "</features>",
            "uefi",
            "its UEFI firmware is chosen by libvirt: libvirt would boot it with "
            "/usr/share/OVMF/OVMF_CODE_4M.ms.fd, which needs SMM, and the domain turns SMM "
            "off: it cannot start",
        ),
        (f"{EFI}<type machine='pc-q35-7.2'>hvm</type><loader secure='yes'/></os>", "uefi", True),
        (
            f"{EFI}<type machine='pc-q35-7.2'>hvm</type><firmware><feature enabled='no' "
            "name='enrolled-keys'/></firmware></os>",
            "uefi",
            False,
        ),
        (f"{EFI}{features('no', 'no')}</os>", "uefi", False),
        (f"{EFI}{features('yes', 'yes')}</os>", "uefi", True),
        (
            f"{EFI}{features('yes', 'yes')}</os><features><smm state='off'/></features>",
            "uefi",
            "Secure Boot firmware with SMM off",
        ),
        (
            f"{EFI}{features('yes', 'no')}</os>",
            "uefi",
            "Secure Boot firmware without enrolled keys (Secure Boot is not enforced)",
        ),
        (
            f"{EFI}{features('no', 'yes')}</os>",
            "uefi",
            "firmware feature enrolled-keys without secure-boot",
        ),
        (
            f"{EFI}<firmware><feature enabled='yes' name='secure-boot'/></firmware></os>",
            "uefi",
            "firmware feature secure-boot without enrolled-keys: libvirt picks the keys when "
            "the VM starts",
        ),
        ("<os><loader readonly='yes' type='pflash'>/OVMF_CODE.fd</loader></os>", "uefi", False),
        (f"{EFI}<loader secure='yes'>/OVMF_CODE.ms.fd</loader></os>", "uefi", True),
    ],
)
def test_firmware_and_secure_boot(xml: str, boot: str, secure: bool | str) -> None:
    parsed = domain(xml)
    assert parsed.readings["boot"] == Reading.clean(boot)
    if isinstance(secure, str):
        assert parsed.readings["secure_boot"] == Reading.unsupported(secure)
    else:
        assert parsed.readings["secure_boot"] == Reading.clean(secure)


def test_tpm_is_an_emulated_tpm_2_0_of_any_model() -> None:
    def emulator(model: str, version: str) -> str:
        return f"<tpm model='{model}'><backend type='emulator' version='{version}'/></tpm>"

    assert devices("", "tpm") == Reading.clean("none")
    assert devices(emulator("tpm-crb", "2.0"), "tpm") == Reading.clean("2.0")
    assert devices(emulator("tpm-tis", "2.0"), "tpm") == Reading.clean("2.0")
    assert devices(emulator("tpm-tis", "1.2"), "tpm").reason == "an emulated TPM of version 1.2"
    assert devices("<tpm><backend type='emulator'/></tpm>", "tpm").reason == (
        "an emulated TPM of version (libvirt's default)"
    )
    assert devices("<tpm><backend type='passthrough'/></tpm>", "tpm").reason == (
        "a TPM with a passthrough backend, not an emulated one"
    )
    assert devices(emulator("tpm-crb", "2.0") * 2, "tpm").reason == "2 TPM devices"


def test_network_is_the_first_interface_in_manifest_spelling() -> None:
    def on(net: str) -> str:
        return f"<interface type='network'><source network='{net}'/></interface>"

    assert devices("", "network") == Reading.clean("none")
    assert devices(on("default"), "network") == Reading.clean("default")
    bridge = "<interface type='bridge'><source bridge='br0'/></interface>"
    assert devices(bridge, "network") == Reading.clean("bridge:br0")
    assert devices("<interface type='user'/>", "network") == Reading.clean("user")
    assert devices(on("default") + on("other"), "network") == Reading.lossy_(
        "default", "2 interfaces; the manifest describes only the first"
    )
    for odd, reason in [
        ("<interface type='direct'/>", "an interface type='direct' (bkt knows network,"),
        (
            "<interface type='user'><backend type='passt'/></interface>",
            "an interface type='user' with a backend",
        ),
        (on("user"), "a libvirt network named 'user', which the manifest cannot name"),
        ("<interface type='network'/>", "an interface type='network' without a source network"),
        ("<interface type='bridge'/>", "an interface type='bridge' without a source bridge"),
        (on("none"), "a libvirt network named 'none', which the manifest cannot name"),
        (on("bridge:x"), "a libvirt network named 'bridge:x', which the manifest cannot name"),
    ]:
        assert (devices(odd, "network").reason or "").startswith(reason), odd


def test_graphics_is_the_first_graphics_device() -> None:
    assert devices("", "graphics") == Reading.clean("none")
    assert devices("<graphics type='spice'/>", "graphics") == Reading.clean("spice")
    assert devices("<graphics type='vnc' port='5900'/>", "graphics") == Reading.clean("vnc")
    assert devices("<graphics type='sdl'/>", "graphics").reason == (
        "graphics type 'sdl' (bkt knows spice and vnc)"
    )
    assert devices("<graphics type='vnc'/><graphics type='spice'/>", "graphics") == (
        Reading.lossy_("vnc", "2 graphics devices; the manifest describes only the first")
    )


def test_cpu_model_none_is_libvirts_default_under_qemu() -> None:
    custom = "<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>"
    assert reading("", "cpu_model", "qemu") == Reading.clean(None)
    assert reading(custom, "cpu_model", "qemu") == Reading.clean(None)
    topology = "<cpu><topology sockets='1' cores='2' threads='1'/></cpu>"
    assert reading(topology, "cpu_model", "qemu") == Reading.clean(None)
    assert reading("", "cpu_model") == Reading.clean("qemu64")
    assert reading(custom, "cpu_model") == Reading.clean("qemu64")
    passthrough = "<cpu mode='host-passthrough' check='none' migratable='on'/>"
    assert reading(passthrough, "cpu_model") == Reading.clean("host-passthrough")
    assert reading("<cpu mode='host-model'/>", "cpu_model", "qemu") == Reading.clean("host-model")
    named = "<cpu><model> Skylake-Client</model><feature name='vmx' policy='disable'/></cpu>"
    assert reading(named, "cpu_model", "qemu") == Reading.clean(" Skylake-Client")
    assert reading("<cpu mode='maximum'/>", "cpu_model").reason == "CPU mode 'maximum'"


def test_the_managed_disk_is_the_first_disk_device_and_isos_are_file_cdroms() -> None:
    parsed = domain(
        """<devices>
          <disk type='file' device='cdrom'><source file='/a.iso'/><target dev='hda'/></disk>
          <disk type='file' device='cdrom'><target dev='hdb'/></disk>
          <disk type='block' device='cdrom'><source dev='/dev/sr0'/></disk>
          <disk type='file'><source file='/vm.img'/></disk>
          <disk type='file' device='disk'><driver type='qcow2'/><source file='/d.qcow2'/></disk>
          <disk device='cdrom'><source file='/b.iso'/></disk>
        </devices>"""
    )
    assert parsed.readings["disk_path"] == Reading.clean("/vm.img")
    assert parsed.readings["disk_format"] == Reading.clean("raw")
    assert parsed.readings["iso_sources"] == Reading.clean(("/a.iso", "/b.iso"))
    block = "<disk type='block' device='disk'><source dev='/dev/vg/vm'/></disk>"
    assert devices(block, "disk_path").reason == "the first disk is type='block', not a file"
    vmdk = "<disk type='file'><driver type='vmdk'/><source file='/x.vmdk'/></disk>"
    assert devices(vmdk, "disk_format").reason == "image format 'vmdk' (bkt knows qcow2 and raw)"
    assert devices("<disk/>", "disk_path").reason == "the first disk has no source file"
    assert reading("", "disk_path").reason == "no disk"


def test_namespaced_elements_are_not_domain_elements() -> None:
    parsed = domain(
        "<x:memory xmlns:x='urn:x' unit='GiB'>2</x:memory><memory unit='GiB'>3</memory>"
    )
    assert parsed.readings["memory_gb"] == Reading.clean(3)


def test_target_names_follow_libvirt() -> None:
    for index, name in [(0, "sda"), (25, "sdz"), (26, "sdaa"), (27, "sdab"), (702, "sdaaa")]:
        assert target_name("sd", index) == name
        assert target_index("sd", name) == index
    assert target_index("sd", "vda") is None
    assert target_index("sd", "sd1") is None
    assert target_index("sd", "sd") is None


# -- diff ------------------------------------------------------------------------------------


def observed(definition: VmDefinition) -> Parsed:
    ctx = ctx_of(definition)
    return MAPPING.parse(MAPPING.render(definition, ctx), ctx)


def test_explicit_defaults_are_not_drift() -> None:
    plain = vm()
    explicit = vm(tpm="none", cpu_model="qemu64", secure_boot=False, iso_sources=[])
    assert MAPPING.diff(observed(plain), explicit, ctx_of(explicit)) == []
    assert MAPPING.diff(observed(explicit), plain, ctx_of(plain)) == []


def test_an_iso_left_out_for_a_missing_file_is_not_drift_and_is_warned_about() -> None:
    definition = vm(
        iso_sources=[
            {"url": "https://example.org/cached.iso"},
            {"url": "https://example.org/later.iso"},
            {"path": "~/gone.iso"},
        ]
    )
    ctx = ctx_of(definition)
    later = cache_name("https://example.org/later.iso")
    assert ctx.isos == (f"/cache/{cache_name('https://example.org/cached.iso')}",)
    assert ctx.left_out == ("https://example.org/later.iso",)
    assert [iso.path for iso in ctx.missing] == ["/home/user/gone.iso"]
    assert ctx.warnings == (
        f"ISO https://example.org/later.iso is not in the ISO cache (/cache/{later}); its "
        "CD-ROM is left out until it is: `bkt vm fetch-iso vm` downloads it",
        "ISO /home/user/gone.iso does not exist; its CD-ROM is left out until it does",
    )
    assert MAPPING.diff(observed(definition), definition, ctx) == []


def test_without_an_iso_cache_url_isos_are_left_out_and_the_rest_resolves() -> None:
    # Neither XDG_CACHE_HOME nor HOME: no ISO cache, which only URL sources need.
    url = "https://example.org/install.iso"
    definition = vm(iso_sources=[{"path": "/isos/local.iso"}, {"url": url}])
    ctx = resolve_context(
        "vm",
        definition,
        home=None,
        iso_cache=None,
        exists=lambda path: path == "/isos/local.iso",
        facts={"autostart": False},
    )
    assert ctx.isos == ("/isos/local.iso",)
    assert ctx.left_out == (url,)
    assert ctx.warnings == (
        f"ISO {url} cannot be cached (neither XDG_CACHE_HOME (absolute) nor HOME is set); "
        "its CD-ROM is left out",
    )
    parsed = MAPPING.parse(MAPPING.render(definition, ctx), ctx)
    assert MAPPING.diff(parsed, definition, ctx) == []


def test_a_url_isos_cdrom_stays_a_url_source_when_the_cache_is_emptied() -> None:
    url = "https://example.org/install.iso"
    definition = vm(iso_sources=[{"url": url}])
    with_cache = ctx_of(definition, cached="install.iso")
    xml = MAPPING.render(definition, with_cache)
    cached = f"/cache/{cache_name(url)}"
    assert with_cache.isos == (cached,)
    # The cache is emptied: the domain's CD-ROM is kept, not drift, and captured as the URL.
    parsed = MAPPING.parse(xml, with_cache)
    emptied = resolve_context(
        "vm",
        definition,
        home="/home/user",
        iso_cache="/cache",
        exists=lambda _: False,
        facts={"autostart": False},
        present=parsed.cdroms(),
    )
    assert emptied.isos == (cached,) and emptied.left_out == ()
    assert "no longer in the ISO cache" in emptied.warnings[0]
    assert MAPPING.diff(parsed, definition, emptied) == []
    values, kept = MAPPING.capture_values(parsed, definition, emptied)
    assert values["iso_sources"] == [{"url": url}] and "iso_sources" not in kept


def test_changes_read_old_to_new_in_manifest_spelling_and_field_order() -> None:
    before = vm()
    after = vm(
        memory_gb=4,
        tpm="2.0",
        graphics="spice",
        cpu_model="host-model",
        virt_type="kvm",
        iso_sources=[{"path": "/isos/a.iso"}, {"path": "/isos/b b.iso"}],
        secure_boot=True,
        autostart=True,
    )
    changes = MAPPING.diff(observed(before), after, ctx_of(after))
    assert [str(c) for c in changes] == [
        "memory_gb: 2 -> 4",
        "tpm: none -> 2.0",
        "graphics: vnc -> spice",
        "iso_sources: none -> /isos/a.iso, /isos/b b.iso",
        "cpu_model: libvirt's default -> host-model",
        "virt_type: qemu -> kvm",
        "secure_boot: false -> true",
        "autostart: false -> true",
    ]
    assert MAPPING.needs_define(changes)
    assert not MAPPING.needs_define([c for c in changes if c.field == "autostart"])


def test_a_kvm_domain_without_cpu_is_qemu64_against_host_passthrough() -> None:
    definition = vm(virt_type="kvm")
    xml = MAPPING.render(definition, ctx_of(definition))
    root = parse_xml(xml)
    cpu = root.find("cpu")
    assert cpu is not None
    remove(cpu)
    changes = MAPPING.diff(MAPPING.parse(serialize(root), CTX), definition, ctx_of(definition))
    assert [str(c) for c in changes] == ["cpu_model: qemu64 -> host-passthrough"]


def test_what_no_manifest_value_describes_shows_its_reason() -> None:
    definition = vm()
    xml = MAPPING.render(definition, ctx_of(definition)).replace(
        "2097152</currentMemory>", "1048576</currentMemory>"
    )
    changes = MAPPING.diff(MAPPING.parse(xml, CTX), definition, ctx_of(definition))
    assert [str(c) for c in changes] == [
        "memory_gb: (currentMemory (1048576 KiB) differs from memory (2097152 KiB): a balloon "
        "target) -> 2"
    ]


def test_the_disk_format_is_compared_with_the_image() -> None:
    definition = vm()
    parsed = observed(definition)
    raw = resolve_context(
        "vm", definition, home=None, iso_cache="/c", disk_format="raw", exists=lambda _: True
    )
    assert [str(c) for c in MAPPING.diff(parsed, definition, raw)] == ["disk_format: qcow2 -> raw"]


# -- capture ---------------------------------------------------------------------------------


def test_capture_keeps_the_spelling_of_paths_and_sources() -> None:
    base = vm(
        disk_path="~/vm.qcow2",
        iso_sources=[
            {"url": "https://example.org/cached.iso", "sha256": "a" * 64},
            {"url": "https://example.org/later.iso"},
            {"path": "/isos/b.iso"},
        ],
    )
    ctx = ctx_of(base)
    xml = MAPPING.render(base, ctx)
    values, kept = MAPPING.capture_values(MAPPING.parse(xml, ctx), base, ctx)
    assert kept == {}
    assert values["disk_path"] == "~/vm.qcow2"
    assert values["iso_sources"] == [
        {"url": "https://example.org/cached.iso", "sha256": "a" * 64},
        {"url": "https://example.org/later.iso"},
        {"path": "/isos/b.iso"},
    ]
    # Another CD-ROM: each maps back to its source, a new file becomes a path, what was left
    # out follows at the end, and an attached source the domain no longer has is dropped.
    other = xml.replace("/isos/b.iso", "/isos/new.iso")
    values, _ = MAPPING.capture_values(MAPPING.parse(other, ctx), base, ctx)
    assert values["iso_sources"] == [
        {"url": "https://example.org/cached.iso", "sha256": "a" * 64},
        {"path": "/isos/new.iso"},
        {"url": "https://example.org/later.iso"},
    ]


def test_capture_leaves_out_what_does_not_round_trip() -> None:
    definition = vm()
    xml = MAPPING.render(definition, ctx_of(definition)).replace(
        "2097152</currentMemory>", "1048576</currentMemory>"
    )
    values, kept = MAPPING.capture_values(MAPPING.parse(xml, CTX))
    assert "memory_gb" not in values
    assert kept == {
        "memory_gb": "currentMemory (1048576 KiB) differs from memory (2097152 KiB): a balloon "
        "target"
    }
    two = xml.replace("</interface>", "</interface><interface type='user'/>")
    values, kept = MAPPING.capture_values(MAPPING.parse(two, CTX))
    assert "network" not in values and "network" in kept


# -- patch -----------------------------------------------------------------------------------

# What libvirt 9.0 keeps of a SPICE domain (trimmed `dumpxml --inactive --security-info`).
LIBVIRT_SPICE = """<domain type='qemu'>
  <name>vm</name>
  <uuid>824909e5-5223-4989-b4b8-da04c8be01e6</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/nvram/vm_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='2' dies='1' cores='1' threads='1'/>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <mac address='52:54:00:12:34:56'/>
      <model type='e1000e'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <input type='tablet' bus='usb'/>
    <graphics type='spice' autoport='yes' passwd='secret' connected='disconnect'>
      <listen type='address' address='127.0.0.1'/>
      <image compression='off'/>
    </graphics>
    <video>
      <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
    </video>
  </devices>
</domain>
"""


def spice(**changes: Any) -> VmDefinition:
    return vm(graphics="spice", network="default", **changes)


def patched(definition: VmDefinition) -> str:
    return MAPPING.patch(LIBVIRT_SPICE, definition, ctx_of(definition))


def test_an_interface_of_another_kind_is_rebuilt_keeping_its_mac_and_address() -> None:
    interface = parse_xml(patched(spice())).find("devices/interface")
    assert interface is not None
    assert interface.get("type") == "network"
    assert [c.tag for c in interface] == ["source", "model", "mac", "address"]
    assert interface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert interface.find("mac").get("address") == "52:54:00:12:34:56"  # type: ignore[union-attr]


def test_user_mode_networking_is_rendered_parsed_and_switched_in_place() -> None:
    def interface(xml: str) -> Any:
        found = parse_xml(xml).find("devices/interface")
        assert found is not None
        return found

    user, default = vm(graphics="spice", network="user"), spice()
    # From another kind (ethernet): rebuilt as render's interface, MAC and address kept.
    as_user = MAPPING.patch(LIBVIRT_SPICE, user, ctx_of(user))
    node = interface(as_user)
    assert node.get("type") == "user" and [c.tag for c in node] == ["model", "mac", "address"]
    assert MAPPING.parse(as_user, ctx_of(user)).readings["network"] == Reading.clean("user")
    # Between the kinds bkt names: only the type and the source change.
    on_default = MAPPING.patch(as_user, default, ctx_of(default))
    node = interface(on_default)
    assert node.get("type") == "network" and sorted(c.tag for c in node) == [
        "address",
        "mac",
        "model",
        "source",
    ]
    back = interface(MAPPING.patch(on_default, user, ctx_of(user)))
    assert back.get("type") == "user" and back.find("source") is None
    assert back.find("mac").get("address") == "52:54:00:12:34:56"
    rendered = interface(MAPPING.render(user, ctx_of(user)))
    assert rendered.get("type") == "user" and [c.tag for c in rendered] == ["model"]


def test_turning_on_secure_boot_keeps_the_nvram_file_and_bios_drops_it() -> None:
    root = parse_xml(patched(spice(secure_boot=True)))
    assert root.find("os/loader") is None
    nvram = root.find("os/nvram")
    assert nvram is not None and dict(nvram.attrib) == {}
    assert nvram.text == "/var/lib/libvirt/nvram/vm_VARS.fd"
    assert root.find("features/smm").get("state") == "on"  # type: ignore[union-attr]
    assert MAPPING.parse(serialize(root), CTX).readings["secure_boot"] == Reading.clean(True)
    bios = parse_xml(patched(spice(boot="bios")))
    assert dict(bios.find("os").attrib) == {}  # type: ignore[union-attr]
    assert bios.find("os/nvram") is None and bios.find("os/firmware") is None


def test_a_vcpus_change_fixes_a_topology_that_no_longer_adds_up() -> None:
    root = parse_xml(patched(spice(vcpus=6)))
    assert root.find("vcpu").text == "6"  # type: ignore[union-attr]
    assert root.find("cpu/topology").attrib == {  # type: ignore[union-attr]
        "sockets": "1",
        "dies": "1",
        "cores": "6",
        "threads": "1",
    }
    # The CPU model did not change, so it stays as libvirt wrote it.
    assert root.find("cpu/model").get("fallback") == "forbid"  # type: ignore[union-attr]
    # A topology that still adds up, or none, is left alone.
    four = parse_xml(patched(spice(vcpus=2)))
    assert four.find("cpu/topology").get("sockets") == "2"  # type: ignore[union-attr]
    bare = LIBVIRT_SPICE.replace(
        "    <topology sockets='2' dies='1' cores='1' threads='1'/>\n", ""
    )
    definition = spice(vcpus=6)
    assert (
        parse_xml(MAPPING.patch(bare, definition, ctx_of(definition))).find("cpu/topology") is None
    )


def test_an_in_sync_domain_is_not_touched() -> None:
    once = patched(spice())
    assert MAPPING.patch(once, spice(), ctx_of(spice())) == once


def test_numa_guests_and_vcpu_lists_are_not_resized() -> None:
    numa = LIBVIRT_SPICE.replace(
        "<topology", "<numa><cell id='0' cpus='0-1' memory='2097152' unit='KiB'/></numa><topology"
    )
    with pytest.raises(PatchRefused) as caught:
        patched_numa = MAPPING.patch(numa, spice(memory_gb=4), ctx_of(spice()))
        del patched_numa
    assert str(caught.value) == (
        "cannot change memory_gb: the memory is split over NUMA cells, which bkt does not resize"
    )
    assert caught.value.field == "memory_gb"
    with pytest.raises(PatchRefused, match=r"^cannot change vcpus: the vCPUs are assigned"):
        MAPPING.patch(numa, spice(vcpus=4), ctx_of(spice()))
    lists = LIBVIRT_SPICE.replace("</vcpu>", "</vcpu><vcpus><vcpu id='0' enabled='yes'/></vcpus>")
    with pytest.raises(PatchRefused, match=r"one by one \(<vcpus>\)"):
        MAPPING.patch(lists, spice(vcpus=4), ctx_of(spice()))


def test_patching_malformed_xml_is_an_error() -> None:
    with pytest.raises(DomainXmlError):
        MAPPING.patch("<domain>", spice(), ctx_of(spice()))


def test_isos_become_bootable_only_where_the_domain_orders_boot_in_os() -> None:
    definition = spice(iso_sources=[{"path": "/isos/a.iso"}])
    ctx = ctx_of(definition)
    root = parse_xml(MAPPING.patch(LIBVIRT_SPICE, definition, ctx))
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd", "cdrom"]
    per_device = LIBVIRT_SPICE.replace("    <boot dev='hd'/>\n", "").replace(
        "<target dev='vda' bus='virtio'/>", "<target dev='vda' bus='virtio'/><boot order='1'/>"
    )
    root = parse_xml(MAPPING.patch(per_device, definition, ctx))
    assert root.findall("os/boot") == []
    no_boot = LIBVIRT_SPICE.replace("    <boot dev='hd'/>\n", "")
    assert parse_xml(MAPPING.patch(no_boot, definition, ctx)).findall("os/boot") == []
    # Removing the ISOs leaves the boot order as it is.
    with_iso = MAPPING.patch(LIBVIRT_SPICE, definition, ctx)
    root = parse_xml(MAPPING.patch(with_iso, spice(), ctx_of(spice())))
    assert root.findall("devices/disk[@device='cdrom']") == []
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd", "cdrom"]


def test_a_cdrom_whose_file_changes_keeps_its_drive() -> None:
    ide = LIBVIRT_SPICE.replace(
        "    <interface",
        "    <disk type='file' device='cdrom'><source file='/isos/old.iso'/>"
        "<target dev='hda' bus='ide'/></disk>\n    <interface",
    )
    definition = spice(iso_sources=[{"path": "/isos/new.iso"}])
    root = parse_xml(MAPPING.patch(ide, definition, ctx_of(definition)))
    [cdrom] = root.findall("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == "/isos/new.iso"  # type: ignore[union-attr]
    assert cdrom.find("target").get("dev") == "hda"  # type: ignore[union-attr]


# -- tree mechanics --------------------------------------------------------------------------


def test_new_elements_are_indented_like_their_siblings_and_removal_takes_the_indent() -> None:
    root = parse_xml("<domain>\n    <name>a</name>\n    <devices>\n    </devices>\n</domain>")
    insert_child(root, make("memory", [("unit", "KiB")], text="1"))
    devices_node = root.find("devices")
    assert devices_node is not None
    insert_child(devices_node, make("tpm", [], make("backend")))
    assert serialize(root) == (
        '<domain>\n    <name>a</name>\n    <memory unit="KiB">1</memory>\n    <devices>\n'
        "      <tpm>\n        <backend/>\n      </tpm>\n    </devices>\n</domain>\n"
    )
    name = root.find("name")
    assert name is not None
    remove(name)
    assert serialize(root).startswith('<domain>\n    <memory unit="KiB">1</memory>\n    <dev')


def test_a_new_device_goes_after_its_kind_else_where_libvirt_puts_it() -> None:
    root = parse_xml(
        "<domain><devices><disk/><interface/><graphics/><memballoon/></devices></domain>"
    )
    devices_node = root.find("devices")
    assert devices_node is not None
    for tag in ("disk", "tpm", "video", "emulator", "unknown"):
        insert_child(devices_node, make(tag))
    assert [c.tag for c in devices_node] == [
        "emulator",
        "disk",
        "disk",
        "interface",
        "tpm",
        "graphics",
        "video",
        "memballoon",
        "unknown",
    ]


@pytest.mark.parametrize(
    "value", [True, 1, 0, False, None, "", "1", 1.0, -0.0, 0.0, ("a",), ["a"], {"k": 1}]
)
def test_a_clean_reading_holds_its_value_of_its_own_type(value: Any) -> None:
    # Equal values of other types (1, 1.0 and True; 0.0 and -0.0) read and spell apart.
    for _ in range(2):
        reading = Reading.clean(value)
        assert reading.value == value
        assert type(reading.value) is type(value)
        assert str(reading.value) == str(value)
        assert reading.is_clean and reading.has_value and not reading.lossy
