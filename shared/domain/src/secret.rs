//! A wrapper for credentials (StepPay secret token, Payple custKey, refund key, webhook signing
//! keys). It owns one rule: a secret never reaches a log line, an error body or a panic message.
//! `Debug` and `Display` print `***`; there is no `Serialize`; the only way in is `expose()`,
//! which is greppable at every call site.

use std::fmt;

/// A secret string. Compare with [`Secret::ct_eq`], never with `==` on the exposed value.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it (an HTTP header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison against a candidate (the time taken depends only on the lengths).
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Compares two byte strings in time that depends only on their lengths, with `subtle`'s
/// comparison: its optimisation barrier keeps the compiler from turning the loop into one that
/// stops at the first differing byte, which a hand-written fold does not guarantee.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk_live_very_secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let printed = format!("{:?}", Holder { token: s.clone() });
        assert!(!printed.contains("very_secret"), "{printed}");
        assert_eq!(s.expose(), "sk_live_very_secret");
    }

    #[test]
    fn ct_eq_compares_whole_values() {
        let s = Secret::new("abc123");
        assert!(s.ct_eq(b"abc123"));
        assert!(!s.ct_eq(b"abc124"));
        assert!(!s.ct_eq(b"abc12"));
        assert!(!s.ct_eq(b"abc1234"));
        assert!(!s.ct_eq(b""));
    }

    #[test]
    fn deserializes_from_a_json_string() {
        let s: Secret = serde_json::from_str("\"k\"").unwrap();
        assert_eq!(s.expose(), "k");
    }
}
