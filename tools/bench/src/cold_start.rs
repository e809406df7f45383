//! Cold start of each release `bootstrap`: the binary is started as Lambda starts it (a fresh
//! process pointed at a Runtime API, here [`RuntimeApi`] on 127.0.0.1), and we time process start →
//! its first `GET …/invocation/next` (init done: config, SDK config, secrets, clients). Then it gets
//! one realistic event (which reaches moto through the real SDK), and its resident memory is read
//! from `/proc/<pid>/status` once it has answered. Every process is stopped by the PID we started.
//! A hello-world `lambda_runtime` binary ([`HELLO`]) starts in the same harness, interleaved with the
//! functions: each function's init is reported as a multiple of it, which carries across machines
//! where milliseconds do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::runtime_api::{Answer, RuntimeApi};
use crate::stats::Summary;

/// The baseline: a hello-world `lambda_runtime` function (tools/hello-lambda), built with the
/// same release profile in a cargo invocation of its own, as the functions are.
pub const HELLO: &str = "hello-lambda";

/// One function's numbers.
#[derive(Clone, Debug)]
pub struct ColdStart {
    pub function: String,
    pub init_ms: Summary,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub binary_mb: f64,
    pub zip_mb: f64,
    /// The first invocation's answer (status code for HTTP functions), to show it really ran.
    pub first_answer: String,
}

/// The environment a deployed function gets from the template, pointed at the local services.
pub struct FunctionEnv {
    pub vars: BTreeMap<String, String>,
}

impl FunctionEnv {
    pub fn new(moto_endpoint: &str, table: &str, bus: &str, kms_key: &str, sandbox_url: &str) -> Self {
        let vars = [
            ("AWS_ENDPOINT_URL", moto_endpoint),
            ("PAYCYCLE_BILLING_KEY_KMS_KEY", kms_key),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_REGION", "ap-northeast-2"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("PAYCYCLE_TABLE", table),
            ("PAYCYCLE_EVENT_BUS", bus),
            ("PAYCYCLE_DELIVERY_QUEUE_URL", "http://127.0.0.1:1/000000000000/bench-deliveries"),
            ("STEPPAY_BASE_URL", sandbox_url),
            ("PAYPLE_BASE_URL", sandbox_url),
            ("PAYPLE_REFERER", "http://127.0.0.1:3000"),
            ("STEPPAY_SECRET_TOKEN", "bench-steppay-secret-token"),
            ("STEPPAY_WEBHOOK_SECRETS", "bench-steppay-webhook-secret"),
            ("PAYPLE_CST_ID", "test"),
            ("PAYPLE_CUST_KEY", "abcd1234567890"),
            ("PAYPLE_REFUND_KEY", "bench-payple-refund-key"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
            ("RUST_LOG", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self { vars }
    }
}

/// An API Gateway HTTP API (payload 2.0) event.
pub fn http_event(method: &str, path: &str, headers: Value, body: Option<&str>) -> Value {
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "bench",
            "domainName": "bench.execute-api.ap-northeast-2.amazonaws.com",
            "domainPrefix": "bench",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "23/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1_795_392_000_000i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// The first event each function gets: one that goes through its real path to DynamoDB.
pub fn first_event(function: &str, n: usize) -> Value {
    let bogus_key = json!({"authorization": "Bearer pk_bench_not_a_key", "content-type": "application/json"});
    match function {
        "webhook-ingest" => http_event(
            "POST",
            "/webhooks/payple",
            json!({"content-type": "application/x-www-form-urlencoded"}),
            Some(&format!(
                "PCD_PAY_RST=success&PCD_PAY_CODE=0000&PCD_PAY_OID=bench-cold-{n}&PCD_PAY_TYPE=card&PCD_PAY_WORK=PAY&PCD_PAY_TOTAL=1000&PCD_PAYER_ID=bench-payer"
            )),
        ),
        "verify" => json!({"Records": []}),
        "renew" => json!({
            "version": "0", "id": format!("bench-{n}"), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": jiff::Timestamp::now().to_string(), "region": "ap-northeast-2",
            "resources": [], "detail": {}
        }),
        "refund" => http_event("POST", "/payments/pay_bench/refunds", bogus_key, Some(r#"{"amount": 1000}"#)),
        "checkout" => http_event("POST", "/checkouts", bogus_key, Some("{}")),
        "subscriptions" => http_event("GET", "/subscriptions/sub_bench", bogus_key, None),
        "webhook-endpoints" => http_event("GET", "/webhook-endpoints", bogus_key, None),
        // An empty SQS batch: deliver answers with no failures.
        "deliver" => json!({"Records": []}),
        // The baseline echoes what it gets.
        HELLO => json!({"hello": n}),
        other => panic!("no first event for {other}"),
    }
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// Size of `bootstrap` zipped as Lambda's deployment package (deflate, best compression).
pub fn zip_size(binary: &Path) -> std::io::Result<u64> {
    use std::io::Write;
    let data = std::fs::read(binary)?;
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&data)?;
    let deflated = z.finish()?.len() as u64;
    // Local file header + central directory + end record for one entry named "bootstrap".
    Ok(deflated + (30 + 9) + (46 + 9) + 22)
}

/// One process started: its init time, then its memory and its answer after one invocation.
struct Start {
    init_ms: f64,
    rss_mb: f64,
    peak_mb: f64,
    answer: String,
}

/// Starts `binary` as Lambda would and waits for its first `/next`: the child, its init time.
async fn started(
    api: &RuntimeApi,
    function: &str,
    binary: &Path,
    env: &FunctionEnv,
) -> Result<(tokio::process::Child, f64), String> {
    api.reset();
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .envs(&env.vars)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("{function}: spawn {}: {e}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(at) = api.first_next_at() {
            return Ok((child, at.duration_since(started).as_secs_f64() * 1e3));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{function}: exited during init with {status}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(format!("{function}: no /next within 10 s"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// One cold start of `binary` and its first invocation (the `n`th start), stopped by its PID.
async fn start_once(
    api: &RuntimeApi,
    function: &str,
    binary: &Path,
    env: &FunctionEnv,
    n: usize,
) -> Result<Start, String> {
    let (mut child, init_ms) = started(api, function, binary, env).await?;
    let pid = child.id().ok_or("child has no pid")?;
    let event = serde_json::to_vec(&first_event(function, n)).expect("event");
    api.invoke(&format!("bench-{function}-{n}"), event).await;
    let answer = api.answer(Duration::from_secs(20)).await;
    let rss_mb = status_kb(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let peak_mb = status_kb(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let _ = child.kill().await;
    let _ = child.wait().await;
    let answer = match answer {
        Some(Answer::Response(b)) => {
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            v.get("statusCode").map_or_else(|| "ok".to_string(), |code| format!("HTTP {code}"))
        }
        Some(Answer::Error(b)) => return Err(format!("{function}: invocation error {}", String::from_utf8_lossy(&b))),
        Some(Answer::InitError(b)) => return Err(format!("{function}: init error {}", String::from_utf8_lossy(&b))),
        None => return Err(format!("{function}: no answer within 20 s")),
    };
    Ok(Start { init_ms, rss_mb, peak_mb, answer })
}

/// Starts each of `binaries` (function name, path) `runs` times, interleaved — round n starts every
/// binary once — so a noisy minute on the shared machine falls on all of them alike.
pub async fn measure(
    api: &RuntimeApi,
    binaries: &[(String, PathBuf)],
    env: &FunctionEnv,
    runs: usize,
) -> Result<Vec<ColdStart>, String> {
    let mut starts: Vec<Vec<Start>> = binaries.iter().map(|_| Vec::with_capacity(runs)).collect();
    for n in 0..runs {
        for ((function, binary), of) in binaries.iter().zip(starts.iter_mut()) {
            of.push(start_once(api, function, binary, env, n).await?);
        }
    }
    binaries.iter().zip(starts).map(|((function, binary), s)| summarize(function, binary, &s)).collect()
}

fn summarize(function: &str, binary: &Path, starts: &[Start]) -> Result<ColdStart, String> {
    let of = |f: fn(&Start) -> f64| Summary::of(&starts.iter().map(f).collect::<Vec<_>>());
    let binary_mb = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let zip_mb = zip_size(binary).map_err(|e| e.to_string())? as f64 / 1e6;
    Ok(ColdStart {
        function: function.to_string(),
        init_ms: of(|s| s.init_ms),
        rss_mb: of(|s| s.rss_mb).median,
        peak_rss_mb: of(|s| s.peak_mb).median,
        binary_mb,
        zip_mb,
        first_answer: starts.first().map(|s| s.answer.clone()).unwrap_or_default(),
    })
}
