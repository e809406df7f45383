//! StepPay wire types, named as in StepPay's guides (seeds 000–002) and public OpenAPI specs, and
//! their mapping onto our types. Unknown statuses and codes are typed errors, never a default arm.
//!
//! **StepPay publishes no error codes** (its error-code page is empty, PG-FACTS): the `errorCode`
//! values a previous version of this module mapped (`PAYMENT_DECLINED`, `BILLING_KEY_INVALID`,
//! `DUPLICATE_PARTNER_ORDER_ID`, …) were invented, and are gone. StepPay documents only the error
//! body `{traceId, errorCode*, errorMessage, details}` (step-api-spec `service/payment.json` and
//! `merge/v1.json` `ErrorResponse`, on 400/403/404): `errorCode` and `errorMessage` are kept for
//! people (logs, attempt records) and never read for a decision. An error answer is classified by
//! its HTTP status and by whether the call could move money; a 2xx payment by its own documented
//! `status` (`PaymentStatus`, step-api-spec `service/payment.json`).
//!
//! | HTTP status | charge / refund (`moves_money`) | read / management call |
//! |---|---|---|
//! | 401, 403 | `Config` | `Config` |
//! | 400, 402, 404, 422 with the error body | `Declined { hard: false }`: StepPay refused the request, no money moved | 404 `NotFound`; 400/402/422 `Invalid` |
//! | 409 | `AlreadyProcessed` (a collision with a request StepPay already has; `details.idKey` named when present — unconfirmed) → looked up | `Unrecognized` |
//! | 5xx, or a body that is not StepPay's error body | `Unknown` (looked up, never retried blind) | `Transient` (5xx), `NotFound` (404), else `Unrecognized` |
//! | anything else | `Unrecognized` (treated as unknown) | `Unrecognized` |
//!
//! Nothing here is ever a *hard* decline: without published codes no StepPay answer says that
//! retrying cannot help, so a dead billing key goes through dunning and ends `unpaid`, a few
//! retries later than a hard decline would.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{PgError, de_opt_string};

/// `POST /api/payment/billing` (seeds 000/001).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingRequest<'a> {
    pub id_key: &'a str,
    pub partner: Partner<'a>,
    pub product: Product<'a>,
    pub customer: CustomerInfo<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Partner<'a> {
    pub partner_order_id: &'a str,
    pub partner_user_id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Product<'a> {
    pub item_name: &'a str,
    pub amount: i64,
    pub quantity: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerInfo<'a> {
    pub user_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
}

/// A payment as the billing call and the receipt return it (documented: `paymentDate`,
/// `paymentStatus`; the rest is read defensively).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentBody {
    #[serde(default)]
    pub id_key: Option<String>,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub payment_date: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub amount: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub canceled_amount: Option<String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    /// The `partnerOrderId` the payment was made with (our checkout id or charge id).
    /// Unconfirmed: StepPay's public receipt sample does not show it; verify only uses it when
    /// present and never trusts a webhook for it.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub partner_order_id: Option<String>,
}

/// `POST /api/internal/payment/cancel` (seed 000/001, `Secret-Key`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest<'a> {
    pub id_key: &'a str,
    pub request_price: i64,
}

/// The cancel answer: step-api-spec `service/payment.json` (3ec8ceb9) `ApiResponseCancelResponse`
/// `{result: boolean, code: int32, message, id: string, response: CancelResponse}`. The values of
/// `code` and `id` are not documented (unconfirmed): read, never relied on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    #[serde(default)]
    pub result: Option<bool>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub response: Option<CancelInner>,
}

/// step-api-spec `service/payment.json` `CancelResponse{tid, paymentReceiptUrl, cancelPayment}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelInner {
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub cancel_payment: Option<CancelPayment>,
}

/// step-api-spec `service/payment.json` `CancelPaymentDTO{canceledAmount: number, tid,
/// paymentStatus (… CANCEL_PROGRESS …), canceledDate: date-time}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelPayment {
    /// A decimal (`4000.0`): read with `Krw::parse_pg_decimal`.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub canceled_amount: Option<String>,
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub canceled_date: Option<String>,
}

/// `PATCH /api/v1/orders/{orderIdOrCode}/cancel` body: step-api-spec `merge/v1.json` (3ec8ceb9)
/// `ReqV1{requestPrice*, reason}` (PG-FACTS).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelRequest<'a> {
    pub request_price: i64,
    pub reason: &'a str,
}

/// `POST /api/v1/subscriptions/{subscriptionId}/pause` body: `SubscriptionPauseDTO` (step-api-spec
/// at 3ec8ceb9 `merge/v1.json` `#/components/schemas/SubscriptionPauseDTO`, pg-shapes
/// `steppay/subscription-pause-request.json`): `whenToPause` ∈ {`IMMEDIATE`, `LAZY`} and
/// `whenToResume` ∈ {`NOTHING`, `PAUSED_UNTIL`}, both required. paycycle pauses until the partner
/// resumes (`NOTHING`: resumed by `/active`). That `LAZY` means "at the end of the current period"
/// is our reading of the name (the document describes it only as "언제 일시정지 시킬 지"): unconfirmed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseRequest {
    pub when_to_pause: WhenToPause,
    pub when_to_resume: WhenToResume,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WhenToPause {
    Immediate,
    Lazy,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WhenToResume {
    Nothing,
}

/// StepPay's error body: `{traceId, errorCode, errorMessage, details}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub trace_id: Option<String>,
    pub error_code: String,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub details: Value,
}

/// `POST /api/v1/orders`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest<'a> {
    pub customer_code: &'a str,
    pub items: Vec<OrderItem<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem<'a> {
    pub product_code: &'a str,
    pub price_code: &'a str,
    pub currency: &'a str,
    pub minimum_quantity: i64,
}

/// `POST /api/v1/customers`: step-api-spec `service/account.json` (3ec8ceb9) `CustomerCreateDTO`
/// `{name*, email*, phone, marketingSms*, marketingEmail*, marketingKakao*, attributes*}` — no
/// `code`: StepPay gives the customer its own.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRequest<'a> {
    pub name: &'a str,
    pub email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
    pub marketing_sms: bool,
    pub marketing_email: bool,
    pub marketing_kakao: bool,
    pub attributes: Value,
}

/// The created customer: step-api-spec `service/account.json` `CustomerV1DTO` — StepPay's own
/// `id` (int64) and `code`; the rest is not read.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerBody {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

/// An order (`POST /api/v1/orders` 201, `GET /api/v1/orders/{idOrCode}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub order_id: Option<String>,
    pub order_code: String,
    #[serde(default, rename = "type")]
    pub order_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub paid_amount: Option<String>,
    /// What is left to pay (the price, before payment).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub left_amount: Option<String>,
    #[serde(default)]
    pub payment_date: Option<String>,
    #[serde(default)]
    pub id_key: Option<String>,
    #[serde(default)]
    pub subscriptions: Vec<Value>,
    #[serde(default)]
    pub parent_subscription: Option<Value>,
    #[serde(default)]
    pub payment: Option<OrderPayment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPayment {
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// Payment statuses (DESIGN §11), exhaustive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Standby,
    Complete,
    Canceled,
    PartialCanceled,
    UserCanceled,
    CanceledFail,
    CancelProgress,
    Failed,
    VirtualBankStandby,
    CmsStandby,
}

impl PaymentStatus {
    pub fn parse(s: &str) -> Result<Self, PgError> {
        Ok(match s {
            "STANDBY" => Self::Standby,
            "COMPLETE" => Self::Complete,
            "CANCELED" => Self::Canceled,
            "PARTIAL_CANCELED" => Self::PartialCanceled,
            "USER_CANCELED" => Self::UserCanceled,
            "CANCELED_FAIL" => Self::CanceledFail,
            "CANCEL_PROGRESS" => Self::CancelProgress,
            "FAILED" => Self::Failed,
            "VIRTUAL_BANK_STANDBY" => Self::VirtualBankStandby,
            "CMS_STANDBY" => Self::CmsStandby,
            other => {
                return Err(PgError::Unrecognized {
                    code: other.to_string(),
                    message: "unknown StepPay payment status".into(),
                });
            }
        })
    }
}

/// Self webhook types (seed 000/001).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookType {
    Payment,
    Vbank,
    Canceled,
    UserCanceled,
    Failed,
    Cms,
    /// Deprecated: a 0원 payment; becoming `PAYMENT`.
    Billkey,
}

impl WebhookType {
    pub fn parse(s: &str) -> Result<Self, PgError> {
        Ok(match s {
            "PAYMENT" => Self::Payment,
            "VBANK" => Self::Vbank,
            "CANCELED" => Self::Canceled,
            "USER_CANCELED" => Self::UserCanceled,
            "FAILED" => Self::Failed,
            "CMS" => Self::Cms,
            "BILLKEY" => Self::Billkey,
            other => {
                return Err(PgError::Unrecognized { code: other.to_string(), message: "unknown webHookType".into() });
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "PAYMENT",
            Self::Vbank => "VBANK",
            Self::Canceled => "CANCELED",
            Self::UserCanceled => "USER_CANCELED",
            Self::Failed => "FAILED",
            Self::Cms => "CMS",
            Self::Billkey => "BILLKEY",
        }
    }
}

/// The raw self webhook body `{webHookType, orderId, idKey}` (JSON or form).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfWebhookBody {
    pub web_hook_type: String,
    #[serde(deserialize_with = "de_opt_string")]
    pub order_id: Option<String>,
    pub id_key: String,
}

/// The v2 webhook envelope `{timestamp (Long), version, event, data}` (dev-docs
/// `docs/08-1_웹훅_v2.md` "Webhook Request"); `data` is the event's schema
/// (`docs/08-1-1_Webhook-Events.md` names it per event).
#[derive(Debug, Clone, Deserialize)]
pub struct V2WebhookBody {
    #[serde(deserialize_with = "de_opt_string")]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

/// The v2 `Order` schema (dev-docs `docs/08-1-2_Webhook-Schema.md` "Order"): only what names
/// the order is read — everything else is asked of StepPay (`GET /api/v1/orders/{idOrCode}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2OrderData {
    /// `id` (Long, not null) — dev-docs `08-1-2_Webhook-Schema.md` Order.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id: Option<String>,
    /// `code` (String, not null; there is no `orderCode` in this schema) — same source.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub code: Option<String>,
    /// `type`: RECURRING | ONE_TIME | PAYMENT_METHOD | RECURRING_INITIAL | ADD_USAGE — same source.
    #[serde(default, rename = "type")]
    pub order_type: Option<String>,
    /// `subscriptions` (List (Long), nullable): the subscriptions the order relates to — same source.
    #[serde(default)]
    pub subscriptions: Option<Vec<Value>>,
    /// `idKey` (String, nullable) — same source.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id_key: Option<String>,
    /// `paidAmount` (Decimal, e.g. `19900.0`) — same source. Never used for money: the order
    /// lookup's amount is.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub paid_amount: Option<String>,
}

/// The v2 `Subscription` schema (dev-docs `docs/08-1-2_Webhook-Schema.md` "Subscription").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2SubscriptionData {
    /// `subscriptionId` (Long, not null) — dev-docs `08-1-2_Webhook-Schema.md` Subscription.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub subscription_id: Option<String>,
    /// `status` (SubscriptionStatus, not null) — same source. A pointer only: verify asks
    /// `GET /api/v1/subscriptions/{id}` for the status it acts on.
    #[serde(default)]
    pub status: Option<String>,
    /// `nextPaymentDate` (LocalDateTime, nullable) — same source; part of the dedupe key only.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub next_payment_date: Option<String>,
    /// `orderId` / `orderCode`: the order that *created* the subscription — same source.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub order_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub order_code: Option<String>,
}

/// The v2 `Payment` schema (dev-docs `docs/08-1-2_Webhook-Schema.md` "Payment").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2PaymentData {
    /// `paymentId` (Long, not null) — dev-docs `08-1-2_Webhook-Schema.md` Payment.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub payment_id: Option<String>,
    /// `idKey` (String, not null): what the receipt lookup is asked by — same source.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id_key: Option<String>,
    /// `orderId` (String): the partner's order id (our `partnerOrderId`) when `paymentOnly` is
    /// true, else StepPay's order number — same source. Never trusted: the receipt names it.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub order_id: Option<String>,
    /// `paidAmount` (Decimal), `paidAt` (LocalDateTime), `status` — same source.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub paid_amount: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub paid_at: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// `cancel{canceledAmount (Decimal), lastCanceledDate}` — same source.
    #[serde(default)]
    pub cancel: Option<V2PaymentCancel>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2PaymentCancel {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub canceled_amount: Option<String>,
}

/// `GET /api/v1/subscriptions/{id}` (step-api-spec `merge/v1.json` at 3ec8ceb9; PG-FACTS
/// "Subscriptions (managed mode)": `{id, status, …}`). Only `id` and `status` are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBody {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id: Option<String>,
    pub status: String,
}

/// A StepPay subscription's status (dev-docs `docs/08-1-2_Webhook-Schema.md` SubscriptionStatus;
/// the same list in PG-FACTS for `GET /api/v1/subscriptions/{id}`), exhaustive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Active,
    Incomplete,
    Unpaid,
    PendingPause,
    Pause,
    PendingCancel,
    Expired,
    Canceled,
    Queueing,
}

impl SubscriptionStatus {
    pub fn parse(s: &str) -> Result<Self, PgError> {
        Ok(match s {
            "ACTIVE" => Self::Active,
            "INCOMPLETE" => Self::Incomplete,
            "UNPAID" => Self::Unpaid,
            "PENDING_PAUSE" => Self::PendingPause,
            "PAUSE" => Self::Pause,
            "PENDING_CANCEL" => Self::PendingCancel,
            "EXPIRED" => Self::Expired,
            "CANCELED" => Self::Canceled,
            "QUEUEING" => Self::Queueing,
            other => {
                return Err(PgError::Unrecognized {
                    code: other.to_string(),
                    message: "unknown StepPay subscription status".into(),
                });
            }
        })
    }
}

/// Maps an error answer by its HTTP status (the module's table). `moves_money`: the call could
/// have charged or refunded.
pub fn classify(status: u16, body: &str, moves_money: bool) -> PgError {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    // Kept for people only: StepPay publishes no codes to decide on.
    let code = parsed.as_ref().map(|b| b.error_code.clone()).unwrap_or_else(|| status.to_string());
    let message = parsed.as_ref().and_then(|b| b.error_message.clone()).unwrap_or_default();
    if status == 401 || status == 403 {
        return PgError::Config { code, message: "StepPay refused the credentials (Secret-Token / Secret-Key)".into() };
    }
    if status >= 500 {
        let reason = format!("StepPay answered {status}");
        return if moves_money { PgError::Unknown { reason } } else { PgError::Transient { reason } };
    }
    let Some(b) = parsed else {
        return if moves_money {
            PgError::Unknown { reason: format!("StepPay answered {status} with an unreadable body") }
        } else if status == 404 {
            PgError::NotFound
        } else {
            PgError::Unrecognized { code, message: "unreadable StepPay error body".into() }
        };
    };
    match (status, moves_money) {
        (400 | 402 | 404 | 422, true) => PgError::Declined { hard: false, code, message },
        (409, true) => PgError::AlreadyProcessed {
            // Unconfirmed: StepPay documents no duplicate answer; an id it names is used, if any.
            pg_payment_id: b.details.get("idKey").and_then(Value::as_str).map(str::to_string),
        },
        (404, false) => PgError::NotFound,
        (400 | 402 | 422, false) => PgError::Invalid(format!("{code}: {message}")),
        _ => PgError::Unrecognized { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                let path = format!("{prefix}/{k}");
                out.push(path.clone());
                keys(v, &path, out);
            }
        }
    }

    #[test]
    fn billing_request_has_the_seed_shape() {
        // Seed 000's request body, placeholders replaced by values.
        let seed: Value = serde_json::from_str(
            r#"{"idKey": "k", "partner": {"partnerOrderId": "o", "partnerUserId": "u"},
                "product": {"itemName": "n", "amount": 1, "quantity": 1},
                "customer": {"userName": "n", "phone": "p", "email": "e"}}"#,
        )
        .unwrap();
        let ours = serde_json::to_value(BillingRequest {
            id_key: "k",
            partner: Partner { partner_order_id: "o", partner_user_id: "u" },
            product: Product { item_name: "n", amount: 1, quantity: 1 },
            customer: CustomerInfo { user_name: "n", phone: Some("p"), email: Some("e") },
        })
        .unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keys(&seed, "", &mut a);
        keys(&ours, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let cancel = serde_json::to_value(CancelRequest { id_key: "k", request_price: 1000 }).unwrap();
        assert_eq!(cancel, serde_json::json!({"idKey": "k", "requestPrice": 1000}));
    }

    /// StepPay publishes no error codes: the class of an error answer follows its HTTP status
    /// (and whether the call could move money), whatever `errorCode` says.
    #[test]
    fn steppay_errors_are_classified_by_status_never_by_an_invented_code() {
        let err = |code: &str| format!(r#"{{"traceId":"t","errorCode":"{code}","errorMessage":"m","details":null}}"#);
        let codes = [
            "PAYMENT_DECLINED",
            "BILLING_KEY_INVALID",
            "CARD_INVALID",
            "CANCEL_AMOUNT_EXCEEDED",
            "DUPLICATE_PARTNER_ORDER_ID",
            "PAYMENT_NOT_FOUND",
            "INVALID_REQUEST",
            "SOMETHING_NEW",
            "",
        ];
        for code in codes {
            for status in [400, 402, 404, 422] {
                assert!(
                    matches!(classify(status, &err(code), true), PgError::Declined { hard: false, .. }),
                    "{status} {code}: StepPay refused the charge or refund — no money moved, soft"
                );
            }
            assert!(matches!(classify(409, &err(code), true), PgError::AlreadyProcessed { .. }), "{code}");
            assert_eq!(classify(404, &err(code), false), PgError::NotFound, "{code}");
            assert!(matches!(classify(400, &err(code), false), PgError::Invalid(_)), "{code}");
            assert!(matches!(classify(500, &err(code), true), PgError::Unknown { .. }), "{code}");
        }
        let dup = r#"{"traceId":"t","errorCode":"X","errorMessage":"m","details":{"idKey":"k1"}}"#;
        assert_eq!(classify(409, dup, true), PgError::AlreadyProcessed { pg_payment_id: Some("k1".into()) });
    }

    #[test]
    fn statuses_map_exhaustively_and_errors_by_status() {
        for s in [
            "STANDBY",
            "COMPLETE",
            "CANCELED",
            "PARTIAL_CANCELED",
            "USER_CANCELED",
            "CANCELED_FAIL",
            "CANCEL_PROGRESS",
            "FAILED",
            "VIRTUAL_BANK_STANDBY",
            "CMS_STANDBY",
        ] {
            assert!(PaymentStatus::parse(s).is_ok(), "{s}");
        }
        assert!(matches!(PaymentStatus::parse("PAID"), Err(PgError::Unrecognized { .. })));
        let err = |code: &str| format!(r#"{{"traceId":"t","errorCode":"{code}","errorMessage":"m","details":null}}"#);
        assert!(
            matches!(classify(400, &err("SOMETHING_NEW"), true), PgError::Declined { hard: false, .. }),
            "an explicit refusal of a charge with a code nobody publishes is a soft decline"
        );
        assert!(matches!(classify(418, &err("SOMETHING_NEW"), true), PgError::Unrecognized { .. }));
        assert!(matches!(classify(401, "", true), PgError::Config { .. }));
        assert!(matches!(classify(502, "<html>", true), PgError::Unknown { .. }));
        assert!(matches!(classify(502, "<html>", false), PgError::Transient { .. }));
        assert!(
            matches!(classify(400, "not json", true), PgError::Unknown { .. }),
            "unreadable after sending a charge"
        );
    }
}
