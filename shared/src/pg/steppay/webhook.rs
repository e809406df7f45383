//! StepPay webhooks: the self payment webhook `{webHookType, orderId, idKey}` (JSON or form,
//! seeds 000/001) and v2 order webhooks `{timestamp, version, event, data}` with the
//! `Steppay-Signature` header: `timestamp=<t>,key=<base64(HMAC-SHA256(secret, "<t>.<raw body>"))>`,
//! several keys `;`-separated during rotation (DESIGN §3). Parsing trusts nothing: a webhook only
//! says "look this up".

use base64::Engine;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;

use super::transformers::{SelfWebhookBody, V2WebhookBody, WebhookType};
use crate::pg::PgError;
use crate::secret::{Secret, constant_time_eq};

/// How old a signed webhook may be.
pub const SIGNATURE_TOLERANCE: SignedDuration = SignedDuration::from_mins(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfWebhook {
    pub kind: WebhookType,
    pub order_id: Option<String>,
    pub id_key: String,
}

impl SelfWebhook {
    /// The dedupe key of DESIGN §3: type + idKey.
    pub fn dedupe_key(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.id_key)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct V2Webhook {
    pub timestamp: Option<i64>,
    pub event: String,
    pub data: serde_json::Value,
}

impl V2Webhook {
    /// The dedupe key: event + the order's idKey (or order code, or id). `None` if the data
    /// names nothing to look up.
    pub fn dedupe_key(&self) -> Option<String> {
        let field = |name: &str| match self.data.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = field("idKey").or_else(|| field("orderCode")).or_else(|| field("id"))?;
        Some(format!("{}:{id}", self.event))
    }

    /// The order code the data names (order events).
    pub fn order_code(&self) -> Option<&str> {
        self.data.get("orderCode").and_then(|v| v.as_str()).filter(|s| !s.is_empty())
    }
}

/// A StepPay webhook of either kind.
#[derive(Clone, Debug, PartialEq)]
pub enum SteppayWebhook {
    Payment(SelfWebhook),
    Order(V2Webhook),
}

/// Parses a webhook body by content type.
pub fn parse(content_type: &str, body: &[u8]) -> Result<SteppayWebhook, PgError> {
    let value =
        crate::pg::body_value(content_type, body).map_err(|e| PgError::Invalid(format!("webhook is not JSON: {e}")))?;
    if value.get("webHookType").is_some() {
        let b: SelfWebhookBody =
            serde_json::from_value(value).map_err(|e| PgError::Invalid(format!("self webhook: {e}")))?;
        if b.id_key.is_empty() {
            return Err(PgError::Invalid("self webhook without idKey".into()));
        }
        return Ok(SteppayWebhook::Payment(SelfWebhook {
            kind: WebhookType::parse(&b.web_hook_type)?,
            order_id: b.order_id,
            id_key: b.id_key,
        }));
    }
    if value.get("event").is_some() {
        let b: V2WebhookBody =
            serde_json::from_value(value).map_err(|e| PgError::Invalid(format!("v2 webhook: {e}")))?;
        return Ok(SteppayWebhook::Order(V2Webhook {
            timestamp: b.timestamp.as_deref().and_then(|t| t.parse().ok()),
            event: b.event,
            data: b.data,
        }));
    }
    Err(PgError::Invalid("neither a self webhook (webHookType) nor a v2 webhook (event)".into()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Steppay-Signature header is missing")]
    Missing,
    #[error("Steppay-Signature header is malformed")]
    Malformed,
    #[error("Steppay-Signature is older than the tolerance")]
    Stale,
    #[error("Steppay-Signature does not match")]
    Mismatch,
}

/// Verifies `header` over the raw `body` with any of `secrets` (rotation), at `now`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now: Timestamp,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for part in header.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(t) = part.strip_prefix("timestamp=") {
            timestamp = Some(t.parse().map_err(|_| SignatureError::Malformed)?);
        } else {
            let key = part.strip_prefix("key=").unwrap_or(part);
            keys.push(base64::engine::general_purpose::STANDARD.decode(key).map_err(|_| SignatureError::Malformed)?);
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if keys.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.as_second().abs_diff(t);
    if age > SIGNATURE_TOLERANCE.as_secs().unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let mut matched = false;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(&signed);
        let expected = mac.finalize().into_bytes();
        for key in &keys {
            // No early exit: every comparison runs.
            matched |= constant_time_eq(&expected, key);
        }
    }
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// Signs like StepPay (for tests and the local stack).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "timestamp={timestamp},key={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_seed_webhook_parses_as_json_and_as_form() {
        let seed = br#"{"webHookType":"PAYMENT","orderId":1,"idKey":"16057932413479698c8vqQG0kMix9"}"#;
        let SteppayWebhook::Payment(w) = parse("application/json", seed).unwrap() else { panic!() };
        assert_eq!(w.kind, WebhookType::Payment);
        assert_eq!(w.order_id.as_deref(), Some("1"));
        assert_eq!(w.dedupe_key(), "PAYMENT:16057932413479698c8vqQG0kMix9");
        let form = b"webHookType=CANCELED&orderId=1&idKey=16057932413479698c8vqQG0kMix9";
        let SteppayWebhook::Payment(f) = parse("application/x-www-form-urlencoded; charset=UTF-8", form).unwrap()
        else {
            panic!()
        };
        assert_eq!(f.kind, WebhookType::Canceled);
        for t in ["VBANK", "USER_CANCELED", "FAILED", "CMS", "BILLKEY"] {
            let body = format!(r#"{{"webHookType":"{t}","orderId":2,"idKey":"k"}}"#);
            assert!(parse("application/json", body.as_bytes()).is_ok(), "{t}");
        }
    }

    #[test]
    fn unknown_or_malformed_webhooks_are_typed_errors() {
        let unknown = br#"{"webHookType":"REFUNDED","orderId":1,"idKey":"k"}"#;
        assert!(matches!(parse("application/json", unknown), Err(PgError::Unrecognized { .. })));
        assert!(matches!(parse("application/json", b"{"), Err(PgError::Invalid(_))));
        assert!(matches!(parse("application/json", br#"{"hello":1}"#), Err(PgError::Invalid(_))));
        assert!(matches!(
            parse("application/json", br#"{"webHookType":"PAYMENT","orderId":1,"idKey":""}"#),
            Err(PgError::Invalid(_))
        ));
        let v2 = br#"{"timestamp":1700000000,"version":"v2","event":"order.paid","data":{"orderCode":"order_abc"}}"#;
        let SteppayWebhook::Order(o) = parse("application/json", v2).unwrap() else { panic!() };
        assert_eq!((o.timestamp, o.event.as_str()), (Some(1_700_000_000), "order.paid"));
    }

    #[test]
    fn signatures_verify_with_rotation_tolerance_and_tampering() {
        let old = Secret::new("whsec_old");
        let new = Secret::new("whsec_new");
        let body = br#"{"event":"order.paid"}"#;
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let header = sign(&new, 1_700_000_000, body);
        assert_eq!(verify_signature(Some(&header), body, &[old.clone(), new.clone()], now), Ok(()));
        assert_eq!(
            verify_signature(Some(&header), body, std::slice::from_ref(&old), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), b"{\"event\":\"order.paidX\"}", std::slice::from_ref(&new), now),
            Err(SignatureError::Mismatch)
        );
        let late = Timestamp::from_second(1_700_000_000 + 301).unwrap();
        assert_eq!(verify_signature(Some(&header), body, std::slice::from_ref(&new), late), Err(SignatureError::Stale));
        // Two keys in the header during StepPay's rotation: either may match.
        let other = sign(&old, 1_700_000_000, body);
        let both = format!("{};{}", header, other.split(',').nth(1).unwrap());
        assert_eq!(verify_signature(Some(&both), body, std::slice::from_ref(&old), now), Ok(()));
        assert_eq!(verify_signature(None, body, std::slice::from_ref(&new), now), Err(SignatureError::Missing));
        for bad in ["", "timestamp=x,key=abc", "key=abc", "timestamp=1700000000", "timestamp=1700000000,key=!!"] {
            assert!(verify_signature(Some(bad), body, std::slice::from_ref(&new), now).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(content_type in "(application/json|application/x-www-form-urlencoded|text/plain)", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&content_type, &body);
        }

        #[test]
        fn any_body_signed_verifies_and_any_change_does_not(body in proptest::collection::vec(any::<u8>(), 0..128), flip in 0usize..128) {
            let s = Secret::new("k");
            let now = Timestamp::from_second(1_800_000_000).unwrap();
            let h = sign(&s, now.as_second(), &body);
            prop_assert!(verify_signature(Some(&h), &body, std::slice::from_ref(&s), now).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 1;
                prop_assert!(verify_signature(Some(&h), &changed, &[s], now).is_err());
            }
        }
    }
}
