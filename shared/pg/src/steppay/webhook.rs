//! StepPay webhooks: the self payment webhook `{webHookType, orderId, idKey}` (JSON or form,
//! seeds 000/001) and v2 webhooks `{timestamp, version, event, data}` (dev-docs
//! `docs/08-1_웹훅_v2.md`) of the documented event types (`docs/08-1-1_Webhook-Events.md`), with
//! `data` in the event's schema (`docs/08-1-2_Webhook-Schema.md`) and the `Steppay-Signature`
//! header: `timestamp=<t>,key=<base64(HMAC-SHA256(secret, "<t>.<raw body>"))>`, several keys
//! `;`-separated during rotation (`docs/08-1-3_Signature.md`, DESIGN §3). Parsing trusts nothing: a
//! webhook only says "look this up". An event type paycycle does not use parses as
//! [`V2Event::Other`] — stored and ignored, never refused.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::transformers::{
    SelfWebhookBody, V2OrderData, V2PaymentData, V2SubscriptionData, V2WebhookBody, WebhookType,
};
use crate::PgError;
use paycycle_domain::secret::{Secret, constant_time_eq};

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

/// The v2 event types paycycle reads (dev-docs `docs/08-1-1_Webhook-Events.md`); any other
/// (invoice, customer, product, usage, cover, or one StepPay adds) is [`V2Event::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V2Event {
    OrderCreated,
    OrderUpdated,
    OrderPaymentCompleted,
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionPaymentDueNotification,
    PaymentCompleted,
    PaymentFailed,
    PaymentCanceled,
    PaymentStandby,
    Other(String),
}

impl V2Event {
    pub fn parse(s: &str) -> Self {
        match s {
            "order.created" => Self::OrderCreated,
            "order.updated" => Self::OrderUpdated,
            "order.payment_completed" => Self::OrderPaymentCompleted,
            "subscription.created" => Self::SubscriptionCreated,
            "subscription.updated" => Self::SubscriptionUpdated,
            "subscription.payment_due_notification" => Self::SubscriptionPaymentDueNotification,
            "payment.completed" => Self::PaymentCompleted,
            "payment.failed" => Self::PaymentFailed,
            "payment.canceled" => Self::PaymentCanceled,
            "payment.standby" => Self::PaymentStandby,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderUpdated => "order.updated",
            Self::OrderPaymentCompleted => "order.payment_completed",
            Self::SubscriptionCreated => "subscription.created",
            Self::SubscriptionUpdated => "subscription.updated",
            Self::SubscriptionPaymentDueNotification => "subscription.payment_due_notification",
            Self::PaymentCompleted => "payment.completed",
            Self::PaymentFailed => "payment.failed",
            Self::PaymentCanceled => "payment.canceled",
            Self::PaymentStandby => "payment.standby",
            Self::Other(s) => s,
        }
    }
}

/// A v2 webhook's `data`, in the schema its event names (`docs/08-1-2_Webhook-Schema.md`).
#[derive(Clone, Debug)]
pub enum V2Data {
    Order(V2OrderData),
    Subscription(V2SubscriptionData),
    Payment(V2PaymentData),
    /// An event paycycle does not read: a digest of its data, so a literal re-send dedupes.
    Other {
        digest: String,
    },
}

#[derive(Clone, Debug)]
pub struct V2Webhook {
    pub timestamp: Option<i64>,
    pub event: V2Event,
    pub data: V2Data,
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl V2Webhook {
    /// The dedupe key. One-off facts (an order's or a payment's completion, a payment's failure)
    /// are keyed by what they are about, so StepPay's repeats collapse. Updates can happen many
    /// times to one thing (UNPAID then ACTIVE for one subscription), so their key also holds what
    /// distinguishes them — the status (and next payment date, or canceled amount) they report and
    /// the webhook's `timestamp` — while a literal re-send (same body) still dedupes. `None` if
    /// the data names nothing to look up.
    pub fn dedupe_key(&self) -> Option<String> {
        let event = self.event.as_str();
        let t = self.timestamp.map(|t| t.to_string()).unwrap_or_default();
        match (&self.event, &self.data) {
            (V2Event::OrderPaymentCompleted, V2Data::Order(_)) => Some(format!("{event}:{}", self.order_ref()?)),
            (_, V2Data::Order(_)) => Some(format!("{event}:{}:{t}", self.order_ref()?)),
            (_, V2Data::Subscription(s)) => Some(format!(
                "{event}:{}:{}:{}:{t}",
                text(&s.subscription_id)?,
                text(&s.status).unwrap_or_default(),
                text(&s.next_payment_date).unwrap_or_default()
            )),
            (V2Event::PaymentCanceled, V2Data::Payment(p)) => Some(format!(
                "{event}:{}:{}:{}:{t}",
                text(&p.id_key)?,
                text(&p.status).unwrap_or_default(),
                p.cancel.as_ref().and_then(|c| text(&c.canceled_amount)).unwrap_or_default()
            )),
            (_, V2Data::Payment(p)) => Some(format!("{event}:{}", text(&p.id_key)?)),
            (_, V2Data::Other { digest }) => Some(format!("{event}:{t}:{digest}")),
        }
    }

    /// The order an order event names: its `code`, else its `id` (both take
    /// `GET /api/v1/orders/{orderIdOrCode}`).
    pub fn order_ref(&self) -> Option<&str> {
        match &self.data {
            V2Data::Order(o) => text(&o.code).or_else(|| text(&o.id)),
            _ => None,
        }
    }
}

/// A StepPay webhook of either kind.
#[derive(Clone, Debug)]
pub enum SteppayWebhook {
    Payment(SelfWebhook),
    V2(V2Webhook),
}

fn schema<T: serde::de::DeserializeOwned>(event: &str, data: Value) -> Result<T, PgError> {
    serde_json::from_value(data).map_err(|e| PgError::Invalid(format!("{event} data: {e}")))
}

/// Parses a v2 body's `data` in the schema its event names (`docs/08-1-1_Webhook-Events.md`).
fn v2(b: V2WebhookBody) -> Result<V2Webhook, PgError> {
    let event = V2Event::parse(&b.event);
    let name = b.event.as_str();
    let data = match event {
        V2Event::OrderCreated | V2Event::OrderUpdated | V2Event::OrderPaymentCompleted => {
            V2Data::Order(schema(name, b.data)?)
        }
        V2Event::SubscriptionCreated | V2Event::SubscriptionUpdated | V2Event::SubscriptionPaymentDueNotification => {
            V2Data::Subscription(schema(name, b.data)?)
        }
        V2Event::PaymentCompleted | V2Event::PaymentFailed | V2Event::PaymentCanceled | V2Event::PaymentStandby => {
            V2Data::Payment(schema(name, b.data)?)
        }
        V2Event::Other(_) => {
            V2Data::Other { digest: paycycle_domain::ids::sha256_hex(b.data.to_string().as_bytes())[..16].to_string() }
        }
    };
    Ok(V2Webhook { timestamp: b.timestamp.as_deref().and_then(|t| t.trim().parse().ok()), event, data })
}

/// Parses a webhook body by content type.
pub fn parse(content_type: &str, body: &[u8]) -> Result<SteppayWebhook, PgError> {
    let value =
        crate::body_value(content_type, body).map_err(|e| PgError::Invalid(format!("webhook is not JSON: {e}")))?;
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
        return v2(b).map(SteppayWebhook::V2);
    }
    Err(PgError::Invalid("neither a self webhook (webHookType) nor a v2 webhook (event)".into()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Steppay-Signature header is missing")]
    Missing,
    #[error("Steppay-Signature header is malformed")]
    Malformed,
    #[error("Steppay-Signature does not match")]
    Mismatch,
}

/// Verifies `header` over the raw `body` with any of `secrets` (rotation). The signature's age is
/// not checked: StepPay's own sample code checks none (dev-docs `docs/08-1-3_Signature.md`), a
/// re-send from StepPay's portal is not documented to be re-signed, and a replayed webhook can
/// decide nothing anyway — verify asks StepPay (DESIGN §3). Only a bad signature is refused.
pub fn verify_signature(header: Option<&str>, body: &[u8], secrets: &[Secret]) -> Result<(), SignatureError> {
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

    fn v2_of(body: &str) -> V2Webhook {
        match parse("application/json", body.as_bytes()).unwrap() {
            SteppayWebhook::V2(w) => w,
            other => panic!("{other:?}"),
        }
    }

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
    }

    #[test]
    fn documented_v2_events_parse_in_their_schemas_and_unknown_ones_are_other() {
        // dev-docs 08-1-2_Webhook-Schema.md: Order carries `code` (no `orderCode`), Decimal amounts.
        let o = v2_of(
            r#"{"timestamp":1700000000,"version":"v1","event":"order.payment_completed","data":{"id":7,"code":"order_abc","type":"RECURRING","subscriptions":[42],"idKey":"k1","paidAmount":19900.0}}"#,
        );
        assert_eq!((o.timestamp, o.event.clone()), (Some(1_700_000_000), V2Event::OrderPaymentCompleted));
        assert_eq!(o.order_ref(), Some("order_abc"));
        assert_eq!(o.dedupe_key().as_deref(), Some("order.payment_completed:order_abc"));
        let s = v2_of(
            r#"{"timestamp":1700000001,"version":"v1","event":"subscription.updated","data":{"subscriptionId":42,"status":"UNPAID","orderId":7,"orderCode":"order_abc"}}"#,
        );
        let V2Data::Subscription(d) = &s.data else { panic!() };
        assert_eq!((d.subscription_id.as_deref(), d.status.as_deref()), (Some("42"), Some("UNPAID")));
        let p = v2_of(
            r#"{"timestamp":1700000002,"version":"v1","event":"payment.failed","data":{"paymentId":3,"idKey":"k2","orderId":"sub_a-p1-a1","paidAmount":0.0,"status":"FAILED","cancel":null}}"#,
        );
        let V2Data::Payment(d) = &p.data else { panic!() };
        assert_eq!((d.id_key.as_deref(), d.order_id.as_deref()), (Some("k2"), Some("sub_a-p1-a1")));
        assert_eq!(p.dedupe_key().as_deref(), Some("payment.failed:k2"));
        // Not a StepPay event type, or one paycycle does not read: parsed, never an error.
        for event in ["order.paid", "order.payment_failed", "invoice.created", "cover.paused"] {
            let w = v2_of(&format!(r#"{{"timestamp":1,"version":"v1","event":"{event}","data":{{"x":1}}}}"#));
            assert_eq!(w.event, V2Event::Other(event.into()));
            assert!(w.dedupe_key().is_some());
        }
    }

    #[test]
    fn two_updates_of_one_subscription_have_two_dedupe_keys_and_a_resend_has_one() {
        let body = |status: &str, t: i64| {
            format!(
                r#"{{"timestamp":{t},"version":"v1","event":"subscription.updated","data":{{"subscriptionId":42,"status":"{status}"}}}}"#
            )
        };
        let unpaid = v2_of(&body("UNPAID", 1_700_000_000)).dedupe_key().unwrap();
        let active = v2_of(&body("ACTIVE", 1_700_000_000)).dedupe_key().unwrap();
        let unpaid_later = v2_of(&body("UNPAID", 1_700_000_900)).dedupe_key().unwrap();
        assert_ne!(unpaid, active);
        assert_ne!(unpaid, unpaid_later);
        assert_eq!(unpaid, v2_of(&body("UNPAID", 1_700_000_000)).dedupe_key().unwrap(), "a literal re-send");
    }

    #[test]
    fn signatures_verify_with_rotation_and_tampering_whatever_their_age() {
        let old = Secret::new("whsec_old");
        let new = Secret::new("whsec_new");
        let body = br#"{"event":"order.payment_completed"}"#;
        let header = sign(&new, 1_700_000_000, body);
        assert_eq!(verify_signature(Some(&header), body, &[old.clone(), new.clone()]), Ok(()));
        assert_eq!(verify_signature(Some(&header), body, std::slice::from_ref(&old)), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_signature(Some(&header), b"{\"event\":\"order.payment_completedX\"}", std::slice::from_ref(&new)),
            Err(SignatureError::Mismatch)
        );
        // A valid signature from long ago (a portal re-send) is not refused for its age.
        let year_old = sign(&new, 1_700_000_000 - 365 * 86_400, body);
        assert_eq!(verify_signature(Some(&year_old), body, std::slice::from_ref(&new)), Ok(()));
        // Two keys in the header during StepPay's rotation: either may match.
        let other = sign(&old, 1_700_000_000, body);
        let both = format!("{};{}", header, other.split(',').nth(1).unwrap());
        assert_eq!(verify_signature(Some(&both), body, std::slice::from_ref(&old)), Ok(()));
        assert_eq!(verify_signature(None, body, std::slice::from_ref(&new)), Err(SignatureError::Missing));
        for bad in ["", "timestamp=x,key=abc", "key=abc", "timestamp=1700000000", "timestamp=1700000000,key=!!"] {
            assert!(verify_signature(Some(bad), body, std::slice::from_ref(&new)).is_err(), "{bad}");
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
            let h = sign(&s, 1_800_000_000, &body);
            prop_assert!(verify_signature(Some(&h), &body, std::slice::from_ref(&s)).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 1;
                prop_assert!(verify_signature(Some(&h), &changed, &[s]).is_err());
            }
        }
    }
}
