//! `deliver` (DESIGN §12, issue 23): paycycle's events to the partners' HTTPS endpoints.
//!
//! Three triggers, one binary:
//! - the **events queue** (fed by an EventBridge rule on the bus): each event is logged for its
//!   partner (`GET /events`) and fanned out into one delivery per matching endpoint, each sent to
//!   the deliveries queue as its own message ([`fan_out`]);
//! - the **deliveries queue**: one attempt per message ([`attempt`]);
//! - a **schedule** (every minute): the retries that are due ([`sweep`]). Retries wait in the
//!   table's due index, not in SQS, so the local stack can travel days ahead in one call.
//!
//! A delivery is signed with the Standard Webhooks scheme (`webhook-id` = the event id, the
//! receiver's dedupe key), retried with exponential backoff and jitter for [`RETRY_WINDOW`], each
//! attempt logged, then dead-lettered and its endpoint flagged. Delivery is at least once and
//! in no particular order: payloads carry the subscription's `version`.

pub mod sender;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use jiff::{SignedDuration, Timestamp};
use lambda_runtime::LambdaEvent;
use paycycle::config::WebhookConfig;
use paycycle::standard_webhooks::{SigningSecret, sign};
use paycycle::store::delivery_queue::DeliveryQueue;
use paycycle::store::partner_webhooks::{
    DeliveryAttempt, DeliveryKey, DeliveryRecord, DeliveryStatus, EndpointRecord, EndpointStatus, PartnerEvent,
    delivery_shards,
};
use paycycle::store::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use sender::Sender;

/// How long a failing delivery keeps being retried (Stripe retries for 3 days, Toss for 3 days
/// 19 hours): its last attempt is at least this long after its first.
pub const RETRY_WINDOW: SignedDuration = SignedDuration::from_hours(3 * 24 + 12);
/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: SignedDuration = SignedDuration::from_secs(30);
pub const MAX_DELAY: SignedDuration = SignedDuration::from_hours(6);
/// How long an attempt holds its delivery (wall clock): more than the HTTP timeout and the writes.
pub const LEASE: SignedDuration = SignedDuration::from_secs(60);
/// What an attempt may take at most: the HTTP timeout and the writes around it.
pub const ATTEMPT_BUDGET: SignedDuration = SignedDuration::from_secs(20);

#[derive(Clone, Debug)]
pub struct Settings {
    /// The local stack and tests: a scheduled event may carry `{"now": ...}`.
    pub allow_time_travel: bool,
    /// Attempts a sweep runs at once.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { allow_time_travel: false, concurrency: 16 }
    }
}

#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    pub queue: DeliveryQueue,
    /// Where a delivery that ran out of retries goes (the DLQ the alarm watches).
    pub dead_letters: Option<DeliveryQueue>,
    pub sender: Sender,
    pub settings: Settings,
}

impl Deps {
    pub fn new(config: &WebhookConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self {
            store: Store::new(sdk, &config.table),
            queue: DeliveryQueue::new(sdk, &config.delivery_queue_url),
            dead_letters: config.dead_letter_queue_url.as_ref().map(|url| DeliveryQueue::new(sdk, url)),
            sender: Sender::new(config.allow_time_travel),
            settings: Settings { allow_time_travel: config.allow_time_travel, ..Settings::default() },
        }
    }
}

/// Why a scheduled sweep could not run: its event's time ([`paycycle::schedule::tick_time`]).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DeliverError(#[from] pub paycycle::schedule::TickTimeError);

impl From<DeliverError> for lambda_runtime::Diagnostic {
    fn from(e: DeliverError) -> Self {
        lambda_runtime::Diagnostic { error_type: e.0.kind().into(), error_message: e.to_string() }
    }
}

/// What one message or sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: u64,
    pub repeated_events: u64,
    pub queued: u64,
    pub attempted: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    /// Due but left to the next sweep (the Lambda deadline was near).
    pub deferred: u64,
    pub errors: u64,
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.events += other.events;
        self.repeated_events += other.repeated_events;
        self.queued += other.queued;
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.failed_attempts += other.failed_attempts;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
        self.deferred += other.deferred;
        self.errors += other.errors;
    }
}

/// The Lambda entry point: an SQS batch (events or deliveries) or the scheduled sweep.
pub async fn handler(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, DeliverError> {
    if event.payload.get("Records").is_some() {
        let batch: SqsEvent = match serde_json::from_value(event.payload) {
            Ok(b) => b,
            Err(e) => {
                // Not retryable: the same bytes would fail the same way.
                tracing::error!(error = %e, "an SQS batch that does not parse");
                return Ok(serde_json::json!({"batchItemFailures": []}));
            }
        };
        let response = on_batch(deps, batch, Timestamp::now()).await;
        return Ok(serde_json::to_value(response).unwrap_or_default());
    }
    let now = tick_time(&event.payload, &deps.settings)?;
    // No attempt starts unless it can finish (its whole HTTP timeout and the writes) before the
    // Lambda deadline.
    let deadline = paycycle::schedule::stop_by(event.context.deadline, ATTEMPT_BUDGET);
    let report = sweep(deps, now, deadline).await;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "deliver sweep");
    Ok(serde_json::to_value(&report).unwrap_or_default())
}

/// The sweep's `now`: the event's `time`, or (only with time travel allowed) its `now`.
pub fn tick_time(payload: &Value, settings: &Settings) -> Result<Timestamp, DeliverError> {
    Ok(paycycle::schedule::tick_time(payload, settings.allow_time_travel)?)
}

/// One SQS batch: each message is an EventBridge event (fan out) or a delivery (attempt). A
/// message that fails is reported for SQS to deliver again; the others are done.
pub async fn on_batch(deps: &Deps, batch: SqsEvent, now: Timestamp) -> SqsBatchResponse {
    let mut tasks: JoinSet<(Option<String>, Result<Report, StoreError>)> = JoinSet::new();
    for message in batch.records {
        let deps = deps.clone();
        tasks.spawn(async move {
            let id = message.message_id.clone();
            (id, on_message(&deps, &message, now).await)
        });
    }
    let mut response = SqsBatchResponse::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, Ok(_))) => {}
            Ok((id, Err(e))) => {
                tracing::warn!(message_id = ?id, error = %e, "message not processed; SQS delivers it again");
                response.add_failure(id.unwrap_or_default());
            }
            Err(e) => tracing::error!(error = %e, "a message task panicked"),
        }
    }
    response
}

async fn on_message(deps: &Deps, message: &SqsMessage, now: Timestamp) -> Result<Report, StoreError> {
    let body = message.body.as_deref().unwrap_or_default();
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        tracing::error!(message_id = ?message.message_id, "a message that is not JSON; dropped");
        return Ok(Report { skipped: 1, ..Report::default() });
    };
    if value.get("detail-type").is_some() {
        return fan_out(deps, &value, now).await;
    }
    match serde_json::from_value::<DeliveryKey>(value) {
        Ok(key) => attempt(deps, &key, now).await,
        Err(_) => {
            tracing::error!(message_id = ?message.message_id, "a message that is neither an event nor a delivery; dropped");
            Ok(Report { skipped: 1, ..Report::default() })
        }
    }
}

/// The partner's event from an EventBridge event (`detail` = the outbox's JSON).
pub fn partner_event(envelope: &Value, received_at: Timestamp) -> Option<PartnerEvent> {
    let detail = envelope.get("detail")?;
    let partner_id = detail.pointer("/data/partner_id")?.as_str()?.to_string();
    Some(PartnerEvent {
        event_id: detail.get("id")?.as_str()?.to_string(),
        partner_id,
        event_type: detail.get("type")?.as_str()?.to_string(),
        occurred_at: detail.get("occurred_at")?.as_str()?.parse().ok()?,
        payload: detail.to_string(),
        received_at,
    })
}

/// Logs the event for its partner and queues one delivery per endpoint that wants it. Repeats
/// (EventBridge and SQS deliver at least once) find the deliveries there and queue only those
/// never attempted.
pub async fn fan_out(deps: &Deps, envelope: &Value, now: Timestamp) -> Result<Report, StoreError> {
    let Some(event) = partner_event(envelope, now) else {
        tracing::error!("an event without id, type, occurred_at or data.partner_id; dropped");
        return Ok(Report { skipped: 1, ..Report::default() });
    };
    let mut report = Report::default();
    if deps.store.record_partner_event(&event).await? {
        report.events = 1;
    } else {
        report.repeated_events = 1;
    }
    let mut to_queue = Vec::new();
    for endpoint in deps.store.endpoints_of(&event.partner_id).await? {
        if !endpoint.wants(&event.event_type) {
            continue;
        }
        let delivery = DeliveryRecord::new(&event, &endpoint.endpoint_id, now);
        let key = DeliveryKey { endpoint_id: endpoint.endpoint_id.clone(), event_id: event.event_id.clone() };
        let queue = deps.store.create_delivery(&delivery).await?
            || deps
                .store
                .get_delivery(&key)
                .await?
                .is_some_and(|d| d.status == DeliveryStatus::Pending && d.attempt_count == 0);
        if queue {
            to_queue.push(key);
        }
    }
    deps.queue.send(&to_queue).await?;
    report.queued = to_queue.len() as u64;
    Ok(report)
}

/// The delay before retry `n` (1 = the first retry): [`FIRST_DELAY`] doubled each time up to
/// [`MAX_DELAY`], then drawn uniformly from its upper half so that endpoints failing together do
/// not come back together.
pub fn backoff(n: u32, random: u32) -> SignedDuration {
    let exp = FIRST_DELAY.as_secs().saturating_mul(1i64 << n.saturating_sub(1).min(20));
    let delay = exp.min(MAX_DELAY.as_secs());
    let half = delay / 2;
    SignedDuration::from_secs(half + i64::from(random) % (delay - half + 1))
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    u32::from_le_bytes(bytes)
}

/// What the delivery becomes after `attempt` at `now`.
pub fn after_attempt(
    claimed: &DeliveryRecord,
    attempt: DeliveryAttempt,
    now: Timestamp,
    random: u32,
) -> DeliveryRecord {
    let succeeded = attempt.succeeded();
    let started = claimed.retry_started_at.unwrap_or(now);
    let mut next = claimed.with_attempt(attempt);
    next.retry_started_at = Some(started);
    next.lease_until = 0;
    next.version = claimed.version + 1;
    if succeeded {
        next.status = DeliveryStatus::Delivered;
        next.due_at = None;
    } else if now.duration_since(started) >= RETRY_WINDOW {
        next.status = DeliveryStatus::Failed;
        next.due_at = None;
    } else {
        let failures_in_schedule = next.attempts.iter().rev().take_while(|a| !a.succeeded() && a.at >= started).count();
        let delay = backoff(u32::try_from(failures_in_schedule).unwrap_or(u32::MAX), random);
        next.due_at = Some(now.checked_add(delay).unwrap_or(now));
    }
    next
}

/// Attempts one delivery if it is still pending, due at `now` and not held by another attempt.
pub async fn attempt(deps: &Deps, key: &DeliveryKey, now: Timestamp) -> Result<Report, StoreError> {
    let skipped = Ok(Report { skipped: 1, ..Report::default() });
    let wall = Timestamp::now();
    let Some(read) = deps.store.get_delivery(key).await? else { return skipped };
    let due = read.due_at.is_some_and(|d| d <= now);
    if read.status != DeliveryStatus::Pending || !due || read.leased(wall) {
        return skipped;
    }
    let lease_end = wall.checked_add(LEASE).unwrap_or(wall);
    let claimed = DeliveryRecord { lease_until: lease_end.as_second(), version: read.version + 1, ..read.clone() };
    match deps.store.put_delivery_next(read.version, &claimed).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return skipped,
        Err(e) => return Err(e),
    }
    let Some(endpoint) = deps.store.get_endpoint(&claimed.partner_id, &claimed.endpoint_id).await? else {
        let canceled = DeliveryRecord {
            status: DeliveryStatus::Canceled,
            due_at: None,
            lease_until: 0,
            version: claimed.version + 1,
            ..claimed.clone()
        };
        deps.store.put_delivery_next(claimed.version, &canceled).await?;
        return skipped;
    };
    let result = send(deps, &endpoint, &claimed, now, wall).await;
    let next = after_attempt(&claimed, result, now, random_u32());
    // Dead-lettered and flagged before the delivery is written `failed`: if this fails, the
    // message is retried and the delivery (still pending, its lease lapsing) is attempted again —
    // a second dead letter is harmless, a lost one is not.
    if next.status == DeliveryStatus::Failed {
        dead_letter(deps, key, &endpoint, now).await?;
    }
    deps.store.put_delivery_next(claimed.version, &next).await?;
    let mut report = Report { attempted: 1, ..Report::default() };
    match next.status {
        DeliveryStatus::Delivered => {
            report.delivered = 1;
            if endpoint.status == EndpointStatus::Failing {
                flag_endpoint(deps, &endpoint, None).await;
            }
        }
        DeliveryStatus::Failed => {
            report.failed_attempts = 1;
            report.dead_lettered = 1;
        }
        _ => report.failed_attempts = 1,
    }
    Ok(report)
}

/// Signs and POSTs the delivery's payload (timestamp: the wall clock, which the receiver checks
/// against its own).
async fn send(
    deps: &Deps,
    endpoint: &EndpointRecord,
    d: &DeliveryRecord,
    now: Timestamp,
    wall: Timestamp,
) -> DeliveryAttempt {
    let secrets: Vec<SigningSecret> =
        endpoint.signing_secrets(wall).into_iter().filter_map(|s| SigningSecret::parse(s.expose()).ok()).collect();
    let refs: Vec<&SigningSecret> = secrets.iter().collect();
    let signed = match sign(&refs, &d.event_id, wall.as_second(), &d.payload) {
        Ok(signed) => signed,
        Err(e) => {
            tracing::error!(endpoint_id = %endpoint.endpoint_id, error = %e, "endpoint has no usable signing secret");
            return DeliveryAttempt {
                at: now,
                duration_ms: 0,
                status_code: None,
                error: Some("no signing secret".into()),
                response_body: String::new(),
            };
        }
    };
    deps.sender.post(&endpoint.url, &signed.headers(), &d.payload, now).await
}

/// Dead-letters a delivery that ran out of retries and flags its endpoint.
async fn dead_letter(
    deps: &Deps,
    key: &DeliveryKey,
    endpoint: &EndpointRecord,
    now: Timestamp,
) -> Result<(), StoreError> {
    tracing::warn!(
        metric = "webhook_endpoint_failing",
        endpoint_id = %endpoint.endpoint_id,
        partner_id = %endpoint.partner_id,
        event_id = %key.event_id,
        "a delivery ran out of retries: dead-lettered, endpoint flagged"
    );
    if let Some(dlq) = &deps.dead_letters {
        dlq.send(std::slice::from_ref(key)).await?;
    }
    if endpoint.status != EndpointStatus::Failing {
        flag_endpoint(deps, endpoint, Some(now)).await;
    }
    Ok(())
}

/// Sets (`Some`) or clears (`None`) an endpoint's failing flag, on the endpoint as it is now: a
/// change made meanwhile (a rotation during the attempt) is read again, not overwritten, and the
/// flag not dropped. A deleted endpoint needs no flag.
async fn flag_endpoint(deps: &Deps, read: &EndpointRecord, failing_since: Option<Timestamp>) {
    let status = if failing_since.is_some() { EndpointStatus::Failing } else { EndpointStatus::Enabled };
    let mut current = read.clone();
    for _ in 0..3 {
        if current.status == status {
            return;
        }
        let next = EndpointRecord { status, failing_since, version: current.version + 1, ..current.clone() };
        match deps.store.put_endpoint_next(current.version, &next).await {
            Ok(()) => return,
            Err(StoreError::Conflict(_)) => match deps.store.get_endpoint(&read.partner_id, &read.endpoint_id).await {
                Ok(Some(fresh)) => current = fresh,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(endpoint_id = %read.endpoint_id, error = %e, "endpoint flag not written");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(endpoint_id = %read.endpoint_id, error = %e, "endpoint flag not written");
                return;
            }
        }
    }
    tracing::warn!(endpoint_id = %read.endpoint_id, "endpoint flag not written: it kept changing");
}

/// Attempts every delivery due at `now`, [`Settings::concurrency`] at a time, the shards taken in
/// turn (one busy shard cannot starve the others), starting none after `deadline` (wall clock):
/// what is left is the next sweep's.
pub async fn sweep(deps: &Deps, now: Timestamp, deadline: Option<Timestamp>) -> Report {
    let mut report = Report::default();
    let semaphore = Arc::new(Semaphore::new(deps.settings.concurrency.max(1)));
    let mut tasks: JoinSet<Result<Report, StoreError>> = JoinSet::new();
    let past_deadline = || deadline.is_some_and(|d| Timestamp::now() >= d);
    let mut shards: Vec<(String, Option<paycycle::store::Item>)> =
        delivery_shards().into_iter().map(|s| (s, None)).collect();
    while !shards.is_empty() {
        let mut next_round = Vec::new();
        for (shard, start) in shards {
            let page = match deps.store.due_deliveries(&shard, now, 25, start).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(shard, error = %e, "due deliveries query failed");
                    report.errors += 1;
                    continue;
                }
            };
            for key in page.items {
                if past_deadline() {
                    report.deferred += 1;
                    continue;
                }
                let permit = semaphore.clone().acquire_owned().await.expect("semaphore is never closed");
                // Waiting for a slot can take an attempt's whole length: look at the clock again.
                if past_deadline() {
                    report.deferred += 1;
                    continue;
                }
                let deps = deps.clone();
                tasks.spawn(async move {
                    let done = attempt(&deps, &key, now).await;
                    drop(permit);
                    done
                });
            }
            if let Some(next) = page.next {
                next_round.push((shard, Some(next)));
            }
        }
        shards = next_round;
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(r)) => report.add(&r),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a due delivery was not attempted; the next sweep tries again");
                report.errors += 1;
            }
            Err(_) => report.errors += 1,
        }
    }
    report
}

#[cfg(test)]
mod tests;
