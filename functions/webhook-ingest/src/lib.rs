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
use paycycle::pg::{Credentials, IntakeError, Pg, WebhookIntake};
use paycycle::store::webhooks::{Stored, WebhookEvent};
use paycycle::store::{Store, StoreError};
use serde_json::json;

/// Everything the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    /// The PGs' webhook signing secrets (StepPay v2; none configured = signatures not checked),
    /// read per request so a rotated signing secret takes effect without a redeploy.
    pub credentials: Credentials,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        Self { store: Store::new(&boot.sdk, &boot.config.table), credentials: boot.credentials.clone() }
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

/// The answer to `HEAD` on a webhook route: 200 with no body.
fn head_ok() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::OK;
    response
}

async fn ingest(deps: &Deps, req: &Request, now: Timestamp) -> Result<Response<Body>, ApiError> {
    // The route of every PG in the registry (`/webhooks/{pg}`); any other name is no route.
    let Some(pg) = Pg::of_webhook_path(req.uri().path()) else {
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
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let secrets = deps.credentials.current().await;
    let dedupe_key = pg.webhook_key(&ct, body, header, &secrets).map_err(|e| match e {
        IntakeError::Malformed(m) => ApiError::bad_request("invalid_webhook", m),
        IntakeError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", m),
    })?;
    if dedupe_key.len() > 1024 {
        return Err(ApiError::bad_request("invalid_webhook", "the webhook's identifiers are too long"));
    }
    let headers: BTreeMap<String, String> = pg
        .webhook_headers()
        .iter()
        .filter_map(|h| req.headers().get(*h).and_then(|v| v.to_str().ok()).map(|v| (h.to_string(), v.to_string())))
        .collect();
    let event = WebhookEvent::received(pg, dedupe_key, &ct, pg.stored_body(&ct, text), headers, now);
    let duplicate = match deps.store.put_webhook_event(&event).await {
        Ok(Stored::New) => false,
        Ok(Stored::Reopened) => {
            // The stream announces only new items: verify's sweep checks this one (≤ 10 min).
            tracing::warn!(pg = pg.as_str(), dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key),
                "a delivery replaced a rejected webhook with the same key");
            false
        }
        Err(StoreError::AlreadyExists(_)) => true,
        Err(e) => {
            // Not stored: a non-2xx makes the PG deliver it again.
            tracing::error!(error = %e, pg = pg.as_str(), "webhook not stored");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the webhook could not be stored; deliver it again",
            ));
        }
    };
    tracing::info!(pg = pg.as_str(), dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key), duplicate, "webhook stored");
    Ok(api::json(StatusCode::OK, &json!({"received": true, "duplicate": duplicate})))
}
