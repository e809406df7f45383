//! Payments and refunds (DESIGN §6).
//!
//! Payment item: `pk = PAY#{payment_id}`, `sk = PAY`, with `paid`, `refunded`, `refund_pending`
//! and `refundable` at the top level so that a refund reservation is one conditional update:
//! `refundable >= :amount` then `refundable -= amount, refund_pending += amount`. DynamoDB
//! conditions cannot do arithmetic, so `refundable` is stored and every update keeps
//! `refundable = paid - refunded - refund_pending`.
//!
//! The payment id is derived from the PG and its transaction id, so the create-only put records a
//! PG transaction at most once, however many webhooks, redirects and lookups report it.
//! Refund item: `pk = PAY#{payment_id}`, `sk = REF#{refund_id}`.
//!
//! The partner's books: every payment item also carries `paid_pk = PAID#{partner_id}` and
//! `paid_sk = {paid_at, fixed width}#{payment_id}`, the keys of the sparse `paid` index, written
//! by the same create-only put that records the payment (so no payment is ever missing from the
//! books, in or out of a transaction). The index projects the payment's own attributes only.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    Cond, Item, Op, Query, Range, Set, Store, StoreError, Tx, Write, from_item, keys, n, s, sha256_hex, to_item,
};
use paycycle_domain::attempt::{ChargeId, SubscriptionId};
use paycycle_domain::gateway::{CardInfo, PaymentDetails};
use paycycle_domain::gateway::{Pg, PgMode};
use paycycle_domain::money::Krw;
use paycycle_domain::payment::{PaymentAmounts, RefundFailure, RefundStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    /// The partner (tenant) the payment belongs to; API keys of other partners cannot see it.
    #[serde(default = "default_partner")]
    pub partner_id: String,
    pub pg: PgMode,
    /// StepPay `idKey`, or Payple's `PCD_PAY_OID`.
    pub pg_payment_id: String,
    pub customer_id: String,
    pub subscription_id: Option<SubscriptionId>,
    pub charge_id: Option<ChargeId>,
    pub checkout_id: Option<String>,
    /// StepPay managed: the order (its code) this payment paid. Managed refunds go through the
    /// order (`PATCH /api/v1/orders/{orderIdOrCode}/cancel`, step-api-spec `merge/v1.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_order: Option<String>,
    #[serde(flatten)]
    pub amounts: PaymentAmounts,
    /// `paid - refunded - refund_pending`, kept in step by every write.
    pub refundable: Krw,
    pub paid_at: Timestamp,
    /// `YYYYMMDD` (KST) of the payment: Payple's refund needs `PCD_PAY_DATE`.
    pub pay_date_kst: String,
    /// The card it was paid with, as the PG said (Payple's card fields; the number masked by us).
    #[serde(default)]
    pub card: Option<CardInfo>,
    /// The card slip URL the PG gave (Payple `PCD_PAY_CARDRECEIPT`).
    #[serde(default)]
    pub receipt_url: Option<String>,
    pub version: u64,
}

/// The partner of records made before partners existed, and of single-partner deployments.
pub const DEFAULT_PARTNER: &str = "default";

pub(crate) fn default_partner() -> String {
    DEFAULT_PARTNER.to_string()
}

/// `pay_` + 24 hex of SHA-256(pg ":" pg id): one payment id per PG transaction.
pub fn payment_id_for(pg: impl Into<Pg>, pg_payment_id: &str) -> String {
    format!("pay_{}", &sha256_hex(format!("{}:{pg_payment_id}", pg.into()).as_bytes())[..24])
}

impl PaymentRecord {
    /// A newly paid payment.
    #[allow(clippy::too_many_arguments)]
    pub fn paid(
        pg: PgMode,
        pg_payment_id: &str,
        customer_id: &str,
        amount: Krw,
        paid_at: Timestamp,
        subscription_id: Option<SubscriptionId>,
        charge_id: Option<ChargeId>,
        checkout_id: Option<String>,
    ) -> Self {
        Self {
            payment_id: payment_id_for(pg, pg_payment_id),
            partner_id: default_partner(),
            pg,
            pg_payment_id: pg_payment_id.to_string(),
            customer_id: customer_id.to_string(),
            subscription_id,
            charge_id,
            checkout_id,
            pg_order: None,
            amounts: PaymentAmounts::new(amount),
            refundable: amount,
            paid_at,
            pay_date_kst: paycycle_domain::calendar::kst_yyyymmdd(paid_at),
            card: None,
            receipt_url: None,
            version: 1,
        }
    }

    /// The same payment with what the PG said about it for the customer (card, receipt).
    pub fn with_details(self, details: PaymentDetails) -> Self {
        Self { card: details.card, receipt_url: details.receipt_url, ..self }
    }
}

impl PaymentRecord {
    /// The same payment, owned by `partner_id`.
    pub fn for_partner(self, partner_id: &str) -> Self {
        Self { partner_id: partner_id.to_string(), ..self }
    }

    /// The same payment, paid through PG order `order` (StepPay managed).
    pub fn with_pg_order(self, order: Option<String>) -> Self {
        Self { pg_order: order, ..self }
    }
}

fn payment_pk(payment_id: &str) -> String {
    format!("PAY#{payment_id}")
}

/// Whether `key` (as a store error names it) is a payment's.
pub(crate) fn is_payment_key(key: &str) -> bool {
    key.starts_with("PAY#")
}

fn payment_item(p: &PaymentRecord) -> Item {
    let mut item = to_item(p, &payment_pk(&p.payment_id), "PAY", "payment");
    if let Some(sub) = &p.subscription_id {
        item.insert(keys::LOOKUP_PK.into(), s(&format!("SUBPAY#{sub}")));
        item.insert(keys::LOOKUP_SK.into(), s(&format!("{}#{}", p.paid_at, p.payment_id)));
    }
    // The day it was paid, for reconciliation (`days`).
    item.insert(keys::DUE_SHARD.into(), s(&super::days::payment_day(&p.pay_date_kst, &p.payment_id)));
    item.insert(keys::NEXT_ATTEMPT_AT.into(), n(super::epoch(p.paid_at)));
    item.insert(keys::PAID_PK.into(), s(&paid_partition(&p.partner_id)));
    item.insert(keys::PAID_SK.into(), s(&format!("{}#{}", paid_sort_time(p.paid_at), p.payment_id)));
    item
}

/// The `paid` index partition of a partner's payments.
pub fn paid_partition(partner_id: &str) -> String {
    format!("PAID#{partner_id}")
}

/// A time as the `paid` index sorts it: UTC with nine fraction digits, so text order is time order
/// (`Timestamp`'s own display drops zero fractions, and `…00Z` would sort after `…00.5Z`).
fn paid_sort_time(t: Timestamp) -> String {
    format!("{}.{:09}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_nanosecond().max(0))
}

/// When the payments a list wants were paid: `from` inclusive, `to` exclusive; either end open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaidWindow {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl PaidWindow {
    /// The `paid` index key condition. A sort key is `{time}#{id}`, longer than `{time}`: `>= from`
    /// takes payments made at `from`, `<= to` leaves out those made at `to`.
    fn range(&self) -> Option<Range> {
        let key = |t: Timestamp| s(&paid_sort_time(t));
        match (self.from, self.to) {
            (None, None) => None,
            (Some(from), None) => Some(Range::AtLeast(key(from))),
            (None, Some(to)) => Some(Range::AtMost(key(to))),
            (Some(from), Some(to)) => Some(Range::Between(key(from), key(to))),
        }
    }

    /// Whether a page's start key (a cursor) lies in this window: DynamoDB refuses a start key
    /// outside the key condition, so a cursor of another window is the caller's error.
    pub fn admits(&self, start: &Item) -> bool {
        let key = start.get(keys::PAID_SK);
        match self.range() {
            None => key.is_some_and(|k| k.as_s().is_ok()),
            Some(range) => range.holds(key),
        }
    }
}

/// Which of a partner's payments a list wants, beside the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    pub customer_id: Option<String>,
    pub subscription_id: Option<SubscriptionId>,
}

impl PaymentFilter {
    fn condition(&self) -> Option<Cond> {
        let customer = self.customer_id.as_deref().map(|c| Cond::eq("customer_id", s(c)));
        let subscription = self.subscription_id.as_ref().map(|id| Cond::eq("subscription_id", s(id.as_str())));
        match (customer, subscription) {
            (Some(c), Some(sub)) => Some(c.and(sub)),
            (c, sub) => c.or(sub),
        }
    }
}

/// One page of a partner's payments, oldest first, and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentPage {
    pub payments: Vec<PaymentRecord>,
    pub next: Option<Item>,
}

/// Index reads one page may make while a filter drops what it reads: a bound on one request's
/// work. A page cut short says where to go on.
const MAX_PAGE_READS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub refund_id: String,
    pub payment_id: String,
    pub amount: Krw,
    pub reason: String,
    pub status: RefundStatus,
    pub requested_at: Timestamp,
    /// The PG's id for the cancellation, once known.
    pub pg_refund_id: Option<String>,
    /// A failed refund's [`RefundFailure`], as stored ([`RefundRecord::failure`] reads it).
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// Hash of the request that asked for this refund (its payment and body, as the idempotency
    /// record keeps it): a later request under the same Idempotency-Key finds this refund, and is
    /// answered from it only if it is that request. `None` on refunds recorded before it was kept
    /// and on refunds paycycle did not ask for (made at the PG).
    #[serde(default)]
    pub request_hash: Option<String>,
    /// The request also canceled the subscription (in the reservation's transaction); answers
    /// about this refund say so only then.
    #[serde(default)]
    pub cancel_subscription: bool,
    /// The payment's partner: what needs review is listed per partner.
    #[serde(default = "default_partner")]
    pub partner_id: String,
    /// A person's resolution, when one settled it (DESIGN §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<paycycle_domain::review::Resolution>,
}

impl RefundRecord {
    /// Why this refund failed, if it did.
    pub fn failure(&self) -> Option<RefundFailure> {
        let code = self.failure_code.as_deref()?;
        Some(RefundFailure::from_stored(code, self.failure_message.as_deref().unwrap_or_default()))
    }
}

fn refund_item(r: &RefundRecord) -> Item {
    let mut item = to_item(r, &payment_pk(&r.payment_id), &format!("REF#{}", r.refund_id), "refund");
    // Listed for a person while its outcome is unknown, or while reserved (a reservation is
    // listed once it is stuck: `reviews::STUCK_RESERVATION`); settled, it leaves the list.
    // The day it was asked for, for reconciliation (`days`).
    let day = paycycle_domain::calendar::kst_yyyymmdd(r.requested_at);
    item.insert(keys::LOOKUP_PK.into(), s(&super::days::refund_day(&day, &r.refund_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&r.refund_id));
    if matches!(r.status, RefundStatus::Unknown | RefundStatus::Reserved) {
        item.insert(keys::DUE_SHARD.into(), s(&super::reviews::review_shard(&r.partner_id)));
        item.insert(keys::NEXT_ATTEMPT_AT.into(), n(super::epoch(r.requested_at)));
    }
    item
}

fn status_str(status: RefundStatus) -> &'static str {
    match status {
        RefundStatus::Reserved => "reserved",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
        RefundStatus::Unknown => "unknown",
    }
}

/// The payment's amounts as stored (top-level numbers, so conditions and updates reach them).
const REFUNDABLE: &str = "refundable";
const REFUND_PENDING: &str = "refund_pending";
const REFUNDED: &str = "refunded";

impl Tx {
    /// Moves `total` of a payment's reserved refunds by `outcome` (refunded, or given back to the
    /// refundable amount); an unknown outcome moves nothing. With `payment_version`, only while the
    /// payment is still at that version.
    fn settle_refund_amounts(
        &mut self,
        payment_id: &str,
        outcome: &RefundOutcome,
        total: Krw,
        payment_version: Option<u64>,
    ) -> &mut Self {
        let amount = total.won();
        let moves = match outcome {
            RefundOutcome::Succeeded { .. } => Some(REFUNDED),
            RefundOutcome::Failed(_) => Some(REFUNDABLE),
            RefundOutcome::Unknown => None,
        };
        let read_version = |c: Cond| match payment_version {
            Some(version) => c.and(Cond::version(version)),
            None => c,
        };
        match moves {
            Some(to) => {
                let sets = vec![Set::Add(REFUND_PENDING, -amount), Set::Add(to, amount), Set::Add(keys::VERSION, 1)];
                let c = read_version(Cond::Cmp(REFUND_PENDING, Op::Ge, n(amount)));
                self.push(Write::update_if(&payment_pk(payment_id), "PAY", sets, c));
            }
            // Nothing moves on the payment, but a version still guards the verdict.
            None if payment_version.is_some() => {
                self.push(Write::check(&payment_pk(payment_id), "PAY", read_version(Cond::Exists)));
            }
            None => {}
        }
        self
    }

    /// Records a payment; `AlreadyExists` if this PG transaction was recorded before.
    pub fn put_payment_new(&mut self, p: &PaymentRecord) -> &mut Self {
        self.put_new(payment_item(p))
    }

    /// Reserves `refund.amount` on its payment (only while that much is refundable) and records
    /// the refund as reserved (create-only), in this transaction — beside a subscription cancel,
    /// for a refund with `cancel_subscription`.
    pub fn reserve_refund(&mut self, refund: &RefundRecord) -> &mut Self {
        let amount = refund.amount.won();
        let sets = vec![Set::Add(REFUND_PENDING, amount), Set::Add(REFUNDABLE, -amount), Set::Add(keys::VERSION, 1)];
        self.push(Write::update_if(
            &payment_pk(&refund.payment_id),
            "PAY",
            sets,
            Cond::Cmp(REFUNDABLE, Op::Ge, n(amount)),
        ));
        self.put_new(refund_item(&RefundRecord { status: RefundStatus::Reserved, ..refund.clone() }))
    }
}

/// How a refund ended at the PG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded {
        pg_refund_id: Option<String>,
    },
    Failed(RefundFailure),
    /// Sent, no trustworthy answer: the reservation stays.
    Unknown,
}

impl Store {
    pub async fn get_payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        match self.get(&payment_pk(payment_id), "PAY").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Records one payment alone (first payments are usually recorded in a transaction with the
    /// subscription; this is for the rest).
    pub async fn create_payment(&self, p: &PaymentRecord) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.put_payment_new(p);
        self.commit(tx).await
    }

    /// A subscription's payments, oldest first.
    pub async fn payments_of_subscription(&self, id: &SubscriptionId) -> Result<Vec<PaymentRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.lookup_page(&format!("SUBPAY#{id}"), None, None, start).await?;
            out.extend(items);
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// Up to `limit` of a partner's payments paid in `window` that `filter` wants, oldest first
    /// (paid time, then id), from the `paid` index; continues after `start` (a page's `next`).
    /// A page may hold fewer than `limit` and still have a `next` when a filter dropped items.
    /// The index lags writes by a moment on DynamoDB (it is not read consistently).
    pub async fn payments_of_partner(
        &self,
        partner_id: &str,
        window: PaidWindow,
        filter: &PaymentFilter,
        limit: usize,
        start: Option<Item>,
    ) -> Result<PaymentPage, StoreError> {
        let mut page = PaymentPage { payments: Vec::new(), next: start };
        let mut q =
            Query::index(keys::PAID_INDEX, keys::PAID_PK, &paid_partition(partner_id)).filter(filter.condition());
        q.range = window.range().map(|r| (keys::PAID_SK, r));
        for read in 0..MAX_PAGE_READS {
            let want = limit.saturating_sub(page.payments.len());
            if want == 0 || (read > 0 && page.next.is_none()) {
                break;
            }
            // A read of `want` items at most: whatever it reads is returned or filtered out, so
            // its last key is exactly where the next page starts.
            let limit = i32::try_from(want).unwrap_or(i32::MAX);
            let (found, next) = self.query_records(&q.clone().limit(Some(limit)).start(page.next.take())).await?;
            page.payments.extend(found);
            page.next = next;
        }
        Ok(page)
    }

    /// Every refund of a payment.
    pub async fn refunds_of(&self, payment_id: &str) -> Result<Vec<RefundRecord>, StoreError> {
        self.items_with_prefix(&payment_pk(payment_id), "REF#").await
    }

    pub async fn get_refund(&self, payment_id: &str, refund_id: &str) -> Result<Option<RefundRecord>, StoreError> {
        match self.get(&payment_pk(payment_id), &format!("REF#{refund_id}")).await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Reserves `refund.amount` on its payment and records the refund, atomically. `Conflict` on
    /// the payment means there was not enough left to refund (re-read it to say how much).
    pub async fn reserve_refund(&self, refund: &RefundRecord) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.reserve_refund(refund);
        self.commit(tx).await
    }

    /// Settles a reserved (or unknown) refund: success moves the amount to `refunded`, failure
    /// releases it, unknown keeps it reserved. The refund's events go in the same transaction.
    pub async fn settle_refund(
        &self,
        refund: &RefundRecord,
        outcome: &RefundOutcome,
        events: &[super::outbox::OutboxEvent],
    ) -> Result<RefundRecord, StoreError> {
        let mut settled = self.settle_refunds(std::slice::from_ref(refund), outcome, None, events).await?;
        Ok(settled.remove(0))
    }

    /// Settles refunds of one payment with one outcome in one transaction. With
    /// `payment_version`, only if the payment is still at that version: a verdict drawn from reads
    /// of the payment (and the PG's total beside it) is written only while nothing else reserved
    /// or settled a refund of it meanwhile — else `Conflict` and nothing changes.
    pub async fn settle_refunds(
        &self,
        refunds: &[RefundRecord],
        outcome: &RefundOutcome,
        payment_version: Option<u64>,
        events: &[super::outbox::OutboxEvent],
    ) -> Result<Vec<RefundRecord>, StoreError> {
        let Some(first) = refunds.first() else { return Ok(Vec::new()) };
        let mut tx = self.tx();
        let mut settled = Vec::with_capacity(refunds.len());
        let mut total = Krw::ZERO;
        for refund in refunds {
            if refund.payment_id != first.payment_id {
                return Err(StoreError::Conflict(format!("refund {} is of another payment", refund.refund_id)));
            }
            let next = settled_refund(refund, outcome)?;
            tx.push(Write::put_if(refund_item(&next), Cond::eq("status", s(status_str(refund.status)))));
            total = total.checked_add(refund.amount).map_err(|e| StoreError::Conflict(e.to_string()))?;
            settled.push(next);
        }
        tx.settle_refund_amounts(&first.payment_id, outcome, total, payment_version);
        for e in events {
            tx.put_outbox(e);
        }
        self.commit(tx).await?;
        Ok(settled)
    }
}

/// `refund` after `outcome`, if its status may become that.
fn settled_refund(refund: &RefundRecord, outcome: &RefundOutcome) -> Result<RefundRecord, StoreError> {
    let mut next = refund.clone();
    match outcome {
        RefundOutcome::Succeeded { pg_refund_id } => {
            next.status = RefundStatus::Succeeded;
            next.pg_refund_id = pg_refund_id.clone();
        }
        RefundOutcome::Failed(failure) => {
            next.status = RefundStatus::Failed;
            next.failure_code = Some(failure.code().to_string());
            next.failure_message = Some(failure.message().to_string());
        }
        RefundOutcome::Unknown => next.status = RefundStatus::Unknown,
    }
    if !refund.status.can_become(next.status) {
        return Err(StoreError::Conflict(format!(
            "refund {} is {} and cannot become {}",
            refund.refund_id,
            status_str(refund.status),
            status_str(next.status)
        )));
    }
    Ok(next)
}
