//! What needs a person (DESIGN §13): subscriptions whose charge stayed unknown past the review
//! window (or were canceled in review with it still unknown), and refunds whose outcome the PG
//! could not settle.
//!
//! They are listed from the sparse due index, in one partition per partner
//! (`due_shard = review#{partner}`, `next_attempt_at` = since when, epoch seconds), so the list
//! is oldest first and costs nothing while nothing needs review. The entry is derived from the
//! item itself every time it is written (`subscription_item`, `refund_item`): it cannot drift from
//! the state it describes, and it leaves with the write that settles it. Renew and the deliverer
//! query only their own shards (`due#nn`, `whdue#nn`), never these.

use jiff::{SignedDuration, Timestamp};
use paycycle_domain::attempt::Attempt;
use paycycle_domain::payment::RefundStatus;

use super::payments::{PaymentRecord, RefundRecord};
use super::subscriptions::{Page, SubscriptionRecord};
use super::{Item, Query, Store, StoreError, from_item, keys};

/// The due-index partition of what needs a person at `partner`.
pub fn review_shard(partner_id: &str) -> String {
    format!("review#{partner_id}")
}

/// How long a refund may stay `reserved` (its PG call in flight) before it is listed: a Lambda
/// that died between its reservation and the PG's answer leaves one behind.
pub const STUCK_RESERVATION: SignedDuration = SignedDuration::from_mins(15);

/// Whether refund `r` waits for a person at `wall_now` (its outcome unknown, or its reservation
/// stuck), and since when.
pub fn refund_awaiting_review(r: &RefundRecord, wall_now: Timestamp) -> Option<Timestamp> {
    match r.status {
        RefundStatus::Unknown => Some(r.requested_at),
        RefundStatus::Reserved if wall_now.duration_since(r.requested_at) >= STUCK_RESERVATION => Some(r.requested_at),
        _ => None,
    }
}

/// One thing a person must settle.
#[derive(Clone, Debug)]
pub enum Review {
    /// A subscription in review, with the attempt whose outcome is unknown.
    Subscription { record: SubscriptionRecord, attempt: Option<Attempt> },
    /// A refund whose outcome is unknown, with its payment.
    Refund { refund: RefundRecord, payment: Option<PaymentRecord> },
}

impl Store {
    /// One page of what needs a person at `partner`, oldest first. Each entry is read again
    /// (consistently) and kept only if it still needs review: the index lags writes briefly.
    pub async fn reviews(
        &self,
        partner_id: &str,
        limit: i32,
        start: Option<Item>,
        wall_now: Timestamp,
    ) -> Result<Page<Review>, StoreError> {
        let q =
            Query::index(keys::DUE_INDEX, keys::DUE_SHARD, &review_shard(partner_id)).limit(Some(limit)).start(start);
        let (found, next) = self.query(&q).await?;
        let mut items = Vec::with_capacity(found.len());
        for key in found {
            let (pk, sk) = super::table::key_of(&key);
            let Some(item) = self.get(&pk, &sk).await? else { continue };
            if pk.starts_with("SUB#") {
                let record: SubscriptionRecord = from_item(item)?;
                if record.partner_id != partner_id || record.subscription.awaiting_review().is_none() {
                    continue;
                }
                let attempt = match record.subscription.next_charge_id() {
                    Some(charge_id) => self.get_attempt(&charge_id).await?,
                    None => None,
                };
                items.push(Review::Subscription { record, attempt });
            } else {
                let refund: RefundRecord = from_item(item)?;
                if refund.partner_id != partner_id || refund_awaiting_review(&refund, wall_now).is_none() {
                    continue;
                }
                let payment = self.get_payment(&refund.payment_id).await?;
                items.push(Review::Refund { refund, payment });
            }
        }
        Ok(Page { items, next })
    }
}
