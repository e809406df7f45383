//! The DynamoDB single table (DESIGN §7). This module owns the table's key layout; the repository
//! for each item (subscription, attempt, payment, refund, checkout, webhook event, idempotency
//! record, outbox, API key) is built by the store issue on top of [`Table`]. It knows nothing of
//! PGs or HTTP.
//!
//! The table's physical definition (keys, GSIs, stream, TTL) lives in `template.yaml` only; the
//! test harness provisions moto from that same file, so code and template cannot drift.

use aws_sdk_dynamodb::Client;

/// Attribute names fixed by the template's table definition.
pub mod keys {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    /// TTL attribute (epoch seconds).
    pub const EXPIRES_AT: &str = "expires_at";
    /// Sparse GSI of due subscriptions: shard key and due time (epoch seconds).
    pub const DUE_INDEX: &str = "due";
    pub const DUE_SHARD: &str = "due_shard";
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    /// Sparse GSI for lookups by PG ids and by customer.
    pub const LOOKUP_INDEX: &str = "lookup";
    pub const LOOKUP_PK: &str = "lookup_pk";
    pub const LOOKUP_SK: &str = "lookup_sk";
}

/// A handle on the table: the SDK client (built once per cold start) and the table name.
#[derive(Clone, Debug)]
pub struct Table {
    pub client: Client,
    pub name: String,
}

impl Table {
    pub fn new(sdk: &aws_config::SdkConfig, name: impl Into<String>) -> Self {
        Self { client: Client::new(sdk), name: name.into() }
    }

    pub fn from_client(client: Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }
}
