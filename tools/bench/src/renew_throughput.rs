//! renew throughput on one [`Morning`]: either today's single walk (`renew::tick` with no shard
//! queue: one process walks every shard with C renewals in flight) or the fan-out (`renew::tick_as`
//! dispatches one message per shard to the queue, and W local workers drain it with
//! `renew::fanout::walk_shard`, C in flight each). With the PG holding every charge L, the most a
//! run can do is W × C ÷ L charges per second; we report the fraction reached, what the store's
//! time per renewal leaves of it (Little's law), and check the PG's ledger after every run.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::task::Id;

use crate::morning::{Bench, Morning};
use crate::round_trips::{self, PerRenewal};
use crate::shard_workers::{self, Drained, Fifo};

/// Each worker invocation starts renewals for this long, then hands the rest of its shard over
/// (in AWS: the 900 s timeout less renew's deadline margin, some 600 renewal times at 1 s). A
/// hand-over costs a renewal's time of emptying slots, so the budget stays many renewal times long
/// here too; shards that take longer (a slow emulator minute) chain through the queue for real.
pub const INVOCATION_BUDGET: Duration = Duration::from_secs(5);

/// Who walks the due index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Walkers {
    /// `renew::tick` without a shard queue: one process, every shard (today's single Lambda).
    Single,
    /// The tick dispatches; this many workers drain the shard queue.
    FanOut(usize),
}

impl Walkers {
    fn count(self) -> usize {
        match self {
            Walkers::Single => 1,
            Walkers::FanOut(w) => w,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub walkers: Walkers,
    pub concurrency: usize,
    pub latency_ms: u64,
    pub subscriptions: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// W × C ÷ L.
    pub bound_per_second: f64,
    pub fraction: f64,
    pub charged: u64,
    pub pg_charges: usize,
    pub events: u64,
    pub setup_seconds: f64,
    /// Messages dispatched by the tick, walked by workers, handed over, dropped as repeats.
    pub dispatched: u64,
    pub drained: Drained,
    pub store_requests_per_renewal: f64,
    pub reads_per_renewal: f64,
    pub writes_per_renewal: f64,
    pub write_units_per_renewal: f64,
    /// Time a renewal waited on DynamoDB on its own path (its round trips, queueing included).
    pub store_ms_per_renewal: f64,
    /// All the run's DynamoDB time (walks and empty shards included) ÷ renewals.
    pub store_ms_all_per_renewal: f64,
    /// W × C ÷ (L + store time per renewal): the most this PG *and this store* allow.
    pub bound_with_store_per_second: f64,
    /// Renewals in flight on average ÷ (W × C) (Little's law: rate × a renewal's measured time,
    /// first request to last answer, ÷ W × C): how full the workers kept their slots.
    pub utilization: f64,
    pub round_trips: PerRenewal,
}

impl Run {
    pub fn in_flight(&self) -> usize {
        self.walkers.count() * self.concurrency
    }
}

/// Walks `morning` at concurrency `c` per walker; the walkers' task ids and what they did.
async fn walk(morning: &Morning, walkers: Walkers, c: usize) -> Result<(HashSet<Id>, Drained, u64), String> {
    let mut deps = morning.deps.clone();
    deps.settings.concurrency = c;
    let now = Timestamp::now();
    if walkers == Walkers::Single {
        let tick = tokio::spawn(async move { renew::tick(&deps, now, None).await });
        let id = tick.id();
        let r = tick.await.map_err(|e| e.to_string())?;
        let drained = Drained {
            charged: r.charged,
            due: r.due,
            skipped: r.skipped,
            errors: r.errors,
            invocations: 1,
            ..Drained::default()
        };
        return Ok((HashSet::from([id]), drained, 0));
    }
    let fifo = Fifo::new();
    deps.shard_queue = Some(fifo.queue.clone());
    let ticking = deps.clone();
    let tick = tokio::spawn(async move { renew::tick_as(&ticking, "bench-tick", now, None).await });
    let tick_id = tick.id();
    let tick = tick.await.map_err(|e| e.to_string())?;
    if tick.dispatch_failed {
        return Err("the tick's dispatch failed".into());
    }
    let (mut ids, drained) = shard_workers::drain(&deps, &fifo, walkers.count(), INVOCATION_BUDGET).await;
    ids.insert(tick_id);
    Ok((ids, drained, tick.dispatched))
}

/// One measured run over `morning` (consumed: its subscriptions are charged).
pub async fn run(bench: &Bench, morning: Morning, walkers: Walkers, concurrency: usize) -> Result<Run, String> {
    let events_before = bench.sink.entries.load(Ordering::Relaxed);
    let counted = morning.deps.store.counter.snapshot();
    bench.trips.take();
    let started = Instant::now();
    let (walker_ids, drained, dispatched) = walk(&morning, walkers, concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    let store = morning.deps.store.counter.snapshot().since(&counted);
    let trips = bench.trips.take();

    let n = morning.subscriptions;
    let pg_charges = morning.ledger().await?;
    if drained.charged != n as u64 || !drained.failed.is_empty() {
        return Err(format!("{walkers:?} over {n} at C={concurrency}: {drained:?}"));
    }
    let latency_ms = morning.latency.as_millis() as u64;
    let in_flight = (walkers.count() * concurrency) as f64;
    let per_second = n as f64 / seconds;
    let bound_per_second = in_flight * 1000.0 / latency_ms as f64;
    let nf = n as f64;
    let round_trips = round_trips::per_renewal(&trips, &walker_ids, morning.latency);
    let store_ms_per_renewal = round_trips.dynamodb_ms;
    let per_renewal_ms = latency_ms as f64 + store_ms_per_renewal;
    Ok(Run {
        walkers,
        concurrency,
        latency_ms,
        subscriptions: n,
        seconds,
        per_second,
        bound_per_second,
        fraction: per_second / bound_per_second,
        charged: drained.charged,
        pg_charges,
        events: bench.sink.entries.load(Ordering::Relaxed) - events_before,
        setup_seconds: morning.setup_seconds,
        dispatched,
        store_requests_per_renewal: store.total_requests() as f64 / nf,
        reads_per_renewal: store.reads() as f64 / nf,
        writes_per_renewal: (store.total_requests() - store.reads()) as f64 / nf,
        write_units_per_renewal: store.write_units as f64 / nf,
        store_ms_per_renewal,
        store_ms_all_per_renewal: store.wire_nanos as f64 / 1e6 / nf,
        bound_with_store_per_second: in_flight * 1000.0 / per_renewal_ms,
        utilization: per_second * round_trips.renewal_ms / 1000.0 / in_flight,
        round_trips,
        drained,
    })
}
