//! Drift: what the manifest wants against what [`parse`](super::domain_xml::parse) observed.
//!
//! This is the one definition of "in sync": an empty [`diff`]. It compares effective
//! values, never XML text (libvirt adds UUIDs, MACs, controllers, addresses and default
//! attributes, none of which is drift), and it compares the inactive definition, since the
//! live XML holds run-time rewrites.

use std::fmt;

use serde::Serialize;

use super::domain_xml::{Captured, Field, Resolved};
use crate::manifest::vm::{Boot, VmDefinition};

/// One field whose observed value differs from the manifest's, in manifest spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The manifest field (or `disk_format`, the managed disk's driver type, which must
    /// match the image).
    pub field: &'static str,
    /// What the domain holds; a reason in parentheses where no manifest value describes it.
    pub old: String,
    pub new: String,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.old, self.new)
    }
}

/// The manifest's spelling of an enum value (`"uefi"`, `"2.0"`, ...).
fn spelling<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn cpu_spelling(model: &Option<String>) -> String {
    model
        .clone()
        .unwrap_or_else(|| "libvirt's default".to_owned())
}

fn iso_spelling(paths: &[&str]) -> String {
    if paths.is_empty() {
        "none".to_owned()
    } else {
        paths.join(", ")
    }
}

/// The changes that would bring `observed` to `desired` (whose outside facts are in
/// `resolved`), in manifest field order. Empty means in sync.
pub fn diff(observed: &Captured, desired: &VmDefinition, resolved: &Resolved) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let mut check =
        |field: &'static str, old: Option<String>, reason: Option<&str>, new: String| {
            if old.as_ref() != Some(&new) {
                let old = old.unwrap_or_else(|| format!("({})", reason.unwrap_or("unknown")));
                changes.push(FieldChange { field, old, new });
            }
        };
    fn seen<T>(field: &Field<T>, show: impl Fn(&T) -> String) -> Option<String> {
        field.value().map(show)
    }
    let c = observed;
    check(
        "memory_gb",
        seen(&c.memory_gb, u32::to_string),
        c.memory_gb.reason(),
        desired.memory_gb.to_string(),
    );
    check(
        "vcpus",
        seen(&c.vcpus, u32::to_string),
        c.vcpus.reason(),
        desired.vcpus.to_string(),
    );
    check(
        "disk_path",
        seen(&c.disk_path, String::clone),
        c.disk_path.reason(),
        resolved.disk_path.clone(),
    );
    check(
        "disk_format",
        seen(&c.disk_format, |f| f.to_string()),
        c.disk_format.reason(),
        resolved.disk_format.to_string(),
    );
    check(
        "boot",
        seen(&c.boot, spelling),
        c.boot.reason(),
        spelling(&desired.boot),
    );
    check(
        "tpm",
        seen(&c.tpm, spelling),
        c.tpm.reason(),
        spelling(&desired.tpm()),
    );
    check(
        "network",
        seen(&c.network, String::clone),
        c.network.reason(),
        desired.network.clone(),
    );
    check(
        "graphics",
        seen(&c.graphics, spelling),
        c.graphics.reason(),
        spelling(&desired.graphics),
    );
    let observed_isos: Vec<&str> = c.iso_paths.iter().map(String::as_str).collect();
    check(
        "iso_sources",
        Some(iso_spelling(&observed_isos)),
        None,
        iso_spelling(&resolved.iso_paths()),
    );
    let normalized = desired.normalized();
    check(
        "cpu_model",
        seen(&c.cpu_model, cpu_spelling),
        c.cpu_model.reason(),
        cpu_spelling(&normalized.cpu_model().map(str::to_owned)),
    );
    check(
        "virt_type",
        seen(&c.virt_type, spelling),
        c.virt_type.reason(),
        spelling(&desired.virt_type()),
    );
    let secure_boot = desired.boot == Boot::Uefi && desired.secure_boot();
    check(
        "secure_boot",
        seen(&c.secure_boot, bool::to_string),
        c.secure_boot.reason(),
        secure_boot.to_string(),
    );
    changes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::vm::{Graphics, IsoSource, Tpm, VirtType};
    use crate::vm::domain_xml::{DiskFormat, parse, render};

    fn definition() -> VmDefinition {
        VmDefinition {
            memory_gb: 2,
            vcpus: 2,
            disk_path: "/vm.qcow2".into(),
            disk_size_gb: 10,
            create_if_missing: None,
            boot: Boot::Uefi,
            tpm: None,
            network: "default".into(),
            graphics: Graphics::Vnc,
            iso_sources: None,
            autostart: None,
            cpu_model: None,
            virt_type: Some(VirtType::Qemu),
            secure_boot: None,
        }
    }

    fn resolved(def: &VmDefinition) -> Resolved {
        Resolved::new(def, None, Path::new("/cache"), DiskFormat::Qcow2, |p| {
            p.ends_with("cached.iso")
        })
    }

    fn observed(def: &VmDefinition) -> Captured {
        parse(&render("vm", def, &resolved(def))).unwrap()
    }

    #[test]
    fn explicit_defaults_are_not_drift() {
        let def = definition();
        let explicit = VmDefinition {
            tpm: Some(Tpm::None),
            cpu_model: Some("qemu64".into()),
            secure_boot: Some(false),
            iso_sources: Some(vec![]),
            ..def.clone()
        };
        assert_eq!(
            diff(&observed(&def), &explicit, &resolved(&explicit)),
            vec![]
        );
        assert_eq!(diff(&observed(&explicit), &def, &resolved(&def)), vec![]);
    }

    #[test]
    fn an_uncached_url_iso_is_not_drift() {
        let def = VmDefinition {
            iso_sources: Some(vec![
                IsoSource::Url {
                    url: "https://example.org/cached.iso".into(),
                },
                IsoSource::Url {
                    url: "https://example.org/later.iso".into(),
                },
            ]),
            ..definition()
        };
        let resolved = resolved(&def);
        assert_eq!(resolved.iso_paths(), ["/cache/cached.iso"]);
        assert_eq!(resolved.left_out, ["https://example.org/later.iso"]);
        assert_eq!(diff(&observed(&def), &def, &resolved), vec![]);
    }

    #[test]
    fn changes_read_old_to_new_in_manifest_spelling() {
        let before = definition();
        let after = VmDefinition {
            memory_gb: 4,
            tpm: Some(Tpm::V2_0),
            graphics: Graphics::Spice,
            cpu_model: Some("host-model".into()),
            ..before.clone()
        };
        let lines: Vec<String> = diff(&observed(&before), &after, &resolved(&after))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "memory_gb: 2 -> 4",
                "tpm: none -> 2.0",
                "graphics: vnc -> spice",
                "cpu_model: libvirt's default -> host-model",
            ]
        );
    }

    #[test]
    fn what_no_manifest_value_describes_shows_its_reason() {
        let xml = render("vm", &definition(), &resolved(&definition()))
            .replace("2097152</currentMemory>", "1048576</currentMemory>");
        let changes = diff(
            &parse(&xml).unwrap(),
            &definition(),
            &resolved(&definition()),
        );
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "memory_gb: (currentMemory (1048576 KiB) differs from memory (2097152 KiB): a balloon target) -> 2"
            ]
        );
    }
}
