//! `renew`: charges due subscriptions exactly once per period (DESIGN §5), triggered by the
//! EventBridge schedule.
//!
//! One tick: drain leftover outbox events, walk the sharded due index, and for each due
//! subscription — with bounded concurrency, starting nothing new past the deadline — claim it with
//! a lease (two overlapping ticks never both win), write the attempt record first (its deterministic
//! charge id is the PG's `PCD_PAY_OID` / `partnerOrderId`), charge, and commit the outcome in one
//! transaction with its events. An unknown outcome is never charged again blind: the next tick looks
//! it up (Payple by OID), and one unresolved past the review window goes to `needs_review`.
//! StepPay managed subscriptions are never charged here (StepPay renews them).

pub mod fanout;
mod keys;
mod process;

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use lambda_runtime::LambdaEvent;
use paycycle::boot::{Boot, Services};
use paycycle::domain::dunning::DunningPolicy;
use paycycle::events::{Deferred, EventPublisher};
use paycycle::pg::Registry;
use paycycle::store::Store;
use paycycle::store::shard_queue::ShardQueue;
use paycycle::store::subscriptions::due_shards;
use paycycle::store::vault::KeyVault;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use process::{CrashPoint, Outcome};

/// Tunables (environment, with defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `PAYCYCLE_RENEW_CONCURRENCY` (default 16): subscriptions charged at once.
    pub concurrency: usize,
    /// How long a claim holds a subscription (a crashed worker's claim expires after this).
    pub lease: SignedDuration,
    /// When to look up an unknown outcome again.
    pub recheck_after: SignedDuration,
    /// `PAYCYCLE_REVIEW_WINDOW_HOURS` (default 24): unknown for longer → `needs_review`.
    pub review_window: SignedDuration,
    /// `PAYCYCLE_ALLOW_TIME_TRAVEL=true` lets an event carry `{"now": ...}` (local stack and tests).
    pub allow_time_travel: bool,
    pub dunning: DunningPolicy,
    /// Due-index page size.
    pub page_size: i32,
    /// Stop starting new work this long before the Lambda deadline.
    pub deadline_margin: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: SignedDuration::from_mins(5),
            recheck_after: SignedDuration::from_mins(5),
            review_window: SignedDuration::from_hours(24),
            allow_time_travel: false,
            dunning: DunningPolicy::default(),
            page_size: 100,
            deadline_margin: SignedDuration::from_secs(30),
        }
    }
}

/// PG calls on the longest renewal path, each Payple call being a partner auth plus the call: an
/// unknown charge looked up under up to [`paycycle::pg::trace::MAX_LOOKUP_DATES`] send dates (auth + lookup
/// each), not found, re-paid (auth + re-pay), then either the client's confirmation of a decline
/// (auth + lookup) or, on a duplicate OID, the lookups under every date again (`already_sent`).
pub const WORST_PATH_PG_CALLS: i32 = {
    let lookups = 2 * paycycle::pg::trace::MAX_LOOKUP_DATES as i32;
    let repay = 2;
    let confirm_decline = 2;
    let after_duplicate = 2 * (paycycle::pg::trace::MAX_LOOKUP_DATES as i32);
    lookups + repay + if after_duplicate > confirm_decline { after_duplicate } else { confirm_decline }
};
/// The store's part of one renewal (claim, attempt, outcome commit with its retries, events).
pub const STORE_BUDGET: SignedDuration = SignedDuration::from_secs(10);

/// The longest one renewal can take when every PG call runs to the client timeout `pg_total`.
pub fn worst_renewal(pg_total: std::time::Duration) -> SignedDuration {
    let pg = SignedDuration::try_from(pg_total).unwrap_or(SignedDuration::MAX);
    pg.checked_mul(WORST_PATH_PG_CALLS).and_then(|d| d.checked_add(STORE_BUDGET)).unwrap_or(SignedDuration::MAX)
}

impl Settings {
    /// Raises the deadline margin (and the lease) to cover [`worst_renewal`] at the PG client's
    /// timeout: a renewal started before the deadline finishes before Lambda stops it, and its
    /// claim outlives it.
    pub fn fitted_to(mut self, pg_total: std::time::Duration) -> Self {
        let worst = worst_renewal(pg_total);
        self.deadline_margin = self.deadline_margin.max(worst);
        self.lease = self.lease.max(worst.checked_add(STORE_BUDGET).unwrap_or(worst));
        self
    }

    pub fn from_env() -> Self {
        let mut s = Self::default();
        let var = |k: &str| std::env::var(k).ok();
        if let Some(n) =
            var("PAYCYCLE_RENEW_CONCURRENCY").and_then(|v| v.parse::<usize>().ok()).filter(|n| (1..=512).contains(n))
        {
            s.concurrency = n;
        }
        if let Some(h) =
            var("PAYCYCLE_REVIEW_WINDOW_HOURS").and_then(|v| v.parse::<i64>().ok()).filter(|h| (1..=720).contains(h))
        {
            s.review_window = SignedDuration::from_hours(h);
        }
        s.allow_time_travel = var("PAYCYCLE_ALLOW_TIME_TRAVEL").as_deref() == Some("true");
        s
    }
}

/// Everything a tick needs, built once per cold start; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    pub pgs: Registry,
    pub publisher: EventPublisher,
    /// Opens billing keys before a charge or a release.
    pub vault: KeyVault,
    pub settings: Settings,
    /// Test hook: stop processing at this step as if the Lambda died there.
    pub crash_at: Option<CrashPoint>,
    /// `PAYCYCLE_RENEW_SHARD_QUEUE_URL`: when set, the scheduled tick only dispatches the shards
    /// to the workers ([`fanout`]).
    pub shard_queue: Option<ShardQueue>,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        let Services { store, pgs, publisher, vault } = Services::new(&boot);
        let pg_timeout = std::time::Duration::from_millis(boot.config.pg.pg_timeout_ms);
        let shard_queue = std::env::var("PAYCYCLE_RENEW_SHARD_QUEUE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|url| ShardQueue::new(&boot.sdk, url));
        let mut settings = Settings::from_env().fitted_to(pg_timeout);
        if let Some(share) = pgs.in_flight_share() {
            settings.concurrency = settings.concurrency.min(share.max(1));
        }
        Self { store, pgs, publisher, vault, settings, crash_at: None, shard_queue }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("the event's `time` is missing or not an RFC 3339 instant")]
    BadTime,
    #[error("`now` in the event is time travel, allowed only with PAYCYCLE_ALLOW_TIME_TRAVEL=true")]
    TimeTravelNotAllowed,
    #[error("the due-index shards could not be dispatched to the renew workers")]
    DispatchFailed,
}

/// How a failed tick is reported to Lambda (`errorType` is what alarms and logs match on).
impl From<RenewError> for lambda_runtime::Diagnostic {
    fn from(e: RenewError) -> Self {
        let error_type = match e {
            RenewError::BadTime => "RenewBadTime",
            RenewError::TimeTravelNotAllowed => "RenewTimeTravelNotAllowed",
            RenewError::DispatchFailed => "RenewDispatchFailed",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub now: String,
    pub due: u64,
    pub claimed: u64,
    pub charged: u64,
    pub declined: u64,
    pub unknown: u64,
    pub resolved: u64,
    pub needs_review: u64,
    pub canceled: u64,
    pub paused: u64,
    pub skipped: u64,
    pub errors: u64,
    pub outbox_published: u64,
    /// Due subscriptions left for the next tick (or the next worker) because the deadline came.
    pub deferred: u64,
    /// Shard messages queued for the workers (fan-out, [`fanout`]).
    pub dispatched: u64,
    /// The dispatch failed: the tick fails (and is retried).
    #[serde(skip)]
    pub dispatch_failed: bool,
    /// Billing keys of canceled subscriptions released ([`keys`]).
    pub keys_released: u64,
}

impl Report {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Skipped => self.skipped += 1,
            Outcome::Charged => self.charged += 1,
            Outcome::Declined => self.declined += 1,
            Outcome::Unknown => self.unknown += 1,
            Outcome::Resolved => self.resolved += 1,
            Outcome::NeedsReview => self.needs_review += 1,
            Outcome::Canceled => self.canceled += 1,
            Outcome::Paused => self.paused += 1,
            Outcome::Crashed | Outcome::Error | Outcome::NotSent => self.errors += 1,
        }
        if !matches!(o, Outcome::Skipped) {
            self.claimed += 1;
        }
    }

    /// The tick's counts by metric name, as the template's alarms read them (`NeedsReview`,
    /// `Declined`; dimension `Function` = `renew`).
    pub fn metric_counts(&self) -> [(&'static str, u64); 11] {
        [
            ("Due", self.due),
            ("Claimed", self.claimed),
            ("Charged", self.charged),
            ("Declined", self.declined),
            ("Unknown", self.unknown),
            ("Resolved", self.resolved),
            ("NeedsReview", self.needs_review),
            ("Skipped", self.skipped),
            ("Errors", self.errors),
            ("Deferred", self.deferred),
            ("Dispatched", self.dispatched),
        ]
    }

    /// Counts the tick in the function's EMF metrics ([`paycycle::metrics`]).
    pub fn record_metrics(&self) {
        for (name, value) in self.metric_counts() {
            paycycle::metrics::count("renew", name, value);
        }
    }
}

/// How late a scheduled tick may start: EventBridge (and Lambda's async queue) can hold an event
/// for hours; a tick that old would bill with a stale `time`, and the next one is minutes away.
pub const MAX_TICK_AGE: SignedDuration = SignedDuration::from_mins(10);

/// Whether the event's `time` is older than [`MAX_TICK_AGE`] by the wall clock (`wall_now`). An
/// explicit `now` under time travel (local stack and tests) is never stale; without the flag it
/// is refused anyway.
pub fn stale_event(payload: &Value, settings: &Settings, wall_now: Timestamp) -> bool {
    if settings.allow_time_travel && payload.get("now").is_some_and(|v| !v.is_null()) {
        return false;
    }
    let time = payload.get("time").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok());
    time.is_some_and(|t| wall_now.duration_since(t) > MAX_TICK_AGE)
}

/// The tick's `now`: the event's `time`, or (only with time travel allowed) its `now`.
pub fn tick_time(payload: &Value, settings: &Settings) -> Result<Timestamp, RenewError> {
    paycycle::schedule::tick_time(payload, settings.allow_time_travel).map_err(|e| match e {
        paycycle::schedule::TickTimeError::TimeTravelNotAllowed => RenewError::TimeTravelNotAllowed,
        paycycle::schedule::TickTimeError::BadTime => RenewError::BadTime,
    })
}

/// One scheduled tick, or (fan-out) one batch of shard work from the shard queue.
pub async fn handler(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, RenewError> {
    if fanout::is_shard_batch(&event.payload) {
        let deadline = paycycle::schedule::stop_by(event.context.deadline, deps.settings.deadline_margin);
        return Ok(fanout::worker(deps, &event.payload, deadline).await);
    }
    let now = tick_time(&event.payload, &deps.settings)?;
    if stale_event(&event.payload, &deps.settings, Timestamp::now()) {
        // Dropped, not failed: a retry would be as stale, and the next tick is minutes away.
        tracing::warn!(time = %now, "renew tick event is stale; dropped");
        return Ok(serde_json::json!({"now": now.to_string(), "dropped": "stale_event"}));
    }
    let deadline = paycycle::schedule::stop_by(event.context.deadline, deps.settings.deadline_margin);
    // The schedule event's id deduplicates its dispatch (EventBridge delivers at least once).
    let tick_id = event.payload["id"].as_str().map_or_else(|| format!("tick-{}", now.as_second()), str::to_string);
    let report = tick_as(deps, &tick_id, now, deadline).await;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "renew tick");
    report.record_metrics();
    if report.dispatch_failed {
        return Err(RenewError::DispatchFailed);
    }
    Ok(serde_json::to_value(&report).unwrap_or_default())
}

/// Runs one tick at `now`, starting no new work after `deadline` (real time). With a shard queue
/// it only dispatches (one message per shard, [`fanout`]); without one it walks every shard itself.
pub async fn tick(deps: &Deps, now: Timestamp, deadline: Option<Timestamp>) -> Report {
    tick_as(deps, &format!("tick-{}", now.as_second()), now, deadline).await
}

/// [`tick`] for the schedule event `tick_id` (what deduplicates a dispatch).
pub async fn tick_as(deps: &Deps, tick_id: &str, now: Timestamp, deadline: Option<Timestamp>) -> Report {
    let mut report = Report { now: now.to_string(), ..Report::default() };
    match deps.publisher.drain(&deps.store, 500).await {
        Ok(r) => report.outbox_published = r.published as u64,
        Err(e) => tracing::warn!(error = %e, "outbox drain failed"),
    }
    if let Some(queue) = &deps.shard_queue {
        match fanout::dispatch(queue, tick_id, now).await {
            Ok(n) => report.dispatched = n,
            Err(e) => {
                // The handler fails the tick for it: Lambda retries it (the event id deduplicates
                // what was queued already) and RenewErrorsAlarm pages a person.
                tracing::error!(error = %e, "shard dispatch failed: the tick fails, and is retried");
                report.dispatch_failed = true;
                report.errors += 1;
            }
        }
    } else {
        let mut walk = Walk::new(deps, now, deadline, false);
        for shard in due_shards() {
            walk.shard(&shard, None, &mut report).await;
        }
        walk.finish(&mut report).await;
    }
    report.keys_released = keys::release_keys(deps, now, deadline).await;
    report
}

/// Walks due-index shards at `now` with bounded concurrency, starting nothing past `deadline`.
/// The renewals' events are committed with them (outbox) and published a page at a time, off
/// their critical path.
pub(crate) struct Walk<'d> {
    deps: &'d Deps,
    /// `deps` with a publisher that leaves committed events in `events` for the page's batch.
    task_deps: Deps,
    events: Deferred,
    now: Timestamp,
    deadline: Option<Timestamp>,
    owner: String,
    semaphore: Arc<Semaphore>,
    tasks: JoinSet<Outcome>,
    /// The page batches being published (events each).
    publishing: JoinSet<usize>,
    /// A worker hands the rest of a shard over at its deadline ([`Stopped::At`]); the single
    /// tick only counts what it leaves for the next tick.
    hand_over: bool,
    /// Renewals started by this walk.
    pub(crate) started: u64,
}

/// Where a shard's walk stopped.
pub(crate) enum Stopped {
    /// The shard is done (or its query failed: what is left stays due for the next tick).
    Done,
    /// The deadline came: walk on from this page (`None`: the shard's beginning).
    At(Option<paycycle::store::Item>),
}

impl<'d> Walk<'d> {
    pub(crate) fn new(deps: &'d Deps, now: Timestamp, deadline: Option<Timestamp>, hand_over: bool) -> Self {
        let events = Deferred::default();
        let task_deps = Deps { publisher: deps.publisher.deferring(&events), ..deps.clone() };
        Self {
            hand_over,
            started: 0,
            deps,
            task_deps,
            events,
            publishing: JoinSet::new(),
            now,
            deadline,
            owner: format!("renew-{}-{}", std::process::id(), Timestamp::now().as_nanosecond()),
            semaphore: Arc::new(Semaphore::new(deps.settings.concurrency)),
            tasks: JoinSet::new(),
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Timestamp::now() >= d)
    }

    /// Walks `shard` from page `start`; the renewals started run on in the walk's tasks.
    pub(crate) async fn shard(
        &mut self,
        shard: &str,
        mut start: Option<paycycle::store::Item>,
        report: &mut Report,
    ) -> Stopped {
        loop {
            let page = match self
                .deps
                .store
                .due_subscription_records(shard, self.now, self.deps.settings.page_size, start.clone())
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(shard, error = %e, "due query failed");
                    report.errors += 1;
                    return Stopped::Done;
                }
            };
            for (i, sub) in page.items.iter().enumerate() {
                report.due += 1;
                // Checked again once a slot is free: waiting for one can take a renewal's length.
                let permit = match self.past_deadline() {
                    false => Some(self.semaphore.clone().acquire_owned().await.expect("semaphore is never closed")),
                    true => None,
                };
                let Some(permit) = permit.filter(|_| !self.past_deadline()) else {
                    report.deferred += 1;
                    if self.hand_over {
                        let rest = (page.items.len() - i - 1) as u64;
                        (report.due, report.deferred) = (report.due + rest, report.deferred + rest);
                        return Stopped::At(start);
                    }
                    continue;
                };
                self.started += 1;
                let (deps, owner, sub, now) = (self.task_deps.clone(), self.owner.clone(), sub.clone(), self.now);
                self.tasks.spawn(async move {
                    let outcome = process::renew_one(&deps, &sub, now, &owner).await;
                    drop(permit);
                    outcome
                });
                while let Some(done) = self.tasks.try_join_next() {
                    report.add(&done.unwrap_or(Outcome::Error));
                }
            }
            self.publish_events();
            match page.next {
                Some(k) => start = Some(k),
                None => return Stopped::Done,
            }
        }
    }

    /// Publishes the events committed so far in the background: one PutEvents per 10, and their
    /// outbox items deleted in batches. What fails stays in the outbox for the next drain.
    fn publish_events(&mut self) {
        let events = self.events.take();
        if events.is_empty() {
            return;
        }
        let (publisher, store) = (self.deps.publisher.clone(), self.deps.store.clone());
        self.publishing.spawn(async move {
            match publisher.flush(&store, &events).await {
                Ok(r) => r.published,
                Err(e) => {
                    tracing::warn!(error = %e, "events stay in the outbox for the next drain");
                    0
                }
            }
        });
    }

    /// Waits for the renewals started, then publishes what they committed.
    pub(crate) async fn finish(mut self, report: &mut Report) {
        while let Some(done) = self.tasks.join_next().await {
            report.add(&done.unwrap_or(Outcome::Error));
        }
        self.publish_events();
        while let Some(published) = self.publishing.join_next().await {
            report.outbox_published += published.unwrap_or(0) as u64;
        }
    }
}
