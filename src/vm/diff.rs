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
