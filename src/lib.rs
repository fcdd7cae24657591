//! `bkt vm`: declarative libvirt virtual machines.
//!
//! - [`manifest`]: the `vms.json` model, its schema, loading with positioned diagnostics, saving.
//! - [`subsystem`]: the registry that top-level `bkt sync`/`capture`/`status` iterate.
//! - [`virsh`]: the only place that spawns processes.
//! - [`vm`]: the domain XML mapping (render, parse, patch) and the drift check built on it.
//! - [`cli`], [`output`], [`error`]: the command line, the printer, and the error kinds that
//!   decide exit codes.

pub mod cli;
pub mod error;
pub mod manifest;
pub mod output;
pub mod plan;
pub mod subsystem;
pub mod virsh;
pub mod vm;
