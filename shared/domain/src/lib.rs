//! paycycle's billing domain: pure types and rules (DESIGN §1, §5, §6).
//!
//! This crate depends on no AWS, HTTP or PG crate — its `Cargo.toml` lists serde, jiff,
//! thiserror, sha2 and getrandom only — so "the domain knows no database and no PG" is a
//! compile error to break, not a habit. The `pg` and `store` crates build on it; the `paycycle`
//! facade re-exports it.
//!
//! - [`money`]: integer KRW; [`calendar`]: billing periods in Asia/Seoul;
//! - [`subscription`]: the subscription state machine and its schedule;
//! - [`customer`]: the paying customer (masked in `Debug`);
//! - [`gateway`]: which PG and mode a customer pays through, and what a PG told about a payment;
//! - [`attempt`]: charge attempts and the deterministic [`ChargeId`](attempt::ChargeId);
//! - [`dunning`]: when to retry a declined renewal and when to give up;
//! - [`payment`]: paid / refunded / pending amounts and the refund reservation rules;
//! - [`events`]: the domain events a transition emits (DESIGN §7 names);
//! - [`review`]: a person's verdict on a charge or refund left unknown (DESIGN §13);
//! - [`ids`], [`pii`], [`secret`]: identifiers, masking and a secret that never prints.
//!
//! Every transition is a function from the current value to the next value plus events, or a
//! typed error; the store persists the result with a conditional write on the state it started from.

pub mod attempt;
pub mod calendar;
pub mod customer;
pub mod dunning;
pub mod events;
pub mod gateway;
pub mod ids;
pub mod money;
pub mod payment;
pub mod pii;
pub mod review;
pub mod secret;
pub mod subscription;

pub use money::Krw;
pub use secret::Secret;
