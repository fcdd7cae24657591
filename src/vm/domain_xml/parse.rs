//! Parse: what a domain's owned elements say, in manifest values.
//!
//! Each `read_*` function here is the one definition of where a field lives and what it
//! means; [`super::patch`] uses the same functions to decide whether an element needs to
//! change, which is what makes `patch(x, parse(x))` a no-op.
//!
//! Parse accepts any well-formed domain: what the manifest cannot describe becomes a
//! [`Field::Unsupported`] or [`Field::Lossy`] with a reason, never an error or a panic.

use xot::Node;

use super::dom::Dom;
use super::render::{self, CDROM_TARGET_PREFIX};
use super::{Captured, DiskFormat, Field, METADATA_ELEMENT, METADATA_NAMESPACE, ParseError};
use crate::manifest::vm::{
    Boot, Graphics, HOST_MODEL, HOST_PASSTHROUGH, Network, QEMU_DEFAULT_CPU_MODEL, Tpm, VirtType,
};

/// Reads the manifest fields from a domain XML (best from `virsh dumpxml --inactive`: the
/// live XML has libvirt's run-time additions).
pub fn parse(xml: &str) -> Result<Captured, ParseError> {
    Dom::parse(xml).map(|dom| capture(&dom))
}

pub(super) fn capture(dom: &Dom) -> Captured {
    let virt_type = read_virt_type(dom);
    let (boot, secure_boot) = read_firmware(dom);
    let (disk_path, disk_format) = read_disk(dom);
    Captured {
        name: dom.child(dom.domain, "name").map(|n| dom.text(n)),
        bkt_marker: read_marker(dom),
        cpu_model: read_cpu_model(dom, virt_type.value().copied()),
        virt_type,
        memory_gb: read_memory(dom),
        vcpus: read_vcpus(dom),
        disk_path,
        disk_format,
        boot,
        secure_boot,
        tpm: read_tpm(dom),
        network: read_network(dom),
        graphics: read_graphics(dom),
        iso_paths: iso_cdroms(dom)
            .into_iter()
            .filter_map(|n| source_file(dom, n).map(str::to_owned))
            .collect(),
    }
}

fn unsupported<T>(reason: impl Into<String>) -> Field<T> {
    Field::Unsupported {
        reason: reason.into(),
    }
}

fn read_marker(dom: &Dom) -> bool {
    dom.child(dom.domain, "metadata").is_some_and(|metadata| {
        dom.elements(metadata)
            .any(|n| dom.qualified_name(n) == Some((METADATA_NAMESPACE, METADATA_ELEMENT)))
    })
}

pub(super) fn read_virt_type(dom: &Dom) -> Field<VirtType> {
    match dom.attr(dom.domain, "type") {
        Some("kvm") => Field::Clean(VirtType::Kvm),
        Some("qemu") => Field::Clean(VirtType::Qemu),
        Some(other) => unsupported(format!("domain type '{other}' (bkt knows kvm and qemu)")),
        None => unsupported("the domain has no type"),
    }
}

const KIB: u128 = 1024;
const GIB: u128 = 1024 * 1024 * 1024;

/// A libvirt memory size in bytes (`unit` as libvirt reads it; KiB when absent).
fn bytes(dom: &Dom, node: Node) -> Option<u128> {
    let value: u128 = dom.text(node).trim().parse().ok()?;
    let unit: u128 = match dom.attr(node, "unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => KIB,
        "MB" => 1000u128.pow(2),
        "M" | "MiB" => KIB.pow(2),
        "GB" => 1000u128.pow(3),
        "G" | "GiB" => KIB.pow(3),
        "TB" => 1000u128.pow(4),
        "T" | "TiB" => KIB.pow(4),
        _ => return None,
    };
    value.checked_mul(unit)
}

fn describe_bytes(bytes: u128) -> String {
    match bytes % KIB {
        0 => format!("{} KiB", bytes / KIB),
        _ => format!("{bytes} bytes"),
    }
}

pub(super) fn read_memory(dom: &Dom) -> Field<u32> {
    let Some(memory) = dom.child(dom.domain, "memory") else {
        return unsupported("no <memory> element (the size comes from NUMA cells)");
    };
    let Some(total) = bytes(dom, memory) else {
        return unsupported("<memory> is not a size libvirt can read");
    };
    if let Some(current) = dom.child(dom.domain, "currentMemory") {
        match bytes(dom, current) {
            Some(c) if c == total => {}
            Some(c) => {
                return unsupported(format!(
                    "currentMemory ({}) differs from memory ({}): a balloon target",
                    describe_bytes(c),
                    describe_bytes(total)
                ));
            }
            None => return unsupported("<currentMemory> is not a size libvirt can read"),
        }
    }
    if total % GIB != 0 {
        return unsupported(format!(
            "{} is not a whole number of GiB",
            describe_bytes(total)
        ));
    }
    match u32::try_from(total / GIB) {
        Ok(0) => unsupported("memory is 0"),
        Ok(gb) => Field::Clean(gb),
        Err(_) => unsupported(format!("{} GiB is too large", total / GIB)),
    }
}

pub(super) fn read_vcpus(dom: &Dom) -> Field<u32> {
    let Some(vcpu) = dom.child(dom.domain, "vcpu") else {
        // libvirt's default.
        return Field::Clean(1);
    };
    let Ok(count) = dom.text(vcpu).trim().parse::<u32>() else {
        return unsupported("<vcpu> is not a number");
    };
    if count == 0 {
        return unsupported("vcpu count is 0");
    }
    match dom.attr(vcpu, "current").map(str::parse::<u32>) {
        Some(Ok(current)) if current != count => unsupported(format!(
            "{current} of {count} vCPUs are enabled at boot (CPU hotplug)"
        )),
        Some(Err(_)) => unsupported("vcpu current= is not a number"),
        _ => Field::Clean(count),
    }
}

/// The managed disk: the first `<disk>` whose device is `disk`.
pub(super) fn managed_disk(dom: &Dom) -> Option<Node> {
    dom.devices("disk")
        .into_iter()
        .find(|&n| dom.attr(n, "device").unwrap_or("disk") == "disk")
}

fn is_file(dom: &Dom, disk: Node) -> bool {
    dom.attr(disk, "type").unwrap_or("file") == "file"
}

fn source_file(dom: &Dom, disk: Node) -> Option<&str> {
    dom.child(disk, "source").and_then(|s| dom.attr(s, "file"))
}

pub(super) fn read_disk(dom: &Dom) -> (Field<String>, Field<DiskFormat>) {
    let Some(disk) = managed_disk(dom) else {
        return (unsupported("no disk"), unsupported("no disk"));
    };
    let path = match (is_file(dom, disk), source_file(dom, disk)) {
        (true, Some(path)) => Field::Clean(path.to_owned()),
        (true, None) => unsupported("the first disk has no source file"),
        (false, _) => unsupported(format!(
            "the first disk is type='{}', not a file",
            dom.attr(disk, "type").unwrap_or_default()
        )),
    };
    // libvirt treats a disk without a format as raw (it does not probe formats).
    let format = match dom.child(disk, "driver").and_then(|d| dom.attr(d, "type")) {
        None => Field::Clean(DiskFormat::Raw),
        Some(name) => match DiskFormat::from_name(name) {
            Some(format) => Field::Clean(format),
            None => unsupported(format!("image format '{name}' (bkt knows qcow2 and raw)")),
        },
    };
    (path, format)
}

/// The CD-ROMs that hold ISO files: `device='cdrom'` file disks with a source. Empty
/// drives and host drives are not the manifest's.
pub(super) fn iso_cdroms(dom: &Dom) -> Vec<Node> {
    dom.devices("disk")
        .into_iter()
        .filter(|&n| {
            dom.attr(n, "device") == Some("cdrom")
                && is_file(dom, n)
                && source_file(dom, n).is_some()
        })
        .collect()
}

/// The index of every disk target on the SATA/SCSI `sd` names, for picking new ones.
pub(super) fn used_sd_indexes(dom: &Dom) -> Vec<usize> {
    dom.devices("disk")
        .into_iter()
        .filter_map(|n| dom.child(n, "target"))
        .filter_map(|t| dom.attr(t, "dev"))
        .filter_map(|dev| render::target_index(CDROM_TARGET_PREFIX, dev))
        .collect()
}

/// `boot` and `secure_boot`.
///
/// UEFI is `<os firmware='efi'>` or a pflash loader. Secure Boot is decided by the
/// autoselection features when the domain has them (secure-boot with enrolled keys, and SMM
/// not off), else by an explicit loader's `secure` attribute. `firmware='efi'` with neither
/// leaves the choice to libvirt at start, which depends on the host's firmware descriptors,
/// so Secure Boot is then unknown.
pub(super) fn read_firmware(dom: &Dom) -> (Field<Boot>, Field<bool>) {
    let os = dom.child(dom.domain, "os");
    let firmware_attr = os.and_then(|os| dom.attr(os, "firmware"));
    let loader = os.and_then(|os| dom.child(os, "loader"));
    let pflash = loader.is_some_and(|l| dom.attr(l, "type") == Some("pflash"));
    if firmware_attr != Some("efi") && !pflash {
        return (Field::Clean(Boot::Bios), Field::Clean(false));
    }
    let feature = |name: &str| {
        os.and_then(|os| dom.child(os, "firmware"))
            .and_then(|fw| {
                dom.children(fw, "feature")
                    .find(|&f| dom.attr(f, "name") == Some(name))
            })
            .map(|f| dom.attr(f, "enabled") == Some("yes"))
    };
    let smm_off = dom
        .at(dom.domain, &["features", "smm"])
        .is_some_and(|smm| dom.attr(smm, "state") == Some("off"));
    let secure = match (feature("secure-boot"), feature("enrolled-keys")) {
        (Some(false), Some(true)) => {
            unsupported("firmware feature enrolled-keys without secure-boot")
        }
        (Some(false), _) => Field::Clean(false),
        (Some(true), Some(true)) if smm_off => unsupported("Secure Boot firmware with SMM off"),
        (Some(true), Some(true)) => Field::Clean(true),
        (Some(true), Some(false)) => {
            unsupported("Secure Boot firmware without enrolled keys (Secure Boot is not enforced)")
        }
        (Some(true), None) => unsupported(
            "firmware feature secure-boot without enrolled-keys: libvirt picks the keys when the VM starts",
        ),
        (None, _) => match loader {
            Some(l) if dom.attr(l, "secure") == Some("yes") => Field::Clean(true),
            Some(_) => Field::Clean(false),
            None => unsupported(
                "firmware='efi' without firmware features: libvirt picks the firmware, and so whether Secure Boot is on, when the VM starts",
            ),
        },
    };
    (Field::Clean(Boot::Uefi), secure)
}

pub(super) fn read_tpm(dom: &Dom) -> Field<Tpm> {
    let tpms = dom.devices("tpm");
    let tpm = match tpms.as_slice() {
        [] => return Field::Clean(Tpm::None),
        [tpm] => *tpm,
        _ => return unsupported(format!("{} TPM devices", tpms.len())),
    };
    let backend = dom.child(tpm, "backend");
    let kind = backend.and_then(|b| dom.attr(b, "type")).unwrap_or("none");
    let version = backend.and_then(|b| dom.attr(b, "version"));
    match (kind, version) {
        ("emulator", Some("2.0")) => Field::Clean(Tpm::V2_0),
        ("emulator", v) => unsupported(format!(
            "an emulated TPM of version {}",
            v.unwrap_or("(libvirt's default)")
        )),
        (other, _) => unsupported(format!("a TPM with a {other} backend, not an emulated one")),
    }
}

/// The network the first `<interface>` attaches to, in manifest spelling.
pub(super) fn read_network(dom: &Dom) -> Field<String> {
    let interfaces = dom.devices("interface");
    let Some(&first) = interfaces.first() else {
        return Field::Clean(Network::NONE.to_owned());
    };
    let value = match interface_network(dom, first) {
        Ok(value) => value,
        Err(reason) => return unsupported(reason),
    };
    match interfaces.len() {
        1 => Field::Clean(value),
        n => Field::Lossy {
            value,
            reason: format!("{n} interfaces; the manifest describes only the first"),
        },
    }
}

/// The manifest spelling of an interface's attachment, or why it has none.
pub(super) fn interface_network(dom: &Dom, interface: Node) -> Result<String, String> {
    let kind = dom.attr(interface, "type").unwrap_or_default();
    let source = |attr| {
        dom.child(interface, "source")
            .and_then(|s| dom.attr(s, attr))
            .filter(|name| !name.is_empty())
    };
    match kind {
        "network" => match source("network") {
            Some(name) if name == Network::NONE || name.starts_with(Network::BRIDGE_PREFIX) => Err(
                format!("a libvirt network named '{name}', which the manifest cannot name"),
            ),
            Some(name) => Ok(name.to_owned()),
            None => Err("an interface type='network' without a source network".into()),
        },
        "bridge" => match source("bridge") {
            Some(name) => Ok(format!("{}{name}", Network::BRIDGE_PREFIX)),
            None => Err("an interface type='bridge' without a source bridge".into()),
        },
        other => Err(format!(
            "an interface type='{other}', neither on a libvirt network nor on a bridge"
        )),
    }
}

pub(super) fn graphics_type(dom: &Dom, graphics: Node) -> Option<Graphics> {
    match dom.attr(graphics, "type") {
        Some("spice") => Some(Graphics::Spice),
        Some("vnc") => Some(Graphics::Vnc),
        _ => None,
    }
}

/// The first `<graphics>` decides; `none` is no graphics at all.
pub(super) fn read_graphics(dom: &Dom) -> Field<Graphics> {
    let all = dom.devices("graphics");
    let Some(&first) = all.first() else {
        return Field::Clean(Graphics::None);
    };
    let Some(value) = graphics_type(dom, first) else {
        return unsupported(format!(
            "graphics type '{}' (bkt knows spice and vnc)",
            dom.attr(first, "type").unwrap_or_default()
        ));
    };
    match all.len() {
        1 => Field::Clean(value),
        n => Field::Lossy {
            value,
            reason: format!("{n} graphics devices; the manifest describes only the first"),
        },
    }
}

/// The CPU model in manifest terms. `None` is libvirt's default model, which only
/// `virt_type: qemu` can name (by leaving `cpu_model` out): libvirt records it as the custom
/// model `qemu64`, and a domain without a model gets that too. Under kvm that default is
/// the named model `qemu64`.
pub(super) fn read_cpu_model(dom: &Dom, virt_type: Option<VirtType>) -> Field<Option<String>> {
    let qemu = virt_type == Some(VirtType::Qemu);
    let named = |model: &str| {
        if qemu && model == QEMU_DEFAULT_CPU_MODEL {
            None
        } else {
            Some(model.to_owned())
        }
    };
    let Some(cpu) = dom.child(dom.domain, "cpu") else {
        return Field::Clean(named(QEMU_DEFAULT_CPU_MODEL));
    };
    match dom.attr(cpu, "mode").unwrap_or("custom") {
        HOST_PASSTHROUGH => Field::Clean(Some(HOST_PASSTHROUGH.to_owned())),
        HOST_MODEL => Field::Clean(Some(HOST_MODEL.to_owned())),
        "custom" => match dom.child(cpu, "model").map(|m| dom.text(m)) {
            Some(model) if !model.is_empty() => Field::Clean(named(&model)),
            _ => Field::Clean(named(QEMU_DEFAULT_CPU_MODEL)),
        },
        other => unsupported(format!("CPU mode '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(body: &str) -> Captured {
        parse(&format!("<domain type='kvm'>{body}</domain>")).unwrap()
    }

    fn is_unsupported<T>(field: &Field<T>) -> bool {
        matches!(field, Field::Unsupported { .. })
    }

    #[test]
    fn memory_is_read_in_any_libvirt_unit_and_only_whole_gib_round_trip() {
        let memory = |xml: &str| domain(xml).memory_gb;
        assert_eq!(memory("<memory unit='GiB'>2</memory>"), Field::Clean(2));
        assert_eq!(memory("<memory>2097152</memory>"), Field::Clean(2));
        assert_eq!(memory("<memory unit='M'>3072</memory>"), Field::Clean(3));
        assert_eq!(
            memory("<memory unit='b'>1073741824</memory>"),
            Field::Clean(1)
        );
        for odd in [
            "<memory unit='MiB'>1536</memory>",
            "<memory unit='GB'>1</memory>",
            "<memory unit='KiB'>0</memory>",
            "<memory unit='parsec'>1</memory>",
            "<memory>lots</memory>",
            "<memory unit='GiB'>2</memory><currentMemory unit='GiB'>1</currentMemory>",
            "",
        ] {
            assert!(is_unsupported(&memory(odd)), "{odd}");
        }
        let balloon =
            memory("<memory unit='GiB'>2</memory><currentMemory unit='MiB'>1024</currentMemory>");
        assert_eq!(
            balloon.reason(),
            Some("currentMemory (1048576 KiB) differs from memory (2097152 KiB): a balloon target")
        );
    }

    #[test]
    fn vcpus_default_to_one_and_hotplug_does_not_round_trip() {
        assert_eq!(domain("").vcpus, Field::Clean(1));
        assert_eq!(
            domain("<vcpu placement='static'> 4 </vcpu>").vcpus,
            Field::Clean(4)
        );
        assert_eq!(domain("<vcpu current='4'>4</vcpu>").vcpus, Field::Clean(4));
        assert!(is_unsupported(&domain("<vcpu current='2'>4</vcpu>").vcpus));
        assert!(is_unsupported(&domain("<vcpu>four</vcpu>").vcpus));
    }

    #[test]
    fn firmware_and_secure_boot() {
        let efi = "<os firmware='efi'>";
        let features = |sb: &str, keys: &str| {
            format!(
                "<firmware><feature enabled='{keys}' name='enrolled-keys'/><feature enabled='{sb}' name='secure-boot'/></firmware>"
            )
        };
        let cases: Vec<(String, Field<Boot>, Option<bool>)> = vec![
            ("<os><type>hvm</type></os>".into(), Field::Clean(Boot::Bios), Some(false)),
            ("<os firmware='bios'/>".into(), Field::Clean(Boot::Bios), Some(false)),
            (
                "<os><loader type='rom'>/usr/share/seabios/bios.bin</loader></os>".into(),
                Field::Clean(Boot::Bios),
                Some(false),
            ),
            // Autoselection without features: libvirt decides at start.
            (format!("{efi}</os>"), Field::Clean(Boot::Uefi), None),
            (format!("{efi}{}</os>", features("no", "no")), Field::Clean(Boot::Uefi), Some(false)),
            (format!("{efi}{}</os>", features("yes", "yes")), Field::Clean(Boot::Uefi), Some(true)),
            (
                format!("{efi}{}</os><features><smm state='off'/></features>", features("yes", "yes")),
                Field::Clean(Boot::Uefi),
                None,
            ),
            (format!("{efi}{}</os>", features("yes", "no")), Field::Clean(Boot::Uefi), None),
            (format!("{efi}{}</os>", features("no", "yes")), Field::Clean(Boot::Uefi), None),
            // An explicit loader, with or without autoselection.
            (
                "<os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os>".into(),
                Field::Clean(Boot::Uefi),
                Some(false),
            ),
            (
                format!("{efi}<loader secure='yes'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader></os>"),
                Field::Clean(Boot::Uefi),
                Some(true),
            ),
        ];
        for (os, boot, secure) in cases {
            let captured = domain(&os);
            assert_eq!(captured.boot, boot, "{os}");
            assert_eq!(captured.secure_boot.value().copied(), secure, "{os}");
            assert_eq!(
                captured.secure_boot.reason().is_some(),
                secure.is_none(),
                "{os}"
            );
        }
    }

    #[test]
    fn tpm_is_an_emulated_tpm_2_0_of_any_model() {
        let tpm = |xml: &str| domain(&format!("<devices>{xml}</devices>")).tpm;
        let emulator = |model: &str, version: &str| {
            format!("<tpm model='{model}'><backend type='emulator' version='{version}'/></tpm>")
        };
        assert_eq!(tpm(""), Field::Clean(Tpm::None));
        assert_eq!(tpm(&emulator("tpm-crb", "2.0")), Field::Clean(Tpm::V2_0));
        assert_eq!(tpm(&emulator("tpm-tis", "2.0")), Field::Clean(Tpm::V2_0));
        assert!(is_unsupported(&tpm(&emulator("tpm-tis", "1.2"))));
        assert!(is_unsupported(&tpm(
            "<tpm model='tpm-tis'><backend type='emulator'/></tpm>"
        )));
        assert!(is_unsupported(&tpm(
            "<tpm model='tpm-crb'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>"
        )));
        let two = emulator("tpm-crb", "2.0").repeat(2);
        assert!(is_unsupported(&tpm(&two)));
    }

    #[test]
    fn network_is_the_first_interface_in_manifest_spelling() {
        let network = |xml: &str| domain(&format!("<devices>{xml}</devices>")).network;
        let on =
            |net: &str| format!("<interface type='network'><source network='{net}'/></interface>");
        assert_eq!(network(""), Field::Clean("none".into()));
        assert_eq!(network(&on("default")), Field::Clean("default".into()));
        assert_eq!(
            network("<interface type='bridge'><source bridge='br0'/></interface>"),
            Field::Clean("bridge:br0".into())
        );
        assert_eq!(
            network(&format!("{}{}", on("default"), on("other"))),
            Field::Lossy {
                value: "default".into(),
                reason: "2 interfaces; the manifest describes only the first".into()
            }
        );
        for odd in [
            "<interface type='user'/>".to_owned(),
            "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>".to_owned(),
            "<interface type='network'/>".to_owned(),
            on("none"),
            on("bridge:x"),
        ] {
            assert!(is_unsupported(&network(&odd)), "{odd}");
        }
    }

    #[test]
    fn graphics_is_the_first_graphics_device() {
        let graphics = |xml: &str| domain(&format!("<devices>{xml}</devices>")).graphics;
        assert_eq!(graphics(""), Field::Clean(Graphics::None));
        assert_eq!(
            graphics("<graphics type='spice'/>"),
            Field::Clean(Graphics::Spice)
        );
        assert_eq!(
            graphics("<graphics type='vnc' port='5900'/>"),
            Field::Clean(Graphics::Vnc)
        );
        assert!(is_unsupported(&graphics("<graphics type='sdl'/>")));
        assert_eq!(
            graphics("<graphics type='vnc'/><graphics type='spice'/>").value(),
            Some(&Graphics::Vnc)
        );
        assert!(
            graphics("<graphics type='vnc'/><graphics type='spice'/>")
                .reason()
                .is_some()
        );
    }

    #[test]
    fn cpu_model_none_is_libvirts_default_under_qemu() {
        let cpu = |ty: &str, xml: &str| {
            parse(&format!("<domain type='{ty}'>{xml}</domain>"))
                .unwrap()
                .cpu_model
        };
        let custom =
            "<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>";
        assert_eq!(cpu("qemu", ""), Field::Clean(None));
        assert_eq!(cpu("qemu", custom), Field::Clean(None));
        assert_eq!(
            cpu(
                "qemu",
                "<cpu><topology sockets='1' cores='2' threads='1'/></cpu>"
            ),
            Field::Clean(None)
        );
        assert_eq!(cpu("kvm", ""), Field::Clean(Some("qemu64".into())));
        assert_eq!(cpu("kvm", custom), Field::Clean(Some("qemu64".into())));
        assert_eq!(
            cpu(
                "kvm",
                "<cpu mode='host-passthrough' check='none' migratable='on'/>"
            ),
            Field::Clean(Some("host-passthrough".into()))
        );
        assert_eq!(
            cpu("qemu", "<cpu mode='host-model'/>"),
            Field::Clean(Some("host-model".into()))
        );
        assert_eq!(
            cpu(
                "qemu",
                "<cpu><model>Skylake-Client</model><feature name='vmx' policy='disable'/></cpu>"
            ),
            Field::Clean(Some("Skylake-Client".into()))
        );
        assert!(is_unsupported(&cpu("qemu", "<cpu mode='maximum'/>")));
    }

    #[test]
    fn the_managed_disk_is_the_first_disk_device_and_isos_are_file_cdroms() {
        let captured = domain(
            "<devices>
              <disk type='file' device='cdrom'><source file='/a.iso'/><target dev='hda'/></disk>
              <disk type='file' device='cdrom'><target dev='hdb'/></disk>
              <disk type='block' device='cdrom'><source dev='/dev/sr0'/></disk>
              <disk type='file'><source file='/vm.img'/></disk>
              <disk type='file' device='disk'><driver type='qcow2'/><source file='/data.qcow2'/></disk>
              <disk device='cdrom'><source file='/b.iso'/></disk>
            </devices>",
        );
        assert_eq!(captured.disk_path, Field::Clean("/vm.img".into()));
        assert_eq!(captured.disk_format, Field::Clean(DiskFormat::Raw));
        assert_eq!(captured.iso_paths, ["/a.iso", "/b.iso"]);

        let block = domain(
            "<devices><disk type='block' device='disk'><source dev='/dev/vg/vm'/></disk></devices>",
        );
        assert_eq!(
            block.disk_path.reason(),
            Some("the first disk is type='block', not a file")
        );
        let vmdk = domain(
            "<devices><disk type='file'><driver type='vmdk'/><source file='/x.vmdk'/></disk></devices>",
        );
        assert!(is_unsupported(&vmdk.disk_format));
        assert_eq!(domain("").disk_path.reason(), Some("no disk"));
    }

    #[test]
    fn the_marker_is_bkts_namespace_only() {
        let marker = |xml: &str| domain(&format!("<metadata>{xml}</metadata>")).bkt_marker;
        assert!(marker("<bkt:vm xmlns:bkt='urn:bkt:vm:1'/>"));
        assert!(marker("<other:vm xmlns:other='urn:bkt:vm:1'/>"));
        assert!(!marker("<bkt:vm xmlns:bkt='http://example.org/bkt'/>"));
        assert!(!marker("<vm/>"));
        assert!(!domain("").bkt_marker);
    }

    #[test]
    fn what_is_not_a_domain_is_an_error() {
        assert!(matches!(parse(""), Err(ParseError::Malformed(_))));
        assert!(matches!(parse("<domain>"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse("<domain/><domain/>"),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            parse("<network/>"),
            Err(ParseError::NotADomain("network".into()))
        );
        assert!(matches!(
            parse("<x:domain xmlns:x='urn:y'/>"),
            Err(ParseError::NotADomain(_))
        ));
        assert!(parse("<!-- a comment --><domain/>").is_ok());
    }
}
