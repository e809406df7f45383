//! `make chaos`: runs COUNT seeded scenarios (default 10,000 from seed 20261123), JOBS at a time,
//! against Dynoxide (or moto with `--moto URL`), and prints the reconciliation totals. Any broken
//! promise prints its seed and what the scenario did, and the run exits 1.
//!
//! Usage: paycycle-chaos --dynamodb URL [--events URL] [--seed N] [--count N] [--jobs N]

use std::time::Instant;

use paycycle_chaos::{Tally, World, run};

struct Args {
    dynamodb: String,
    events: Option<String>,
    seed: u64,
    count: u64,
    jobs: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args { dynamodb: String::new(), events: None, seed: 20_261_123, count: 10_000, jobs: 8 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dynamodb" => a.dynamodb = value()?,
            "--events" => a.events = Some(value()?),
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--count" => a.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--jobs" => a.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.dynamodb.is_empty() {
        return Err("--dynamodb URL is required".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    // The functions' logs on stderr with RUST_LOG (e.g. RUST_LOG=warn to see why a call failed).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    };
    let world = match World::new(&args.dynamodb, args.events.as_deref()).await {
        Ok(w) => std::sync::Arc::new(w),
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("chaos: {} scenarios from seed {}, {} at a time", args.count, args.seed, args.jobs);
    let started = Instant::now();
    let mut total = Tally::default();
    let mut failures = Vec::new();
    let mut next = args.seed;
    let end = args.seed + args.count;
    let mut running = tokio::task::JoinSet::new();
    while next < end || !running.is_empty() {
        while next < end && running.len() < args.jobs {
            let (world, seed) = (world.clone(), next);
            running.spawn(async move { run(&world, seed).await });
            next += 1;
        }
        match running.join_next().await {
            Some(Ok(Ok(t))) => total.add(&t),
            Some(Ok(Err(f))) => {
                eprintln!("chaos: FAILED {f}");
                failures.push(f.seed);
            }
            Some(Err(e)) => {
                eprintln!("chaos: a scenario panicked: {e}");
                failures.push(u64::MAX);
            }
            None => {}
        }
        let done = total.scenarios + failures.len() as u64;
        if done > 0 && done % 500 == 0 {
            eprintln!("chaos: {done}/{} scenarios, {:.0} s", args.count, started.elapsed().as_secs_f64());
        }
    }
    println!("{}", summary(&total, &failures, args.seed, started.elapsed().as_secs_f64()));
    if !total.review_seeds.is_empty() {
        let mut seeds = total.review_seeds.clone();
        seeds.sort_unstable();
        seeds.truncate(20);
        println!("scenarios that left a charge for review (replay with SEED=… COUNT=1): {seeds:?}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

fn summary(t: &Tally, failures: &[u64], seed: u64, seconds: f64) -> String {
    format!(
        "chaos: {} scenarios passed, {} failed (seeds from {seed}{}) in {seconds:.0} s\n\
         subscriptions {} ({} scenarios near the wall clock) · steps {} · ticks {} ({} overlapping sets, \
         {} at skewed times, {} late ticks, {} with a crash)\n\
         fan-out: {} ticks dispatched to workers ({} dispatched twice), {} shard walks, {} messages received \
         by two workers at once, {} hand-overs at a deadline, {} failed messages delivered again\n\
         faults {:?}\n\
         refund requests {} → {:?} · lifecycle calls {} ({} racing ticks, {} of them full refunds with \
         cancel_subscription) → {:?}\n\
         checkouts {} (verify bodies tampered by the browser {})\n\
         reconciled: {} PG charges = {} payments, {}원 charged; PG refunded {}원, we confirmed {}원 \
         ({} refunds left unknown); {} webhooks verified; needs_review {} ({} PG charges held there for a person); final states {:?}\n\
         double charges 0 · lost charges 0 · over-refunds 0 (a scenario with any fails the run)",
        t.scenarios,
        failures.len(),
        if failures.is_empty() { String::new() } else { format!("; failed: {failures:?}") },
        t.subscriptions,
        t.near_wall_clock,
        t.steps,
        t.ticks,
        t.overlapping_ticks,
        t.skewed_ticks,
        t.late_ticks,
        t.crashes,
        t.fanned_out_ticks,
        t.twice_dispatched,
        t.shard_walks,
        t.redelivered_messages,
        t.hand_overs,
        t.failed_messages,
        t.faults,
        t.refund_requests,
        t.refund_answers,
        t.actions,
        t.raced_actions,
        t.raced_refund_cancels,
        t.action_answers,
        t.checkouts,
        t.tampered_verifies,
        t.pg_charges,
        t.payments,
        t.charged_krw,
        t.pg_refunded_krw,
        t.our_refunded_krw,
        t.refunds_unknown,
        t.webhooks,
        t.needs_review,
        t.flagged_for_review,
        t.final_states,
    )
}
