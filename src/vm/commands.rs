//! The `bkt vm` commands that read libvirt: load the manifest, observe (one virsh process),
//! plan, print, and for sync carry the plan out.

use serde::Serialize;

use crate::error::Error;
use crate::manifest::vm::{self, VmManifest};
use crate::output;
use crate::plan::{Summary, SyncPlan, VmResult};
use crate::subsystem::{Context, DryRun};
use crate::virsh::qemu_img::QemuImg;
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
    let host = SystemHost {
        qemu_img: QemuImg::new(ctx.runner),
    };
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
        if dry_run == DryRun::Check && (plan.changes_anything() || plan.has_errors()) {
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
    let host = SystemHost {
        qemu_img: QemuImg::new(ctx.runner),
    };
    let rows = planner::status(&manifest, &managed, &unmanaged, &observed, &paths(), &host);
    if json {
        output::json(&StatusReport { vms: &rows });
    } else {
        ctx.printer.status(&rows);
    }
    Ok(())
}
