//! Checkouts: a first payment being prepared. The expected amount is stored here so that verify
//! can compare what the PG reports against what we asked for (Payple's `PCD_PAY_TOTAL` tamper
//! check). Findable by the PG's reference (Payple OID, StepPay order code / idKey) through the
//! lookup index. Unfinished checkouts expire (TTL) — except one whose first charge was sent:
//! money may be at the PG, so it stays until it is resolved (completed or failed), and while it
//! is open it sits in the lookup index under [`FIRST_CHARGE_OPEN`] for verify's sweep.
//!
//! Items: `pk = CHK#{checkout_id}`, `sk = CHK`, `lookup_pk = PGREF#{pg}#{reference}` (or
//! `FIRST_CHARGE_OPEN`, `lookup_sk` = the latest send time, or the sweep's backoff if later); `pk = SUBCHK#{subscription_id}`, `sk = PTR`
//! naming the checkout that creates the subscription (a first charge's webhook names only it).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Cond, Item, Query, Range, Store, StoreError, Tx, Write, from_item, keys, n, s, sort_seconds, to_item};
use paycycle_domain::attempt::SubscriptionId;
use paycycle_domain::customer::Customer;
use paycycle_domain::gateway::PgMode;
use paycycle_domain::subscription::Plan;

/// How long an unfinished checkout is kept.
pub const CHECKOUT_RETENTION: SignedDuration = SignedDuration::from_hours(7 * 24);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutStatus {
    Open,
    Completed,
    Failed,
}

/// What a checkout is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutPurpose {
    /// The first payment, which starts a new subscription.
    #[default]
    Subscribe,
    /// A new card for a live subscription (`POST /subscriptions/{id}/payment-method`): the PG
    /// registers it without a charge, and verify swaps the subscription's billing key.
    PaymentMethod,
}

impl CheckoutPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutPurpose::Subscribe => "subscribe",
            CheckoutPurpose::PaymentMethod => "payment_method",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRecord {
    pub checkout_id: String,
    /// The partner (tenant) whose API key created it.
    #[serde(default = "super::payments::default_partner")]
    pub partner_id: String,
    pub pg: PgMode,
    pub customer: Customer,
    pub plan: Plan,
    pub status: CheckoutStatus,
    /// The PG's reference for this checkout (Payple `PCD_PAY_OID`, StepPay `orderCode`).
    pub pg_reference: Option<String>,
    pub subscription_id: SubscriptionId,
    pub created_at: Timestamp,
    pub failure: Option<String>,
    pub version: u64,
    /// Payple window work (`PAY`, `CERT`, `AUTH`).
    #[serde(default)]
    pub work: Option<String>,
    /// Where the PG sends the customer back (Payple `PCD_RST_URL`, StepPay successUrl).
    #[serde(default)]
    pub return_url: Option<String>,
    /// Epoch seconds until which one verify holds this checkout (0 = nobody).
    #[serde(default)]
    pub verifying_until: i64,
    /// Payple AUTH / CERT: when the checkout's own payment (AUTH's first charge on the new
    /// billing key, CERT's confirm) was first sent (its lookup needs the date; a retry looks it
    /// up before sending again).
    #[serde(default)]
    pub first_charge_at: Option<Timestamp>,
    /// When that payment was last sent again (a re-verify that found nothing re-sends it): the
    /// lookups try this KST date too, and "not found an hour after it was sent" counts from it.
    #[serde(default)]
    pub last_sent_at: Option<Timestamp>,
    /// verify's sweep looks at this open payment again no earlier than this (backoff for one
    /// it could not resolve, so a few stuck ones never starve the rest).
    #[serde(default)]
    pub sweep_after: Option<Timestamp>,
    /// The first payment, once completed.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// Payple `PCD_PAYER_NO` given to this checkout's window: a billing key is charged only
    /// when Payple confirms it for this number.
    #[serde(default)]
    pub payer_no: Option<String>,
    /// What it is for; a checkout stored before card changes existed starts a subscription.
    #[serde(default)]
    pub purpose: CheckoutPurpose,
}

impl CheckoutRecord {
    /// The record for the next write (version + 1).
    pub fn next(&self) -> CheckoutRecord {
        CheckoutRecord { version: self.version + 1, ..self.clone() }
    }

    /// The latest time the checkout's own payment was sent (first send or re-send), if ever.
    pub fn latest_send(&self) -> Option<Timestamp> {
        self.last_sent_at.or(self.first_charge_at)
    }
}

/// Lookup partition of open checkouts whose first charge was sent (few at any time: a first
/// charge is resolved within seconds unless an answer was lost).
pub const FIRST_CHARGE_OPEN: &str = "FIRSTCHARGE#open";

fn item(c: &CheckoutRecord) -> Item {
    let mut item = to_item(c, &format!("CHK#{}", c.checkout_id), "CHK", "checkout");
    match (c.status, c.latest_send(), &c.pg_reference) {
        (CheckoutStatus::Open, Some(sent), _) => {
            let due = c.sweep_after.map_or(sent, |after| after.max(sent));
            item.insert(keys::LOOKUP_PK.into(), s(FIRST_CHARGE_OPEN));
            item.insert(keys::LOOKUP_SK.into(), s(&sort_seconds(due)));
        }
        (_, _, Some(reference)) => {
            item.insert(keys::LOOKUP_PK.into(), s(&format!("PGREF#{}#{reference}", c.pg.pg())));
            item.insert(keys::LOOKUP_SK.into(), s("CHK"));
        }
        _ => {}
    }
    if c.status == CheckoutStatus::Open && c.first_charge_at.is_none() {
        let expires = c.created_at.saturating_add(CHECKOUT_RETENTION).unwrap_or(c.created_at);
        item.insert(keys::EXPIRES_AT.into(), n(expires.as_second()));
    }
    item
}

impl Tx {
    /// Moves a checkout on (e.g. to completed, in the transaction that activates its subscription).
    pub fn put_checkout_next(&mut self, next: &CheckoutRecord) -> &mut Self {
        self.push(Write::put_if(item(next), Cond::version(next.version - 1)))
    }
}

impl Store {
    pub async fn create_checkout(&self, c: &CheckoutRecord) -> Result<(), StoreError> {
        let mut pointer = Item::new();
        pointer.insert(keys::PK.into(), s(&format!("SUBCHK#{}", c.subscription_id.as_str())));
        pointer.insert(keys::SK.into(), s("PTR"));
        pointer.insert(keys::ENTITY.into(), s("checkout_pointer"));
        pointer.insert("checkout_id".into(), s(&c.checkout_id));
        let expires = c.created_at.saturating_add(CHECKOUT_RETENTION).unwrap_or(c.created_at);
        pointer.insert(keys::EXPIRES_AT.into(), n(expires.as_second()));
        let mut tx = self.tx();
        tx.put_new(item(c));
        // Only the checkout that creates the subscription is named by it; a card change's is not.
        if c.purpose == CheckoutPurpose::Subscribe {
            tx.put_new(pointer);
        }
        self.commit(tx).await
    }

    /// The checkout that creates subscription `id` (for the webhook of its first charge).
    pub async fn checkout_of_subscription(&self, id: &SubscriptionId) -> Result<Option<CheckoutRecord>, StoreError> {
        let Some(pointer) = self.get(&format!("SUBCHK#{}", id.as_str()), "PTR").await? else { return Ok(None) };
        let checkout_id = pointer.get("checkout_id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        self.get_checkout(&checkout_id).await
    }

    /// Open checkouts whose own payment was sent (and whose sweep backoff ended) before `before`
    /// (oldest first, one page).
    pub async fn open_first_charges(&self, before: Timestamp, limit: i32) -> Result<Vec<CheckoutRecord>, StoreError> {
        let q = Query::index(keys::LOOKUP_INDEX, keys::LOOKUP_PK, FIRST_CHARGE_OPEN)
            .range(keys::LOOKUP_SK, Range::AtMost(s(&sort_seconds(before))))
            .limit(Some(limit));
        Ok(self.query_records(&q).await?.0)
    }

    /// Writes the next version of a checkout on its own (claims, failures).
    pub async fn update_checkout(&self, next: &CheckoutRecord) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.put_checkout_next(next);
        self.commit(tx).await
    }

    pub async fn get_checkout(&self, checkout_id: &str) -> Result<Option<CheckoutRecord>, StoreError> {
        match self.get(&format!("CHK#{checkout_id}"), "CHK").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// The checkout with this PG reference (eventually consistent: the index lags writes briefly).
    pub async fn checkout_by_pg_reference(
        &self,
        pg: PgMode,
        reference: &str,
    ) -> Result<Option<CheckoutRecord>, StoreError> {
        let reference_key = format!("PGREF#{}#{reference}", pg.pg());
        let (items, _) = self.lookup_page::<CheckoutRecord>(&reference_key, None, Some(2), None).await?;
        let mut items = items.into_iter();
        match (items.next(), items.next()) {
            (None, _) => Ok(None),
            (Some(one), None) => Ok(Some(one)),
            _ => {
                Err(StoreError::Corrupt { key: reference_key, message: "two checkouts share one PG reference".into() })
            }
        }
    }
}
