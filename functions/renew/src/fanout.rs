//! The renew fan-out (issue 25 §1, DESIGN §14). The scheduled tick only dispatches: one message
//! per due-index shard on a FIFO queue ([`ShardQueue`]: the shard is the message group, the tick,
//! shard and cursor the deduplication id), and `renew` workers — the same function, fed by the
//! queue's event source, whose maximum concurrency caps the PG load — drain the shards page by
//! page with bounded concurrency. A worker near its deadline hands the rest of its shard to the
//! next worker (a message with the page it stopped at), so a long morning chains itself without
//! waiting for the next tick. Every renewal is still claimed with a lease: two workers on one
//! shard, a message received twice, or a tick dispatched twice charge nothing twice.

use jiff::Timestamp;
use paycycle::api::{CursorScope, SortKind, decode_index_cursor, encode_cursor};
use paycycle::store::StoreError;
use paycycle::store::shard_queue::{ShardQueue, ShardWork};
use paycycle::store::subscriptions::every_due_shard;
use serde_json::{Value, json};

use crate::{Deps, Report, Stopped, Walk};

/// Queues one message per shard for tick `tick_id` at billing time `now`; how many. Every shard
/// name up to `MAX_DUE_SHARDS` is dispatched, not only the configured count: after the count
/// was lowered, or a deploy rolled back, subscriptions written under a larger count are still
/// walked (an empty shard costs a worker one query).
pub async fn dispatch(queue: &ShardQueue, tick_id: &str, now: Timestamp) -> Result<u64, StoreError> {
    let work: Vec<ShardWork> = every_due_shard()
        .into_iter()
        .map(|shard| ShardWork { tick: tick_id.to_string(), shard, now, cursor: None, hop: 0 })
        .collect();
    queue.send(&work).await?;
    Ok(work.len() as u64)
}

/// Whether `payload` is the queue's event (Lambda's SQS event) rather than a scheduled tick.
pub fn is_shard_batch(payload: &Value) -> bool {
    payload["Records"].as_array().is_some_and(|r| r.iter().all(|r| r["eventSource"] == "aws:sqs"))
}

/// A cursor a worker handed over: the due index's key in this shard, and nothing else.
fn cursor_of(work: &ShardWork) -> Result<Option<paycycle::store::Item>, String> {
    let Some(cursor) = &work.cursor else { return Ok(None) };
    let scope = CursorScope {
        partition: (paycycle::store::keys::DUE_SHARD, &work.shard),
        sort: (paycycle::store::keys::NEXT_ATTEMPT_AT, SortKind::Number),
        pk_prefixes: &["SUB#"],
    };
    decode_index_cursor(cursor, &scope).map(Some).map_err(|_| "a cursor of another shard".to_string())
}

/// One worker invocation: each message's shard walked until `deadline`; what is left is handed on.
/// A message that could not be read or handed on is reported failed (`batchItemFailures`): SQS
/// delivers it again (after three tries, to the dead-letter queue).
pub async fn worker(deps: &Deps, payload: &Value, deadline: Option<Timestamp>) -> Value {
    let mut report = Report::default();
    let mut failures = Vec::new();
    for record in payload["Records"].as_array().into_iter().flatten() {
        let id = record["messageId"].as_str().unwrap_or_default().to_string();
        let work = match record["body"].as_str().map(serde_json::from_str::<ShardWork>) {
            Some(Ok(w)) if every_due_shard().contains(&w.shard) => w,
            _ => {
                // Not ours to walk: to the dead-letter queue after its retries, never guessed.
                tracing::error!(message_id = %id, "a shard message that is not a shard's work");
                failures.push(json!({"itemIdentifier": id}));
                continue;
            }
        };
        if let Err(e) = walk_shard(deps, &work, deadline, &mut report).await {
            tracing::error!(message_id = %id, shard = %work.shard, error = %e, "shard work not handed on; SQS delivers it again");
            failures.push(json!({"itemIdentifier": id}));
        }
    }
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "renew worker");
    report.record_metrics();
    json!({"batchItemFailures": failures})
}

/// Walks `work`'s shard from its cursor until `deadline`, then queues the rest for the next worker.
pub async fn walk_shard(
    deps: &Deps,
    work: &ShardWork,
    deadline: Option<Timestamp>,
    report: &mut Report,
) -> Result<(), String> {
    let start = cursor_of(work)?;
    // Billing time: the tick's `now` under time travel (tests, the local stack); in AWS the wall
    // clock — a chain of hand-overs can run hours after its tick, and a charge is dated, and its
    // next period and lookups are timed, when it is made.
    let now = if deps.settings.allow_time_travel { work.now } else { Timestamp::now().max(work.now) };
    let mut walk = Walk::new(deps, now, deadline, true);
    let stopped = walk.shard(&work.shard, start, report).await;
    let started = walk.started;
    walk.finish(report).await;
    let Stopped::At(at) = stopped else { return Ok(()) };
    if started == 0 {
        // No time for even one renewal (a margin as long as the function's timeout): handing over
        // would chain forever doing nothing. Failed instead: SQS retries, then the dead-letter
        // queue's alarm asks a person.
        return Err(
            "the deadline came before one renewal could start: the worker's timeout is too short for its margin".into(),
        );
    }
    let next = work.continued(at.as_ref().map(encode_cursor));
    let queue = deps.shard_queue.as_ref().ok_or("no shard queue to hand the rest of the shard to")?;
    queue.send(std::slice::from_ref(&next)).await.map_err(|e| e.to_string())?;
    report.dispatched += 1;
    tracing::info!(shard = %work.shard, hop = next.hop, "deadline: the rest of the shard handed to the next worker");
    Ok(())
}
