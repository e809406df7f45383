//! `verify` (DESIGN §4): confirms first payments and webhooks with the PG, never trusting the
//! caller. Two entry points, one code path ([`first::complete`]):
//! - `POST /payments/verify` — the partner's redirect handler forwards what the PG handed the
//!   browser (`checkout_id` + Payple `PCD_*` fields, or StepPay `order_code` / `idKey`);
//! - the table's stream — each newly stored webhook event ([`webhooks::process`]); failures are
//!   reported per record (`batchItemFailures`) so only they are retried, and the event source
//!   mapping sends a record that keeps failing to the dead-letter queue;
//! - a schedule ([`sweep`], every few minutes): every stored webhook reaches a final verdict —
//!   events still `received` (the stream gave up, the PG answered 5xx) are verified again with
//!   backoff, and one older than a day logs the `WebhookUnverified` alarm line; and a Payple
//!   checkout whose own payment was sent (AUTH's first charge, CERT's confirm) is resolved by
//!   lookup under the OID that payment charged even if its verify lost the answer and nobody
//!   calls again.
//!
//! A checkout is completed at most once: it is held by one verify at a time (a conditional
//! write), the payment is recorded once per PG transaction, and the completion, the payment, the
//! active subscription and the events are one transaction. Verifying a completed checkout again
//! returns the same answer, so the route needs no `Idempotency-Key`.

pub mod card;
pub mod first;
pub mod webhooks;

pub use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord as StreamRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse as StreamResponse};
use http::{Method, StatusCode};
use jiff::Timestamp;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use paycycle::api::{self, ApiError};
use paycycle::store::Item;
use paycycle::store::stream::{entity, record_from_image};
use paycycle::store::webhooks::WebhookEvent;
use paycycle::views::{checkout_json, payment_json, subscription_json};
use serde_json::{Map, Value, json};

use crate::first::VerifyError;
use crate::webhooks::Verdict;
use paycycle::pg::{Evidence, Source};

/// Everything the handler needs, built once per cold start ([`Services::new`]).
pub type Deps = paycycle::boot::Services;

/// The Lambda entry: a DynamoDB stream batch (`Records`) or an HTTP API (v2) request.
pub async fn dispatch(deps: &Deps, event: lambda_runtime::LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if payload.get("Records").is_some() {
        // A batch that is not a DynamoDB stream event is a function error: the event source
        // mapping retries it, bisects it and sends what keeps failing to the DLQ.
        let batch: StreamEvent = serde_json::from_value(payload)?;
        return Ok(serde_json::to_value(stream(deps, &batch, Timestamp::now()).await)?);
    }
    if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        return Ok(sweep(deps, sweep_now(&payload)?).await);
    }
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
    let request = Request::from(request).with_lambda_context(context);
    let response = handler(deps, request).await?;
    Ok(gateway_response(response))
}

/// An HTTP API (payload v2) response.
fn gateway_response(response: Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), Value::String(v.to_string()))))
        .collect();
    let (body, base64) = match body {
        Body::Text(t) => (t, false),
        Body::Binary(b) => {
            use base64::Engine;
            (base64::engine::general_purpose::STANDARD.encode(b), true)
        }
        _ => (String::new(), false),
    };
    json!({"statusCode": parts.status.as_u16(), "headers": headers, "body": body, "isBase64Encoded": base64})
}

/// A stream batch: each new webhook event verified; failures reported for retry
/// (`ReportBatchItemFailures`: the first failed record's sequence number).
pub async fn stream(deps: &Deps, batch: &StreamEvent, now: Timestamp) -> StreamResponse {
    let mut response = StreamResponse::default();
    for record in &batch.records {
        if let Err(reason) = stream_record(deps, record, now).await {
            let sequence = record.change.sequence_number.clone();
            tracing::warn!(sequence = sequence.as_deref().unwrap_or_default(), reason = %reason, "webhook event not verified yet; it will be retried");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = sequence;
            response.batch_item_failures.push(failure);
            // Lambda retries from the first reported record; later ones come again anyway.
            break;
        }
    }
    response
}

async fn stream_record(deps: &Deps, record: &StreamRecord, now: Timestamp) -> Result<(), NotVerified> {
    if record.event_name != "INSERT" || record.change.new_image.is_empty() {
        return Ok(());
    }
    let item: Item = record.change.new_image.clone().into();
    if entity(&item) != Some("webhook_event") {
        return Ok(());
    }
    let event: WebhookEvent = record_from_image(item).map_err(NotVerified::Unreadable)?;
    verify_event(deps, &event, now).await
}

/// The sweep's clock: the wall clock (the schedule's own `time` may be late); locally, with
/// `PAYCYCLE_ALLOW_TIME_TRAVEL=true`, an event may carry `{"now": ...}` like renew's ticks.
fn sweep_now(payload: &Value) -> Result<Timestamp, Error> {
    let Some(now) = payload.get("now").and_then(Value::as_str) else { return Ok(Timestamp::now()) };
    if std::env::var("PAYCYCLE_ALLOW_TIME_TRAVEL").as_deref() != Ok("true") {
        return Err("`now` in the event is time travel, allowed only with PAYCYCLE_ALLOW_TIME_TRAVEL=true".into());
    }
    Ok(now.parse::<Timestamp>().or_else(|_| now.parse::<jiff::Zoned>().map(|z| z.timestamp()))?)
}

/// Items one sweep takes from each queue (the next run takes the rest).
pub const SWEEP_BATCH: i32 = 100;

/// How long a webhook may stay unverified before the alarm line is logged.
pub const WEBHOOK_ALARM_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// One scheduled run: open first charges, then webhooks the stream did not settle.
pub async fn sweep(deps: &Deps, now: Timestamp) -> Value {
    let first_charges = sweep_first_charges(deps, now).await;
    let (verified, deferred) = sweep_webhooks(deps, now).await;
    tracing::info!(first_charges, verified, deferred, "sweep done");
    json!({"first_charges": first_charges, "webhooks_verified": verified, "webhooks_deferred": deferred})
}

/// Payple checkouts whose own payment was sent (AUTH first charge, CERT confirm) and whose verify
/// is not running: looked up under the OID that payment charged and completed (or failed on
/// Payple's word). Returns how many were resolved.
async fn sweep_first_charges(deps: &Deps, now: Timestamp) -> usize {
    let before = now.checked_sub(first::VERIFY_LEASE).unwrap_or(now);
    let open = match deps.store.open_first_charges(before, SWEEP_BATCH).await {
        Ok(open) => open,
        Err(e) => {
            tracing::error!(error = %e, "open first charges not read");
            return 0;
        }
    };
    let mut resolved = 0;
    for checkout in open {
        let id = checkout.checkout_id.clone();
        match first::complete(deps, checkout, &Evidence::OwnSend, Source::Webhook, now).await {
            Ok(_) | Err(VerifyError::Failed(_)) | Err(VerifyError::Refused(_)) => resolved += 1,
            Err(VerifyError::InProgress) => {}
            Err(e) => unresolved_first_charge(deps, &id, &e, now).await,
        }
    }
    resolved
}

/// How long a checkout's own payment may stay unresolved before a person is called.
pub const FIRST_CHARGE_ALARM_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// An open payment the sweep could not resolve (Payple shows none yet, a CERT never fails on
/// "not found", the lookup could not answer): looked at again after a backoff of a quarter of its
/// age (at most 6 h), and past a day the needs-review alarm names everything a person needs.
async fn unresolved_first_charge(deps: &Deps, id: &str, error: &VerifyError, now: Timestamp) {
    let Ok(Some(c)) = deps.store.get_checkout(id).await else { return };
    let Some(sent) = c.latest_send().filter(|_| c.status == paycycle::store::checkouts::CheckoutStatus::Open) else {
        return;
    };
    let age = now.duration_since(sent);
    if age > FIRST_CHARGE_ALARM_AGE {
        tracing::error!(alarm = "paycycle_needs_review", checkout_id = %id, oid = %first::own_send_reference(deps, &c),
            amount = %c.plan.amount, first_sent_at = ?c.first_charge_at, last_sent_at = %sent, reason = ?error,
            "a checkout's own Payple payment is unresolved after a day: check Payple for it");
    } else {
        tracing::warn!(checkout_id = %id, error = ?error, "first charge not resolved yet");
    }
    let backoff = (age / 4).clamp(jiff::SignedDuration::ZERO, jiff::SignedDuration::from_hours(6));
    let next = paycycle::store::checkouts::CheckoutRecord { sweep_after: now.checked_add(backoff).ok(), ..c.next() };
    if let Err(e) = deps.store.update_checkout(&next).await {
        tracing::debug!(checkout_id = %id, error = %e, "sweep backoff not written (changed meanwhile)");
    }
}

/// Webhook events still `received` whose next try is due: verified again; those that still
/// get no verdict are deferred with backoff (5 min doubling, at most 6 h).
async fn sweep_webhooks(deps: &Deps, now: Timestamp) -> (usize, usize) {
    let due = match deps.store.due_webhook_events(now, SWEEP_BATCH).await {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "unverified webhooks not read");
            return (0, 0);
        }
    };
    let (mut verified, mut deferred) = (0, 0);
    for event in due {
        let Err(reason) = verify_event(deps, &event, now).await else {
            verified += 1;
            continue;
        };
        deferred += 1;
        let attempts = event.attempts.saturating_add(1);
        let backoff =
            jiff::SignedDuration::from_mins(5 * (1_i64 << attempts.min(7))).min(jiff::SignedDuration::from_hours(6));
        let next = now.checked_add(backoff).unwrap_or(now);
        let dedupe_key = paycycle::pii::mask_reference(&event.dedupe_key);
        if now.duration_since(event.received_at) > WEBHOOK_ALARM_AGE {
            tracing::error!(alarm = "WebhookUnverified", pg = %event.pg, dedupe_key = %dedupe_key, attempts, reason = %reason,
                received_at = %event.received_at, "a stored webhook has had no verdict for over a day");
        } else {
            tracing::warn!(pg = %event.pg, dedupe_key = %dedupe_key, attempts, reason = %reason, next_try = %next, "webhook still unverified");
        }
        if let Err(e) = deps.store.defer_webhook_event(&event, attempts, next).await {
            tracing::warn!(dedupe_key = %dedupe_key, error = %e, "webhook not deferred (settled meanwhile?)");
        }
    }
    (verified, deferred)
}

/// Why a stored webhook event has no verdict yet: it is tried again (the stream's retry, then the
/// sweep), never dropped.
#[derive(Debug, thiserror::Error)]
pub enum NotVerified {
    /// The stream image is not a webhook event this code can read.
    #[error("unreadable webhook event: {0}")]
    Unreadable(paycycle::store::StoreError),
    /// The PG could not be asked, or its answer is not final yet (the reason says which).
    #[error("{0}")]
    NoVerdictYet(String),
    /// The verdict was reached but could not be written.
    #[error("verdict not recorded: {0}")]
    NotRecorded(paycycle::store::StoreError),
}

/// Verifies one stored webhook event and records the verdict on it. `Err` = retry later.
pub async fn verify_event(deps: &Deps, event: &WebhookEvent, now: Timestamp) -> Result<(), NotVerified> {
    tracing::debug!(pg = %event.pg, dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key), "verifying webhook event");
    match webhooks::process(deps, event, now).await {
        Verdict::Final(status, outcome) => {
            tracing::info!(pg = %event.pg, dedupe_key = %paycycle::pii::mask_reference(&event.dedupe_key), status = status.as_str(), outcome = %outcome, "webhook verified");
            deps.store
                .mark_webhook_event(event.pg, &event.dedupe_key, status, &outcome, now)
                .await
                .map_err(NotVerified::NotRecorded)
        }
        Verdict::Retry(reason) => Err(NotVerified::NoVerdictYet(reason)),
    }
}

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req).await;
    Ok(api::respond(result, &request_id, "verify"))
}

/// The `POST /payments/verify` body: JSON, or the form Payple posted to the partner as is.
fn body_fields(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let bytes = api::body(req)?;
    let ct = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let ct = ct.trim().to_ascii_lowercase();
    if !ct.starts_with("application/json") && !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or application/x-www-form-urlencoded",
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request("invalid_encoding", "the body is not UTF-8"));
    }
    webhooks::fields(&ct, bytes).ok_or_else(|| ApiError::bad_request("invalid_json", "the body must be a JSON object"))
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST /payments/verify"));
    }
    let key = api::authenticate(&deps.store, req).await?;
    let fields = body_fields(req)?;
    let checkout_id = paycycle::pg::first::text(&fields, &["checkout_id"])
        .filter(|id| id.len() <= 64)
        .ok_or_else(|| ApiError::bad_request("invalid_request", "checkout_id is required"))?;
    let checkout = match deps.store.get_checkout(&checkout_id).await {
        Ok(Some(c)) if c.partner_id == key.partner_id => c,
        Ok(_) => return Err(ApiError::not_found("checkout")),
        Err(e) => {
            tracing::error!(error = %e, "checkout read failed");
            return Err(ApiError::unavailable());
        }
    };
    let evidence = deps
        .pgs
        .adapter(checkout.pg)
        .evidence_from_partner(&fields)
        .map_err(|why| ApiError::bad_request("invalid_request", why))?;
    // A webhook's verify may hold the checkout for a moment (Payple sends its webhook with the
    // window result): wait for it briefly and answer with its outcome rather than a 409.
    let mut checkout = checkout;
    let mut result = first::complete(deps, checkout.clone(), &evidence, Source::Partner, Timestamp::now()).await;
    for wait_ms in [100, 200, 400, 800, 1_500] {
        if !matches!(result, Err(VerifyError::InProgress)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        checkout = match deps.store.get_checkout(&checkout.checkout_id).await {
            Ok(Some(c)) => c,
            _ => break,
        };
        result = first::complete(deps, checkout.clone(), &evidence, Source::Partner, Timestamp::now()).await;
    }
    match result {
        Ok(c) => {
            let payment = c.payment.as_ref().map(|p| payment_json(p, &[]));
            Ok(api::json(
                StatusCode::OK,
                &json!({
                    "checkout": checkout_json(&c.checkout),
                    "payment": payment,
                    "subscription": subscription_json(&c.subscription),
                }),
            ))
        }
        Err(e) => Err(api_error(e)),
    }
}

fn api_error(e: VerifyError) -> ApiError {
    match e {
        VerifyError::NotFound(what) => ApiError::not_found(what),
        VerifyError::Mismatch(m) => ApiError::unprocessable("evidence_mismatch", m),
        VerifyError::Failed(m) => ApiError::unprocessable("payment_failed", m),
        VerifyError::NotPaid(m) => ApiError::conflict("payment_not_completed", m),
        VerifyError::InProgress => {
            ApiError::conflict("verification_in_progress", "this checkout is being verified; retry shortly")
        }
        VerifyError::AlreadyUsed(m) => ApiError::conflict("payment_already_used", m),
        VerifyError::ChargeInFlight(m) => ApiError::conflict("charge_outcome_unknown", m),
        VerifyError::Refused(m) => ApiError::conflict("illegal_transition", m),
        VerifyError::Pg(e) => {
            tracing::warn!(error = %e, "PG verification call failed");
            ApiError::pg(&e)
        }
        VerifyError::Store(e) => {
            tracing::error!(error = %e, "store failed");
            ApiError::unavailable()
        }
    }
}

#[cfg(test)]
mod in_memory_tests;
