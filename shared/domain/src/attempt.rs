//! Charge attempts and their deterministic ids.
//!
//! A [`ChargeId`] is derived from subscription + period + attempt number, so a crashed or repeated
//! renew computes the same id again. It is sent as Payple's `PCD_PAY_OID` and StepPay's
//! `partnerOrderId`, so the PG also rejects a second charge with the same id (Payple answers
//! `SPCD0014` for a duplicate OID). Format: `{subscription_id}-p{period}-a{attempt}`, e.g.
//! `sub_7Hq2x9Lm-p12-a1`.
//!
//! Limits: Payple's `PCD_PAY_OID` takes up to 255 characters (card manual); StepPay does not
//! publish a limit for `partnerOrderId` (unconfirmed), so ids stay within 64 characters of
//! `[A-Za-z0-9_-]`, which any order-number field accepts.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::money::Krw;

/// Longest subscription id: keeps every charge id ≤ [`ChargeId::MAX_LEN`].
pub const MAX_SUBSCRIPTION_ID_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("subscription id must be `sub_` followed by 1-36 letters or digits")]
    BadSubscriptionId,
    #[error("not a paycycle charge id: {0:?}")]
    BadChargeId(String),
    #[error("attempt number must be 1..=99")]
    BadAttemptNumber,
}

/// `sub_` + letters/digits, ≤ 40 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriptionId(String);

impl SubscriptionId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix("sub_").ok_or(IdError::BadSubscriptionId)?;
        if rest.is_empty() || s.len() > MAX_SUBSCRIPTION_ID_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(IdError::BadSubscriptionId);
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubscriptionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SubscriptionId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SubscriptionId> for String {
    fn from(id: SubscriptionId) -> Self {
        id.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one charge attempt: subscription, period index, attempt number (1 = first try).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChargeId {
    subscription: SubscriptionId,
    period: u32,
    attempt: u8,
}

impl ChargeId {
    pub const MAX_LEN: usize = 64;

    pub fn new(subscription: SubscriptionId, period: u32, attempt: u8) -> Result<Self, IdError> {
        if !(1..=99).contains(&attempt) {
            return Err(IdError::BadAttemptNumber);
        }
        Ok(Self { subscription, period, attempt })
    }

    pub fn subscription(&self) -> &SubscriptionId {
        &self.subscription
    }

    pub fn period(&self) -> u32 {
        self.period
    }

    pub fn attempt(&self) -> u8 {
        self.attempt
    }

    /// The next attempt for the same period (a dunning retry).
    pub fn next_attempt(&self) -> Result<Self, IdError> {
        Self::new(self.subscription.clone(), self.period, self.attempt.checked_add(1).ok_or(IdError::BadAttemptNumber)?)
    }
}

impl fmt::Display for ChargeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-p{}-a{}", self.subscription, self.period, self.attempt)
    }
}

impl FromStr for ChargeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::BadChargeId(s.chars().take(80).collect());
        let (rest, attempt) = s.rsplit_once("-a").ok_or_else(bad)?;
        let (sub, period) = rest.rsplit_once("-p").ok_or_else(bad)?;
        let digits =
            |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (d == "0" || !d.starts_with('0'));
        if !digits(period) || !digits(attempt) {
            return Err(bad());
        }
        let id = ChargeId::new(
            SubscriptionId::parse(sub).map_err(|_| bad())?,
            period.parse().map_err(|_| bad())?,
            attempt.parse().map_err(|_| bad())?,
        )
        .map_err(|_| bad())?;
        Ok(id)
    }
}

impl TryFrom<String> for ChargeId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ChargeId> for String {
    fn from(id: ChargeId) -> Self {
        id.to_string()
    }
}

/// Where a charge attempt stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Recorded, about to be (or being) sent to the PG.
    Pending,
    /// The PG approved it; `pg_payment_id` is StepPay's idKey or Payple's OID/trade number.
    Approved { pg_payment_id: String, approved_at: Timestamp },
    /// The PG declined it. `hard` declines (deleted billing key, stolen card) stop dunning.
    Declined { code: String, message: String, hard: bool },
    /// Sent, but no answer we can trust (timeout, 5xx, dropped connection). Never retried blind:
    /// resolved by lookup or webhook first.
    Unknown { since: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt {charge_id}: cannot go from {from} to {to}")]
pub struct AttemptTransitionError {
    pub charge_id: String,
    pub from: &'static str,
    pub to: &'static str,
}

/// Which [`AttemptStatus`] an attempt is in, without its details: what a conditional write
/// expects to find stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptStatusKind {
    Pending,
    Approved,
    Declined,
    Unknown,
}

impl AttemptStatusKind {
    /// The stored `status` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatusKind::Pending => "pending",
            AttemptStatusKind::Approved => "approved",
            AttemptStatusKind::Declined => "declined",
            AttemptStatusKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for AttemptStatusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AttemptStatus {
    pub fn kind(&self) -> AttemptStatusKind {
        match self {
            AttemptStatus::Pending => AttemptStatusKind::Pending,
            AttemptStatus::Approved { .. } => AttemptStatusKind::Approved,
            AttemptStatus::Declined { .. } => AttemptStatusKind::Declined,
            AttemptStatus::Unknown { .. } => AttemptStatusKind::Unknown,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    pub fn is_final(&self) -> bool {
        matches!(self, AttemptStatus::Approved { .. } | AttemptStatus::Declined { .. })
    }
}

/// One charge attempt for one period of one subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub charge_id: ChargeId,
    pub amount: Krw,
    pub requested_at: Timestamp,
    #[serde(flatten)]
    pub status: AttemptStatus,
    /// What the PG needs to find this charge again: the PG adapter's reference data.
    #[serde(flatten)]
    pub pg: PgTrace,
    /// A person's resolution, when one settled it (DESIGN §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<crate::review::Resolution>,
}

/// The PG adapter's reference data for finding a charge again (`paycycle_pg::trace` writes and
/// reads it; the store keeps it with the attempt, its attributes at the item's top level). The
/// domain carries it and never reads it: no rule here depends on a PG.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgTrace {
    /// `YYYYMMDD` in KST of the moment the request was (last) sent: Payple's result lookup needs
    /// the date the PG received it. Empty until the charge is first sent.
    #[serde(default)]
    pub request_date_kst: String,
    /// The KST dates it was sent on before the latest (a charge re-sent on another day): the PG
    /// may know it under any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_request_dates_kst: Vec<String>,
    /// The PG's payment id for this charge, when a verified webhook named it (StepPay has no
    /// lookup by our charge id; its PAYMENT webhook gives the idKey).
    #[serde(default)]
    pub pg_payment_hint: Option<String>,
}

impl Attempt {
    pub fn new(charge_id: ChargeId, amount: Krw, requested_at: Timestamp) -> Self {
        Self {
            charge_id,
            amount,
            requested_at,
            status: AttemptStatus::Pending,
            pg: PgTrace::default(),
            resolution: None,
        }
    }

    /// Moves to `next`: pending → any outcome; unknown → approved/declined (after a lookup);
    /// final outcomes never change.
    pub fn resolve(&self, next: AttemptStatus) -> Result<Attempt, AttemptTransitionError> {
        let legal = match (&self.status, &next) {
            (AttemptStatus::Pending, AttemptStatus::Pending) => false,
            (AttemptStatus::Pending, _) => true,
            (AttemptStatus::Unknown { .. }, AttemptStatus::Approved { .. } | AttemptStatus::Declined { .. }) => true,
            _ => false,
        };
        if !legal {
            return Err(AttemptTransitionError {
                charge_id: self.charge_id.to_string(),
                from: self.status.name(),
                to: next.name(),
            });
        }
        Ok(Attempt { status: next, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sub(s: &str) -> SubscriptionId {
        SubscriptionId::parse(s).unwrap()
    }

    #[test]
    fn charge_id_is_deterministic_and_parses_back() {
        let a = ChargeId::new(sub("sub_7Hq2x9Lm"), 12, 1).unwrap();
        assert_eq!(a.to_string(), "sub_7Hq2x9Lm-p12-a1");
        assert_eq!(a, ChargeId::new(sub("sub_7Hq2x9Lm"), 12, 1).unwrap());
        assert_eq!("sub_7Hq2x9Lm-p12-a1".parse::<ChargeId>().unwrap(), a);
        assert_eq!(a.next_attempt().unwrap().to_string(), "sub_7Hq2x9Lm-p12-a2");
        assert_eq!(serde_json::to_value(&a).unwrap(), "sub_7Hq2x9Lm-p12-a1");
    }

    #[test]
    fn bad_ids_are_rejected() {
        for s in ["sub_", "sub-x", "cus_abc", "sub_a b", "sub_한글", &format!("sub_{}", "a".repeat(37))] {
            assert!(SubscriptionId::parse(s).is_err(), "{s}");
        }
        for s in ["sub_a-p1", "sub_a-a1", "sub_a-p01-a1", "sub_a-p1-a0", "sub_a-p1-a100", "sub_a-px-a1", "x-p1-a1", ""]
        {
            assert!(s.parse::<ChargeId>().is_err(), "{s}");
        }
        assert_eq!(ChargeId::new(sub("sub_a"), 0, 0), Err(IdError::BadAttemptNumber));
    }

    #[test]
    fn the_pg_trace_is_stored_at_the_top_level_as_before_it_was_grouped() {
        // An attempt item as it was stored before `PgTrace`: its fields at the top level.
        let stored = serde_json::json!({
            "charge_id": "sub_a-p1-a1", "amount": 9900, "requested_at": "2027-02-28T01:00:00Z",
            "status": "unknown", "since": "2027-02-28T01:00:05Z",
            "request_date_kst": "20270301", "earlier_request_dates_kst": ["20270228"], "pg_payment_hint": "idkey-1"
        });
        let a: Attempt = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(a.pg.request_date_kst, "20270301");
        assert_eq!(a.pg.earlier_request_dates_kst, ["20270228"]);
        assert_eq!(a.pg.pg_payment_hint.as_deref(), Some("idkey-1"));
        assert!(matches!(a.status, AttemptStatus::Unknown { .. }));
        let again = serde_json::to_value(&a).unwrap();
        for field in ["request_date_kst", "earlier_request_dates_kst", "pg_payment_hint", "status"] {
            assert_eq!(again[field], stored[field], "{field} stays where the store's conditions read it");
        }
    }

    #[test]
    fn attempt_transitions() {
        let at: Timestamp = "2027-02-28T00:00:00Z".parse().unwrap();
        let a = Attempt::new(ChargeId::new(sub("sub_a"), 1, 1).unwrap(), Krw::new(9900).unwrap(), at);
        let unknown = a.resolve(AttemptStatus::Unknown { since: at }).unwrap();
        let approved = AttemptStatus::Approved { pg_payment_id: "oid".into(), approved_at: at };
        let declined = AttemptStatus::Declined { code: "SPCD0001".into(), message: "x".into(), hard: false };
        assert!(unknown.resolve(approved.clone()).is_ok());
        assert!(unknown.resolve(declined.clone()).is_ok());
        assert!(unknown.resolve(AttemptStatus::Pending).is_err());
        assert!(unknown.resolve(AttemptStatus::Unknown { since: at }).is_err());
        let done = a.resolve(approved.clone()).unwrap();
        for next in [AttemptStatus::Pending, approved, declined, AttemptStatus::Unknown { since: at }] {
            assert!(done.resolve(next).is_err(), "approved is final");
        }
        assert!(a.resolve(AttemptStatus::Pending).is_err());
    }

    proptest! {
        #[test]
        fn every_charge_id_fits_both_pgs(rest in "[A-Za-z0-9]{1,36}", period in any::<u32>(), attempt in 1u8..=99) {
            let id = ChargeId::new(SubscriptionId::parse(&format!("sub_{rest}")).unwrap(), period, attempt).unwrap();
            let s = id.to_string();
            prop_assert!(s.len() <= ChargeId::MAX_LEN, "{} is {} chars", s, s.len());
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            prop_assert_eq!(s.parse::<ChargeId>().unwrap(), id);
        }
    }
}
