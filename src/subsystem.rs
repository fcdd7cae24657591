//! Subsystems: each owns one manifest file and the part of the machine it describes. The
//! top-level `bkt sync`, `capture` and `status` iterate [`registry`]; today it holds the VM
//! subsystem only.

use std::path::Path;

use crate::error::Error;
use crate::manifest::vm;

pub trait Subsystem {
    /// The name used on the command line (`bkt vm ...`).
    fn name(&self) -> &'static str;
    /// The manifest file, relative to the manifest directory.
    fn manifest_file(&self) -> &'static str;
    /// Loads and validates the manifest; the number of items it describes.
    fn validate(&self, manifest_dir: &Path) -> Result<usize, Error>;
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
