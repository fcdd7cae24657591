//! What sync means to do, as plain data: built by the planner, printed by the printer,
//! carried out by `vm::ops`. A dry run is printing it and stopping.

use serde::Serialize;

use crate::manifest::vm::VmDefinition;
use crate::vm::diff::FieldChange;

/// The plan for every VM that sync looked at, in manifest (name) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncPlan {
    pub vms: Vec<VmPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmPlan {
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    /// Things the user should know that do not stop this VM's sync (an ISO left out, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Define a new domain (after creating its disk, when it has none yet).
    Create {
        #[serde(skip)]
        xml: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        create_disk: Option<DiskCreation>,
        autostart: bool,
    },
    /// Bring an existing domain to the manifest.
    Update {
        changes: Vec<FieldChange>,
        /// The patched definition; `None` when only autostart changes.
        #[serde(skip)]
        xml: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        create_disk: Option<DiskCreation>,
        /// The new autostart setting, when it changes.
        #[serde(skip_serializing_if = "Option::is_none")]
        autostart: Option<bool>,
        /// The domain runs: a changed definition takes effect at its next boot.
        pending_reboot: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        notes: Vec<String>,
    },
    Unchanged,
    /// This VM cannot be synced; the others still are.
    Error {
        message: String,
    },
}

/// A disk image to create before the domain is defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCreation {
    pub path: String,
    pub size_gb: u32,
    pub format: &'static str,
    /// The storage pool whose target directory holds `path`: libvirt creates the volume
    /// (`virsh vol-create-as`). `None`: `qemu-img create`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl SyncPlan {
    /// Whether carrying out the plan would change anything (`--check` fails when it would).
    pub fn changes_anything(&self) -> bool {
        self.vms
            .iter()
            .any(|vm| matches!(vm.action, Action::Create { .. } | Action::Update { .. }))
    }

    pub fn has_errors(&self) -> bool {
        self.vms
            .iter()
            .any(|vm| matches!(vm.action, Action::Error { .. }))
    }
}

/// What happened to one VM when the plan was carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmResult {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Failed { message: String },
}

/// The counts of a sync's summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
}

impl Summary {
    pub fn of_plan(plan: &SyncPlan) -> Summary {
        let mut s = Summary::default();
        for vm in &plan.vms {
            match vm.action {
                Action::Create { .. } => s.created += 1,
                Action::Update { .. } => s.updated += 1,
                Action::Unchanged => s.unchanged += 1,
                Action::Error { .. } => s.failed += 1,
            }
        }
        s
    }

    pub fn of_results(results: &[VmResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            match r.outcome {
                Outcome::Created => s.created += 1,
                Outcome::Updated => s.updated += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Failed { .. } => s.failed += 1,
            }
        }
        s
    }
}

/// What capture did (or, in a dry run, would do) to one VM of the manifest.
#[derive(Debug)]
pub enum CaptureEntry {
    Added {
        name: String,
        def: VmDefinition,
    },
    Changed {
        name: String,
        changes: Vec<(String, Option<String>, Option<String>)>,
    },
    Unchanged {
        name: String,
    },
    Skipped {
        name: String,
        reasons: Vec<String>,
    },
}

impl CaptureEntry {
    pub fn name(&self) -> &str {
        match self {
            CaptureEntry::Added { name, .. }
            | CaptureEntry::Changed { name, .. }
            | CaptureEntry::Unchanged { name }
            | CaptureEntry::Skipped { name, .. } => name,
        }
    }
}
