//! The billing domain: pure types and rules, no AWS, HTTP or PG types (DESIGN §1, §5, §6).
//!
//! - [`subscription`]: the subscription state machine and its schedule;
//! - [`customer`]: the paying customer (masked in `Debug`) and the PG mode;
//! - [`attempt`]: charge attempts and the deterministic [`ChargeId`](attempt::ChargeId);
//! - [`dunning`]: when to retry a declined renewal and when to give up;
//! - [`payment`]: paid / refunded / pending amounts and the refund reservation rules;
//! - [`events`]: the domain events a transition emits (DESIGN §7 names).
//!
//! Every transition is a function from the current value to the next value plus events, or a
//! typed error; the store persists the result with a conditional write on the state it started from.

pub mod attempt;
pub mod customer;
pub mod dunning;
pub mod events;
pub mod payment;
pub mod subscription;
