//! paycycle's common crate: everything the six Lambda functions share.
//!
//! Dependencies run one way (see STYLE in the docs): functions → `api`, `store`, `pg`, `domain`;
//! `store` and `pg` may use `domain`; the domain never imports AWS or HTTP types. Modules that are
//! not here yet are built by their own issues (domain core, PG clients, store, events).

pub mod api;
pub mod aws;
pub mod boot;
pub mod config;
pub mod pii;
pub mod secret;
pub mod store;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use secret::Secret;
