//! Sequential AWS round trips on a renewal's critical path. The store's request counter says how
//! many requests a renewal costs, not how many it waits for one after another; this does. Every
//! request the bench's SDK clients send goes through [`Tagging`], an HTTP client wrapper that notes
//! the tokio task that sent it, the call (`x-amz-target`) and when it left and came back.
//!
//! renew runs each renewal in a task of its own and walks the due index in the caller's task, so
//! a renewal's critical path is its task's calls (plus the walk's per-page calls, shared by the
//! page). Calls of one task that overlap in time were concurrent and count as one round trip. The
//! PG call is the task's longest silence: a gap of at least half the sandbox's hold splits a
//! renewal's round trips into before and after it. A task with no such gap did not call the PG
//! (an events publisher off the path, say) and is listed apart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use tokio::task::Id;

/// One request as it went over the wire.
#[derive(Clone, Debug)]
pub struct Trip {
    pub task: Option<Id>,
    /// `GetItem`, `TransactWriteItems`… for DynamoDB; `EventBridge PutEvents`, `KMS Decrypt`…
    pub call: String,
    pub sent: Instant,
    pub answered: Instant,
}

impl Trip {
    fn dynamodb(&self) -> bool {
        !self.call.contains(' ')
    }
}

/// The trips of every client built from [`RoundTrips::config`], since the last [`RoundTrips::take`].
#[derive(Clone, Debug, Default)]
pub struct RoundTrips {
    log: Arc<Mutex<Vec<Trip>>>,
}

/// `x-amz-target` (`DynamoDB_20120810.GetItem`) as the report names the call.
fn call_name(target: Option<&str>) -> String {
    let Some((service, op)) = target.and_then(|t| t.split_once('.')) else { return "unknown".into() };
    match service {
        s if s.starts_with("DynamoDB") => op.to_string(),
        "AWSEvents" => format!("EventBridge {op}"),
        "TrentService" => format!("KMS {op}"),
        other => format!("{other} {op}"),
    }
}

#[derive(Debug)]
struct Tagging {
    inner: SharedHttpConnector,
    log: Arc<Mutex<Vec<Trip>>>,
}

impl HttpConnector for Tagging {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // `call` runs inside the task that awaits the SDK's future: that task sent the request.
        let task = tokio::task::try_id();
        let call = call_name(request.headers().get("x-amz-target"));
        let (log, sent) = (self.log.clone(), Instant::now());
        let answer = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let result = answer.await;
            let trip = Trip { task, call, sent, answered: Instant::now() };
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(trip);
            result
        })
    }
}

impl RoundTrips {
    /// `base` with its HTTP client tagging every request (plain HTTP or TLS, as the SDK's default).
    pub fn config(&self, base: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let inner: SharedHttpClient =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).build_https();
        let log = self.log.clone();
        let client = http_client_fn(move |settings, components| {
            SharedHttpConnector::new(Tagging { inner: inner.http_connector(settings, components), log: log.clone() })
        });
        base.to_builder().http_client(client).build()
    }

    /// The trips so far, forgetting them.
    pub fn take(&self) -> Vec<Trip> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Round trips (calls that overlapped in time count as one) and the time spent waiting for them.
fn sequential_with_wait(trips: &[&Trip]) -> (usize, Duration) {
    let (mut n, mut waited) = (0, Duration::ZERO);
    let mut busy: Option<(Instant, Instant)> = None;
    for t in trips {
        match busy {
            Some((from, to)) if t.sent < to => busy = Some((from, to.max(t.answered))),
            _ => {
                waited += busy.map_or(Duration::ZERO, |(from, to)| to - from);
                n += 1;
                busy = Some((t.sent, t.answered));
            }
        }
    }
    (n, waited + busy.map_or(Duration::ZERO, |(from, to)| to - from))
}

fn sequential(trips: &[&Trip]) -> usize {
    sequential_with_wait(trips).0
}

/// One task's calls in order, `‖` where it waited for the PG.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Shape {
    pub calls: String,
    pub tasks: usize,
}

/// A run's round trips, per renewal and per walk.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PerRenewal {
    /// Tasks that waited for the PG: the renewals.
    pub renewals: usize,
    /// Mean sequential DynamoDB round trips of a renewal before and after its PG call.
    pub before_pg: f64,
    pub after_pg: f64,
    /// Other AWS round trips in the renewal (EventBridge, KMS), mean.
    pub other_aws: f64,
    /// Mean time a renewal waited on DynamoDB (its round trips, the emulator's queueing included).
    pub dynamodb_ms: f64,
    /// Mean time from a renewal's first request to its last answer: the PG call, the store and
    /// renew's own work — how long it held its slot (Little's law).
    pub renewal_ms: f64,
    /// The walks' own sequential DynamoDB round trips (due-index pages…), all walks together.
    pub walk_round_trips: usize,
    pub renewal_shapes: Vec<Shape>,
    /// Tasks that never waited for the PG, by shape.
    pub other_shapes: Vec<Shape>,
}

/// Splits `trips` by task: `walkers` are the tasks that walked the due index (the harness's).
pub fn per_renewal(trips: &[Trip], walkers: &HashSet<Id>, pg_hold: Duration) -> PerRenewal {
    let mut by_task: BTreeMap<Option<Id>, Vec<&Trip>> = BTreeMap::new();
    for t in trips {
        by_task.entry(t.task).or_default().push(t);
    }
    let mut out = PerRenewal::default();
    let (mut renewal_shapes, mut other_shapes) = (BTreeMap::<String, usize>::new(), BTreeMap::<String, usize>::new());
    let (mut before, mut after, mut other_aws) = (0usize, 0usize, 0usize);
    let (mut waited, mut held) = (Duration::ZERO, Duration::ZERO);
    for (task, mut calls) in by_task {
        calls.sort_by_key(|t| t.sent);
        let dynamodb: Vec<&Trip> = calls.iter().copied().filter(|t| t.dynamodb()).collect();
        if task.is_some_and(|id| walkers.contains(&id)) {
            out.walk_round_trips += sequential(&dynamodb);
            continue;
        }
        let Some(split) = pg_gap(&calls, pg_hold / 2) else {
            *other_shapes.entry(shape(&calls, None)).or_default() += 1;
            continue;
        };
        out.renewals += 1;
        waited += sequential_with_wait(&dynamodb).1;
        held += calls.iter().map(|t| t.answered).max().unwrap_or(calls[0].sent) - calls[0].sent;
        let at = calls[split].sent;
        before += sequential(&dynamodb.iter().copied().filter(|t| t.sent < at).collect::<Vec<_>>());
        after += sequential(&dynamodb.iter().copied().filter(|t| t.sent >= at).collect::<Vec<_>>());
        other_aws += calls.len() - dynamodb.len();
        *renewal_shapes.entry(shape(&calls, Some(split))).or_default() += 1;
    }
    let n = out.renewals.max(1) as f64;
    (out.before_pg, out.after_pg, out.other_aws) = (before as f64 / n, after as f64 / n, other_aws as f64 / n);
    out.dynamodb_ms = waited.as_secs_f64() * 1e3 / n;
    out.renewal_ms = held.as_secs_f64() * 1e3 / n;
    out.renewal_shapes = ranked(renewal_shapes);
    out.other_shapes = ranked(other_shapes);
    out
}

/// The index of the first call after the task's longest silence, if that silence is a PG call's.
fn pg_gap(calls: &[&Trip], at_least: Duration) -> Option<usize> {
    (1..calls.len())
        .filter_map(|i| {
            let quiet_since = calls[..i].iter().map(|t| t.answered).max()?;
            Some((i, calls[i].sent.saturating_duration_since(quiet_since)))
        })
        .max_by_key(|(_, gap)| *gap)
        .filter(|(_, gap)| *gap >= at_least)
        .map(|(i, _)| i)
}

fn shape(calls: &[&Trip], pg_before: Option<usize>) -> String {
    let names: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, t)| if Some(i) == pg_before { format!("‖ PG ‖ {}", t.call) } else { t.call.clone() })
        .collect();
    names.join(" → ").replace("→ ‖", "‖")
}

fn ranked(shapes: BTreeMap<String, usize>) -> Vec<Shape> {
    let mut v: Vec<Shape> = shapes.into_iter().map(|(calls, tasks)| Shape { calls, tasks }).collect();
    v.sort_by(|a, b| b.tasks.cmp(&a.tasks).then(a.calls.cmp(&b.calls)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(call: &str, from_ms: u64, to_ms: u64, base: Instant) -> Trip {
        let at = |ms| base + Duration::from_millis(ms);
        Trip { task: None, call: call.into(), sent: at(from_ms), answered: at(to_ms) }
    }

    #[test]
    fn overlapping_calls_are_one_round_trip() {
        let base = Instant::now();
        let t = [trip("GetItem", 0, 5, base), trip("Query", 2, 6, base), trip("UpdateItem", 7, 9, base)];
        let (n, waited) = sequential_with_wait(&t.iter().collect::<Vec<_>>());
        assert_eq!((n, waited), (2, Duration::from_millis(8)));
    }

    #[test]
    fn the_longest_silence_is_the_pg_call() {
        let base = Instant::now();
        let t = [
            trip("GetItem", 0, 5, base),
            trip("UpdateItem", 6, 9, base),
            trip("TransactWriteItems", 1009, 1015, base),
            trip("EventBridge PutEvents", 1016, 1018, base),
        ];
        let calls: Vec<&Trip> = t.iter().collect();
        assert_eq!(pg_gap(&calls, Duration::from_millis(500)), Some(2));
        assert_eq!(pg_gap(&calls, Duration::from_millis(2000)), None);
        assert_eq!(shape(&calls, Some(2)), "GetItem → UpdateItem ‖ PG ‖ TransactWriteItems → EventBridge PutEvents");
        let out = per_renewal(&t, &HashSet::new(), Duration::from_secs(1));
        assert_eq!((out.renewals, out.before_pg, out.after_pg, out.other_aws), (1, 2.0, 1.0, 1.0));
        assert!((out.dynamodb_ms - 14.0).abs() < 0.01, "5 + 3 + 6 ms: {}", out.dynamodb_ms);
        assert!((out.renewal_ms - 1018.0).abs() < 0.01);
    }

    #[test]
    fn targets_name_the_call() {
        assert_eq!(call_name(Some("DynamoDB_20120810.BatchGetItem")), "BatchGetItem");
        assert_eq!(call_name(Some("AWSEvents.PutEvents")), "EventBridge PutEvents");
        assert_eq!(call_name(None), "unknown");
    }
}
