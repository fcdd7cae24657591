//! The mutations of VM state: start, graceful stop, forced stop.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::virsh::{DomainState, Virsh};

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
