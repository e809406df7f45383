//! The refund flow: claim the idempotency key, validate, reserve, call the PG, settle, publish.

use http::StatusCode;
use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use lambda_http::{Body, Request, Response};
use paycycle::api::{self, ApiError, Keep};
use paycycle::domain::events::RefundEventData;
use paycycle::domain::payment::{RefundFailure, RefundStatus};
use paycycle::domain::subscription::{Renewer, SubscriptionState, TransitionError};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::money::Krw;
use paycycle::pg::{PgError, RefundLookup, RefundLookupCapability, RefundRequest};
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::outbox::{OutboxEvent, RefundSettled, refund_event};
use paycycle::store::payments::{PaymentRecord, RefundOutcome, RefundRecord};
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::{StoreError, sha256_hex};
use paycycle::views::{payment_json, refund_json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Deps;

/// `POST /payments/{id}/refunds` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    /// Integer won; absent = everything still refundable.
    #[serde(default)]
    amount: Option<Krw>,
    reason: String,
    /// Also cancel the subscription (only for a full refund of its latest payment).
    #[serde(default)]
    cancel_subscription: bool,
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

/// The payment if it exists and belongs to the key's partner; 404 otherwise (no hint which).
pub(crate) async fn owned_payment(
    deps: &Deps,
    key: &ApiKeyRecord,
    payment_id: &str,
) -> Result<PaymentRecord, ApiError> {
    match deps.store.get_payment(payment_id).await.map_err(store_error)? {
        Some(p) if p.partner_id == key.partner_id => Ok(p),
        _ => Err(ApiError::not_found("payment")),
    }
}

pub async fn get_payment(deps: &Deps, key: &ApiKeyRecord, payment_id: &str) -> Result<Response<Body>, ApiError> {
    let payment = owned_payment(deps, key, payment_id).await?;
    let refunds = deps.store.refunds_of(payment_id).await.map_err(store_error)?;
    Ok(api::json(StatusCode::OK, &payment_json(&payment, &refunds)))
}

/// The answer for a refund in its current state.
fn answer(r: &RefundRecord) -> (StatusCode, Result<Value, ApiError>) {
    match r.status {
        RefundStatus::Succeeded => (StatusCode::CREATED, Ok(refund_json(r))),
        RefundStatus::Failed => {
            let failure = r.failure().unwrap_or(RefundFailure::Refused { message: "no failure recorded".into() });
            let e = match failure {
                // Final (the refund is failed and its key saved), unlike `504 pg_unavailable`
                // elsewhere, which asks for a retry: its own code.
                RefundFailure::NotSent { .. } => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    RefundFailure::NOT_SENT,
                    "the PG could not be reached; nothing was refunded (a new refund needs a new Idempotency-Key)",
                ),
                other => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "refund_declined",
                    format!("the PG declined the refund ({}): {}", other.code(), other.message()),
                ),
            };
            (e.status, Err(e))
        }
        RefundStatus::Unknown | RefundStatus::Reserved => {
            let e = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "refund_outcome_unknown",
                format!(
                    "refund {} was sent to the PG but its outcome is not known yet; the amount stays reserved. \
                     Retry with the same Idempotency-Key to resolve it",
                    r.refund_id
                ),
            );
            (e.status, Err(e))
        }
    }
}

pub async fn create_refund(
    deps: &Deps,
    key: &ApiKeyRecord,
    payment_id: &str,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let idem_key = api::idempotency_key(req)?;
    let body: RefundBody = api::parse_json(req)?;
    if body.reason.trim().is_empty() || body.reason.chars().count() > 500 {
        return Err(ApiError::bad_request("invalid_reason", "reason is required (1-500 characters)"));
    }
    if let Some(a) = body.amount {
        a.require_positive()
            .map_err(|_| ApiError::bad_request("invalid_amount", "amount must be a positive integer of won"))?;
    }
    let request_id = api::request_id(req);
    let scope = format!("refund:{}", key.partner_id);
    let request_hash =
        sha256_hex(format!("{payment_id}\n{}", serde_json::to_string(&body).unwrap_or_default()).as_bytes());
    let now = Timestamp::now();
    let refund_id = format!("ref_{}", &sha256_hex(format!("{}:{idem_key}", key.partner_id).as_bytes())[..24]);
    // Final answers are saved for replays; errors that changed nothing, and unknown outcomes
    // (which a retry must be able to resolve), give the key back.
    let keep = |status| match status {
        StatusCode::CREATED | StatusCode::BAD_GATEWAY => Keep::Save,
        _ => Keep::Release,
    };
    api::idempotent(&deps.store, &scope, &idem_key, &request_hash, &request_id, keep, || {
        run(deps, key, payment_id, &refund_id, &body, &request_hash, now)
    })
    .await
}

/// The refund itself; `Ok` carries a success body, `Err` an error to show.
async fn run(
    deps: &Deps,
    key: &ApiKeyRecord,
    payment_id: &str,
    refund_id: &str,
    body: &RefundBody,
    request_hash: &str,
    now: Timestamp,
) -> Result<(StatusCode, Value), ApiError> {
    let payment = owned_payment(deps, key, payment_id).await?;
    // The key's refund exists already. The idempotency record was given back (an unknown outcome
    // or a 409), so this may be a retry of that request, or another request reusing the key: only
    // the former is answered from it.
    if let Some(existing) = deps.store.get_refund(payment_id, refund_id).await.map_err(store_error)? {
        if !asked_by(&existing, request_hash, body) {
            return Err(ApiError::idempotency_key_reused());
        }
        let current = if matches!(existing.status, RefundStatus::Unknown | RefundStatus::Reserved) {
            resolve(deps, &payment, &existing).await?
        } else {
            existing
        };
        return answer_for(&current);
    }
    // Earlier unknown refunds of this payment are resolved first: they may free (or use) money.
    let payment = resolve_pending(deps, payment).await?;
    let amount = payment.amounts.requested_or_all(body.amount).map_err(|e| match e {
        paycycle::domain::payment::RefundError::NothingRefundable => {
            ApiError::unprocessable("nothing_refundable", "this payment has nothing left to refund")
        }
        other => ApiError::bad_request("invalid_amount", other.to_string()),
    })?;
    if amount > payment.refundable {
        return Err(exceeds(amount, payment.refundable));
    }
    let refund = reserved_refund(refund_id, &payment, amount, body, request_hash, now);
    reserve(deps, &payment, &refund, now).await?;
    let outcome = send_refund(deps, &payment, &refund).await;
    let settled = settle(deps, &refund, &outcome, &key.partner_id, now).await?;
    let settled =
        if settled.status == RefundStatus::Unknown { resolve(deps, &payment, &settled).await? } else { settled };
    answer_for(&settled)
}

/// The refund a request reserves.
fn reserved_refund(
    refund_id: &str,
    payment: &PaymentRecord,
    amount: Krw,
    body: &RefundBody,
    request_hash: &str,
    now: Timestamp,
) -> RefundRecord {
    RefundRecord {
        refund_id: refund_id.to_string(),
        payment_id: payment.payment_id.clone(),
        amount,
        reason: body.reason.trim().to_string(),
        status: RefundStatus::Reserved,
        requested_at: now,
        pg_refund_id: None,
        failure_code: None,
        failure_message: None,
        request_hash: Some(request_hash.to_string()),
        cancel_subscription: body.cancel_subscription,
        partner_id: payment.partner_id.clone(),
        resolution: None,
    }
}

/// Reserves the refund's amount on the payment (one conditional update).
async fn reserve(deps: &Deps, payment: &PaymentRecord, refund: &RefundRecord, now: Timestamp) -> Result<(), ApiError> {
    if refund.cancel_subscription {
        // The subscription is canceled first, in the reservation's transaction: a refund that
        // reaches the PG has always stopped the billing, whatever happens to it afterwards.
        return reserve_and_cancel(deps, payment, refund, now).await;
    }
    let mut tx = deps.store.tx();
    tx.reserve_refund(refund);
    match deps.store.commit(tx).await {
        Ok(()) => Ok(()),
        Err(e) => Err(reserve_failed(deps, refund, e).await),
    }
}

/// Whether `existing`, the refund recorded under this request's Idempotency-Key, was asked for by
/// this very request (same payment and body). A refund recorded before the request's hash was
/// kept is judged by what it still shows: an amount asked explicitly must be its amount.
fn asked_by(existing: &RefundRecord, request_hash: &str, body: &RefundBody) -> bool {
    match &existing.request_hash {
        Some(hash) => hash == request_hash,
        None => body.amount.is_none_or(|a| a == existing.amount),
    }
}

/// Sends the reserved `refund` to the PG and reads its answer: success, a decline (nothing
/// refunded), or unknown (sent, no trustworthy answer).
async fn send_refund(deps: &Deps, payment: &PaymentRecord, refund: &RefundRecord) -> RefundOutcome {
    let refund_id = refund.refund_id.as_str();
    let pg_req = RefundRequest {
        pg_payment_id: payment.pg_payment_id.clone(),
        amount: refund.amount,
        pay_date_kst: payment.pay_date_kst.clone(),
        refund_id: refund_id.to_string(),
        pg_order: payment.pg_order.clone(),
    };
    let result = deps.pgs.adapter(payment.pg).refund(&pg_req).await;
    let outcome = match &result {
        Ok(r) => RefundOutcome::Succeeded { pg_refund_id: r.pg_refund_id.clone() },
        Err(e) if e.outcome_unknown() => RefundOutcome::Unknown,
        Err(PgError::Transient { reason }) => RefundOutcome::Failed(RefundFailure::NotSent { reason: reason.clone() }),
        Err(PgError::Declined { code, message, .. }) => {
            RefundOutcome::Failed(RefundFailure::Declined { code: code.clone(), message: message.clone() })
        }
        Err(other) => RefundOutcome::Failed(RefundFailure::Refused { message: other.to_string() }),
    };
    if let Err(e) = &result {
        tracing::warn!(refund_id, error = %e, "PG refund did not succeed");
    }
    outcome
}

/// The answer for a refund; one recorded with `cancel_subscription` canceled the subscription
/// when it was reserved, so a decline or an unknown outcome says the subscription stays canceled.
/// What the refund record says was done decides the wording, never the request at hand.
fn answer_for(r: &RefundRecord) -> Result<(StatusCode, Value), ApiError> {
    let (status, v) = answer(r);
    match v {
        Ok(v) => Ok((status, v)),
        Err(mut e) if r.cancel_subscription => {
            e.message.push_str(
                " The subscription was canceled before the refund was sent (cancel_subscription) and stays \
                 canceled: nothing more is charged.",
            );
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Why a reservation did not commit, for the caller: not enough left, or the same refund racing.
async fn reserve_failed(deps: &Deps, refund: &RefundRecord, e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            // Another refund took the money first: say how much is left now.
            match deps.store.get_payment(&refund.payment_id).await {
                Ok(p) => exceeds(refund.amount, p.map(|p| p.refundable).unwrap_or(Krw::ZERO)),
                Err(e) => store_error(e),
            }
        }
        StoreError::AlreadyExists(_) => {
            ApiError::conflict("idempotency_in_progress", "this refund is already being processed")
        }
        e => store_error(e),
    }
}

fn exceeds(amount: Krw, refundable: Krw) -> ApiError {
    ApiError::unprocessable(
        "amount_exceeds_refundable",
        format!("refund of {amount} exceeds the refundable {refundable}"),
    )
}

/// Settles a refund with its events in one transaction, then publishes them.
async fn settle(
    deps: &Deps,
    refund: &RefundRecord,
    outcome: &RefundOutcome,
    partner_id: &str,
    now: Timestamp,
) -> Result<RefundRecord, ApiError> {
    let events = refund_events(refund, outcome, partner_id, now);
    let settled = deps.store.settle_refund(refund, outcome, &events).await.map_err(store_error)?;
    if !events.is_empty() {
        deps.publisher.publish_committed(&deps.store, &events).await;
    }
    Ok(settled)
}

/// The event a refund settled with `outcome` publishes (none while unknown).
pub(crate) fn refund_events(
    refund: &RefundRecord,
    outcome: &RefundOutcome,
    partner_id: &str,
    now: Timestamp,
) -> Vec<OutboxEvent> {
    let kind = match outcome {
        RefundOutcome::Succeeded { .. } => Some(RefundSettled::Succeeded),
        RefundOutcome::Failed(_) => Some(RefundSettled::Failed),
        RefundOutcome::Unknown => None,
    };
    kind.into_iter()
        .map(|k| {
            let data = RefundEventData {
                refund_id: refund.refund_id.clone(),
                payment_id: refund.payment_id.clone(),
                amount: refund.amount,
                partner_id: partner_id.to_string(),
                external: false,
            };
            refund_event(k, data, now)
        })
        .collect()
}

/// Resolves the unknown refunds of `payment` by asking the PG, then returns the fresh payment.
async fn resolve_pending(deps: &Deps, payment: PaymentRecord) -> Result<PaymentRecord, ApiError> {
    let refunds = deps.store.refunds_of(&payment.payment_id).await.map_err(store_error)?;
    if let Some(unknown) = refunds.iter().find(|r| r.status == RefundStatus::Unknown) {
        resolve(deps, &payment, unknown).await?;
        return deps
            .store
            .get_payment(&payment.payment_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("payment"));
    }
    Ok(payment)
}

/// Settles unknown refunds from the PG's own word. A reservation is released only when the PG
/// positively says nothing was refunded; where it cannot show refunds (Payple), an unknown refund
/// stays reserved and goes to a person. The PG reports one refunded total per payment, so it is
/// decisive only when no refund of this payment is still in flight: if the PG refunded exactly our
/// confirmed total plus every unknown refund, they all succeeded; if it refunded only our confirmed
/// total, none did. Anything else stays unknown (and is reported, not guessed).
///
/// The payment is read first, then its refunds, then the PG; the verdict is written only if the
/// payment is still at the version read first. A refund reserved after that read (perhaps already
/// at the PG, so in its total) or settled meanwhile makes the verdict a no-op: the refund stays
/// unknown and the next retry asks again.
async fn resolve(deps: &Deps, payment: &PaymentRecord, refund: &RefundRecord) -> Result<RefundRecord, ApiError> {
    if deps.pgs.adapter(payment.pg).capabilities().refund_lookup == RefundLookupCapability::None {
        needs_review(payment, refund, "the PG offers no refund lookup");
        return Ok(refund.clone());
    }
    let read = deps
        .store
        .get_payment(&payment.payment_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let refunds = deps.store.refunds_of(&payment.payment_id).await.map_err(store_error)?;
    let in_flight = refunds.iter().any(|r| r.status == RefundStatus::Reserved && r.refund_id != refund.refund_id);
    if in_flight {
        return Ok(refund.clone());
    }
    let unknown: Vec<RefundRecord> = refunds
        .into_iter()
        .filter(|r| {
            matches!(r.status, RefundStatus::Unknown)
                || (r.refund_id == refund.refund_id && r.status == RefundStatus::Reserved)
        })
        .collect();
    let Some(this) = unknown.iter().find(|r| r.refund_id == refund.refund_id).cloned() else {
        // Settled meanwhile (by another request): its stored state is the answer.
        return Ok(deps
            .store
            .get_refund(&refund.payment_id, &refund.refund_id)
            .await
            .map_err(store_error)?
            .unwrap_or_else(|| refund.clone()));
    };
    let pg_refunded = match deps.pgs.adapter(payment.pg).look_up_refunds(&payment.pg_payment_id).await {
        Ok(RefundLookup::Settled { refunded }) => refunded,
        Ok(RefundLookup::InProgress) => {
            tracing::info!(refund_id = %refund.refund_id, "the PG is still processing a refund; outcome stays unknown");
            return Ok(this);
        }
        Err(e) => {
            tracing::warn!(refund_id = %refund.refund_id, error = %e, "refund lookup failed; outcome stays unknown");
            return Ok(this);
        }
    };
    let Some(verdict) = verdict(&read, &unknown, refund, pg_refunded) else { return Ok(this) };
    let now = Timestamp::now();
    let events: Vec<OutboxEvent> =
        unknown.iter().flat_map(|r| refund_events(r, &verdict, &read.partner_id, now)).collect();
    match deps.store.settle_refunds(&unknown, &verdict, Some(read.version), &events).await {
        Ok(settled) => {
            deps.publisher.publish_committed(&deps.store, &events).await;
            Ok(settled.into_iter().find(|r| r.refund_id == refund.refund_id).unwrap_or(this))
        }
        Err(StoreError::Conflict(why)) => {
            tracing::info!(refund_id = %refund.refund_id, why, "the payment changed while the PG was asked; outcome stays unknown");
            Ok(this)
        }
        Err(e) => Err(store_error(e)),
    }
}

/// What the PG's refunded total says about the `unknown` refunds of `read` (the payment as read
/// before the PG was asked), if it says anything yet.
fn verdict(
    read: &PaymentRecord,
    unknown: &[RefundRecord],
    refund: &RefundRecord,
    pg_refunded: Krw,
) -> Option<RefundOutcome> {
    let ours = read.amounts.refunded;
    let unknown_sum = unknown.iter().try_fold(Krw::ZERO, |acc, r| acc.checked_add(r.amount)).unwrap_or(Krw::ZERO);
    let youngest = unknown.iter().map(|r| r.requested_at).max().unwrap_or(refund.requested_at);
    match (Totals { pg_refunded, ours, unknown_sum }).verdict() {
        Verdict::AllRefunded => Some(RefundOutcome::Succeeded { pg_refund_id: None }),
        Verdict::NoneRefunded if settled_long_enough(youngest, Timestamp::now(), settle_age()) => {
            Some(RefundOutcome::Failed(RefundFailure::NotAtPg))
        }
        Verdict::NoneRefunded => {
            tracing::info!(refund_id = %refund.refund_id, "the PG shows no such refund yet; too soon to believe it");
            None
        }
        Verdict::Disagree => {
            let why = format!("refund totals disagree: the PG {pg_refunded}, ours {ours} + {unknown_sum} unknown");
            needs_review(read, refund, &why);
            None
        }
    }
}

/// The PG's refunded total for a payment beside ours.
#[derive(Clone, Copy, Debug)]
struct Totals {
    /// What the PG says was refunded of the payment.
    pg_refunded: Krw,
    /// What we recorded as refunded.
    ours: Krw,
    /// What our refunds of unknown outcome add up to.
    unknown_sum: Krw,
}

/// What [`Totals`] say about the unknown refunds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The PG refunded ours plus every unknown one.
    AllRefunded,
    /// The PG refunded only ours: none of the unknown ones — as far as this lookup shows.
    NoneRefunded,
    Disagree,
}

impl Totals {
    fn verdict(self) -> Verdict {
        if self.ours.checked_add(self.unknown_sum).ok() == Some(self.pg_refunded) {
            Verdict::AllRefunded
        } else if self.pg_refunded == self.ours {
            Verdict::NoneRefunded
        } else {
            Verdict::Disagree
        }
    }
}

/// How long after a refund request a lookup that shows no trace of it is believed
/// (`PAYCYCLE_REFUND_SETTLE_MINUTES`, default 10, 1..=1440): a receipt read seconds after an
/// ambiguous cancel may not show it yet (StepPay promises no read-after-write on its receipt), and
/// releasing on it would let the partner refund twice. Until then the refund stays unknown.
pub(crate) fn settle_age() -> SignedDuration {
    static AGE: OnceLock<SignedDuration> = OnceLock::new();
    *AGE.get_or_init(|| {
        let minutes = std::env::var("PAYCYCLE_REFUND_SETTLE_MINUTES")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|m| (1..=1440).contains(m))
            .unwrap_or(10);
        SignedDuration::from_mins(minutes)
    })
}

/// Whether a refund requested at `requested_at` (wall clock) is old enough at `wall_now` for a
/// lookup without it to mean the PG did not refund it.
pub(crate) fn settled_long_enough(requested_at: Timestamp, wall_now: Timestamp, age: SignedDuration) -> bool {
    wall_now.duration_since(requested_at) >= age
}

/// A refund whose outcome nobody can settle automatically: the amount stays reserved and a person
/// checks the PG's records (Payple: by OID and payment date, its trade number on the receipt).
fn needs_review(payment: &PaymentRecord, refund: &RefundRecord, why: &str) {
    tracing::error!(
        alarm = "paycycle_needs_review",
        refund_id = %refund.refund_id,
        payment_id = %payment.payment_id,
        pg = ?payment.pg,
        pg_payment_id = %payment.pg.shown_reference(&payment.pg_payment_id),
        pay_date_kst = %payment.pay_date_kst,
        amount = %refund.amount,
        why,
        "refund outcome unknown and cannot be settled from the PG's answer: stays reserved, needs review"
    );
}

/// `cancel_subscription: true` is only for a full refund of the subscription's latest payment,
/// and never while renew is charging it. Returns the subscription as read: the cancel's write is
/// conditioned on exactly that record (its version), so what was checked here still holds when it
/// commits.
async fn cancellable(deps: &Deps, payment: &PaymentRecord, amount: Krw) -> Result<SubscriptionRecord, ApiError> {
    let cannot = |why: &str| ApiError::unprocessable("cannot_cancel_subscription", why.to_string());
    let Some(sub_id) = &payment.subscription_id else {
        return Err(cannot("this payment belongs to no subscription"));
    };
    if amount != payment.refundable {
        return Err(cannot("only a full refund can cancel the subscription"));
    }
    let Some(record) = deps.store.get_subscription(sub_id).await.map_err(store_error)? else {
        return Err(cannot("the payment's subscription does not exist"));
    };
    // StepPay renews a managed subscription on its own: a cancel recorded only here would leave
    // StepPay charging the customer. The lifecycle API cancels at StepPay first.
    if record.subscription.renewer == Renewer::Pg && record.subscription.state != SubscriptionState::Canceled {
        return Err(cannot(
            "StepPay renews this subscription: cancel it with POST /subscriptions/{id}/cancel (which cancels at \
             StepPay first), then refund; nothing was refunded",
        ));
    }
    // The consistent read first: a later period paid (renewal charges carry their period, a
    // checkout's payment is period 0); then the index, which names payments of any kind.
    let period = payment.charge_id.as_ref().map(|c| c.period()).or(payment.checkout_id.as_ref().map(|_| 0));
    let paid = record.subscription.current_period.map(|p| p.index);
    let later_paid = matches!((period, paid), (Some(ours), Some(paid)) if paid > ours);
    let payments = deps.store.payments_of_subscription(sub_id).await.map_err(store_error)?;
    let latest = payments.iter().max_by_key(|p| p.paid_at).map(|p| p.payment_id.as_str());
    if later_paid || latest.is_some_and(|l| l != payment.payment_id) {
        return Err(cannot("only the subscription's latest payment can cancel it"));
    }
    if deps.store.charge_in_flight(&record, Timestamp::now()).await.map_err(store_error)? {
        return Err(renewal_in_progress());
    }
    Ok(record)
}

fn renewal_in_progress() -> ApiError {
    ApiError::conflict(
        "renewal_in_progress",
        "renew is charging this subscription right now; nothing was refunded — retry in a few seconds",
    )
}

/// Cancels the refunded payment's subscription and reserves the refund in one transaction. The
/// cancel's condition is the lifecycle write's ([`paycycle::store::Tx::put_subscription_change`]):
/// the subscription as read (so the payment is still its latest), no renew lease live, the next
/// attempt neither pending nor unknown. A renewal claimed after the read makes the whole thing
/// fail: nothing is refunded, nothing canceled, and the caller hears why. An already canceled
/// subscription stays so (only its version is checked).
async fn reserve_and_cancel(
    deps: &Deps,
    payment: &PaymentRecord,
    refund: &RefundRecord,
    now: Timestamp,
) -> Result<(), ApiError> {
    let record = cancellable(deps, payment, refund.amount).await?;
    let committed = if record.subscription.state == SubscriptionState::Canceled {
        // Already canceled: it stays so; the refund is reserved against the subscription as read.
        let mut tx = deps.store.tx();
        tx.check_subscription_unchanged(&record).reserve_refund(refund);
        deps.store.commit(tx).await
    } else {
        let transition = record.subscription.cancel(now, false).map_err(|e| match e {
            TransitionError::UnknownOutcomePending(_) => renewal_in_progress(),
            other => ApiError::unprocessable("cannot_cancel_subscription", other.to_string()),
        })?;
        let next = record.next(transition.subscription);
        let write = SubscriptionWrite::Change { read: &record, at: Timestamp::now() };
        let mut change = TransitionCommit::new(&next, write, &transition.events, now);
        change.refund = Some(refund);
        deps.publisher.commit_transition(&deps.store, &change, |_| {}).await.map(|_| ())
    };
    match committed {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(cancel_conflict(deps, payment, refund).await),
        Err(e) => Err(reserve_failed(deps, refund, e).await),
    }
}

/// Names what stood in the way of a refund-and-cancel whose transaction failed: checked again on
/// fresh reads (a renewal now in flight, a later payment, less left to refund), else a change
/// that a retry will see.
async fn cancel_conflict(deps: &Deps, payment: &PaymentRecord, refund: &RefundRecord) -> ApiError {
    let fresh = match deps.store.get_payment(&payment.payment_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::not_found("payment"),
        Err(e) => return store_error(e),
    };
    if fresh.refundable < refund.amount {
        return exceeds(refund.amount, fresh.refundable);
    }
    match cancellable(deps, &fresh, refund.amount).await {
        Err(e) => e,
        Ok(_) => ApiError::conflict(
            "subscription_changed",
            "the subscription changed while this refund was prepared; nothing was refunded — retry",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krw(n: i64) -> Krw {
        Krw::new(n).unwrap()
    }

    #[test]
    fn totals_name_all_none_or_a_disagreement() {
        let t = |pg, ours, unknown| Totals { pg_refunded: krw(pg), ours: krw(ours), unknown_sum: krw(unknown) };
        assert_eq!(t(7_000, 3_000, 4_000).verdict(), Verdict::AllRefunded);
        assert_eq!(t(3_000, 3_000, 4_000).verdict(), Verdict::NoneRefunded);
        assert_eq!(t(0, 0, 4_000).verdict(), Verdict::NoneRefunded);
        assert_eq!(t(5_000, 3_000, 4_000).verdict(), Verdict::Disagree);
    }

    #[test]
    fn a_lookup_without_the_refund_is_believed_only_past_the_settling_age() {
        let requested: Timestamp = "2027-01-10T00:00:00Z".parse().unwrap();
        let age = SignedDuration::from_mins(10);
        let at = |secs| requested.checked_add(SignedDuration::from_secs(secs)).unwrap();
        assert!(!settled_long_enough(requested, at(2), age), "seconds after the timeout: not StepPay's word");
        assert!(!settled_long_enough(requested, at(599), age));
        assert!(settled_long_enough(requested, at(600), age));
        assert_eq!(settle_age(), SignedDuration::from_mins(10), "the default");
    }

    #[test]
    fn a_refund_is_the_answer_only_to_the_request_that_asked_for_it() {
        let body = |amount: Option<i64>, cancel_subscription| RefundBody {
            amount: amount.map(krw),
            reason: "r".into(),
            cancel_subscription,
        };
        // Recorded before requests were kept: no hash, no cancel flag (serde defaults).
        let old: RefundRecord = serde_json::from_value(serde_json::json!({
            "refund_id": "ref_1", "payment_id": "pay_1", "amount": 3000, "reason": "r", "status": "unknown",
            "requested_at": "2027-01-10T00:00:00Z", "pg_refund_id": null, "failure_code": null,
            "failure_message": null,
        }))
        .unwrap();
        assert_eq!((old.request_hash.as_deref(), old.cancel_subscription), (None, false));
        assert!(asked_by(&old, "any", &body(Some(3000), false)));
        assert!(asked_by(&old, "any", &body(None, false)));
        assert!(!asked_by(&old, "any", &body(Some(5000), false)), "another amount is another request");
        let new = RefundRecord { request_hash: Some("h1".into()), ..old };
        assert!(asked_by(&new, "h1", &body(Some(3000), false)));
        assert!(!asked_by(&new, "h2", &body(Some(3000), true)), "the hash decides once it is kept");
    }
}
