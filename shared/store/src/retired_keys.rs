//! Billing keys a card change replaced (DESIGN §13), waiting to be deleted at their PG. The swap
//! writes one in the same transaction as the subscription's new key, so a replaced key can never
//! be forgotten; renew's key sweep deletes it at the PG (unless another live subscription of the
//! customer still uses it) and then removes the item, with the backoff and alarm of a canceled
//! subscription's key.
//!
//! Item: `pk = SUB#{id}`, `sk = KEYRET#{checkout_id}` (the card change that replaced it, or whose
//! card the subscription could no longer take), in the due index under the key-release partitions (`keyrel#nn`) at the time renew
//! tries next.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::subscriptions::{Page, key_release_shard, subscription_pk};
use super::vault::StoredBillingKey;
use super::{Cond, Item, Query, Range, Store, StoreError, Tx, Write, epoch, from_item, keys, n, s, to_item};
use paycycle_domain::attempt::SubscriptionId;
use paycycle_domain::gateway::PgMode;

/// A replaced billing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    pub subscription_id: SubscriptionId,
    pub partner_id: String,
    pub customer_id: String,
    pub pg: PgMode,
    /// Sealed for `subscription_id` like the subscription's own key (`vault`).
    pub billing_key: StoredBillingKey,
    /// The card-change checkout that retired it (the item's sort key).
    pub checkout_id: String,
    pub retired_at: Timestamp,
    /// How often the PG refused to delete it.
    #[serde(default)]
    pub failures: u32,
    /// When renew tries again after a failure.
    #[serde(default)]
    pub retry_at: Option<Timestamp>,
    pub version: u64,
}

const SK_PREFIX: &str = "KEYRET#";

fn retired_sk(checkout_id: &str) -> String {
    format!("{SK_PREFIX}{checkout_id}")
}

fn item(k: &RetiredKey) -> Item {
    let mut item = to_item(k, &subscription_pk(&k.subscription_id), &retired_sk(&k.checkout_id), "retired_key");
    item.insert(keys::DUE_SHARD.into(), s(&key_release_shard(&k.subscription_id)));
    item.insert(keys::NEXT_ATTEMPT_AT.into(), n(epoch(k.retry_at.unwrap_or(k.retired_at))));
    item
}

/// What a key-release partition holds: a canceled subscription whose own key is to be released,
/// or a key a card change replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRelease {
    Ended(SubscriptionId),
    Retired { subscription_id: SubscriptionId, checkout_id: String },
}

impl Tx {
    /// Keeps a replaced key for renew to delete (it must not exist yet).
    pub fn put_retired_key_new(&mut self, k: &RetiredKey) -> &mut Self {
        self.put_new(item(k))
    }

    /// A failed try recorded (`k.version` = the read one + 1).
    pub fn put_retired_key_next(&mut self, k: &RetiredKey) -> &mut Self {
        self.push(Write::put_if(item(k), Cond::version(k.version - 1)))
    }

    /// Released: gone from the table, on the version read.
    pub fn delete_retired_key(&mut self, k: &RetiredKey) -> &mut Self {
        let (pk, sk) = (subscription_pk(&k.subscription_id), retired_sk(&k.checkout_id));
        self.push(Write::delete_if(&pk, &sk, Some(Cond::version(k.version))))
    }
}

impl Store {
    pub async fn get_retired_key(
        &self,
        id: &SubscriptionId,
        checkout_id: &str,
    ) -> Result<Option<RetiredKey>, StoreError> {
        self.get(&subscription_pk(id), &retired_sk(checkout_id)).await?.map(from_item).transpose()
    }

    /// The replaced keys of subscription `id` still waiting (oldest first).
    pub async fn retired_keys_of(&self, id: &SubscriptionId) -> Result<Vec<RetiredKey>, StoreError> {
        let q = Query::partition(&subscription_pk(id)).range(keys::SK, Range::BeginsWith(SK_PREFIX.into()));
        let (found, _) = self.query(&q).await?;
        found.into_iter().map(from_item).collect()
    }

    /// One page of a key-release partition's entries due at `now`.
    pub async fn key_releases(
        &self,
        shard: &str,
        now: Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<KeyRelease>, StoreError> {
        let (keys, next) = self.due_keys(shard, now, limit, start).await?;
        let mut items = Vec::with_capacity(keys.len());
        for (pk, sk) in keys {
            let corrupt =
                || StoreError::Corrupt { key: format!("{pk}/{sk}"), message: "not a key-release entry".into() };
            let id = pk.strip_prefix("SUB#").and_then(|id| SubscriptionId::parse(id).ok()).ok_or_else(corrupt)?;
            items.push(match sk.strip_prefix(SK_PREFIX) {
                Some(checkout_id) => KeyRelease::Retired { subscription_id: id, checkout_id: checkout_id.to_string() },
                None => KeyRelease::Ended(id),
            });
        }
        Ok(Page { items, next })
    }
}
