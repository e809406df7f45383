//! The capacity table: a morning of N renewals at a PG budget of B renewals in flight, computed
//! from what the run measured (the fan-out at the realistic PG latency L = 1 s, its write units per
//! renewal; the store's time per renewal) and from the deployment as the template and renew define it (the
//! worker's timeout and memory, renew's deadline margin and concurrency, the shard counts).
//!
//! - time per renewal t = L + store time per renewal (measured one renewal at a time: see
//!   [`Inputs::store_s_per_renewal`]);
//! - the morning's duration = N × t ÷ B (B renewals in flight the whole time);
//! - DynamoDB WCU/s at the peak = B ÷ t × WCU per renewal (measured);
//! - a worker invocation starts renewals for (timeout − margin) s, at C in flight: it does
//!   C × (timeout − margin) ÷ t renewals; a shard of N ÷ shards needs ⌈that ratio⌉ invocations,
//!   each after the first a hand-over; SQS messages = the dispatch (every shard name) + hand-overs;
//! - Lambda: worker GB-s = N × t ÷ C × memory (each worker keeps C in flight); requests = one per
//!   message (BatchSize 1) + the tick. Empty shards' invocations (one due query each) are left out.
//!   Dollars are an estimate (floats are fine here: nothing is billed from them).

use std::time::Duration;

use paycycle::store::subscriptions::{due_shard_count, every_due_shard};
use paycycle_testkit::Template;

use crate::renew_throughput::Run;

/// AWS Lambda pricing, first tier, the same in us-east-1 and ap-northeast-2: per GB-s by
/// architecture, and per request. Source: aws.amazon.com/lambda/pricing, as of [`PRICES_AS_OF`].
pub const PRICE_GB_S_X86: f64 = 0.000_016_666_7;
pub const PRICE_GB_S_ARM: f64 = 0.000_013_333_4;
pub const PRICE_PER_REQUEST: f64 = 0.20 / 1e6;
pub const PRICES_AS_OF: &str = "2026-11-30";

pub const MORNING: u64 = 1_000_000;
pub const BUDGETS: [u64; 3] = [50, 100, 300];

/// The logical id of the worker function in template.yaml.
const WORKER: &str = "RenewWorkerFunction";

/// What the table is computed from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Inputs {
    /// The run the latency, the queued store time and the write units come from.
    pub source: String,
    pub latency_s: f64,
    /// DynamoDB's time per renewal, measured one renewal at a time: the emulator serves one
    /// statement at a time, so with renewals in flight its queue adds to every request — a queue
    /// DynamoDB, serving requests in parallel, does not have.
    pub store_s_per_renewal: f64,
    /// The same in the 1 s run, the emulator's queueing included (the table's pessimistic note).
    pub queued_store_s_per_renewal: f64,
    pub write_units_per_renewal: f64,
    /// renew's concurrency per worker (`PAYCYCLE_RENEW_CONCURRENCY`'s default).
    pub per_worker: u64,
    /// `DueShards` (the shards holding subscriptions) and every shard name the tick dispatches.
    pub shards: u64,
    pub dispatched: u64,
    /// RenewWorkerFunction's `Timeout` and `MemorySize`, and renew's deadline margin (s).
    pub worker_timeout_s: f64,
    pub worker_memory_mb: u64,
    pub deadline_margin_s: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub budget: u64,
    pub workers: f64,
    pub hours: f64,
    pub write_units_per_s: f64,
    pub hand_overs: u64,
    pub messages: u64,
    pub lambda_requests: u64,
    pub gb_s: f64,
    pub usd_x86: f64,
    pub usd_arm: f64,
}

impl Inputs {
    /// From `run` (the fan-out at L = 1 s: latency, write units), `alone` (one renewal at a time:
    /// the store's time per renewal without the emulator's queueing) and the deployment: the
    /// template's worker function, renew's settings as its `main` fits them to the PG client's
    /// default timeout.
    pub fn measured(run: &Run, alone: &Run, template: &Template) -> Result<Self, String> {
        let (_, worker) = template
            .resources_of_type("AWS::Serverless::Function")
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(id, _)| id == WORKER)
            .ok_or(format!("no {WORKER} in template.yaml"))?;
        let number = |key: &str| worker.get(key).and_then(|v| v.as_u64()).ok_or(format!("{WORKER}: no {key}"));
        let names = paycycle_dev::LocalNames { table: "t".into(), bus: "b".into(), kms_key: "k".into() };
        let pg = paycycle_dev::local_config(&names, "http://127.0.0.1:1", None).map_err(|e| e.to_string())?.pg;
        let settings = renew::Settings::default().fitted_to(Duration::from_millis(pg.pg_timeout_ms));
        Ok(Self {
            source: crate::report_scale::walkers(run),
            latency_s: run.latency_ms as f64 / 1000.0,
            store_s_per_renewal: alone.store_ms_per_renewal / 1000.0,
            queued_store_s_per_renewal: run.store_ms_per_renewal / 1000.0,
            write_units_per_renewal: run.write_units_per_renewal,
            per_worker: settings.concurrency as u64,
            shards: u64::from(due_shard_count()),
            dispatched: every_due_shard().len() as u64,
            worker_timeout_s: number("Timeout")? as f64,
            worker_memory_mb: number("MemorySize")?,
            deadline_margin_s: settings.deadline_margin.as_secs_f64(),
        })
    }

    /// The morning's duration (hours) with the store's time as queued by the emulator in the 1 s run.
    pub fn hours_queued(&self, n: u64, budget: u64) -> f64 {
        n as f64 * (self.latency_s + self.queued_store_s_per_renewal) / budget as f64 / 3600.0
    }

    pub fn rows(&self) -> Vec<Row> {
        BUDGETS.iter().map(|b| self.row(MORNING, *b)).collect()
    }

    pub fn per_renewal_s(&self) -> f64 {
        self.latency_s + self.store_s_per_renewal
    }

    /// Renewals one worker invocation can start before its deadline.
    pub fn per_invocation(&self) -> f64 {
        self.per_worker as f64 * (self.worker_timeout_s - self.deadline_margin_s).max(0.0) / self.per_renewal_s()
    }

    pub fn row(&self, n: u64, budget: u64) -> Row {
        let t = self.per_renewal_s();
        let per_shard = n.div_ceil(self.shards) as f64;
        let invocations_per_shard = (per_shard / self.per_invocation()).ceil().max(1.0) as u64;
        let hand_overs = self.shards * (invocations_per_shard - 1);
        let messages = self.dispatched + hand_overs;
        let gb_s = n as f64 * t / self.per_worker as f64 * self.worker_memory_mb as f64 / 1024.0;
        let lambda_requests = messages + 1;
        let requests_usd = lambda_requests as f64 * PRICE_PER_REQUEST;
        Row {
            budget,
            workers: budget as f64 / self.per_worker as f64,
            hours: n as f64 * t / budget as f64 / 3600.0,
            write_units_per_s: budget as f64 / t * self.write_units_per_renewal,
            hand_overs,
            messages,
            lambda_requests,
            gb_s,
            usd_x86: gb_s * PRICE_GB_S_X86 + requests_usd,
            usd_arm: gb_s * PRICE_GB_S_ARM + requests_usd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            source: "4 workers × 16".into(),
            latency_s: 1.0,
            store_s_per_renewal: 0.02,
            queued_store_s_per_renewal: 0.1,
            write_units_per_renewal: 17.0,
            per_worker: 16,
            shards: 64,
            dispatched: 512,
            worker_timeout_s: 900.0,
            worker_memory_mb: 512,
            deadline_margin_s: 290.0,
        }
    }

    #[test]
    fn a_million_at_300_in_flight() {
        let r = inputs().row(MORNING, 300);
        // 1e6 × 1.02 s ÷ 300 = 3400 s.
        assert!((r.hours - 3400.0 / 3600.0).abs() < 1e-9);
        assert!((r.write_units_per_s - 300.0 / 1.02 * 17.0).abs() < 1e-9);
        // 15,625 per shard; 16 × 610 s ÷ 1.02 s ≈ 9,569 per invocation: two invocations a shard.
        assert_eq!((r.hand_overs, r.messages, r.lambda_requests), (64, 576, 577));
        assert!((r.gb_s - 1e6 * 1.02 / 16.0 * 0.5).abs() < 1e-6);
        assert!(r.usd_arm < r.usd_x86);
    }

    #[test]
    fn small_mornings_hand_nothing_over() {
        let r = inputs().row(20_000, 50);
        assert_eq!((r.hand_overs, r.messages), (0, 512));
    }
}
