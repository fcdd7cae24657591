//! The `bkt vm` commands that read libvirt: load the manifest, observe (one virsh process),
//! plan, print, and for sync carry the plan out.

use serde::Serialize;

use crate::error::Error;
use crate::manifest::vm::{self, VmManifest};
use crate::output;
use crate::plan::{CaptureEntry, Summary, SyncPlan, VmResult};
use crate::subsystem::{Context, DryRun};
use crate::vm::capture::{self, VmCapture};
use crate::vm::domain_xml;
use crate::vm::iso::{self, Fetched};
use crate::vm::ops;
use crate::vm::planner::{self, Paths, SystemHost};

fn paths() -> Paths {
    let home = vm::home_dir();
    Paths {
        iso_cache: vm::iso_cache_dir(home.as_deref()),
        home,
    }
}

/// The manifest VMs that `names` selects (all of them when empty), in manifest order. A
/// name that the manifest does not have is an error.
fn select<'m>(
    ctx: &Context,
    manifest: &'m VmManifest,
    names: &[String],
) -> Result<Vec<&'m str>, Error> {
    if let Some(unknown) = names.iter().find(|n| !manifest.vms.contains_key(*n)) {
        let in_libvirt = ctx.virsh.domain_names()?.contains(unknown);
        return Err(Error::NotInManifest {
            name: unknown.clone(),
            file: ctx.manifest_dir.join(vm::FILE_NAME),
            in_libvirt,
        });
    }
    Ok(manifest
        .vms
        .keys()
        .map(String::as_str)
        .filter(|n| names.is_empty() || names.iter().any(|want| want == n))
        .collect())
}

#[derive(Serialize)]
struct SyncReport<'a> {
    dry_run: bool,
    plan: &'a SyncPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<&'a [VmResult]>,
    summary: Summary,
}

pub fn sync(ctx: &Context, names: &[String], dry_run: DryRun, json: bool) -> Result<(), Error> {
    let manifest = vm::load(ctx.manifest_dir)?;
    let selected = select(ctx, &manifest, names)?;
    let observed = planner::observe(ctx.virsh, &selected)?;
    let paths = paths();
    let host = SystemHost::new(ctx.runner, ctx.virsh);
    let plan = planner::plan(&manifest, &selected, &observed, &paths, &host);
    if !json {
        ctx.printer.plan(&plan);
    }
    if dry_run != DryRun::Off {
        if json {
            output::json(&SyncReport {
                dry_run: true,
                plan: &plan,
                results: None,
                summary: Summary::of_plan(&plan),
            });
        } else if plan.changes_anything() || plan.has_errors() {
            ctx.printer.dry_run_summary(&plan);
        }
        // A VM that could not be planned would fail: that is a failure of the dry run too.
        let failed: Vec<String> = plan
            .vms
            .iter()
            .filter(|vm| matches!(vm.action, crate::plan::Action::Error { .. }))
            .map(|vm| vm.name.clone())
            .collect();
        if !failed.is_empty() {
            return Err(Error::SyncFailed { failed });
        }
        if dry_run == DryRun::Check && plan.changes_anything() {
            return Err(Error::WouldChange);
        }
        return Ok(());
    }
    let results = ops::execute(ctx.virsh, &plan, &manifest, &paths, &host);
    if json {
        output::json(&SyncReport {
            dry_run: false,
            plan: &plan,
            results: Some(&results),
            summary: Summary::of_results(&results),
        });
    } else if plan.changes_anything() || plan.has_errors() {
        ctx.printer.results(&results);
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.outcome, crate::plan::Outcome::Failed { .. }))
        .map(|r| r.name.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::SyncFailed { failed })
    }
}

#[derive(Serialize)]
struct StatusReport<'a> {
    vms: &'a [planner::StatusRow],
}

pub fn status(ctx: &Context, names: &[String], all: bool, json: bool) -> Result<(), Error> {
    let manifest = vm::load(ctx.manifest_dir)?;
    let known: Vec<&str> = manifest.vms.keys().map(String::as_str).collect();
    let managed: Vec<&str> = known
        .iter()
        .copied()
        .filter(|n| names.is_empty() || names.iter().any(|want| want == n))
        .collect();
    let observed = planner::observe(ctx.virsh, &managed)?;
    // Named domains that the manifest does not know are shown as unmanaged; a name that
    // neither has is an error.
    let mut unmanaged: Vec<&str> = Vec::new();
    for name in names.iter().filter(|n| !manifest.vms.contains_key(*n)) {
        if !observed.domains.contains(name) {
            return Err(Error::NoSuchVm { name: name.clone() });
        }
        unmanaged.push(name);
    }
    if all {
        let others: Vec<&str> = observed
            .domains
            .iter()
            .map(String::as_str)
            .filter(|d| !manifest.vms.contains_key(*d) && !unmanaged.contains(d))
            .collect();
        unmanaged.extend(others);
    }
    let host = SystemHost::new(ctx.runner, ctx.virsh);
    let rows = planner::status(&manifest, &managed, &unmanaged, &observed, &paths(), &host);
    if json {
        output::json(&StatusReport { vms: &rows });
    } else {
        ctx.printer.status(&rows);
    }
    Ok(())
}

pub fn capture(ctx: &Context, names: &[String], all: bool, dry_run: bool) -> Result<(), Error> {
    let file = ctx.manifest_dir.join(vm::FILE_NAME);
    // Two captures of one manifest must not lose each other's writes: hold the directory's
    // lock from reading the manifest to renaming the new one into place.
    let lock = std::fs::File::open(ctx.manifest_dir).map_err(|source| Error::Read {
        path: ctx.manifest_dir.to_path_buf(),
        source,
    })?;
    lock.lock().map_err(|source| Error::Read {
        path: ctx.manifest_dir.to_path_buf(),
        source,
    })?;
    let existing = match vm::load(ctx.manifest_dir) {
        Ok(m) => Some(m),
        Err(Error::ManifestMissing { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut manifest = existing.clone().unwrap_or_else(|| VmManifest {
        schema: Some(vm::SCHEMA_FILE_NAME.to_string()),
        vms: Default::default(),
    });

    let domains = ctx.virsh.domain_names()?;
    for name in names {
        if !domains.contains(name) {
            return Err(Error::NoSuchDomain {
                name: name.clone(),
                in_manifest: manifest.vms.contains_key(name),
            });
        }
    }
    let mut wanted: Vec<String> = if names.is_empty() {
        manifest.vms.keys().cloned().collect()
    } else {
        names.to_vec()
    };
    if all {
        wanted.extend(domains.iter().cloned());
    }
    wanted.sort();
    wanted.dedup();

    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut readable: Vec<&str> = Vec::new();
    for name in &wanted {
        if let Some(problem) = vm::name_problem(name) {
            entries.push(CaptureEntry::Skipped {
                name: name.clone(),
                reasons: vec![format!("its name cannot be a manifest VM name: {problem}")],
            });
        } else if !domains.contains(name) {
            warnings.push(format!(
                "VM {name} is not defined in libvirt; its manifest entry is kept as it is"
            ));
            entries.push(CaptureEntry::Unchanged { name: name.clone() });
        } else {
            readable.push(name);
        }
    }

    let observed = planner::observe(ctx.virsh, &readable)?;
    let mut parsed = Vec::new();
    for name in readable {
        match observed.xml.get(name) {
            Some(Ok(xml)) => match domain_xml::parse(xml) {
                Ok(captured) => parsed.push((name, captured)),
                Err(e) => entries.push(CaptureEntry::Skipped {
                    name: name.to_string(),
                    reasons: vec![e.to_string()],
                }),
            },
            Some(Err(e)) => entries.push(CaptureEntry::Skipped {
                name: name.to_string(),
                reasons: vec![format!("cannot read its definition: {}", e.message())],
            }),
            None => entries.push(CaptureEntry::Skipped {
                name: name.to_string(),
                reasons: vec!["it disappeared while capture ran".into()],
            }),
        }
    }
    let sizes = disk_sizes(ctx, &parsed)?;

    let paths = paths();
    let exists = |p: &std::path::Path| p.exists();
    for ((name, captured), size) in parsed.iter().zip(sizes) {
        let base = manifest.vms.get(*name).cloned();
        let autostart = observed.autostart.contains(*name);
        match capture::merge(
            name,
            base.as_ref(),
            captured,
            autostart,
            size,
            &paths,
            &exists,
        ) {
            VmCapture::Skipped { reasons } => entries.push(CaptureEntry::Skipped {
                name: name.to_string(),
                reasons,
            }),
            VmCapture::Captured { def, kept } => {
                for (field, reason) in kept {
                    warnings.push(format!(
                        "VM {name}: {field} keeps its manifest value: {reason}"
                    ));
                }
                let entry = match &base {
                    None => CaptureEntry::Added {
                        name: name.to_string(),
                        def: def.clone(),
                    },
                    Some(old) if *old == def => CaptureEntry::Unchanged {
                        name: name.to_string(),
                    },
                    Some(old) => CaptureEntry::Changed {
                        name: name.to_string(),
                        changes: capture::field_changes(old, &def),
                    },
                };
                manifest.vms.insert(name.to_string(), def);
                entries.push(entry);
            }
        }
    }
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    for warning in &warnings {
        ctx.printer.warning(warning);
    }
    ctx.printer.capture(&entries);

    let changed = existing.as_ref() != Some(&manifest);
    if dry_run {
        ctx.printer.note("dry run: nothing was written");
        return Ok(());
    }
    if !changed {
        return Ok(());
    }
    // What capture writes must load again; anything else would be a bug, and nothing is
    // written then.
    if let Err(diagnostics) = vm::parse(&vm::to_text(&manifest), paths.home.as_deref()) {
        return Err(Error::ManifestInvalid { file, diagnostics });
    }
    vm::save(&file, &manifest)?;
    if existing.is_none() {
        let schema = ctx.manifest_dir.join(vm::SCHEMA_FILE_NAME);
        if !schema.exists() {
            std::fs::write(&schema, vm::schema_text()).map_err(|source| Error::Write {
                path: schema,
                source,
            })?;
        }
    }
    Ok(())
}

/// The virtual size of each parsed domain's managed disk, read in one virsh process:
/// `None` where the disk file does not exist (or there is no file disk).
fn disk_sizes(
    ctx: &Context,
    parsed: &[(&str, domain_xml::Captured)],
) -> Result<Vec<Option<Result<u64, String>>>, Error> {
    let mut commands = Vec::new();
    let mut asked = Vec::new();
    for (name, captured) in parsed {
        let path = captured
            .disk_path
            .value()
            .filter(|p| std::path::Path::new(p).exists());
        if let Some(path) = path {
            commands.push(
                ["domblkinfo", "--domain", name, "--device", path]
                    .map(String::from)
                    .to_vec(),
            );
        }
        asked.push(path.is_some());
    }
    let mut replies = if commands.is_empty() {
        Vec::new()
    } else {
        ctx.virsh.batch(&commands)?
    }
    .into_iter();
    Ok(asked
        .into_iter()
        .map(|asked| {
            asked.then(|| {
                let reply = replies.next().expect("one reply per command");
                match reply.into_result() {
                    Ok(out) => out
                        .lines()
                        .find_map(|l| l.strip_prefix("Capacity:"))
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| format!("domblkinfo printed {out:?}")),
                    Err(e) => Err(e.message()),
                }
            })
        })
        .collect())
}

/// Downloads the URL ISO sources of manifest VM `name` into the ISO cache, one after the
/// other; one failure does not stop the others.
pub fn fetch_iso(ctx: &Context, name: &str) -> Result<(), Error> {
    let manifest = vm::load(ctx.manifest_dir)?;
    let Some(def) = manifest.vms.get(name) else {
        return Err(Error::NotInManifest {
            name: name.to_string(),
            file: ctx.manifest_dir.join(vm::FILE_NAME),
            in_libvirt: false,
        });
    };
    let wanted = iso::wanted(def.iso_sources(), &paths().iso_cache);
    if wanted.is_empty() {
        ctx.printer.note(&format!(
            "VM {name} has no URL ISO sources: nothing to fetch"
        ));
        return Ok(());
    }
    let mut failed = Vec::new();
    let mut downloaded = false;
    for want in &wanted {
        let label = want
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut bar = ctx.printer.progress_bar(&label);
        let result = iso::fetch(want, &mut bar);
        bar.finish();
        let checked = |verified: bool| if verified { ", sha256 verified" } else { "" };
        match result {
            Ok(Fetched::AlreadyCached { verified }) => ctx.printer.success(&format!(
                "cached {} -> {} (already there{})",
                want.url,
                want.path.display(),
                checked(verified)
            )),
            Ok(Fetched::Downloaded {
                bytes,
                verified,
                resumed,
            }) => {
                downloaded = true;
                ctx.printer.success(&format!(
                    "fetched {} -> {} ({}{}{})",
                    want.url,
                    want.path.display(),
                    output::size(bytes),
                    if resumed { ", resumed" } else { "" },
                    checked(verified)
                ));
            }
            Err(message) => {
                ctx.printer.failure(&format!("VM {name}: {message}"));
                failed.push(want.url.clone());
            }
        }
    }
    if !failed.is_empty() {
        return Err(Error::FetchFailed {
            name: name.to_string(),
            failed,
        });
    }
    if downloaded {
        ctx.printer.note(&format!(
            "`bkt vm sync {name}` attaches the ISOs now in the cache"
        ));
    }
    Ok(())
}
