//! An SQS queue of typed messages (JSON bodies), or (fast tests) one that keeps what it is sent in
//! memory. The partner-webhook deliveries ([`crate::delivery_queue`]) and the renew shard work
//! ([`crate::shard_queue`], FIFO) are two of them.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::Serialize;

use crate::StoreError;

/// SendMessageBatch takes at most 10 entries per call.
const BATCH: usize = 10;

/// A message type: its JSON is the body; a FIFO queue's message also names its group and its
/// deduplication id.
pub trait Message: Serialize + Clone + Send + Sync + 'static {
    /// `(message group id, deduplication id)` on a FIFO queue; `None` on a standard one.
    fn fifo(&self) -> Option<(String, String)> {
        None
    }
}

#[derive(Clone, Debug)]
enum Target<T> {
    Sqs { client: Client, url: String },
    Memory(std::sync::Arc<std::sync::Mutex<Vec<T>>>),
}

/// A queue of `T`s.
#[derive(Clone, Debug)]
pub struct Queue<T> {
    target: Target<T>,
    calls: Option<std::sync::Arc<crate::aws::calls::CallLog>>,
}

impl<T: Message> Queue<T> {
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

    /// A queue that keeps what it is sent in memory ([`Queue::sent`]).
    pub fn in_memory() -> Self {
        Self { target: Target::Memory(std::sync::Arc::default()), calls: None }
    }

    /// What an in-memory queue was sent, in order (empty for SQS).
    pub fn sent(&self) -> Vec<T> {
        match &self.target {
            Target::Memory(sent) => sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            Target::Sqs { .. } => Vec::new(),
        }
    }

    /// Sends one message per item. An entry SQS refuses fails the call: the caller is retried,
    /// and what was queued already is harmless to queue again (each message type says why).
    pub async fn send(&self, items: &[T]) -> Result<(), StoreError> {
        let (client, url) = match &self.target {
            Target::Memory(sent) => {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(items);
                return Ok(());
            }
            Target::Sqs { client, url } => (client, url),
        };
        let unavailable = |e: String| StoreError::Unavailable(e);
        for batch in items.chunks(BATCH) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (group, dedupe) = item.fifo().unzip();
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(item).unwrap_or_default())
                        .set_message_group_id(group)
                        .set_message_deduplication_id(dedupe)
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
                    "SQS refused a message: {} {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
