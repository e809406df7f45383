//! Billing keys of ended subscriptions (DESIGN §13): a canceled subscription's key is deleted at
//! its PG (where the PG can: `Capabilities::deletes_billing_keys`) unless another live
//! subscription of the same customer still uses it — then it is only dropped here. Each tick
//! releases what the key-release partitions of the due index hold (`Store::key_release_shards`),
//! after the renewals, within the deadline.
//!
//! An `unpaid` subscription keeps its key: dunning is over, but the customer may still pay (a
//! person's retry, a card change); a dunning policy whose final action is `canceled` releases it.

use jiff::Timestamp;
use paycycle::Secret;
use paycycle::domain::subscription::SubscriptionState;
use paycycle::pg::PgError;
use paycycle::store::StoreError;
use paycycle::store::subscriptions::{SubscriptionRecord, key_release_shards};

use crate::Deps;

/// How often a PG may fail to delete a key before a person is asked to (the key is then dropped
/// here, so the sweep does not ask forever).
pub const MAX_DELETE_FAILURES: u32 = 5;

/// Releases the keys waiting at `now`; how many were released.
pub async fn release_keys(deps: &Deps, now: Timestamp, deadline: Option<Timestamp>) -> u64 {
    let mut released = 0;
    for shard in key_release_shards() {
        let mut start = None;
        loop {
            let page = match deps.store.due_subscriptions(&shard, now, deps.settings.page_size, start).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "key release query failed");
                    break;
                }
            };
            for id in page.items {
                if deadline.is_some_and(|d| Timestamp::now() >= d) {
                    return released;
                }
                match deps.store.get_subscription(&id).await {
                    Ok(Some(r)) if r.key_to_release() => released += u64::from(release(deps, &r).await),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(subscription_id = %id, error = %e, "key release read failed"),
                }
            }
            match page.next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    released
}

/// Releases `r`'s billing key: deleted at the PG unless another live subscription of the
/// customer uses it, then dropped from `r` (one conditional write on the version read).
async fn release(deps: &Deps, r: &SubscriptionRecord) -> bool {
    let Some(stored) = &r.billing_key else { return false };
    let key = match deps.vault.open(r.id(), stored).await {
        Ok(key) => key,
        Err(e) => return failed(deps, r, &e).await,
    };
    let shared = match still_used(deps, r, &key).await {
        Ok(shared) => shared,
        Err(e) => return failed(deps, r, &e).await,
    };
    if !shared {
        match deps.pgs.adapter(r.pg).delete_billing_key(key.expose()).await {
            // Not there any more: deleted already (an earlier try whose write was lost).
            Ok(()) | Err(PgError::NotFound) => {}
            Err(e) => return failed(deps, r, &e).await,
        }
    }
    let next = SubscriptionRecord {
        billing_key: None,
        billing_key_released_at: Some(Timestamp::now()),
        key_delete_failures: 0,
        key_release_retry_at: None,
        ..r.next(r.subscription.clone())
    };
    match write(deps, r, &next).await {
        Ok(()) => {
            tracing::info!(subscription_id = %r.id(), deleted_at_pg = !shared, "billing key released");
            true
        }
        Err(StoreError::Conflict(_)) => false, // changed meanwhile: the next tick looks again
        Err(e) => {
            tracing::warn!(subscription_id = %r.id(), error = %e, "key release write failed");
            false
        }
    }
}

/// Whether another live subscription of `r`'s customer (at the same partner) uses `key`. Each
/// is sealed for its own subscription, so each is opened to compare; one that does not open
/// counts as unknown, and the key is not deleted.
async fn still_used(deps: &Deps, r: &SubscriptionRecord, key: &Secret) -> Result<bool, StoreError> {
    let mut start = None;
    loop {
        let page = deps.store.subscriptions_of_customer(&r.partner_id, &r.customer.id, 100, start).await?;
        let live =
            page.items.iter().filter(|o| o.id() != r.id() && o.subscription.state != SubscriptionState::Canceled);
        for (o, stored) in live.filter_map(|o| Some((o, o.billing_key.as_ref()?))) {
            let other = deps.vault.open(o.id(), stored).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if key.ct_eq(other.expose().as_bytes()) {
                return Ok(true);
            }
        }
        match page.next {
            Some(k) => start = Some(k),
            None => return Ok(false),
        }
    }
}

/// The key could not be released (the PG did not delete it, or the customer's subscriptions could
/// not be read): counted on the record and tried again after a backoff (1 h, doubling); past
/// [`MAX_DELETE_FAILURES`] (about 15 hours) a person is asked to delete it in the PG's
/// admin and it is dropped here.
async fn failed(deps: &Deps, r: &SubscriptionRecord, e: &(dyn std::fmt::Display + Sync)) -> bool {
    let failures = r.key_delete_failures + 1;
    let give_up = failures >= MAX_DELETE_FAILURES;
    let backoff = jiff::SignedDuration::from_hours(1 << (failures - 1).min(16));
    if give_up {
        tracing::error!(
            alarm = "paycycle_needs_review",
            subscription_id = %r.id(),
            pg = %r.pg,
            error = %e,
            "the PG would not delete a canceled customer's billing key: delete it in the PG's admin"
        );
    } else {
        tracing::warn!(subscription_id = %r.id(), error = %e, failures, %backoff, "billing key not released; tried again after the backoff");
    }
    let next = SubscriptionRecord {
        billing_key: if give_up { None } else { r.billing_key.clone() },
        billing_key_released_at: give_up.then(Timestamp::now),
        key_delete_failures: failures,
        key_release_retry_at: Timestamp::now().checked_add(backoff).ok(),
        ..r.next(r.subscription.clone())
    };
    if let Err(e) = write(deps, r, &next).await {
        tracing::warn!(subscription_id = %r.id(), error = %e, "key release failure not recorded");
    }
    false
}

/// `next` over `r`: on the version read, while no renew lease is live.
async fn write(deps: &Deps, r: &SubscriptionRecord, next: &SubscriptionRecord) -> Result<(), StoreError> {
    let mut tx = deps.store.tx();
    tx.put_subscription_unleased(r, next, Timestamp::now());
    deps.store.commit(tx).await
}
