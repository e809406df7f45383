//! What happened on one KST day, for reconciliation (DESIGN §13): the day's payments, charge
//! attempts and refunds, each found through an index entry derived from the item itself every
//! time it is written (`payment_item`, `attempt_item`, `refund_item`), so none can be missed or
//! drift. Each day is spread over [`DAY_SHARDS`] partitions so a busy day's writes do not
//! crowd one index partition.
//!
//! - payments: the due index (`due_shard = DAYPAY#{yyyymmdd}#{nn}`, `next_attempt_at` = paid
//!   at, epoch seconds; payments are never due for anything else);
//! - attempts: the lookup index (`lookup_pk = DAYATT#{yyyymmdd}#{nn}`, `lookup_sk` = charge id);
//! - refunds: the lookup index (`lookup_pk = DAYREF#{yyyymmdd}#{nn}`, `lookup_sk` = refund id).
//!
//! An attempt's day is that of its request (billing time), a refund's that of its request (wall
//! clock), a payment's that of `pay_date_kst` (when the PG approved it).

use paycycle_domain::attempt::Attempt;

use super::payments::{PaymentRecord, RefundRecord};
use super::{Item, Query, Store, StoreError, keys, sha256_hex};

/// Partitions per day of each kind.
pub const DAY_SHARDS: u32 = 8;

fn shard(id: &str) -> u32 {
    u32::from_str_radix(&sha256_hex(id.as_bytes())[..8], 16).unwrap_or(0) % DAY_SHARDS
}

pub(crate) fn payment_day(day: &str, payment_id: &str) -> String {
    format!("DAYPAY#{day}#{:02}", shard(payment_id))
}

pub(crate) fn attempt_day(day: &str, charge_id: &str) -> String {
    format!("DAYATT#{day}#{:02}", shard(charge_id))
}

pub(crate) fn refund_day(day: &str, refund_id: &str) -> String {
    format!("DAYREF#{day}#{:02}", shard(refund_id))
}

/// Whether `day` is a `YYYYMMDD` date (a partition name is built from it).
fn valid(day: &str) -> Result<(), StoreError> {
    if day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("{day:?} is not a YYYYMMDD day")))
    }
}

impl Store {
    /// Every payment the PG approved on KST day `day` (`YYYYMMDD`).
    pub async fn payments_of_day(&self, day: &str) -> Result<Vec<PaymentRecord>, StoreError> {
        valid(day)?;
        let mut out = Vec::new();
        for n in 0..DAY_SHARDS {
            let partition = format!("DAYPAY#{day}#{n:02}");
            let mut start: Option<Item> = None;
            loop {
                let q = Query::index(keys::DUE_INDEX, keys::DUE_SHARD, &partition).start(start.take());
                let (found, next) = self.query(&q).await?;
                for key in found {
                    let (pk, sk) = super::table::key_of(&key);
                    if let Some(item) = self.get(&pk, &sk).await? {
                        out.push(super::from_item(item)?);
                    }
                }
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Every charge attempt requested on KST day `day`.
    pub async fn attempts_of_day(&self, day: &str) -> Result<Vec<Attempt>, StoreError> {
        self.day_log("DAYATT", day).await
    }

    /// Every refund requested on KST day `day`.
    pub async fn refunds_of_day(&self, day: &str) -> Result<Vec<RefundRecord>, StoreError> {
        self.day_log("DAYREF", day).await
    }

    async fn day_log<T: serde::de::DeserializeOwned>(&self, kind: &str, day: &str) -> Result<Vec<T>, StoreError> {
        valid(day)?;
        let mut out = Vec::new();
        for n in 0..DAY_SHARDS {
            let partition = format!("{kind}#{day}#{n:02}");
            let mut start = None;
            loop {
                let (items, next) = self.lookup_page(&partition, None, None, start).await?;
                out.extend(items);
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

fn report_pk(day: &str) -> String {
    format!("RECON#{day}")
}

impl Store {
    /// Writes day `day`'s reconciliation report (a later run of the same day replaces it).
    pub async fn put_reconciliation(&self, day: &str, report: &serde_json::Value) -> Result<(), StoreError> {
        valid(day)?;
        let item = super::to_item(report, &report_pk(day), "REPORT", "reconciliation");
        self.write(super::Write::replace(item)).await
    }

    /// Day `day`'s reconciliation report, if it ran.
    pub async fn get_reconciliation(&self, day: &str) -> Result<Option<serde_json::Value>, StoreError> {
        valid(day)?;
        match self.get(&report_pk(day), "REPORT").await? {
            Some(item) => super::from_item(item).map(Some),
            None => Ok(None),
        }
    }
}
