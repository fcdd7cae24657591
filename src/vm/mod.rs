//! Virtual machines: turning manifest definitions into libvirt domains and back.

pub mod ops;
