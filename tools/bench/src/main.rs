//! `make bench`: measures what paycycle exists for, side by side in one run, and writes
//! BENCHMARKS.md (machine, date, raw numbers, targets).
//!
//! Usage: paycycle-bench --dynoxide PATH --bin-dir target/release [--out BENCHMARKS.md] [--quick]

mod capacity;
mod cold_start;
mod costs;
mod deliveries;
mod dynoxide;
mod morning;
mod renew_throughput;
mod report;
mod report_scale;
mod round_trips;
mod runtime_api;
mod shard_workers;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use paycycle_dev::{LocalStack, Options};

use crate::dynoxide::Dynoxide;
use crate::morning::{Morning, Spread};
use crate::renew_throughput::Walkers;

/// The fan-out comparison's PG latency and C per process: see BENCHMARKS.md for why.
const FAN_OUT_LATENCY_MS: u64 = 100;
const FAN_OUT_CONCURRENCY: usize = 16;

pub const FUNCTIONS: [&str; 8] =
    ["webhook-ingest", "verify", "renew", "refund", "checkout", "subscriptions", "webhook-endpoints", "deliver"];

struct Args {
    dynoxide: PathBuf,
    bin_dir: PathBuf,
    out: PathBuf,
    quick: bool,
    /// `--only renew|fanout|costs|cold|webhooks`: one section (for working on it; the report says what ran).
    only: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dynoxide: PathBuf::from(".tools/dynoxide/bin/dynoxide"),
        bin_dir: PathBuf::from("target/release"),
        out: PathBuf::from("BENCHMARKS.md"),
        quick: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dynoxide" => a.dynoxide = value()?.into(),
            "--bin-dir" => a.bin_dir = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--quick" => a.quick = true,
            "--only" => a.only = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

/// W workers × C at the realistic PG latency (1 s, the target) and at 50 ms (where the store caps
/// it), after one renewal at a time; the capacity table from the first 1 s run and that one.
async fn throughput(bench: &morning::Bench, quick: bool, report: &mut report::Report) -> Result<(), String> {
    eprintln!("bench: renew throughput, W workers × C in flight");
    // (PG latency ms, workers, C, due per shard: a multiple of C). First one renewal at a time (the
    // store's time per renewal without queueing), then the realistic latency, then 50 ms.
    let plan: &[(u64, usize, usize, usize)] = if quick {
        &[(50, 1, 1, 1), (1000, 4, 4, 4), (50, 4, 4, 8), (50, 4, 16, 16)]
    } else {
        &[(50, 1, 1, 2), (1000, 4, 8, 16), (1000, 4, 16, 32), (50, 4, 4, 16), (50, 4, 16, 64)]
    };
    for &(latency_ms, workers, c, per_shard) in plan {
        let morning = Morning::prepare(bench, Spread::Even { per_shard }, Duration::from_millis(latency_ms)).await?;
        let run = renew_throughput::run(bench, morning, Walkers::FanOut(workers), c).await?;
        eprintln!(
            "  {} at {latency_ms} ms, {workers} workers × {c}: {:.1} s, {:.1}/s = {:.1} % of {:.0}/s",
            run.subscriptions,
            run.seconds,
            run.per_second,
            run.fraction * 100.0,
            run.bound_per_second
        );
        report.renew.push(run);
    }
    let alone = report.renew.iter().find(|r| r.in_flight() == 1);
    if let (Some(r), Some(alone)) = (report.renew.iter().find(|r| report_scale::at_one_second(r)), alone) {
        let inputs = capacity::Inputs::measured(r, alone, &bench.template)?;
        report.capacity = Some((inputs.clone(), inputs.rows()));
    }
    Ok(())
}

/// The same morning walked by today's single tick and by the fan-out, one after the other.
async fn fan_out(
    bench: &morning::Bench,
    quick: bool,
) -> Result<(renew_throughput::Run, renew_throughput::Run), String> {
    let subscriptions = if quick { 2_000 } else { 20_000 };
    eprintln!("bench: the fan-out against the single walk, {subscriptions} due at {FAN_OUT_LATENCY_MS} ms");
    let mut runs = Vec::new();
    for walkers in [Walkers::Single, Walkers::FanOut(4)] {
        let latency = Duration::from_millis(FAN_OUT_LATENCY_MS);
        let morning = Morning::prepare(bench, Spread::Hashed { subscriptions }, latency).await?;
        let run = renew_throughput::run(bench, morning, walkers, FAN_OUT_CONCURRENCY).await?;
        eprintln!(
            "  {walkers:?}: {:.1} s, {:.1}/s, {} handed over",
            run.seconds, run.per_second, run.drained.hand_overs
        );
        runs.push(run);
    }
    let fan = runs.pop().ok_or("no fan-out run")?;
    Ok((runs.pop().ok_or("no single run")?, fan))
}

async fn run() -> Result<(), String> {
    let args = args()?;
    if std::env::var("PAYCYCLE_DUE_SHARDS").is_err() {
        // renew reads it once per process; the fan-out is measured over the deployed shard count.
        return Err(
            "PAYCYCLE_DUE_SHARDS is not set (tools/scripts/bench.sh sets the template's DueShards default)".into()
        );
    }
    let started = Instant::now();
    let mut report = report::Report::new(args.quick);

    let runs = |section: &str| args.only.as_deref().is_none_or(|o| o == section);

    // 1. DynamoDB cost per operation and webhook-ingest's own time: the local stack (moto).
    if runs("costs") || runs("cold") {
        eprintln!("bench: local stack (moto) for DynamoDB costs and ingest overhead");
        let stack = LocalStack::start(Options { api_port: 0, own_moto: true, ..Options::default() })
            .await
            .map_err(|e| e.to_string())?;
        if runs("costs") {
            let (renewals, webhooks, refunds) = if args.quick { (5, 20, 3) } else { (20, 200, 10) };
            report.costs = Some(costs::measure(&stack, renewals, webhooks, refunds).await?);
            report.item_sizes = report::item_sizes(&stack).await?;
        }

        // 2. Cold starts of the release binaries against the local Runtime API (moto for their calls).
        if runs("cold") {
            eprintln!("bench: cold starts");
            let api = runtime_api::RuntimeApi::start().await.map_err(|e| e.to_string())?;
            let bus = stack.provisioned.buses.values().next().cloned().unwrap_or_default();
            let env = cold_start::FunctionEnv::new(
                stack.moto.endpoint(),
                &stack.provisioned.table,
                &bus,
                &paycycle_fixtures::kms_key(&stack.provisioned),
                &stack.sandbox.base_url(),
            );
            let starts = if args.quick { 3 } else { 20 };
            let binaries: Vec<(String, PathBuf)> = std::iter::once(cold_start::HELLO)
                .chain(FUNCTIONS)
                .map(|f| (f.to_string(), args.bin_dir.join(f)))
                .collect();
            report.cold_starts = cold_start::measure(&api, &binaries, &env, starts).await?;
        }
        drop(stack);
    }

    // 3. renew at scale (Dynoxide): throughput at two PG latencies, the fan-out against the single
    // walk, and the capacity table computed from them.
    if runs("renew") || runs("fanout") {
        let bench = morning::Bench::new(&args.dynoxide).await?;
        if runs("renew") {
            throughput(&bench, args.quick, &mut report).await?;
        }
        if runs("fanout") {
            report.fan_out = Some(fan_out(&bench, args.quick).await?);
        }
    }

    // 4. Webhooks to partners: one deliver instance's throughput (Dynoxide) and commit → delivery
    // latency on the local stack (moto).
    if runs("webhooks") {
        eprintln!("bench: webhook deliveries");
        let dynoxide = Dynoxide::start(&args.dynoxide).await?;
        let plan: Vec<(usize, usize)> =
            if args.quick { vec![(100, 1), (25, 4)] } else { vec![(1_000, 1), (250, 4), (100, 10)] };
        for (events, endpoints) in plan {
            let run = deliveries::throughput(&dynoxide.endpoint, events, endpoints).await?;
            eprintln!("  {events} events × {endpoints} endpoints: {:.0} deliveries/s", run.per_second);
            report.deliveries.push(run);
        }
        drop(dynoxide);
        report.delivery_latency = Some(deliveries::latency(if args.quick { 20 } else { 100 }).await?);
    }

    report.total_seconds = started.elapsed().as_secs_f64();
    let text = report.render();
    std::fs::write(&args.out, &text).map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    println!("{}", report.summary());
    eprintln!("bench: wrote {} in {:.0} s", args.out.display(), report.total_seconds);
    Ok(())
}
