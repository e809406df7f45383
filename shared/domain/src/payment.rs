//! Payment amounts and refund reservations (DESIGN §6): never refund more than was paid.
//!
//! A payment holds `paid`, `refunded` and `refund_pending`; `refundable = paid - refunded -
//! refund_pending`, never negative. A refund first **reserves** its amount (the store does this
//! as one conditional update on these same numbers, so fifty concurrent refunds cannot all pass),
//! then calls the PG: success moves the amount from pending to refunded, a decline releases it,
//! and an unknown outcome keeps it reserved until a lookup says which.

use serde::{Deserialize, Serialize};

use crate::money::{Krw, MoneyError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAmounts {
    pub paid: Krw,
    pub refunded: Krw,
    pub refund_pending: Krw,
}

/// Why a refund failed: nothing was refunded and its reservation was given back. Stored as a code
/// and a message (`failure_code`, `failure_message`); [`RefundFailure::code`] is the one spelling
/// of each kind, and [`RefundFailure::from_stored`] reads every code ever stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundFailure {
    /// The PG could not be reached (connection refused, partner auth refused): it never got the
    /// refund.
    NotSent { reason: String },
    /// The PG declined the refund, with its own code (e.g. Payple `PAYC0001`).
    Declined { code: String, message: String },
    /// The PG refused the request for another reason (configuration, a request it calls invalid).
    Refused { message: String },
    /// The PG's own record shows no such refund, long enough after it was asked for.
    NotAtPg,
}

impl RefundFailure {
    pub const NOT_SENT: &str = "refund_not_sent";
    /// What [`RefundFailure::NotSent`] was stored as before it had its own code.
    const NOT_SENT_BEFORE: &str = "pg_unavailable";
    pub const REFUSED: &str = "pg_refused";
    pub const NOT_AT_PG: &str = "not_refunded";

    /// The stored code: the PG's own for a decline, ours otherwise.
    pub fn code(&self) -> &str {
        match self {
            RefundFailure::NotSent { .. } => Self::NOT_SENT,
            RefundFailure::Declined { code, .. } => code,
            RefundFailure::Refused { .. } => Self::REFUSED,
            RefundFailure::NotAtPg => Self::NOT_AT_PG,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            RefundFailure::NotSent { reason } => reason,
            RefundFailure::Declined { message, .. } | RefundFailure::Refused { message } => message,
            RefundFailure::NotAtPg => "the PG shows no such refund",
        }
    }

    /// Reads a stored code and message back. Any code that is not one of ours is the PG's decline.
    pub fn from_stored(code: &str, message: &str) -> RefundFailure {
        match code {
            Self::NOT_SENT | Self::NOT_SENT_BEFORE => RefundFailure::NotSent { reason: message.to_string() },
            Self::REFUSED => RefundFailure::Refused { message: message.to_string() },
            Self::NOT_AT_PG => RefundFailure::NotAtPg,
            _ => RefundFailure::Declined { code: code.to_string(), message: message.to_string() },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("refund amount must be more than 0원")]
    ZeroAmount,
    #[error("refund of {requested} exceeds the refundable {refundable}")]
    ExceedsRefundable { requested: Krw, refundable: Krw },
    #[error("nothing is left to refund")]
    NothingRefundable,
    #[error("{amount} is not reserved (pending {pending})")]
    NotReserved { amount: Krw, pending: Krw },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl PaymentAmounts {
    pub fn new(paid: Krw) -> Self {
        Self { paid, refunded: Krw::ZERO, refund_pending: Krw::ZERO }
    }

    /// What can still be refunded. The invariant `refunded + pending <= paid` holds for every value
    /// built through these methods; a value read from storage that breaks it reports 0.
    pub fn refundable(&self) -> Krw {
        self.refunded
            .checked_add(self.refund_pending)
            .and_then(|committed| self.paid.checked_sub(committed))
            .unwrap_or(Krw::ZERO)
    }

    /// Resolves "no amount given" to everything refundable.
    pub fn requested_or_all(&self, requested: Option<Krw>) -> Result<Krw, RefundError> {
        match requested {
            Some(amount) if amount.is_zero() => Err(RefundError::ZeroAmount),
            Some(amount) => Ok(amount),
            None if self.refundable().is_zero() => Err(RefundError::NothingRefundable),
            None => Ok(self.refundable()),
        }
    }

    /// Reserves `amount` if it fits in what is refundable.
    pub fn reserve(&self, amount: Krw) -> Result<Self, RefundError> {
        if amount.is_zero() {
            return Err(RefundError::ZeroAmount);
        }
        let refundable = self.refundable();
        if amount > refundable {
            return Err(RefundError::ExceedsRefundable { requested: amount, refundable });
        }
        Ok(Self { refund_pending: self.refund_pending.checked_add(amount)?, ..*self })
    }

    /// The PG refunded `amount`: pending → refunded.
    pub fn confirm(&self, amount: Krw) -> Result<Self, RefundError> {
        let pending = self
            .refund_pending
            .checked_sub(amount)
            .map_err(|_| RefundError::NotReserved { amount, pending: self.refund_pending })?;
        Ok(Self { refund_pending: pending, refunded: self.refunded.checked_add(amount)?, ..*self })
    }

    /// The PG declined: the reservation is released.
    pub fn release(&self, amount: Krw) -> Result<Self, RefundError> {
        let pending = self
            .refund_pending
            .checked_sub(amount)
            .map_err(|_| RefundError::NotReserved { amount, pending: self.refund_pending })?;
        Ok(Self { refund_pending: pending, ..*self })
    }

    /// Whether this refund would leave nothing refunded-able (a full refund).
    pub fn is_fully_refunded(&self) -> bool {
        self.refunded == self.paid
    }
}

/// Where a refund stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Amount reserved; the PG call is about to happen or in flight.
    Reserved,
    Succeeded,
    Failed,
    /// Sent, no trustworthy answer: stays reserved until a lookup resolves it.
    Unknown,
}

impl RefundStatus {
    /// Reserved → any; unknown → succeeded/failed; succeeded and failed are final.
    pub fn can_become(self, next: RefundStatus) -> bool {
        use RefundStatus::*;
        matches!((self, next), (Reserved, Succeeded | Failed | Unknown) | (Unknown, Succeeded | Failed))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_refund_failure_reads_back_as_stored() {
        let kinds = [
            RefundFailure::NotSent { reason: "connection refused".into() },
            RefundFailure::Declined { code: "PAYC0001".into(), message: "이미 취소된 거래".into() },
            RefundFailure::Refused { message: "invalid request".into() },
            RefundFailure::NotAtPg,
        ];
        for kind in kinds {
            assert_eq!(RefundFailure::from_stored(kind.code(), kind.message()), kind);
        }
        assert_eq!(
            RefundFailure::from_stored("pg_unavailable", "timeout"),
            RefundFailure::NotSent { reason: "timeout".into() },
            "records from before refund_not_sent are still read as not sent"
        );
    }

    fn krw(n: i64) -> Krw {
        Krw::new(n).unwrap()
    }

    #[test]
    fn reserve_confirm_release() {
        let p = PaymentAmounts::new(krw(10_000));
        let p = p.reserve(krw(3_000)).unwrap();
        assert_eq!(p.refundable(), krw(7_000));
        assert_eq!(
            p.reserve(krw(7_001)),
            Err(RefundError::ExceedsRefundable { requested: krw(7_001), refundable: krw(7_000) })
        );
        let p = p.reserve(krw(7_000)).unwrap();
        assert_eq!(p.refundable(), Krw::ZERO);
        let p = p.confirm(krw(3_000)).unwrap();
        let p = p.release(krw(7_000)).unwrap();
        assert_eq!(p, PaymentAmounts { paid: krw(10_000), refunded: krw(3_000), refund_pending: Krw::ZERO });
        assert_eq!(p.refundable(), krw(7_000));
        assert!(p.confirm(krw(1)).is_err(), "nothing pending");
        assert_eq!(p.reserve(Krw::ZERO), Err(RefundError::ZeroAmount));
    }

    #[test]
    fn no_amount_means_all_that_is_refundable() {
        let p = PaymentAmounts::new(krw(9_900)).reserve(krw(900)).unwrap();
        assert_eq!(p.requested_or_all(None), Ok(krw(9_000)));
        assert_eq!(p.requested_or_all(Some(krw(5))), Ok(krw(5)));
        assert_eq!(p.requested_or_all(Some(Krw::ZERO)), Err(RefundError::ZeroAmount));
        let done = PaymentAmounts::new(krw(100)).reserve(krw(100)).unwrap().confirm(krw(100)).unwrap();
        assert!(done.is_fully_refunded());
        assert_eq!(done.requested_or_all(None), Err(RefundError::NothingRefundable));
    }

    #[test]
    fn refund_status_transitions() {
        use RefundStatus::*;
        let all = [Reserved, Succeeded, Failed, Unknown];
        let legal: Vec<_> =
            all.iter().flat_map(|a| all.iter().map(move |b| (*a, *b))).filter(|(a, b)| a.can_become(*b)).collect();
        assert_eq!(
            legal,
            [(Reserved, Succeeded), (Reserved, Failed), (Reserved, Unknown), (Unknown, Succeeded), (Unknown, Failed)]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(i64),
        Confirm(usize),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..5_000).prop_map(Op::Reserve),
            (0usize..8).prop_map(Op::Confirm),
            (0usize..8).prop_map(Op::Release)
        ]
    }

    proptest! {
        /// Any sequence of reservations, confirmations and releases keeps refunded + pending ≤ paid,
        /// refundable never negative, and refunded equal to the confirmed reservations.
        #[test]
        fn refundable_is_never_negative_and_never_over_refunds(paid in 1i64..20_000, ops in proptest::collection::vec(op(), 0..40)) {
            let mut p = PaymentAmounts::new(krw(paid));
            let mut open: Vec<Krw> = Vec::new();
            let mut confirmed = Krw::ZERO;
            for op in ops {
                match op {
                    Op::Reserve(n) => {
                        let before = p.refundable();
                        match p.reserve(krw(n)) {
                            Ok(next) => { prop_assert!(krw(n) <= before); p = next; open.push(krw(n)); }
                            Err(_) => prop_assert!(krw(n) > before),
                        }
                    }
                    Op::Confirm(i) if !open.is_empty() => {
                        let amount = open.remove(i % open.len());
                        p = p.confirm(amount).unwrap();
                        confirmed = confirmed.checked_add(amount).unwrap();
                    }
                    Op::Release(i) if !open.is_empty() => {
                        let amount = open.remove(i % open.len());
                        p = p.release(amount).unwrap();
                    }
                    _ => {}
                }
                let committed = p.refunded.checked_add(p.refund_pending).unwrap();
                prop_assert!(committed <= p.paid);
                prop_assert_eq!(p.refundable(), p.paid.checked_sub(committed).unwrap());
                prop_assert_eq!(p.refunded, confirmed);
            }
        }
    }
}
