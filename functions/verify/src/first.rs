//! Completing a checkout: the first payment, checked with the PG, recorded once, and the
//! subscription activated — in one transaction with the checkout's completion and its events.

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::ChargeId;
use paycycle::pg::PgMode;
use paycycle::domain::events::EventKind;
use paycycle::domain::subscription::Subscription;
use paycycle::pg::payple::transformers::PaypleResult;
use paycycle::pg::payple::{Found, KeyHolder, WindowCheck, WindowWork};
use paycycle::pg::{ChargeRequest, Charged, FirstPayment, Payer, PaymentDetails, PaymentState, PgError};
use paycycle::store::StoreError;
use paycycle::store::checkouts::{CheckoutRecord, CheckoutStatus};
use paycycle::store::outbox::{OutboxEvent, subscription_events};
use paycycle::store::payments::PaymentRecord;
use paycycle::store::subscriptions::SubscriptionRecord;
use serde_json::{Map, Value};

use crate::Deps;

/// How long one verify holds a checkout (PG calls are bounded by `PG_TIMEOUT_MS`).
pub const VERIFY_LEASE: SignedDuration = SignedDuration::from_mins(2);

/// Who brought the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The partner's server (`POST /payments/verify`, authenticated), with what the PG's redirect
    /// or window handed the browser.
    Partner,
    /// A PG webhook: only a pointer. Everything is looked up at the PG.
    Webhook,
}

/// The first payment's evidence, as received.
#[derive(Clone, Debug)]
pub enum Evidence {
    /// Payple `PCD_*` fields (window result or webhook).
    Payple(Map<String, Value>),
    /// StepPay managed: the order code of the redirect or order webhook.
    SteppayOrder { order_code: String },
    /// StepPay self: the payment's idKey.
    SteppayPayment { id_key: String },
    /// Payple AUTH or CERT: the first payment paycycle sent (AUTH's charge `{sub}-p0-a1`, CERT's
    /// confirm of the checkout's OID), to be looked up under the OID that work charged — named
    /// by its webhook or found by the sweep. Carries nothing to trust.
    FirstCharge,
}

#[derive(Debug)]
pub enum VerifyError {
    NotFound(&'static str),
    /// The evidence is not about this checkout (another OID, order or subscription).
    Mismatch(String),
    /// The first payment failed for good; the checkout is failed (no subscription).
    Failed(String),
    /// The PG has no completed payment for it (yet); nothing changed.
    NotPaid(String),
    /// Another verify of this checkout is running.
    InProgress,
    /// The PG payment is already recorded for another checkout or charge.
    AlreadyUsed(String),
    Pg(PgError),
    Store(StoreError),
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        VerifyError::Store(e)
    }
}

/// A completed checkout.
#[derive(Debug)]
pub struct Completed {
    pub checkout: CheckoutRecord,
    pub subscription: SubscriptionRecord,
    pub payment: Option<PaymentRecord>,
}

/// A non-empty (trimmed) string or number field of a PG result or request body.
pub(crate) fn field(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The evidence must be about this checkout: its PG mode, its reference.
fn check_reference(c: &CheckoutRecord, evidence: &Evidence, source: Source) -> Result<(), VerifyError> {
    let reference = c.pg_reference.as_deref().unwrap_or(&c.checkout_id);
    match (c.pg, evidence) {
        (PgMode::Payple, Evidence::Payple(fields)) => {
            match field(fields, "PCD_PAY_OID") {
                Some(oid) if oid != reference => {
                    return Err(VerifyError::Mismatch(format!("PCD_PAY_OID {oid} is not this checkout's")));
                }
                None if source == Source::Webhook => {
                    return Err(VerifyError::Mismatch("webhook without PCD_PAY_OID".into()));
                }
                _ => {}
            }
            if let Some(sub) = field(fields, "PCD_USER_DEFINE1") {
                if sub != c.subscription_id.as_str() {
                    return Err(VerifyError::Mismatch("PCD_USER_DEFINE1 is not this checkout's subscription".into()));
                }
            }
            // A webhook's total decides nothing either way: it only points at our OID, and
            // Payple's lookup says what was charged (a tampered body is harmless; money a
            // tampered window really charged is recorded, never dropped with the webhook).
            Ok(())
        }
        (PgMode::SteppayManaged, Evidence::SteppayOrder { order_code }) if order_code == reference => Ok(()),
        (PgMode::SteppayManaged, Evidence::SteppayOrder { order_code }) => {
            Err(VerifyError::Mismatch(format!("order {order_code} is not this checkout's")))
        }
        (PgMode::SteppaySelf, Evidence::SteppayPayment { .. }) => Ok(()),
        // Only work that sent a payment itself (AUTH's first charge, CERT's confirm) has one.
        (PgMode::Payple, Evidence::FirstCharge)
            if c.first_charge_at.is_some() && matches!(c.work.as_deref(), Some("AUTH" | "CERT")) =>
        {
            Ok(())
        }
        (_, Evidence::FirstCharge) => Err(VerifyError::Mismatch("this checkout sent no first charge".into())),
        (mode, _) => Err(VerifyError::Mismatch(format!("this checkout is {}; the evidence is not", mode.as_str()))),
    }
}

/// The stored outcome of a completed checkout.
async fn existing(deps: &Deps, c: CheckoutRecord) -> Result<Completed, VerifyError> {
    let subscription = deps
        .store
        .get_subscription(&c.subscription_id)
        .await?
        .ok_or(VerifyError::Store(StoreError::NotFound(c.subscription_id.to_string())))?;
    let payment = match &c.payment_id {
        Some(id) => deps.store.get_payment(id).await?,
        None => None,
    };
    Ok(Completed { checkout: c, subscription, payment })
}

fn kst_date(t: Timestamp) -> String {
    paycycle::calendar::kst_yyyymmdd(t)
}

/// What the checkout stored about its Payple window: the work, our OID, the amount and the
/// payer number. The browser's `PCD_PAY_WORK` chooses nothing.
fn window_check(c: &CheckoutRecord) -> Result<WindowCheck, PgError> {
    let work = c.work.as_deref().map_or(Some(WindowWork::Pay), WindowWork::parse);
    let work = work.ok_or_else(|| PgError::Invalid(format!("checkout work {:?} is not PAY, CERT or AUTH", c.work)))?;
    Ok(WindowCheck {
        work,
        oid: c.pg_reference.clone().unwrap_or_else(|| c.checkout_id.clone()),
        expected: c.plan.amount,
        payer_no: c.payer_no.clone(),
        holder: KeyHolder { name: c.customer.name.clone(), phone: c.customer.phone.clone() },
        opened_at: c.created_at,
    })
}

/// The OID the checkout's own work charged at Payple: an AUTH checkout's first charge is
/// paycycle's re-pay under `{sub}-p0-a1`; a CERT confirm (and a PAY window) charges the OID
/// the window was opened with — the checkout's.
fn charged_oid(c: &CheckoutRecord) -> Result<String, PgError> {
    match window_check(c)?.work {
        WindowWork::Auth => {
            Ok(ChargeId::new(c.subscription_id.clone(), 0, 1).map_err(|e| PgError::Invalid(e.to_string()))?.to_string())
        }
        WindowWork::Cert | WindowWork::Pay => Ok(window_check(c)?.oid),
    }
}

/// The OID for a log line or an alarm.
pub(crate) fn charged_oid_or_unknown(c: &CheckoutRecord) -> String {
    charged_oid(c).unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The KST dates the checkout's own payment was sent on, for Payple's lookup: the first send's,
/// the latest re-send's, and the minute after the latest (a send that crossed midnight).
fn send_dates(c: &CheckoutRecord) -> Vec<String> {
    let latest = c.latest_send();
    let after = latest.and_then(|t| t.checked_add(SignedDuration::from_mins(1)).ok());
    let mut dates: Vec<String> = Vec::new();
    for d in [c.first_charge_at, latest, after].into_iter().flatten().map(kst_date) {
        if !dates.contains(&d) {
            dates.push(d);
        }
    }
    dates
}

/// The checkout's own payment (AUTH first charge, CERT confirm) as Payple recorded it, under
/// the OID that work charged and the dates it was sent on. `NotPaid`: Payple shows none (yet).
async fn sent_payment(deps: &Deps, c: &CheckoutRecord) -> Result<Paid, PgError> {
    let first = c.first_charge_at.ok_or_else(|| PgError::Invalid("no payment was sent".into()))?;
    let mut check = window_check(c)?;
    check.opened_at = first;
    deps.pgs.payple.paid_window(&charged_oid(c)?, send_dates(c), &check).await
}

/// Records that the checkout's own payment is about to be sent (again), before it goes out:
/// the first send, or the latest re-send — the lookup's dates and the hour count from it.
async fn mark_sent(deps: &Deps, current: &mut CheckoutRecord, now: Timestamp) -> Result<(), PgError> {
    let next = match current.first_charge_at {
        None => CheckoutRecord { first_charge_at: Some(now), ..current.next() },
        // A fresh send is looked for at once: the sweep's backoff was for the old one.
        Some(_) => CheckoutRecord { last_sent_at: Some(now), sweep_after: None, ..current.next() },
    };
    deps.store.update_checkout(&next).await.map_err(|e| PgError::Transient { reason: e.to_string() })?;
    *current = next;
    Ok(())
}

/// The first payment a checkout sent (an AUTH first charge or a CERT confirm), as Payple
/// recorded it. Not found is not paid (yet). An AUTH charge still not found an hour after it was
/// last sent never reached Payple: failed for good (a re-send restarts the hour, and a lookup
/// that fails for any other reason is no "not found"). A CERT confirm is never failed on "not
/// found" alone — the money may be at Payple: it stays open (the sweep raises the needs-review
/// alarm if it stays unresolved).
async fn first_charge_outcome(deps: &Deps, c: &CheckoutRecord, now: Timestamp) -> Result<Paid, PgError> {
    let latest = c.latest_send().ok_or_else(|| PgError::Invalid("no first charge was sent".into()))?;
    match sent_payment(deps, c).await {
        Err(PgError::NotPaid(why))
            if window_check(c)?.work == WindowWork::Auth
                && now.duration_since(latest) > SignedDuration::from_hours(1) =>
        {
            Err(PgError::VerificationFailed(format!("{why}, an hour after the first charge was last sent")))
        }
        other => other,
    }
}

fn payer(c: &CheckoutRecord) -> Payer {
    Payer {
        customer_id: c.customer.id.clone(),
        name: c.customer.name.clone(),
        phone: c.customer.phone.clone(),
        email: c.customer.email.clone(),
        payer_no: c.payer_no.clone(),
    }
}

/// Payple AUTH registered a card without paying: paycycle charges period 0 on the new billing
/// key, under charge id `{sub}-p0-a1` (its OID). A retry looks that charge up before charging.
async fn first_charge(
    deps: &Deps,
    current: &mut CheckoutRecord,
    billing_key: String,
    now: Timestamp,
) -> Result<Paid, PgError> {
    let charge_id =
        ChargeId::new(current.subscription_id.clone(), 0, 1).map_err(|e| PgError::Invalid(e.to_string()))?;
    if current.first_charge_at.is_some() {
        // Sent before: Payple's record decides; only "nothing there" sends it again (under the
        // same OID, which Payple refuses to charge twice).
        match sent_payment(deps, current).await {
            Ok((fp, details)) => {
                return Ok((FirstPayment { charged: fp.charged, billing_key: Some(billing_key) }, details));
            }
            Err(PgError::NotPaid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    mark_sent(deps, current, now).await?;
    let req = ChargeRequest {
        billing_key: billing_key.clone(),
        charge_id: charge_id.clone(),
        amount: current.plan.amount,
        goods: current.plan.name.clone(),
        payer: payer(current),
    };
    match deps.pgs.payple.repay_detailed(&req).await {
        Ok((charged, details)) => {
            Ok((FirstPayment { charged: Some(charged), billing_key: Some(billing_key) }, details))
        }
        Err(PgError::Declined { code, message, .. }) => {
            Err(PgError::VerificationFailed(format!("the first charge was declined ({code}): {message}")))
        }
        Err(e) => Err(e),
    }
}

/// A verified first payment with what the PG said about it for the customer (card, receipt).
type Paid = (FirstPayment, PaymentDetails);

/// Asks the PG about the evidence.
async fn ask_pg(
    deps: &Deps,
    current: &mut CheckoutRecord,
    evidence: &Evidence,
    source: Source,
    now: Timestamp,
) -> Result<Paid, PgError> {
    let expected = current.plan.amount;
    match evidence {
        Evidence::Payple(fields) => {
            let check = window_check(current)?;
            if source == Source::Webhook {
                // A webhook only points at our OID: Payple's lookup says what happened.
                let hint = field(fields, "PCD_PAY_TIME").as_deref().and_then(paycycle::pg::payple::pay_date);
                return deps.pgs.payple.paid_window(&check.oid, hint.into_iter().collect(), &check).await;
            }
            if check.work == WindowWork::Cert {
                // A confirm may have gone through before an earlier verify lost its answer.
                if current.first_charge_at.is_some() {
                    match sent_payment(deps, current).await {
                        Ok(fp) => return Ok(fp),
                        Err(PgError::NotPaid(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Checked before anything is sent: a result that is not this checkout's marks
                // nothing (and keeps the checkout's TTL).
                let confirm = deps.pgs.payple.cert_confirm(fields, &check)?;
                mark_sent(deps, current, now).await?;
                return match deps.pgs.payple.send_cert_confirm(&confirm).await {
                    // The confirm's decline, confirmed by Payple's lookup: Payple's word that
                    // nothing was charged. Failed, so the sweep does not look for it forever.
                    Err(PgError::Declined { code, message, .. }) => {
                        Err(PgError::VerificationFailed(format!("the CERT confirm was declined ({code}): {message}")))
                    }
                    other => other,
                };
            }
            let (fp, details) = deps.pgs.payple.verify_window_result(fields, &check).await?;
            match (check.work, fp.billing_key.clone()) {
                (WindowWork::Auth, Some(key)) => first_charge(deps, current, key, now).await,
                _ => Ok((fp, details)),
            }
        }
        Evidence::FirstCharge => first_charge_outcome(deps, current, now).await,
        Evidence::SteppayOrder { order_code } => {
            deps.pgs.steppay.verify_order(order_code, expected).await.map(|fp| (fp, PaymentDetails::default()))
        }
        Evidence::SteppayPayment { id_key } => deps
            .pgs
            .steppay
            .verify_payment(id_key, Some(&current.checkout_id), expected)
            .await
            .map(|fp| (fp, PaymentDetails::default())),
    }
}

/// Gives the checkout back (another verify may try) or fails it for good.
async fn release(deps: &Deps, current: &CheckoutRecord, failure: Option<String>) -> Result<(), StoreError> {
    let mut next = CheckoutRecord { verifying_until: 0, ..current.next() };
    if let Some(why) = failure {
        next.status = CheckoutStatus::Failed;
        next.failure = Some(why);
    }
    deps.store.update_checkout(&next).await
}

/// Verifies and completes `checkout` (or returns its stored outcome).
pub async fn complete(
    deps: &Deps,
    checkout: CheckoutRecord,
    evidence: &Evidence,
    source: Source,
    now: Timestamp,
) -> Result<Completed, VerifyError> {
    match checkout.status {
        CheckoutStatus::Completed => return existing(deps, checkout).await,
        CheckoutStatus::Failed => {
            return Err(VerifyError::Failed(checkout.failure.clone().unwrap_or_else(|| "checkout failed".into())));
        }
        CheckoutStatus::Open => {}
    }
    check_reference(&checkout, evidence, source)?;
    // The verify lease runs on the wall clock, never on `now`: a sweep run at a time-travelled
    // (or late) `now` must not hold a checkout for a year, nor see a live lease as expired.
    let wall = Timestamp::now();
    if checkout.verifying_until > wall.as_second() {
        return Err(VerifyError::InProgress);
    }
    let until = wall.saturating_add(VERIFY_LEASE).unwrap_or(wall).as_second();
    let mut current = CheckoutRecord { verifying_until: until, ..checkout.next() };
    match deps.store.update_checkout(&current).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(VerifyError::InProgress),
        Err(e) => return Err(e.into()),
    }
    match ask_pg(deps, &mut current, evidence, source, now).await {
        Ok((fp, details)) => activate(deps, current, fp, details, now).await,
        Err(e) => Err(not_completed(deps, &current, e).await),
    }
}

/// What a PG answer other than a payment does to the held checkout: failed for good on the
/// PG's word, money of another amount kept on it, or given back unchanged.
async fn not_completed(deps: &Deps, current: &CheckoutRecord, e: PgError) -> VerifyError {
    let (failure, answer) = match e {
        PgError::VerificationFailed(why) => {
            tracing::warn!(checkout_id = %current.checkout_id, reason = %why, "first payment failed");
            (Some(why.clone()), VerifyError::Failed(why))
        }
        PgError::PaidOtherAmount { charged, expected } => {
            // A StepPay idKey may be a billing key: it stays out of the answer.
            let what = if current.pg == PgMode::Payple { charged.pg_payment_id.as_str() } else { "the payment" };
            let why =
                format!("the PG charged {} for {what}, the checkout expects {expected}: tampered", charged.amount);
            tracing::warn!(checkout_id = %current.checkout_id, reason = %why, "first payment of another amount");
            match keep_on_failed_checkout(deps, current, &charged, PaymentDetails::default(), why.clone()).await {
                Ok(_) => return VerifyError::Failed(why),
                Err(e) => (None, e),
            }
        }
        PgError::NotPaid(why) => (None, VerifyError::NotPaid(why)),
        PgError::NotFound => (None, VerifyError::NotPaid("the PG has no such payment".into())),
        PgError::Mismatch(why) => (None, VerifyError::Mismatch(why)),
        other => (None, VerifyError::Pg(other)),
    };
    match release(deps, current, failure).await {
        Ok(()) => answer,
        Err(e) => VerifyError::Store(e),
    }
}

async fn activate(
    deps: &Deps,
    current: CheckoutRecord,
    fp: FirstPayment,
    details: PaymentDetails,
    now: Timestamp,
) -> Result<Completed, VerifyError> {
    let Some(charged) = fp.charged else {
        release(deps, &current, None).await?;
        return Err(VerifyError::NotPaid("no payment was made".into()));
    };
    let payment = payment_of(&current, &charged).with_details(details.clone());
    let Some(billing_key) = fp.billing_key else {
        // Money moved but nothing can renew it (StepPay self paid without a *_BILL method).
        let why = "the first payment issued no billing key (StepPay self needs CARD_BILL or CMS_BILL)".to_string();
        keep_on_failed_checkout(deps, &current, &charged, details, why.clone()).await?;
        return Err(VerifyError::Failed(why));
    };
    let incomplete =
        Subscription::incomplete(current.subscription_id.clone(), current.plan.clone(), current.pg.renewer());
    let t = incomplete.activate(charged.approved_at).map_err(|e| VerifyError::Failed(e.to_string()))?;
    let subscription = SubscriptionRecord {
        subscription: t.subscription,
        partner_id: current.partner_id.clone(),
        customer: current.customer.clone(),
        pg: current.pg,
        billing_key: Some(billing_key.clone()),
        created_at: now,
        version: 1,
        lease_owner: None,
        lease_until: 0,
    };
    let checkout = CheckoutRecord {
        status: CheckoutStatus::Completed,
        verifying_until: 0,
        payment_id: Some(payment.payment_id.clone()),
        ..current.next()
    };
    let mut kinds = vec![EventKind::CheckoutCompleted, EventKind::PaymentSucceeded];
    kinds.extend(t.events);
    let events: Vec<OutboxEvent> = subscription_events(&subscription, &kinds, now, Some(&payment));
    let mut tx = deps.store.tx();
    tx.put_checkout_next(&checkout).put_payment_new(&payment).put_subscription_new(&subscription);
    if current.pg == PgMode::SteppayManaged {
        tx.put_pg_subscription_pointer(current.pg, &billing_key, subscription.id());
    }
    for e in &events {
        tx.put_outbox(e);
    }
    if let Err(e) = deps.store.commit(tx).await {
        let e = already_used(e);
        if let VerifyError::AlreadyUsed(_) = e {
            // The payment belongs to something else: this checkout stays open, untouched.
            release(deps, &current, None).await?;
        }
        return Err(e);
    }
    tracing::info!(
        checkout_id = %checkout.checkout_id,
        subscription_id = %subscription.id(),
        payment_id = %payment.payment_id,
        "checkout completed, subscription active"
    );
    deps.publisher.publish_committed(&deps.store, &events).await;
    Ok(Completed { checkout, subscription, payment: Some(payment) })
}

/// The payment record of a checkout's first payment: with its charge id when Payple's OID is
/// one (an AUTH first charge, `{sub}-p0-a1`).
fn payment_of(current: &CheckoutRecord, charged: &Charged) -> PaymentRecord {
    let charge_id = charged.pg_payment_id.parse::<ChargeId>().ok().filter(|_| current.pg == PgMode::Payple);
    PaymentRecord::paid(
        current.pg,
        &charged.pg_payment_id,
        &current.customer.id,
        charged.amount,
        charged.approved_at,
        Some(current.subscription_id.clone()),
        charge_id,
        Some(current.checkout_id.clone()),
    )
    .for_partner(&current.partner_id)
    // StepPay managed: the checkout's order, through which the payment is refunded.
    .with_pg_order(current.pg_reference.clone().filter(|_| current.pg == PgMode::SteppayManaged))
}

/// Money the PG kept on a checkout that does not activate — another amount than the checkout's,
/// no billing key, a success Payple confirms after the checkout failed. An approved charge is
/// always recorded: as the checkout's payment, so the partner can refund it through `POST
/// /payments/{id}/refunds`; the checkout is (or stays) failed, with no subscription (nobody
/// agreed to renew on these terms); and the needs-review alarm names what a person needs.
async fn keep_on_failed_checkout(
    deps: &Deps,
    current: &CheckoutRecord,
    charged: &Charged,
    details: PaymentDetails,
    why: String,
) -> Result<PaymentRecord, VerifyError> {
    let payment = payment_of(current, charged).with_details(details);
    let next = CheckoutRecord {
        status: CheckoutStatus::Failed,
        failure: Some(why.clone()),
        verifying_until: 0,
        payment_id: Some(payment.payment_id.clone()),
        ..current.next()
    };
    let mut tx = deps.store.tx();
    tx.put_checkout_next(&next).put_payment_new(&payment);
    deps.store.commit(tx).await.map_err(already_used)?;
    // Payple's OID is ours (`chk_…`, `sub_…-p0-a1`); a StepPay idKey may be a billing key.
    let reference = match current.pg {
        PgMode::Payple => charged.pg_payment_id.clone(),
        _ => paycycle::pii::mask_reference(&charged.pg_payment_id),
    };
    tracing::error!(
        alarm = "paycycle_needs_review",
        checkout_id = %current.checkout_id,
        pg = current.pg.as_str(),
        oid = %reference,
        amount = %charged.amount,
        expected = %current.plan.amount,
        payment_id = %payment.payment_id,
        reason = %why,
        "the PG kept money on a checkout that did not activate: recorded as its payment (refund it via POST /payments/{{id}}/refunds)"
    );
    Ok(payment)
}

/// Payple says `oid` (this checkout's OID, or its AUTH first charge) was paid, but the checkout
/// is failed: the PG's positive word against ours. Payple's lookup decides; a payment it
/// confirms is recorded on the failed checkout ([`keep_on_failed_checkout`]) — the subscription
/// is not activated behind the partner's back: the partner was told the checkout failed, and a
/// person decides (refund, or a new checkout). `Ok(None)`: already recorded.
pub async fn paid_after_failure(
    deps: &Deps,
    c: CheckoutRecord,
    oid: &str,
    hint: Option<String>,
    now: Timestamp,
) -> Result<Option<PaymentRecord>, VerifyError> {
    if c.status != CheckoutStatus::Failed || !matches!(c.pg, PgMode::Payple | PgMode::SteppayManaged) {
        return Err(VerifyError::Mismatch(format!("checkout {} is not a failed Payple checkout", c.checkout_id)));
    }
    if c.payment_id.is_some() {
        return Ok(None);
    }
    if c.pg == PgMode::SteppayManaged {
        return steppay_order_after_failure(deps, &c, oid).await.map(Some);
    }
    let hints: Vec<String> = hint.into_iter().chain(send_dates(&c)).collect();
    match deps.pgs.payple.find_payment(oid, hints, c.created_at).await.map_err(VerifyError::Pg)? {
        Some(Found { state: PaymentState::Paid { amount, paid_at, .. }, details, .. }) => {
            let charged = Charged { pg_payment_id: oid.to_string(), amount, approved_at: paid_at.unwrap_or(now) };
            let why = format!(
                "{}; then Payple confirmed {oid} paid {amount}: recorded for a refund",
                c.failure.as_deref().unwrap_or("failed")
            );
            keep_on_failed_checkout(deps, &c, &charged, details, why).await.map(Some)
        }
        Some(Found { state: other, .. }) => Err(VerifyError::NotPaid(format!("Payple's record of {oid}: {other:?}"))),
        None => Err(VerifyError::NotPaid(format!("Payple has no payment {oid}"))),
    }
}

/// StepPay managed: the failed checkout's order (`oid`, its code) was paid after all — the
/// customer can pay the same order again on StepPay's pay page. StepPay's order lookup decides;
/// what it confirms paid (of any amount) is kept on the failed checkout.
async fn steppay_order_after_failure(deps: &Deps, c: &CheckoutRecord, oid: &str) -> Result<PaymentRecord, VerifyError> {
    if c.pg_reference.as_deref() != Some(oid) {
        return Err(VerifyError::Mismatch(format!("order {oid} is not checkout {}'s", c.checkout_id)));
    }
    let charged = match deps.pgs.steppay.verify_order(oid, c.plan.amount).await {
        Ok(FirstPayment { charged: Some(charged), .. }) | Err(PgError::PaidOtherAmount { charged, .. }) => charged,
        Ok(FirstPayment { charged: None, .. }) => return Err(VerifyError::NotPaid(format!("order {oid} is not paid"))),
        Err(PgError::NotPaid(why)) => return Err(VerifyError::NotPaid(why)),
        Err(PgError::NotFound) => return Err(VerifyError::NotPaid(format!("StepPay has no order {oid}"))),
        Err(e) => return Err(VerifyError::Pg(e)),
    };
    let why = format!(
        "{}; then StepPay confirmed order {oid} paid {}: recorded for a refund",
        c.failure.as_deref().unwrap_or("failed"),
        charged.amount
    );
    keep_on_failed_checkout(deps, c, &charged, PaymentDetails::default(), why).await
}

fn already_used(e: StoreError) -> VerifyError {
    match e {
        StoreError::AlreadyExists(key) if key.starts_with("PAY#") => {
            VerifyError::AlreadyUsed(format!("this PG payment is already recorded ({key})"))
        }
        StoreError::Conflict(_) => VerifyError::InProgress,
        other => VerifyError::Store(other),
    }
}

/// A Payple result's status, for the webhook path (which ignores error/close results).
pub fn payple_success(fields: &Map<String, Value>) -> bool {
    PaypleResult::from_value(Value::Object(fields.clone()))
        .ok()
        .and_then(|r| r.status().ok())
        .is_some_and(|s| s == paycycle::pg::payple::transformers::ResultStatus::Success)
}
