//! What verify does with one stored webhook event (DESIGN §3–§4). A webhook is only a pointer:
//! every decision rests on what the PG answers to a lookup. Out-of-order and repeated events
//! converge: payments are recorded once per PG transaction, transitions are guarded by version.

use jiff::Timestamp;
use paycycle::domain::attempt::ChargeId;
use paycycle::domain::events::EventKind;
use paycycle::domain::events::RefundEventData;
use paycycle::domain::payment::RefundStatus;
use paycycle::domain::subscription::{PauseWhen, Subscription, SubscriptionState, Transition, TransitionError};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::money::Krw;
use paycycle::pg::{Evidence, Notice, OrderReport, Pg, PgError, PgMode, PgSubscriptionState, RenewalOutcome, Source};
use paycycle::store::StoreError;
use paycycle::store::checkouts::{CheckoutPurpose, CheckoutRecord, CheckoutStatus};
use paycycle::store::outbox::{RefundSettled, refund_event};
use paycycle::store::payments::{PaymentRecord, RefundOutcome, RefundRecord, payment_id_for};
use paycycle::store::sha256_hex;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::webhooks::{WebhookEvent, WebhookStatus};
use serde_json::{Map, Value};

use crate::Deps;
use crate::first::{self, VerifyError};

/// The outcome of one event: final (recorded on the event) or to be retried.
pub enum Verdict {
    Final(WebhookStatus, String),
    Retry(String),
}

fn verified(m: impl Into<String>) -> Verdict {
    Verdict::Final(WebhookStatus::Verified, m.into())
}
fn rejected(m: impl Into<String>) -> Verdict {
    Verdict::Final(WebhookStatus::Rejected, m.into())
}
fn ignored(m: impl Into<String>) -> Verdict {
    Verdict::Final(WebhookStatus::Ignored, m.into())
}

fn from_store(e: StoreError) -> Verdict {
    Verdict::Retry(format!("store: {e}"))
}

fn from_pg(e: PgError) -> Verdict {
    match e {
        PgError::NotFound => rejected("the PG has no such payment"),
        PgError::Invalid(m) => rejected(format!("not a request the PG can answer: {m}")),
        other => Verdict::Retry(format!("PG: {other}")),
    }
}

fn from_verify(r: Result<first::Completed, VerifyError>) -> Verdict {
    match r {
        Ok(c) => verified(format!(
            "checkout {} completed; subscription {} {}",
            c.checkout.checkout_id,
            c.subscription.id(),
            c.subscription.subscription.state
        )),
        Err(VerifyError::Failed(m)) => verified(format!("the PG reports the first payment failed: {m}")),
        Err(VerifyError::Mismatch(m)) | Err(VerifyError::NotPaid(m)) | Err(VerifyError::AlreadyUsed(m)) => rejected(m),
        Err(VerifyError::NotFound(what)) => rejected(format!("no such {what}")),
        Err(VerifyError::InProgress) => Verdict::Retry("another verify holds the checkout".into()),
        Err(VerifyError::ChargeInFlight(m)) => Verdict::Retry(m),
        Err(VerifyError::Refused(m)) => verified(format!("the card change was refused: {m}")),
        Err(VerifyError::Pg(e)) => from_pg(e),
        Err(VerifyError::Store(e)) => from_store(e),
    }
}

/// `order.payment_completed` claims a payment: StepPay's lookup saying "not paid" or "no such
/// order" may be lag, and the event's dedupe key has no timestamp — refused now, a genuine payment
/// would be lost for good. Asked again instead (backoff, alarmed after a day like every retry).
fn paid_claim(completed: bool, e: VerifyError) -> Verdict {
    match e {
        VerifyError::NotPaid(m) if completed => Verdict::Retry(format!("order.payment_completed, not paid (yet): {m}")),
        e => from_verify(Err(e)),
    }
}

/// A StepPay idKey (possibly a billing key) or another PG reference, for an outcome or a log.
fn mask(reference: &str) -> String {
    paycycle::pii::mask_reference(reference)
}

/// The PG reports paid a renewal charge whose attempt is already settled. If a person settled it
/// not paid (`POST /subscriptions/{id}/resolve`, with a cancel or dunning over, so it was not sent
/// again), the PG took the money after all: the PG confirms that payment is this charge's, it is
/// recorded (an approved charge is always recorded), and a person is alarmed — the subscription
/// has moved on without it. Anything else settled it already, with the PG's own answer.
async fn late_paid_charge(deps: &Deps, charge_id: &ChargeId, pg_payment_id: &str, now: Timestamp) -> Verdict {
    use paycycle::domain::attempt::AttemptStatus;
    use paycycle::domain::review::NOT_PAID_ON_REVIEW;
    let settled = || ignored(format!("renewal charge {charge_id} is already settled"));
    let attempt = match deps.store.get_attempt(charge_id).await {
        Ok(Some(a)) if matches!(&a.status, AttemptStatus::Declined { code, .. } if code == NOT_PAID_ON_REVIEW) => a,
        Ok(_) => return settled(),
        Err(e) => return from_store(e),
    };
    let sub = match deps.store.get_subscription(charge_id.subscription()).await {
        Ok(Some(s)) => s,
        Ok(None) => return settled(),
        Err(e) => return from_store(e),
    };
    let (paid_id, amount, paid_at, details) =
        match deps.pgs.adapter(sub.pg).confirm_charge(&attempt, pg_payment_id).await {
            Ok((paycycle::pg::PaymentState::Paid { pg_payment_id, amount, paid_at, .. }, details)) => {
                (pg_payment_id, amount, paid_at, details)
            }
            Ok(other) => {
                return ignored(format!("renewal charge {charge_id}: the PG does not show it paid ({other:?})"));
            }
            Err(e) => return from_pg(e),
        };
    let payment = PaymentRecord::paid(
        sub.pg,
        &paid_id,
        &sub.customer.id,
        amount,
        paid_at.unwrap_or(now),
        Some(sub.id().clone()),
        Some(charge_id.clone()),
        None,
    )
    .for_partner(&sub.partner_id)
    .with_details(details);
    match deps.store.create_payment(&payment).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return from_store(e),
    }
    tracing::error!(
        alarm = "paycycle_needs_review",
        subscription_id = %sub.id(),
        %charge_id,
        payment_id = %payment.payment_id,
        amount = %amount,
        "a charge a person settled not paid was paid at the PG: recorded; refund it or restore the subscription"
    );
    verified(format!("renewal charge {charge_id} was paid after a person settled it not paid: recorded"))
}

/// Form or JSON fields (an object), as the PG or the partner sent them.
pub fn fields(content_type: &str, body: &[u8]) -> Option<Map<String, Value>> {
    match paycycle::pg::body_value(content_type, body).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

pub async fn process(deps: &Deps, event: &WebhookEvent, now: Timestamp) -> Verdict {
    let notice = match deps.pgs.read_webhook(event.pg, &event.content_type, event.body.as_bytes()).await {
        Ok(n) => n,
        Err(e) => return from_pg(e),
    };
    match notice {
        Notice::Ignore(why) => ignored(why),
        Notice::Reject(why) => rejected(why),
        Notice::CheckoutPayment { mode, checkout_id, evidence, date_hint } => {
            checkout_payment(deps, mode, &checkout_id, evidence, date_hint, now).await
        }
        Notice::OwnCharge { mode, charge_id, date_hint } => own_charge(deps, mode, &charge_id, date_hint, now).await,
        Notice::ChargeOutcome { charge_id, pg_payment_id, paid } => {
            match deps.store.hint_attempt(&charge_id, &pg_payment_id, paid).await {
                Ok(()) => verified(format!(
                    "renewal charge {charge_id} is {} at the PG; renew resolves it",
                    mask(&pg_payment_id)
                )),
                Err(StoreError::Conflict(_)) if paid => late_paid_charge(deps, &charge_id, &pg_payment_id, now).await,
                Err(StoreError::Conflict(_)) => ignored(format!("renewal charge {charge_id} is already settled")),
                Err(e) => from_store(e),
            }
        }
        Notice::Refunded { pg, pg_payment_id, refunded } => {
            refunded_at_pg(deps, pg, &pg_payment_id, refunded, now).await
        }
        Notice::PgOrder { mode, code, paid_claim, evidence } => {
            pg_order(deps, mode, &code, paid_claim, evidence, now).await
        }
        Notice::PgSubscription { mode, id } => pg_subscription(deps, mode, &id, now).await,
    }
}

/// A checkout's first payment a webhook names: completed by lookup; on a checkout already failed,
/// what the PG confirms is recorded on it for a refund.
async fn checkout_payment(
    deps: &Deps,
    mode: PgMode,
    checkout_id: &str,
    evidence: Evidence,
    date_hint: Option<String>,
    now: Timestamp,
) -> Verdict {
    let checkout = match deps.store.get_checkout(checkout_id).await {
        Ok(Some(c)) if c.pg == mode => c,
        Ok(_) => return rejected(format!("no {mode} checkout {checkout_id}")),
        Err(e) => return from_store(e),
    };
    if checkout.status == CheckoutStatus::Failed && mode.capabilities().late_payments {
        return paid_after_failure(deps, checkout, checkout_id, date_hint, now).await;
    }
    from_verify(first::complete(deps, checkout, &evidence, Source::Webhook, now).await)
}

/// A PG success for a checkout we failed: looked up, and what the PG confirms is recorded.
async fn paid_after_failure(
    deps: &Deps,
    checkout: CheckoutRecord,
    reference: &str,
    hint: Option<String>,
    now: Timestamp,
) -> Verdict {
    recorded_after_failure(deps, checkout, reference, reference, hint, now)
        .await
        .unwrap_or_else(|e| from_verify(Err(e)))
}

/// What [`first::paid_after_failure`] made of a failed checkout's payment (`what`, for the
/// verdict): recorded for a refund, or recorded before. The caller decides on its errors.
async fn recorded_after_failure(
    deps: &Deps,
    checkout: CheckoutRecord,
    reference: &str,
    what: &str,
    hint: Option<String>,
    now: Timestamp,
) -> Result<Verdict, VerifyError> {
    let id = checkout.checkout_id.clone();
    let pg = checkout.pg.pg();
    Ok(match first::paid_after_failure(deps, checkout, reference, hint, now).await? {
        Some(p) => verified(format!(
            "checkout {id} had failed, but the PG ({pg}) confirms {what} paid {}: recorded as payment {} for a refund (needs review)",
            p.amounts.paid, p.payment_id
        )),
        None => verified(format!("checkout {id} is failed and its payment is already recorded")),
    })
}

/// A payment we sent under a charge id: a checkout's first charge (`{sub}-p0-a1`, Payple AUTH)
/// completes its checkout by lookup — its verify may have lost the answer, and nobody else would
/// (issue 20 item 4) — or, if the checkout was failed meanwhile, what the PG confirms is recorded
/// on it; any other is a renewal, which renew settles by lookup itself.
async fn own_charge(deps: &Deps, mode: PgMode, charge_id: &ChargeId, hint: Option<String>, now: Timestamp) -> Verdict {
    let first = ChargeId::new(charge_id.subscription().clone(), 0, 1).ok();
    if first.as_ref() != Some(charge_id) {
        return ignored("a renewal charge: renew settles it by lookup");
    }
    let checkout = match deps.store.checkout_of_subscription(charge_id.subscription()).await {
        Ok(Some(c)) if c.pg == mode && c.status == CheckoutStatus::Failed => {
            return paid_after_failure(deps, c, &charge_id.to_string(), hint, now).await;
        }
        Ok(Some(c)) if c.pg == mode && c.status == CheckoutStatus::Open && c.first_charge_at.is_some() => c,
        Ok(Some(c)) if c.status == CheckoutStatus::Completed => {
            return verified(format!("checkout {} is already completed", c.checkout_id));
        }
        Ok(_) => return ignored(format!("{charge_id} is not the first charge of an open {mode} checkout")),
        Err(e) => return from_store(e),
    };
    from_verify(first::complete(deps, checkout, &Evidence::OwnSend, Source::Webhook, now).await)
}

/// A PG payment the PG reports refunded: if the PG refunded more than paycycle knows (a refund
/// made in the PG's dashboard), the difference is recorded as a refund that succeeded.
async fn refunded_at_pg(deps: &Deps, pg: Pg, pg_payment_id: &str, pg_refunded: Krw, now: Timestamp) -> Verdict {
    let payment_id = payment_id_for(pg, pg_payment_id);
    let payment = match deps.store.get_payment(&payment_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return ignored(format!("payment {} is not recorded by paycycle", mask(pg_payment_id))),
        Err(e) => return from_store(e),
    };
    let known = payment.amounts.refunded.checked_add(payment.amounts.refund_pending).unwrap_or(payment.amounts.paid);
    let Some(delta) = pg_refunded.checked_sub(known).ok().filter(|d| !d.is_zero()) else {
        return verified(format!("the PG's ({pg}) refunds are already recorded"));
    };
    record_external_refund(deps, &payment, delta, pg_refunded, now).await
}

async fn record_external_refund(
    deps: &Deps,
    payment: &PaymentRecord,
    delta: Krw,
    pg_total: Krw,
    now: Timestamp,
) -> Verdict {
    let refund_id = format!(
        "ref_{}",
        &sha256_hex(format!("external:{}:{}", payment.pg_payment_id, pg_total.won()).as_bytes())[..24]
    );
    let refund = RefundRecord {
        refund_id: refund_id.clone(),
        payment_id: payment.payment_id.clone(),
        amount: delta,
        reason: "refunded at the PG outside paycycle".into(),
        status: RefundStatus::Reserved,
        requested_at: now,
        pg_refund_id: None,
        failure_code: None,
        failure_message: None,
        request_hash: None,
        cancel_subscription: false,
        partner_id: payment.partner_id.clone(),
        resolution: None,
    };
    let reserved = match deps.store.get_refund(&payment.payment_id, &refund_id).await {
        Ok(Some(r)) if r.status != RefundStatus::Reserved => return verified(format!("refund {refund_id} recorded")),
        Ok(Some(r)) => r,
        Ok(None) => match deps.store.reserve_refund(&refund).await {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => refund,
            Err(StoreError::Conflict(_)) => return rejected("the PG's refund exceeds what paycycle can still refund"),
            Err(e) => return from_store(e),
        },
        Err(e) => return from_store(e),
    };
    let data = RefundEventData {
        refund_id: refund_id.clone(),
        payment_id: payment.payment_id.clone(),
        amount: delta,
        partner_id: payment.partner_id.clone(),
        external: true,
    };
    let events = vec![refund_event(RefundSettled::Succeeded, data, now)];
    match deps.store.settle_refund(&reserved, &RefundOutcome::Succeeded { pg_refund_id: None }, &events).await {
        Ok(_) => {
            deps.publisher.publish_committed(&deps.store, &events).await;
            verified(format!("recorded a refund of {delta} made at the PG ({})", payment.pg.pg()))
        }
        Err(e) => from_store(e),
    }
}

/// A PG order (where the PG renews): the first order of a checkout, or a renewal the PG made —
/// read from the PG's order lookup, never from the webhook ([`paycycle::pg::Adapter::renewal_order`]).
/// `paid_claim`: the webhook claims the order was paid (StepPay `order.payment_completed`), so an
/// unpaid order is asked again; an update of an unpaid order is just not about a payment.
async fn pg_order(
    deps: &Deps,
    mode: PgMode,
    code: &str,
    paid_claim: bool,
    evidence: Evidence,
    now: Timestamp,
) -> Verdict {
    match deps.store.checkout_by_pg_reference(mode, code).await {
        Ok(Some(checkout)) => return checkout_order(deps, checkout, code, paid_claim, evidence, now).await,
        Ok(None) => {}
        Err(e) => return from_store(e),
    }
    let report = match deps.pgs.adapter(mode).renewal_order(code, now).await {
        Ok(r) => r,
        Err(PgError::NotFound) if paid_claim => {
            return Verdict::Retry(format!("the PG has no order {code} (yet): its paid claim is asked again"));
        }
        Err(e) => return from_pg(e),
    };
    let (pg_subscription, outcome) = match report {
        OrderReport::Unusable(why) => return rejected(why),
        OrderReport::Renewal { pg_subscription, outcome } => (pg_subscription, outcome),
    };
    let record = match pg_subscription_record(deps, mode, &pg_subscription).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    let (charged, pg_order) = match outcome {
        RenewalOutcome::Paid { charged, pg_order } => (charged, pg_order),
        // The PG's lookup may lag its own webhook; the event's dedupe key has no timestamp, so a
        // refusal now would lose a genuine payment for good. Asked again (with backoff, alarmed
        // after a day) until the PG says paid.
        RenewalOutcome::Unpaid { .. } if paid_claim => {
            return Verdict::Retry(format!("the PG does not say order {code} is paid (yet)"));
        }
        RenewalOutcome::Unpaid { failed: false } => return ignored(format!("order {code} is not paid (yet)")),
        // A failed renewal order says nothing about the subscription now (a replay of an old one
        // must not set a paid subscription past due): the PG's subscription state decides.
        RenewalOutcome::Unpaid { failed: true } => {
            return follow_pg_subscription(deps, mode, &record, &pg_subscription, now).await;
        }
    };
    let payment = PaymentRecord::paid(
        mode,
        &charged.pg_payment_id,
        &record.customer.id,
        charged.amount,
        charged.approved_at,
        Some(record.id().clone()),
        None,
        None,
    )
    .for_partner(&record.partner_id)
    // The renewal order, through which this payment is refunded.
    .with_pg_order(Some(pg_order).filter(|_| mode.capabilities().refunds_through_order));
    record_renewal(deps, mode, &record, &payment, code, &pg_subscription, now).await
}

/// Records a renewal payment the PG confirmed (once per PG payment: the payment is keyed by its
/// id), with the subscription as the PG's state makes it ([`renewal_transition`]).
async fn record_renewal(
    deps: &Deps,
    mode: PgMode,
    record: &SubscriptionRecord,
    payment: &PaymentRecord,
    code: &str,
    pg_subscription: &str,
    now: Timestamp,
) -> Verdict {
    if let Ok(Some(_)) = deps.store.get_payment(&payment.payment_id).await {
        return verified(format!("renewal order {code} is already recorded"));
    }
    // What state the subscription is in is the PG's to say (a pause or resume may have crossed
    // this webhook): asked before anything is written.
    let state = match deps.pgs.adapter(mode).subscription_state(pg_subscription).await {
        Ok(s) => s,
        Err(e) => return Verdict::Retry(format!("the PG's subscription {pg_subscription}: {e}")),
    };
    let (subscription, kinds) = renewal_transition(record, state, payment, now);
    let next = record.next(subscription);
    let change = TransitionCommit::new(&next, SubscriptionWrite::Next { lease_owner: None }, &kinds, now).paid(payment);
    let already = format!("renewal order {code} is already recorded");
    let done = format!("the PG ({}) renewed {}: order {code}, {}", mode.pg(), record.id(), payment.amounts.paid);
    commit(deps, &change, done, Some(already)).await
}

/// The first order of a checkout (where the PG renews): completes it by order lookup; on a
/// checkout already failed, a payment the PG confirms is still recorded (on the failed checkout,
/// for a refund).
async fn checkout_order(
    deps: &Deps,
    checkout: CheckoutRecord,
    code: &str,
    completed: bool,
    evidence: Evidence,
    now: Timestamp,
) -> Verdict {
    if checkout.status != CheckoutStatus::Failed {
        return match first::complete(deps, checkout, &evidence, Source::Webhook, now).await {
            Err(e) => paid_claim(completed, e),
            ok => from_verify(ok),
        };
    }
    let id = checkout.checkout_id.clone();
    // A card registration completes without money: its "not paid" is final, not lag.
    let registers_only = checkout.purpose == CheckoutPurpose::PaymentMethod;
    match recorded_after_failure(deps, checkout, code, &format!("order {code}"), None, now).await {
        Ok(verdict) => verdict,
        Err(VerifyError::NotPaid(m)) if !completed || registers_only => {
            ignored(format!("checkout {id} is failed: {m}"))
        }
        Err(e) => paid_claim(completed, e),
    }
}

/// Our subscription for the PG's subscription `pg_subscription`.
async fn pg_subscription_record(
    deps: &Deps,
    mode: PgMode,
    pg_subscription: &str,
) -> Result<SubscriptionRecord, Verdict> {
    let id = match deps.store.subscription_by_pg_subscription(mode, pg_subscription).await {
        Ok(Some(id)) => id,
        // The first order's verification may not be committed yet: try again later.
        Ok(None) => return Err(Verdict::Retry(format!("the PG's subscription {pg_subscription} is not known (yet)"))),
        Err(e) => return Err(from_store(e)),
    };
    match deps.store.get_subscription(&id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(from_store(StoreError::NotFound(id.to_string()))),
        Err(e) => Err(from_store(e)),
    }
}

/// Commits a transition without a payment (no-op transitions are already so).
async fn apply(deps: &Deps, record: &SubscriptionRecord, t: Transition, now: Timestamp, done: String) -> Verdict {
    if t.events.is_empty() && t.subscription.state == record.subscription.state {
        return verified(format!("already {}", record.subscription.state));
    }
    let next = record.next(t.subscription);
    let change = TransitionCommit::new(&next, SubscriptionWrite::Next { lease_owner: None }, &t.events, now);
    commit(deps, &change, done, None).await
}

/// A PG subscription changed (StepPay `subscription.updated`): the webhook's status is only a
/// pointer — the state acted on is what the PG's lookup answers.
async fn pg_subscription(deps: &Deps, mode: PgMode, pg_subscription: &str, now: Timestamp) -> Verdict {
    let state = match deps.pgs.adapter(mode).subscription_state(pg_subscription).await {
        Ok(s) => s,
        Err(e) => return from_pg(e),
    };
    let record = match pg_subscription_record(deps, mode, pg_subscription).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    reconcile_with_pg(deps, &record, state, now).await
}

/// [`pg_subscription`] for a record already read.
async fn follow_pg_subscription(
    deps: &Deps,
    mode: PgMode,
    record: &SubscriptionRecord,
    pg_subscription: &str,
    now: Timestamp,
) -> Verdict {
    match deps.pgs.adapter(mode).subscription_state(pg_subscription).await {
        Ok(state) => reconcile_with_pg(deps, record, state, now).await,
        Err(e) => from_pg(e),
    }
}

/// Brings a subscription the PG renews to what the PG says of it ([`follow_pg`]).
pub async fn reconcile_with_pg(
    deps: &Deps,
    record: &SubscriptionRecord,
    state: PgSubscriptionState,
    now: Timestamp,
) -> Verdict {
    match follow_pg(&record.subscription, state, now) {
        Ok(Some((t, what))) => apply(deps, record, t, now, format!("the PG's subscription {what}")).await,
        Ok(None) => ignored(format!("the PG's subscription is {state:?}: nothing to mirror")),
        Err(e) => ignored(format!("the PG's state {state:?} does not apply to {}: {e}", record.subscription.state)),
    }
}

/// What the PG's subscription state makes of a subscription the PG renews — its state is the
/// PG's: unpaid → past due, ended → canceled, active → active (after unpaid: recovered; paused
/// here: resumed, e.g. by StepPay's `whenToResume` or in its portal), paused while active here →
/// paused now. The renewal order that paid it is recorded by its own order webhook. `None`:
/// nothing to mirror.
fn follow_pg(
    s: &Subscription,
    state: PgSubscriptionState,
    now: Timestamp,
) -> Result<Option<(Transition, &'static str)>, TransitionError> {
    use PgSubscriptionState as S;
    let t = match (state, s.state) {
        (S::Unpaid, _) => (s.renewal_failed_at_pg()?, "UNPAID: past due"),
        (S::Ended, SubscriptionState::Canceled) => return Ok(None),
        (S::Ended, _) => (s.cancel(now, false)?, "ended at the PG: canceled"),
        (S::Active, SubscriptionState::Paused) => (s.resume(now)?, "ACTIVE at the PG: resumed"),
        (S::Active, _) => (s.recovered_at_pg()?, "ACTIVE again: recovered"),
        (S::Paused, SubscriptionState::Active) => (s.pause(now, PauseWhen::Now)?, "PAUSE at the PG: paused"),
        _ => return Ok(None),
    };
    Ok(Some(t))
}

/// A renewal the PG charged, as it applies here: always a payment (an approved charge is always
/// recorded); the period it paid is added in every state that has one (paused included); then
/// the state follows the PG's. Where no renewal applies (canceled here, …) only the payment is
/// recorded, the subscription unchanged, and the needs-review alarm names it.
fn renewal_transition(
    record: &SubscriptionRecord,
    state: PgSubscriptionState,
    payment: &PaymentRecord,
    now: Timestamp,
) -> (Subscription, Vec<EventKind>) {
    let renewed = match record.subscription.renewed_by_pg() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(alarm = "paycycle_needs_review", subscription_id = %record.id(),
                payment_id = %payment.payment_id, amount = %payment.amounts.paid, reason = %e,
                "the PG charged a renewal of a subscription that cannot renew here: recorded as a payment (refund it via POST /payments/{{id}}/refunds if due)");
            return (record.subscription.clone(), vec![EventKind::PaymentSucceeded]);
        }
    };
    let mut kinds = renewed.events;
    match follow_pg(&renewed.subscription, state, now) {
        Ok(Some((t, _))) => {
            let more: Vec<EventKind> = t.events.into_iter().filter(|k| !kinds.contains(k)).collect();
            kinds.extend(more);
            (t.subscription, kinds)
        }
        Ok(None) | Err(_) => (renewed.subscription, kinds),
    }
}

async fn commit(deps: &Deps, change: &TransitionCommit<'_>, done: String, already_recorded: Option<String>) -> Verdict {
    match deps.publisher.commit_transition(&deps.store, change, |_| {}).await {
        Ok(_) => verified(done),
        // The payment of this PG transaction was recorded by an earlier delivery.
        Err(e) if e.payment_exists() && already_recorded.is_some() => verified(already_recorded.unwrap_or_default()),
        Err(e) => from_store(e),
    }
}
