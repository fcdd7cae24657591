//! Capture: turning what libvirt holds back into manifest definitions, lossless or not at
//! all. A field whose domain value cannot round-trip keeps its manifest value (or, for a VM
//! the manifest does not have yet, the VM is skipped), and the reason is reported.

use std::path::Path;

use crate::manifest::vm::{self, Boot, Graphics, VmDefinition, VmManifest};
use crate::vm::domain_xml::{Captured, DiskFormat, Resolved};
use crate::vm::planner::Paths;

const GIB: u64 = 1024 * 1024 * 1024;

/// What capture makes of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmCapture {
    /// The definition to write, and the fields that kept their manifest value (and why).
    Captured {
        def: VmDefinition,
        kept: Vec<(String, String)>,
    },
    /// A domain the manifest does not have that cannot be described exactly.
    Skipped { reasons: Vec<String> },
}

/// Merges one domain into its manifest definition (`base`; `None` for a domain the
/// manifest does not have yet). `disk_bytes` is the virtual size of the managed disk:
/// `None` when its file does not exist, `Err` when it could not be read.
pub fn merge(
    name: &str,
    base: Option<&VmDefinition>,
    captured: &Captured,
    autostart: bool,
    disk_bytes: Option<Result<u64, String>>,
    paths: &Paths,
    exists: &dyn Fn(&Path) -> bool,
) -> VmCapture {
    let start = base.cloned().unwrap_or_else(placeholder);
    let format = captured
        .disk_format
        .value()
        .copied()
        .unwrap_or(DiskFormat::Qcow2);
    let resolved = Resolved::new(
        &start,
        paths.home.as_deref(),
        &paths.iso_cache,
        format,
        exists,
    );
    let (mut def, problems) = captured.merge_into(&start, &resolved);
    let mut kept: Vec<(String, String)> = problems
        .into_iter()
        .map(|p| (p.field.to_string(), p.reason))
        .collect();
    def.autostart = Some(autostart);
    match disk_bytes {
        Some(Ok(bytes)) if bytes > 0 && bytes % GIB == 0 => match u32::try_from(bytes / GIB) {
            Ok(gb) => def.disk_size_gb = gb,
            Err(_) => kept.push((
                "disk_size_gb".into(),
                format!("the disk's size, {bytes} bytes, is too large"),
            )),
        },
        Some(Ok(bytes)) => kept.push((
            "disk_size_gb".into(),
            format!("the disk's virtual size, {bytes} bytes, is not a whole GiB"),
        )),
        Some(Err(e)) => kept.push((
            "disk_size_gb".into(),
            format!("cannot read the disk's size: {e}"),
        )),
        // libvirt cannot know the size of a disk that does not exist: the manifest's stays.
        None if base.is_some() => {}
        None => kept.push(("disk_size_gb".into(), "the disk file does not exist".into())),
    }
    let def = def.normalized();
    let def = match base {
        Some(base) => keep_spelling(base, def),
        None => def,
    };
    // Never write what validation would refuse (a path with "..", say).
    let problems = vm_problems(name, &def, paths.home.as_deref());
    match (base, kept.is_empty() && problems.is_empty()) {
        (None, false) => VmCapture::Skipped {
            reasons: kept
                .into_iter()
                .map(|(field, reason)| format!("{field}: {reason}"))
                .chain(problems)
                .collect(),
        },
        (Some(base), _) if !problems.is_empty() => VmCapture::Captured {
            def: base.clone(),
            kept: vec![("(all fields)".into(), problems.join("; "))],
        },
        _ => VmCapture::Captured { def, kept },
    }
}

/// The starting point for a domain the manifest does not have: every field that the domain
/// determines is overwritten by merge, or the domain is skipped.
fn placeholder() -> VmDefinition {
    VmDefinition::new(1, 1, "", 1, Boot::Bios, "", Graphics::None)
}

/// `new` with each optional field spelt as in `base` where the effective values agree, so
/// that capture does not drop an explicit default (`"tpm": "none"`) the author wrote.
fn keep_spelling(base: &VmDefinition, mut new: VmDefinition) -> VmDefinition {
    if base.normalized() == new {
        return base.clone();
    }
    if base.create_if_missing() == new.create_if_missing() {
        new.create_if_missing = base.create_if_missing;
    }
    if base.tpm() == new.tpm() {
        new.tpm = base.tpm;
    }
    if base.iso_sources() == new.iso_sources() {
        new.iso_sources = base.iso_sources.clone();
    }
    if base.autostart() == new.autostart() {
        new.autostart = base.autostart;
    }
    if base.virt_type() == new.virt_type() {
        new.virt_type = base.virt_type;
        if base.normalized().cpu_model == new.cpu_model {
            new.cpu_model = base.cpu_model.clone();
        }
    }
    if base.secure_boot() == new.secure_boot() {
        new.secure_boot = base.secure_boot;
    }
    new
}

/// What manifest validation would say about `def` as VM `name`.
fn vm_problems(name: &str, def: &VmDefinition, home: Option<&Path>) -> Vec<String> {
    let one = VmManifest {
        schema: None,
        vms: [(name.to_string(), def.clone())].into(),
    };
    match vm::parse(&vm::to_text(&one), home) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .into_iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect(),
    }
}

/// The fields that differ between two definitions, as `(field, old, new)` in schema order,
/// in manifest spelling; an absent field is `None`.
pub fn field_changes(
    old: &VmDefinition,
    new: &VmDefinition,
) -> Vec<(String, Option<String>, Option<String>)> {
    let old = serde_json::to_value(old).expect("a definition is plain JSON");
    let new = serde_json::to_value(new).expect("a definition is plain JSON");
    let schema = vm::schema();
    let fields = schema
        .pointer("/$defs/VmDefinition/properties")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flat_map(|p| p.keys());
    fields
        .filter(|k| old.get(k.as_str()) != new.get(k.as_str()))
        .map(|k| {
            let show = |v: &serde_json::Value| v.get(k.as_str()).map(|x| x.to_string());
            (k.clone(), show(&old), show(&new))
        })
        .collect()
}
