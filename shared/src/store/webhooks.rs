//! Raw PG webhook events, stored first and verified later (DESIGN §3): one conditional put keyed
//! by a dedupe key, so a repeated delivery is `AlreadyExists` (the handler answers 200 anyway).
//! Kept 180 days (TTL). The table's stream hands new `webhook_event` items to verify.
//!
//! Item: `pk = WH#{pg}#{dedupe_key}`, `sk = WH`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, from_item, keys, n, s, to_item};

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
    /// What verify made of it; `received` until then.
    #[serde(default)]
    pub status: WebhookStatus,
    /// Why it was rejected or ignored, or what it changed.
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub processed_at: Option<Timestamp>,
}

/// A stored webhook's verification state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Stored, not yet verified.
    #[default]
    Received,
    /// Confirmed with the PG and applied (or already applied).
    Verified,
    /// The PG does not confirm it (forged, wrong amount, unpaid, bad reference): nothing changed.
    Rejected,
    /// Genuine but nothing for verify to do (e.g. a renewal charge renew settles itself).
    Ignored,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Received => "received",
            WebhookStatus::Verified => "verified",
            WebhookStatus::Rejected => "rejected",
            WebhookStatus::Ignored => "ignored",
        }
    }
}

impl WebhookEvent {
    /// A webhook as it arrived.
    pub fn received(
        pg: &str,
        dedupe_key: String,
        content_type: &str,
        body: String,
        headers: BTreeMap<String, String>,
        received_at: Timestamp,
    ) -> Self {
        Self {
            pg: pg.to_string(),
            dedupe_key,
            content_type: content_type.to_string(),
            body,
            headers,
            received_at,
            status: WebhookStatus::Received,
            outcome: None,
            processed_at: None,
        }
    }

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

    /// Records what verify made of an event (a conditional update: the event must exist). The
    /// stream mapping only passes inserts, so this does not feed verify again.
    pub async fn mark_webhook_event(
        &self,
        pg: &str,
        dedupe_key: &str,
        status: WebhookStatus,
        outcome: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let pk = format!("WH#{pg}#{dedupe_key}");
        let outcome: String = outcome.chars().take(500).collect();
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s("WH"))
            .update_expression("SET #status = :status, outcome = :outcome, processed_at = :at")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":outcome", s(&outcome))
            .expression_attribute_values(":at", s(&at.to_string()))
            .send()
            .await
            .map_err(|e| super::conditional(e, StoreError::NotFound(pk.clone())))?;
        Ok(())
    }
}
