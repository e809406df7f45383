//! `POST /subscriptions/{id}/resolve` (DESIGN §13): a person settles the charge a subscription
//! holds in review — renew stopped after its outcome stayed unknown past the review window.
//!
//! - `paid` names the PG's payment; it is recorded only if the PG shows that payment paid, as this
//!   charge's ([`paycycle::pg::Adapter::confirm_charge`]), for exactly the charge's amount.
//! - `not_paid` is recorded only if the PG's lookup of the charge does not show it paid (nor
//!   pending); where the PG has no lookup for it (StepPay by our charge id), on the person's word
//!   and reason, marked `operator_only`. `next` says what follows: `retry` (a new attempt now),
//!   `past_due` (dunning, as after a soft decline) or `cancel`.
//!
//! The attempt keeps the resolution (who — the API key's name —, when, why, what the PG said); the
//! subscription, the attempt, the payment and the events are one transaction, on the version read,
//! while no renew lease is live and the attempt is still `unknown`.

use http::StatusCode;
use jiff::Timestamp;
use paycycle::api::ApiError;
use paycycle::domain::attempt::{Attempt, AttemptStatus, AttemptStatusKind};
use paycycle::domain::dunning::DunningPolicy;
use paycycle::domain::events::EventKind;
use paycycle::domain::review::{MAX_REASON_CHARS, NOT_PAID_ON_REVIEW, PgConfirmation, Resolution, ReviewNext, Verdict};
use paycycle::domain::subscription::SubscriptionState;
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::pg::{PaymentDetails, PaymentState, PgError};
use paycycle::store::StoreError;
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::payments::PaymentRecord;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::views::subscription_json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Deps, change_conflict, next_charge, owned, store_error, transition_error};

/// `POST /subscriptions/{id}/resolve` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    verdict: Verdict,
    /// `paid`: the PG's payment (StepPay idKey; Payple OID, which is the charge id).
    #[serde(default)]
    pg_payment_id: Option<String>,
    /// `not_paid`: what follows (required). `paid`: only `cancel` (cancel now, the payment kept).
    #[serde(default)]
    next: Option<ReviewNext>,
    reason: String,
}

impl ResolveBody {
    /// The body, checked: 400 names what is wrong.
    pub(crate) fn parse(v: &Value) -> Result<Self, ApiError> {
        let bad = |m: &str| ApiError::bad_request("invalid_resolution", m.to_string());
        let b: ResolveBody = serde_json::from_value(v.clone()).map_err(|e| bad(&e.to_string()))?;
        let reason = b.reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(bad(&format!("reason must be 1-{MAX_REASON_CHARS} characters")));
        }
        match (b.verdict, &b.pg_payment_id, b.next) {
            (Verdict::Paid, None, _) => Err(bad("a paid verdict names the PG's payment: pg_payment_id")),
            (Verdict::Paid, Some(id), _) if id.is_empty() || id.len() > 100 || id.chars().any(char::is_control) => {
                Err(bad("pg_payment_id must be 1-100 printable characters"))
            }
            (Verdict::Paid, _, Some(ReviewNext::Retry | ReviewNext::PastDue)) => {
                Err(bad("a paid charge is not retried: next may only be cancel"))
            }
            (Verdict::NotPaid, Some(_), _) => Err(bad("a not_paid verdict names no payment")),
            (Verdict::NotPaid, None, None) => {
                Err(bad("a not_paid verdict says what follows: next (retry, past_due or cancel)"))
            }
            (Verdict::Refunded | Verdict::NotRefunded, ..) => Err(bad("a charge is resolved paid or not_paid")),
            _ => Ok(ResolveBody { reason: reason.to_string(), ..b }),
        }
    }
}

/// What the PG said that lets the verdict stand: a confirmed payment, or no sign of one.
enum PgWord {
    Paid { pg_payment_id: String, paid_at: Option<Timestamp>, details: PaymentDetails },
    NotPaid(PgConfirmation),
}

pub(crate) async fn resolve(
    deps: &Deps,
    key: &ApiKeyRecord,
    id: &str,
    body: &Value,
) -> Result<(StatusCode, Value), ApiError> {
    let b = ResolveBody::parse(body)?;
    let now = Timestamp::now();
    let r = owned(deps, key, id).await?;
    let attempt = attempt_in_review(deps, &r).await?;
    let word = ask_pg(deps, &r, &attempt, &b).await?;
    let resolution = Resolution {
        verdict: b.verdict,
        next: b.next,
        by: key.name.clone(),
        at: now,
        reason: b.reason.clone(),
        pg: match &word {
            PgWord::Paid { .. } => PgConfirmation::Confirmed,
            PgWord::NotPaid(c) => *c,
        },
        pg_payment_id: b.pg_payment_id.clone(),
    };
    let verdict = apply_verdict(&r, &attempt, word, b.next, now)?;
    let settled = Attempt { resolution: Some(resolution), ..verdict.attempt };
    commit(deps, &r, &settled, &verdict.transition, verdict.payment.as_ref(), now).await?;
    let next = r.next(verdict.transition.subscription);
    tracing::warn!(
        subscription_id = %next.id(),
        charge_id = %settled.charge_id,
        verdict = b.verdict.as_str(),
        by = %key.name,
        state = %next.subscription.state,
        "charge in review resolved by a person"
    );
    let mut v = subscription_json(&next);
    v["next_charge"] = next_charge(&next);
    v["resolution"] = json!({
        "charge_id": settled.charge_id,
        "verdict": b.verdict,
        "next": b.next,
        "by": key.name,
        "at": now.to_string(),
        "reason": b.reason,
        "pg": settled.resolution.as_ref().map(|r| r.pg),
        "payment_id": verdict.payment.as_ref().map(|p| p.payment_id.clone()),
    });
    Ok((StatusCode::OK, v))
}

/// What a verdict writes: the subscription's transition, the attempt as it settles, the payment.
struct Applied {
    transition: paycycle::domain::subscription::Transition,
    attempt: Attempt,
    payment: Option<PaymentRecord>,
}

/// The verdict, as the domain and the attempt take it. Paid: an approved charge, with its payment.
/// Not paid and charged again (`retry`, or `past_due` while dunning retries): the attempt stays as
/// it is — renew sends it again under its own id, which the PG refuses if it did take it. Not
/// paid and not charged again: the attempt is declined.
fn apply_verdict(
    r: &SubscriptionRecord,
    attempt: &Attempt,
    word: PgWord,
    next: Option<ReviewNext>,
    now: Timestamp,
) -> Result<Applied, ApiError> {
    let (s, charge_id) = (&r.subscription, &attempt.charge_id);
    let settle =
        |status: AttemptStatus| attempt.resolve(status).map_err(|e| ApiError::conflict("not_in_review", e.to_string()));
    match word {
        PgWord::Paid { pg_payment_id, paid_at, details } => {
            let paid_at = paid_at.unwrap_or(now);
            let payment = PaymentRecord::paid(
                r.pg,
                &pg_payment_id,
                &r.customer.id,
                attempt.amount,
                paid_at,
                Some(r.id().clone()),
                Some(charge_id.clone()),
                None,
            )
            .for_partner(&r.partner_id)
            .with_details(details);
            let transition =
                s.review_paid(charge_id, now, next == Some(ReviewNext::Cancel)).map_err(transition_error)?;
            let attempt = settle(AttemptStatus::Approved { pg_payment_id, approved_at: paid_at })?;
            Ok(Applied { transition, attempt, payment: Some(payment) })
        }
        PgWord::NotPaid(_) => {
            // Renew's policy (its `Settings::dunning`): the default.
            let next = next.unwrap_or(ReviewNext::PastDue);
            let transition =
                s.review_not_paid(charge_id, next, now, &DunningPolicy::default()).map_err(transition_error)?;
            let sent_again = transition.subscription.next_charge_id().as_ref() == Some(charge_id)
                && transition.subscription.state == SubscriptionState::PastDue;
            let attempt = if sent_again {
                attempt.clone()
            } else {
                let reason = "a person found it not paid".to_string();
                settle(AttemptStatus::Declined { code: NOT_PAID_ON_REVIEW.into(), message: reason, hard: false })?
            };
            Ok(Applied { transition, attempt, payment: None })
        }
    }
}

/// One transaction: the subscription (version read, no live renew lease), the attempt (still
/// `unknown`), the payment (new, or this charge's already), the events.
async fn commit(
    deps: &Deps,
    r: &SubscriptionRecord,
    settled: &Attempt,
    t: &paycycle::domain::subscription::Transition,
    payment: Option<&PaymentRecord>,
    now: Timestamp,
) -> Result<(), ApiError> {
    let payment_is_new = match payment {
        Some(p) => new_payment(deps, p).await?,
        None => false,
    };
    let mut kinds = t.events.clone();
    kinds.push(EventKind::SubscriptionReviewResolved);
    let next = r.next(t.subscription.clone());
    let mut change = TransitionCommit::new(&next, SubscriptionWrite::Resolve { read: r, at: now }, &kinds, now);
    change.payment = payment;
    change.payment_is_new = payment_is_new;
    change.attempt = Some((settled, AttemptStatusKind::Unknown));
    match deps.publisher.commit_transition(&deps.store, &change, |_| {}).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(what)) if what.contains("|ATT#") => Err(ApiError::conflict(
            "concurrent_change",
            "the charge was settled meanwhile (by renew, or a PG webhook): read the subscription",
        )),
        Err(StoreError::Conflict(what)) => Err(change_conflict(deps, r, &what).await),
        Err(StoreError::AlreadyExists(_)) => {
            Err(ApiError::conflict("concurrent_change", "the payment was recorded meanwhile; read it and retry"))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// The attempt a person can settle: the subscription is in review (or canceled in review) and
/// its charge's attempt is still `unknown`. 409 `not_in_review` otherwise.
async fn attempt_in_review(deps: &Deps, r: &SubscriptionRecord) -> Result<Attempt, ApiError> {
    let s = &r.subscription;
    let unknown = s.collection.as_ref().is_some_and(|c| c.unknown_since.is_some());
    let not_in_review = || {
        ApiError::conflict(
            "not_in_review",
            format!("subscription is {} with no charge in review: nothing to resolve", s.state),
        )
    };
    if !matches!(s.state, SubscriptionState::NeedsReview | SubscriptionState::Canceled) || !unknown {
        return Err(not_in_review());
    }
    let charge_id = s.next_charge_id().ok_or_else(not_in_review)?;
    match deps.store.get_attempt(&charge_id).await.map_err(store_error)? {
        Some(a) if a.status.kind() == AttemptStatusKind::Unknown => Ok(a),
        _ => Err(not_in_review()),
    }
}

/// Asks the PG whether the verdict stands. Nothing is recorded on a PG that does not answer.
async fn ask_pg(deps: &Deps, r: &SubscriptionRecord, attempt: &Attempt, b: &ResolveBody) -> Result<PgWord, ApiError> {
    let adapter = deps.pgs.adapter(r.pg);
    let charge = &attempt.charge_id;
    match (b.verdict, b.pg_payment_id.as_deref()) {
        (Verdict::Paid, Some(named)) => match adapter.confirm_charge(attempt, named).await {
            Ok((PaymentState::Paid { pg_payment_id, amount, paid_at, .. }, details)) if amount == attempt.amount => {
                Ok(PgWord::Paid { pg_payment_id, paid_at, details })
            }
            // Refunded at the PG since: it was paid, and the refund is the PG's to report.
            Ok((PaymentState::Refunded { pg_payment_id, amount }, details)) if amount == attempt.amount => {
                Ok(PgWord::Paid { pg_payment_id, paid_at: None, details })
            }
            Ok((PaymentState::Paid { amount, .. } | PaymentState::Refunded { amount, .. }, _)) => {
                Err(ApiError::unprocessable(
                    "pg_amount_differs",
                    format!("the PG shows {amount} paid; charge {charge} was for {}", attempt.amount),
                ))
            }
            Ok((PaymentState::Failed { code, .. }, _)) => Err(ApiError::unprocessable(
                "pg_does_not_confirm",
                format!("the PG shows payment {named} not paid ({code}): resolve charge {charge} as not_paid"),
            )),
            Ok((PaymentState::Pending, _)) => Err(ApiError::conflict(
                "pg_pending",
                format!("the PG shows payment {named} still pending; resolve it once the PG has settled it"),
            )),
            Err(PgError::NotFound) => Err(ApiError::unprocessable(
                "pg_does_not_confirm",
                format!("the PG knows no payment {named} for charge {charge}"),
            )),
            Err(PgError::Mismatch(why)) => Err(ApiError::unprocessable("pg_payment_mismatch", why)),
            Err(PgError::Unsupported(why)) => Err(ApiError::unprocessable("pg_does_not_confirm", why)),
            Err(e) => Err(ApiError::pg(&e)),
        },
        (Verdict::NotPaid, _) => match adapter.find_charge(attempt).await {
            Ok((PaymentState::Paid { pg_payment_id, .. } | PaymentState::Refunded { pg_payment_id, .. }, _)) => {
                Err(ApiError::conflict(
                    "pg_shows_paid",
                    format!("the PG shows charge {charge} paid as payment {pg_payment_id}: resolve it as paid"),
                ))
            }
            Ok((PaymentState::Pending, _)) => Err(ApiError::conflict(
                "pg_pending",
                format!("the PG shows charge {charge} still pending; resolve it once the PG has settled it"),
            )),
            Ok((PaymentState::Failed { .. }, _)) | Err(PgError::NotFound) => {
                Ok(PgWord::NotPaid(PgConfirmation::Confirmed))
            }
            // The PG cannot be asked about this charge: the person's word, with their reason.
            Err(PgError::Unsupported(_)) => Ok(PgWord::NotPaid(PgConfirmation::OperatorOnly)),
            Err(e) => Err(ApiError::pg(&e)),
        },
        _ => Err(ApiError::bad_request("invalid_resolution", "a charge is resolved paid or not_paid")),
    }
}

/// Whether `p` is new: a PG payment recorded before is kept as it is if it is this charge's; a
/// payment of another charge (or none) cannot be made this one's.
async fn new_payment(deps: &Deps, p: &PaymentRecord) -> Result<bool, ApiError> {
    match deps.store.get_payment(&p.payment_id).await.map_err(store_error)? {
        None => Ok(true),
        Some(recorded) if recorded.charge_id == p.charge_id && recorded.partner_id == p.partner_id => Ok(false),
        Some(_) => Err(ApiError::conflict(
            "payment_already_recorded",
            "the PG's payment is recorded already, as another charge's: it cannot be this one's",
        )),
    }
}

/// `GET /reviews?limit=&cursor=`: what needs a person at the key's partner, oldest first —
/// subscriptions whose charge is in review and refunds whose outcome is unknown (or whose
/// reservation is stuck), each with the PG references a person looks up in the PG's admin.
pub(crate) async fn list(deps: &Deps, key: &ApiKeyRecord, req: &lambda_http::Request) -> Result<Value, ApiError> {
    use lambda_http::RequestExt;
    use paycycle::api;
    use paycycle::store::keys;
    use paycycle::store::reviews::{Review, review_shard};
    let limit = api::page_limit(req)?;
    let shard = review_shard(&key.partner_id);
    let scope = api::CursorScope {
        partition: (keys::DUE_SHARD, &shard),
        sort: (keys::NEXT_ATTEMPT_AT, api::SortKind::Number),
        pk_prefixes: &["SUB#", "PAY#"],
    };
    let params = req.query_string_parameters();
    let start = params.first("cursor").map(|c| api::decode_index_cursor(c, &scope)).transpose()?;
    let page = deps.store.reviews(&key.partner_id, limit, start, Timestamp::now()).await.map_err(store_error)?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|r| match r {
            Review::Subscription { record, attempt } => subscription_review(record, attempt.as_ref()),
            Review::Refund { refund, payment } => refund_review(refund, payment.as_ref()),
        })
        .collect();
    let next_cursor = page.next.as_ref().map(api::encode_cursor);
    Ok(json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor}))
}

/// A subscription in review: the charge, and what identifies it at the PG — the order id we sent
/// (the charge id: Payple `PCD_PAY_OID`, StepPay `partnerOrderId`), the KST dates it was sent on
/// (Payple's admin and lookup are by date), and the PG payment a webhook named, if one did.
fn subscription_review(r: &SubscriptionRecord, attempt: Option<&Attempt>) -> Value {
    let s = &r.subscription;
    let since = s.collection.as_ref().and_then(|c| c.unknown_since);
    let charge = attempt.map(|a| {
        // The dates renew looks the charge up under (latest first): Payple's admin finds it by them.
        let dates = paycycle::pg::trace::sent_dates(a);
        json!({"charge_id": a.charge_id, "amount": a.amount, "requested_at": a.requested_at.to_string(),
               "status": a.status.name(),
               "pg_reference": {"order_id": a.charge_id, "request_dates_kst": dates,
                                "pg_payment_id": a.pg.pg_payment_hint}})
    });
    json!({"kind": "subscription", "since": since.map(|t| t.to_string()), "subscription_id": s.id,
           "customer_id": r.customer.id, "state": s.state, "pg": r.pg, "charge": charge,
           "resolve": format!("/subscriptions/{}/resolve", s.id)})
}

/// A refund whose outcome is unknown: its payment's PG references (Payple: OID and payment date).
fn refund_review(r: &paycycle::store::payments::RefundRecord, payment: Option<&PaymentRecord>) -> Value {
    let pg_reference = payment
        .map(|p| json!({"pg_payment_id": p.pg_payment_id, "pay_date_kst": p.pay_date_kst, "pg_order": p.pg_order}));
    json!({"kind": "refund", "since": r.requested_at.to_string(), "refund_id": r.refund_id,
           "payment_id": r.payment_id, "amount": r.amount, "status": r.status, "reason": r.reason,
           "pg": payment.map(|p| p.pg), "pg_reference": pg_reference,
           "resolve": format!("/payments/{}/refunds/{}/resolve", r.payment_id, r.refund_id)})
}
