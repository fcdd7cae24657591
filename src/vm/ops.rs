//! The mutations: carrying out a sync plan (disk creation through [`disk::create`], define,
//! autostart), and start, graceful stop, forced stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::manifest::vm::VmManifest;
use crate::plan::{Action, DiskCreation, Outcome, SyncPlan, VmResult};
use crate::virsh::{DomainState, Virsh};
use crate::vm::planner::{self, Paths, SystemHost};
use crate::vm::{disk, domain_xml};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    /// Nothing to do: the domain already runs (or is paused, suspended, shutting down).
    AlreadyActive(DomainState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The guest shut down within the time it had.
    ShutDown,
    /// `--force`: the domain was destroyed (powered off) at once.
    Destroyed,
    AlreadyStopped,
}

/// Starts `name` unless it is already active.
pub fn start(virsh: &Virsh, name: &str) -> Result<StartOutcome, Error> {
    let state = virsh.domain_state(name).map_err(|e| Error::vm(name, e))?;
    if state.is_active() {
        return Ok(StartOutcome::AlreadyActive(state));
    }
    virsh
        .run(&["start", "--domain", name])
        .map_err(|e| Error::vm(name, e))?;
    Ok(StartOutcome::Started)
}

/// How `stop` ends a domain.
#[derive(Debug, Clone, Copy)]
pub struct StopMode {
    /// Destroy at once instead of asking the guest to shut down.
    pub force: bool,
    /// How long a graceful shutdown may take.
    pub timeout: Duration,
    /// How often to look whether it has finished.
    pub poll: Duration,
}

/// Stops `name`: an ACPI shutdown request, then waiting up to `mode.timeout` for the guest
/// to power off; or, with `mode.force`, destroy at once.
pub fn stop(virsh: &Virsh, name: &str, mode: StopMode) -> Result<StopOutcome, Error> {
    let state = virsh.domain_state(name).map_err(|e| Error::vm(name, e))?;
    if !state.is_active() {
        return Ok(StopOutcome::AlreadyStopped);
    }
    if mode.force {
        virsh
            .run(&["destroy", "--domain", name])
            .map_err(|e| Error::vm(name, e))?;
        return Ok(StopOutcome::Destroyed);
    }
    virsh
        .run(&["shutdown", "--domain", name, "--mode", "acpi"])
        .map_err(|e| Error::vm(name, e))?;
    let deadline = Instant::now() + mode.timeout;
    loop {
        let state = virsh.domain_state(name).map_err(|e| Error::vm(name, e))?;
        if !state.is_active() {
            return Ok(StopOutcome::ShutDown);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::StopTimedOut {
                name: name.to_string(),
                timeout: mode.timeout,
            });
        }
        std::thread::sleep(mode.poll.min(deadline - now));
    }
}

/// Carries out a sync plan: creates missing disks (one virsh process for every disk in a
/// storage pool, one qemu-img process for each other disk), then defines every new and changed
/// domain and sets autostart in one virsh process, then reads every touched definition back
/// (a second process) and checks that each manifest field landed: libvirt can drop or
/// rewrite a value silently, and that is a failure, not a success. One VM's failure does
/// not stop the others.
pub fn execute(
    virsh: &Virsh,
    plan: &SyncPlan,
    manifest: &VmManifest,
    paths: &Paths,
    host: &SystemHost,
) -> Vec<VmResult> {
    let mut failed: BTreeMap<&str, String> = BTreeMap::new();
    let mut creations: Vec<(&str, &DiskCreation)> = Vec::new();
    for vm in &plan.vms {
        match &vm.action {
            Action::Error { message } => {
                failed.insert(&vm.name, message.clone());
            }
            Action::Create {
                create_disk: Some(disk),
                ..
            }
            | Action::Update {
                create_disk: Some(disk),
                ..
            } => creations.push((&vm.name, disk)),
            _ => {}
        }
    }
    if !creations.is_empty() {
        let disks: Vec<&DiskCreation> = creations.iter().map(|(_, d)| *d).collect();
        let results = disk::create(virsh, &host.qemu_img, &disks);
        for ((name, _), result) in creations.iter().zip(results) {
            if let Err(message) = result {
                failed.insert(name, message);
            }
        }
    }

    // One batch of define and autostart commands; `owner[i]` is the VM of command i.
    let dir = tempfile::tempdir();
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut owner: Vec<&str> = Vec::new();
    let mut touched: Vec<&str> = Vec::new();
    for (i, vm) in plan.vms.iter().enumerate() {
        if failed.contains_key(vm.name.as_str()) {
            continue;
        }
        let (xml, autostart) = match &vm.action {
            Action::Create { xml, autostart, .. } => (Some(xml), autostart.then_some(true)),
            Action::Update { xml, autostart, .. } => (xml.as_ref(), *autostart),
            _ => continue,
        };
        touched.push(&vm.name);
        if let Some(xml) = xml {
            let file = match &dir {
                Ok(dir) => {
                    let file = dir.path().join(format!("{i}.xml"));
                    std::fs::write(&file, xml).map(|_| file)
                }
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            match file {
                Ok(file) => {
                    commands.push(args(&["define", "--file", &file.to_string_lossy()]));
                    owner.push(&vm.name);
                }
                Err(e) => {
                    failed.insert(
                        &vm.name,
                        format!("cannot write its domain XML to a temporary file: {e}"),
                    );
                    continue;
                }
            }
        }
        match autostart {
            Some(true) => commands.push(args(&["autostart", "--domain", &vm.name])),
            Some(false) => commands.push(args(&["autostart", "--disable", "--domain", &vm.name])),
            None => continue,
        }
        owner.push(&vm.name);
    }
    if !commands.is_empty() {
        match virsh.batch(&commands) {
            Ok(replies) => {
                for (reply, name) in replies.into_iter().zip(&owner) {
                    if let Err(e) = reply.into_result()
                        && !failed.contains_key(name)
                    {
                        failed.insert(name, e.message());
                    }
                }
            }
            Err(e) => {
                for name in &owner {
                    failed.entry(name).or_insert_with(|| e.to_string());
                }
            }
        }
    }

    // Read back what libvirt kept.
    let verify: Vec<&str> = touched
        .iter()
        .copied()
        .filter(|n| !failed.contains_key(n))
        .collect();
    if !verify.is_empty() {
        match planner::observe(virsh, &verify) {
            Ok(observed) => {
                for name in &verify {
                    let def = &manifest.vms[*name];
                    let problem = match observed.xml.get(*name) {
                        None => Some("libvirt has no such domain after define".to_string()),
                        Some(Err(e)) => Some(format!("cannot read it back: {}", e.message())),
                        Some(Ok(xml)) => match domain_xml::parse(xml) {
                            Err(e) => Some(format!("cannot read it back: {e}")),
                            Ok(captured) => {
                                let lost =
                                    planner::drift(name, def, &captured, &observed, paths, host);
                                (!lost.is_empty()).then(|| {
                                    let fields: Vec<String> =
                                        lost.iter().map(|c| c.to_string()).collect();
                                    format!(
                                        "libvirt did not keep every field: {}",
                                        fields.join("; ")
                                    )
                                })
                            }
                        },
                    };
                    if let Some(problem) = problem {
                        failed.insert(name, problem);
                    }
                }
            }
            Err(e) => {
                for name in &verify {
                    failed.insert(name, format!("cannot read it back: {e}"));
                }
            }
        }
    }

    plan.vms
        .iter()
        .map(|vm| VmResult {
            name: vm.name.clone(),
            outcome: match (failed.get(vm.name.as_str()), &vm.action) {
                (Some(message), _) => Outcome::Failed {
                    message: message.clone(),
                },
                (None, Action::Create { .. }) => Outcome::Created,
                (None, Action::Update { .. }) => Outcome::Updated,
                (None, _) => Outcome::Unchanged,
            },
        })
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}
