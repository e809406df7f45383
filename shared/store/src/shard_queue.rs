//! The renew fan-out's queue (issue 25 §1, DESIGN §14): the scheduled tick only dispatches, one
//! message per due-index shard, and `renew` workers (the SQS event source) drain the shards. The
//! queue is FIFO: a shard is its message group, so one worker at a time walks a shard, and each
//! message carries a deduplication id made of the tick, the shard, the hop and the cursor — a tick
//! dispatched twice (EventBridge delivers at least once), or a continuation sent twice, queues one
//! message. A message received twice is harmless anyway: every renewal is claimed with a lease.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// SendMessageBatch takes at most 10 entries per call.
const BATCH: usize = 10;

/// A shard's share of one tick: walk `shard` of the due index at billing time `now`, from
/// `cursor` (the page to start at; `None` = the beginning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWork {
    /// The tick's id (the schedule event's id): what deduplicates a dispatch.
    pub tick: String,
    pub shard: String,
    pub now: Timestamp,
    #[serde(default)]
    pub cursor: Option<String>,
    /// How many workers walked this shard before (a long morning chains itself).
    #[serde(default)]
    pub hop: u32,
}

impl ShardWork {
    /// The FIFO deduplication id: one message per (tick, shard, hop, cursor) within SQS's window.
    /// The hop is in it: a worker that hands a shard over before its first page sends the same
    /// cursor (none) as the dispatch did, and must not be taken for a repeat of it.
    pub fn dedupe_id(&self) -> String {
        let cursor = self.cursor.as_deref().unwrap_or("");
        let key = format!("{}\n{}\n{}\n{}", self.tick, self.shard, self.hop, cursor);
        paycycle_domain::ids::sha256_hex(key.as_bytes())
    }

    /// The rest of this shard, from `cursor`, for the next worker.
    pub fn continued(&self, cursor: Option<String>) -> ShardWork {
        ShardWork { cursor, hop: self.hop + 1, ..self.clone() }
    }
}

#[derive(Clone, Debug)]
enum Target {
    Sqs { client: Client, url: String },
    Memory(std::sync::Arc<std::sync::Mutex<Vec<ShardWork>>>),
}

/// The shard queue's client.
#[derive(Clone, Debug)]
pub struct ShardQueue {
    target: Target,
    calls: Option<std::sync::Arc<crate::aws::calls::CallLog>>,
}

impl ShardQueue {
    pub fn new(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        let calls = crate::aws::calls::CallLog::from_env();
        let mut config = aws_sdk_sqs::config::Builder::from(sdk);
        if let Some(log) = &calls {
            config = config.interceptor(log.interceptor());
        }
        Self { target: Target::Sqs { client: Client::from_conf(config.build()), url: url.into() }, calls }
    }

    /// The calls this queue made, when `PAYCYCLE_RECORD_AWS_CALLS` is set (the IAM test).
    pub fn calls(&self) -> Option<&std::sync::Arc<crate::aws::calls::CallLog>> {
        self.calls.as_ref()
    }

    /// A queue that keeps what it is sent in memory ([`ShardQueue::sent`]).
    pub fn in_memory() -> Self {
        Self { target: Target::Memory(std::sync::Arc::default()), calls: None }
    }

    /// What an in-memory queue was sent, in order (empty for SQS).
    pub fn sent(&self) -> Vec<ShardWork> {
        match &self.target {
            Target::Memory(sent) => sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            Target::Sqs { .. } => Vec::new(),
        }
    }

    /// Queues `work`, one FIFO message each (group = shard). An entry SQS refuses fails the call:
    /// the caller is retried, and what was queued already is deduplicated.
    pub async fn send(&self, work: &[ShardWork]) -> Result<(), StoreError> {
        let (client, url) = match &self.target {
            Target::Memory(sent) => {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(work);
                return Ok(());
            }
            Target::Sqs { client, url } => (client, url),
        };
        let unavailable = |e: String| StoreError::Unavailable(e);
        for batch in work.chunks(BATCH) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(w).unwrap_or_default())
                        .message_group_id(&w.shard)
                        .message_deduplication_id(w.dedupe_id())
                        .build()
                        .map_err(|e| unavailable(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
            if let Some(failed) = out.failed().first() {
                return Err(unavailable(format!(
                    "SQS refused a shard message: {} {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
