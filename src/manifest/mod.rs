//! Manifests: the files under the manifest directory that describe the desired state.

pub mod json;
pub mod validate;
pub mod vm;
