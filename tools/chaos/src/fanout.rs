//! Ticks through the renew fan-out (issue 25 §4): the scheduled tick only dispatches (one message
//! per shard name, to a FIFO queue), and two to four workers drain the shards at once. The queue
//! is SQS as the workers see it, kept here in memory: FIFO deduplication of what is sent (a tick
//! dispatched twice queues its shards once — or, past SQS's five-minute window, twice), a message
//! received by two workers (a redelivery after a visibility timeout, concurrent with the first),
//! a failed message delivered again, and hand-overs (a worker out of time queues the rest of its
//! shard with its cursor). One worker may crash at any step of a renewal. The money-safety
//! invariants are the chaos suite's own: reconciled afterwards, 0 double charges, 0 lost charges.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};
use paycycle::store::queue::Message;
use paycycle::store::shard_queue::{ShardQueue, ShardWork};
use renew::CrashPoint;

use crate::Rng;

/// Walks in one tick after which a failing message is not delivered again.
const MAX_WALKS: u64 = 2_000;

/// How one fan-out tick is driven, drawn from the scenario's seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workers: usize,
    /// The tick's dispatch runs twice (EventBridge delivered its event twice).
    pub dispatched_twice: bool,
    /// The second dispatch came after SQS's deduplication window: its messages are queued again.
    pub past_dedupe_window: bool,
    /// Per cent of messages a second worker also receives.
    pub redeliver_percent: u64,
    /// Per cent of walks given a deadline a few milliseconds away (hand-overs).
    pub short_deadline_percent: u64,
    /// Workers renew one subscription at a time, a page of one (so a deadline falls between two
    /// renewals of a shard, and the rest is handed over with its cursor).
    pub one_at_a_time: bool,
    /// A worker that crashes at this step of a renewal (its first message only).
    pub crash: Option<(usize, CrashPoint)>,
    pub seed: u64,
}

/// What a fan-out tick did.
#[derive(Clone, Debug, Default)]
pub struct Done {
    pub dispatched: u64,
    pub walked: u64,
    pub redelivered: u64,
    pub handed_over: u64,
    pub failed_and_retried: u64,
    pub charged: u64,
}

/// The queue as the workers see it.
struct Shared {
    pool: VecDeque<ShardWork>,
    /// Deduplication ids seen (FIFO).
    seen: HashSet<String>,
    /// Messages of the in-memory queue already moved into the pool.
    taken: usize,
    busy: usize,
    done: Done,
}

/// Shards that can hold the scenario's subscriptions: a message for any other shard is
/// acknowledged unwalked (its walk is one query that finds nothing; on moto 500 of them would
/// take seconds per tick).
pub type LiveShards = HashSet<String>;

/// Runs one tick at `now` through the fan-out with `deps` (renew's, without a queue).
pub async fn tick(deps: &renew::Deps, tick_id: &str, now: Timestamp, live: &LiveShards, plan: &Plan) -> Done {
    let queue = ShardQueue::in_memory();
    let mut deps = renew::Deps { shard_queue: Some(queue.clone()), ..deps.clone() };
    if plan.one_at_a_time {
        (deps.settings.concurrency, deps.settings.page_size) = (1, 1);
    }
    let mut done = Done::default();
    let dispatches = if plan.dispatched_twice { 2 } else { 1 };
    for _ in 0..dispatches {
        done.dispatched += renew::tick_as(&deps, tick_id, now, None).await.dispatched;
    }
    let shared = Arc::new(Mutex::new(Shared { pool: VecDeque::new(), seen: HashSet::new(), taken: 0, busy: 0, done }));
    refill(&shared, &queue, live, plan.past_dedupe_window);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..plan.workers {
        let crash = plan.crash.filter(|(which, _)| *which == w).map(|(_, at)| at);
        let worker = Worker {
            deps: renew::Deps { crash_at: crash, ..deps.clone() },
            plain: deps.clone(),
            queue: queue.clone(),
            shared: shared.clone(),
            live: live.clone(),
            plan: plan.clone(),
            rng: Rng::new(plan.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        };
        workers.spawn(worker.run());
    }
    while workers.join_next().await.is_some() {}
    let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    shared.done.clone()
}

/// Moves what was sent to the queue since the last look into the pool, as SQS FIFO would
/// (deduplicated, unless `no_dedupe`); messages of shards without subscriptions are acknowledged.
fn refill(shared: &Mutex<Shared>, queue: &ShardQueue, live: &LiveShards, no_dedupe: bool) {
    let sent = queue.sent();
    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
    for work in sent.iter().skip(s.taken) {
        let dedupe = work.fifo().map(|(_, id)| id).unwrap_or_default();
        if !s.seen.insert(dedupe) && !no_dedupe {
            continue;
        }
        if live.contains(&work.shard) {
            s.pool.push_back(work.clone());
        }
    }
    s.taken = sent.len();
}

struct Worker {
    /// This worker's renew (with its crash point, if it crashes).
    deps: renew::Deps,
    /// The same without a crash point (after its first message).
    plain: renew::Deps,
    queue: ShardQueue,
    shared: Arc<Mutex<Shared>>,
    live: LiveShards,
    plan: Plan,
    rng: Rng,
}

impl Worker {
    async fn run(mut self) {
        let mut first = true;
        loop {
            let Some(work) = self.take() else {
                if self.shared.lock().unwrap_or_else(PoisonError::into_inner).busy == 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                continue;
            };
            if self.rng.chance(self.plan.redeliver_percent) {
                // Received again by another worker while this one walks it.
                let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                s.done.redelivered += 1;
                s.pool.push_front(work.clone());
            }
            let deps = if first { &self.deps } else { &self.plain };
            first = false;
            let short = self.rng.chance(self.plan.short_deadline_percent);
            let deadline = short.then(|| {
                let ms = self.rng.range(0, 40);
                Timestamp::now().checked_add(SignedDuration::from_millis(ms)).unwrap_or_else(|_| Timestamp::now())
            });
            let mut report = renew::Report::default();
            let walked = renew::fanout::walk_shard(deps, &work, deadline, &mut report).await;
            self.finish(work, walked.is_ok(), &report);
        }
    }

    /// The next message, marking this worker busy.
    fn take(&self) -> Option<ShardWork> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let work = s.pool.pop_front()?;
        s.busy += 1;
        Some(work)
    }

    /// After a walk: a failed message comes back (SQS delivers it again); hand-overs join the
    /// pool. A message that keeps failing past [`MAX_WALKS`] walks in one tick is dropped (the
    /// dead-letter queue's job): what it held stays due for the next tick.
    fn finish(&self, work: ShardWork, ok: bool, report: &renew::Report) {
        {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.busy -= 1;
            s.done.walked += 1;
            s.done.charged += report.charged;
            s.done.handed_over += report.dispatched;
            if !ok && s.done.walked < MAX_WALKS {
                s.done.failed_and_retried += 1;
                s.pool.push_back(work);
            }
        }
        refill(&self.shared, &self.queue, &self.live, false);
    }
}
