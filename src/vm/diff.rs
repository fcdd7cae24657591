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

/// The change for one field, if `observed` differs from `new`; `show` spells a value.
fn change<T>(
    field: &'static str,
    observed: &Field<T>,
    show: impl Fn(&T) -> String,
    new: String,
) -> Option<FieldChange> {
    let old = match observed.value().map(show) {
        Some(old) if old == new => return None,
        Some(old) => old,
        None => format!("({})", observed.reason().unwrap_or("unknown")),
    };
    Some(FieldChange { field, old, new })
}

/// The changes that would bring `observed` to `desired` (whose outside facts are in
/// `resolved`), in manifest field order. Empty means in sync.
pub fn diff(observed: &Captured, desired: &VmDefinition, resolved: &Resolved) -> Vec<FieldChange> {
    let c = observed;
    let isos = Field::Clean(c.iso_paths.iter().map(String::as_str).collect::<Vec<_>>());
    let cpu_model = desired.normalized().cpu_model().map(str::to_owned);
    let secure_boot = desired.boot == Boot::Uefi && desired.secure_boot();
    [
        change(
            "memory_gb",
            &c.memory_gb,
            u32::to_string,
            desired.memory_gb.to_string(),
        ),
        change("vcpus", &c.vcpus, u32::to_string, desired.vcpus.to_string()),
        change(
            "disk_path",
            &c.disk_path,
            String::clone,
            resolved.disk_path.clone(),
        ),
        change(
            "disk_format",
            &c.disk_format,
            ToString::to_string,
            resolved.disk_format.to_string(),
        ),
        change("boot", &c.boot, spelling, spelling(&desired.boot)),
        change("tpm", &c.tpm, spelling, spelling(&desired.tpm())),
        change(
            "network",
            &c.network,
            String::clone,
            desired.network.clone(),
        ),
        change(
            "graphics",
            &c.graphics,
            spelling,
            spelling(&desired.graphics),
        ),
        change(
            "iso_sources",
            &isos,
            |p| iso_spelling(p),
            iso_spelling(&resolved.iso_paths()),
        ),
        change(
            "cpu_model",
            &c.cpu_model,
            cpu_spelling,
            cpu_spelling(&cpu_model),
        ),
        change(
            "virt_type",
            &c.virt_type,
            spelling,
            spelling(&desired.virt_type()),
        ),
        change(
            "secure_boot",
            &c.secure_boot,
            bool::to_string,
            secure_boot.to_string(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::vm::{Graphics, IsoSource, Tpm, VirtType};
    use crate::vm::domain_xml::{DiskFormat, parse, render};

    fn definition() -> VmDefinition {
        VmDefinition {
            virt_type: Some(VirtType::Qemu),
            ..VmDefinition::new(2, 2, "/vm.qcow2", 10, Boot::Uefi, "default", Graphics::Vnc)
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
                    sha256: None,
                },
                IsoSource::Url {
                    url: "https://example.org/later.iso".into(),
                    sha256: None,
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
