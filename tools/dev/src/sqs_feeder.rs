//! What the Lambda SQS event source mappings do for `deliver` in AWS (template.yaml): receive up
//! to `BatchSize` messages from a queue, hand them to `deliver` as the Lambda SQS event, delete the
//! ones it did not report failed, and leave the failed ones to come back after their visibility
//! timeout (shortened here, as the local stack's queues are ours alone).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::Client;
use serde_json::{Value, json};

/// Messages per invocation (the template's `BatchSize`).
pub const BATCH_SIZE: i32 = 10;

#[derive(Default)]
pub struct SqsFeederState {
    /// Polls of every queue that found nothing: two after a send mean it was handled.
    pub empty_polls: AtomicU64,
    pub handled: AtomicU64,
    /// Events off their catalog schema in `openapi.yaml` (issue 23 §5): the stack fails on drop.
    pub catalog_violations: std::sync::Mutex<Vec<String>>,
}

/// Checks each event of the events queue against its catalog entry.
#[cfg(feature = "contract")]
fn check_catalog(messages: &[aws_sdk_sqs::types::Message], state: &SqsFeederState) {
    for m in messages {
        let Some(envelope) = m.body().and_then(|b| serde_json::from_str::<Value>(b).ok()) else { continue };
        if envelope.get("detail-type").is_none() {
            continue;
        }
        if let Err(e) = crate::contract::OpenApi::get().check_event(&envelope) {
            state.catalog_violations.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e);
        }
    }
}

/// The Lambda SQS event for received messages.
fn lambda_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "ap-northeast-2",
            })
        })
        .collect();
    json!({"Records": records})
}

/// Polls `queues` (URLs) until the task is aborted, handing each batch to `deliver`.
pub async fn run(
    sdk: aws_config::SdkConfig,
    queues: Vec<String>,
    deliver: Arc<deliver::Deps>,
    state: Arc<SqsFeederState>,
) {
    let sqs = Client::new(&sdk);
    loop {
        let mut found = 0usize;
        for url in &queues {
            let out = match sqs.receive_message().queue_url(url).max_number_of_messages(BATCH_SIZE).send().await {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ReceiveMessage failed");
                    continue;
                }
            };
            let messages = out.messages();
            if messages.is_empty() {
                continue;
            }
            found += messages.len();
            #[cfg(feature = "contract")]
            check_catalog(messages, &state);
            let event: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_value(lambda_event(messages, url)).expect("the feeder builds SQS events Lambda's way");
            let response = deliver::on_batch(&deliver, event, jiff::Timestamp::now()).await;
            let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
            for m in messages {
                let Some(handle) = m.receipt_handle() else { continue };
                if failed.contains(&m.message_id().unwrap_or_default()) {
                    let _ = sqs
                        .change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .visibility_timeout(1)
                        .send()
                        .await;
                } else {
                    let _ = sqs.delete_message().queue_url(url).receipt_handle(handle).send().await;
                    state.handled.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if found == 0 {
            state.empty_polls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
