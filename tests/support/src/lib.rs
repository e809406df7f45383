//! Test and local-stack support: a moto server on 127.0.0.1 (started and stopped by PID, never by
//! name) and provisioning of its table, bus and queues from `template.yaml` itself, so that tests,
//! the local stack and the deployed stack share one definition.
//!
//! This crate does not depend on `paycycle`: it is infrastructure, and `paycycle`'s own tests use it.

pub mod moto;
pub mod provision;
pub mod template;

use std::path::PathBuf;

pub use moto::MotoServer;
pub use provision::{Provisioned, provision};
pub use template::Template;

/// The repository root: `PAYCYCLE_ROOT` if set, else the checkout this crate was built from.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os("PAYCYCLE_ROOT") {
        return PathBuf::from(root);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root exists")
}

/// Errors from starting or provisioning the local AWS emulator.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{0}")]
    Moto(String),
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("provisioning {what}: {message}")]
    Provision { what: String, message: String },
}
