//! `paycycle-dev demo | serve | tick [--now T]` — see `make demo`, `make dev`, `make tick`.

use std::process::ExitCode;
use std::time::Instant;

use paycycle_dev::{LocalStack, Options, PgTarget};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};

const USAGE: &str = "usage:
  paycycle-dev demo                 start the local stack, run a year of billing on all three PG modes
                                    through the HTTP API, reconcile with the PG's ledger, print a summary, stop
  paycycle-dev serve                start the local stack on http://127.0.0.1:3000 and keep it up
  paycycle-dev tick [--now TIME]    run one renew tick and the webhook retry sweep on a running `serve` stack
                                    (time travel with --now)
  paycycle-dev api-key create --name NAME [--partner ID]
                                    create a partner API key in PAYCYCLE_TABLE (AWS credentials from the
                                    environment); prints the key once, stores only its SHA-256
  paycycle-dev api-key revoke --key KEY
options:
  --port N     API port for demo/serve (default 3000; 0 = any free port)
  --ready-file PATH   serve: once up, write {\"api\", \"api_key\", \"sandbox\", \"seeded\", \"shop\"} as JSON to PATH (mode 600)
  --seed       serve: create paid subscriptions, payments, an open checkout, webhook endpoints and
               events for partner \"default\" (make fuzz-api fuzzes every operation on them)
  --api URL    API of the running stack for tick (default http://127.0.0.1:3000)
  --pg external  serve: call the PGs named by STEPPAY_BASE_URL, PAYPLE_BASE_URL, PAYPLE_REFERER with
               the credentials STEPPAY_SECRET_TOKEN, STEPPAY_WEBHOOK_SECRETS, PAYPLE_CST_ID,
               PAYPLE_CUST_KEY, PAYPLE_REFUND_KEY from the environment (make dev PG=external)
               instead of the sandbox";

/// SIGINT and SIGTERM, listened for from the first line of `main`: a signal during start-up must
/// not kill the process before it can stop what it started.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The functions' JSON logs go to stderr when RUST_LOG asks for them (e.g. RUST_LOG=info).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing::subscriber::set_global_default(paycycle::telemetry::subscriber(std::io::stderr, filter));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match arg_value(&args, "--port").map(|p| p.parse::<u16>()) {
        None => 3000,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            eprintln!("--port needs a number\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        Some("demo") => demo(port, &mut signals).await,
        Some("serve") => {
            let seed = args.iter().any(|a| a == "--seed");
            let pg = match arg_value(&args, "--pg").as_deref() {
                None | Some("sandbox") => PgTarget::Sandbox,
                Some("external") => PgTarget::external_from(|k| std::env::var(k).ok()),
                Some(other) => {
                    eprintln!("--pg is sandbox or external, not {other}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            serve(
                Options { api_port: port, pg, ..Options::default() },
                arg_value(&args, "--ready-file"),
                seed,
                &mut signals,
            )
            .await
        }
        Some("api-key") => api_key(&args).await,
        Some("tick") => {
            tick(arg_value(&args, "--api").unwrap_or_else(|| "http://127.0.0.1:3000".into()), arg_value(&args, "--now"))
                .await
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn start(options: Options, signals: &mut Signals) -> Option<LocalStack> {
    let t = Instant::now();
    println!("==> starting moto, the PG sandbox and the functions on 127.0.0.1 ...");
    if let PgTarget::External(vars) = &options.pg {
        let host = |k: &str| vars.get(k).map(String::as_str).unwrap_or("(unset)").to_string();
        println!(
            "    PGs: external — StepPay {}, Payple {} (credentials from the environment)",
            host("STEPPAY_BASE_URL"),
            host("PAYPLE_BASE_URL")
        );
    }
    let started = tokio::select! {
        started = LocalStack::start(options) => started,
        _ = signals.recv() => {
            // Dropping the start future drops whatever it had started.
            eprintln!("interrupted during start-up; stopped what was started");
            return None;
        }
    };
    match started {
        Ok(stack) => {
            println!(
                "    up in {:.1} s: api {}  sandbox {}  moto {}",
                t.elapsed().as_secs_f64(),
                stack.api_url(),
                stack.sandbox.base_url(),
                stack.moto.endpoint()
            );
            Some(stack)
        }
        Err(e) => {
            eprintln!("could not start the local stack: {e}");
            None
        }
    }
}

async fn serve(options: Options, ready_file: Option<String>, seed: bool, signals: &mut Signals) -> ExitCode {
    let port = options.api_port;
    let Some(stack) = start(options, signals).await else {
        return ExitCode::FAILURE;
    };
    let api = stack.api_url();
    println!("\nlocal stack is up (Ctrl-C stops it and everything it started)");
    println!("  API      {api}");
    println!("  sandbox  {}", stack.sandbox.base_url());
    println!("  moto     {}   table {}", stack.moto.endpoint(), stack.provisioned.table);
    let key = match stack.create_api_key("make dev", "default").await {
        Ok(key) => key,
        Err(e) => {
            eprintln!("could not create an API key: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("  API key  {key}   (partner \"default\"; shown once)");
    let op = &paycycle_dev::iam_authorizer::LOCAL_OPERATOR;
    let operator_env = format!(
        "AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_REGION={}",
        op.access_key_id,
        op.secret_access_key,
        paycycle_dev::iam_authorizer::REGION
    );
    println!("  operator {operator_env}   (signs the admin routes here; opens nothing in AWS)");
    // A partner's webhook receiver beside the API, registered for every event type: each delivery
    // is printed with its signature check.
    // Beside the API (3001 for `make dev`), or any free port when that one is taken.
    let beside = if port == 0 { 0 } else { port.wrapping_add(1) };
    let receiver = match paycycle_dev::receiver::Receiver::start(beside, true).await {
        Ok(r) => Ok(r),
        Err(_) if beside != 0 => paycycle_dev::receiver::Receiver::start(0, true).await,
        Err(e) => Err(e),
    };
    let receiver = match receiver {
        Ok(r) => r,
        Err(e) => {
            eprintln!("could not start the webhook receiver: {e}");
            return ExitCode::FAILURE;
        }
    };
    match paycycle_dev::receiver::register(&api, &key, &receiver).await {
        Ok(endpoint) => println!("  webhooks {}   (endpoint {endpoint}; deliveries print below)", receiver.url()),
        Err(e) => {
            eprintln!("could not register the webhook receiver: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The sample partner shop (examples/checkout) two ports above the API (3002 for `make dev`).
    let shop_port = if port == 0 { 0 } else { port.wrapping_add(2) };
    let shop = match paycycle_dev::start_example_shop(&stack, &key, shop_port).await {
        Ok(shop) => shop,
        Err(e) => {
            eprintln!("could not start the example shop: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("  shop     {}/   (the sample checkout: open it in a browser)", shop.url());
    let seeded = if seed {
        match paycycle_dev::seed::fuzz_fixtures(&stack, &key).await {
            Ok(ids) => {
                println!("  seeded   {ids}");
                ids
            }
            Err(e) => {
                eprintln!("could not seed: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Value::Null
    };
    if let Some(path) = ready_file {
        let ready = serde_json::json!({"api": api, "api_key": key, "sandbox": stack.sandbox.base_url(), "seeded": seeded, "shop": shop.url()});
        if let Err(e) = write_private(&path, &ready.to_string()) {
            eprintln!("could not write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("\ntry:");
    println!("  curl -s -X POST {api}/checkouts -H 'authorization: Bearer {key}' -H 'idempotency-key: chk-1' \\");
    println!(
        "       -H 'content-type: application/json' -d '{{\"pg\": \"payple\", \"customer\": {{\"id\": \"cus_1\", \"name\": \"홍길동\"}}, \"plan\": {{\"name\": \"Pro\", \"amount\": 9900, \"interval\": \"month\"}}, \"return_url\": \"https://shop.example.com/return\"}}'"
    );
    println!("  curl -s '{api}/subscriptions?customer_id=cus_1' -H 'authorization: Bearer {key}'");
    println!("  curl -s {api}/payments/pay_123 -H 'authorization: Bearer {key}'");
    println!("  curl -s -X POST {api}/payments/pay_123/refunds -H 'authorization: Bearer {key}' \\");
    println!(
        "       -H 'idempotency-key: demo-1' -H 'content-type: application/json' -d '{{\"amount\": 1000, \"reason\": \"demo\"}}'"
    );
    println!("  curl -s '{api}/events?limit=5' -H 'authorization: Bearer {key}'");
    println!("  make tick NOW=2027-02-28T00:00:00+09:00");
    println!("  {operator_env} cargo run -q -p paycycle-cli -- --api {api} partners list");
    signals.recv().await;
    println!("\nstopping ...");
    drop(shop);
    drop(stack);
    ExitCode::SUCCESS
}

/// Writes a file only its owner can read (it holds an API key).
fn write_private(path: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = format!("{path}.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(tmp, path)
}

/// `api-key create|revoke` against the deployed (or any) table named by `PAYCYCLE_TABLE`.
async fn api_key(args: &[String]) -> ExitCode {
    let Ok(table) = std::env::var("PAYCYCLE_TABLE") else {
        eprintln!("set PAYCYCLE_TABLE (the stack's TableName output) and AWS credentials first");
        return ExitCode::from(2);
    };
    let sdk = paycycle::aws::load().await;
    let store = paycycle::store::Store::new(&sdk, table);
    match args.get(1).map(String::as_str) {
        Some("create") => {
            let Some(name) = arg_value(args, "--name") else {
                eprintln!("--name is required\n{USAGE}");
                return ExitCode::from(2);
            };
            let partner =
                arg_value(args, "--partner").unwrap_or_else(|| paycycle::store::payments::DEFAULT_PARTNER.into());
            let key = paycycle::store::api_keys::generate_api_key();
            match store.create_api_key(&key, &name, &partner, jiff::Timestamp::now()).await {
                Ok(_) => {
                    println!("{key}");
                    eprintln!(
                        "API key for partner {partner:?} ({name}). It is shown only now: store it in your secret manager."
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("could not store the key: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("revoke") => {
            let Some(key) = arg_value(args, "--key") else {
                eprintln!("--key is required\n{USAGE}");
                return ExitCode::from(2);
            };
            let found = match store.find_api_key(&key).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    eprintln!("no such key");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("lookup failed: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match store.revoke_api_key(&found, jiff::Timestamp::now()).await {
                Ok(_) => {
                    eprintln!("revoked");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("could not revoke: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Reports `why`, stops the stack, fails.
fn fail(stack: LocalStack, why: String) -> ExitCode {
    eprintln!("{why}");
    drop(stack);
    ExitCode::FAILURE
}

async fn tick(api: String, now: Option<String>) -> ExitCode {
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "now": now });
    // The renew tick, then the webhook retries due at the same time.
    let mut ok = true;
    for route in ["/__dev/tick", "/__dev/deliver"] {
        match client.post(format!("{api}{route}")).json(&body).send().await {
            Ok(resp) => {
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                println!("{route}: {}", serde_json::to_string_pretty(&v).unwrap_or_default());
                ok &= v["ok"] == Value::Bool(true);
            }
            Err(e) => {
                eprintln!("no local stack at {api} ({e}); start one with `make dev`");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn demo(port: u16, signals: &mut Signals) -> ExitCode {
    let t = Instant::now();
    let Some(stack) = start(Options { api_port: port, ..Options::default() }, signals).await else {
        return ExitCode::FAILURE;
    };
    // The partner's webhook receiver: every event of the year must reach it.
    let receiver = paycycle_dev::receiver::Receiver::start(0, false).await;
    let key = stack.create_api_key("make demo webhooks", "default").await;
    let (receiver, key) = match (receiver, key) {
        (Ok(r), Ok(k)) => (r, k),
        (Err(e), _) => return fail(stack, format!("could not start the webhook receiver: {e}")),
        (_, Err(e)) => return fail(stack, format!("could not create an API key: {e}")),
    };
    if let Err(e) = paycycle_dev::receiver::register(&stack.api_url(), &key, &receiver).await {
        return fail(stack, e);
    }
    println!("==> three customers, one per PG mode, through the HTTP API and the PG sandbox:");
    // Ctrl-C stops the journeys; dropping `stack` then stops what it started.
    let mut print = |line: String| println!("    {line}");
    let outcome = tokio::select! {
        r = paycycle_dev::journey::run(&stack, None, &mut print) => Some(r),
        _ = signals.recv() => {
            eprintln!("\ninterrupted");
            None
        }
    };
    let ok = match outcome {
        Some(Ok(report)) => {
            println!("\npaycycle demo summary ({} steps, {:.1} s)\n", report.steps, t.elapsed().as_secs_f64());
            print!("{}", paycycle_dev::journey::render(&report));
            println!(
                "\n  table {}  bus {}",
                stack.provisioned.table,
                stack.provisioned.buses.values().cloned().collect::<Vec<_>>().join(", ")
            );
            stack.drain_webhooks().await;
            let webhooks_ok = match paycycle_dev::receiver::tally(&stack.api_url(), &key, &receiver).await {
                Ok(tally) => {
                    println!(
                        "\n  webhooks: {} events, {} deliveries to the local receiver, {} distinct after dedupe on webhook-id, {} missing, {} bad signatures",
                        tally.events,
                        tally.deliveries,
                        tally.distinct,
                        tally.missing.len(),
                        tally.bad_signatures
                    );
                    tally.complete()
                }
                Err(e) => {
                    eprintln!("could not tally the webhooks: {e}");
                    false
                }
            };
            report.reconciliation.differences.is_empty() && webhooks_ok
        }
        Some(Err(e)) => {
            eprintln!("\nthe demo failed: {e}");
            false
        }
        None => false,
    };
    println!("==> stopping everything the demo started ...");
    drop(stack);
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
