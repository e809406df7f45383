//! The outbox: events written in the same transaction as the state change they describe, then
//! published to EventBridge after commit and deleted only once EventBridge accepted them. What a
//! crash leaves behind is drained on the next tick, so delivery is at-least-once with stable ids.
//!
//! Item: `pk = OUTBOX#{0..3}` (spread by event id), `sk = {occurred_at_ms:015}#{event_id}`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Item, Query, Store, StoreError, Tx, from_item, sha256_hex, to_item};
use paycycle_domain::events::{EventData, EventKind, RefundEventData, SubscriptionEventData};

const OUTBOX_SHARDS: u32 = 4;

/// One event waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Stable id consumers dedupe on (also inside `detail` as `id`).
    pub event_id: String,
    pub detail_type: String,
    pub occurred_at: Timestamp,
    /// The EventBridge `detail` JSON: `{"id", "type", "occurred_at", "data"}`.
    pub detail: String,
}

impl OutboxEvent {
    /// An event about `aggregate_id` at its `version` (a write bumps the version, so the pair is
    /// unique per change and the same on a retried commit). `data` is of the type `kind` names
    /// ([`EventKind::subject`]).
    pub fn new(kind: EventKind, aggregate_id: &str, version: u64, occurred_at: Timestamp, data: EventData) -> Self {
        debug_assert_eq!(kind.subject(), data.subject(), "{kind:?} carries the other data type");
        let data = data.to_json();
        let detail_type = kind.detail_type().to_string();
        let event_id =
            format!("evt_{}", &sha256_hex(format!("{aggregate_id}:{version}:{detail_type}").as_bytes())[..24]);
        let detail = serde_json::json!({
            "id": event_id,
            "type": detail_type,
            "occurred_at": occurred_at.to_string(),
            "data": data,
        })
        .to_string();
        Self { event_id, detail_type, occurred_at, detail }
    }

    fn pk(&self) -> String {
        let shard = u32::from_str_radix(&sha256_hex(self.event_id.as_bytes())[..4], 16).unwrap_or(0) % OUTBOX_SHARDS;
        format!("OUTBOX#{shard}")
    }

    fn sk(&self) -> String {
        format!("{:015}#{}", self.occurred_at.as_millisecond(), self.event_id)
    }
}

/// The events of a subscription change: the same `data` for every kind (subscription, partner,
/// customer, state, period, next attempt, and the payment when money moved).
pub fn subscription_events(
    next: &super::subscriptions::SubscriptionRecord,
    kinds: &[EventKind],
    now: Timestamp,
    payment: Option<&super::payments::PaymentRecord>,
) -> Vec<OutboxEvent> {
    kinds
        .iter()
        .map(|k| {
            let data = SubscriptionEventData {
                subscription_id: next.id().clone(),
                partner_id: next.partner_id.clone(),
                customer_id: next.customer.id.clone(),
                state: next.subscription.state,
                period: next.subscription.current_period.map(|p| p.index),
                next_attempt_at: next.subscription.next_attempt_at.map(|t| t.to_string()),
                payment_id: payment.map(|p| p.payment_id.clone()),
                amount: payment.map(|p| p.amounts.paid),
                version: next.version,
            };
            OutboxEvent::new(*k, next.id().as_str(), next.version, now, EventData::Subscription(data))
        })
        .collect()
}

/// How a refund settled, for its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundSettled {
    Succeeded,
    Failed,
}

/// The event of a refund settled (`refund.succeeded` or `refund.failed`): the one way every
/// producer builds it.
pub fn refund_event(settled: RefundSettled, data: RefundEventData, now: Timestamp) -> OutboxEvent {
    let kind = match settled {
        RefundSettled::Succeeded => EventKind::RefundSucceeded,
        RefundSettled::Failed => EventKind::RefundFailed,
    };
    let id = data.refund_id.clone();
    OutboxEvent::new(kind, &id, 1, now, EventData::Refund(data))
}

impl Tx {
    /// Adds an event to the transaction's outbox.
    pub fn put_outbox(&mut self, event: &OutboxEvent) -> &mut Self {
        let item: Item = to_item(event, &event.pk(), &event.sk(), "outbox");
        self.put_new(item)
    }
}

impl Store {
    /// Up to `limit` waiting events, oldest first within each shard.
    pub async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..OUTBOX_SHARDS {
            if out.len() >= limit {
                break;
            }
            let left = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let (page, _) = self.query(&Query::partition(&format!("OUTBOX#{shard}")).limit(Some(left))).await?;
            for item in page {
                out.push(from_item(item)?);
            }
        }
        Ok(out)
    }

    /// Deletes published events (a missing one is fine: another drainer got there first): one
    /// DeleteItem for a single event, else BatchWriteItem in chunks of 25 (a renewal's two events
    /// cost one write request, not two). Items DynamoDB leaves unprocessed are retried a few times;
    /// any still left are published again by a later drain (delivery is at-least-once, ids stable).
    pub async fn delete_outbox(&self, events: &[OutboxEvent]) -> Result<(), StoreError> {
        let keys: Vec<(String, String)> = events.iter().map(|e| (e.pk(), e.sk())).collect();
        let left = self.delete_keys(&keys).await?;
        if left > 0 {
            tracing::warn!(left, "outbox deletes left unprocessed; a later drain republishes them");
        }
        Ok(())
    }
}
