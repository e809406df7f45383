//! Raw PG webhook events, stored first and verified later (DESIGN §3): one conditional put keyed
//! by a dedupe key, so a repeated delivery is `AlreadyExists` (the handler answers 200 anyway).
//! Kept 180 days (TTL). The table's stream hands new `webhook_event` items to verify.
//!
//! Every stored event reaches a final verdict: until it has one it sits in the lookup index
//! under `WHOPEN#{shard}` with `lookup_sk` = when to try it next, so verify's sweep finds the
//! events the stream gave up on ([`Store::due_webhook_events`]); the verdict removes it.
//!
//! Item: `pk = WH#{pg}#{dedupe_key}`, `sk = WH`, `lookup_pk = WHOPEN#{0..WEBHOOK_SHARDS}` while
//! `received`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Cond, Op, Query, Range, Set, Store, StoreError, Write, from_item, keys, n, s, sort_seconds, to_item};
use paycycle_domain::gateway::Pg;

pub const WEBHOOK_RETENTION: SignedDuration = SignedDuration::from_hours(180 * 24);

/// When the sweep first looks at an event the stream has not settled.
pub const WEBHOOK_FIRST_SWEEP: SignedDuration = SignedDuration::from_mins(5);

/// Lookup partitions of unsettled events (so a burst of webhooks never makes one hot key).
pub const WEBHOOK_SHARDS: u32 = 4;

fn open_shard(pk: &str) -> String {
    let h = super::sha256_hex(pk.as_bytes());
    format!("WHOPEN#{}", u32::from_str_radix(&h[..8], 16).unwrap_or(0) % WEBHOOK_SHARDS)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// The PG whose route received it.
    pub pg: Pg,
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
    /// Verifications the sweep tried without a verdict (the PG failed, a record was not there yet).
    #[serde(default)]
    pub attempts: u32,
    /// When the sweep tries it next (while `received`).
    #[serde(default)]
    pub next_try_at: Option<Timestamp>,
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
        pg: Pg,
        dedupe_key: String,
        content_type: &str,
        body: String,
        headers: BTreeMap<String, String>,
        received_at: Timestamp,
    ) -> Self {
        Self {
            pg,
            dedupe_key,
            content_type: content_type.to_string(),
            body,
            headers,
            received_at,
            status: WebhookStatus::Received,
            outcome: None,
            processed_at: None,
            attempts: 0,
            next_try_at: received_at.checked_add(WEBHOOK_FIRST_SWEEP).ok(),
        }
    }

    pub fn pk(&self) -> String {
        format!("WH#{}#{}", self.pg, self.dedupe_key)
    }
}

/// The hash of the stored body: a verbatim repeat of a rejected event is still a duplicate.
const BODY_SHA256: &str = "body_sha256";

const STATUS: &str = "status";

/// What storing a delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new event.
    New,
    /// The dedupe key was taken by an event verify had rejected (a forgery posted first) and this
    /// delivery's body is another: it replaced the rejected one and waits for a verdict of its
    /// own, so a forgery can never shadow the genuine webhook that shares its key.
    Reopened,
}

impl Store {
    /// Stores a webhook event once. A repeat of an event that is received, verified or ignored,
    /// or a verbatim repeat of a rejected one → `AlreadyExists`; another body under the key of a
    /// rejected event replaces it ([`Stored::Reopened`]; verify's sweep takes it, as the stream
    /// announces only new items).
    pub async fn put_webhook_event(&self, event: &WebhookEvent) -> Result<Stored, StoreError> {
        let pk = event.pk();
        let mut item = to_item(event, &pk, "WH", "webhook_event");
        let body_sha256 = super::sha256_hex(event.body.as_bytes());
        item.insert(BODY_SHA256.into(), s(&body_sha256));
        let expires = event.received_at.saturating_add(WEBHOOK_RETENTION).unwrap_or(event.received_at);
        item.insert(keys::EXPIRES_AT.into(), n(expires.as_second()));
        if event.status == WebhookStatus::Received {
            let next = event.next_try_at.unwrap_or(event.received_at);
            item.insert(keys::LOOKUP_PK.into(), s(&open_shard(&pk)));
            item.insert(keys::LOOKUP_SK.into(), s(&sort_seconds(next)));
        }
        // A rejected event with another body (or one stored before bodies were hashed) gives way.
        let other_body = Cond::missing(BODY_SHA256).or(Cond::Cmp(BODY_SHA256, Op::Ne, s(&body_sha256)));
        let free = Cond::Absent.or(Cond::eq(STATUS, s(WebhookStatus::Rejected.as_str())).and(other_body));
        let put = Write::put_if(item, free).failing_with(StoreError::AlreadyExists(pk.clone()));
        let old = self.write_returning_old(put, true).await?;
        Ok(if old.is_some_and(|old| !old.is_empty()) { Stored::Reopened } else { Stored::New })
    }

    pub async fn get_webhook_event(&self, pg: Pg, dedupe_key: &str) -> Result<Option<WebhookEvent>, StoreError> {
        match self.get(&format!("WH#{pg}#{dedupe_key}"), "WH").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Records what verify made of an event (a conditional update: the event must exist). The
    /// stream mapping only passes inserts, so this does not feed verify again.
    pub async fn mark_webhook_event(
        &self,
        pg: Pg,
        dedupe_key: &str,
        status: WebhookStatus,
        outcome: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let pk = format!("WH#{pg}#{dedupe_key}");
        let outcome: String = outcome.chars().take(500).collect();
        let sets = vec![
            Set::Value(STATUS, s(status.as_str())),
            Set::Value("outcome", s(&outcome)),
            Set::Value("processed_at", s(&at.to_string())),
            Set::Remove(keys::LOOKUP_PK),
            Set::Remove(keys::LOOKUP_SK),
        ];
        let mark = Write::update_if(&pk, "WH", sets, Cond::Exists).failing_with(StoreError::NotFound(pk.clone()));
        self.write(mark).await?;
        Ok(())
    }

    /// Puts an event the sweep could not settle back for later (`attempts`, `next_try_at`),
    /// only while it is still `received`.
    pub async fn defer_webhook_event(
        &self,
        event: &WebhookEvent,
        attempts: u32,
        next_try_at: Timestamp,
    ) -> Result<(), StoreError> {
        let pk = event.pk();
        let sets = vec![
            Set::Value("attempts", n(attempts)),
            Set::Value("next_try_at", s(&next_try_at.to_string())),
            Set::Value(keys::LOOKUP_PK, s(&open_shard(&pk))),
            Set::Value(keys::LOOKUP_SK, s(&sort_seconds(next_try_at))),
        ];
        let received = Cond::Exists.and(Cond::eq(STATUS, s(WebhookStatus::Received.as_str())));
        self.write(Write::update_if(&pk, "WH", sets, received).failing_with(StoreError::Conflict(pk.clone()))).await?;
        Ok(())
    }

    /// Events still `received` whose next try is due at `now`: up to `limit` per shard, oldest
    /// first (the index is eventually consistent: an event settled a moment ago may come back,
    /// and verifying it again changes nothing).
    pub async fn due_webhook_events(&self, now: Timestamp, limit: i32) -> Result<Vec<WebhookEvent>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..WEBHOOK_SHARDS {
            let q = Query::index(keys::LOOKUP_INDEX, keys::LOOKUP_PK, &format!("WHOPEN#{shard}"))
                .range(keys::LOOKUP_SK, Range::AtMost(s(&sort_seconds(now))))
                .limit(Some(limit));
            let (page, _) = self.query(&q).await?;
            for item in page {
                let event: WebhookEvent = from_item(item)?;
                if event.status == WebhookStatus::Received {
                    out.push(event);
                }
            }
        }
        Ok(out)
    }
}
