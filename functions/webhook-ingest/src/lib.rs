//! `webhook-ingest`: `POST /webhooks/steppay` and `POST /webhooks/payple` (DESIGN §3), and `HEAD`
//! on both (200, no body, nothing stored: Payple checks a webhook URL before it uses it).
//!
//! Store first, verify later: the raw event is stored with one conditional `PutItem` keyed by
//! its dedupe key, and the answer is a fast 200 — no PG is called here (Payple wants an answer
//! within 10 s). Nothing in the body is trusted: it only tells verify what to look up. A repeat
//! delivery is a no-op 200. Malformed bodies get a JSON 4xx; a StepPay v2 webhook with a bad
//! signature (when a signing secret is configured) gets 401 and is not stored — a valid one is
//! never refused for its age (StepPay's portal re-sends are not re-signed; verify asks StepPay).
//! A v2 event type paycycle does not use is stored (verify marks it ignored), never refused. If the
//! table cannot be written, the answer is 503 so the PG delivers again: nothing is lost.

use std::collections::BTreeMap;

use http::StatusCode;
use jiff::Timestamp;
use lambda_http::{Body, Error, Request, Response};
use paycycle::api::{self, ApiError};
use paycycle::boot::Boot;
use paycycle::pg::payple::transformers::PaypleResult;
use paycycle::pg::steppay::webhook::{self as steppay_webhook, SteppayWebhook};
use paycycle::secret::Secret;
use paycycle::store::webhooks::{Stored, WebhookEvent};
use paycycle::store::{Store, StoreError};
use serde_json::json;

/// Everything the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    /// StepPay v2 signing secrets; empty = signatures are not checked.
    pub steppay_signing_secrets: Vec<Secret>,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        Self {
            store: Store::new(&boot.sdk, &boot.config.table),
            steppay_signing_secrets: boot.secrets.steppay_webhook_secrets.clone(),
        }
    }
}

/// The request headers worth keeping with the event.
const KEPT_HEADERS: &[&str] = &["user-agent", "steppay-signature", "x-amzn-trace-id", "x-forwarded-for"];

/// Which PG a webhook route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pg {
    Steppay,
    Payple,
}

impl Pg {
    fn name(self) -> &'static str {
        match self {
            Pg::Steppay => "steppay",
            Pg::Payple => "payple",
        }
    }
}

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    Ok(match ingest(deps, &req, Timestamp::now()).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(status = e.status.as_u16(), code = %e.code, path = %req.uri().path(), "webhook refused");
            e.into_response(&request_id)
        }
    })
}

fn content_type(req: &Request) -> Result<String, ApiError> {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if ct.starts_with("application/json") || ct.starts_with("application/x-www-form-urlencoded") {
        Ok(ct)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "webhooks must be application/json or application/x-www-form-urlencoded",
        ))
    }
}

/// The dedupe key of a StepPay webhook, after its signature (v2, when configured) holds.
fn steppay_key(deps: &Deps, req: &Request, ct: &str, body: &[u8]) -> Result<String, ApiError> {
    let parsed = steppay_webhook::parse(ct, body)
        .map_err(|e| ApiError::bad_request("invalid_webhook", format!("not a StepPay webhook: {e}")))?;
    match parsed {
        SteppayWebhook::Payment(w) => Ok(w.dedupe_key()),
        SteppayWebhook::V2(w) => {
            if !deps.steppay_signing_secrets.is_empty() {
                let header = req.headers().get("steppay-signature").and_then(|v| v.to_str().ok());
                steppay_webhook::verify_signature(header, body, &deps.steppay_signing_secrets)
                    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string()))?;
            }
            w.dedupe_key().ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_webhook",
                    "the webhook's data names nothing to look up (order code or id, subscriptionId, idKey)",
                )
            })
        }
    }
}

fn payple_key(ct: &str, body: &[u8]) -> Result<String, ApiError> {
    let r = PaypleResult::parse(ct, body)
        .map_err(|e| ApiError::bad_request("invalid_webhook", format!("not a Payple result: {e}")))?;
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !has(&r.oid) || !has(&r.rst) {
        return Err(ApiError::bad_request("invalid_webhook", "a Payple webhook needs PCD_PAY_OID and PCD_PAY_RST"));
    }
    Ok(r.dedupe_key())
}

/// The answer to `HEAD` on a webhook route: 200 with no body.
fn head_ok() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::OK;
    response
}

async fn ingest(deps: &Deps, req: &Request, now: Timestamp) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/');
    let pg = if path.ends_with("/webhooks/steppay") {
        Pg::Steppay
    } else if path.ends_with("/webhooks/payple") {
        Pg::Payple
    } else {
        return Err(ApiError::route_not_found());
    };
    if req.method() == http::Method::HEAD {
        // Payple checks a webhook URL (HEAD) before it delivers to it: 200, no body, nothing
        // read or stored. Both routes answer alike.
        return Ok(head_ok());
    }
    if req.method() != http::Method::POST {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "webhooks are POSTed"));
    }
    let body = api::body(req)?;
    let ct = content_type(req)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_encoding", "the webhook body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_webhook", "the webhook body is empty"));
    }
    let dedupe_key = match pg {
        Pg::Steppay => steppay_key(deps, req, &ct, body)?,
        Pg::Payple => payple_key(&ct, body)?,
    };
    if dedupe_key.len() > 1024 {
        return Err(ApiError::bad_request("invalid_webhook", "the webhook's identifiers are too long"));
    }
    let headers: BTreeMap<String, String> = KEPT_HEADERS
        .iter()
        .filter_map(|h| req.headers().get(*h).and_then(|v| v.to_str().ok()).map(|v| (h.to_string(), v.to_string())))
        .collect();
    let event = WebhookEvent::received(pg.name(), dedupe_key, &ct, text.to_string(), headers, now);
    let duplicate = match deps.store.put_webhook_event(&event).await {
        Ok(Stored::New) => false,
        Ok(Stored::Reopened) => {
            // The stream announces only new items: verify's sweep checks this one (≤ 10 min).
            tracing::warn!(pg = pg.name(), dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key),
                "a delivery replaced a rejected webhook with the same key");
            false
        }
        Err(StoreError::AlreadyExists(_)) => true,
        Err(e) => {
            // Not stored: a non-2xx makes the PG deliver it again.
            tracing::error!(error = %e, pg = pg.name(), "webhook not stored");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the webhook could not be stored; deliver it again",
            ));
        }
    };
    tracing::info!(pg = pg.name(), dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key), duplicate, "webhook stored");
    Ok(api::json(StatusCode::OK, &json!({"received": true, "duplicate": duplicate})))
}
