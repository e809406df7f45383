//! Subscriptions and their charge attempts.
//!
//! Subscription item: `pk = SUB#{id}`, `sk = SUB`; top-level `state`, `version`, `lease_owner`,
//! `lease_until` (conditions), `due_shard` + `next_attempt_at` (the sparse due GSI, present only
//! while renew must look), `lookup_pk = CUS#{partner}#{customer}` (listing by customer, per partner).
//! Attempt item: `pk = SUB#{id}`, `sk = ATT#{period:010}#{attempt:02}`.

use aws_sdk_dynamodb::types::AttributeValue;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::vault::StoredBillingKey;
use super::{Cond, Item, Op, Set, Store, StoreError, Tx, Write, epoch, from_item, keys, n, s, sha256_hex, to_item};
use paycycle_domain::attempt::{Attempt, AttemptStatus, AttemptStatusKind, ChargeId, SubscriptionId};
use paycycle_domain::customer::Customer;
use paycycle_domain::gateway::PgMode;
use paycycle_domain::subscription::{Subscription, SubscriptionState};

/// The first release's number of due-GSI partitions, and the fewest there may ever be.
pub const MIN_DUE_SHARDS: u32 = 16;
/// The most due-GSI partitions (the shard name keeps three digits).
pub const MAX_DUE_SHARDS: u32 = 512;

/// Number of due-GSI partitions: `PAYCYCLE_DUE_SHARDS` (the template's `DueShards`, default 64),
/// else [`MIN_DUE_SHARDS`]. A morning of renewals spreads over all of them; renew queries each,
/// or fans them out to workers, one message per shard (issue 25).
///
/// **Grow only.** A subscription's shard is its id's hash modulo the count, and the shards are
/// `due#00 … due#{n-1}`: after a raise, items written under the old count sit in shards the new
/// range still covers, so every reader finds them, and each moves to its new shard on its next
/// write. A lower count would strand items in shards nobody queries: a value below
/// [`MIN_DUE_SHARDS`] (or unreadable) is refused for the minimum, and README says never to lower it.
pub fn due_shard_count() -> u32 {
    static COUNT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        let configured = std::env::var("PAYCYCLE_DUE_SHARDS").ok().and_then(|v| v.trim().parse::<u32>().ok());
        configured.filter(|n| (MIN_DUE_SHARDS..=MAX_DUE_SHARDS).contains(n)).unwrap_or(MIN_DUE_SHARDS)
    })
}

/// A stored subscription: the domain value plus what the store and the PG need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub subscription: Subscription,
    /// The partner (tenant) that created it (through its API key).
    #[serde(default = "super::payments::default_partner")]
    pub partner_id: String,
    pub customer: Customer,
    pub pg: PgMode,
    /// Payple `PCD_PAYER_ID`, or StepPay's billing idKey; StepPay managed: its subscription id —
    /// sealed ([`crate::vault`]): only [`crate::vault::KeyVault::open`] shows it.
    pub billing_key: Option<StoredBillingKey>,
    pub created_at: Timestamp,
    /// Incremented by every write; conditions compare it.
    pub version: u64,
    /// Set while a renew worker holds the subscription (see [`Store::claim`]).
    pub lease_owner: Option<String>,
    /// Epoch seconds; 0 = no lease.
    pub lease_until: i64,
    /// When the billing key of this ended subscription was released: deleted at the PG, or only
    /// dropped here because another live subscription of the customer still uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_key_released_at: Option<Timestamp>,
    /// How often the PG refused to delete the key of this ended subscription.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_delete_failures: u32,
    /// When renew tries to release the key again after a failure (the key-release entry's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_release_retry_at: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SubscriptionRecord {
    pub fn id(&self) -> &SubscriptionId {
        &self.subscription.id
    }

    /// A subscription as first stored: version 1, no lease.
    pub fn new(
        subscription: Subscription,
        partner_id: &str,
        customer: Customer,
        pg: PgMode,
        billing_key: Option<StoredBillingKey>,
        created_at: Timestamp,
    ) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription,
            partner_id: partner_id.to_string(),
            customer,
            pg,
            billing_key,
            created_at,
            version: 1,
            lease_owner: None,
            lease_until: 0,
            billing_key_released_at: None,
            key_delete_failures: 0,
            key_release_retry_at: None,
        }
    }

    /// Whether this subscription's billing key is to be released: it is canceled, nothing about
    /// it waits for renew or a person, and its PG can delete keys.
    pub fn key_to_release(&self) -> bool {
        let s = &self.subscription;
        s.state == SubscriptionState::Canceled
            && self.billing_key.is_some()
            && s.next_attempt_at.is_none()
            && s.awaiting_review().is_none()
            && self.pg.capabilities().deletes_billing_keys
    }

    /// The record after a transition: next version, lease released.
    pub fn next(&self, subscription: Subscription) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription,
            version: self.version + 1,
            lease_owner: None,
            lease_until: 0,
            ..self.clone()
        }
    }
}

pub fn subscription_pk(id: &SubscriptionId) -> String {
    format!("SUB#{id}")
}

const SUB_SK: &str = "SUB";

/// The due-GSI shard of a subscription: stable, evenly spread.
pub fn due_shard(id: &SubscriptionId) -> String {
    shard_of(id, due_shard_count())
}

/// `id`'s due shard among `count`: its name does not depend on `count` beyond the index, so a
/// shard name written under a smaller count is one a larger count queries too.
fn shard_of(id: &SubscriptionId, count: u32) -> String {
    let h = sha256_hex(id.as_str().as_bytes());
    let v = u32::from_str_radix(&h[..8], 16).unwrap_or(0) % count;
    format!("due#{v:02}")
}

/// Every shard name among `count`.
fn shards_of(count: u32) -> Vec<String> {
    (0..count).map(|v| format!("due#{v:02}")).collect()
}

/// Every shard key under the configured count, for renew's single-process walk.
pub fn due_shards() -> Vec<String> {
    shards_of(due_shard_count())
}

/// Every shard key a subscription can have been written under (any count up to
/// [`MAX_DUE_SHARDS`]), for the fan-out's dispatch: a lowered count or a rollback strands nothing.
pub fn every_due_shard() -> Vec<String> {
    shards_of(MAX_DUE_SHARDS)
}

/// Partitions of canceled subscriptions whose billing key renew releases.
const KEY_RELEASE_SHARDS: u32 = 4;

pub(crate) fn key_release_shard(id: &SubscriptionId) -> String {
    let h = sha256_hex(id.as_str().as_bytes());
    format!("keyrel#{:02}", u32::from_str_radix(&h[..8], 16).unwrap_or(0) % KEY_RELEASE_SHARDS)
}

/// Every key-release partition, for renew's sweep.
pub fn key_release_shards() -> Vec<String> {
    (0..KEY_RELEASE_SHARDS).map(|v| format!("keyrel#{v:02}")).collect()
}

fn customer_key(partner_id: &str, customer_id: &str) -> String {
    format!("CUS#{partner_id}#{customer_id}")
}

fn subscription_item(r: &SubscriptionRecord) -> Item {
    let id = r.id();
    let mut item = to_item(r, &subscription_pk(id), SUB_SK, "subscription");
    item.insert("state".into(), s(r.subscription.state.as_str()));
    // In review or canceled, only a PG hint sets `next_attempt_at` (renew looks the charge up).
    let renew_looks = matches!(
        r.subscription.state,
        SubscriptionState::Active
            | SubscriptionState::PastDue
            | SubscriptionState::NeedsReview
            | SubscriptionState::Canceled
    );
    if let (Some(next), true) = (r.subscription.next_attempt_at, renew_looks) {
        item.insert(keys::DUE_SHARD.into(), s(&due_shard(id)));
        item.insert(keys::NEXT_ATTEMPT_AT.into(), n(epoch(next)));
    }
    // A canceled subscription's billing key waits for renew to release it (`key_release_shards`).
    if r.key_to_release() {
        let at = r.key_release_retry_at.or(r.subscription.canceled_at).unwrap_or(r.created_at);
        item.insert(keys::DUE_SHARD.into(), s(&key_release_shard(id)));
        item.insert(keys::NEXT_ATTEMPT_AT.into(), n(epoch(at)));
    }
    // A charge in review waits for a person (renew has stopped: no due time above).
    if let Some(since) = r.subscription.awaiting_review() {
        item.insert(keys::DUE_SHARD.into(), s(&super::reviews::review_shard(&r.partner_id)));
        item.insert(keys::NEXT_ATTEMPT_AT.into(), n(epoch(since)));
    }
    item.insert(keys::LOOKUP_PK.into(), s(&customer_key(&r.partner_id, &r.customer.id)));
    item.insert(keys::LOOKUP_SK.into(), s(&format!("SUB#{}#{id}", r.created_at)));
    item
}

/// No renew lease is live at `wall_now`.
fn no_live_lease(wall_now: Timestamp) -> Cond {
    Cond::missing(LEASE_UNTIL).or(Cond::Cmp(LEASE_UNTIL, Op::Le, n(epoch(wall_now))))
}

pub fn attempt_sk(charge_id: &ChargeId) -> String {
    format!("ATT#{:010}#{:02}", charge_id.period(), charge_id.attempt())
}

fn attempt_item(a: &Attempt) -> Item {
    let mut item = to_item(a, &subscription_pk(a.charge_id.subscription()), &attempt_sk(&a.charge_id), "attempt");
    let charge_id = a.charge_id.to_string();
    // The day it was asked for, for reconciliation (`days`).
    let day = paycycle_domain::calendar::kst_yyyymmdd(a.requested_at);
    item.insert(keys::LOOKUP_PK.into(), s(&super::days::attempt_day(&day, &charge_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&charge_id));
    item.insert("charge_id".into(), s(&charge_id));
    item
}

impl Tx {
    /// Creates a subscription (it must not exist).
    pub fn put_subscription_new(&mut self, r: &SubscriptionRecord) -> &mut Self {
        self.put_new(subscription_item(r))
    }

    /// Writes `r` (the result of [`SubscriptionRecord::next`]) if the stored version is
    /// `r.version - 1` and, when `lease_owner` is given, that worker still holds the lease.
    pub fn put_subscription_next(&mut self, r: &SubscriptionRecord, lease_owner: Option<&str>) -> &mut Self {
        let mut c = Cond::version(r.version - 1);
        if let Some(owner) = lease_owner {
            c = c.and(Cond::eq(LEASE_OWNER, s(owner)));
        }
        self.push(Write::put_if(subscription_item(r), c))
    }

    /// A lifecycle change (cancel, pause, resume, plan; a refund's cancel): writes `next` over
    /// `prev` only while no charge is in flight — the version is the one read, no renew lease is
    /// live on the wall clock, and the attempt renew would send next is not `pending` (written
    /// before the PG call, maybe by a worker that died after it) nor `unknown` (except for a
    /// subscription in review, where renew has stopped). All in the write's condition, so a
    /// renewal claimed after the read makes it fail instead of orphaning the charge.
    pub fn put_subscription_change(
        &mut self,
        prev: &SubscriptionRecord,
        next: &SubscriptionRecord,
        wall_now: Timestamp,
    ) -> &mut Self {
        let c = Cond::version(next.version - 1).and(no_live_lease(wall_now));
        if let Some(charge_id) = prev.subscription.next_charge_id() {
            let pending = s(AttemptStatusKind::Pending.as_str());
            let in_flight = match prev.subscription.state {
                SubscriptionState::NeedsReview => Cond::eq(STATUS, pending),
                // An unknown charge is in flight — unless a person settled it not paid and renew is
                // to send it again under its own id (it holds a lease while it does, and records
                // the outcome unknown again if the PG does not answer).
                _ => Cond::eq(STATUS, pending)
                    .or(Cond::eq(STATUS, s(AttemptStatusKind::Unknown.as_str())).and(Cond::missing(RESOLUTION))),
            };
            let check = Cond::Absent.or(Cond::Not(Box::new(in_flight)));
            self.push(Write::check(&subscription_pk(prev.id()), &attempt_sk(&charge_id), check));
        }
        self.push(Write::put_if(subscription_item(next), c))
    }

    /// Writes `next` over `prev` on the version read while no renew lease is live at `wall_now`:
    /// a person's resolution of the charge in review (a hint may have woken renew to look it up;
    /// the caller settles the attempt in the same transaction, on its stored status), or the
    /// release of a canceled subscription's billing key.
    pub fn put_subscription_unleased(
        &mut self,
        prev: &SubscriptionRecord,
        next: &SubscriptionRecord,
        wall_now: Timestamp,
    ) -> &mut Self {
        debug_assert_eq!(next.version, prev.version + 1);
        self.push(Write::put_if(subscription_item(next), Cond::version(prev.version).and(no_live_lease(wall_now))))
    }

    /// Makes the transaction depend on the subscription being exactly as read (its version).
    pub fn check_subscription_unchanged(&mut self, r: &SubscriptionRecord) -> &mut Self {
        self.push(Write::check(&subscription_pk(r.id()), SUB_SK, Cond::version(r.version)))
    }

    /// Makes the transaction depend on `claimed` still being held by its renew worker: the
    /// version the claim wrote, its owner, and a lease not yet expired by the wall clock. A worker
    /// whose lease ran out (a lifecycle change may have committed since) writes nothing with it.
    pub fn check_claim_held(&mut self, claimed: &SubscriptionRecord, wall_now: Timestamp) -> &mut Self {
        let c = Cond::version(claimed.version)
            .and(Cond::eq(LEASE_OWNER, s(claimed.lease_owner.as_deref().unwrap_or_default())))
            .and(Cond::Cmp(LEASE_UNTIL, Op::Gt, n(epoch(wall_now))));
        self.push(Write::check(&subscription_pk(claimed.id()), SUB_SK, c))
    }

    /// [`Store::claim`] as part of a transaction (renew claims a subscription and writes the
    /// attempt it will charge in one): the claimed record, or `Conflict` when `r` is not due.
    pub fn claim(
        &mut self,
        r: &SubscriptionRecord,
        owner: &str,
        wall_now: Timestamp,
        lease: SignedDuration,
    ) -> Result<SubscriptionRecord, StoreError> {
        let due =
            r.subscription.next_attempt_at.ok_or_else(|| StoreError::Conflict(format!("{} is not due", r.id())))?;
        let until = epoch(wall_now.saturating_add(lease).unwrap_or(wall_now));
        let renew_looks = [
            SubscriptionState::Active,
            SubscriptionState::PastDue,
            SubscriptionState::NeedsReview,
            SubscriptionState::Canceled,
        ];
        let c = Cond::version(r.version)
            .and(Cond::Cmp(LEASE_UNTIL, Op::Le, n(epoch(wall_now))))
            .and(Cond::eq(keys::NEXT_ATTEMPT_AT, n(epoch(due))))
            .and(Cond::In(STATE, renew_looks.iter().map(|st| s(st.as_str())).collect()));
        let sets = vec![
            Set::Value(LEASE_OWNER, s(owner)),
            Set::Value(LEASE_UNTIL, n(until)),
            Set::Value(keys::VERSION, n(r.version + 1)),
        ];
        self.push(Write::update_if(&subscription_pk(r.id()), SUB_SK, sets, c));
        Ok(SubscriptionRecord {
            version: r.version + 1,
            lease_owner: Some(owner.to_string()),
            lease_until: until,
            ..r.clone()
        })
    }

    /// Records a new attempt (it must not exist: a second writer of the same charge id loses).
    pub fn put_attempt_new(&mut self, a: &Attempt) -> &mut Self {
        self.put_new(attempt_item(a))
    }

    /// Removes a `pending` attempt that never reached the PG, so the next try writes it afresh
    /// and sends it (a pending attempt found later would have to be looked up first).
    pub fn delete_attempt_if_pending(&mut self, a: &Attempt) -> &mut Self {
        let c = Cond::eq(STATUS, s(AttemptStatusKind::Pending.as_str()));
        self.push(Write::delete_if(&subscription_pk(a.charge_id.subscription()), &attempt_sk(&a.charge_id), Some(c)))
    }

    /// Replaces an attempt whose stored status is `expected` (`pending` or `unknown`) and whose
    /// PG payment hint is the one `a` carries: a hint verify added meanwhile makes this a
    /// `Conflict`, and renew's next look reads it instead of overwriting it.
    pub fn put_attempt_if_status(&mut self, a: &Attempt, expected: AttemptStatusKind) -> &mut Self {
        let hint = match &a.pg.pg_payment_hint {
            Some(hint) => Cond::eq(HINT, s(hint)),
            None => Cond::Unset(HINT),
        };
        self.push(Write::put_if(attempt_item(a), Cond::eq(STATUS, s(expected.as_str())).and(hint)))
    }
}

fn pg_subscription_pk(pg: PgMode, pg_subscription_id: &str) -> String {
    format!("PGSUB#{}#{pg_subscription_id}", pg.pg())
}

impl Tx {
    /// Points the PG's own subscription id (StepPay managed) at ours; once only.
    pub fn put_pg_subscription_pointer(
        &mut self,
        pg: PgMode,
        pg_subscription_id: &str,
        id: &SubscriptionId,
    ) -> &mut Self {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(&pg_subscription_pk(pg, pg_subscription_id)));
        item.insert(keys::SK.into(), s("PTR"));
        item.insert(keys::ENTITY.into(), s("pg_subscription"));
        item.insert("subscription_id".into(), s(id.as_str()));
        self.put_new(item)
    }
}

const LEASE_OWNER: &str = "lease_owner";
const LEASE_UNTIL: &str = "lease_until";
const STATUS: &str = "status";
const STATE: &str = "state";
const HINT: &str = "pg_payment_hint";
/// A person's resolution of the attempt (`Attempt::resolution`).
const RESOLUTION: &str = "resolution";
const HINT_PAID: &str = "pg_payment_hint_paid";

/// A page of ids and where to continue.
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Item>,
}

impl Store {
    pub async fn get_subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, StoreError> {
        match self.get(&subscription_pk(id), SUB_SK).await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Creates a subscription with no other change.
    pub async fn create_subscription(&self, r: &SubscriptionRecord) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.put_subscription_new(r);
        self.commit(tx).await
    }

    /// Subscriptions of one shard due at or before `now`, earliest first.
    pub async fn due_subscriptions(
        &self,
        shard: &str,
        now: Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<SubscriptionId>, StoreError> {
        let (pks, next) = self.due_page(shard, now, limit, start).await?;
        let mut items = Vec::new();
        for pk in pks {
            let id = pk.strip_prefix("SUB#").and_then(|id| SubscriptionId::parse(id).ok()).ok_or_else(|| {
                StoreError::Corrupt { key: pk.clone(), message: "due index entry is not a subscription".into() }
            })?;
            items.push(id);
        }
        Ok(Page { items, next })
    }

    /// The subscriptions of one page of shard `shard` due at or before `now`, earliest first, each
    /// read whole (consistently) by one BatchGetItem for the page: renew needs no read of its own
    /// per renewal. An entry whose subscription is gone meanwhile is left out.
    pub async fn due_subscription_records(
        &self,
        shard: &str,
        now: Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<SubscriptionRecord>, StoreError> {
        let (keys, next) = self.due_keys(shard, now, limit, start).await?;
        let mut by_key: std::collections::HashMap<String, SubscriptionRecord> = std::collections::HashMap::new();
        for item in self.get_many(&keys).await? {
            let record: SubscriptionRecord = from_item(item)?;
            by_key.insert(subscription_pk(record.id()), record);
        }
        // In the index's order (earliest due first), as the page was asked.
        let items = keys.iter().filter_map(|(pk, _)| by_key.remove(pk)).collect();
        Ok(Page { items, next })
    }

    /// Claims `r` for `lease` from `wall_now`: only one worker wins, and only while the
    /// subscription is still as read (same version, same due time, no live lease). Leases run on
    /// the wall clock (`Timestamp::now()`), never on a tick's billing time: a tick with another
    /// `now` (late, or travelling in time) still sees a live lease, and so does the lifecycle
    /// API. Returns the claimed record (its version is one higher).
    pub async fn claim(
        &self,
        r: &SubscriptionRecord,
        owner: &str,
        wall_now: Timestamp,
        lease: SignedDuration,
    ) -> Result<SubscriptionRecord, StoreError> {
        let mut tx = self.tx();
        let claimed = tx.claim(r, owner, wall_now, lease)?;
        self.write(tx.writes.remove(0)).await?;
        Ok(claimed)
    }

    /// Gives a lease back without other changes (a worker that claimed and then found nothing to
    /// do, or stops before its deadline).
    pub async fn release_lease(&self, claimed: &SubscriptionRecord) -> Result<(), StoreError> {
        let owner = claimed.lease_owner.clone().unwrap_or_default();
        let c = Cond::version(claimed.version).and(Cond::eq(LEASE_OWNER, s(&owner)));
        let sets = vec![
            Set::Value(LEASE_OWNER, AttributeValue::Null(true)),
            Set::Value(LEASE_UNTIL, n(0)),
            Set::Value(keys::VERSION, n(claimed.version + 1)),
        ];
        self.write(Write::update_if(&subscription_pk(claimed.id()), SUB_SK, sets, c)).await?;
        Ok(())
    }

    /// A partner's customer's subscriptions, oldest first.
    pub async fn subscriptions_of_customer(
        &self,
        partner_id: &str,
        customer_id: &str,
        limit: i32,
        start: Option<Item>,
    ) -> Result<Page<SubscriptionRecord>, StoreError> {
        let (items, next) =
            self.lookup_page(&customer_key(partner_id, customer_id), Some("SUB#"), Some(limit), start).await?;
        Ok(Page { items, next })
    }

    /// Our subscription behind a PG-managed subscription id.
    pub async fn subscription_by_pg_subscription(
        &self,
        pg: PgMode,
        pg_subscription_id: &str,
    ) -> Result<Option<SubscriptionId>, StoreError> {
        let pk = pg_subscription_pk(pg, pg_subscription_id);
        let Some(item) = self.get(&pk, "PTR").await? else { return Ok(None) };
        let id = item.get("subscription_id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        SubscriptionId::parse(&id)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { key: pk, message: format!("pointer to a bad id: {e}") })
    }

    /// Notes the PG payment id a verified webhook named for a charge whose outcome is not
    /// settled yet (pending or unknown), so renew can look it up. A failed payment's hint is kept
    /// only if there is none yet; a `paid` one replaces any hint not itself paid — one charge id
    /// may carry a declined try and then the paid one, and renew must look up the payment that
    /// took the money, never settle the charge as declined by the other. A subscription renew
    /// stopped looking at (in review, or canceled in review) is woken in the same transaction
    /// ([`Subscription::hint_arrived`]): the hint resolves it.
    pub async fn hint_attempt(&self, charge_id: &ChargeId, pg_payment_id: &str, paid: bool) -> Result<(), StoreError> {
        let pk = subscription_pk(charge_id.subscription());
        let unsettled = [AttemptStatusKind::Pending, AttemptStatusKind::Unknown].map(|k| s(k.as_str())).to_vec();
        let replaces = match paid {
            true => Cond::Unset(HINT).or(Cond::missing(HINT_PAID).and(Cond::Cmp(HINT, Op::Ne, s(pg_payment_id)))),
            false => Cond::Unset(HINT),
        };
        let condition = Cond::Exists.and(Cond::In(STATUS, unsettled)).and(replaces);
        let mut sets = vec![Set::Value(HINT, s(pg_payment_id))];
        if paid {
            sets.push(Set::Value(HINT_PAID, AttributeValue::Bool(true)));
        }
        let mut tx = self.tx();
        tx.push(Write::update_if(&pk, &attempt_sk(charge_id), sets, condition));
        if let Some(r) = self.get_subscription(charge_id.subscription()).await? {
            let ours = r
                .subscription
                .collection
                .as_ref()
                .is_some_and(|c| (c.period, c.attempt) == (charge_id.period(), charge_id.attempt()));
            if let (true, Ok(t)) = (ours, r.subscription.hint_arrived()) {
                tx.put_subscription_next(&r.next(t.subscription), None);
            }
        }
        match self.commit(tx).await {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(charge_id.to_string())),
            other => other,
        }
    }

    /// Whether a charge of `r` is in flight at `wall_now`, as [`Tx::put_subscription_change`]
    /// checks it: a live renew lease, or the next attempt pending (or unknown, outside review).
    /// A read check for a clear answer up front; the write's condition is what guarantees it.
    pub async fn charge_in_flight(&self, r: &SubscriptionRecord, wall_now: Timestamp) -> Result<bool, StoreError> {
        if r.lease_owner.is_some() && r.lease_until > epoch(wall_now) {
            return Ok(true);
        }
        let Some(charge_id) = r.subscription.next_charge_id() else { return Ok(false) };
        Ok(match self.get_attempt(&charge_id).await? {
            Some(Attempt { status: AttemptStatus::Pending, .. }) => true,
            Some(Attempt { status: AttemptStatus::Unknown { .. }, resolution, .. }) => {
                r.subscription.state != SubscriptionState::NeedsReview && resolution.is_none()
            }
            _ => false,
        })
    }

    pub async fn get_attempt(&self, charge_id: &ChargeId) -> Result<Option<Attempt>, StoreError> {
        match self.get(&subscription_pk(charge_id.subscription()), &attempt_sk(charge_id)).await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Every attempt of a subscription, by period and attempt number.
    pub async fn attempts_of(&self, id: &SubscriptionId) -> Result<Vec<Attempt>, StoreError> {
        self.items_with_prefix(&subscription_pk(id), "ATT#").await
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    /// Raising the shard count (16 → 64 → 512) strands nothing: an item written under any smaller
    /// count sits in a shard the larger count's walk queries.
    #[test]
    fn a_due_shard_written_under_fewer_shards_is_one_more_shards_still_query() {
        let counts = [MIN_DUE_SHARDS, 32, 64, 100, 128, MAX_DUE_SHARDS];
        let walks: Vec<Vec<String>> = counts.iter().map(|&c| shards_of(c)).collect();
        for i in 0..2_000 {
            let id = SubscriptionId::parse(&format!("sub_shard{i}")).unwrap();
            for (small, &count) in counts.iter().enumerate() {
                let written = shard_of(&id, count);
                for walk in &walks[small..] {
                    assert!(walk.contains(&written), "{id}: {written} under {count} shards");
                }
            }
        }
        assert_eq!(shards_of(MIN_DUE_SHARDS)[..], shards_of(64)[..16], "the first release's names stay");
    }
}
