//! The queue of deliveries to attempt (issue 23 §3): one SQS message per (event, endpoint), so a
//! slow endpoint holds up only its own messages. The message names the delivery
//! ([`DeliveryKey`]); the delivery item, not the message, says whether it is still to be done, so
//! a message received twice is harmless.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::StoreError;
use crate::partner_webhooks::DeliveryKey;

/// SendMessageBatch takes at most 10 entries per call.
const BATCH: usize = 10;

#[derive(Clone, Debug)]
pub struct DeliveryQueue {
    target: Target,
    calls: Option<std::sync::Arc<crate::aws::calls::CallLog>>,
}

#[derive(Clone, Debug)]
enum Target {
    Sqs { client: Client, url: String },
    Memory(std::sync::Arc<std::sync::Mutex<Vec<DeliveryKey>>>),
}

impl DeliveryQueue {
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

    /// A queue that keeps what it is sent in memory ([`DeliveryQueue::sent`]).
    pub fn in_memory() -> Self {
        Self { target: Target::Memory(std::sync::Arc::default()), calls: None }
    }

    /// What an in-memory queue was sent, in order (empty for SQS).
    pub fn sent(&self) -> Vec<DeliveryKey> {
        match &self.target {
            Target::Memory(sent) => sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            Target::Sqs { .. } => Vec::new(),
        }
    }

    /// Sends one message per delivery. An entry SQS refuses fails the call: the caller's message
    /// is retried, and deliveries already queued are skipped by their state.
    pub async fn send(&self, deliveries: &[DeliveryKey]) -> Result<(), StoreError> {
        let (client, url) = match &self.target {
            Target::Memory(sent) => {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(deliveries);
                return Ok(());
            }
            Target::Sqs { client, url } => (client, url),
        };
        for batch in deliveries.chunks(BATCH) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let body = serde_json::to_string(key).unwrap_or_default();
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| StoreError::Unavailable(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
            if let Some(failed) = out.failed().first() {
                return Err(StoreError::Unavailable(format!(
                    "SQS refused a delivery message: {} {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
