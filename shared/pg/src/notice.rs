//! A PG's webhooks in PG-neutral terms (DESIGN §3). The route stores a delivery under the key
//! [`WebhookIntake::webhook_key`] gives it (after the PG's signature holds); verify later asks
//! [`Registry::read_webhook`] what the stored body points at — a [`Notice`] — and decides on
//! what the PG's lookups answer ([`Adapter::renewal_order`], [`Adapter::subscription_state`]),
//! never on the body.

use serde_json::Value;

use super::first::{Evidence, field};
use super::steppay::transformers::{PaymentStatus, SubscriptionStatus, WebhookType};
use super::steppay::webhook::{self as steppay_webhook, SteppayWebhook, V2Data, V2Event};
use super::{Adapter, Charged, PaymentState, Pg, PgError, PgMode, Registry};
use crate::config::Secrets;
use paycycle_domain::attempt::ChargeId;
use paycycle_domain::money::Krw;

/// Why a webhook route refuses a delivery (it is not stored).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Not a webhook of this PG, or it names nothing to look up: 400.
    #[error("{0}")]
    Malformed(String),
    /// The PG's signature does not hold: 401.
    #[error("{0}")]
    Unauthorized(String),
}

/// How a PG's webhook route takes a delivery (a trait: [`Pg`] is the domain's, its webhooks are
/// this crate's).
pub trait WebhookIntake {
    /// The request headers worth keeping with a stored webhook.
    fn webhook_headers(self) -> &'static [&'static str];

    /// The dedupe key a delivery is stored under (DESIGN §3), after the PG's signature holds
    /// where it signs and a secret is configured. Nothing is looked up: a fast answer.
    fn webhook_key<'h>(
        self,
        content_type: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'h str>,
        secrets: &Secrets,
    ) -> Result<String, IntakeError>;

    /// The body as it is stored (and streamed to verify): billing keys the PG puts in its
    /// webhooks replaced by [`REDACTED`], where verify never needs them (it asks the PG).
    fn stored_body(self, content_type: &str, body: &str) -> String;
}

/// What a billing key in a stored webhook body reads as.
pub const REDACTED: &str = "[redacted]";

/// `body` (JSON or a form, as `content_type` says) with the values of `fields` replaced by
/// [`REDACTED`]; a body that is neither stays as it is (it was checked before: it is one of them).
fn redact_fields(content_type: &str, body: &str, fields: &[&str]) -> String {
    if content_type.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
            out.append_pair(&k, if fields.contains(&k.as_ref()) { REDACTED } else { &v });
        }
        return out.finish();
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for f in fields {
                if let Some(v) = map.get_mut(*f) {
                    *v = serde_json::Value::String(REDACTED.into());
                }
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => body.to_string(),
    }
}

impl WebhookIntake for Pg {
    fn webhook_headers(self) -> &'static [&'static str] {
        match self {
            Pg::Steppay => &["user-agent", "steppay-signature", "x-amzn-trace-id", "x-forwarded-for"],
            Pg::Payple => &["user-agent", "x-amzn-trace-id", "x-forwarded-for"],
        }
    }

    fn stored_body(self, content_type: &str, body: &str) -> String {
        match self {
            // Payple's result carries the billing key itself (`PCD_PAYER_ID`, manual_card
            // README's result fields); verify looks the payment up by OID and never reads it.
            Pg::Payple => redact_fields(content_type, body, &["PCD_PAYER_ID"]),
            // StepPay's bodies name payments by idKey, which verify looks up; kept as received.
            Pg::Steppay => body.to_string(),
        }
    }

    fn webhook_key<'h>(
        self,
        content_type: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'h str>,
        secrets: &Secrets,
    ) -> Result<String, IntakeError> {
        match self {
            Pg::Steppay => {
                let parsed = steppay_webhook::parse(content_type, body)
                    .map_err(|e| IntakeError::Malformed(format!("not a StepPay webhook: {e}")))?;
                match parsed {
                    SteppayWebhook::Payment(w) => Ok(w.dedupe_key()),
                    SteppayWebhook::V2(w) => {
                        // A valid signature is never refused for its age (StepPay's portal
                        // re-sends are not re-signed; verify asks StepPay anyway).
                        if !secrets.steppay_webhook_secrets.is_empty() {
                            steppay_webhook::verify_signature(
                                header("steppay-signature"),
                                body,
                                &secrets.steppay_webhook_secrets,
                            )
                            .map_err(|e| IntakeError::Unauthorized(e.to_string()))?;
                        }
                        w.dedupe_key().ok_or_else(|| {
                            IntakeError::Malformed(
                                "the webhook's data names nothing to look up (order code or id, subscriptionId, idKey)"
                                    .into(),
                            )
                        })
                    }
                }
            }
            Pg::Payple => {
                let r = super::payple::transformers::PaypleResult::parse(content_type, body)
                    .map_err(|e| IntakeError::Malformed(format!("not a Payple result: {e}")))?;
                let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
                if !has(&r.oid) || !has(&r.rst) {
                    return Err(IntakeError::Malformed("a Payple webhook needs PCD_PAY_OID and PCD_PAY_RST".into()));
                }
                Ok(r.dedupe_key())
            }
        }
    }
}

/// What happened to a PG payment a webhook names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    Paid,
    Failed,
    Canceled,
}

/// What a stored webhook points at, in PG-neutral terms. Only a pointer: verify looks up and
/// decides; where this needed a PG lookup to know what it points at, the lookup is done.
#[derive(Clone, Debug)]
pub enum Notice {
    /// Nothing paycycle keeps changes (an error/close result, an event it does not use).
    Ignore(String),
    /// About nothing paycycle can look up.
    Reject(String),
    /// A checkout's first payment (the checkout named by our id): complete it on `evidence`; a
    /// failed one records what the PG confirms (`date_hint` helps the PG's lookup).
    CheckoutPayment { mode: PgMode, checkout_id: String, evidence: Evidence, date_hint: Option<String> },
    /// A payment paycycle sent under its own charge id: the first charge of a checkout's
    /// subscription completes that checkout; a renewal is renew's to settle by lookup.
    OwnCharge { mode: PgMode, charge_id: ChargeId, date_hint: Option<String> },
    /// The PG's payment of one of our renewal charges, paid or failed for good: renew resolves
    /// the charge by asking for this payment.
    ChargeOutcome { charge_id: ChargeId, pg_payment_id: String, paid: bool },
    /// The PG's refunded total of one of its payments (a refund made at the PG included).
    Refunded { pg: Pg, pg_payment_id: String, refunded: Krw },
    /// A PG order changed (mode where the PG renews): a checkout's first order, or a renewal
    /// ([`Adapter::renewal_order`]). `paid_claim`: the webhook says it was paid.
    /// `evidence`: the order as a checkout's first payment, if it is one.
    PgOrder { mode: PgMode, code: String, paid_claim: bool, evidence: Evidence },
    /// A PG subscription changed: its state is asked ([`Adapter::subscription_state`]).
    PgSubscription { mode: PgMode, id: String },
}

/// A PG order that is not a checkout's, as the PG's order lookup tells it.
#[derive(Clone, Debug)]
pub enum OrderReport {
    /// An order of the PG's subscription `pg_subscription`.
    Renewal { pg_subscription: String, outcome: RenewalOutcome },
    /// The PG's answer does not hold a renewal paycycle can record (why, for the verdict).
    Unusable(String),
}

/// What became of a renewal order.
#[derive(Clone, Debug)]
pub enum RenewalOutcome {
    /// The PG charged it; the payment is refunded through `pg_order`.
    Paid { charged: Charged, pg_order: String },
    /// Not paid (yet), or its payment failed (`failed`): the PG's subscription state decides.
    Unpaid { failed: bool },
}

/// A PG subscription's state, as the PG reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgSubscriptionState {
    Active,
    /// A renewal failed: past due at the PG.
    Unpaid,
    Paused,
    /// Canceled or expired: over.
    Ended,
    /// Pending a change or queued: nothing to mirror.
    Pending,
}

impl PgSubscriptionState {
    fn of_steppay(s: SubscriptionStatus) -> Self {
        match s {
            SubscriptionStatus::Active => Self::Active,
            SubscriptionStatus::Unpaid => Self::Unpaid,
            SubscriptionStatus::Pause => Self::Paused,
            SubscriptionStatus::Expired | SubscriptionStatus::Canceled => Self::Ended,
            _ => Self::Pending,
        }
    }
}

impl Registry {
    /// What a stored webhook of `pg` points at. The PG's lookup is asked where the body alone
    /// cannot say (a StepPay payment names only its idKey).
    pub async fn read_webhook(&self, pg: Pg, content_type: &str, body: &[u8]) -> Result<Notice, PgError> {
        match pg {
            Pg::Payple => Ok(payple_notice(content_type, body)),
            Pg::Steppay => self.steppay_notice(content_type, body).await,
        }
    }

    async fn steppay_notice(&self, content_type: &str, body: &[u8]) -> Result<Notice, PgError> {
        let w = match steppay_webhook::parse(content_type, body) {
            Ok(SteppayWebhook::Payment(w)) => {
                let event = match w.kind {
                    WebhookType::Canceled => PaymentEvent::Canceled,
                    WebhookType::Failed => PaymentEvent::Failed,
                    _ => PaymentEvent::Paid,
                };
                return self.steppay_payment(event, &w.id_key).await;
            }
            Ok(SteppayWebhook::V2(w)) => w,
            Err(e) => return Ok(Notice::Reject(format!("not a StepPay webhook: {e}"))),
        };
        // A v2 webhook (dev-docs `docs/08-1-1_Webhook-Events.md`): each names what to look up.
        Ok(match (&w.event, &w.data) {
            (V2Event::OrderPaymentCompleted | V2Event::OrderUpdated, V2Data::Order(_)) => match w.order_ref() {
                Some(code) => Notice::PgOrder {
                    mode: PgMode::SteppayManaged,
                    code: code.to_string(),
                    paid_claim: w.event == V2Event::OrderPaymentCompleted,
                    evidence: Evidence::SteppayOrder { order_code: code.to_string() },
                },
                None => Notice::Ignore(format!("{} names no order", w.event.as_str())),
            },
            (V2Event::SubscriptionUpdated, V2Data::Subscription(d)) => match d.subscription_id.as_deref() {
                Some(id) => Notice::PgSubscription { mode: PgMode::SteppayManaged, id: id.to_string() },
                None => Notice::Ignore("subscription.updated names no subscription".into()),
            },
            // payment.* carry the idKey the receipt is asked by (08-1-2 Payment `idKey`): the
            // same paths as the self webhook's PAYMENT / FAILED / CANCELED.
            (V2Event::PaymentCompleted | V2Event::PaymentFailed | V2Event::PaymentCanceled, V2Data::Payment(d)) => {
                let Some(id_key) = d.id_key.as_deref().filter(|k| !k.is_empty()) else {
                    return Ok(Notice::Ignore(format!("{} names no idKey", w.event.as_str())));
                };
                let event = match w.event {
                    V2Event::PaymentCompleted => PaymentEvent::Paid,
                    V2Event::PaymentFailed => PaymentEvent::Failed,
                    _ => PaymentEvent::Canceled,
                };
                return self.steppay_payment(event, id_key).await;
            }
            _ => Notice::Ignore(format!("StepPay event {} changes nothing paycycle keeps", w.event.as_str())),
        })
    }

    /// A StepPay payment (`idKey`): the receipt says what it is about.
    async fn steppay_payment(&self, event: PaymentEvent, id_key: &str) -> Result<Notice, PgError> {
        let steppay = &self.steppay;
        if event == PaymentEvent::Canceled {
            // If StepPay refunded more than paycycle knows (a refund made in StepPay's
            // dashboard), verify records the difference.
            let refunded = match steppay.payment_state(id_key).await? {
                PaymentState::Refunded { amount, .. } => amount,
                PaymentState::Paid { refunded, .. } => refunded,
                _ => return Ok(Notice::Ignore("StepPay reports no refund on this payment".into())),
            };
            return Ok(Notice::Refunded { pg: Pg::Steppay, pg_payment_id: id_key.to_string(), refunded });
        }
        let receipt = steppay.receipt(id_key).await?;
        let reference = receipt.partner_order_id.clone().unwrap_or_default();
        if reference.starts_with("chk_") {
            return Ok(Notice::CheckoutPayment {
                mode: PgMode::SteppaySelf,
                checkout_id: reference,
                evidence: Evidence::SteppayPayment { id_key: id_key.to_string() },
                date_hint: None,
            });
        }
        if let Ok(charge_id) = reference.parse::<ChargeId>() {
            // Paid, or failed for good: either settles a charge left unknown. StepPay cannot be
            // asked by our charge id; the idKey lets renew ask by it.
            let failed =
                matches!(receipt.payment_status.as_deref().map(PaymentStatus::parse), Some(Ok(PaymentStatus::Failed)));
            if receipt.payment_date.is_none() && !failed {
                return Ok(Notice::Ignore(format!("renewal charge {charge_id} is neither paid nor failed at StepPay")));
            }
            // A paid payment's hint replaces a declined try's (one charge id may carry both).
            let paid = receipt.payment_date.is_some() && !failed;
            return Ok(Notice::ChargeOutcome { charge_id, pg_payment_id: id_key.to_string(), paid });
        }
        Ok(Notice::Reject(format!(
            "payment {} names no paycycle checkout or charge (partnerOrderId {reference:?})",
            paycycle_domain::pii::mask_reference(id_key)
        )))
    }
}

/// A Payple result (the webhook of a window payment or a re-payment): points at our OID.
fn payple_notice(content_type: &str, body: &[u8]) -> Notice {
    let fields = match super::body_value(content_type, body) {
        Ok(Value::Object(m)) => m,
        _ => return Notice::Reject("not a Payple result".into()),
    };
    let success = super::payple::transformers::PaypleResult::from_value(Value::Object(fields.clone()))
        .ok()
        .and_then(|r| r.status().ok())
        .is_some_and(|s| s == super::payple::transformers::ResultStatus::Success);
    if !success {
        return Notice::Ignore(
            "an error/close result: the checkout completes or fails through POST /payments/verify".into(),
        );
    }
    let date_hint = field(&fields, "PCD_PAY_TIME").as_deref().and_then(super::payple::pay_date);
    let oid = fields.get("PCD_PAY_OID").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Ok(charge_id) = oid.parse::<ChargeId>() {
        return Notice::OwnCharge { mode: PgMode::Payple, charge_id, date_hint };
    }
    if !oid.starts_with("chk_") {
        return Notice::Reject(format!("PCD_PAY_OID {oid:?} is not a paycycle checkout"));
    }
    Notice::CheckoutPayment { mode: PgMode::Payple, checkout_id: oid, evidence: Evidence::Payple(fields), date_hint }
}

impl Adapter<'_> {
    /// A PG order that is not a checkout's, by the PG's order lookup (StepPay managed: a renewal
    /// order of type RECURRING whose `subscriptions` names the StepPay subscription, dev-docs
    /// `08-1-2_Webhook-Schema.md` Order). `NotFound`: the PG has no such order (yet).
    pub async fn renewal_order(&self, code: &str, now: jiff::Timestamp) -> Result<OrderReport, PgError> {
        let Adapter::SteppayManaged(c) = self else {
            return Err(PgError::Unsupported("this PG renews nothing itself"));
        };
        let order = c.order(code).await?;
        // Only a renewal is one: a card change's PAYMENT_METHOD order (or any other type) pays no
        // period, whatever it names (step-api-spec OrderDTO.type).
        if order.order_type.as_deref().is_some_and(|t| t != "RECURRING") {
            return Ok(OrderReport::Unusable(format!("order {code} is not a renewal (type {:?})", order.order_type)));
        }
        let pg_subscription = order
            .parent_subscription
            .clone()
            .or_else(|| order.subscriptions.first().cloned())
            .map(|v| match v {
                Value::Object(m) => m.get("id").map(|id| id.to_string()).unwrap_or_default(),
                other => other.to_string().trim_matches('"').to_string(),
            })
            .filter(|s| !s.is_empty() && s != "null");
        let Some(pg_subscription) = pg_subscription else {
            return Ok(OrderReport::Unusable(format!("order {code} is neither a checkout's nor a subscription's")));
        };
        if order.payment_date.is_none() {
            let failed = order.payment.as_ref().and_then(|p| p.error_code.as_ref()).is_some();
            return Ok(OrderReport::Renewal { pg_subscription, outcome: RenewalOutcome::Unpaid { failed } });
        }
        let Some(id_key) = order.id_key.clone() else {
            return Ok(OrderReport::Unusable(format!("paid order {code} without idKey")));
        };
        // What StepPay says was paid, a decimal (`19900.0`): read exactly, never defaulted — a
        // renewal is not recorded at an amount StepPay did not state.
        let amount = match order.paid_amount.as_deref() {
            Some(a) => super::steppay::parse_amount(a, "paidAmount")?,
            None => {
                return Err(PgError::Unrecognized {
                    code: "paidAmount".into(),
                    message: format!("paid order {code} without paidAmount"),
                });
            }
        };
        let approved_at = order.payment_date.as_deref().and_then(super::steppay::parse_time).unwrap_or(now);
        let charged = Charged { pg_payment_id: id_key, amount, approved_at };
        Ok(OrderReport::Renewal {
            pg_subscription,
            outcome: RenewalOutcome::Paid { charged, pg_order: code.to_string() },
        })
    }

    /// The state of the PG's subscription `id` (StepPay: `GET /api/v1/subscriptions/{id}`,
    /// step-api-spec `merge/v1.json`).
    pub async fn subscription_state(&self, id: &str) -> Result<PgSubscriptionState, PgError> {
        match self {
            Adapter::SteppayManaged(c) | Adapter::SteppaySelf(c) => {
                c.subscription(id).await.map(PgSubscriptionState::of_steppay)
            }
            Adapter::Payple(_) => Err(PgError::Unsupported("Payple keeps no subscriptions")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payple_webhook_is_stored_without_its_billing_key_as_json_or_form() {
        let form = "PCD_PAY_RST=success&PCD_PAYER_ID=cGF5ZXI%3D&PCD_PAY_OID=chk_1";
        let stored = Pg::Payple.stored_body("application/x-www-form-urlencoded", form);
        assert!(!stored.contains("cGF5ZXI"), "{stored}");
        let fields: Vec<(String, String)> =
            url::form_urlencoded::parse(stored.as_bytes()).map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(fields[0], ("PCD_PAY_RST".into(), "success".into()));
        assert_eq!(fields[1], ("PCD_PAYER_ID".into(), REDACTED.into()));
        assert_eq!(fields[2], ("PCD_PAY_OID".into(), "chk_1".into()));

        let json = r#"{"PCD_PAY_RST":"success","PCD_PAYER_ID":"cGF5ZXI=","PCD_PAY_OID":"chk_1"}"#;
        let stored: serde_json::Value =
            serde_json::from_str(&Pg::Payple.stored_body("application/json", json)).unwrap();
        assert_eq!((stored["PCD_PAYER_ID"].as_str(), stored["PCD_PAY_OID"].as_str()), (Some(REDACTED), Some("chk_1")));
        // Nothing to redact: the body as it came.
        assert_eq!(Pg::Steppay.stored_body("application/json", json), json);
    }
}
