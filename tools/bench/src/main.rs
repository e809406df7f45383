//! `make bench`: measures what paycycle exists for, side by side in one run, and writes
//! BENCHMARKS.md (machine, date, raw numbers, targets).
//!
//! Usage: paycycle-bench --dynoxide PATH --bin-dir target/release [--out BENCHMARKS.md] [--quick]

mod cold_start;
mod costs;
mod deliveries;
mod renew_throughput;
mod report;
mod runtime_api;
mod stats;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use paycycle_dev::{LocalStack, Options};

pub const FUNCTIONS: [&str; 8] =
    ["webhook-ingest", "verify", "renew", "refund", "checkout", "subscriptions", "webhook-endpoints", "deliver"];

struct Args {
    dynoxide: PathBuf,
    bin_dir: PathBuf,
    out: PathBuf,
    quick: bool,
    /// `--only renew|costs|cold|webhooks`: one section (for working on it; the report says what ran).
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

/// Dynoxide on a free 127.0.0.1 port, stopped (by the PID we started) on drop.
struct Dynoxide {
    child: tokio::process::Child,
    endpoint: String,
}

impl Dynoxide {
    async fn start(path: &PathBuf) -> Result<Self, String> {
        for _ in 0..3 {
            let port = paycycle_testkit::moto::free_port().map_err(|e| e.to_string())?;
            let mut child = tokio::process::Command::new(path)
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--log", "quiet"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting {}: {e} (make bench installs it)", path.display()))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok(Self { child, endpoint: format!("http://127.0.0.1:{port}") });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
        }
        Err("dynoxide did not start".into())
    }
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = args()?;
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
                &stack.sandbox.base_url(),
            );
            let starts = if args.quick { 3 } else { 20 };
            for function in FUNCTIONS {
                let binary = args.bin_dir.join(function);
                report.cold_starts.push(cold_start::measure(&api, function, &binary, &env, starts).await?);
            }
        }
        drop(stack);
    }

    // 3. renew throughput (Dynoxide, sandbox at 50 ms per charge).
    if runs("renew") {
        eprintln!("bench: renew throughput");
        let dynoxide = Dynoxide::start(&args.dynoxide).await?;
        let bench = renew_throughput::Bench::new(&dynoxide.endpoint).await?;
        let plan: Vec<(usize, usize)> = if args.quick {
            vec![(100, 1), (100, 4), (200, 8), (200, 32), (400, 64), (100, 64), (800, 64)]
        } else {
            vec![(500, 1), (500, 2), (500, 4), (2_000, 8), (2_000, 32), (2_000, 64), (500, 64), (8_000, 64)]
        };
        for (subs, concurrency) in plan {
            let run = bench.run(subs, concurrency).await?;
            eprintln!(
                "  {subs} subscriptions at concurrency {concurrency}: {:.1} s, {:.0}/s = {:.1} % of {:.0}/s",
                run.seconds,
                run.per_second,
                run.fraction * 100.0,
                run.bound_per_second
            );
            report.renew.push(run);
        }
        drop(dynoxide);
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
