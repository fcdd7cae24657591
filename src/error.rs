//! The one error type of the tool. Its kind decides the exit code (see [`Error::exit_code`]);
//! that mapping lives here and nowhere else.

use std::fmt;
use std::path::PathBuf;

use crate::manifest::validate::Diagnostic;
use crate::virsh;

#[derive(Debug)]
pub enum Error {
    /// There is no `vms.json` where we looked.
    ManifestMissing { path: PathBuf },
    /// The manifest exists but could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The manifest is not valid; nothing was changed.
    ManifestInvalid {
        file: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// Writing a file failed.
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// virsh (or qemu-img) failed or could not be run.
    Virsh(virsh::Error),
    /// A libvirt operation on one VM failed.
    Vm { name: String, source: virsh::Error },
    /// A graceful shutdown did not finish in time.
    StopTimedOut {
        name: String,
        timeout: std::time::Duration,
    },
    /// A command named a VM that the manifest does not describe.
    NotInManifest {
        name: String,
        file: PathBuf,
        in_libvirt: bool,
    },
    /// A command named a domain that libvirt does not have.
    NoSuchDomain { name: String, in_manifest: bool },
    /// A name that is neither in the manifest nor in libvirt.
    NoSuchVm { name: String },
    /// `sync --check` found something to change.
    WouldChange,
    /// Sync failed for these VMs (the others were synced).
    SyncFailed { failed: Vec<String> },
    /// `fetch-iso` could not fetch these URLs of VM `name` (the others were fetched).
    FetchFailed { name: String, failed: Vec<String> },
}

/// Exit codes of SPEC.md.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ManifestMissing { .. } | Error::ManifestInvalid { .. } => EXIT_USAGE,
            Error::Read { .. }
            | Error::Write { .. }
            | Error::Virsh(_)
            | Error::Vm { .. }
            | Error::StopTimedOut { .. }
            | Error::NotInManifest { .. }
            | Error::NoSuchDomain { .. }
            | Error::NoSuchVm { .. }
            | Error::WouldChange
            | Error::SyncFailed { .. }
            | Error::FetchFailed { .. } => EXIT_FAILURE,
        }
    }

    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::ManifestMissing { .. } => Some(
                "pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds vms.json".into(),
            ),
            Error::Virsh(e) | Error::Vm { source: e, .. } => e.hint(),
            Error::StopTimedOut { name, .. } => Some(format!(
                "the guest may not react to ACPI shutdown; `bkt vm stop {name} --force` powers it off at once"
            )),
            Error::NotInManifest {
                in_libvirt: true, ..
            } => Some("it is a libvirt domain: pass --unmanaged to act on it anyway".into()),
            Error::NoSuchDomain {
                in_manifest: true,
                ..
            } => Some("`bkt vm sync` defines it".into()),
            Error::NoSuchDomain { .. } | Error::NoSuchVm { .. } => {
                Some("`bkt vm status --all` lists the VMs".into())
            }
            Error::WouldChange => Some("`bkt vm sync` makes these changes".into()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ManifestMissing { path } => write!(f, "no manifest at {}", path.display()),
            Error::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::ManifestInvalid { file, diagnostics } => {
                let n = diagnostics.len();
                write!(
                    f,
                    "{} is not valid ({n} error{}); nothing was changed",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                )
            }
            Error::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            Error::Virsh(e) => e.fmt(f),
            Error::Vm { name, source } => write!(f, "VM {name}: {source}"),
            Error::StopTimedOut { name, timeout } => write!(
                f,
                "VM {name} did not shut down within {} s",
                timeout.as_secs()
            ),
            Error::NotInManifest { name, file, .. } => {
                write!(f, "VM {name} is not in {}", file.display())
            }
            Error::NoSuchDomain { name, .. } => write!(f, "libvirt has no domain named {name}"),
            Error::NoSuchVm { name } => {
                write!(f, "{name} is neither in the manifest nor a libvirt domain")
            }
            Error::WouldChange => write!(f, "libvirt does not match the manifest"),
            Error::FetchFailed { name, failed } => write!(
                f,
                "VM {name}: {} ISO{} not fetched: {}",
                failed.len(),
                if failed.len() == 1 { "" } else { "s" },
                failed.join(", ")
            ),
            Error::SyncFailed { failed } => write!(
                f,
                "could not sync {} VM{}: {}",
                failed.len(),
                if failed.len() == 1 { "" } else { "s" },
                failed.join(", ")
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// A libvirt failure while working on VM `name`.
    pub fn vm(name: &str, source: virsh::Error) -> Error {
        Error::Vm {
            name: name.to_string(),
            source,
        }
    }
}

impl From<virsh::Error> for Error {
    fn from(e: virsh::Error) -> Self {
        Error::Virsh(e)
    }
}

/// `FILE:LINE:COL: PATH: message`, or `FILE: PATH: message` when the place is not known.
pub fn format_diagnostic(file: &std::path::Path, d: &Diagnostic) -> String {
    let mut out = file.display().to_string();
    if let Some(pos) = d.pos {
        out.push_str(&format!(":{pos}"));
    }
    out.push_str(": ");
    if !d.path.is_root() {
        out.push_str(&format!("{}: ", d.path));
    }
    out.push_str(&d.message);
    out
}
