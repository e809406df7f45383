//! A card change (DESIGN §13): a `payment_method` checkout's card, registered at the PG and
//! confirmed there for this checkout's payer, replaces the subscription's billing key.
//!
//! One transaction, with a lifecycle change's condition (the subscription version read, no live
//! renew lease, and the attempt next in line neither pending nor unknown:
//! `Tx::put_subscription_change`): the new key, the checkout completed, the replaced key kept for
//! renew to delete at the PG ([`RetiredKey`]), and `subscription.payment_method_updated`. A
//! subscription in dunning has its next attempt due at once
//! (`Subscription::payment_method_changed`): renew's next tick charges the new card, under the
//! attempt's own charge id, once. While a charge's outcome is unknown nothing is swapped (409, the
//! checkout stays open): renew settles it under the key it was sent with. A subscription that
//! ended meanwhile keeps nothing: the checkout fails and the new card goes to renew for deletion
//! the same way.

use jiff::Timestamp;
use paycycle::domain::subscription::{Renewer, TransitionError};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::pg::{FirstPayment, PaymentDetails};
use paycycle::store::StoreError;
use paycycle::store::checkouts::{CheckoutRecord, CheckoutStatus};
use paycycle::store::retired_keys::RetiredKey;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::vault::StoredBillingKey;

use crate::Deps;
use crate::first::{Completed, VerifyError, keep_on_failed_checkout, release, seal_or_give_back};

/// How often a swap that lost a race (renew held the subscription) reads it again.
const SWAP_TRIES: u32 = 3;

/// Swaps the subscription's billing key for the one the PG registered for `current`.
pub async fn swap(
    deps: &Deps,
    current: CheckoutRecord,
    fp: FirstPayment,
    details: PaymentDetails,
    now: Timestamp,
) -> Result<Completed, VerifyError> {
    if let Some(charged) = &fp.charged {
        // Registration charges nothing; money the PG moved anyway is recorded, never dropped.
        let why = "the PG charged a card change that only registers a card: recorded for a refund".to_string();
        keep_on_failed_checkout(deps, &current, charged, details, why.clone()).await?;
        return Err(VerifyError::Failed(why));
    }
    // Where paycycle renews, the new key is the point (sealed at once: it never reaches the table
    // in the clear); where the PG renews (StepPay managed), the PG keeps the card and only the
    // change is recorded.
    let key = match &fp.billing_key {
        Some(key) => Some(seal_or_give_back(deps, &current, key).await?),
        None => None,
    };
    for _ in 0..SWAP_TRIES {
        let r = deps
            .store
            .get_subscription(&current.subscription_id)
            .await?
            .ok_or(VerifyError::NotFound("subscription"))?;
        if key.is_none() && r.subscription.renewer == Renewer::Paycycle {
            release(deps, &current, None).await?;
            return Err(VerifyError::NotPaid("the PG registered no card".into()));
        }
        let attempt = match r.subscription.payment_method_changed(now) {
            Ok(t) => commit_swap(deps, &current, &r, t, key.clone(), now).await,
            Err(e @ TransitionError::UnknownOutcomePending(_)) => {
                release(deps, &current, None).await?;
                return Err(VerifyError::ChargeInFlight(format!("{e}; verify this checkout again after that")));
            }
            Err(e) => return ended(deps, &current, &r, key, e.to_string()).await,
        };
        match attempt {
            Err(StoreError::Conflict(_)) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            Err(e) => return Err(e.into()),
            Ok(done) => return Ok(done),
        }
    }
    release(deps, &current, None).await?;
    Err(VerifyError::InProgress)
}

/// The replaced key as renew's sweep deletes it.
/// `retired_at` is the wall clock: when renew deletes it is operations, not billing.
fn retired(r: &SubscriptionRecord, key: StoredBillingKey, checkout_id: &str) -> RetiredKey {
    RetiredKey {
        subscription_id: r.id().clone(),
        partner_id: r.partner_id.clone(),
        customer_id: r.customer.id.clone(),
        pg: r.pg,
        billing_key: key,
        checkout_id: checkout_id.to_string(),
        retired_at: Timestamp::now(),
        failures: 0,
        retry_at: None,
        version: 1,
    }
}

async fn commit_swap(
    deps: &Deps,
    current: &CheckoutRecord,
    r: &SubscriptionRecord,
    t: paycycle::domain::subscription::Transition,
    key: Option<StoredBillingKey>,
    now: Timestamp,
) -> Result<Completed, StoreError> {
    let Some(key) = key else {
        // The PG keeps the card: the record changes only by the transition's version.
        return commit(deps, current, r, r.next(t.subscription), &t.events, None, now).await;
    };
    let next = SubscriptionRecord { billing_key: Some(key), ..r.next(t.subscription) };
    // Sealed for this subscription, the old key moves as it is (verify cannot open keys). If the
    // PG handed back the very same key, renew's sweep finds it still this subscription's and
    // only drops the item.
    let old = match r.billing_key.as_ref().filter(|_| r.pg.capabilities().deletes_billing_keys) {
        // A legacy plain key is sealed on its way out (sealing needs no decryption).
        Some(old) => Some(deps.vault.reseal(r.id(), old).await.map_err(|e| StoreError::Unavailable(e.to_string()))?),
        None => None,
    };
    let retired = old.map(|old| retired(r, old, &current.checkout_id));
    commit(deps, current, r, next, &t.events, retired, now).await
}

/// The swap's transaction: the subscription on the version read, the checkout completed, the
/// replaced key kept for renew, and the events.
async fn commit(
    deps: &Deps,
    current: &CheckoutRecord,
    r: &SubscriptionRecord,
    next: SubscriptionRecord,
    events: &[paycycle::domain::events::EventKind],
    retired: Option<RetiredKey>,
    now: Timestamp,
) -> Result<Completed, StoreError> {
    let checkout = CheckoutRecord { status: CheckoutStatus::Completed, verifying_until: 0, ..current.next() };
    let wall = Timestamp::now();
    let change = TransitionCommit {
        checkout: Some(&checkout),
        ..TransitionCommit::new(&next, SubscriptionWrite::Change { read: r, at: wall }, events, now)
    };
    deps.publisher
        .commit_transition(&deps.store, &change, |tx| {
            if let Some(retired) = &retired {
                tx.put_retired_key_new(retired);
            }
        })
        .await?;
    tracing::info!(
        checkout_id = %checkout.checkout_id,
        subscription_id = %next.id(),
        state = %next.subscription.state,
        retry_now = next.subscription.next_attempt_at != r.subscription.next_attempt_at,
        "card changed: renewals charge the new billing key"
    );
    Ok(Completed { checkout, subscription: next, payment: None })
}

/// The subscription can no longer take a card (canceled, unpaid, in review meanwhile): the
/// checkout fails with the reason and the registered key is handed to renew for deletion.
async fn ended(
    deps: &Deps,
    current: &CheckoutRecord,
    r: &SubscriptionRecord,
    key: Option<StoredBillingKey>,
    why: String,
) -> Result<Completed, VerifyError> {
    let checkout = CheckoutRecord {
        status: CheckoutStatus::Failed,
        failure: Some(why.clone()),
        verifying_until: 0,
        ..current.next()
    };
    let mut tx = deps.store.tx();
    tx.put_checkout_next(&checkout);
    if let Some(key) = key.filter(|_| r.pg.capabilities().deletes_billing_keys) {
        tx.put_retired_key_new(&retired(r, key, &current.checkout_id));
    }
    deps.store.commit(tx).await?;
    tracing::warn!(checkout_id = %current.checkout_id, subscription_id = %r.id(), reason = %why, "card change refused: the new card is deleted at the PG");
    Err(VerifyError::Refused(why))
}
