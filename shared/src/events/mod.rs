//! Publishes outbox events to the EventBridge bus (`source` = `paycycle`, `detail-type` per
//! DESIGN §7). EventBridge can accept part of a batch: each entry's result is checked, and only the
//! accepted events are deleted from the outbox; the rest stay for the next drain.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::store::outbox::OutboxEvent;
use crate::store::{Store, StoreError};

pub const SOURCE: &str = "paycycle";

/// PutEvents takes at most 10 entries per call.
const BATCH: usize = 10;

#[derive(Clone, Debug)]
pub struct EventPublisher {
    client: Client,
    bus: String,
    calls: Option<std::sync::Arc<crate::aws::calls::CallLog>>,
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
        Self { client: Client::from_conf(config.build()), bus: bus.into(), calls }
    }

    /// The calls this publisher made, when `PAYCYCLE_RECORD_AWS_CALLS` is set (the IAM test).
    pub fn calls(&self) -> Option<&std::sync::Arc<crate::aws::calls::CallLog>> {
        self.calls.as_ref()
    }

    /// Sends `events`; returns which were accepted. A call that fails as a whole accepts none.
    pub async fn send(&self, events: &[OutboxEvent]) -> (Vec<OutboxEvent>, Vec<(String, String)>) {
        let mut accepted = Vec::new();
        let mut failed = Vec::new();
        for batch in events.chunks(BATCH) {
            let entries: Vec<PutEventsRequestEntry> = batch
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(SOURCE)
                        .detail_type(&e.detail_type)
                        .detail(&e.detail)
                        .event_bus_name(&self.bus)
                        .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(e.occurred_at.as_millisecond()))
                        .build()
                })
                .collect();
            match self.client.put_events().set_entries(Some(entries)).send().await {
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

    /// After a commit: publishes its events; whatever fails stays in the outbox for the next drain
    /// (logged, never an error for the caller — the state change itself is done).
    pub async fn publish_committed(&self, store: &Store, events: &[OutboxEvent]) {
        if let Err(e) = self.flush(store, events).await {
            tracing::warn!(error = %e, "events stay in the outbox for the next drain");
        }
    }

    /// Publishes up to `limit` leftovers (from crashed or partly failed flushes).
    pub async fn drain(&self, store: &Store, limit: usize) -> Result<PublishReport, PublishError> {
        let pending = store.pending_outbox(limit).await?;
        self.flush(store, &pending).await
    }
}
