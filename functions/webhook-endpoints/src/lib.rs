//! `webhook-endpoints` (DESIGN §12, issue 23): the partner's webhook endpoints, its events and the
//! delivery log, behind the partner API key.
//!
//! - `POST /webhook-endpoints {url, event_types?, description?}` — registers an endpoint and
//!   answers its signing secret (`whsec_…`), shown this once;
//! - `GET /webhook-endpoints`, `GET /webhook-endpoints/{id}`, `DELETE /webhook-endpoints/{id}`;
//! - `POST /webhook-endpoints/{id}/rotate {overlap_seconds?}` — a new secret (shown once); the
//!   old ones keep signing beside it for the overlap (default a day, at most a week);
//! - `GET /webhook-endpoints/{id}/deliveries?limit&cursor` — the attempt log, newest event first;
//! - `GET /events?type&since&limit&cursor` — the partner's events of the last 30 days;
//! - `POST /events/{id}/redeliver {endpoint_id?}` — delivers an event again, now.
//!
//! An endpoint URL must be `https` to a public host (SSRF, [`paycycle::webhook_targets`]); only
//! where time travel is allowed (the local stack) may it be `http://127.0.0.1`.

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use lambda_http::{Body, Error, Request, RequestExt, Response};
use paycycle::api::{self, ApiError};
use paycycle::config::WebhookConfig;
use paycycle::domain::events::EventKind;
use paycycle::standard_webhooks::SigningSecret;
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::delivery_queue::DeliveryQueue;
use paycycle::store::partner_webhooks::{
    DeliveryKey, DeliveryRecord, DeliveryStatus, EndpointRecord, MAX_ENDPOINTS_PER_PARTNER, PartnerEvent, StoredSecret,
    deliveries_lookup, events_lookup, partner_event_position,
};
use paycycle::store::{Store, StoreError};
use paycycle::webhook_targets::check_endpoint_url;
use serde::Deserialize;
use serde_json::{Value, json};

/// A rotation's overlap when the partner names none, and the longest it may name.
pub const DEFAULT_OVERLAP: SignedDuration = SignedDuration::from_hours(24);
pub const MAX_OVERLAP: SignedDuration = SignedDuration::from_hours(7 * 24);

#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    pub queue: DeliveryQueue,
    /// The local stack: endpoints on loopback `http` are allowed.
    pub allow_loopback: bool,
}

impl Deps {
    pub fn new(config: &WebhookConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self {
            store: Store::new(sdk, &config.table),
            queue: DeliveryQueue::new(sdk, &config.delivery_queue_url),
            allow_loopback: config.allow_time_travel,
        }
    }
}

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req).await;
    Ok(api::respond(result, &request_id, "webhook-endpoints"))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let key = api::authenticate(&deps.store, req).await?;
    let path = req.uri().path().trim_end_matches('/');
    let id = api::path_param(req, "id");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let not_allowed = || ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here");
    match (segments.as_slice(), req.method(), id) {
        (["webhook-endpoints"], &Method::POST, _) => create(deps, &key, req).await,
        (["webhook-endpoints"], &Method::GET, _) => list(deps, &key).await,
        (["webhook-endpoints", _], &Method::GET, Some(id)) => get(deps, &key, &id).await,
        (["webhook-endpoints", _], &Method::DELETE, Some(id)) => delete(deps, &key, &id).await,
        (["webhook-endpoints", _, "rotate"], &Method::POST, Some(id)) => rotate(deps, &key, &id, req).await,
        (["webhook-endpoints", _, "deliveries"], &Method::GET, Some(id)) => deliveries(deps, &key, &id, req).await,
        (["events"], &Method::GET, _) => events(deps, &key, req).await,
        (["events", _, "redeliver"], &Method::POST, Some(id)) => redeliver(deps, &key, &id, req).await,
        (["webhook-endpoints", ..] | ["events", ..], _, _) => Err(not_allowed()),
        _ => Err(ApiError::route_not_found()),
    }
}

fn endpoint_json(r: &EndpointRecord) -> Value {
    json!({
        "id": r.endpoint_id,
        "url": r.url,
        "description": r.description,
        "event_types": if r.event_types.is_empty() { json!(["*"]) } else { json!(r.event_types) },
        "status": r.status,
        "failing_since": r.failing_since.map(|t| t.to_string()),
        "created_at": r.created_at.to_string(),
        "secrets": r.secrets.iter().map(|s| json!({
            "created_at": s.created_at.to_string(),
            "expires_at": s.expires_at.map(|t| t.to_string()),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// The event types asked for: `["*"]` or none = every type; each must be a type paycycle
/// publishes ([`EventKind::ALL`]).
fn event_types(asked: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let asked = asked.unwrap_or_default();
    if asked.is_empty() || asked.iter().any(|t| t == "*") {
        return if asked.len() <= 1 {
            Ok(Vec::new())
        } else {
            Err(ApiError::bad_request("invalid_event_types", "\"*\" (every type) stands alone"))
        };
    }
    let mut types = Vec::new();
    for t in asked {
        if !EventKind::ALL.iter().any(|k| k.detail_type() == t) {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.detail_type()).collect();
            return Err(ApiError::bad_request(
                "invalid_event_types",
                format!("unknown event type {t:?}; known: {}", known.join(", ")),
            ));
        }
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

async fn create(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = api::parse_json(req)?;
    if body.url.len() > 2048 {
        return Err(ApiError::bad_request("invalid_url", "url must be at most 2048 characters"));
    }
    let url = check_endpoint_url(&body.url, deps.allow_loopback)
        .map_err(|e| ApiError::bad_request("invalid_url", e.to_string()))?;
    let description = body.description.map(|d| d.trim().to_string()).filter(|d| !d.is_empty());
    if description.as_ref().is_some_and(|d| d.chars().count() > 200) {
        return Err(ApiError::bad_request("invalid_request", "description must be at most 200 characters"));
    }
    let now = Timestamp::now();
    let secret = SigningSecret::generate();
    let record = EndpointRecord {
        description,
        ..EndpointRecord::new(
            paycycle::ids::new_id("we"),
            &key.partner_id,
            url,
            event_types(body.event_types)?,
            StoredSecret::new(secret.expose()),
            now,
        )
    };
    match deps.store.create_endpoint(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "too_many_endpoints",
                format!(
                    "a partner has at most {MAX_ENDPOINTS_PER_PARTNER} endpoints; delete one first (or retry if you created two at once)"
                ),
            ));
        }
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(endpoint_id = %record.endpoint_id, partner_id = %record.partner_id, "webhook endpoint registered");
    let mut v = endpoint_json(&record);
    v["secret"] = json!(secret.expose());
    Ok(api::json(StatusCode::CREATED, &v))
}

async fn list(deps: &Deps, key: &ApiKeyRecord) -> Result<Response<Body>, ApiError> {
    let endpoints = deps.store.endpoints_of(&key.partner_id).await.map_err(store_error)?;
    let data: Vec<Value> = endpoints.iter().map(endpoint_json).collect();
    Ok(api::json(StatusCode::OK, &json!({"data": data, "limit": MAX_ENDPOINTS_PER_PARTNER})))
}

/// The key's partner's endpoint; 404 for anyone else's.
async fn owned(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<EndpointRecord, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    deps.store
        .get_endpoint(&key.partner_id, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

async fn get(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<Response<Body>, ApiError> {
    Ok(api::json(StatusCode::OK, &endpoint_json(&owned(deps, key, id).await?)))
}

fn concurrent_change() -> ApiError {
    ApiError::conflict("concurrent_change", "the endpoint changed meanwhile; read it and retry")
}

async fn delete(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<Response<Body>, ApiError> {
    let r = owned(deps, key, id).await?;
    match deps.store.delete_endpoint(&r).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(concurrent_change()),
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(endpoint_id = %r.endpoint_id, "webhook endpoint deleted");
    Ok(api::json(StatusCode::OK, &json!({"id": r.endpoint_id, "deleted": true})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    overlap_seconds: Option<i64>,
}

async fn rotate(deps: &Deps, key: &ApiKeyRecord, id: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let empty = api::body(req)?.iter().all(u8::is_ascii_whitespace);
    let body: RotateBody = if empty { RotateBody::default() } else { api::parse_json(req)? };
    let overlap = match body.overlap_seconds {
        None => DEFAULT_OVERLAP,
        Some(s) if (0..=MAX_OVERLAP.as_secs()).contains(&s) => SignedDuration::from_secs(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("overlap_seconds must be 0-{}", MAX_OVERLAP.as_secs()),
            ));
        }
    };
    let r = owned(deps, key, id).await?;
    let secret = SigningSecret::generate();
    let next = r.rotated(StoredSecret::new(secret.expose()), Timestamp::now(), overlap);
    match deps.store.put_endpoint_next(r.version, &next).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(concurrent_change()),
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(endpoint_id = %r.endpoint_id, overlap_s = overlap.as_secs(), "webhook secret rotated");
    let mut v = endpoint_json(&next);
    v["secret"] = json!(secret.expose());
    Ok(api::json(StatusCode::OK, &v))
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempt_count": d.attempt_count,
        "next_attempt_at": d.due_at.filter(|_| d.status == DeliveryStatus::Pending).map(|t| t.to_string()),
        "attempts": d.attempts.iter().map(|a| json!({
            "at": a.at.to_string(),
            "duration_ms": a.duration_ms,
            "status_code": a.status_code,
            "error": a.error,
            "response_body": a.response_body,
        })).collect::<Vec<_>>(),
    })
}

async fn deliveries(deps: &Deps, key: &ApiKeyRecord, id: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let r = owned(deps, key, id).await?;
    let lookup = deliveries_lookup(&r.endpoint_id);
    let prefix = format!("WHDEL#{}#", r.endpoint_id);
    let start =
        req.query_string_parameters().first("cursor").map(|c| api::decode_cursor(c, &lookup, &prefix)).transpose()?;
    let page = deps.store.deliveries_of(&r.endpoint_id, api::page_limit(req)?, start).await.map_err(store_error)?;
    let data: Vec<Value> = page.items.iter().map(delivery_json).collect();
    let next_cursor = page.next.as_ref().map(api::encode_cursor);
    Ok(api::json(StatusCode::OK, &json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor})))
}

fn event_json(e: &PartnerEvent) -> Value {
    // The payload is the JSON paycycle wrote; a stored one that does not parse is shown as text.
    let payload: Value = serde_json::from_str(&e.payload).unwrap_or_else(|_| json!(e.payload));
    json!({"id": e.event_id, "type": e.event_type, "occurred_at": e.occurred_at.to_string(), "payload": payload})
}

/// How many events one `GET /events?type=` reads at most: past it, the answer carries what it
/// found and a cursor (a filter over a busy month must not read the whole month in one request).
const TYPE_FILTER_SCAN: usize = 1_000;

async fn events(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let params = req.query_string_parameters();
    let kind = params.first("type").map(str::to_string);
    if let Some(t) = &kind {
        event_types(Some(vec![t.clone()]))?;
    }
    let since = params
        .first("since")
        .map(|s| s.parse::<Timestamp>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_request", "since must be an RFC 3339 instant"))?;
    let lookup = events_lookup(&key.partner_id);
    let start = params
        .first("cursor")
        .map(|c| api::decode_cursor(c, &lookup, &format!("WHEVT#{}#", key.partner_id)))
        .transpose()?;
    // A cursor from before `since` would page outside the range asked for.
    let floor = since.map(|s| format!("{:015}", s.as_millisecond().max(0)));
    let cursor_sk = start.as_ref().and_then(|s| s.get("lookup_sk")).and_then(|v| v.as_s().ok());
    if let (Some(floor), Some(at)) = (&floor, cursor_sk)
        && at.as_str() < floor.as_str()
    {
        return Err(ApiError::bad_request("invalid_cursor", "the cursor is from before `since`"));
    }
    let limit = api::page_limit(req)?;
    let (data, next) = match kind {
        None => {
            let page = deps.store.partner_events(&key.partner_id, since, limit, start).await.map_err(store_error)?;
            (page.items, page.next)
        }
        Some(kind) => filtered_events(deps, &key.partner_id, &kind, since, limit, start).await?,
    };
    let data: Vec<Value> = data.iter().map(event_json).collect();
    let next_cursor = next.as_ref().map(api::encode_cursor);
    Ok(api::json(StatusCode::OK, &json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor})))
}

/// Up to `limit` events of type `kind`, reading at most [`TYPE_FILTER_SCAN`] events; the position
/// to go on from, if the log goes on.
async fn filtered_events(
    deps: &Deps,
    partner: &str,
    kind: &str,
    since: Option<Timestamp>,
    limit: i32,
    mut start: Option<paycycle::store::Item>,
) -> Result<(Vec<PartnerEvent>, Option<paycycle::store::Item>), ApiError> {
    let want = usize::try_from(limit).unwrap_or(1);
    let (mut found, mut scanned) = (Vec::new(), 0usize);
    loop {
        let page = deps.store.partner_events(partner, since, 100, start).await.map_err(store_error)?;
        let read = page.items.len();
        for (i, event) in page.items.into_iter().enumerate() {
            if event.event_type != kind {
                continue;
            }
            found.push(event);
            if found.len() == want {
                let more = i + 1 < read || page.next.is_some();
                let next = more.then(|| partner_event_position(&found[want - 1]));
                return Ok((found, next));
            }
        }
        scanned += read;
        match page.next {
            Some(next) if scanned < TYPE_FILTER_SCAN => start = Some(next),
            other => return Ok((found, other)),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {
    #[serde(default)]
    endpoint_id: Option<String>,
}

/// Puts the event's delivery to each (or the named) endpoint back on a fresh retry schedule,
/// due now, and queues it. A delivery being attempted right now answers 409.
async fn redeliver(deps: &Deps, key: &ApiKeyRecord, id: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let empty = api::body(req)?.iter().all(u8::is_ascii_whitespace);
    let body: RedeliverBody = if empty { RedeliverBody::default() } else { api::parse_json(req)? };
    let event = match id.len() {
        1..=64 => deps.store.get_partner_event(&key.partner_id, id).await.map_err(store_error)?,
        _ => None,
    }
    .ok_or_else(|| ApiError::not_found("event"))?;
    let endpoints: Vec<EndpointRecord> = match &body.endpoint_id {
        Some(endpoint_id) => vec![owned(deps, key, endpoint_id).await?],
        None => deps.store.endpoints_of(&key.partner_id).await.map_err(store_error)?,
    };
    let now = Timestamp::now();
    let mut keys = Vec::new();
    for endpoint in endpoints.iter().filter(|e| body.endpoint_id.is_some() || e.wants(&event.event_type)) {
        let key = DeliveryKey { endpoint_id: endpoint.endpoint_id.clone(), event_id: event.event_id.clone() };
        reset_delivery(deps, &event, &key, now).await?;
        keys.push(key);
    }
    deps.queue.send(&keys).await.map_err(store_error)?;
    let queued: Vec<&str> = keys.iter().map(|k| k.endpoint_id.as_str()).collect();
    Ok(api::json(StatusCode::ACCEPTED, &json!({"event_id": event.event_id, "queued_for": queued})))
}

async fn reset_delivery(deps: &Deps, event: &PartnerEvent, key: &DeliveryKey, now: Timestamp) -> Result<(), ApiError> {
    let fresh = DeliveryRecord::new(event, &key.endpoint_id, now);
    if deps.store.create_delivery(&fresh).await.map_err(store_error)? {
        return Ok(());
    }
    let read = deps.store.get_delivery(key).await.map_err(store_error)?.ok_or_else(concurrent_change)?;
    if read.leased(now) {
        return Err(ApiError::conflict(
            "delivery_in_progress",
            "this delivery is being attempted right now; retry in a minute",
        ));
    }
    let next = DeliveryRecord {
        status: DeliveryStatus::Pending,
        due_at: Some(now),
        retry_started_at: None,
        version: read.version + 1,
        ..read.clone()
    };
    match deps.store.put_delivery_next(read.version, &next).await {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(concurrent_change()),
        Err(e) => Err(store_error(e)),
    }
}

#[cfg(test)]
mod in_memory_tests;
