//! Money: integer Korean won. There is no minor unit in KRW and no float anywhere near an amount.
//!
//! [`Krw`] is never negative (a debt or a credit is a direction in the type that holds it, not a
//! sign), arithmetic is checked (an overflow is an error, never a wrap), and JSON carries amounts as
//! integers only: `9900` parses, `9900.0`, `"9900"`, `-1` and `1e4` do not. A PG that writes its
//! amounts as decimals (StepPay: `10000.0`) is read with [`Krw::parse_pg_decimal`], exactly.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of Korean won, `0 ..= i64::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Krw(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative (got {0})")]
    Negative(i128),
    #[error("amount must be more than 0원")]
    Zero,
    #[error("amount is too large (max {max}원)", max = i64::MAX)]
    TooLarge,
    #[error("amount must be an integer number of won")]
    NotAnInteger,
    #[error("amount {amount}원 would go below zero by subtracting {subtrahend}원")]
    Underflow { amount: i64, subtrahend: i64 },
}

impl Krw {
    pub const ZERO: Krw = Krw(0);

    /// Any non-negative amount, zero included (a refunded total, a balance).
    pub fn new(won: i64) -> Result<Self, MoneyError> {
        if won < 0 { Err(MoneyError::Negative(won.into())) } else { Ok(Self(won)) }
    }

    /// A strictly positive amount (a price, a charge, a refund request).
    pub fn positive(won: i64) -> Result<Self, MoneyError> {
        match Self::new(won)? {
            Krw(0) => Err(MoneyError::Zero),
            k => Ok(k),
        }
    }

    /// Rejects zero on an already-valid amount.
    pub fn require_positive(self) -> Result<Self, MoneyError> {
        if self.0 == 0 { Err(MoneyError::Zero) } else { Ok(self) }
    }

    pub fn won(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Krw) -> Result<Krw, MoneyError> {
        self.0.checked_add(other.0).map(Krw).ok_or(MoneyError::TooLarge)
    }

    /// `self - other`, an error if it would be negative.
    pub fn checked_sub(self, other: Krw) -> Result<Krw, MoneyError> {
        if other.0 > self.0 {
            return Err(MoneyError::Underflow { amount: self.0, subtrahend: other.0 });
        }
        Ok(Krw(self.0 - other.0))
    }

    /// `self × n` (e.g. quantity), an error on overflow.
    pub fn checked_mul(self, n: u32) -> Result<Krw, MoneyError> {
        self.0.checked_mul(n.into()).map(Krw).ok_or(MoneyError::TooLarge)
    }

    /// Parses a decimal integer string as PGs send it (`"9900"`): no sign, separators or decimals.
    pub fn parse_decimal(s: &str) -> Result<Krw, MoneyError> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('-') {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MoneyError::Negative(rest.parse::<i128>().map(|v| -v).unwrap_or(i128::MIN)));
            }
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::NotAnInteger);
        }
        t.parse::<i64>().map(Krw).map_err(|_| MoneyError::TooLarge)
    }

    /// Parses a PG amount written as a decimal (`"10000.0"`, `"0.0"`: StepPay's amounts are
    /// `number`/`Decimal` and its own examples write them so — step-api-spec `service/payment.json`,
    /// dev-docs `08-1-2_Webhook-Schema.md`) or as a plain integer. Exact: a whole number of won with
    /// an all-zero fraction is accepted; any fraction is `NotAnInteger` (KRW has no minor unit, so
    /// `10000.5` is no amount we could have charged); exponents, signs and separators are refused.
    /// A decimal at or beyond 2^53 is `TooLarge`: where a float is no longer exact, the PG's own
    /// side may not have meant that amount. (serde_json's `arbitrary_precision` keeps a JSON
    /// number's text, so what is parsed here is what the PG wrote.)
    pub fn parse_pg_decimal(s: &str) -> Result<Krw, MoneyError> {
        let t = s.trim();
        let Some((whole, fraction)) = t.split_once('.') else {
            return Self::parse_decimal(t);
        };
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::NotAnInteger);
        }
        let won = Self::parse_decimal(whole)?;
        if fraction.bytes().any(|b| b != b'0') {
            return Err(MoneyError::NotAnInteger);
        }
        // 2^53 itself is where an f64 stops being exact (2^53 + 1 reads as 2^53): refused too.
        const EXACT_IN_F64: i64 = 1 << 53;
        if won.0 >= EXACT_IN_F64 {
            return Err(MoneyError::TooLarge);
        }
        Ok(won)
    }
}

impl fmt::Display for Krw {
    /// `9,900원`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        write!(f, "{out}원")
    }
}

impl TryFrom<i64> for Krw {
    type Error = MoneyError;
    fn try_from(won: i64) -> Result<Self, Self::Error> {
        Krw::new(won)
    }
}

impl Serialize for Krw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Krw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KrwVisitor;
        impl Visitor<'_> for KrwVisitor {
            type Value = Krw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer amount of won")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Krw, E> {
                Krw::new(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Krw, E> {
                i64::try_from(v).map(Krw).map_err(|_| E::custom(MoneyError::TooLarge))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Krw, E> {
                if v < 0 { Err(E::custom(MoneyError::Negative(v))) } else { Err(E::custom(MoneyError::TooLarge)) }
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Krw, E> {
                Err(E::custom(MoneyError::TooLarge))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Krw, E> {
                Err(E::custom(MoneyError::NotAnInteger))
            }
        }
        d.deserialize_i64(KrwVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn constructors_enforce_sign_and_zero() {
        assert_eq!(Krw::new(0), Ok(Krw::ZERO));
        assert_eq!(Krw::new(-1), Err(MoneyError::Negative(-1)));
        assert_eq!(Krw::positive(0), Err(MoneyError::Zero));
        assert_eq!(Krw::positive(9900).unwrap().won(), 9900);
        assert_eq!(Krw::ZERO.require_positive(), Err(MoneyError::Zero));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Krw::new(i64::MAX).unwrap();
        assert_eq!(max.checked_add(Krw::new(1).unwrap()), Err(MoneyError::TooLarge));
        assert_eq!(
            Krw::new(5).unwrap().checked_sub(Krw::new(6).unwrap()),
            Err(MoneyError::Underflow { amount: 5, subtrahend: 6 })
        );
        assert_eq!(Krw::new(5).unwrap().checked_sub(Krw::new(5).unwrap()), Ok(Krw::ZERO));
        assert_eq!(max.checked_mul(2), Err(MoneyError::TooLarge));
        assert_eq!(Krw::new(9900).unwrap().checked_mul(3).unwrap().won(), 29700);
    }

    #[test]
    fn json_accepts_only_non_negative_integers() {
        assert_eq!(serde_json::from_str::<Krw>("9900").unwrap().won(), 9900);
        assert_eq!(serde_json::to_string(&Krw::new(9900).unwrap()).unwrap(), "9900");
        for bad in
            ["9900.0", "9.9e3", "\"9900\"", "-1", "null", "true", "9223372036854775808", "99999999999999999999999"]
        {
            let err = serde_json::from_str::<Krw>(bad);
            assert!(err.is_err(), "{bad} must not parse");
        }
        let msg = serde_json::from_str::<Krw>("10.5").unwrap_err().to_string();
        assert!(msg.contains("integer"), "{msg}");
        let msg = serde_json::from_str::<Krw>("-3").unwrap_err().to_string();
        assert!(msg.contains("negative"), "{msg}");
    }

    #[test]
    fn decimal_strings_from_pgs() {
        assert_eq!(Krw::parse_decimal("100").unwrap().won(), 100);
        assert_eq!(Krw::parse_decimal(" 100 ").unwrap().won(), 100);
        assert_eq!(Krw::parse_decimal("-100"), Err(MoneyError::Negative(-100)));
        for bad in ["", "1,000", "100.0", "1e3", "abc", "+5", "-"] {
            assert_eq!(Krw::parse_decimal(bad), Err(MoneyError::NotAnInteger), "{bad:?}");
        }
        assert_eq!(Krw::parse_decimal("9223372036854775808"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn pg_decimals_parse_exactly_and_only_whole_won() {
        // StepPay writes amounts as decimals (`10000.0`, `0.0` in its own examples).
        assert_eq!(Krw::parse_pg_decimal("10000.0").unwrap().won(), 10_000);
        assert_eq!(Krw::parse_pg_decimal("0.0").unwrap().won(), 0);
        assert_eq!(Krw::parse_pg_decimal("9900").unwrap().won(), 9_900);
        assert_eq!(Krw::parse_pg_decimal("9900.000").unwrap().won(), 9_900);
        for fraction in ["10000.5", "0.01", "9900.0001"] {
            assert_eq!(Krw::parse_pg_decimal(fraction), Err(MoneyError::NotAnInteger), "{fraction}");
        }
        for bad in ["", ".0", "1.", "1e4", "1.0e4", "1,000.0", "+5.0", "abc", "NaN"] {
            assert!(Krw::parse_pg_decimal(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(Krw::parse_pg_decimal("-1.0"), Err(MoneyError::Negative(_))));
        // Beyond 2^53 a JSON decimal has been through a float and may not be what StepPay meant.
        assert_eq!(Krw::parse_pg_decimal("9007199254740993.0"), Err(MoneyError::TooLarge));
        assert_eq!(Krw::parse_pg_decimal("9007199254740992.0"), Err(MoneyError::TooLarge), "2^53 itself");
        assert_eq!(Krw::parse_pg_decimal("9007199254740991.0").unwrap().won(), 9_007_199_254_740_991);
        assert_eq!(Krw::parse_pg_decimal("9007199254740993").unwrap().won(), 9_007_199_254_740_993);
    }

    #[test]
    fn displays_with_thousands_separators() {
        assert_eq!(Krw::new(0).unwrap().to_string(), "0원");
        assert_eq!(Krw::new(100).unwrap().to_string(), "100원");
        assert_eq!(Krw::new(9900).unwrap().to_string(), "9,900원");
        assert_eq!(Krw::new(1_234_567).unwrap().to_string(), "1,234,567원");
    }

    proptest! {
        #[test]
        fn json_round_trips(won in 0i64..=i64::MAX) {
            let k = Krw::new(won).unwrap();
            prop_assert_eq!(serde_json::from_str::<Krw>(&serde_json::to_string(&k).unwrap()).unwrap(), k);
        }

        #[test]
        fn add_then_sub_is_identity(a in 0i64..=i64::MAX / 2, b in 0i64..=i64::MAX / 2) {
            let (a, b) = (Krw::new(a).unwrap(), Krw::new(b).unwrap());
            prop_assert_eq!(a.checked_add(b).unwrap().checked_sub(b).unwrap(), a);
        }
    }
}
