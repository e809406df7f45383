//! Publishes outbox events to the EventBridge bus (`source` = `paycycle`, `detail-type` per
//! DESIGN §7). EventBridge can accept part of a batch: each entry's result is checked, and only the
//! accepted events are deleted from the outbox; the rest stay for the next drain.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::checkouts::CheckoutRecord;
use crate::outbox::{OutboxEvent, subscription_events};
use crate::payments::{PaymentRecord, RefundRecord};
use crate::subscriptions::SubscriptionRecord;
use crate::{Store, StoreError, Tx};
use paycycle_domain::attempt::{Attempt, AttemptStatusKind};
use paycycle_domain::events::EventKind;

/// How a transition writes the subscription.
#[derive(Clone, Copy, Debug)]
pub enum SubscriptionWrite<'a> {
    /// A subscription that did not exist (a checkout's activation).
    New,
    /// The next version of the record as read, under the lease of `lease_owner` when one is held
    /// (renew), else on the version alone.
    Next { lease_owner: Option<&'a str> },
    /// A lifecycle change of `read` (cancel, pause, resume, plan): no renewal may be in flight
    /// (`Tx::put_subscription_change`); `at` is the wall clock its lease check uses.
    Change { read: &'a SubscriptionRecord, at: jiff::Timestamp },
    /// A person's resolution of `read`'s charge in review: on the version read, and only while no
    /// renew lease is live on the wall clock `at` (renew may be looking the charge up after a PG
    /// hint). The attempt's own conditional write guards the charge.
    Resolve { read: &'a SubscriptionRecord, at: jiff::Timestamp },
}

/// One subscription transition to commit ([`EventPublisher::commit_transition`]).
#[derive(Clone, Copy, Debug)]
pub struct TransitionCommit<'a> {
    /// The subscription as the transition leaves it.
    pub next: &'a SubscriptionRecord,
    pub write: SubscriptionWrite<'a>,
    /// The transition's events (domain `Transition::events`, plus any the caller adds).
    pub kinds: &'a [EventKind],
    /// The payment the transition is about: named by its events, and written new with it when
    /// `payment_is_new` (not when it was recorded before).
    pub payment: Option<&'a PaymentRecord>,
    pub payment_is_new: bool,
    /// The renewal attempt's next state, written only if its stored status is still the one read.
    pub attempt: Option<(&'a Attempt, AttemptStatusKind)>,
    /// A refund reserved with the change (a refund that cancels the subscription).
    pub refund: Option<&'a RefundRecord>,
    /// The checkout the transition completes (its next version), written first.
    pub checkout: Option<&'a CheckoutRecord>,
    /// Billing time: when the events occurred.
    pub now: jiff::Timestamp,
}

impl<'a> TransitionCommit<'a> {
    /// A transition of `next` written as `write`, with nothing else.
    pub fn new(
        next: &'a SubscriptionRecord,
        write: SubscriptionWrite<'a>,
        kinds: &'a [EventKind],
        now: jiff::Timestamp,
    ) -> Self {
        Self {
            next,
            write,
            kinds,
            payment: None,
            payment_is_new: false,
            attempt: None,
            refund: None,
            checkout: None,
            now,
        }
    }

    /// With the payment it records (new).
    pub fn paid(self, payment: &'a PaymentRecord) -> Self {
        Self { payment: Some(payment), payment_is_new: true, ..self }
    }
}

pub const SOURCE: &str = "paycycle";

/// The source of events for the operator rather than the partners (a reconciliation's report).
pub const OPERATIONS_SOURCE: &str = "paycycle.operations";

/// PutEvents takes at most 10 entries per call.
const BATCH: usize = 10;

#[derive(Clone, Debug)]
pub struct EventPublisher {
    bus: Bus,
    calls: Option<std::sync::Arc<crate::aws::calls::CallLog>>,
    /// Set on a [`EventPublisher::deferring`] copy: committed events wait here for the caller's
    /// batched [`Deferred::flush`] instead of being published one commit at a time.
    deferred: Option<Deferred>,
}

/// Events committed (in the outbox) but not published yet: renew publishes a page's events in
/// batches off a renewal's critical path. Whatever a flush does not get to stays in the outbox,
/// and the next drain publishes it (events are at least once, with stable ids).
#[derive(Clone, Debug, Default)]
pub struct Deferred(std::sync::Arc<std::sync::Mutex<Vec<OutboxEvent>>>);

impl Deferred {
    fn push(&self, events: &[OutboxEvent]) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(events);
    }

    /// The events waiting, taken.
    pub fn take(&self) -> Vec<OutboxEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Where events go: an EventBridge bus, or a list in memory (beside [`Store::in_memory`]).
#[derive(Clone, Debug)]
enum Bus {
    EventBridge { client: Client, name: String },
    Memory(std::sync::Arc<std::sync::Mutex<Vec<OutboxEvent>>>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    pub published: usize,
    /// (event id, EventBridge error code) of entries that were not accepted.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventPublisher {
    pub fn new(sdk: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        let calls = crate::aws::calls::CallLog::from_env();
        let mut config = aws_sdk_eventbridge::config::Builder::from(sdk);
        if let Some(log) = &calls {
            config = config.interceptor(log.interceptor());
        }
        Self {
            bus: Bus::EventBridge { client: Client::from_conf(config.build()), name: bus.into() },
            calls,
            deferred: None,
        }
    }

    /// A publisher that keeps what it publishes in memory ([`EventPublisher::published`]).
    pub fn in_memory() -> Self {
        Self { bus: Bus::Memory(std::sync::Arc::default()), calls: None, deferred: None }
    }

    /// Everything an in-memory publisher published, in order (empty for EventBridge).
    pub fn published(&self) -> Vec<OutboxEvent> {
        match &self.bus {
            Bus::Memory(sent) => sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            Bus::EventBridge { .. } => Vec::new(),
        }
    }

    /// A copy of this publisher whose commits leave their events in `deferred` for the caller to
    /// publish ([`EventPublisher::flush`]) in batches.
    pub fn deferring(&self, deferred: &Deferred) -> Self {
        Self { deferred: Some(deferred.clone()), ..self.clone() }
    }

    /// The calls this publisher made, when `PAYCYCLE_RECORD_AWS_CALLS` is set (the IAM test).
    pub fn calls(&self) -> Option<&std::sync::Arc<crate::aws::calls::CallLog>> {
        self.calls.as_ref()
    }

    /// Sends `events`; returns which were accepted. A call that fails as a whole accepts none.
    pub async fn send(&self, events: &[OutboxEvent]) -> (Vec<OutboxEvent>, Vec<(String, String)>) {
        self.send_as(SOURCE, events).await
    }

    /// Sends events for the operator (source [`OPERATIONS_SOURCE`]: the partner-webhook rule,
    /// which matches `paycycle`, never sees them); returns which were accepted.
    pub async fn send_operational(&self, events: &[OutboxEvent]) -> (Vec<OutboxEvent>, Vec<(String, String)>) {
        self.send_as(OPERATIONS_SOURCE, events).await
    }

    async fn send_as(&self, source: &str, events: &[OutboxEvent]) -> (Vec<OutboxEvent>, Vec<(String, String)>) {
        let (client, bus) = match &self.bus {
            Bus::Memory(sent) => {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(events);
                return (events.to_vec(), Vec::new());
            }
            Bus::EventBridge { client, name } => (client, name),
        };
        let mut accepted = Vec::new();
        let mut failed = Vec::new();
        for batch in events.chunks(BATCH) {
            let entries: Vec<PutEventsRequestEntry> = batch
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(source)
                        .detail_type(&e.detail_type)
                        .detail(&e.detail)
                        .event_bus_name(bus)
                        .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(e.occurred_at.as_millisecond()))
                        .build()
                })
                .collect();
            match client.put_events().set_entries(Some(entries)).send().await {
                Ok(out) => {
                    // Results are in request order; an entry with an error code was not accepted.
                    for (event, result) in batch.iter().zip(out.entries()) {
                        match result.error_code() {
                            None => accepted.push(event.clone()),
                            Some(code) => failed.push((event.event_id.clone(), code.to_string())),
                        }
                    }
                    if out.entries().len() < batch.len() {
                        for event in &batch[out.entries().len()..] {
                            failed.push((event.event_id.clone(), "NoResult".into()));
                        }
                    }
                    if out.failed_entry_count() > 0 {
                        tracing::warn!(failed = out.failed_entry_count(), "EventBridge rejected part of a batch");
                    }
                }
                Err(e) => {
                    let msg = aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string();
                    tracing::warn!(error = %msg, "PutEvents failed; events stay in the outbox");
                    failed.extend(batch.iter().map(|ev| (ev.event_id.clone(), "RequestFailed".into())));
                }
            }
        }
        (accepted, failed)
    }

    /// Publishes `events` just committed and deletes what was accepted.
    pub async fn flush(&self, store: &Store, events: &[OutboxEvent]) -> Result<PublishReport, PublishError> {
        let (accepted, failed) = self.send(events).await;
        store.delete_outbox(&accepted).await?;
        Ok(PublishReport { published: accepted.len(), failed })
    }

    /// After a commit: publishes its events (or, deferring, leaves them for the caller's batch);
    /// whatever fails stays in the outbox for the next drain (logged, never an error for the
    /// caller — the state change itself is done).
    pub async fn publish_committed(&self, store: &Store, events: &[OutboxEvent]) {
        if let Some(deferred) = &self.deferred {
            deferred.push(events);
            return;
        }
        if let Err(e) = self.flush(store, events).await {
            tracing::warn!(error = %e, "events stay in the outbox for the next drain");
        }
    }

    /// Commits one subscription transition — the subscription as `change` writes it, the
    /// payment, attempt or refund that go with it, anything `extra` adds (a checkout's
    /// completion), and the transition's events in the outbox — as one transaction, then
    /// publishes the events. The one way every function commits a transition, so the same kind of
    /// event always carries the same data. Returns the events committed.
    pub async fn commit_transition(
        &self,
        store: &Store,
        change: &TransitionCommit<'_>,
        extra: impl FnOnce(&mut Tx),
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let events = subscription_events(change.next, change.kinds, change.now, change.payment);
        let mut tx = store.tx();
        // First: a transaction that fails names its first failed item, and a checkout completed
        // from a hold that changed hands must fail as a conflict on the checkout (the other
        // verify completed it), not as its payment "already recorded".
        if let Some(checkout) = change.checkout {
            tx.put_checkout_next(checkout);
        }
        if let Some((attempt, expected)) = change.attempt {
            tx.put_attempt_if_status(attempt, expected);
        }
        if let Some(p) = change.payment.filter(|_| change.payment_is_new) {
            tx.put_payment_new(p);
        }
        match change.write {
            SubscriptionWrite::New => tx.put_subscription_new(change.next),
            SubscriptionWrite::Next { lease_owner } => tx.put_subscription_next(change.next, lease_owner),
            SubscriptionWrite::Change { read, at } => tx.put_subscription_change(read, change.next, at),
            SubscriptionWrite::Resolve { read, at } => tx.put_subscription_unleased(read, change.next, at),
        };
        if let Some(refund) = change.refund {
            tx.reserve_refund(refund);
        }
        extra(&mut tx);
        for e in &events {
            tx.put_outbox(e);
        }
        store.commit(tx).await?;
        self.publish_committed(store, &events).await;
        Ok(events)
    }

    /// Publishes up to `limit` leftovers (from crashed or partly failed flushes).
    pub async fn drain(&self, store: &Store, limit: usize) -> Result<PublishReport, PublishError> {
        let pending = store.pending_outbox(limit).await?;
        self.flush(store, &pending).await
    }
}
