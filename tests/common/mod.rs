//! Definitions and helpers shared by the domain XML tests.

#![allow(dead_code)] // each test crate uses its own part of this module

use std::path::{Path, PathBuf};
use std::time::Duration;

use bkt::manifest::vm::{Boot, Graphics, IsoSource, Tpm, VirtType, VmDefinition};
use bkt::virsh::{Runner, SystemRunner};
use bkt::vm::domain_xml::{DiskFormat, Resolved};

pub const HOME: &str = "/home/user";
pub const ISO_CACHE: &str = "/home/user/.cache/bkt/isos";
pub const VIRTIO_WIN_URL: &str =
    "https://fedorapeople.org/groups/virt/virtio-win/direct-downloads/stable-virtio/virtio-win.iso";

/// The RFC's example VM.
pub fn win11() -> VmDefinition {
    VmDefinition {
        memory_gb: 8,
        vcpus: 4,
        disk_path: "/var/lib/libvirt/images/win11.qcow2".into(),
        disk_size_gb: 80,
        create_if_missing: None,
        boot: Boot::Uefi,
        tpm: Some(Tpm::V2_0),
        network: "default".into(),
        graphics: Graphics::Spice,
        iso_sources: Some(vec![
            IsoSource::Path {
                path: "~/Downloads/Win11_25H2_English_x64.iso".into(),
            },
            IsoSource::Url {
                url: VIRTIO_WIN_URL.into(),
                sha256: None,
            },
        ]),
        autostart: None,
        cpu_model: None,
        virt_type: None,
        secure_boot: None,
    }
}

/// The golden render cases: a file name under tests/golden/ and the definition.
pub fn golden_cases() -> Vec<(&'static str, VmDefinition)> {
    let base = win11();
    vec![
        ("win11", base.clone()),
        (
            "bios",
            VmDefinition {
                boot: Boot::Bios,
                ..base.clone()
            },
        ),
        (
            "no-tpm",
            VmDefinition {
                tpm: None,
                ..base.clone()
            },
        ),
        (
            "vnc",
            VmDefinition {
                graphics: Graphics::Vnc,
                ..base.clone()
            },
        ),
        (
            "no-graphics",
            VmDefinition {
                graphics: Graphics::None,
                ..base.clone()
            },
        ),
        (
            "no-isos",
            VmDefinition {
                iso_sources: None,
                ..base.clone()
            },
        ),
        (
            "secure-boot",
            VmDefinition {
                secure_boot: Some(true),
                ..base.clone()
            },
        ),
        (
            "qemu-bridge-raw",
            VmDefinition {
                disk_path: "/srv/vm/ci.img".into(),
                virt_type: Some(VirtType::Qemu),
                network: "bridge:br0".into(),
                tpm: None,
                graphics: Graphics::None,
                iso_sources: None,
                memory_gb: 1,
                vcpus: 1,
                ..base.clone()
            },
        ),
        (
            "host-model-no-network",
            VmDefinition {
                cpu_model: Some("host-model".into()),
                network: "none".into(),
                ..base.clone()
            },
        ),
        (
            "named-cpu",
            VmDefinition {
                cpu_model: Some("Skylake-Client".into()),
                virt_type: Some(VirtType::Qemu),
                ..base
            },
        ),
    ]
}

/// The image format a golden case's disk has: raw for `.img`, else qcow2.
pub fn format_of(def: &VmDefinition) -> DiskFormat {
    if def.disk_path.ends_with(".img") {
        DiskFormat::Raw
    } else {
        DiskFormat::Qcow2
    }
}

/// `def` resolved with [`HOME`], and every URL source in the ISO cache.
pub fn resolve(def: &VmDefinition) -> Resolved {
    Resolved::new(
        def,
        Some(Path::new(HOME)),
        Path::new(ISO_CACHE),
        format_of(def),
        |_| true,
    )
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether two documents are the same apart from whitespace between elements, quoting and
/// the spelling of character references.
pub fn same_document(a: &str, b: &str) -> bool {
    let canonical = |xml: &str| {
        let mut xot = xot::Xot::new();
        let doc = xot.parse(xml).unwrap();
        xot.remove_insignificant_whitespace(doc);
        xot.to_string(doc).unwrap()
    };
    canonical(a) == canonical(b)
}

/// Checks `file` with libvirt's own schema (`virt-xml-validate FILE domain`); what it said
/// when the file fails.
pub fn schema_errors(file: &Path) -> Option<String> {
    let args = [file.to_string_lossy().into_owned(), "domain".to_owned()];
    let out = SystemRunner
        .run("virt-xml-validate", &args, None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("cannot run virt-xml-validate: {e:?}"));
    (out.code != Some(0)).then(|| format!("{}{}", out.stdout, out.stderr))
}
