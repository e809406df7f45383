//! `POST /payments/{id}/refunds/{refund_id}/resolve` (DESIGN §13): a person settles a refund
//! whose outcome the PG's answers could not settle (or whose reservation a dead Lambda left).
//!
//! The PG's refunded total for the payment must allow the verdict: `refunded` only if it covers
//! what we recorded as refunded plus this refund; `not_refunded` only if the PG's total is
//! explained without it (by what we recorded plus the payment's other unsettled refunds) — so a
//! release can never let the partner refund money the PG already gave back. Where the PG shows no
//! refunds (Payple), the person's verdict stands on their word and reason, marked
//! `operator_only`. The refund, the payment's amounts and the events are one transaction on the
//! payment's version read before the PG was asked.

use http::StatusCode;
use jiff::Timestamp;
use paycycle::api::{self, ApiError};
use paycycle::domain::events::{EventData, EventKind, RefundEventData};
use paycycle::domain::payment::{RefundFailure, RefundStatus};
use paycycle::domain::review::{MAX_REASON_CHARS, PgConfirmation, Resolution, Verdict};
use paycycle::money::Krw;
use paycycle::pg::{PgError, RefundLookup};
use paycycle::store::StoreError;
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::outbox::OutboxEvent;
use paycycle::store::payments::{RefundOutcome, RefundRecord};
use paycycle::store::reviews::refund_awaiting_review;
use paycycle::views::refund_json;
use serde::Deserialize;
use serde_json::Value;

use crate::Deps;
use crate::refunds::{owned_payment, refund_events, settle_age, settled_long_enough, store_error};

/// `POST /payments/{id}/refunds/{refund_id}/resolve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    verdict: Verdict,
    reason: String,
}

pub async fn resolve_refund(
    deps: &Deps,
    key: &ApiKeyRecord,
    payment_id: &str,
    refund_id: &str,
    req: &lambda_http::Request,
) -> Result<(StatusCode, Value), ApiError> {
    let b: ResolveBody = api::parse_json(req)?;
    let reason = b.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(
            "invalid_resolution",
            format!("reason must be 1-{MAX_REASON_CHARS} characters"),
        ));
    }
    if !matches!(b.verdict, Verdict::Refunded | Verdict::NotRefunded) {
        return Err(ApiError::bad_request("invalid_resolution", "a refund is resolved refunded or not_refunded"));
    }
    let now = Timestamp::now();
    let payment = owned_payment(deps, key, payment_id).await?;
    let refunds = deps.store.refunds_of(payment_id).await.map_err(store_error)?;
    let open = Open::of(&refunds, refund_id, now)?;
    let pg = ask_pg(deps, &payment, &open, b.verdict, now).await?;
    let resolution =
        Resolution { verdict: b.verdict, next: None, by: key.name.clone(), at: now, reason, pg, pg_payment_id: None };
    let outcome = match b.verdict {
        Verdict::Refunded => RefundOutcome::Succeeded { pg_refund_id: None },
        _ => RefundOutcome::Failed(RefundFailure::NotAtPg),
    };
    let resolved = RefundRecord { resolution: Some(resolution), ..open.refund };
    let events = events(&resolved, &outcome, &payment.partner_id, now);
    match deps.store.settle_refunds(std::slice::from_ref(&resolved), &outcome, Some(payment.version), &events).await {
        Ok(settled) => {
            deps.publisher.publish_committed(&deps.store, &events).await;
            tracing::warn!(refund_id, payment_id, verdict = b.verdict.as_str(), by = %key.name, "refund in review resolved by a person");
            let settled = settled.into_iter().next().unwrap_or(resolved);
            Ok((StatusCode::OK, refund_json(&settled)))
        }
        Err(StoreError::Conflict(_)) => Err(ApiError::conflict(
            "concurrent_change",
            "the payment or the refund changed while the PG was asked; read it and retry",
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// The refund a person settles, and the payment's other refunds whose outcome is unknown.
struct Open {
    refund: RefundRecord,
    /// What the other unknown refunds add up to: the PG's total may include them.
    others: Krw,
    /// The youngest request among them and this one: the PG's receipt may lag it.
    youngest: Timestamp,
}

impl Open {
    /// 404 if there is no such refund; 409 if it needs no person (settled, or reserved and still
    /// in flight) or another refund of the payment is in flight (its PG call may move the total).
    fn of(refunds: &[RefundRecord], refund_id: &str, now: Timestamp) -> Result<Self, ApiError> {
        let refund =
            refunds.iter().find(|r| r.refund_id == refund_id).cloned().ok_or_else(|| ApiError::not_found("refund"))?;
        if refund_awaiting_review(&refund, now).is_none() {
            let status = format!("{:?}", refund.status).to_lowercase();
            return Err(ApiError::conflict(
                "not_in_review",
                format!("refund {refund_id} is {status}: nothing to resolve"),
            ));
        }
        let others: Vec<&RefundRecord> = refunds.iter().filter(|r| r.refund_id != refund_id).collect();
        if others.iter().any(|r| r.status == RefundStatus::Reserved && refund_awaiting_review(r, now).is_none()) {
            return Err(ApiError::conflict(
                "refund_in_progress",
                "another refund of this payment is at the PG right now; resolve this one after it settles",
            ));
        }
        let unknown: Vec<&&RefundRecord> = others.iter().filter(|r| refund_awaiting_review(r, now).is_some()).collect();
        let others =
            unknown.iter().try_fold(Krw::ZERO, |acc, r| acc.checked_add(r.amount)).map_err(|_| ApiError::internal())?;
        let youngest = unknown.iter().map(|r| r.requested_at).fold(refund.requested_at, Timestamp::max);
        Ok(Open { refund, others, youngest })
    }
}

/// How the PG's refunded total backs the verdict: `refunded` only if it covers what we recorded
/// plus this refund; `not_refunded` only if it is explained without it (what we recorded plus the
/// other unknown refunds), and only once the youngest is old enough for StepPay's receipt to show
/// it (refund's settling age). Payple shows no refunds: the person's word.
async fn ask_pg(
    deps: &Deps,
    payment: &paycycle::store::payments::PaymentRecord,
    open: &Open,
    verdict: Verdict,
    now: Timestamp,
) -> Result<PgConfirmation, ApiError> {
    let refunded = match deps.pgs.adapter(payment.pg).look_up_refunds(&payment.pg_payment_id).await {
        Ok(RefundLookup::Settled { refunded }) => refunded,
        Ok(RefundLookup::InProgress) => {
            return Err(ApiError::conflict(
                "pg_pending",
                "the PG is still processing a refund of this payment; resolve it once it has settled",
            ));
        }
        Err(PgError::Unsupported(_)) => return Ok(PgConfirmation::OperatorOnly),
        Err(e) => return Err(ApiError::pg(&e)),
    };
    let ours = payment.amounts.refunded;
    let covered = ours.checked_add(open.refund.amount).map_err(|_| ApiError::internal())?;
    let explained = ours.checked_add(open.others).map_err(|_| ApiError::internal())?;
    match verdict {
        Verdict::Refunded if refunded >= covered => Ok(PgConfirmation::Confirmed),
        Verdict::Refunded => Err(ApiError::unprocessable(
            "pg_does_not_confirm",
            format!(
                "the PG shows {refunded} refunded of this payment; recorded {ours} + this refund {} is more",
                open.refund.amount
            ),
        )),
        _ if refunded > explained => Err(ApiError::conflict(
            "pg_shows_refunded",
            format!(
                "the PG shows {refunded} refunded of this payment, more than recorded ({ours}) and the other open refunds ({}): this refund was made; resolve it as refunded",
                open.others
            ),
        )),
        _ if !settled_long_enough(open.youngest, now, settle_age()) => Err(ApiError::conflict(
            "too_soon",
            format!(
                "the PG's record may not show a refund this young yet; resolve it not_refunded after {} minutes",
                settle_age().as_mins()
            ),
        )),
        _ => Ok(PgConfirmation::Confirmed),
    }
}

/// The refund's own event (`refund.succeeded` / `refund.failed`) and `refund.review_resolved`.
fn events(resolved: &RefundRecord, outcome: &RefundOutcome, partner_id: &str, now: Timestamp) -> Vec<OutboxEvent> {
    let mut events = refund_events(resolved, outcome, partner_id, now);
    let data = RefundEventData {
        refund_id: resolved.refund_id.clone(),
        payment_id: resolved.payment_id.clone(),
        amount: resolved.amount,
        partner_id: partner_id.to_string(),
        external: false,
    };
    let id = format!("{}:review", resolved.refund_id);
    events.push(OutboxEvent::new(EventKind::RefundReviewResolved, &id, 1, now, EventData::Refund(data)));
    events
}
