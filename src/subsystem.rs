//! Subsystems: each owns one manifest file and the part of the machine it describes. The
//! top-level `bkt sync`, `capture` and `status` iterate [`registry`]; today it holds the VM
//! subsystem only.

use std::path::Path;

use crate::error::Error;
use crate::manifest::vm;
use crate::output::Printer;
use crate::virsh::{Runner, Virsh};
use crate::vm::commands;

/// What every command needs: where the manifests are, how to reach libvirt, how to print.
pub struct Context<'a> {
    pub manifest_dir: &'a Path,
    pub runner: &'a dyn Runner,
    pub virsh: &'a Virsh<'a>,
    pub printer: &'a Printer,
}

/// Sync's three ways: do it, only show it, or show it and fail when anything would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    Off,
    On,
    Check,
}

pub trait Subsystem {
    /// The name used on the command line (`bkt vm ...`).
    fn name(&self) -> &'static str;
    /// The manifest file, relative to the manifest directory.
    fn manifest_file(&self) -> &'static str;
    /// Loads and validates the manifest; the number of items it describes.
    fn validate(&self, manifest_dir: &Path) -> Result<usize, Error>;
    /// Makes the machine match the whole manifest.
    fn sync(&self, ctx: &Context, dry_run: DryRun) -> Result<(), Error>;
    /// Writes what the machine has back into the manifest.
    fn capture(&self, ctx: &Context, dry_run: bool) -> Result<(), Error>;
    /// Shows how the machine compares with the whole manifest.
    fn status(&self, ctx: &Context) -> Result<(), Error>;
}

/// Every registered subsystem, in the order top-level commands run them.
pub fn registry() -> Vec<Box<dyn Subsystem>> {
    vec![Box::new(VmSubsystem)]
}

/// libvirt virtual machines, described by `vms.json`.
pub struct VmSubsystem;

impl Subsystem for VmSubsystem {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn manifest_file(&self) -> &'static str {
        vm::FILE_NAME
    }

    fn validate(&self, manifest_dir: &Path) -> Result<usize, Error> {
        Ok(vm::load(manifest_dir)?.vms.len())
    }

    fn sync(&self, ctx: &Context, dry_run: DryRun) -> Result<(), Error> {
        commands::sync(ctx, &[], dry_run, false)
    }

    fn capture(&self, ctx: &Context, dry_run: bool) -> Result<(), Error> {
        commands::capture(ctx, &[], false, dry_run)
    }

    fn status(&self, ctx: &Context) -> Result<(), Error> {
        commands::status(ctx, &[], false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_subsystem_is_registered_once() {
        let names: Vec<&str> = registry().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["vm"]);
        let vm = &registry()[0];
        assert_eq!(vm.manifest_file(), "vms.json");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests");
        assert_eq!(vm.validate(&examples).unwrap(), 1);
    }
}
