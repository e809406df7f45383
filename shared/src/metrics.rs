//! CloudWatch metrics in the embedded metric format (EMF), through `metrics_cloudwatch_embedded`:
//! a function's stdout line `{"_aws":{"CloudWatchMetrics":[…]}, …}` becomes metrics in namespace
//! `paycycle` without a `PutMetricData` call (and so without an IAM permission or a network hop).
//!
//! [`install`] (called by every cold start in [`crate::boot`]) installs the process's recorder and
//! counts the cold start; [`serve_http`] and [`serve_events`] are the functions' `run` loops, which
//! count and time each invocation and flush once per invocation. What is measured:
//!
//! - `ColdStart` (Count; dimension `Function`): once per process.
//! - `Requests` (Count) and `Latency` (Milliseconds) of an HTTP request, dimensions `Function`,
//!   `Route` (API Gateway's route key, e.g. `POST /payments/verify`: the template's pattern, never
//!   the path, so no id is in it) and `StatusClass` (`2xx`, `4xx`, `5xx`).
//! - `Invocations` (Count) and `Latency` (Milliseconds) of any other invocation, dimensions
//!   `Function`, `Trigger` (`schedule`, `dynamodb`, `sqs`, `direct`) and `Outcome` (`ok`, `error`).
//! - [`count`]: a function's own counts (renew's report, reconcile's), dimension `Function` only,
//!   which is what the template's alarms read.
//!
//! Dimensions are fixed words and route patterns only: a metric line never carries a body, a
//! header, a secret, a billing key, a phone number or an e-mail address. Without [`install`] (the
//! local stack, most tests) every call here is a no-op: nothing is printed.

use std::future::Future;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, RequestExt, Response};
use lambda_runtime::LambdaEvent;
use metrics_cloudwatch_embedded::Collector;
use serde_json::Value;

/// The CloudWatch namespace of every paycycle metric (the template's alarms read it).
pub const NAMESPACE: &str = "paycycle";

struct Installed {
    collector: &'static Collector,
    function: &'static str,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the EMF recorder for `function`, writing to stdout (where Lambda hands the lines to
/// CloudWatch Logs), and counts its cold start; later calls (and a process where another recorder
/// was installed first) change nothing.
pub fn install(function: &'static str) {
    install_to(function, std::io::stdout());
}

/// [`install`], the lines written to `out` (tests capture them).
pub fn install_to(function: &'static str, out: impl std::io::Write + Send + 'static) {
    INSTALLED.get_or_init(|| {
        let built = metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).init();
        let collector = match built {
            Ok(collector) => collector,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; no EMF metrics from this process");
                return None;
            }
        };
        metrics::describe_counter!("ColdStart", metrics::Unit::Count, "cold starts");
        metrics::describe_counter!("Requests", metrics::Unit::Count, "HTTP requests");
        metrics::describe_counter!("Invocations", metrics::Unit::Count, "event invocations");
        metrics::describe_histogram!("Latency", metrics::Unit::Milliseconds, "handler time");
        metrics::counter!("ColdStart", "Function" => function).increment(1);
        Some(Installed { collector, function, out: Mutex::new(Box::new(out)) })
    });
}

fn installed() -> Option<&'static Installed> {
    INSTALLED.get().and_then(Option::as_ref)
}

/// Adds `value` to the function's count `name` (dimension `Function` = `function`). A zero is not
/// written (an alarm treats a missing point as not breaching).
pub fn count(function: &'static str, name: &'static str, value: u64) {
    if installed().is_some() {
        // The unit the alarms' metrics have always had (the crate leaves it out otherwise, and a
        // metric published with two units leaves its alarms undefined).
        metrics::describe_counter!(name, metrics::Unit::Count, "count");
        metrics::counter!(name, "Function" => function).increment(value);
    }
}

/// Writes what was measured since the last flush as EMF lines (one per dimension set).
pub fn flush() {
    let Some(installed) = installed() else { return };
    // Serialized whole first, then written in one call: the JSON logs share stdout, and a line of
    // theirs inside an EMF line would make CloudWatch drop it.
    let mut lines = Vec::new();
    let mut out = installed.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let written = installed.collector.flush(&mut lines).and_then(|()| out.write_all(&lines)).and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::warn!(error = %e, "EMF metrics not written");
    }
}

/// `2xx`, `4xx`, `5xx` (`1xx`/`3xx` as such).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn route_of(req: &Request) -> String {
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => {
            ctx.route_key.clone().unwrap_or_else(|| "unknown".into())
        }
        _ => "unknown".into(),
    }
}

fn record_request(route: String, status: u16, took: Duration) {
    let Some(installed) = installed() else { return };
    let labels =
        [("Function", installed.function.to_string()), ("Route", route), ("StatusClass", status_class(status).into())];
    metrics::counter!("Requests", &labels).increment(1);
    metrics::histogram!("Latency", &labels).record(took.as_secs_f64() * 1000.0);
}

fn record_invocation(trigger: &'static str, ok: bool, took: Duration) {
    let Some(installed) = installed() else { return };
    let outcome = if ok { "ok" } else { "error" };
    let labels = [("Function", installed.function), ("Trigger", trigger), ("Outcome", outcome)];
    metrics::counter!("Invocations", &labels).increment(1);
    metrics::histogram!("Latency", &labels).record(took.as_secs_f64() * 1000.0);
}

/// Runs one HTTP request through `handler`, counting and timing it, then flushes. An `Err` from
/// the handler (Lambda answers 500) counts as `5xx`.
pub async fn metered_http<F, Fut, E>(req: Request, handler: F) -> Result<Response<Body>, E>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, E>>,
{
    let route = route_of(&req);
    let started = Instant::now();
    let result = handler(req).await;
    let status = result.as_ref().map_or(500, |r| r.status().as_u16());
    record_request(route, status, started.elapsed());
    flush();
    result
}

/// Where an event came from, by its shape: an EventBridge schedule, a DynamoDB stream or SQS
/// batch, or anything else (a direct invoke).
pub fn trigger_of(payload: &Value) -> &'static str {
    if payload.get("source").and_then(Value::as_str) == Some("aws.events") {
        return "schedule";
    }
    match payload.pointer("/Records/0/eventSource").and_then(Value::as_str) {
        Some("aws:dynamodb") => "dynamodb",
        Some("aws:sqs") => "sqs",
        _ => "direct",
    }
}

/// Runs one event through `handler`, counting and timing it, then flushes. An API Gateway
/// request delivered as a raw event (verify takes both) is measured as a request, by its
/// `routeKey` and the answer's `statusCode`.
pub async fn metered_event<F, Fut, E>(event: LambdaEvent<Value>, handler: F) -> Result<Value, E>
where
    F: FnOnce(LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let route = event.payload.get("routeKey").and_then(Value::as_str).map(str::to_string);
    let trigger = trigger_of(&event.payload);
    let started = Instant::now();
    let result = handler(event).await;
    match route {
        Some(route) => {
            let status = result.as_ref().ok().and_then(|v| v["statusCode"].as_u64()).unwrap_or(500);
            record_request(route, u16::try_from(status).unwrap_or(500), started.elapsed());
        }
        None => record_invocation(trigger, result.is_ok(), started.elapsed()),
    }
    flush();
    result
}

/// `lambda_http::run` for an HTTP function, every request [`metered_http`].
pub async fn serve_http<F, Fut, E>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<Body>, E>> + Send,
    E: std::fmt::Debug + Into<lambda_runtime::Diagnostic>,
{
    let handler = &handler;
    lambda_http::run(lambda_http::service_fn(move |req| metered_http(req, handler))).await
}

/// `lambda_runtime::run` for an event function, every invocation [`metered_event`].
pub async fn serve_events<F, Fut, E>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(LambdaEvent<Value>) -> Fut + Sync,
    Fut: Future<Output = Result<Value, E>> + Send,
    E: std::fmt::Debug + Into<lambda_runtime::Diagnostic>,
{
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| metered_event(event, handler))).await
}
