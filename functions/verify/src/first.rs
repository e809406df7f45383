//! Completing a checkout: the first payment, checked with the PG, recorded once, and the
//! subscription activated — in one transaction with the checkout's completion and its events.

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::ChargeId;
use paycycle::domain::events::EventKind;
use paycycle::domain::subscription::{Renewer, Subscription};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::pg::{
    Adapter, Charged, CheckoutTerms, Evidence, FirstPayment, HeldCheckout, PaymentDetails, PgError, Source,
};
use paycycle::store::StoreError;
use paycycle::store::checkouts::{CheckoutPurpose, CheckoutRecord, CheckoutStatus};
use paycycle::store::payments::PaymentRecord;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::vault::{StoredBillingKey, VaultError};

use crate::Deps;

/// How long one verify holds a checkout (PG calls are bounded by `PG_TIMEOUT_MS`).
pub const VERIFY_LEASE: SignedDuration = SignedDuration::from_mins(2);

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
    /// A card change whose subscription has a charge in flight (its outcome unknown, or being
    /// sent): nothing changed, the checkout stays open; verify again once renew settled it.
    ChargeInFlight(String),
    /// A card change the subscription can no longer take (ended meanwhile): the checkout failed
    /// and the new card goes to renew for deletion.
    Refused(String),
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

/// What the checkout's PG adapter needs to know of it.
pub(crate) fn terms(c: &CheckoutRecord) -> CheckoutTerms {
    CheckoutTerms {
        checkout_id: c.checkout_id.clone(),
        subscription_id: c.subscription_id.clone(),
        reference: c.pg_reference.clone().unwrap_or_else(|| c.checkout_id.clone()),
        work: c.work.clone(),
        amount: c.plan.amount,
        goods: c.plan.name.clone(),
        customer: c.customer.clone(),
        payer_no: c.payer_no.clone(),
        created_at: c.created_at,
        first_sent_at: c.first_charge_at,
        last_sent_at: c.last_sent_at,
        registers_only: c.purpose == CheckoutPurpose::PaymentMethod,
    }
}

/// The checkout this verify holds, as the adapter sees it: sends of its own payment are written
/// to the checkout before they go out.
struct Held<'a> {
    deps: &'a Deps,
    current: &'a mut CheckoutRecord,
    terms: CheckoutTerms,
}

impl HeldCheckout for Held<'_> {
    fn terms(&self) -> &CheckoutTerms {
        &self.terms
    }

    /// Records that the checkout's own payment is about to be sent (again), before it goes
    /// out: the first send, or the latest re-send — the lookup's dates and the hour count from it.
    async fn mark_sent(&mut self, now: Timestamp) -> Result<(), PgError> {
        let next = match self.current.first_charge_at {
            None => CheckoutRecord { first_charge_at: Some(now), ..self.current.next() },
            // A fresh send is looked for at once: the sweep's backoff was for the old one.
            Some(_) => CheckoutRecord { last_sent_at: Some(now), sweep_after: None, ..self.current.next() },
        };
        self.deps.store.update_checkout(&next).await.map_err(|e| PgError::NotRecorded(e.to_string()))?;
        *self.current = next;
        self.terms = terms(self.current);
        Ok(())
    }
}

/// The adapter of the checkout's PG mode.
fn adapter<'d>(deps: &'d Deps, c: &CheckoutRecord) -> Adapter<'d> {
    deps.pgs.adapter(c.pg)
}

/// The PG reference of the payment a checkout sent itself, for an alarm a person acts on.
pub(crate) fn own_send_reference(deps: &Deps, c: &CheckoutRecord) -> String {
    adapter(deps, c).own_send_reference(&terms(c))
}

/// Gives the checkout back (another verify may try) or fails it for good.
pub(crate) async fn release(deps: &Deps, current: &CheckoutRecord, failure: Option<String>) -> Result<(), StoreError> {
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
    let pg = adapter(deps, &checkout);
    pg.check_evidence(&terms(&checkout), evidence, source).map_err(|e| match e {
        PgError::Mismatch(why) => VerifyError::Mismatch(why),
        other => VerifyError::Pg(other),
    })?;
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
    let asked = {
        let terms = terms(&current);
        let mut held = Held { deps, current: &mut current, terms };
        pg.first_payment(&mut held, evidence, source, now).await
    };
    match asked {
        Ok((fp, details)) if current.purpose == CheckoutPurpose::PaymentMethod => {
            crate::card::swap(deps, current, fp, details, now).await
        }
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
            let ours = current.pg.capabilities().references_are_ours;
            let what = if ours { charged.pg_payment_id.as_str() } else { "the payment" };
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
    let sealed = seal_or_give_back(deps, &current, &billing_key).await?;
    let (subscription, kinds) = first_subscription(&current, sealed, charged.approved_at, now)?;
    let checkout = CheckoutRecord {
        status: CheckoutStatus::Completed,
        verifying_until: 0,
        payment_id: Some(payment.payment_id.clone()),
        ..current.next()
    };
    let change = TransitionCommit {
        checkout: Some(&checkout),
        ..TransitionCommit::new(&subscription, SubscriptionWrite::New, &kinds, now).paid(&payment)
    };
    let committed = deps
        .publisher
        .commit_transition(&deps.store, &change, |tx| {
            if current.pg.renewer() == Renewer::Pg {
                // The PG renews: its subscription (the billing key) points at ours for its webhooks.
                tx.put_pg_subscription_pointer(current.pg, &billing_key, subscription.id());
            }
        })
        .await;
    if let Err(e) = committed {
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
    Ok(Completed { checkout, subscription, payment: Some(payment) })
}

/// The subscription a checkout's first payment starts (its period from the payment's approval),
/// and the events of its activation.
fn first_subscription(
    current: &CheckoutRecord,
    billing_key: StoredBillingKey,
    approved_at: Timestamp,
    now: Timestamp,
) -> Result<(SubscriptionRecord, Vec<EventKind>), VerifyError> {
    let incomplete =
        Subscription::incomplete(current.subscription_id.clone(), current.plan.clone(), current.pg.renewer());
    let t = incomplete.activate(approved_at).map_err(|e| VerifyError::Failed(e.to_string()))?;
    let record = SubscriptionRecord::new(
        t.subscription,
        &current.partner_id,
        current.customer.clone(),
        current.pg,
        Some(billing_key),
        now,
    );
    let kinds = [EventKind::CheckoutCompleted, EventKind::PaymentSucceeded].into_iter().chain(t.events).collect();
    Ok((record, kinds))
}

/// KMS did not seal the billing key: nothing was written, the checkout stays open for verify's
/// sweep (or the partner's retry) to activate.
/// `key` sealed for the checkout's subscription; if KMS fails, nothing was recorded yet: the
/// checkout is given back, and a retry (or the webhook, or the sweep) asks the PG again.
pub(crate) async fn seal_or_give_back(
    deps: &Deps,
    current: &CheckoutRecord,
    key: &str,
) -> Result<StoredBillingKey, VerifyError> {
    match deps.vault.seal(&current.subscription_id, key).await {
        Ok(sealed) => Ok(sealed),
        Err(e) => {
            release(deps, current, None).await?;
            Err(vault_unavailable(e))
        }
    }
}

fn vault_unavailable(e: VaultError) -> VerifyError {
    VerifyError::Store(StoreError::Unavailable(e.to_string()))
}

/// The payment record of a checkout's first payment: with its charge id when Payple's OID is
/// one (an AUTH first charge, `{sub}-p0-a1`).
fn payment_of(current: &CheckoutRecord, charged: &Charged) -> PaymentRecord {
    let ours = current.pg.capabilities().references_are_ours;
    let charge_id = charged.pg_payment_id.parse::<ChargeId>().ok().filter(|_| ours);
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
    .with_pg_order(current.pg_reference.clone().filter(|_| current.pg.capabilities().refunds_through_order))
}

/// Money the PG kept on a checkout that does not activate — another amount than the checkout's,
/// no billing key, a success Payple confirms after the checkout failed. An approved charge is
/// always recorded: as the checkout's payment, so the partner can refund it through `POST
/// /payments/{id}/refunds`; the checkout is (or stays) failed, with no subscription (nobody
/// agreed to renew on these terms); and the needs-review alarm names what a person needs.
pub(crate) async fn keep_on_failed_checkout(
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
    let reference = if current.pg.capabilities().references_are_ours {
        charged.pg_payment_id.clone()
    } else {
        paycycle::pii::mask_reference(&charged.pg_payment_id)
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

/// The PG says `reference` (this checkout's own, or the first charge it sent) was paid, but the
/// checkout is failed: the PG's positive word against ours. The PG's lookup decides; a payment it
/// confirms (of any amount) is recorded on the failed checkout ([`keep_on_failed_checkout`]) —
/// the subscription is not activated behind the partner's back: the partner was told the
/// checkout failed, and a person decides (refund, or a new checkout). `Ok(None)`: already
/// recorded.
pub async fn paid_after_failure(
    deps: &Deps,
    c: CheckoutRecord,
    reference: &str,
    hint: Option<String>,
    now: Timestamp,
) -> Result<Option<PaymentRecord>, VerifyError> {
    if c.status != CheckoutStatus::Failed || !c.pg.capabilities().late_payments {
        return Err(VerifyError::Mismatch(format!(
            "checkout {} is not a failed checkout of a PG that pays late",
            c.checkout_id
        )));
    }
    if c.payment_id.is_some() {
        return Ok(None);
    }
    let (charged, details) = match adapter(deps, &c).charged_after_failure(&terms(&c), reference, hint, now).await {
        Ok(found) => found,
        Err(PgError::NotPaid(why)) => return Err(VerifyError::NotPaid(why)),
        Err(PgError::Mismatch(why)) => return Err(VerifyError::Mismatch(why)),
        Err(PgError::Unsupported(why)) => return Err(VerifyError::Mismatch(why.to_string())),
        Err(e) => return Err(VerifyError::Pg(e)),
    };
    let why = format!(
        "{}; then the PG ({}) confirmed {} paid {}: recorded for a refund",
        c.failure.as_deref().unwrap_or("failed"),
        c.pg.pg(),
        if c.pg.capabilities().references_are_ours { reference.to_string() } else { format!("order {reference}") },
        charged.amount
    );
    keep_on_failed_checkout(deps, &c, &charged, details, why).await.map(Some)
}

fn already_used(e: StoreError) -> VerifyError {
    match e {
        e if e.payment_exists() => VerifyError::AlreadyUsed(format!("this PG payment is already recorded ({e})")),
        StoreError::Conflict(_) => VerifyError::InProgress,
        other => VerifyError::Store(other),
    }
}
