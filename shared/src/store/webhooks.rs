//! Raw PG webhook events, stored first and verified later (DESIGN §3): one conditional put keyed
//! by a dedupe key, so a repeated delivery is `AlreadyExists` (the handler answers 200 anyway).
//! Kept 180 days (TTL). The table's stream hands new `webhook_event` items to verify.
//!
//! Item: `pk = WH#{pg}#{dedupe_key}`, `sk = WH`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, from_item, keys, n, to_item};

pub const WEBHOOK_RETENTION: SignedDuration = SignedDuration::from_hours(180 * 24);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `steppay` or `payple`.
    pub pg: String,
    /// e.g. StepPay `PAYMENT:{idKey}`, Payple `{OID}:{RST}:{CODE}`.
    pub dedupe_key: String,
    pub content_type: String,
    /// The body exactly as received (never re-serialized: signatures cover the raw bytes).
    pub body: String,
    /// The headers worth keeping (signature, user agent, request id).
    pub headers: BTreeMap<String, String>,
    pub received_at: Timestamp,
}

impl WebhookEvent {
    pub fn pk(&self) -> String {
        format!("WH#{}#{}", self.pg, self.dedupe_key)
    }
}

impl Store {
    /// Stores a webhook event once. A repeat delivery → `AlreadyExists`.
    pub async fn put_webhook_event(&self, event: &WebhookEvent) -> Result<(), StoreError> {
        let pk = event.pk();
        let mut item = to_item(event, &pk, "WH", "webhook_event");
        let expires = event.received_at.saturating_add(WEBHOOK_RETENTION).unwrap_or(event.received_at);
        item.insert(keys::EXPIRES_AT.into(), n(expires.as_second()));
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .send()
            .await
            .map_err(|e| super::conditional(e, StoreError::AlreadyExists(pk.clone())))?;
        Ok(())
    }

    pub async fn get_webhook_event(&self, pg: &str, dedupe_key: &str) -> Result<Option<WebhookEvent>, StoreError> {
        match self.get(&format!("WH#{pg}#{dedupe_key}"), "WH").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }
}
