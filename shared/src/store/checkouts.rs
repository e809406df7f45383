//! Checkouts: a first payment being prepared. The expected amount is stored here so that verify
//! can compare what the PG reports against what we asked for (Payple's `PCD_PAY_TOTAL` tamper
//! check). Findable by the PG's reference (Payple OID, StepPay order code / idKey) through the
//! lookup index. Unfinished checkouts expire (TTL).
//!
//! Item: `pk = CHK#{checkout_id}`, `sk = CHK`, `lookup_pk = PGREF#{pg}#{reference}`.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Condition, Item, Store, StoreError, Tx, from_item, keys, n, s, to_item};
use crate::domain::attempt::SubscriptionId;
use crate::domain::customer::{Customer, PgMode};
use crate::domain::subscription::Plan;

/// How long an unfinished checkout is kept.
pub const CHECKOUT_RETENTION: SignedDuration = SignedDuration::from_hours(7 * 24);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutStatus {
    Open,
    Completed,
    Failed,
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
    /// Payple AUTH: when the first charge on the new billing key was sent (its lookup needs the
    /// date; a retry looks it up before charging again).
    #[serde(default)]
    pub first_charge_at: Option<Timestamp>,
    /// The first payment, once completed.
    #[serde(default)]
    pub payment_id: Option<String>,
}

impl CheckoutRecord {
    /// The record for the next write (version + 1).
    pub fn next(&self) -> CheckoutRecord {
        CheckoutRecord { version: self.version + 1, ..self.clone() }
    }
}

fn item(c: &CheckoutRecord) -> Item {
    let mut item = to_item(c, &format!("CHK#{}", c.checkout_id), "CHK", "checkout");
    if let Some(reference) = &c.pg_reference {
        item.insert(keys::LOOKUP_PK.into(), s(&format!("PGREF#{}#{reference}", c.pg.pg())));
        item.insert(keys::LOOKUP_SK.into(), s("CHK"));
    }
    if c.status == CheckoutStatus::Open {
        let expires = c.created_at.saturating_add(CHECKOUT_RETENTION).unwrap_or(c.created_at);
        item.insert(keys::EXPIRES_AT.into(), n(expires.as_second()));
    }
    item
}

impl Tx {
    /// Moves a checkout on (e.g. to completed, in the transaction that activates its subscription).
    pub fn put_checkout_next(&mut self, next: &CheckoutRecord) -> &mut Self {
        self.put_if(item(next), Condition::version(next.version - 1))
    }
}

impl Store {
    pub async fn create_checkout(&self, c: &CheckoutRecord) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.put_new(item(c));
        self.commit(tx).await
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
