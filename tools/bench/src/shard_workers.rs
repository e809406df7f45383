//! The renew fan-out run locally: the shard queue is an in-memory [`ShardQueue`] (what the tick
//! dispatches and what workers hand over land in its `sent()`), delivered to W worker tasks the way
//! SQS FIFO and the event source deliver it to `renew` workers — each message once by its
//! deduplication id, one message of a message group (a shard) in flight at a time, one message per
//! invocation (the template's `BatchSize: 1`). Each worker calls `renew::fanout::walk_shard`, the
//! worker's own code path, with an invocation deadline, so long shards are handed over for real.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use paycycle::store::shard_queue::{ShardQueue, ShardWork};
use tokio::task::Id;

/// What the queue holds for the workers, as SQS FIFO would.
#[derive(Default)]
struct Delivery {
    /// How much of the queue's `sent()` has been taken in.
    read: usize,
    dedupe_ids: HashSet<String>,
    ready: VecDeque<ShardWork>,
    /// Shards with a message in flight (FIFO: the group waits).
    busy: HashSet<String>,
    duplicates: u64,
}

enum Take {
    Work(ShardWork),
    /// Nothing deliverable now, but a worker is still walking (it may hand over).
    Wait,
    Done,
}

/// The in-memory shard queue, delivered.
pub struct Fifo {
    pub queue: ShardQueue,
    delivery: Mutex<Delivery>,
}

impl Fifo {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { queue: ShardQueue::in_memory(), delivery: Mutex::default() })
    }

    fn take(&self) -> Take {
        let mut d = self.delivery.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent = self.queue.sent();
        for work in &sent[d.read..] {
            if d.dedupe_ids.insert(work.dedupe_id()) {
                d.ready.push_back(work.clone());
            } else {
                d.duplicates += 1;
            }
        }
        d.read = sent.len();
        if let Some(i) = d.ready.iter().position(|w| !d.busy.contains(&w.shard)) {
            let work = d.ready.remove(i).expect("position is in range");
            d.busy.insert(work.shard.clone());
            return Take::Work(work);
        }
        if d.busy.is_empty() { Take::Done } else { Take::Wait }
    }

    /// The message is deleted (its walk is over; a hand-over was sent before this).
    fn done(&self, work: &ShardWork) {
        self.delivery.lock().unwrap_or_else(std::sync::PoisonError::into_inner).busy.remove(&work.shard);
    }
}

/// What the workers did together.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Drained {
    pub charged: u64,
    pub due: u64,
    pub skipped: u64,
    pub errors: u64,
    /// Messages walked (= worker invocations).
    pub invocations: u64,
    /// Shards handed to the next worker at an invocation's deadline.
    pub hand_overs: u64,
    /// Messages SQS FIFO would have dropped as repeats.
    pub duplicates: u64,
    /// Shard work that failed (SQS would deliver it again).
    pub failed: Vec<String>,
}

/// One worker: takes messages until the queue is drained, each walked until `budget` from its start.
async fn worker(deps: renew::Deps, fifo: Arc<Fifo>, budget: Duration) -> Drained {
    let mut out = Drained::default();
    let mut report = renew::Report::default();
    loop {
        let work = match fifo.take() {
            Take::Work(w) => w,
            Take::Wait => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            Take::Done => break,
        };
        out.invocations += 1;
        let deadline = Timestamp::now().checked_add(budget).ok();
        if let Err(e) = renew::fanout::walk_shard(&deps, &work, deadline, &mut report).await {
            out.failed.push(format!("{}: {e}", work.shard));
        }
        fifo.done(&work);
    }
    (out.charged, out.due, out.skipped, out.errors) = (report.charged, report.due, report.skipped, report.errors);
    out.hand_overs = report.dispatched;
    out
}

/// Spawns `workers` workers over `fifo` (the tick has dispatched into it); their task ids, for
/// telling a walk's requests from its renewals', and what they did.
pub async fn drain(deps: &renew::Deps, fifo: &Arc<Fifo>, workers: usize, budget: Duration) -> (HashSet<Id>, Drained) {
    let mut deps = deps.clone();
    deps.shard_queue = Some(fifo.queue.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let ids: HashSet<Id> = (0..workers).map(|_| tasks.spawn(worker(deps.clone(), fifo.clone(), budget)).id()).collect();
    let mut total = Drained::default();
    while let Some(done) = tasks.join_next().await {
        let d =
            done.unwrap_or_else(|e| Drained { failed: vec![format!("worker panicked: {e}")], ..Drained::default() });
        total.charged += d.charged;
        total.due += d.due;
        total.skipped += d.skipped;
        total.errors += d.errors;
        total.invocations += d.invocations;
        total.hand_overs += d.hand_overs;
        total.failed.extend(d.failed);
    }
    total.duplicates = fifo.delivery.lock().unwrap_or_else(std::sync::PoisonError::into_inner).duplicates;
    (ids, total)
}
