//! How hard the PG routes are driven (issue 25 §2): requests in flight at once and started per
//! second, at their peaks, so a test can prove a client stayed within its PG budget. The admin
//! routes are not counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Sh;

/// The meter (part of the sandbox's shared state).
#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// When each counted request started.
    starts: Mutex<Vec<Instant>>,
}

impl Load {
    fn reset(&self) {
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        self.starts.lock().expect("load").clear();
    }

    /// The most requests started within any one second.
    fn max_per_second(&self) -> usize {
        let starts = self.starts.lock().expect("load");
        let mut most = 0;
        let mut first = 0;
        for (last, t) in starts.iter().enumerate() {
            while t.duration_since(starts[first]) >= Duration::from_secs(1) {
                first += 1;
            }
            most = most.max(last - first + 1);
        }
        most
    }
}

/// Counts a PG request for as long as it runs.
pub async fn meter(State(shared): Sh, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/__admin") {
        return next.run(request).await;
    }
    let load = &shared.load;
    load.starts.lock().expect("load").push(Instant::now());
    let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    load.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = next.run(request).await;
    load.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// `GET /__admin/load`: the peaks since the last reset.
pub async fn report(State(shared): Sh) -> Response {
    let load = &shared.load;
    Json(json!({
        "requests": load.starts.lock().expect("load").len(),
        "max_in_flight": load.max_in_flight.load(Ordering::SeqCst),
        "max_per_second": load.max_per_second(),
    }))
    .into_response()
}

/// `DELETE /__admin/load`: starts counting afresh.
pub async fn reset(State(shared): Sh) -> Response {
    shared.load.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// The answer of a [`crate::state::Fault::TooManyRequests`]: `429`, with `Retry-After` if given.
pub fn too_many_requests(retry_after_s: Option<u64>) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "sandbox fault: 429").into_response();
    if let Some(s) = retry_after_s {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
    }
    response
}
