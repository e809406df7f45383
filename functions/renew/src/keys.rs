//! Billing keys nothing renews any more (DESIGN §13), deleted at their PG (where the PG can:
//! `Capabilities::deletes_billing_keys`) unless another live subscription of the same customer
//! still uses them — then they are only dropped here:
//! - a canceled subscription's own key;
//! - a key a card change replaced (or the new card of a subscription that ended before the swap),
//!   kept by verify as a [`RetiredKey`] in the swap's own transaction.
//!
//! Each tick releases what the key-release partitions of the due index hold
//! (`Store::key_release_shards`), after the renewals, within the deadline.
//!
//! An `unpaid` subscription keeps its key: dunning is over, but the customer may still pay (a
//! person's retry); a dunning policy whose final action is `canceled` releases it.

use jiff::Timestamp;
use paycycle::Secret;
use paycycle::domain::subscription::SubscriptionState;
use paycycle::pg::{PgError, PgMode};
use paycycle::store::StoreError;
use paycycle::store::retired_keys::{KeyRelease, RetiredKey};
use paycycle::store::subscriptions::{SubscriptionRecord, key_release_shards};
use paycycle::store::vault::VaultError;

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
            let page = match deps.store.key_releases(&shard, now, deps.settings.page_size, start).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "key release query failed");
                    break;
                }
            };
            for entry in page.items {
                if deadline.is_some_and(|d| Timestamp::now() >= d) {
                    return released;
                }
                released += u64::from(release_entry(deps, &entry).await);
            }
            match page.next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    released
}

/// Reads one entry again (the index lags writes) and releases what it still holds.
async fn release_entry(deps: &Deps, entry: &KeyRelease) -> bool {
    match entry {
        KeyRelease::Ended(id) => match deps.store.get_subscription(id).await {
            Ok(Some(r)) if r.key_to_release() => release(deps, &r).await,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(subscription_id = %id, error = %e, "key release read failed");
                false
            }
        },
        KeyRelease::Retired { subscription_id, checkout_id } => {
            match deps.store.get_retired_key(subscription_id, checkout_id).await {
                Ok(Some(k)) => release_retired(deps, &k).await,
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(%subscription_id, error = %e, "retired key read failed");
                    false
                }
            }
        }
    }
}

/// Deletes `key` at `pg` unless another live subscription of the customer uses it. `Ok(true)`:
/// deleted at the PG; `Ok(false)`: still used, only to be dropped here.
async fn delete_unless_used(deps: &Deps, owner: &Owner<'_>, key: &Secret) -> Result<bool, String> {
    if still_used(deps, owner, key).await.map_err(|e| e.to_string())? {
        return Ok(false);
    }
    match deps.pgs.adapter(owner.pg).delete_billing_key(key.expose()).await {
        // Not there any more: deleted already (an earlier try whose write was lost).
        Ok(()) | Err(PgError::NotFound) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// Releases a replaced key: deleted at the PG unless still used, then its item removed (on the
/// version read); a failure is counted on it and tried again after the backoff.
async fn release_retired(deps: &Deps, k: &RetiredKey) -> bool {
    let owner =
        Owner { subscription_id: &k.subscription_id, pg: k.pg, partner_id: &k.partner_id, customer_id: &k.customer_id };
    let key = match deps.vault.open(&k.subscription_id, &k.billing_key).await {
        Ok(key) => key,
        Err(e) => return unopened(&k.subscription_id, &e),
    };
    let outcome = delete_unless_used(deps, &owner, &key).await;
    let failures = k.failures + 1;
    let mut tx = deps.store.tx();
    let released = match &outcome {
        Ok(_) => {
            tx.delete_retired_key(k);
            true
        }
        Err(e) => {
            let (give_up, retry_at) = backoff(failures, &k.subscription_id.to_string(), k.pg, e);
            if give_up {
                tx.delete_retired_key(k);
            } else {
                tx.put_retired_key_next(&RetiredKey { failures, retry_at, version: k.version + 1, ..k.clone() });
            }
            false
        }
    };
    match deps.store.commit(tx).await {
        Ok(()) if released => {
            let deleted_at_pg = outcome == Ok(true);
            tracing::info!(subscription_id = %k.subscription_id, deleted_at_pg, "replaced billing key released");
        }
        Ok(()) => {}
        Err(e) => tracing::warn!(subscription_id = %k.subscription_id, error = %e, "retired key write failed"),
    }
    released
}

/// After the `failures`-th failure: whether to give up (and ask a person, by alarm), and when to
/// try next (1 h, doubling).
fn backoff(failures: u32, subscription_id: &str, pg: PgMode, e: &str) -> (bool, Option<Timestamp>) {
    let give_up = failures >= MAX_DELETE_FAILURES;
    let backoff = jiff::SignedDuration::from_hours(1 << (failures - 1).min(16));
    if give_up {
        tracing::error!(
            alarm = "paycycle_needs_review",
            subscription_id,
            pg = %pg,
            error = %e,
            "the PG would not delete a billing key nothing renews any more: delete it in the PG's admin"
        );
    } else {
        tracing::warn!(subscription_id, error = %e, failures, %backoff, "billing key not released; tried again after the backoff");
    }
    (give_up, Timestamp::now().checked_add(backoff).ok())
}

/// Releases `r`'s billing key: deleted at the PG unless another live subscription of the
/// customer uses it, then dropped from `r` (one conditional write on the version read).
async fn release(deps: &Deps, r: &SubscriptionRecord) -> bool {
    let Some(stored) = &r.billing_key else { return false };
    let key = match deps.vault.open(r.id(), stored).await {
        Ok(key) => key,
        Err(e) => return unopened(r.id(), &e),
    };
    let owner = Owner { subscription_id: r.id(), pg: r.pg, partner_id: &r.partner_id, customer_id: &r.customer.id };
    let shared = match delete_unless_used(deps, &owner, &key).await {
        Ok(deleted) => !deleted,
        Err(e) => return failed(deps, r, &e).await,
    };
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

/// A key to release that does not open: not the PG's refusal, so not counted towards giving up
/// (the key stays, and its entry: the next tick tries again). KMS not answering is only logged;
/// a key that does not open, or KMS refusing for good, asks a person.
fn unopened(id: &paycycle::domain::attempt::SubscriptionId, e: &VaultError) -> bool {
    if matches!(e, VaultError::Kms { lasting: false, .. }) {
        tracing::warn!(subscription_id = %id, error = %e, "KMS did not answer; the key is released on a later tick");
    } else {
        tracing::error!(alarm = "paycycle_needs_review", subscription_id = %id, error = %e, "a billing key to delete does not open: fix the KMS key; it is kept until then");
    }
    false
}

/// The subscription a key was released from, and whose customer's other subscriptions may use it.
struct Owner<'a> {
    subscription_id: &'a paycycle::domain::attempt::SubscriptionId,
    pg: PgMode,
    partner_id: &'a str,
    customer_id: &'a str,
}

/// Whether a live subscription of the owner's customer (at the same partner) uses `key`. Each
/// key is sealed for its own subscription, so each is opened to compare (in constant time); one
/// that does not open counts as unknown, and the key is not deleted. The owner itself is read
/// consistently (a card change may have registered the very same key again); the customer's
/// others come from the lookup index, which lags writes by a moment — the owner's own entry there
/// is skipped, so a stale image of it never keeps a key alive.
async fn still_used(deps: &Deps, owner: &Owner<'_>, key: &Secret) -> Result<bool, StoreError> {
    if let Some(own) = deps.store.get_subscription(owner.subscription_id).await? {
        if same_live_key(deps, &own, key).await? {
            return Ok(true);
        }
    }
    let mut start = None;
    loop {
        let page = deps.store.subscriptions_of_customer(owner.partner_id, owner.customer_id, 100, start).await?;
        for o in page.items.iter().filter(|o| o.id() != owner.subscription_id) {
            if same_live_key(deps, o, key).await? {
                return Ok(true);
            }
        }
        match page.next {
            Some(k) => start = Some(k),
            None => return Ok(false),
        }
    }
}

/// Whether `o` is live and charges `key` (opened for its own subscription to compare).
async fn same_live_key(deps: &Deps, o: &SubscriptionRecord, key: &Secret) -> Result<bool, StoreError> {
    let Some(stored) = o.billing_key.as_ref().filter(|_| o.subscription.state != SubscriptionState::Canceled) else {
        return Ok(false);
    };
    let other = deps.vault.open(o.id(), stored).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(key.ct_eq(other.expose().as_bytes()))
}

/// The key could not be released (the PG did not delete it, or the customer's subscriptions could
/// not be read): counted on the record and tried again after a backoff (1 h, doubling); past
/// [`MAX_DELETE_FAILURES`] (about 15 hours) a person is asked to delete it in the PG's
/// admin and it is dropped here.
async fn failed(deps: &Deps, r: &SubscriptionRecord, e: &str) -> bool {
    let failures = r.key_delete_failures + 1;
    let (give_up, retry_at) = backoff(failures, r.id().as_str(), r.pg, e);
    let next = SubscriptionRecord {
        billing_key: if give_up { None } else { r.billing_key.clone() },
        billing_key_released_at: give_up.then(Timestamp::now),
        key_delete_failures: failures,
        key_release_retry_at: retry_at,
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
