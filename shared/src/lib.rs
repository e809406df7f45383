//! paycycle's facade crate: what the six Lambda functions share, in one import.
//!
//! The code lives in three crates beside this one, and dependencies run one way (README "Layout"):
//!
//! - [`paycycle_domain`] (`shared/domain`): money, calendar, state machines, events. No AWS, HTTP
//!   or PG dependency: its `Cargo.toml` has none to import.
//! - [`paycycle_pg`] (`shared/pg`): the PG adapters and their registry. Depends on the domain only.
//! - [`paycycle_store`] (`shared/store`): DynamoDB, the outbox and its EventBridge publisher.
//!   Depends on the domain only.
//! - this crate: HTTP plumbing ([`api`]), configuration ([`config`]), the cold start ([`boot`]),
//!   logging ([`telemetry`]) and the API's JSON views ([`views`]). It re-exports the others under
//!   the paths the functions use (`paycycle::domain`, `paycycle::pg`, `paycycle::store`, …).

pub mod api;
pub mod boot;
pub mod config;
pub mod metrics;
pub mod reconcile;
pub mod schedule;
pub mod secrets;
pub mod standard_webhooks;
pub mod telemetry;
pub mod views;
pub mod webhook_targets;

pub use paycycle_domain as domain;
pub use paycycle_domain::{calendar, ids, money, pii, secret};
pub use paycycle_pg as pg;
pub use paycycle_store as store;
pub use paycycle_store::{aws, events};
pub use paycycle_tls as tls;

pub use config::{Config, ConfigError};
pub use money::Krw;
pub use secret::Secret;
