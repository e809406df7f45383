//! Webhooks to partners (DESIGN §12, issue 23): the endpoints a partner registers, the partner's
//! event log (`GET /events`, 30 days) and one delivery per (event, endpoint) with its attempts.
//!
//! Items:
//! - endpoint: `pk = WHEP#{partner}`, `sk = EP#{endpoint_id}`; the partner's endpoint count
//!   `pk = WHEP#{partner}`, `sk = COUNT` moves in the same transaction as a create or a delete,
//!   so two concurrent creates can never pass the limit;
//! - event: `pk = WHEVT#{partner}#{event_id}`, `sk = EVENT`, listed through the lookup index
//!   (`lookup_pk = WHEVTS#{partner}`, `lookup_sk = {occurred_ms:015}#{event_id}`), expiring after
//!   [`EVENT_RETENTION`] (TTL);
//! - delivery: `pk = WHDEL#{endpoint_id}#{event_id}`, `sk = DELIVERY`, listed through the lookup
//!   index (`lookup_pk = WHDELS#{endpoint_id}`); while pending it is in the due index
//!   (`due_shard = whdue#{nn}`, `next_attempt_at`), where the deliverer's sweep finds retries.
//!
//! Leases on a delivery run on the wall clock; when a delivery is due is the deliverer's `now`
//! (the wall clock in AWS, travelled time on the local stack).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::subscriptions::Page;
use super::{Cond, Item, Op, Query, Range, Set, Store, StoreError, Write, epoch, from_item, keys, n, s, to_item};

/// How many endpoints one partner may register.
pub const MAX_ENDPOINTS_PER_PARTNER: u32 = 10;
/// How long the partner's events stay listable and redeliverable.
pub const EVENT_RETENTION: SignedDuration = SignedDuration::from_hours(30 * 24);
/// The attempts a delivery keeps (the newest); the count keeps counting.
pub const ATTEMPTS_KEPT: usize = 30;
const DELIVERY_SHARDS: u32 = 8;
/// How long after its next attempt a pending delivery is kept at the least.
const PENDING_GRACE: SignedDuration = SignedDuration::from_hours(7 * 24);
const COUNT_SK: &str = "COUNT";

/// A signing secret as stored (`whsec_…`). Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredSecret(String);

impl StoredSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the signer and for the one answer that shows it to the partner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One of an endpoint's signing secrets. During a rotation's overlap the old one carries an
/// `expires_at` and both sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecret {
    pub secret: StoredSecret,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    /// Deliveries succeed (or have not failed for long).
    Enabled,
    /// A delivery exhausted its retries: the endpoint is flagged (and alarmed) until one succeeds.
    Failing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub endpoint_id: String,
    pub partner_id: String,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; empty = every type.
    pub event_types: Vec<String>,
    pub secrets: Vec<EndpointSecret>,
    pub status: EndpointStatus,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub version: u64,
}

impl EndpointRecord {
    /// A new endpoint (version 1, enabled) signing with `secret` from `now`; `event_types` empty =
    /// every type.
    pub fn new(
        endpoint_id: impl Into<String>,
        partner_id: impl Into<String>,
        url: impl Into<String>,
        event_types: Vec<String>,
        secret: StoredSecret,
        now: Timestamp,
    ) -> EndpointRecord {
        EndpointRecord {
            endpoint_id: endpoint_id.into(),
            partner_id: partner_id.into(),
            url: url.into(),
            description: None,
            event_types,
            secrets: vec![EndpointSecret { secret, created_at: now, expires_at: None }],
            status: EndpointStatus::Enabled,
            failing_since: None,
            created_at: now,
            version: 1,
        }
    }

    /// Whether it receives events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }

    /// The secrets that sign at `wall_now`: the current one and any still in their overlap.
    pub fn signing_secrets(&self, wall_now: Timestamp) -> Vec<&StoredSecret> {
        self.secrets.iter().filter(|s| s.expires_at.is_none_or(|e| e > wall_now)).map(|s| &s.secret).collect()
    }

    /// The record after a rotation at `wall_now`: `new` signs from now on, the current secret
    /// keeps signing beside it until `wall_now + overlap`, and a secret already on its way out
    /// (an earlier rotation's overlap) stops now — so at most two secrets ever sign, however often
    /// a partner rotates.
    pub fn rotated(&self, new: StoredSecret, wall_now: Timestamp, overlap: SignedDuration) -> EndpointRecord {
        let until = wall_now.checked_add(overlap).unwrap_or(wall_now);
        let mut secrets: Vec<EndpointSecret> = self
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none() && until > wall_now)
            .map(|s| EndpointSecret { expires_at: Some(until), ..s.clone() })
            .collect();
        secrets.push(EndpointSecret { secret: new, created_at: wall_now, expires_at: None });
        EndpointRecord { secrets, version: self.version + 1, ..self.clone() }
    }
}

/// One event as the partner's log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerEvent {
    pub event_id: String,
    pub partner_id: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    /// The JSON body delivered: `{"id", "type", "occurred_at", "data"}`.
    pub payload: String,
    pub received_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted when due.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retries ran out: dead-lettered.
    Failed,
    /// The endpoint was deleted before it was delivered.
    Canceled,
}

/// One try at delivering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at: Timestamp,
    pub duration_ms: u64,
    /// The HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// Why it failed without an answer (timeout, refused, not a public address, …).
    pub error: Option<String>,
    /// The start of the answer's body, truncated.
    pub response_body: String,
}

impl DeliveryAttempt {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub endpoint_id: String,
    pub partner_id: String,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub payload: String,
    pub status: DeliveryStatus,
    /// The newest [`ATTEMPTS_KEPT`] attempts, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    pub attempt_count: u32,
    /// The first attempt of the current retry schedule (a redelivery starts a new one).
    pub retry_started_at: Option<Timestamp>,
    /// When it is next attempted (pending only).
    pub due_at: Option<Timestamp>,
    /// Wall clock, epoch seconds; 0 = not being attempted.
    pub lease_until: i64,
    pub created_at: Timestamp,
    pub version: u64,
}

impl DeliveryRecord {
    /// A pending delivery of `event` to `endpoint`, due at `now`.
    pub fn new(event: &PartnerEvent, endpoint_id: &str, now: Timestamp) -> DeliveryRecord {
        DeliveryRecord {
            endpoint_id: endpoint_id.to_string(),
            partner_id: event.partner_id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
            payload: event.payload.clone(),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            attempt_count: 0,
            retry_started_at: None,
            due_at: Some(now),
            lease_until: 0,
            created_at: now,
            version: 1,
        }
    }

    /// The record with `attempt` logged (the oldest dropped past [`ATTEMPTS_KEPT`]).
    pub fn with_attempt(&self, attempt: DeliveryAttempt) -> DeliveryRecord {
        let mut attempts = self.attempts.clone();
        attempts.push(attempt);
        let excess = attempts.len().saturating_sub(ATTEMPTS_KEPT);
        attempts.drain(..excess);
        DeliveryRecord { attempts, attempt_count: self.attempt_count + 1, ..self.clone() }
    }

    /// Whether a worker holds it at `wall_now`.
    pub fn leased(&self, wall_now: Timestamp) -> bool {
        self.lease_until > wall_now.as_second()
    }
}

fn endpoint_pk(partner: &str) -> String {
    format!("WHEP#{partner}")
}

fn endpoint_sk(id: &str) -> String {
    format!("EP#{id}")
}

fn event_pk(partner: &str, event_id: &str) -> String {
    format!("WHEVT#{partner}#{event_id}")
}

/// The lookup-index partition of a partner's events (page cursors are checked against it).
pub fn events_lookup(partner: &str) -> String {
    format!("WHEVTS#{partner}")
}

fn delivery_pk(endpoint_id: &str, event_id: &str) -> String {
    format!("WHDEL#{endpoint_id}#{event_id}")
}

/// The lookup-index partition of an endpoint's deliveries.
pub fn deliveries_lookup(endpoint_id: &str) -> String {
    format!("WHDELS#{endpoint_id}")
}

fn time_key(at: Timestamp, id: &str) -> String {
    format!("{:015}#{id}", at.as_millisecond().max(0))
}

/// The due-index shard of a delivery: stable, evenly spread.
fn delivery_shard(endpoint_id: &str, event_id: &str) -> String {
    let h = super::sha256_hex(format!("{endpoint_id}#{event_id}").as_bytes());
    let v = u32::from_str_radix(&h[..8], 16).unwrap_or(0) % DELIVERY_SHARDS;
    format!("whdue#{v:02}")
}

/// Every delivery shard, for the sweep.
pub fn delivery_shards() -> Vec<String> {
    (0..DELIVERY_SHARDS).map(|v| format!("whdue#{v:02}")).collect()
}

fn endpoint_item(r: &EndpointRecord) -> Item {
    to_item(r, &endpoint_pk(&r.partner_id), &endpoint_sk(&r.endpoint_id), "webhook_endpoint")
}

fn event_item(e: &PartnerEvent) -> Item {
    let mut item = to_item(e, &event_pk(&e.partner_id, &e.event_id), "EVENT", "partner_event");
    item.insert(keys::LOOKUP_PK.into(), s(&events_lookup(&e.partner_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&time_key(e.occurred_at, &e.event_id)));
    let expires = e.received_at.checked_add(EVENT_RETENTION).unwrap_or(e.received_at);
    item.insert(keys::EXPIRES_AT.into(), n(epoch(expires)));
    item
}

fn delivery_item(d: &DeliveryRecord) -> Item {
    let mut item = to_item(d, &delivery_pk(&d.endpoint_id, &d.event_id), "DELIVERY", "webhook_delivery");
    item.insert(keys::LOOKUP_PK.into(), s(&deliveries_lookup(&d.endpoint_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&time_key(d.occurred_at, &d.event_id)));
    if let (DeliveryStatus::Pending, Some(due)) = (d.status, d.due_at) {
        item.insert(keys::DUE_SHARD.into(), s(&delivery_shard(&d.endpoint_id, &d.event_id)));
        item.insert(keys::NEXT_ATTEMPT_AT.into(), n(epoch(due)));
    }
    // Kept for the retention, and while pending at least a week past its next attempt (a
    // redelivery late in the retention starts a schedule of days).
    let mut expires = d.created_at.checked_add(EVENT_RETENTION).unwrap_or(d.created_at);
    if let (DeliveryStatus::Pending, Some(due)) = (d.status, d.due_at) {
        expires = expires.max(due.checked_add(PENDING_GRACE).unwrap_or(due));
    }
    item.insert(keys::EXPIRES_AT.into(), n(epoch(expires)));
    item
}

/// The item key of an event in the lookup index, as a page cursor names it (a page cut short
/// after this event goes on after it).
pub fn partner_event_position(e: &PartnerEvent) -> Item {
    let mut item = Item::new();
    item.insert(keys::PK.into(), s(&event_pk(&e.partner_id, &e.event_id)));
    item.insert(keys::SK.into(), s("EVENT"));
    item.insert(keys::LOOKUP_PK.into(), s(&events_lookup(&e.partner_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&time_key(e.occurred_at, &e.event_id)));
    item
}

/// A delivery named by the due index or a queue message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryKey {
    pub endpoint_id: String,
    pub event_id: String,
}

impl DeliveryKey {
    fn from_pk(pk: &str) -> Option<DeliveryKey> {
        let (endpoint_id, event_id) = pk.strip_prefix("WHDEL#")?.split_once('#')?;
        Some(DeliveryKey { endpoint_id: endpoint_id.to_string(), event_id: event_id.to_string() })
    }
}

impl Store {
    /// Registers `r` (version 1) if the partner has fewer than [`MAX_ENDPOINTS_PER_PARTNER`];
    /// `Conflict` on the count when it has that many.
    pub async fn create_endpoint(&self, r: &EndpointRecord) -> Result<(), StoreError> {
        let pk = endpoint_pk(&r.partner_id);
        let mut tx = self.tx();
        // The count item appears with the first endpoint (`SET n = n + 1` needs `n` there); two
        // first creates racing both write it new, and one fails as a conflict.
        match self.get(&pk, COUNT_SK).await? {
            None => {
                let mut count = Item::new();
                count.insert(keys::PK.into(), s(&pk));
                count.insert(keys::SK.into(), s(COUNT_SK));
                count.insert(keys::ENTITY.into(), s("webhook_endpoint_count"));
                count.insert("endpoints".into(), n(1));
                tx.push(Write::create(count).failing_with(StoreError::Conflict(format!("{pk}|{COUNT_SK}"))));
            }
            Some(_) => {
                let under_limit = Cond::Cmp("endpoints", Op::Lt, n(MAX_ENDPOINTS_PER_PARTNER));
                tx.push(Write::update_if(&pk, COUNT_SK, vec![Set::Add("endpoints", 1)], under_limit));
            }
        }
        tx.push(Write::create(endpoint_item(r)));
        self.commit(tx).await
    }

    /// How many endpoints the partner has (the count the limit is checked on).
    pub async fn endpoint_count(&self, partner: &str) -> Result<u32, StoreError> {
        let item = self.get(&endpoint_pk(partner), COUNT_SK).await?;
        let count = item.as_ref().and_then(|i| i.get("endpoints")).and_then(|v| v.as_n().ok());
        Ok(count.and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    pub async fn get_endpoint(&self, partner: &str, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        match self.get(&endpoint_pk(partner), &endpoint_sk(id)).await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// The partner's endpoints, oldest first.
    pub async fn endpoints_of(&self, partner: &str) -> Result<Vec<EndpointRecord>, StoreError> {
        self.items_with_prefix(&endpoint_pk(partner), "EP#").await
    }

    /// Writes the next version of an endpoint (rotation, flag), only over the version read.
    pub async fn put_endpoint_next(&self, read_version: u64, next: &EndpointRecord) -> Result<(), StoreError> {
        self.write(Write::put_if(endpoint_item(next), Cond::version(read_version))).await
    }

    /// Deletes an endpoint (as read) and gives its place back, in one transaction.
    pub async fn delete_endpoint(&self, r: &EndpointRecord) -> Result<(), StoreError> {
        let pk = endpoint_pk(&r.partner_id);
        let mut tx = self.tx();
        tx.push(Write::delete_if(&pk, &endpoint_sk(&r.endpoint_id), Some(Cond::version(r.version))));
        tx.push(Write::update_if(&pk, COUNT_SK, vec![Set::Add("endpoints", -1)], Cond::Cmp("endpoints", Op::Gt, n(0))));
        self.commit(tx).await
    }

    /// Logs an event for its partner; `false` when it was logged before (a repeat).
    pub async fn record_partner_event(&self, e: &PartnerEvent) -> Result<bool, StoreError> {
        match self.write(Write::create(event_item(e))).await {
            Ok(()) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_partner_event(&self, partner: &str, event_id: &str) -> Result<Option<PartnerEvent>, StoreError> {
        match self.get(&event_pk(partner, event_id), "EVENT").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// One page of the partner's events that occurred at or after `since`, oldest first.
    pub async fn partner_events(
        &self,
        partner: &str,
        since: Option<Timestamp>,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<PartnerEvent>, StoreError> {
        let mut q =
            Query::index(keys::LOOKUP_INDEX, keys::LOOKUP_PK, &events_lookup(partner)).limit(Some(limit)).start(start);
        if let Some(since) = since {
            q = q.range(keys::LOOKUP_SK, Range::AtLeast(s(&format!("{:015}", since.as_millisecond().max(0)))));
        }
        let (items, next) = self.query_records(&q).await?;
        Ok(Page { items, next })
    }

    /// Creates a delivery; `false` when it exists already.
    pub async fn create_delivery(&self, d: &DeliveryRecord) -> Result<bool, StoreError> {
        match self.write(Write::create(delivery_item(d))).await {
            Ok(()) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        match self.get(&delivery_pk(&key.endpoint_id, &key.event_id), "DELIVERY").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the next version of a delivery over the version read.
    pub async fn put_delivery_next(&self, read_version: u64, next: &DeliveryRecord) -> Result<(), StoreError> {
        self.write(Write::put_if(delivery_item(next), Cond::version(read_version))).await
    }

    /// One page of an endpoint's deliveries, newest event first.
    pub async fn deliveries_of(
        &self,
        endpoint_id: &str,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        let q = Query::index(keys::LOOKUP_INDEX, keys::LOOKUP_PK, &deliveries_lookup(endpoint_id))
            .limit(Some(limit))
            .start(start)
            .backward();
        let (items, next) = self.query_records(&q).await?;
        Ok(Page { items, next })
    }

    /// One page of deliveries of one shard due at or before `now`, earliest first.
    pub async fn due_deliveries(
        &self,
        shard: &str,
        now: Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<DeliveryKey>, StoreError> {
        let (pks, next) = self.due_page(shard, now, limit, start).await?;
        let mut items = Vec::new();
        for pk in pks {
            items.push(DeliveryKey::from_pk(&pk).ok_or_else(|| StoreError::Corrupt {
                key: pk.clone(),
                message: "delivery due index entry is not a delivery".into(),
            })?);
        }
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery put back on a retry schedule late in its 30 days (a redelivery on day 29) is
    /// not removed by TTL while it is still pending: it expires a week after it is next due at the
    /// earliest.
    #[test]
    fn a_pending_delivery_outlives_its_next_attempt_by_a_week() {
        let created: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let event = PartnerEvent {
            event_id: "evt_1".into(),
            partner_id: "p".into(),
            event_type: "payment.failed".into(),
            occurred_at: created,
            payload: "{}".into(),
            received_at: created,
        };
        let mut d = DeliveryRecord::new(&event, "we_1", created);
        d.due_at = Some("2027-01-30T12:00:00Z".parse().unwrap());
        let item = delivery_item(&d);
        let expires: i64 = item[keys::EXPIRES_AT].as_n().unwrap().parse().unwrap();
        let floor: Timestamp = "2027-02-06T12:00:00Z".parse().unwrap();
        assert!(expires >= floor.as_second(), "expires {expires}");
    }
}
