//! What verify does with one stored webhook event (DESIGN §3–§4). A webhook is only a pointer:
//! every decision rests on what the PG answers to a lookup. Out-of-order and repeated events
//! converge: payments are recorded once per PG transaction, transitions are guarded by version.

use jiff::Timestamp;
use paycycle::domain::attempt::ChargeId;
use paycycle::pg::PgMode;
use paycycle::domain::events::EventKind;
use paycycle::domain::payment::RefundStatus;
use paycycle::domain::subscription::{PauseWhen, Subscription, SubscriptionState, Transition, TransitionError};
use paycycle::money::Krw;
use paycycle::pg::PgError;
use paycycle::pg::steppay::transformers::WebhookType;
use paycycle::pg::steppay::transformers::{PaymentStatus, SubscriptionStatus};
use paycycle::pg::steppay::webhook::{self as steppay_webhook, SteppayWebhook, V2Data, V2Event, V2Webhook};
use paycycle::store::StoreError;
use paycycle::store::checkouts::{CheckoutRecord, CheckoutStatus};
use paycycle::store::outbox::{OutboxEvent, subscription_events};
use paycycle::store::payments::{PaymentRecord, RefundOutcome, RefundRecord, payment_id_for};
use paycycle::store::sha256_hex;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::webhooks::{WebhookEvent, WebhookStatus};
use serde_json::{Map, Value};

use crate::Deps;
use crate::first::{self, Evidence, Source, VerifyError};

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

/// Form or JSON fields (an object), as the PG or the partner sent them.
pub fn fields(content_type: &str, body: &[u8]) -> Option<Map<String, Value>> {
    match paycycle::pg::body_value(content_type, body).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

pub async fn process(deps: &Deps, event: &WebhookEvent, now: Timestamp) -> Verdict {
    match event.pg.as_str() {
        "payple" => payple(deps, event, now).await,
        "steppay" => steppay(deps, event, now).await,
        other => rejected(format!("unknown PG {other}")),
    }
}

async fn payple(deps: &Deps, event: &WebhookEvent, now: Timestamp) -> Verdict {
    let Some(fields) = fields(&event.content_type, event.body.as_bytes()) else {
        return rejected("not a Payple result");
    };
    if !first::payple_success(&fields) {
        return ignored("an error/close result: the checkout completes or fails through POST /payments/verify");
    }
    let oid = fields.get("PCD_PAY_OID").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Ok(charge_id) = oid.parse::<ChargeId>() {
        let hint = first::field(&fields, "PCD_PAY_TIME").as_deref().and_then(paycycle::pg::payple::pay_date);
        return payple_charge(deps, &charge_id, hint, now).await;
    }
    if !oid.starts_with("chk_") {
        return rejected(format!("PCD_PAY_OID {oid:?} is not a paycycle checkout"));
    }
    let checkout = match deps.store.get_checkout(&oid).await {
        Ok(Some(c)) if c.pg == PgMode::Payple => c,
        Ok(_) => return rejected(format!("no Payple checkout {oid}")),
        Err(e) => return from_store(e),
    };
    if checkout.status == CheckoutStatus::Failed {
        let hint = first::field(&fields, "PCD_PAY_TIME").as_deref().and_then(paycycle::pg::payple::pay_date);
        return paid_after_failure(deps, checkout, &oid, hint, now).await;
    }
    from_verify(first::complete(deps, checkout, &Evidence::Payple(fields), Source::Webhook, now).await)
}

/// A Payple success for a checkout we failed: looked up, and what Payple confirms is recorded.
async fn paid_after_failure(
    deps: &Deps,
    checkout: CheckoutRecord,
    oid: &str,
    hint: Option<String>,
    now: Timestamp,
) -> Verdict {
    let id = checkout.checkout_id.clone();
    match first::paid_after_failure(deps, checkout, oid, hint, now).await {
        Ok(Some(p)) => verified(format!(
            "checkout {id} had failed, but Payple confirms {oid} paid {}: recorded as payment {} for a refund (needs review)",
            p.amounts.paid, p.payment_id
        )),
        Ok(None) => verified(format!("checkout {id} is failed and its payment is already recorded")),
        Err(e) => from_verify(Err(e)),
    }
}

/// A Payple charge we sent under a charge id: an AUTH checkout's first charge (`{sub}-p0-a1`)
/// completes its checkout by lookup — its verify may have lost the answer, and nobody else
/// would (issue 20 item 4) — or, if the checkout was failed meanwhile, what Payple confirms is
/// recorded on it; any other is a renewal, which renew settles by lookup itself.
async fn payple_charge(deps: &Deps, charge_id: &ChargeId, hint: Option<String>, now: Timestamp) -> Verdict {
    let first = ChargeId::new(charge_id.subscription().clone(), 0, 1).ok();
    if first.as_ref() != Some(charge_id) {
        return ignored("a renewal charge: renew settles it by lookup");
    }
    let checkout = match deps.store.checkout_of_subscription(charge_id.subscription()).await {
        Ok(Some(c)) if c.pg == PgMode::Payple && c.status == CheckoutStatus::Failed => {
            return paid_after_failure(deps, c, &charge_id.to_string(), hint, now).await;
        }
        Ok(Some(c)) if c.pg == PgMode::Payple && c.status == CheckoutStatus::Open && c.first_charge_at.is_some() => c,
        Ok(Some(c)) if c.status == CheckoutStatus::Completed => {
            return verified(format!("checkout {} is already completed", c.checkout_id));
        }
        Ok(_) => return ignored(format!("{charge_id} is not the first charge of an open Payple checkout")),
        Err(e) => return from_store(e),
    };
    from_verify(first::complete(deps, checkout, &Evidence::FirstCharge, Source::Webhook, now).await)
}

async fn steppay(deps: &Deps, event: &WebhookEvent, now: Timestamp) -> Verdict {
    match steppay_webhook::parse(&event.content_type, event.body.as_bytes()) {
        Ok(SteppayWebhook::Payment(w)) => steppay_payment(deps, w.kind, &w.id_key, now).await,
        Ok(SteppayWebhook::V2(w)) => steppay_v2(deps, &w, now).await,
        Err(e) => rejected(format!("not a StepPay webhook: {e}")),
    }
}

/// A v2 webhook (dev-docs `docs/08-1-1_Webhook-Events.md`): each names what to look up; the
/// lookup decides. Events paycycle does not use are ignored.
async fn steppay_v2(deps: &Deps, w: &V2Webhook, now: Timestamp) -> Verdict {
    match (&w.event, &w.data) {
        (V2Event::OrderPaymentCompleted | V2Event::OrderUpdated, V2Data::Order(_)) => match w.order_ref() {
            Some(code) => steppay_order(deps, code, w.event == V2Event::OrderPaymentCompleted, now).await,
            None => ignored(format!("{} names no order", w.event.as_str())),
        },
        (V2Event::SubscriptionUpdated, V2Data::Subscription(d)) => match d.subscription_id.as_deref() {
            Some(id) => steppay_subscription(deps, id, now).await,
            None => ignored("subscription.updated names no subscription"),
        },
        // payment.* carry the idKey the receipt is asked by (08-1-2 Payment `idKey`): the same
        // paths as the self webhook's PAYMENT / FAILED / CANCELED.
        (V2Event::PaymentCompleted | V2Event::PaymentFailed | V2Event::PaymentCanceled, V2Data::Payment(d)) => {
            let Some(id_key) = d.id_key.as_deref().filter(|k| !k.is_empty()) else {
                return ignored(format!("{} names no idKey", w.event.as_str()));
            };
            let kind = match w.event {
                V2Event::PaymentCompleted => WebhookType::Payment,
                V2Event::PaymentFailed => WebhookType::Failed,
                _ => WebhookType::Canceled,
            };
            steppay_payment(deps, kind, id_key, now).await
        }
        _ => ignored(format!("StepPay event {} changes nothing paycycle keeps", w.event.as_str())),
    }
}

/// A self webhook `{webHookType, orderId, idKey}`: the receipt says what it is about.
async fn steppay_payment(deps: &Deps, kind: WebhookType, id_key: &str, now: Timestamp) -> Verdict {
    if kind == WebhookType::Canceled {
        // Looks the payment up itself (as a PaymentState); no receipt needed here.
        return steppay_canceled(deps, id_key, now).await;
    }
    let receipt = match deps.pgs.steppay.receipt(id_key).await {
        Ok(r) => r,
        Err(e) => return from_pg(e),
    };
    let reference = receipt.partner_order_id.clone().unwrap_or_default();
    if reference.starts_with("chk_") {
        let checkout = match deps.store.get_checkout(&reference).await {
            Ok(Some(c)) if c.pg == PgMode::SteppaySelf => c,
            Ok(_) => return rejected(format!("no StepPay self checkout {reference}")),
            Err(e) => return from_store(e),
        };
        let evidence = Evidence::SteppayPayment { id_key: id_key.to_string() };
        return from_verify(first::complete(deps, checkout, &evidence, Source::Webhook, now).await);
    }
    if let Ok(charge_id) = reference.parse::<ChargeId>() {
        // Paid, or failed for good: either settles a charge left unknown. StepPay cannot be asked
        // by our charge id; name the idKey so renew can ask by it (and a decline it confirms
        // there moves dunning on).
        let failed =
            matches!(receipt.payment_status.as_deref().map(PaymentStatus::parse), Some(Ok(PaymentStatus::Failed)));
        if receipt.payment_date.is_none() && !failed {
            return ignored(format!("renewal charge {charge_id} is neither paid nor failed at StepPay"));
        }
        // A paid payment's hint replaces a declined try's (one charge id may carry both).
        let paid = receipt.payment_date.is_some() && !failed;
        return match deps.store.hint_attempt(&charge_id, id_key, paid).await {
            Ok(()) => verified(format!("renewal charge {charge_id} is {} at StepPay; renew resolves it", mask(id_key))),
            Err(StoreError::Conflict(_)) => ignored(format!("renewal charge {charge_id} is already settled")),
            Err(e) => from_store(e),
        };
    }
    rejected(format!("payment {} names no paycycle checkout or charge (partnerOrderId {reference:?})", mask(id_key)))
}

/// A StepPay payment canceled at StepPay: if StepPay refunded more than paycycle knows (a refund
/// made in StepPay's dashboard), the difference is recorded as a refund that succeeded.
async fn steppay_canceled(deps: &Deps, id_key: &str, now: Timestamp) -> Verdict {
    let state = match deps.pgs.steppay.payment_state(id_key).await {
        Ok(s) => s,
        Err(e) => return from_pg(e),
    };
    let pg_refunded = match state {
        paycycle::pg::PaymentState::Refunded { amount, .. } => amount,
        paycycle::pg::PaymentState::Paid { refunded, .. } => refunded,
        _ => return ignored("StepPay reports no refund on this payment"),
    };
    let payment_id = payment_id_for(PgMode::SteppaySelf, id_key);
    let payment = match deps.store.get_payment(&payment_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return ignored(format!("payment {} is not recorded by paycycle", mask(id_key))),
        Err(e) => return from_store(e),
    };
    let known = payment.amounts.refunded.checked_add(payment.amounts.refund_pending).unwrap_or(payment.amounts.paid);
    let Some(delta) = pg_refunded.checked_sub(known).ok().filter(|d| !d.is_zero()) else {
        return verified("StepPay's refunds are already recorded");
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
    let data = serde_json::json!({
        "refund_id": refund_id, "payment_id": payment.payment_id, "amount": delta,
        "partner_id": payment.partner_id, "external": true,
    });
    let events = vec![OutboxEvent::new(EventKind::RefundSucceeded, &refund_id, 1, now, data)];
    match deps.store.settle_refund(&reserved, &RefundOutcome::Succeeded { pg_refund_id: None }, &events).await {
        Ok(_) => {
            deps.publisher.publish_committed(&deps.store, &events).await;
            verified(format!("recorded a refund of {delta} made at StepPay"))
        }
        Err(e) => from_store(e),
    }
}

/// A v2 order webhook (StepPay managed): the first order of a checkout, or a renewal StepPay made
/// (an order of type RECURRING whose `subscriptions` names the StepPay subscription, dev-docs
/// `08-1-2_Webhook-Schema.md` Order) — read from StepPay's order lookup, never from the webhook.
/// `completed`: the webhook claims the order was paid (`order.payment_completed`), so an unpaid
/// order is a forgery; an `order.updated` of an unpaid order is just not about a payment.
async fn steppay_order(deps: &Deps, code: &str, completed: bool, now: Timestamp) -> Verdict {
    match deps.store.checkout_by_pg_reference(PgMode::SteppayManaged, code).await {
        Ok(Some(checkout)) => return checkout_order(deps, checkout, code, completed, now).await,
        Ok(None) => {}
        Err(e) => return from_store(e),
    }
    let order = match deps.pgs.steppay.order(code).await {
        Ok(o) => o,
        Err(PgError::NotFound) if completed => {
            return Verdict::Retry(format!(
                "StepPay has no order {code} (yet): order.payment_completed is asked again"
            ));
        }
        Err(e) => return from_pg(e),
    };
    let pg_subscription = order
        .parent_subscription
        .clone()
        .or_else(|| order.subscriptions.first().cloned())
        .map(|v| match v {
            Value::Object(m) => m.get("id").map(|id| id.to_string()).unwrap_or_default(),
            other => other.to_string().trim_matches('"').to_string(),
        })
        .filter(|s| !s.is_empty() && s != "null");
    let Some(pg_subscription) = pg_subscription else {
        return rejected(format!("order {code} is neither a checkout's nor a subscription's"));
    };
    let record = match managed_subscription(deps, &pg_subscription).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    let id = record.id().clone();
    if order.payment_date.is_none() {
        if completed {
            // StepPay's lookup may lag its own webhook; the event's dedupe key has no timestamp,
            // so a refusal now would lose a genuine payment for good. Asked again (with backoff,
            // alarmed after a day) until StepPay says paid.
            return Verdict::Retry(format!("StepPay does not say order {code} is paid (yet)"));
        }
        if order.payment.as_ref().and_then(|p| p.error_code.as_ref()).is_none() {
            return ignored(format!("order {code} is not paid (yet)"));
        }
        // A failed renewal order says nothing about the subscription now (a replay of an old one
        // must not set a paid subscription past due): StepPay's subscription status decides.
        return steppay_subscription(deps, &pg_subscription, now).await;
    }
    let Some(id_key) = order.id_key.clone() else { return rejected(format!("paid order {code} without idKey")) };
    // What StepPay says was paid, a decimal (`19900.0`): read exactly, never defaulted — a renewal
    // is not recorded at an amount StepPay did not state.
    let paid = match order.paid_amount.as_deref().map(|a| paycycle::pg::steppay::parse_amount(a, "paidAmount")) {
        Some(Ok(paid)) => paid,
        Some(Err(e)) => return from_pg(e),
        None => {
            return from_pg(PgError::Unrecognized {
                code: "paidAmount".into(),
                message: format!("paid order {code} without paidAmount"),
            });
        }
    };
    let paid_at = order.payment_date.as_deref().and_then(paycycle::pg::steppay::parse_time).unwrap_or(now);
    let payment = PaymentRecord::paid(
        PgMode::SteppayManaged,
        &id_key,
        &record.customer.id,
        paid,
        paid_at,
        Some(id.clone()),
        None,
        None,
    )
    .for_partner(&record.partner_id)
    // The renewal order, through which this payment is refunded.
    .with_pg_order(Some(code.to_string()));
    record_renewal(deps, &record, &payment, code, &pg_subscription, now).await
}

/// Records a renewal payment StepPay confirmed (once per order: the payment is keyed by its
/// idKey), with the subscription as StepPay's status makes it ([`renewal_transition`]).
async fn record_renewal(
    deps: &Deps,
    record: &SubscriptionRecord,
    payment: &PaymentRecord,
    code: &str,
    pg_subscription: &str,
    now: Timestamp,
) -> Verdict {
    if let Ok(Some(_)) = deps.store.get_payment(&payment.payment_id).await {
        return verified(format!("renewal order {code} is already recorded"));
    }
    // What state the subscription is in is StepPay's to say (a pause or resume may have crossed
    // this webhook): asked before anything is written.
    let status = match deps.pgs.steppay.subscription(pg_subscription).await {
        Ok(s) => s,
        Err(e) => return Verdict::Retry(format!("StepPay's subscription {pg_subscription}: {e}")),
    };
    let (subscription, kinds) = renewal_transition(record, status, payment, now);
    let next = record.next(subscription);
    let events = subscription_events(&next, &kinds, now, Some(payment));
    let mut tx = deps.store.tx();
    tx.put_payment_new(payment).put_subscription_next(&next, None);
    for e in &events {
        tx.put_outbox(e);
    }
    let already = format!("renewal order {code} is already recorded");
    let done = format!("StepPay renewed {}: order {code}, {}", record.id(), payment.amounts.paid);
    commit(deps, tx, &events, done, Some(already)).await
}

/// The first order of a managed checkout: completes it by order lookup; on a checkout already
/// failed, a payment StepPay confirms is still recorded (on the failed checkout, for a refund).
async fn checkout_order(deps: &Deps, checkout: CheckoutRecord, code: &str, completed: bool, now: Timestamp) -> Verdict {
    if checkout.status != CheckoutStatus::Failed {
        let evidence = Evidence::SteppayOrder { order_code: code.to_string() };
        return match first::complete(deps, checkout, &evidence, Source::Webhook, now).await {
            Err(e) => paid_claim(completed, e),
            ok => from_verify(ok),
        };
    }
    let id = checkout.checkout_id.clone();
    match first::paid_after_failure(deps, checkout, code, None, now).await {
        Ok(Some(p)) => verified(format!(
            "checkout {id} had failed, but StepPay confirms order {code} paid {}: recorded as payment {} for a refund (needs review)",
            p.amounts.paid, p.payment_id
        )),
        Ok(None) => verified(format!("checkout {id} is failed and its payment is already recorded")),
        Err(VerifyError::NotPaid(m)) if !completed => ignored(format!("checkout {id} is failed: {m}")),
        Err(e) => paid_claim(completed, e),
    }
}

/// Our subscription for a StepPay managed subscription id.
async fn managed_subscription(deps: &Deps, pg_subscription: &str) -> Result<SubscriptionRecord, Verdict> {
    let id = match deps.store.subscription_by_pg_subscription(PgMode::SteppayManaged, pg_subscription).await {
        Ok(Some(id)) => id,
        // The first order's verification may not be committed yet: try again later.
        Ok(None) => return Err(Verdict::Retry(format!("StepPay subscription {pg_subscription} is not known (yet)"))),
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
    let events = subscription_events(&next, &t.events, now, None);
    let mut tx = deps.store.tx();
    tx.put_subscription_next(&next, None);
    for e in &events {
        tx.put_outbox(e);
    }
    commit(deps, tx, &events, done, None).await
}

/// `subscription.updated` (StepPay managed): the webhook's `status` is only a pointer — the status
/// acted on is what `GET /api/v1/subscriptions/{id}` answers (step-api-spec `merge/v1.json`).
async fn steppay_subscription(deps: &Deps, pg_subscription: &str, now: Timestamp) -> Verdict {
    let status = match deps.pgs.steppay.subscription(pg_subscription).await {
        Ok(s) => s,
        Err(e) => return from_pg(e),
    };
    let record = match managed_subscription(deps, pg_subscription).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    reconcile_managed(deps, &record, status, now).await
}

/// Brings a managed subscription to what StepPay says of it ([`follow_steppay`]).
pub async fn reconcile_managed(
    deps: &Deps,
    record: &SubscriptionRecord,
    status: SubscriptionStatus,
    now: Timestamp,
) -> Verdict {
    match follow_steppay(&record.subscription, status, now) {
        Ok(Some((t, what))) => apply(deps, record, t, now, format!("StepPay subscription {what}")).await,
        Ok(None) => ignored(format!("StepPay subscription is {status:?}: nothing to mirror")),
        Err(e) => ignored(format!("StepPay's status {status:?} does not apply to {}: {e}", record.subscription.state)),
    }
}

/// What StepPay's status (`GET /api/v1/subscriptions/{id}`, merge/v1.json) makes of a managed
/// subscription here — StepPay renews it, so its state is StepPay's: UNPAID → past due, EXPIRED
/// or CANCELED → canceled, ACTIVE → active (after UNPAID: recovered; paused here: resumed, e.g.
/// by a `whenToResume` or in StepPay's portal), PAUSE while active here → paused now. The renewal
/// order that paid it is recorded by its own `order.payment_completed`. `None`: nothing to mirror.
fn follow_steppay(
    s: &Subscription,
    status: SubscriptionStatus,
    now: Timestamp,
) -> Result<Option<(Transition, &'static str)>, TransitionError> {
    use SubscriptionStatus as Pg;
    let t = match (status, s.state) {
        (Pg::Unpaid, _) => (s.renewal_failed_at_pg()?, "UNPAID: past due"),
        (Pg::Expired | Pg::Canceled, SubscriptionState::Canceled) => return Ok(None),
        (Pg::Expired | Pg::Canceled, _) => (s.cancel(now, false)?, "ended at StepPay: canceled"),
        (Pg::Active, SubscriptionState::Paused) => (s.resume(now)?, "ACTIVE at StepPay: resumed"),
        (Pg::Active, _) => (s.recovered_at_pg()?, "ACTIVE again: recovered"),
        (Pg::Pause, SubscriptionState::Active) => (s.pause(now, PauseWhen::Now)?, "PAUSE at StepPay: paused"),
        _ => return Ok(None),
    };
    Ok(Some(t))
}

/// A renewal StepPay charged, as it applies here: always a payment (an approved charge is always
/// recorded); the period it paid is added in every state that has one (paused included); then
/// the state follows StepPay's `status`. Where no renewal applies (canceled here, …) only the
/// payment is recorded, the subscription unchanged, and the needs-review alarm names it.
fn renewal_transition(
    record: &SubscriptionRecord,
    status: SubscriptionStatus,
    payment: &PaymentRecord,
    now: Timestamp,
) -> (Subscription, Vec<EventKind>) {
    let renewed = match record.subscription.renewed_by_pg() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(alarm = "paycycle_needs_review", subscription_id = %record.id(),
                payment_id = %payment.payment_id, amount = %payment.amounts.paid, reason = %e,
                "StepPay charged a renewal of a subscription that cannot renew here: recorded as a payment (refund it via POST /payments/{{id}}/refunds if due)");
            return (record.subscription.clone(), vec![EventKind::PaymentSucceeded]);
        }
    };
    let mut kinds = renewed.events;
    match follow_steppay(&renewed.subscription, status, now) {
        Ok(Some((t, _))) => {
            let more: Vec<EventKind> = t.events.into_iter().filter(|k| !kinds.contains(k)).collect();
            kinds.extend(more);
            (t.subscription, kinds)
        }
        Ok(None) | Err(_) => (renewed.subscription, kinds),
    }
}

async fn commit(
    deps: &Deps,
    tx: paycycle::store::Tx,
    events: &[OutboxEvent],
    done: String,
    already_recorded: Option<String>,
) -> Verdict {
    match deps.store.commit(tx).await {
        Ok(()) => {
            deps.publisher.publish_committed(&deps.store, events).await;
            verified(done)
        }
        // The payment of this PG transaction was recorded by an earlier delivery.
        Err(StoreError::AlreadyExists(key)) if key.starts_with("PAY#") && already_recorded.is_some() => {
            verified(already_recorded.unwrap_or_default())
        }
        Err(e) => from_store(e),
    }
}
