//! paycycle's common crate: everything the six Lambda functions share.
//!
//! Dependencies run one way (see STYLE in the docs): functions → `api`, `store`, `pg`, `domain`;
//! `store` and `pg` may use `domain`; the domain (`money`, `calendar`, `domain`) never imports AWS or
//! HTTP types. Modules not here yet are built by their own issues (PG clients, store, events).

pub mod api;
pub mod aws;
pub mod boot;
pub mod calendar;
pub mod config;
pub mod domain;
pub mod events;
pub mod ids;
pub mod money;
pub mod pg;
pub mod pii;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod views;

pub use config::{Config, ConfigError};
pub use money::Krw;
pub use secret::Secret;
