//! Reading libvirt's state (in one virsh process) and deciding what sync would do and what
//! status reports. It reads; it never changes anything and never prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::manifest::vm::{
    Boot, IsoSource, VmDefinition, VmManifest, expand_home, iso_url_file_name,
};
use crate::plan::{Action, DiskCreation, SyncPlan, VmPlan};
use crate::virsh::{self, Virsh};
use crate::vm::diff::{FieldChange, diff};
use crate::vm::disk::{self, DiskPlan};
use crate::vm::domain_xml::{self, Captured, DiskFormat, Resolved};

/// What libvirt holds, as far as sync and status need it.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every domain, active or not.
    pub domains: BTreeSet<String>,
    /// Domains with a running (or paused) QEMU process.
    pub active: BTreeSet<String>,
    pub autostart: BTreeSet<String>,
    /// `dumpxml --inactive --security-info` of each asked-for domain that exists.
    pub xml: BTreeMap<String, Result<String, virsh::Error>>,
}

impl Observed {
    pub fn state(&self, name: &str) -> State {
        if self.active.contains(name) {
            State::Running
        } else if self.domains.contains(name) {
            State::Stopped
        } else {
            State::Missing
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Stopped,
    Missing,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Missing => "missing",
        })
    }
}

/// Reads the domain list and the inactive definitions of `names` in one virsh process,
/// however many names there are.
pub fn observe(virsh: &Virsh, names: &[&str]) -> Result<Observed, Error> {
    let cmd = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut commands = vec![
        cmd(&["list", "--all", "--name"]),
        cmd(&["list", "--name"]),
        cmd(&["list", "--all", "--name", "--autostart"]),
    ];
    for name in names {
        commands.push(cmd(&[
            "dumpxml",
            "--inactive",
            "--security-info",
            "--domain",
            name,
        ]));
    }
    let mut replies = virsh.batch(&commands)?.into_iter();
    let mut names_of = || -> Result<BTreeSet<String>, Error> {
        let reply = replies.next().expect("one reply per command");
        Ok(reply
            .into_result()?
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    };
    let domains = names_of()?;
    let active = names_of()?;
    let autostart = names_of()?;
    let mut xml = BTreeMap::new();
    for (name, reply) in names.iter().zip(replies) {
        if domains.contains(*name) {
            xml.insert(name.to_string(), reply.into_result());
        }
    }
    Ok(Observed {
        domains,
        active,
        autostart,
        xml,
    })
}

pub use crate::vm::disk::{Host, SystemHost};

/// Where paths resolve: the home directory for `~` and the ISO cache for URL sources.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: Option<PathBuf>,
    pub iso_cache: PathBuf,
}

/// The plan for `names` (manifest VMs, in order).
pub fn plan(
    manifest: &VmManifest,
    names: &[&str],
    observed: &Observed,
    paths: &Paths,
    host: &dyn Host,
) -> SyncPlan {
    SyncPlan {
        vms: names
            .iter()
            .map(|name| plan_vm(name, &manifest.vms[*name], observed, paths, host))
            .collect(),
    }
}

fn plan_vm(
    name: &str,
    def: &VmDefinition,
    observed: &Observed,
    paths: &Paths,
    host: &dyn Host,
) -> VmPlan {
    let mut warnings = Vec::new();
    let action = match observed.xml.get(name) {
        None => plan_create(name, def, paths, host, &mut warnings),
        Some(Err(e)) => Err(format!("cannot read its definition: {}", e.message())),
        Some(Ok(xml)) => plan_update(name, def, xml, observed, paths, host, &mut warnings),
    }
    .unwrap_or_else(|message| Action::Error { message });
    VmPlan {
        name: name.to_string(),
        action,
        warnings,
    }
}

/// The disk facts of a VM whose disk must be (re)read: its format, or the creation it needs.
fn disk_facts(
    def: &VmDefinition,
    disk: &str,
    host: &dyn Host,
) -> Result<(DiskFormat, Option<DiskCreation>), String> {
    Ok(match disk::plan(def, Path::new(disk), host)? {
        DiskPlan::Use(format) => (format, None),
        DiskPlan::Create(creation) => (DiskFormat::Qcow2, Some(creation)),
    })
}

/// The outside facts of `def` (see [`Resolved`]), with a warning for each ISO left out.
fn resolve(
    name: &str,
    def: &VmDefinition,
    format: DiskFormat,
    paths: &Paths,
    host: &dyn Host,
    warnings: &mut Vec<String>,
) -> Resolved {
    let resolved = Resolved::new(def, paths.home.as_deref(), &paths.iso_cache, format, |p| {
        host.exists(p)
    });
    for source in def.iso_sources() {
        match source {
            IsoSource::Path { .. } => {
                if let Some(iso) = resolved.missing.iter().find(|iso| iso.source == *source) {
                    warnings.push(format!(
                        "ISO {} does not exist; its CD-ROM is left out until it does",
                        iso.path
                    ));
                }
            }
            IsoSource::Url { url, .. } if resolved.left_out.contains(url) => {
                let file = iso_url_file_name(url).unwrap_or(url);
                warnings.push(format!(
                    "ISO {url} is not in the ISO cache ({}); its CD-ROM is left out until it is: `bkt vm fetch-iso {name}` downloads it",
                    paths.iso_cache.join(file).display()
                ));
            }
            IsoSource::Url { .. } => {}
        }
    }
    resolved
}

fn plan_create(
    name: &str,
    def: &VmDefinition,
    paths: &Paths,
    host: &dyn Host,
    warnings: &mut Vec<String>,
) -> Result<Action, String> {
    let disk = expanded(&def.disk_path, paths);
    let (format, create_disk) = disk_facts(def, &disk, host)?;
    let resolved = resolve(name, def, format, paths, host, warnings);
    Ok(Action::Create {
        xml: domain_xml::render(name, def, &resolved),
        create_disk,
        autostart: def.autostart(),
    })
}

fn expanded(path: &str, paths: &Paths) -> String {
    expand_home(path, paths.home.as_deref())
        .to_string_lossy()
        .into_owned()
}

/// The changes that would bring an existing domain to `def`, without reading the disk: the
/// managed disk's format is what the domain already records (libvirt's own record of an
/// image it has used). This is what status calls drift.
pub fn drift(
    name: &str,
    def: &VmDefinition,
    captured: &Captured,
    observed: &Observed,
    paths: &Paths,
    host: &dyn Host,
) -> Vec<FieldChange> {
    let format = captured
        .disk_format
        .value()
        .copied()
        .unwrap_or(DiskFormat::Qcow2);
    let resolved = resolve(name, def, format, paths, host, &mut Vec::new());
    with_autostart(diff(captured, def, &resolved), name, def, observed)
}

fn with_autostart(
    mut changes: Vec<FieldChange>,
    name: &str,
    def: &VmDefinition,
    observed: &Observed,
) -> Vec<FieldChange> {
    let now = observed.autostart.contains(name);
    if now != def.autostart() {
        changes.push(FieldChange {
            field: "autostart",
            old: now.to_string(),
            new: def.autostart().to_string(),
        });
    }
    changes
}

fn plan_update(
    name: &str,
    def: &VmDefinition,
    xml: &str,
    observed: &Observed,
    paths: &Paths,
    host: &dyn Host,
    warnings: &mut Vec<String>,
) -> Result<Action, String> {
    let captured = domain_xml::parse(xml).map_err(|e| e.to_string())?;
    let disk = expanded(&def.disk_path, paths);
    // Only a disk that the domain does not use yet needs reading (and maybe creating).
    let (format, create_disk) = match (captured.disk_path.value(), captured.disk_format.value()) {
        (Some(current), Some(format)) if *current == disk => (*format, None),
        _ => disk_facts(def, &disk, host)?,
    };
    let resolved = resolve(name, def, format, paths, host, warnings);
    let changes = with_autostart(diff(&captured, def, &resolved), name, def, observed);
    if changes.is_empty() {
        return Ok(Action::Unchanged);
    }
    let definition_changes = changes.iter().any(|c| c.field != "autostart");
    let xml = if definition_changes {
        Some(domain_xml::patch(xml, def, &resolved).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut notes = Vec::new();
    if captured.boot.value() == Some(&Boot::Bios) && def.boot == Boot::Uefi {
        notes.push("the firmware changes from BIOS to UEFI: an installed guest may not boot until its boot loader is set up for UEFI".to_string());
    }
    if captured.secure_boot.value() == Some(&false) && def.boot == Boot::Uefi && def.secure_boot() {
        notes.push(format!(
            "Secure Boot keys are enrolled only into a fresh NVRAM: start it once with `virsh start --reset-nvram {name}` (this resets its UEFI variables)"
        ));
    }
    let running = observed.active.contains(name);
    Ok(Action::Update {
        autostart: changes
            .iter()
            .any(|c| c.field == "autostart")
            .then(|| def.autostart()),
        pending_reboot: running && xml.is_some(),
        changes,
        xml,
        create_disk,
        notes,
    })
}

/// One row of `bkt vm status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusRow {
    pub name: String,
    pub state: State,
    /// Whether the manifest describes it.
    pub managed: bool,
    /// Whether its definition matches the manifest; `None` when there is nothing to compare
    /// (missing, or unmanaged).
    pub in_sync: Option<bool>,
    /// The fields that differ.
    pub drift: Vec<String>,
}

/// The status of manifest VMs `names`, then of `unmanaged` domains.
pub fn status(
    manifest: &VmManifest,
    names: &[&str],
    unmanaged: &[&str],
    observed: &Observed,
    paths: &Paths,
    host: &dyn Host,
) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = names
        .iter()
        .map(|name| {
            let drift = match observed.xml.get(*name) {
                None => None,
                Some(Err(_)) => Some(vec!["(definition unreadable)".to_string()]),
                Some(Ok(xml)) => Some(match domain_xml::parse(xml) {
                    Ok(captured) => {
                        drift(name, &manifest.vms[*name], &captured, observed, paths, host)
                            .into_iter()
                            .map(|c| c.field.to_string())
                            .collect()
                    }
                    Err(_) => vec!["(definition unreadable)".to_string()],
                }),
            };
            StatusRow {
                name: name.to_string(),
                state: observed.state(name),
                managed: true,
                in_sync: drift.as_ref().map(Vec::is_empty),
                drift: drift.unwrap_or_default(),
            }
        })
        .collect();
    rows.extend(unmanaged.iter().map(|name| StatusRow {
        name: name.to_string(),
        state: observed.state(name),
        managed: false,
        in_sync: None,
        drift: Vec::new(),
    }));
    rows
}
