//! Every body that crosses the sandbox's PG routes — what our client sends, what the sandbox
//! answers, every webhook the sandbox sends of its own accord — is checked against the shape the
//! PG documents (`pg-shapes/`, see the `pg-shapes` crate). A body off its documented shape is
//! logged as a violation (`GET /__admin/shapes`) and tests assert there are none: the sandbox and
//! the client can then only agree by both following the documents.
//!
//! Checking never changes what is answered; a sandbox fault's body (a 5xx, say) has no documented
//! shape and is not checked. Webhooks a test injects through `/__admin/webhooks/send` are not
//! checked either: they are the test's words, not the PG's.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::{Pg, Shared};

/// Bodies above this are not buffered for checking (no PG body comes near it).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Which PG a route belongs to: StepPay's API lives under `/api/`, Payple's under `/php/`.
fn pg_of(route: &str) -> Option<&'static str> {
    if route.starts_with("/api/") {
        Some("steppay")
    } else if route.starts_with("/php/") {
        Some("payple")
    } else {
        None
    }
}

fn content_type(headers: &axum::http::HeaderMap) -> String {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned()
}

/// The middleware: checks the request and the answer of every PG route.
pub async fn check(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let Some((pg, route)) = route.and_then(|r| Some((pg_of(&r)?, r))) else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": "body too large"}))).into_response();
    };
    record(&shared, pg, &format!("{method} {route}"), |shapes| {
        shapes.check_request(pg, &method, &route, &content_type(&parts.headers), &body)
    });
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let mut body: Bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let drift = shared.shape_log.lock().expect("shape log").drift.clone();
    if let Some((from, to)) = drift {
        body = drifted(&body, &from, &to);
    }
    let status = parts.status.as_u16();
    record(&shared, pg, &format!("{method} {route}"), |shapes| {
        shapes.check_response(pg, &method, &route, status, &content_type(&parts.headers), &body)
    });
    Response::from_parts(parts, Body::from(body))
}

/// `body` with every key `from` renamed `to`, at any depth (a JSON body; others as they are).
fn drifted(body: &Bytes, from: &str, to: &str) -> Bytes {
    fn rename(v: &mut Value, from: &str, to: &str) {
        match v {
            Value::Object(map) => {
                if let Some(x) = map.remove(from) {
                    map.insert(to.to_owned(), x);
                }
                map.values_mut().for_each(|x| rename(x, from, to));
            }
            Value::Array(items) => items.iter_mut().for_each(|x| rename(x, from, to)),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else { return body.clone() };
    rename(&mut value, from, to);
    Bytes::from(value.to_string())
}

/// Checks a webhook the sandbox sends of its own accord.
pub fn check_webhook(shared: &Shared, pg: Pg, content_type: &str, body: &str) {
    let (pg, kind) = match pg {
        Pg::Payple => ("payple", "result"),
        // StepPay's v2 webhooks are `{timestamp, version, event, data}`; the self payment
        // webhook is `{webHookType, orderId, idKey}` (seed 000/001).
        Pg::Steppay if pg_shapes::decode(content_type, body.as_bytes()).is_ok_and(|v| v.get("event").is_some()) => {
            ("steppay", "v2")
        }
        Pg::Steppay => ("steppay", "self"),
    };
    record(shared, pg, &format!("webhook {kind}"), |shapes| {
        shapes.check_webhook(pg, kind, content_type, body.as_bytes())
    });
}

/// The PGs' documented shapes, loaded once per process (every sandbox in it shares them), or why
/// they did not load (itself reported as a violation on every check).
fn shapes() -> &'static Result<pg_shapes::Shapes, String> {
    static SHAPES: std::sync::OnceLock<Result<pg_shapes::Shapes, String>> = std::sync::OnceLock::new();
    SHAPES.get_or_init(|| pg_shapes::Shapes::load_default().map_err(|e| e.to_string()))
}

fn record(
    shared: &Shared,
    pg: &str,
    what: &str,
    check: impl FnOnce(&pg_shapes::Shapes) -> Result<(), pg_shapes::Violation>,
) {
    let result = match shapes() {
        Ok(shapes) => check(shapes),
        Err(why) => Err(pg_shapes::Violation {
            pg: pg.into(),
            what: what.into(),
            direction: pg_shapes::Direction::Request,
            shape: None,
            errors: vec![format!("the documented shapes did not load: {why}")],
        }),
    };
    let mut log = shared.shape_log.lock().expect("shape log");
    *log.checked.entry(format!("{pg} {what}")).or_default() += 1;
    if let Err(violation) = result {
        tracing::warn!(%violation, "a body off its documented shape");
        log.violations.push(violation);
    }
}

/// `GET /__admin/shapes`: what was checked, and the violations.
pub async fn report(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!(*shared.shape_log.lock().expect("shape log"))).into_response()
}

/// `POST /__admin/shapes/drift {"from": "AuthKey", "to": "authKey"}` plants a drift in every JSON
/// answer; `DELETE` removes it.
pub async fn set_drift(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let (Some(from), Some(to)) = (body.get("from").and_then(Value::as_str), body.get("to").and_then(Value::as_str))
    else {
        return (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "give from and to"}))).into_response();
    };
    shared.shape_log.lock().expect("shape log").drift = Some((from.to_owned(), to.to_owned()));
    axum::http::StatusCode::NO_CONTENT.into_response()
}

pub async fn clear_drift(State(shared): State<Arc<Shared>>) -> Response {
    shared.shape_log.lock().expect("shape log").drift = None;
    axum::http::StatusCode::NO_CONTENT.into_response()
}
