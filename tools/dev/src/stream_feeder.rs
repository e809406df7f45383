//! What the Lambda event source mapping does for `verify` in AWS (template.yaml): reads the
//! table's DynamoDB stream (moto's, through the real SDK), keeps only inserted webhook events
//! (the mapping's filter), hands them to `verify` as the Lambda stream event, retries the record
//! a batch reports failed (bounded, like `MaximumRetryAttempts`), and puts what still fails in a
//! dead-letter list (the SQS on-failure destination in AWS).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Retries of a failing record before it goes to the dead letters (the template's value).
pub const MAX_RETRY_ATTEMPTS: u32 = 3;

/// Records per Lambda invocation (the template's `BatchSize`).
pub const BATCH_SIZE: usize = 10;

#[derive(Default)]
pub struct FeederState {
    /// Polls that found nothing new: two after a write mean the write was processed.
    pub empty_polls: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_letters: Mutex<Vec<Value>>,
}

/// A stream image in DynamoDB JSON, as Lambda delivers it (serde_dynamo's conversion, the same
/// `Item` type `aws_lambda_events` reads it back into).
fn image_json(item: &std::collections::HashMap<String, AttributeValue>) -> Value {
    let item: serde_dynamo::Item = item.clone().into();
    serde_json::to_value(item).expect("a DynamoDB item serializes")
}

/// The Lambda stream event record for a stream record.
fn lambda_record(r: &aws_sdk_dynamodbstreams::types::Record, stream_arn: &str) -> Option<Value> {
    let d = r.dynamodb()?;
    Some(json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|n| n.as_str().to_string()),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "ap-northeast-2",
        "dynamodb": {
            "Keys": d.keys().map(image_json),
            "NewImage": d.new_image().map(image_json),
            "SequenceNumber": d.sequence_number(),
            "SizeBytes": d.size_bytes().unwrap_or_default(),
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": stream_arn,
    }))
}

/// The template's filter: inserted items whose `entity` is `webhook_event`.
fn passes_filter(record: &Value) -> bool {
    record["eventName"] == "INSERT" && record.pointer("/dynamodb/NewImage/entity/S") == Some(&json!("webhook_event"))
}

/// Polls the stream until the task is aborted.
/// Every record the table's stream holds now, from the start of each shard, as Lambda would
/// hand them over (unfiltered): what tests read to see what the stream shows.
pub async fn all_records(sdk: &aws_config::SdkConfig, table: &str) -> Result<Vec<Value>, String> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    let described = ddb.describe_table().table_name(table).send().await.map_err(|e| e.to_string())?;
    let arn = described.table().and_then(|t| t.latest_stream_arn()).ok_or("the table has no stream")?.to_string();
    let shards = streams.describe_stream().stream_arn(&arn).send().await.map_err(|e| e.to_string())?;
    let ids: Vec<String> = shards
        .stream_description()
        .map(|d| d.shards())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.shard_id().map(str::to_string))
        .collect();
    let mut records = Vec::new();
    for shard_id in ids {
        let it = streams.get_shard_iterator().stream_arn(&arn).shard_id(shard_id);
        let it = it.shard_iterator_type(ShardIteratorType::TrimHorizon).send().await.map_err(|e| e.to_string())?;
        let mut iterator = it.shard_iterator().map(str::to_string);
        while let Some(current) = iterator {
            let out = streams.get_records().shard_iterator(current).send().await.map_err(|e| e.to_string())?;
            if out.records().is_empty() {
                break;
            }
            records.extend(out.records().iter().filter_map(|r| lambda_record(r, &arn)));
            iterator = out.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(records)
}

pub async fn run(
    sdk: aws_config::SdkConfig,
    table: String,
    verify: Arc<verify::Deps>,
    state: Arc<FeederState>,
) -> Result<(), String> {
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let described = ddb.describe_table().table_name(&table).send().await.map_err(|e| e.to_string())?;
    let arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .ok_or("the table has no stream (template.yaml must enable it)")?
        .to_string();
    let shards = streams.describe_stream().stream_arn(&arn).send().await.map_err(|e| e.to_string())?;
    // Per shard: the last sequence number handed to verify. A fresh iterator after it is asked
    // for on every poll: moto replaces a table (and its stream shard) when it rolls a failed
    // transaction back, which leaves older iterators reading a shard nobody writes to.
    let mut positions: Vec<(String, Option<String>)> = shards
        .stream_description()
        .map(|d| d.shards())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.shard_id().map(|id| (id.to_string(), None)))
        .collect();
    loop {
        let mut found = 0usize;
        for (shard_id, last) in positions.iter_mut() {
            let mut it = streams.get_shard_iterator().stream_arn(&arn).shard_id(shard_id.as_str());
            it = match last {
                Some(seq) => {
                    it.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq.as_str())
                }
                None => it.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let iterator = match it.send().await {
                Ok(out) => out.shard_iterator().map(str::to_string),
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "GetShardIterator failed");
                    None
                }
            };
            let Some(iterator) = iterator else { continue };
            let out = match streams.get_records().shard_iterator(&iterator).send().await {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "GetRecords failed");
                    continue;
                }
            };
            if let Some(seq) = out.records().iter().rev().find_map(|r| r.dynamodb().and_then(|d| d.sequence_number())) {
                *last = Some(seq.to_string());
            }
            let records: Vec<Value> =
                out.records().iter().filter_map(|r| lambda_record(r, &arn)).filter(passes_filter).collect();
            found += records.len();
            if !records.is_empty() {
                tracing::debug!(records = records.len(), "stream records for verify");
            }
            for batch in records.chunks(BATCH_SIZE) {
                deliver(&verify, batch, &state).await;
            }
        }
        if found == 0 {
            state.empty_polls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One batch through verify, as the event source mapping with `ReportBatchItemFailures` and
/// `BisectBatchOnFunctionError` would: records from the first reported failure are retried.
async fn deliver(verify: &verify::Deps, batch: &[Value], state: &FeederState) {
    let mut pending: Vec<Value> = batch.to_vec();
    let mut attempts = 0u32;
    while !pending.is_empty() {
        // What Lambda would deliver: a record it cannot read as a stream event is not delivered.
        let event: verify::StreamEvent =
            serde_json::from_value(json!({"Records": pending})).expect("the feeder builds stream events Lambda's way");
        let response = verify::stream(verify, &event, jiff::Timestamp::now()).await;
        let failed = response.batch_item_failures.first().and_then(|f| f.item_identifier.clone());
        let Some(failed) = failed else {
            state.delivered.fetch_add(pending.len() as u64, Ordering::SeqCst);
            return;
        };
        let at = pending.iter().position(|r| r.pointer("/dynamodb/SequenceNumber") == Some(&json!(failed)));
        let at = at.unwrap_or(0);
        state.delivered.fetch_add(at as u64, Ordering::SeqCst);
        pending.drain(..at);
        attempts += 1;
        if attempts > MAX_RETRY_ATTEMPTS {
            let dead = pending.remove(0);
            tracing::error!(sequence = %failed, "webhook event failed every retry: dead-lettered");
            state.dead_letters.lock().await.push(dead);
            attempts = 0;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
    }
}
