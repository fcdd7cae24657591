//! Virtual machines: how a manifest entry and a libvirt domain relate.
//!
//! [`domain_xml`] is the one mapping between a [`VmDefinition`](crate::manifest::vm::VmDefinition)
//! and libvirt's domain XML, in both directions: `render` for a new domain, `parse` to observe
//! what a domain holds, `patch` to change only what the manifest owns in an existing one.
//! [`diff`] compares what `parse` observed with what the manifest wants; its empty result is
//! the one definition of "in sync" that sync, status and capture share. [`ops`] holds the
//! mutations (start, stop, define); [`disk`] knows the managed disk (its format, path
//! safety, storage pools, creating it).
//!
//! Everything but `ops` is pure: no libvirt calls, no file system, no printing. The facts that are
//! not in the manifest (the disk image's format, which cached ISO files exist) come in as a
//! [`domain_xml::Resolved`] that the caller builds once, so that all three functions agree.

pub mod capture;
pub mod commands;
pub mod diff;
pub mod disk;
pub mod domain_xml;
pub mod iso;
pub mod ops;
pub mod planner;
