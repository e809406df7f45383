//! `subscriptions` (DESIGN §2): the partner's reads and lifecycle changes.
//!
//! - `GET /subscriptions/{id}` — state, current period, next charge (or retry), attempts, payments;
//! - `GET /subscriptions?customer_id=…&limit=…&cursor=…` — a customer's subscriptions, paged;
//! - `POST /subscriptions/{id}/cancel {at_period_end}`, `/pause {at_period_end}`, `/resume`,
//!   `/plan {name?, amount, interval?, interval_count?}`;
//! - `POST /subscriptions/{id}/resolve {verdict, pg_payment_id?, next?, reason}` — a person settles
//!   the charge in review, and `GET /reviews` lists what needs a person ([`review`], DESIGN §13).
//!
//! Every change goes through the domain state machine and is one conditional write on the
//! version read; an illegal transition is a 409 with the reason. A subscription renew is charging
//! right now (a live lease) answers 409 `renewal_in_progress`: a change must never overtake a
//! charge whose outcome renew is about to record. StepPay managed subscriptions are canceled,
//! paused and resumed at StepPay first (its subscription API) and changed here only on StepPay's
//! yes; their plan changes belong to StepPay (its prices) and answer 409 `managed_by_pg`. An
//! `Idempotency-Key` is optional: with one, a
//! retried change gets the first success again (a 409 is never saved: a retry runs again).

use http::{Method, StatusCode};
use jiff::Timestamp;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use paycycle::Secret;
use paycycle::api::{self, ApiError, Keep};
use paycycle::calendar::{Interval, IntervalUnit};
use paycycle::domain::attempt::{AttemptStatus, SubscriptionId};
use paycycle::domain::subscription::{
    MAX_PLAN_AMOUNT, MIN_PLAN_AMOUNT, PauseWhen, Plan, Renewer, SubscriptionState, Transition, TransitionError,
};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::money::Krw;
use paycycle::pg::{PgChange, PgError};
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::{StoreError, sha256_hex};
use paycycle::views::{payment_json, subscription_json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everything the handler needs, built once per cold start ([`Services::new`]).
pub type Deps = paycycle::boot::Services;

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req, &request_id).await;
    Ok(api::respond(result, &request_id, "subscriptions"))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

/// What a POST on a subscription asks, named by the path's last segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Change(Lifecycle),
    /// A person settles the charge in review ([`review`]).
    Resolve,
}

/// A lifecycle change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Cancel,
    Pause,
    Resume,
    Plan,
}

async fn route(deps: &Deps, req: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    let key = api::authenticate(&deps.store, req).await?;
    let path = req.uri().path().trim_end_matches('/');
    if path == "/reviews" {
        return match *req.method() {
            Method::GET => review::list(deps, &key, req).await.map(|v| api::json(StatusCode::OK, &v)),
            _ => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")),
        };
    }
    let id = api::path_param(req, "id");
    let action = match path.rsplit('/').next() {
        Some("cancel") => Some(Action::Change(Lifecycle::Cancel)),
        Some("pause") => Some(Action::Change(Lifecycle::Pause)),
        Some("resume") => Some(Action::Change(Lifecycle::Resume)),
        Some("plan") => Some(Action::Change(Lifecycle::Plan)),
        Some("resolve") => Some(Action::Resolve),
        _ => None,
    };
    let not_allowed = || ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here");
    match (req.method(), id, action) {
        (&Method::GET, None, None) => list(deps, &key, req).await,
        (&Method::GET, Some(id), None) => get(deps, &key, &id).await,
        (&Method::POST, Some(id), Some(action)) => change(deps, &key, &id, action, req, request_id).await,
        (_, Some(_), _) | (_, None, None) => Err(not_allowed()),
        _ => Err(ApiError::route_not_found()),
    }
}

/// The subscription if it exists and belongs to the key's partner; 404 otherwise.
async fn owned(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<SubscriptionRecord, ApiError> {
    let Ok(id) = SubscriptionId::parse(id) else { return Err(ApiError::not_found("subscription")) };
    match deps.store.get_subscription(&id).await.map_err(store_error)? {
        Some(r) if r.partner_id == key.partner_id => Ok(r),
        _ => Err(ApiError::not_found("subscription")),
    }
}

/// What renew will charge next, if it will.
fn next_charge(r: &SubscriptionRecord) -> Value {
    let s = &r.subscription;
    let charges = s.renewer == Renewer::Paycycle
        && matches!(s.state, SubscriptionState::Active | SubscriptionState::PastDue)
        && !(s.collection.is_none() && (s.cancel_at_period_end || s.pause_at_period_end));
    match (charges, s.next_attempt_at) {
        (true, Some(at)) => {
            let (period, attempt) = match &s.collection {
                Some(c) => (c.period, c.attempt),
                None => (s.current_period.map(|p| p.index + 1).unwrap_or(0), 1),
            };
            json!({"at": at.to_string(), "amount": s.plan.amount, "currency": "KRW", "period": period,
                   "attempt": attempt, "retry": attempt > 1})
        }
        _ => Value::Null,
    }
}

fn attempt_json(a: &paycycle::domain::attempt::Attempt) -> Value {
    let (outcome, code, message) = match &a.status {
        AttemptStatus::Declined { code, message, hard } => {
            (if *hard { "declined_hard" } else { "declined" }, Some(code.clone()), Some(message.clone()))
        }
        other => (other.name(), None, None),
    };
    json!({"charge_id": a.charge_id, "period": a.charge_id.period(), "attempt": a.charge_id.attempt(),
           "amount": a.amount, "status": outcome, "requested_at": a.requested_at.to_string(),
           "decline_code": code, "decline_message": message, "resolution": a.resolution})
}

async fn get(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<Response<Body>, ApiError> {
    let r = owned(deps, key, id).await?;
    let (attempts, payments) =
        tokio::try_join!(deps.store.attempts_of(r.id()), deps.store.payments_of_subscription(r.id()))
            .map_err(store_error)?;
    let mut v = subscription_json(&r);
    v["next_charge"] = next_charge(&r);
    v["attempts"] = attempts.iter().map(attempt_json).collect();
    v["payments"] = payments.iter().map(|p| payment_json(p, &[])).collect();
    // What a person needs of the card: company and masked number, never the key (issue 24 §6).
    let newest_card = payments.iter().filter(|p| p.card.is_some()).max_by_key(|p| p.paid_at);
    v["last_paid_with"] = newest_card.map_or(Value::Null, |p| {
        let card = p.card.clone().unwrap_or_default();
        let masked = card.number_masked.as_deref().and_then(paycycle::pii::mask_card_number);
        json!({"card_company": card.name, "number_masked": masked, "payment_id": p.payment_id})
    });
    Ok(api::json(StatusCode::OK, &v))
}

async fn list(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let params = req.query_string_parameters();
    let customer_id = params
        .first("customer_id")
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| ApiError::bad_request("invalid_request", "customer_id is required (1-64 characters)"))?
        .to_string();
    let limit = api::page_limit(req)?;
    let lookup = format!("CUS#{}#{customer_id}", key.partner_id);
    let start = params.first("cursor").map(|c| api::decode_cursor(c, &lookup, "SUB#")).transpose()?;
    let page =
        deps.store.subscriptions_of_customer(&key.partner_id, &customer_id, limit, start).await.map_err(store_error)?;
    let data: Vec<Value> = page.items.iter().map(subscription_json).collect();
    let next_cursor = page.next.as_ref().map(api::encode_cursor);
    Ok(api::json(StatusCode::OK, &json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor})))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WhenBody {
    #[serde(default)]
    at_period_end: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    #[serde(default)]
    name: Option<String>,
    amount: Krw,
    #[serde(default)]
    interval: Option<IntervalUnit>,
    #[serde(default)]
    interval_count: Option<u32>,
}

/// The action's body, canonical (for the idempotency hash); empty bodies are allowed except /plan.
fn parse_body(req: &Request, action: Action) -> Result<Value, ApiError> {
    let bytes = api::body(req)?;
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    match action {
        Action::Change(Lifecycle::Plan) => {
            serde_json::to_value(api::parse_json::<PlanBody>(req)?).map_err(|_| ApiError::internal())
        }
        Action::Resolve => {
            let v: Value = api::parse_json(req)?;
            review::ResolveBody::parse(&v)?;
            Ok(v)
        }
        Action::Change(Lifecycle::Resume) if empty => Ok(json!({})),
        Action::Change(Lifecycle::Resume) => {
            let v: Value = api::parse_json(req)?;
            if v.as_object().is_some_and(|m| m.is_empty()) {
                Ok(v)
            } else {
                Err(ApiError::bad_request("invalid_request", "resume takes no fields"))
            }
        }
        _ if empty => serde_json::to_value(WhenBody::default()).map_err(|_| ApiError::internal()),
        _ => serde_json::to_value(api::parse_json::<WhenBody>(req)?).map_err(|_| ApiError::internal()),
    }
}

async fn change(
    deps: &Deps,
    key: &ApiKeyRecord,
    id: &str,
    action: Action,
    req: &Request,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let body = parse_body(req, action)?;
    let has_key = req.headers().contains_key("idempotency-key");
    if !has_key {
        return apply(deps, key, id, action, &body).await.map(|(status, v)| api::json(status, &v));
    }
    let idem_key = api::idempotency_key(req)?;
    let scope = format!("subscription:{}", key.partner_id);
    let hash = sha256_hex(format!("{id}\n{action:?}\n{body}").as_bytes());
    // A 409 (renewal in progress, concurrent change) is never saved: a retry must be able to
    // succeed once it clears.
    let keep = |status: StatusCode| if status.is_success() { Keep::Save } else { Keep::Release };
    api::idempotent(&deps.store, &scope, &idem_key, &hash, request_id, keep, || apply(deps, key, id, action, &body))
        .await
}

fn renewal_in_progress() -> ApiError {
    ApiError::conflict("renewal_in_progress", "renew is charging this subscription right now; retry in a few seconds")
}

/// Why a lifecycle write's condition failed: a charge in flight (renew claimed it after our read,
/// or an attempt is still pending or unknown) or some other change.
async fn change_conflict(deps: &Deps, read: &SubscriptionRecord, what: &str) -> ApiError {
    let now = Timestamp::now().as_second();
    let leased = match deps.store.get_subscription(read.id()).await {
        Ok(Some(r)) => r.lease_owner.is_some() && r.lease_until > now,
        _ => false,
    };
    if leased || what.contains("|ATT#") {
        return renewal_in_progress();
    }
    ApiError::conflict("concurrent_change", "the subscription changed meanwhile; read it and retry")
}

fn transition_error(e: TransitionError) -> ApiError {
    match e {
        TransitionError::UnknownOutcomePending(charge) => ApiError::conflict(
            "charge_outcome_unknown",
            format!("the outcome of charge {charge} is not known yet; renew resolves it first — retry later"),
        ),
        TransitionError::CollectionInProgress(charge) => ApiError::conflict(
            "collection_in_progress",
            format!("charge {charge} is being collected at the current price; change the plan after it settles"),
        ),
        TransitionError::RenewedByPg => ApiError::conflict(
            "managed_by_pg",
            "StepPay renews this subscription (managed mode): its plan is StepPay's price, changed in StepPay",
        ),
        other => ApiError::conflict("illegal_transition", other.to_string()),
    }
}

/// Where the PG owns the subscription's lifecycle (StepPay managed: StepPay renews it), a cancel,
/// pause or resume is made at the PG first and recorded here only on its yes; no answer or a
/// refusal changes nothing here ([`paycycle::pg::Adapter::change_at_pg`]).
async fn at_pg_first(
    deps: &Deps,
    r: &SubscriptionRecord,
    action: Lifecycle,
    at_period_end: bool,
) -> Result<(), ApiError> {
    let change = match action {
        Lifecycle::Cancel => PgChange::Cancel { at_period_end },
        Lifecycle::Pause => PgChange::Pause { at_period_end },
        Lifecycle::Resume => PgChange::Resume,
        Lifecycle::Plan => return Ok(()),
    };
    let key = pg_subscription(deps, r).await?;
    match deps.pgs.adapter(r.pg).change_at_pg(key.as_ref().map(Secret::expose), change).await {
        Ok(()) => Ok(()),
        Err(PgError::Unsupported(why)) => Err(ApiError::conflict("illegal_transition", why)),
        Err(e) => {
            tracing::warn!(error = %e, ?change, pg = %r.pg, "the PG did not change the subscription; nothing changed here");
            Err(ApiError::pg(&e))
        }
    }
}

/// The PG's subscription id (the billing key, opened) where the PG owns the lifecycle; no KMS
/// call for any other subscription.
async fn pg_subscription(deps: &Deps, r: &SubscriptionRecord) -> Result<Option<Secret>, ApiError> {
    let Some(stored) = r.billing_key.as_ref().filter(|_| r.pg.capabilities().lifecycle_at_pg) else {
        return Ok(None);
    };
    match deps.vault.open(r.id(), stored).await {
        Ok(key) => Ok(Some(key)),
        Err(e) => {
            tracing::error!(subscription_id = %r.id(), error = %e, "the billing key did not open; nothing changed");
            Err(ApiError::unavailable())
        }
    }
}

fn new_plan(current: &Plan, body: &Value) -> Result<Plan, ApiError> {
    let b: PlanBody = serde_json::from_value(body.clone()).map_err(|_| ApiError::internal())?;
    if !(MIN_PLAN_AMOUNT..=MAX_PLAN_AMOUNT).contains(&b.amount.won()) {
        return Err(ApiError::bad_request(
            "invalid_plan",
            format!("amount must be {MIN_PLAN_AMOUNT}-{MAX_PLAN_AMOUNT} (KRW)"),
        ));
    }
    let name = b.name.map(|n| n.trim().to_string()).unwrap_or_else(|| current.name.clone());
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("invalid_plan", "name must be 1-100 characters"));
    }
    let unit = b.interval.unwrap_or(current.interval.unit());
    let count = b.interval_count.unwrap_or(if b.interval.is_some() { 1 } else { current.interval.count() });
    let interval = Interval::new(unit, count).map_err(|e| ApiError::bad_request("invalid_plan", e.to_string()))?;
    Ok(Plan { name, amount: b.amount, interval })
}

async fn apply(
    deps: &Deps,
    key: &ApiKeyRecord,
    id: &str,
    action: Action,
    body: &Value,
) -> Result<(StatusCode, Value), ApiError> {
    match action {
        Action::Change(change) => lifecycle(deps, key, id, change, body).await,
        Action::Resolve => review::resolve(deps, key, id, body).await,
    }
}

async fn lifecycle(
    deps: &Deps,
    key: &ApiKeyRecord,
    id: &str,
    action: Lifecycle,
    body: &Value,
) -> Result<(StatusCode, Value), ApiError> {
    let now = Timestamp::now();
    let r = owned(deps, key, id).await?;
    if deps.store.charge_in_flight(&r, now).await.map_err(store_error)? {
        return Err(renewal_in_progress());
    }
    let at_period_end = body.get("at_period_end").and_then(Value::as_bool).unwrap_or(false);
    let s = &r.subscription;
    let t: Transition = match action {
        Lifecycle::Cancel => s.cancel(now, at_period_end),
        Lifecycle::Pause => s.pause(now, if at_period_end { PauseWhen::PeriodEnd } else { PauseWhen::Now }),
        Lifecycle::Resume => s.resume(now),
        Lifecycle::Plan => s.change_plan(new_plan(&s.plan, body)?),
    }
    .map_err(transition_error)?;
    at_pg_first(deps, &r, action, at_period_end).await?;
    let next = r.next(t.subscription);
    let change = TransitionCommit::new(&next, SubscriptionWrite::Change { read: &r, at: now }, &t.events, now);
    match deps.publisher.commit_transition(&deps.store, &change, |_| {}).await {
        Ok(_) => {}
        Err(StoreError::Conflict(what)) => return Err(change_conflict(deps, &r, &what).await),
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(subscription_id = %next.id(), action = ?action, state = %next.subscription.state, "subscription changed");
    let mut v = subscription_json(&next);
    v["next_charge"] = next_charge(&next);
    Ok((StatusCode::OK, v))
}

mod review;

#[cfg(test)]
mod in_memory_tests;
