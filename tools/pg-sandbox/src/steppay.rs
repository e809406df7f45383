//! StepPay, as its guides (seeds 000–002) and public OpenAPI specs describe it.
//!
//! Wire facts from the documents: `Secret-Token` on every call, `Secret-Key` on cancel; errors
//! `{traceId, errorCode, errorMessage, details}`; payment statuses; `orderCode` = `order_` + 9
//! characters; `idKey` = 13-digit epoch ms + 16 alphanumerics; self webhooks
//! `{webHookType, orderId, idKey}` as JSON or form; the pay page redirects with `order_id`,
//! `order_code`, `status`.
//!
//! v2 webhooks follow dev-docs `docs/08-1_웹훅_v2.md` (envelope `{timestamp, version, event,
//! data}`), `docs/08-1-1_Webhook-Events.md` (event types) and `docs/08-1-2_Webhook-Schema.md`
//! (`data` in the Order / Subscription / Payment schema): a paid order sends
//! `order.payment_completed`; a renewal that changes the subscription's status (UNPAID after a
//! decline, ACTIVE after a paid retry) sends `subscription.updated`; with
//! `steppay_payment_events`, billing charges send `payment.completed` / `payment.failed`.
//!
//! Sandbox choices where StepPay publishes nothing (unconfirmed; clients must not depend on more
//! than the documented fields): the billing charge's success body, the error codes of declines
//! (StepPay publishes none: the codes here are for people reading the sandbox; clients classify by
//! HTTP status), which events one renewal sends (and in which order: StepPay guarantees none), and
//! rejecting a repeated `partnerOrderId` with 409.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::{Span, Timestamp};
use serde_json::{Map, Value, json};

use crate::state::{Charge, FailedPayment, Fault, Operation, Order, Pg, Price, RefundEntry, Shared, Subscription, kst};
use crate::webhooks::{self, Webhook};

type Sh = State<Arc<Shared>>;

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let trace = format!("sandbox-{}", Timestamp::now().as_millisecond());
    (status, Json(json!({"traceId": trace, "errorCode": code, "errorMessage": message, "details": null})))
        .into_response()
}

fn iso(t: Timestamp) -> String {
    kst(t).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn authorized(shared: &Shared, headers: &HeaderMap, header: &str) -> Result<(), Response> {
    let token = shared.config().steppay_secret_token;
    match headers.get(header).and_then(|v| v.to_str().ok()) {
        Some(v) if v == token => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &format!("{header} is missing or invalid"))),
    }
}

/// A `Secret-Token` request's JSON body: 401 without the token, 400 for malformed JSON.
fn authorized_json(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    authorized(shared, headers, "Secret-Token")?;
    json_body(body)
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", &format!("malformed JSON: {e}")))
}

/// A whole amount that may arrive as a JSON number or a numeric string (the seeds quote some).
/// StepPay's amounts are decimals (`CancelRequestDTO.requestPrice` and `Product.amount` are
/// `number`, step-api-spec `service/payment.json` at 3ec8ceb9): `1000.0` is 1000; a fraction is
/// no amount of won (`None`, answered 400).
fn int(v: Option<&Value>) -> Option<i64> {
    let s = match v? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((&s, ""));
    if !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok()
}

/// An amount as StepPay writes it: a decimal number (`10000.0`, `0.0` in StepPay's examples,
/// step-api-spec `service/payment.json` `number` fields, dev-docs `08-1-2_Webhook-Schema.md`
/// `Decimal`). Sandbox amounts are far below 2^53, where an f64 holds every whole number exactly.
pub fn decimal(won: i64) -> Value {
    serde_json::Number::from_f64(won as f64).map_or(Value::Null, Value::Number)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Applies request-level faults; returns the fault for what follows (decline, timeout, webhook).
async fn pre_fault(shared: &Shared, op: Operation, billing_key: Option<&str>) -> Result<Option<Fault>, Response> {
    let fault = shared.state.lock().expect("state").take_fault(op, billing_key);
    match fault {
        Some(Fault::ServerError) => {
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR", "sandbox fault: 500"))
        }
        Some(Fault::TooManyRequests { retry_after_s }) => Err(crate::load::too_many_requests(retry_after_s)),
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(None)
        }
        other => Ok(other),
    }
}

async fn hold_if_timeout(shared: &Shared, fault: &Option<Fault>) {
    if matches!(fault, Some(Fault::TimeoutAfterCharge)) {
        tokio::time::sleep(Duration::from_millis(shared.config().timeout_after_charge_ms)).await;
    }
}

fn self_webhook(shared: &Arc<Shared>, kind: &str, order_id: u64, id_key: &str, fault: Option<Fault>) {
    let config = shared.config();
    let Some(url) = config.steppay_webhook_url else { return };
    let mut fields = Map::new();
    fields.insert("webHookType".into(), kind.into());
    fields.insert("orderId".into(), order_id.into());
    fields.insert("idKey".into(), id_key.into());
    let (content_type, body) = webhooks::encode(&fields, config.steppay_webhook_format);
    webhooks::deliver(shared.clone(), Webhook { pg: Pg::Steppay, url, content_type, body, headers: vec![] }, fault);
}

/// Sends a v2 webhook `{timestamp, version, event, data}` (dev-docs `docs/08-1_웹훅_v2.md`),
/// signed when a signing secret is set (`docs/08-1-3_Signature.md`).
fn v2_webhook(shared: &Arc<Shared>, event: &str, data: Value, fault: Option<Fault>) {
    let config = shared.config();
    let Some(url) = config.steppay_webhook_url else { return };
    let now = shared.state.lock().expect("state").now();
    // `version`: the API version the data's schema matches (the doc's example says "v1").
    let body = json!({"timestamp": now.as_second(), "version": "v1", "event": event, "data": data}).to_string();
    let mut headers = vec![];
    if let Some(secret) = &config.steppay_signing_secret {
        // Signed when sent, by the wall clock (the header's `timestamp` is when it was sent).
        let sent = Timestamp::now().as_second();
        headers.push(("Steppay-Signature".to_string(), webhooks::steppay_signature(secret, sent, &body)));
    }
    webhooks::deliver(
        shared.clone(),
        Webhook { pg: Pg::Steppay, url, content_type: "application/json", body, headers },
        fault,
    );
}

/// `data` of an order event: the `Order` schema of dev-docs `docs/08-1-2_Webhook-Schema.md`
/// (`id`, `code` — no `orderCode` —, `type`, Decimal amounts, `subscriptions` as ids).
fn order_webhook_data(state: &crate::state::State, o: &Order) -> Value {
    let charge = state.charge(Pg::Steppay, &o.id_key);
    let paid = charge.map(|c| c.amount).unwrap_or(0);
    let returned = charge.map(|c| c.refunded).unwrap_or(0);
    json!({
        "id": o.order_id,
        "code": o.order_code,
        "type": o.order_type,
        "paidAmount": decimal(paid),
        "returnedAmount": decimal(returned),
        "leftAmount": decimal(if o.paid { 0 } else { o.price.amount }),
        "discountedAmount": decimal(0),
        "productName": o.price.product_name,
        "paymentDate": o.payment_date.map(iso),
        "createdAt": iso(o.created_at),
        "idKey": o.id_key,
        "customerId": o.customer_id,
        "subscriptions": o.subscription_id.map(|id| vec![id]).unwrap_or_default(),
    })
}

/// `data` of a subscription event: the `Subscription` schema of dev-docs
/// `docs/08-1-2_Webhook-Schema.md` (`subscriptionId`, `status`, and the `orderId`/`orderCode` of
/// the order that *created* it).
fn subscription_webhook_data(state: &crate::state::State, s: &Subscription) -> Value {
    let first = s.orders.first().and_then(|id| state.orders.iter().find(|o| o.order_id == *id));
    json!({
        "subscriptionId": s.id,
        "status": s.status,
        "createdAt": iso(s.start_date),
        "lastPaymentDate": iso(s.last_payment_date),
        "nextPaymentDate": iso(s.next_payment_date),
        "orderId": first.map(|o| o.order_id),
        "orderCode": first.map(|o| o.order_code.clone()),
        "customerId": s.customer_id,
        "intervalUnit": s.price.interval.clone().unwrap_or_else(|| "MONTH".into()),
        "intervalCount": s.price.interval_count.max(1),
        "currentPeriod": {"startDateTime": iso(s.last_payment_date), "endDateTime": iso(s.next_payment_date)},
    })
}

/// `data` of a payment event: the `Payment` schema of dev-docs `docs/08-1-2_Webhook-Schema.md`
/// (`orderId` is the partner's order id when `paymentOnly` is true — billing charges are).
fn payment_webhook_data(c: &Charge) -> Value {
    json!({
        "paymentId": c.order_id,
        "idKey": c.id,
        "orderId": c.partner_order_id,
        "productName": c.goods,
        "paidAmount": decimal(c.amount),
        "paidAt": iso(c.paid_at),
        "status": c.status,
        "paymentGateway": "UNKNOWN",
        "paymentMethod": c.method,
        "paymentOnly": c.partner_order_id.is_some(),
        "errorMessage": null,
        "cancel": (c.refunded > 0).then(|| json!({"canceledAmount": decimal(c.refunded)})),
    })
}

fn failed_payment_webhook_data(f: &FailedPayment) -> Value {
    json!({
        "paymentId": f.payment_id,
        "idKey": f.id_key,
        "orderId": f.partner_order_id,
        "productName": f.goods,
        "paidAmount": decimal(0),
        "paidAt": null,
        "status": "FAILED",
        "paymentGateway": "UNKNOWN",
        "paymentMethod": "CARD_BILL",
        "paymentOnly": true,
        "errorMessage": "잔액이 부족합니다 (sandbox decline)",
        "cancel": null,
    })
}

/// A failed billing payment's webhook: `payment.failed` when the partner subscribed `payment.*`,
/// else the self webhook `FAILED` (seeds 000/001).
fn failed_payment_webhook(shared: &Arc<Shared>, f: &FailedPayment) {
    if shared.config().steppay_payment_events {
        v2_webhook(shared, "payment.failed", failed_payment_webhook_data(f), None);
    } else {
        self_webhook(shared, "FAILED", f.payment_id, &f.id_key, None);
    }
}

fn decline_response(hard: bool) -> Response {
    if hard {
        error(StatusCode::BAD_REQUEST, "BILLING_KEY_INVALID", "사용할 수 없는 빌링키입니다 (sandbox hard decline)")
    } else {
        error(StatusCode::BAD_REQUEST, "PAYMENT_DECLINED", "잔액이 부족합니다 (sandbox soft decline)")
    }
}

fn payment_json(c: &Charge) -> Value {
    json!({
        "idKey": c.id,
        "orderId": c.order_id,
        "paymentStatus": c.status,
        "paymentDate": iso(c.paid_at),
        "amount": decimal(c.amount),
        "canceledAmount": decimal(c.refunded),
        "paymentMethod": c.method,
        "partnerOrderId": c.partner_order_id,
        "productName": c.goods,
    })
}

/// `POST /api/payment/billing` — charge a billing key (seeds 000/001).
pub async fn billing(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id_key = text(v.get("idKey"));
    let partner_order_id = text(v.pointer("/partner/partnerOrderId"));
    let item_name = text(v.pointer("/product/itemName")).unwrap_or_default();
    let amount = int(v.pointer("/product/amount"));
    let quantity = int(v.pointer("/product/quantity")).unwrap_or(1);
    let (Some(id_key), Some(amount)) = (id_key, amount) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "idKey and product.amount are required");
    };
    let Some(total) = amount.checked_mul(quantity).filter(|t| *t > 0) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "amount × quantity must be a positive amount");
    };
    let fault = match pre_fault(&shared, Operation::Charge, Some(&id_key)).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(Fault::TimeoutAfterDecline) = fault {
        let failed = {
            let mut state = shared.state.lock().expect("state");
            if state.steppay_billing_keys.get(&id_key) != Some(&false) {
                return error(StatusCode::BAD_REQUEST, "BILLING_KEY_NOT_FOUND", "빌링키를 찾을 수 없습니다");
            }
            let now = state.now();
            let failed = FailedPayment {
                id_key: shared.steppay_id_key(now),
                payment_id: shared.next_number(),
                partner_order_id: partner_order_id.clone(),
                amount: total,
                goods: item_name.clone(),
                at: now,
            };
            state.steppay_failed_payments.push(failed.clone());
            failed
        };
        failed_payment_webhook(&shared, &failed);
        tokio::time::sleep(Duration::from_millis(shared.config().timeout_after_charge_ms)).await;
        return decline_response(false);
    }
    let (charge, webhook_fault) = {
        let mut state = shared.state.lock().expect("state");
        match state.steppay_billing_keys.get(&id_key) {
            Some(false) => {}
            _ => return error(StatusCode::BAD_REQUEST, "BILLING_KEY_NOT_FOUND", "빌링키를 찾을 수 없습니다"),
        }
        if let Some(Fault::Decline { hard }) = fault {
            return decline_response(hard);
        }
        if let Some(Fault::DeclineWithCode { code }) = &fault {
            // StepPay's documented error shape `{traceId, errorCode, errorMessage, details}` on 400.
            return error(StatusCode::BAD_REQUEST, code, "카드사 승인 거절 (sandbox: an issuer code no client lists)");
        }
        if let Some(poid) = &partner_order_id {
            if let Some(existing) =
                state.charges.iter().find(|c| c.pg == Pg::Steppay && c.partner_order_id.as_deref() == Some(poid))
            {
                let existing = existing.id.clone();
                drop(state);
                // Unconfirmed (StepPay documents no duplicate answer): a 409 Conflict in the
                // documented error body, naming the existing payment in `details`.
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"traceId": "sandbox", "errorCode": "DUPLICATE_PARTNER_ORDER_ID",
                        "errorMessage": "이미 처리된 주문번호입니다", "details": {"idKey": existing}})),
                )
                    .into_response();
            }
        }
        let now = state.now();
        let charge = Charge {
            pg: Pg::Steppay,
            id: shared.steppay_id_key(now),
            amount: total,
            refunded: 0,
            status: "COMPLETE".into(),
            billing_key: Some(id_key.clone()),
            partner_order_id,
            order_id: Some(shared.next_number()),
            method: "CARD_BILL".into(),
            goods: item_name,
            payer_name: text(v.pointer("/customer/userName")),
            paid_at: now,
            pay_date: crate::state::yyyymmdd(now),
            pay_time: crate::state::yyyymmddhhmmss(now),
            trade_no: shared.random(20),
        };
        state.charges.push(charge.clone());
        (charge, fault.clone().filter(is_webhook_fault))
    };
    self_webhook(&shared, "PAYMENT", charge.order_id.unwrap_or(0), &charge.id, webhook_fault);
    if shared.config().steppay_payment_events {
        v2_webhook(&shared, "payment.completed", payment_webhook_data(&charge), None);
    }
    hold_if_timeout(&shared, &fault).await;
    (StatusCode::OK, Json(payment_json(&charge))).into_response()
}

fn is_webhook_fault(f: &Fault) -> bool {
    matches!(f, Fault::WebhookTwice | Fault::WebhookLate { .. } | Fault::WebhookOutOfOrder)
}

/// Refunds `price` of StepPay payment `id_key` in the ledger: `(tid, payment status, order id)`,
/// or StepPay's refusal (no such payment, more than remains).
fn refund_charge(
    shared: &Shared,
    state: &mut crate::state::State,
    id_key: &str,
    price: i64,
    now: Timestamp,
) -> Result<(String, String, u64), Response> {
    let tid = shared.random(20);
    let Some(charge) = state.charge_mut(Pg::Steppay, id_key) else {
        return Err(error(StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND", "결제를 찾을 수 없습니다"));
    };
    let remaining = charge.amount - charge.refunded;
    if price > remaining {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "CANCEL_AMOUNT_EXCEEDED",
            &format!("취소 가능 금액({remaining})을 초과했습니다"),
        ));
    }
    charge.refunded += price;
    charge.status = if charge.refunded == charge.amount { "CANCELED" } else { "PARTIAL_CANCELED" }.into();
    let (status, order_id) = (charge.status.clone(), charge.order_id.unwrap_or(0));
    state.refunds.push(RefundEntry {
        pg: Pg::Steppay,
        charge_id: id_key.to_string(),
        amount: price,
        tid: tid.clone(),
        at: now,
    });
    Ok((tid, status, order_id))
}

/// `POST /api/internal/payment/cancel` — full or partial refund (`Secret-Key`).
pub async fn cancel(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&shared, &headers, "Secret-Key") {
        return r;
    }
    let v = match json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(id_key), Some(price)) = (text(v.get("idKey")), int(v.get("requestPrice"))) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "idKey and requestPrice are required");
    };
    if price <= 0 {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "requestPrice must be positive");
    }
    let fault = match pre_fault(&shared, Operation::Refund, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(Fault::Decline { .. }) = fault {
        return error(StatusCode::BAD_REQUEST, "CANCEL_FAILED", "취소에 실패했습니다 (sandbox decline)");
    }
    // StepPay accepted the cancel and finishes it later: it answers `CANCEL_PROGRESS` now and
    // the receipt shows the outcome once done (the ledger records the refund it will make).
    let in_progress = fault == Some(Fault::CancelInProgress);
    let (response, order_id) = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        if state.orders.iter().any(|o| o.id_key == id_key) {
            // Sandbox choice: a managed order's payment is refunded through its order (merge/v1.json
            // `v1_cancelOrder`), the way a partner of StepPay managed is told to.
            return error(StatusCode::BAD_REQUEST, "ORDER_PAYMENT", "주문 결제는 주문 취소 API로 환불합니다 (sandbox)");
        }
        let (tid, status, order_id) = match refund_charge(&shared, &mut state, &id_key, price, now) {
            Ok(done) => done,
            Err(r) => return r,
        };
        let status = if in_progress { "CANCEL_PROGRESS".to_string() } else { status };
        // step-api-spec `service/payment.json` (3ec8ceb9) `ApiResponseCancelResponse`: `result`
        // boolean, `code` int32, `message`, `id` string, `response` = `CancelResponse{tid,
        // paymentReceiptUrl, cancelPayment: CancelPaymentDTO{canceledAmount number, tid,
        // paymentStatus, canceledDate}}`. The values of `code` and `id` are not documented
        // (unconfirmed): the sandbox sends 0 and the order id.
        let response = json!({
            "result": true,
            "code": 0,
            "message": "취소 성공",
            "id": order_id.to_string(),
            "response": {
                "tid": tid,
                "paymentReceiptUrl": format!("https://sandbox.invalid/receipt/{id_key}"),
                "cancelPayment": {"canceledAmount": decimal(price), "tid": tid, "paymentStatus": status,
                                  "canceledDate": iso(now)}
            }
        });
        (response, order_id)
    };
    self_webhook(&shared, "CANCELED", order_id, &id_key, fault.clone().filter(is_webhook_fault));
    hold_if_timeout(&shared, &fault).await;
    (StatusCode::OK, Json(response)).into_response()
}

/// `GET /api/payment/receipt/{idKey}` — `paymentDate` is non-null iff paid.
pub async fn receipt(State(shared): Sh, headers: HeaderMap, Path(id_key): Path<String>) -> Response {
    if let Err(r) = authorized(&shared, &headers, "Secret-Token") {
        return r;
    }
    let fault = match pre_fault(&shared, Operation::Lookup, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let state = shared.state.lock().expect("state");
    if let Some(c) = state.charge(Pg::Steppay, &id_key) {
        let mut v = payment_json(c);
        if fault == Some(Fault::CancelInProgress) {
            v["paymentStatus"] = "CANCEL_PROGRESS".into();
            v["canceledAmount"] = Value::Null;
        }
        if fault == Some(Fault::ReceiptWithoutPaymentDate) {
            v["paymentDate"] = Value::Null;
        }
        if fault == Some(Fault::LookupLags) {
            let latest = state.refunds.iter().rev().find(|r| r.pg == Pg::Steppay && r.charge_id == id_key);
            let before = c.refunded - latest.map_or(0, |r| r.amount);
            v["paymentStatus"] = if before == 0 { "COMPLETE" } else { "PARTIAL_CANCELED" }.into();
            v["canceledAmount"] = before.into();
        }
        return Json(v).into_response();
    }
    if let Some(f) = state.steppay_failed_payments.iter().find(|f| f.id_key == id_key) {
        return Json(json!({"idKey": id_key, "orderId": f.payment_id, "paymentStatus": "FAILED", "paymentDate": null,
            "amount": f.amount, "canceledAmount": 0, "paymentMethod": "CARD_BILL",
            "partnerOrderId": f.partner_order_id, "productName": f.goods}))
        .into_response();
    }
    if let Some(o) = state.orders.iter().find(|o| o.id_key == id_key) {
        let status = if o.failed.is_some() { "FAILED" } else { "STANDBY" };
        return Json(json!({"idKey": id_key, "orderId": o.order_id, "paymentStatus": status, "paymentDate": null,
            "amount": decimal(o.price.amount), "canceledAmount": decimal(0), "paymentMethod": null}))
        .into_response();
    }
    error(StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND", "결제를 찾을 수 없습니다")
}

/// `POST /api/v1/customers` — step-api-spec `service/account.json` (3ec8ceb9) `CustomerCreateDTO`
/// `{name*, email*, phone, marketingSms*, marketingEmail*, marketingKakao*, attributes*}`: there is
/// no `code` input (one sent is ignored); StepPay answers 201 `CustomerV1DTO` with its own `id` and
/// `code` (the sandbox's code format `customer_` + 9 characters is unconfirmed).
pub async fn create_customer(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(name), Some(email)) = (text(v.get("name")), text(v.get("email"))) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "name and email are required");
    };
    let flags = ["marketingSms", "marketingEmail", "marketingKakao"];
    if !flags.iter().all(|f| v.get(*f).is_some_and(Value::is_boolean))
        || !v.get("attributes").is_some_and(Value::is_object)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "marketingSms, marketingEmail, marketingKakao (booleans) and attributes (object) are required",
        );
    }
    let id = shared.next_number();
    let customer = crate::state::Customer {
        id,
        code: format!("customer_{}", shared.random(9)),
        uuid: shared.random(32),
        name,
        email,
        phone: text(v.get("phone")),
        marketing: flags.map(|f| v.get(f).and_then(Value::as_bool).unwrap_or(false)),
        created_at: shared.state.lock().expect("state").now(),
    };
    shared.state.lock().expect("state").customers.push(customer.clone());
    // CustomerV1DTO (step-api-spec `service/account.json`; pg-shapes steppay/customer-response.json).
    let c = &customer;
    let [sms, email, kakao] = c.marketing;
    let answer = json!({"id": c.id, "code": c.code, "name": c.name, "email": c.email, "phone": c.phone,
        "marketingSms": sms, "marketingEmail": email, "marketingKakao": kakao, "createdAt": iso(c.created_at)});
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// An order's `customer` (merge/v1.json `OrderCustomer`; pg-shapes steppay/order.json).
fn order_customer_json(c: &crate::state::Customer) -> Value {
    let [sms, email, kakao] = c.marketing;
    json!({"id": c.id, "uuid": c.uuid, "code": c.code, "status": "NORMAL", "name": c.name, "email": c.email,
        "phone": c.phone, "marketingSms": sms, "marketingEmail": email, "marketingKakao": kakao,
        "attributes": {}, "createdAt": iso(c.created_at)})
}

/// `POST /api/v1/orders` (managed mode).
pub async fn create_order(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut state = shared.state.lock().expect("state");
    let customer = state
        .customers
        .iter()
        .find(|c| {
            int(v.get("customerId")) == Some(c.id as i64)
                || text(v.get("customerCode")).as_deref() == Some(c.code.as_str())
                || text(v.get("customerUuid")).as_deref() == Some(c.uuid.as_str())
        })
        .cloned();
    let Some(customer) = customer else {
        return error(StatusCode::BAD_REQUEST, "CUSTOMER_NOT_FOUND", "고객을 찾을 수 없습니다");
    };
    let Some(item) = v.get("items").and_then(Value::as_array).and_then(|a| a.first()) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "items are required");
    };
    let (product, price_code) = (text(item.get("productCode")), text(item.get("priceCode")));
    let price = state
        .prices
        .iter()
        .find(|p| Some(&p.product_code) == product.as_ref() && Some(&p.price_code) == price_code.as_ref())
        .cloned();
    let Some(price) = price else {
        return error(StatusCode::BAD_REQUEST, "PRICE_NOT_FOUND", "상품 가격을 찾을 수 없습니다");
    };
    let now = state.now();
    let order = Order {
        order_id: shared.next_number(),
        order_code: format!("order_{}", shared.random(9)),
        id_key: shared.steppay_id_key(now),
        // A subscription's first order is RECURRING_INITIAL, its renewals RECURRING (dev-docs
        // `08-1-2_Webhook-Schema.md` OrderType).
        order_type: if price.interval.is_some() { "RECURRING_INITIAL" } else { "ONE_TIME" }.into(),
        customer_id: customer.id,
        price,
        paid: false,
        failed: None,
        subscription_id: None,
        parent_subscription: None,
        changes_payment_of: None,
        created_at: now,
        payment_date: None,
    };
    created_order(&mut state, order)
}

/// Keeps a new order and answers it: 201 with `OrderV1DTO` without `id` (merge/v1.json shows
/// `id` only on GET).
fn created_order(state: &mut crate::state::State, order: Order) -> Response {
    state.orders.push(order.clone());
    let mut body = order_json(state, &order);
    body.as_object_mut().map(|m| m.remove("id"));
    (StatusCode::CREATED, Json(body)).into_response()
}

fn order_json(state: &crate::state::State, o: &Order) -> Value {
    // merge/v1.json `OrderV1DTO` as transcribed in pg-shapes steppay/order.json: every required
    // field, amounts as decimals, `subscriptions` and `parentSubscription` as subscription objects.
    let customer = state.customers.iter().find(|c| c.id == o.customer_id).map(order_customer_json);
    let charge = state.charge(Pg::Steppay, &o.id_key);
    let paid = charge.map(|c| c.amount).unwrap_or(0);
    let returned = charge.map(|c| c.refunded).unwrap_or(0);
    let subscription = |id: u64| state.subscriptions.iter().find(|s| s.id == id).map(order_subscription_json);
    json!({
        "id": o.order_id,
        "orderId": o.order_id,
        "orderCode": o.order_code,
        "code": o.order_code,
        "type": o.order_type,
        "paidAmount": decimal(paid),
        "returnedAmount": decimal(returned),
        "leftAmount": decimal(if o.paid { 0 } else { o.price.amount }),
        "discountedAmount": decimal(0),
        "productName": o.price.product_name,
        "items": [order_item_json(o, paid)],
        "customer": customer,
        "paymentDate": o.payment_date.map(iso),
        "payment": charge.map(|c| json!({
            "paymentMethod": c.method, "paymentDate": iso(c.paid_at), "amount": c.amount, "discount": 0,
            "paymentReceiptUrl": format!("https://sandbox.invalid/receipt/{}", c.id), "paymentGateway": "PAYPLE",
            "cardNumber": "1234-****-****-5678", "errorCode": null, "errorMessage": null})).or_else(|| o.failed.as_ref().map(|(code, msg)| json!({
            "paymentMethod": null, "paymentDate": null, "amount": o.price.amount, "discount": 0, "errorCode": code, "errorMessage": msg}))),
        "orderLogs": [],
        "subscriptions": o.subscription_id.and_then(subscription).into_iter().collect::<Vec<_>>(),
        "parentSubscription": o.parent_subscription.and_then(subscription),
        "relatedOrders": [],
        "idKey": o.id_key,
        "createdAt": iso(o.created_at),
        "modifiedAt": iso(o.payment_date.unwrap_or(o.created_at)),
    })
}

/// The order's one item (merge/v1.json `OrderItemV1DTO`).
fn order_item_json(o: &Order, paid: i64) -> Value {
    let status = if o.paid { "PAID" } else { "CREATED" };
    json!({
        "id": o.order_id, "code": o.price.price_code, "orderItemCode": format!("{}-1", o.order_code),
        "paidAmount": decimal(paid), "currency": "KRW", "quantity": 1, "minimumQuantity": 1, "status": status,
        "orderedProductType": "SOFTWARE", "orderedProductName": o.price.product_name,
        "orderedPlanName": o.price.price_code, "selectedProductOptionIds": [],
        "createdAt": iso(o.created_at), "modifiedAt": iso(o.payment_date.unwrap_or(o.created_at)),
    })
}

/// A subscription inside an order (merge/v1.json `SubscriptionV1DTO` as an order's `subscriptions`
/// or `parentSubscription`; the price plan is an object StepPay defines and nothing of ours reads).
fn order_subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id, "status": s.status, "items": [], "price": price_json(&s.price),
        "startDate": iso(s.start_date), "lastPaymentDate": iso(s.last_payment_date),
        "nextPaymentDate": iso(s.next_payment_date), "interval": s.price.interval, "intervalCount": s.price.interval_count,
    })
}

/// A price plan: merge/v1.json `PriceV1DTO`, an object pg-shapes does not transcribe (nothing of
/// ours reads it), so the fields inside are the sandbox's own choice, not StepPay's.
fn price_json(p: &crate::state::Price) -> Value {
    json!({"code": p.price_code, "price": decimal(p.amount), "planName": p.price_code, "productCode": p.product_code})
}

/// `GET /api/v1/orders/{orderIdOrCode}`.
pub async fn get_order(State(shared): Sh, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&shared, &headers, "Secret-Token") {
        return r;
    }
    if let Err(r) = pre_fault(&shared, Operation::Lookup, None).await {
        return r;
    }
    let state = shared.state.lock().expect("state");
    match state.orders.iter().find(|o| o.order_code == id || o.order_id.to_string() == id) {
        Some(o) => Json(order_json(&state, o)).into_response(),
        None => error(StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", "주문을 찾을 수 없습니다"),
    }
}

/// `GET /api/v1/subscriptions/{id}` (merge/v1.json `SubscriptionV1DTO`; pg-shapes
/// steppay/subscription.json): the customer, the price plan as an object, the current period.
fn subscription_json(state: &crate::state::State, s: &Subscription) -> Value {
    // `SubscriptionCustomerV1DTO`: an order's customer without `createdAt`.
    let customer = state.customers.iter().find(|c| c.id == s.customer_id).map(|c| {
        let mut customer = order_customer_json(c);
        customer.as_object_mut().map(|m| m.remove("createdAt"));
        customer
    });
    json!({
        "id": s.id, "status": s.status, "price": price_json(&s.price), "startDate": iso(s.start_date),
        "lastPaymentDate": iso(s.last_payment_date), "nextPaymentDate": iso(s.next_payment_date),
        "interval": s.price.interval, "intervalCount": s.price.interval_count, "recurringCount": s.recurring_count,
        "currentPeriod": {"startDateTime": iso(s.last_payment_date), "endDateTime": iso(s.next_payment_date)},
        "customer": customer, "relatedOrders": [],
    })
}

/// `GET /api/v1/subscriptions/{id}`.
pub async fn get_subscription(State(shared): Sh, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = authorized(&shared, &headers, "Secret-Token") {
        return r;
    }
    let state = shared.state.lock().expect("state");
    match state.subscriptions.iter().find(|s| s.id == id) {
        Some(s) => Json(subscription_json(&state, s)).into_response(),
        None => error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "구독을 찾을 수 없습니다"),
    }
}

/// `POST /api/v1/subscriptions/{id}/cancel {whenToCancel: NOW | END_OF_PERIOD}`: CANCELED at
/// once, or PENDING_CANCEL (no more renewals) until the period ends.
pub async fn cancel_subscription(State(shared): Sh, headers: HeaderMap, Path(id): Path<u64>, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let status = match text(v.get("whenToCancel")).as_deref() {
        Some("NOW") => "CANCELED",
        Some("END_OF_PERIOD") => "PENDING_CANCEL",
        _ => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "whenToCancel must be NOW or END_OF_PERIOD"),
    };
    if let Err(r) = pre_fault(&shared, Operation::Lifecycle, None).await {
        return r;
    }
    let mut state = shared.state.lock().expect("state");
    match state.subscriptions.iter_mut().find(|s| s.id == id) {
        Some(s) if s.status == "CANCELED" => {
            error(StatusCode::CONFLICT, "SUBSCRIPTION_ALREADY_CANCELED", "이미 해지된 구독입니다 (sandbox code)")
        }
        Some(s) => {
            s.status = status.into();
            let s = s.clone();
            api_response(StatusCode::OK, format!("구독이 {status} 상태가 되었습니다"), subscription_json(&state, &s))
        }
        None => error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "구독을 찾을 수 없습니다"),
    }
}

/// merge/v1.json `ProductApiresponse{message, body}` (pg-shapes steppay/api-response.json), the
/// answer of subscription cancel/pause/active and order cancel; `body`'s fields are not documented.
fn api_response(status: StatusCode, message: String, body: Value) -> Response {
    (status, Json(json!({"message": message, "body": body}))).into_response()
}

/// `PATCH /api/v1/orders/{orderIdOrCode}/cancel` `ReqV1{requestPrice*, reason}` (merge/v1.json at
/// 3ec8ceb9, `v1_cancelOrder`: "결제가 완료된 주문건은 환불되며, 그렇지 않은 주문은 취소됩니다"). 200
/// `ProductApiresponse{message, body}` ([`api_response`]); clients rely on the 2xx alone.
/// Faults: `operation: refund`.
pub async fn cancel_order(State(shared): Sh, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(price) = int(v.get("requestPrice")).filter(|p| *p > 0) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "requestPrice must be a positive amount");
    };
    let fault = match pre_fault(&shared, Operation::Refund, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(Fault::Decline { .. }) = fault {
        return error(StatusCode::BAD_REQUEST, "CANCEL_FAILED", "취소에 실패했습니다 (sandbox decline)");
    }
    {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let Some(order) = state.orders.iter().find(|o| o.order_code == id || o.order_id.to_string() == id).cloned()
        else {
            return error(StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", "주문을 찾을 수 없습니다");
        };
        if !order.paid {
            return error(StatusCode::BAD_REQUEST, "ORDER_NOT_PAID", "결제되지 않은 주문입니다 (sandbox)");
        }
        if let Err(r) = refund_charge(&shared, &mut state, &order.id_key, price, now) {
            return r;
        }
    }
    hold_if_timeout(&shared, &fault).await;
    api_response(StatusCode::OK, "주문이 취소되었습니다".into(), Value::Null)
}

/// Changes a managed subscription's status if it is in one of `from` (merge/v1.json at 3ec8ceb9).
async fn lifecycle(shared: &Arc<Shared>, id: u64, from: &[&str], to: &str, ok: StatusCode) -> Response {
    if let Err(r) = pre_fault(shared, Operation::Lifecycle, None).await {
        return r;
    }
    let mut state = shared.state.lock().expect("state");
    match state.subscriptions.iter_mut().find(|s| s.id == id) {
        Some(s) if from.contains(&s.status.as_str()) => {
            s.status = to.into();
            api_response(ok, format!("구독이 {to} 상태가 되었습니다"), Value::Null)
        }
        Some(s) => error(
            StatusCode::BAD_REQUEST,
            "INVALID_SUBSCRIPTION_STATUS",
            &format!("{} 상태의 구독은 변경할 수 없습니다 (sandbox code)", s.status),
        ),
        None => error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "구독을 찾을 수 없습니다"),
    }
}

/// `POST /api/v1/subscriptions/{id}/pause` `SubscriptionPauseDTO{whenToPause, …}`: "활성화 상태의
/// 구독만 일시정지 할 수 있습니다" (merge/v1.json `v1_pauseSubscription`), 200; `whenToPause` and
/// `whenToResume` as `SubscriptionPauseDTO` lists them (pg-shapes steppay/subscription-pause-request.json).
pub async fn pause_subscription(State(shared): Sh, headers: HeaderMap, Path(id): Path<u64>, body: Bytes) -> Response {
    let v = match authorized_json(&shared, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let to = match text(v.get("whenToPause")).as_deref() {
        // merge/v1.json SubscriptionPauseDTO: whenToPause IMMEDIATE | LAZY (LAZY taken as "at the end
        // of the period": the sandbox's reading, the document does not say).
        Some("IMMEDIATE") => "PAUSE",
        Some("LAZY") => "PENDING_PAUSE",
        _ => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "whenToPause must be IMMEDIATE or LAZY"),
    };
    // whenToResume is required (NOTHING: until resumed by /active; PAUSED_UNTIL needs `until`).
    match (text(v.get("whenToResume")).as_deref(), v.get("until")) {
        (Some("NOTHING"), _) | (Some("PAUSED_UNTIL"), Some(Value::Object(_))) => {}
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "whenToResume must be NOTHING or PAUSED_UNTIL with until",
            );
        }
    }
    lifecycle(&shared, id, &["ACTIVE"], to, StatusCode::OK).await
}

/// `PUT /api/v1/subscriptions/{id}/payment-method` `SubscriptionChangePaymentMethodDTO{paymentGateway?}`
/// (gateway/v1_product.json `v1_changePaymentMethod`): "구독의 결제수단을 변경할 때 호출합니다. 변경을
/// 위한 주문이 생성됩니다." — 201 with the order (`type: PAYMENT_METHOD`, dev-docs 06_구독..md). The
/// customer pays it on the pay page, which registers the new card as the subscription's. Its
/// amount is not documented: 0원 here (unconfirmed). A canceled or expired subscription takes none
/// (the sandbox's reading: "취소된 구독은 다시 복구될 수 없습니다").
pub async fn change_payment_method(
    State(shared): Sh,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() { Bytes::from_static(b"{}") } else { body };
    if let Err(r) = authorized_json(&shared, &headers, &body) {
        return r;
    }
    if let Err(r) = pre_fault(&shared, Operation::Lifecycle, None).await {
        return r;
    }
    let mut state = shared.state.lock().expect("state");
    let now = state.now();
    let sub = match state.subscriptions.iter().find(|s| s.id == id) {
        Some(s) if !["CANCELED", "EXPIRED"].contains(&s.status.as_str()) => s.clone(),
        Some(s) => {
            let message = format!("{} 상태의 구독은 변경할 수 없습니다 (sandbox code)", s.status);
            return error(StatusCode::BAD_REQUEST, "INVALID_SUBSCRIPTION_STATUS", &message);
        }
        None => return error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "구독을 찾을 수 없습니다"),
    };
    let order = Order {
        order_id: shared.next_number(),
        order_code: format!("order_{}", shared.random(9)),
        id_key: shared.steppay_id_key(now),
        order_type: "PAYMENT_METHOD".into(),
        customer_id: sub.customer_id,
        price: Price { amount: 0, ..sub.price.clone() },
        paid: false,
        failed: None,
        // The order relates to the subscription it changes (`subscriptions`, the sandbox's
        // reading): paycycle must tell it from a renewal by its type, not by that link.
        subscription_id: Some(id),
        parent_subscription: None,
        changes_payment_of: Some(id),
        created_at: now,
        payment_date: None,
    };
    created_order(&mut state, order)
}

/// `POST /api/v1/subscriptions/{id}/active`, no body: "일시정지 및 취소 대기중 상태만 변경가능합니다"
/// (merge/v1.json `v1_activeSubscription`), 201.
pub async fn activate_subscription(State(shared): Sh, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = authorized(&shared, &headers, "Secret-Token") {
        return r;
    }
    lifecycle(&shared, id, &["PAUSE", "PENDING_PAUSE", "PENDING_CANCEL"], "ACTIVE", StatusCode::CREATED).await
}

fn add_interval(t: Timestamp, price: &Price, n: u32) -> Timestamp {
    let count = i64::from(price.interval_count.max(1) * n);
    let span = match price.interval.as_deref() {
        Some("DAY") => Span::new().days(count),
        Some("WEEK") => Span::new().weeks(count),
        Some("YEAR") => Span::new().years(count),
        _ => Span::new().months(count),
    };
    kst(t).checked_add(span).map(|z| z.timestamp()).unwrap_or(t)
}

fn with_query(url: &str, order: &Order, status: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}order_id={}&order_code={}&status={status}", order.order_id, order.order_code)
}

/// `GET /api/public/orders/{orderCode}/pay?successUrl&errorUrl` — the customer pays (or fails,
/// by scenario) and is redirected back with `order_id`, `order_code`, `status` (seed 002).
pub async fn pay_page(
    State(shared): Sh,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(success), Some(error_url)) = (q.get("successUrl"), q.get("errorUrl")) else {
        return (StatusCode::BAD_REQUEST, "successUrl and errorUrl are required").into_response();
    };
    let fault = match pre_fault(&shared, Operation::Charge, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (order, webhook) = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let Some(index) = state.orders.iter().position(|o| o.order_code == code) else {
            return (StatusCode::NOT_FOUND, "no such order").into_response();
        };
        if state.orders[index].paid {
            let o = state.orders[index].clone();
            return Redirect::to(&with_query(success, &o, "success")).into_response();
        }
        if let Some(Fault::Decline { hard }) = fault {
            let reason = if hard {
                ("CARD_INVALID", "사용할 수 없는 카드입니다")
            } else {
                ("PAYMENT_DECLINED", "잔액이 부족합니다")
            };
            state.orders[index].failed = Some((reason.0.into(), reason.1.into()));
            let o = state.orders[index].clone();
            return Redirect::to(&with_query(error_url, &o, "error")).into_response();
        }
        let mut o = state.orders[index].clone();
        if let Some(sub_id) = o.changes_payment_of {
            // A card registration: nothing charged; the order's idKey becomes the subscription's key.
            o.paid = true;
            o.payment_date = Some(now);
            state.steppay_billing_keys.insert(o.id_key.clone(), false);
            if let Some(s) = state.subscriptions.iter_mut().find(|s| s.id == sub_id) {
                s.billing_key = o.id_key.clone();
            }
            state.orders[index] = o.clone();
            // Whether StepPay sends order.payment_completed for a 0원 registration is not
            // documented: the sandbox does, so paycycle's webhook path is exercised with it.
            let webhook = order_webhook_data(&state, &o);
            drop(state);
            v2_webhook(&shared, "order.payment_completed", webhook, fault.clone().filter(is_webhook_fault));
            return Redirect::to(&with_query(success, &o, "success")).into_response();
        }
        let recurring = o.order_type == "RECURRING_INITIAL";
        state.charges.push(Charge {
            pg: Pg::Steppay,
            id: o.id_key.clone(),
            amount: o.price.amount,
            refunded: 0,
            status: "COMPLETE".into(),
            billing_key: None,
            partner_order_id: None,
            order_id: Some(o.order_id),
            method: if recurring { "CARD_BILL" } else { "CARD" }.into(),
            goods: o.price.product_name.clone(),
            payer_name: None,
            paid_at: now,
            pay_date: crate::state::yyyymmdd(now),
            pay_time: crate::state::yyyymmddhhmmss(now),
            trade_no: shared.random(20),
        });
        o.paid = true;
        o.payment_date = Some(now);
        if recurring {
            let sub_id = shared.next_number();
            o.subscription_id = Some(sub_id);
            state.subscriptions.push(Subscription {
                id: sub_id,
                status: "ACTIVE".into(),
                customer_id: o.customer_id,
                price: o.price.clone(),
                billing_key: o.id_key.clone(),
                start_date: now,
                last_payment_date: now,
                next_payment_date: add_interval(now, &o.price, 1),
                recurring_count: 1,
                orders: vec![o.order_id],
            });
        }
        state.orders[index] = o.clone();
        (o.clone(), order_webhook_data(&state, &o))
    };
    v2_webhook(&shared, "order.payment_completed", webhook, fault.clone().filter(is_webhook_fault));
    hold_if_timeout(&shared, &fault).await;
    Redirect::to(&with_query(success, &order, "success")).into_response()
}

/// `POST /__sandbox/steppay/sdk/pay` — what the StepPay SDK does in the customer's browser for a
/// self (비관리형) first payment: `{amount, method, productName?, partnerOrderId?, cancel?}`.
/// A `*_BILL` method issues a billing key (the payment's idKey). Sends the self webhook.
pub async fn sdk_pay(State(shared): Sh, body: Bytes) -> Response {
    let v = match json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(amount) = int(v.get("amount")).filter(|a| *a >= 0) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "amount is required");
    };
    let method = text(v.get("method")).unwrap_or_else(|| "CARD_BILL".into());
    if !["CARD", "CARD_BILL", "CMS_BILL", "CMS", "VBANK", "BANK"].contains(&method.as_str()) {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "unsupported method");
    }
    let fault = match pre_fault(&shared, Operation::Charge, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let now = shared.state.lock().expect("state").now();
    let order_id = shared.next_number();
    let id_key = shared.steppay_id_key(now);
    if v.get("cancel").and_then(Value::as_bool) == Some(true) {
        self_webhook(&shared, "USER_CANCELED", order_id, &id_key, None);
        return Json(json!({"status": "cancel", "orderId": order_id, "idKey": id_key})).into_response();
    }
    if let Some(Fault::Decline { .. }) = fault {
        self_webhook(&shared, "FAILED", order_id, &id_key, None);
        return Json(json!({"status": "error", "orderId": order_id, "idKey": id_key, "paymentStatus": "FAILED"}))
            .into_response();
    }
    {
        let mut state = shared.state.lock().expect("state");
        state.charges.push(Charge {
            pg: Pg::Steppay,
            id: id_key.clone(),
            amount,
            refunded: 0,
            status: "COMPLETE".into(),
            billing_key: None,
            partner_order_id: text(v.get("partnerOrderId")),
            order_id: Some(order_id),
            method: method.clone(),
            goods: text(v.get("productName")).unwrap_or_default(),
            payer_name: text(v.get("customerName")),
            paid_at: now,
            pay_date: crate::state::yyyymmdd(now),
            pay_time: crate::state::yyyymmddhhmmss(now),
            trade_no: shared.random(20),
        });
        if method.ends_with("_BILL") {
            state.steppay_billing_keys.insert(id_key.clone(), false);
        }
    }
    // A 0원 billing-key registration used to be BILLKEY (deprecated), now PAYMENT (seed 001).
    self_webhook(&shared, "PAYMENT", order_id, &id_key, fault.clone().filter(is_webhook_fault));
    Json(json!({"status": "success", "orderId": order_id, "idKey": id_key, "paymentStatus": "COMPLETE"}))
        .into_response()
}

/// `POST /__admin/steppay/prices` — define a product price plan for managed orders.
pub async fn admin_price(State(shared): Sh, Json(price): Json<Price>) -> Response {
    let mut state = shared.state.lock().expect("state");
    state.prices.retain(|p| !(p.product_code == price.product_code && p.price_code == price.price_code));
    state.prices.push(price.clone());
    (StatusCode::CREATED, Json(price)).into_response()
}

/// `POST /__admin/steppay/subscriptions/{id}/status {status}` — StepPay changes a managed
/// subscription itself (its dunning gives up: EXPIRED; a manager cancels in the portal:
/// CANCELED) and sends `subscription.updated` (dev-docs `08-1-1_Webhook-Events.md`).
pub async fn admin_subscription_status(State(shared): Sh, Path(id): Path<u64>, Json(body): Json<Value>) -> Response {
    const STATUSES: &[&str] = &[
        "ACTIVE",
        "INCOMPLETE",
        "UNPAID",
        "PENDING_PAUSE",
        "PAUSE",
        "PENDING_CANCEL",
        "EXPIRED",
        "CANCELED",
        "QUEUEING",
    ];
    let Some(status) = text(body.get("status")).filter(|s| STATUSES.contains(&s.as_str())) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "status must be a SubscriptionStatus");
    };
    let data = {
        let mut state = shared.state.lock().expect("state");
        let Some(s) = state.subscriptions.iter_mut().find(|s| s.id == id) else {
            return error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "구독을 찾을 수 없습니다");
        };
        s.status = status;
        let s = s.clone();
        subscription_webhook_data(&state, &s)
    };
    v2_webhook(&shared, "subscription.updated", data.clone(), None);
    Json(data).into_response()
}

/// `POST /__admin/steppay/subscriptions/{id}/renew` — StepPay renews a managed subscription now:
/// a renewal order is charged (or declined by scenario) and an order webhook is sent.
pub async fn admin_renew(State(shared): Sh, Path(id): Path<u64>) -> Response {
    let billing_key = {
        let state = shared.state.lock().expect("state");
        match state.subscriptions.iter().find(|s| s.id == id) {
            Some(s) if s.status == "PAUSE" => {
                return error(StatusCode::CONFLICT, "SUBSCRIPTION_PAUSED", "a paused subscription is not renewed");
            }
            Some(s) if s.status == "CANCELED" || s.status == "PENDING_CANCEL" => {
                return error(StatusCode::CONFLICT, "SUBSCRIPTION_CANCELED", "a canceled subscription is not renewed");
            }
            Some(s) => s.billing_key.clone(),
            None => return error(StatusCode::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "no such subscription"),
        }
    };
    let fault = shared.state.lock().expect("state").take_fault(Operation::Charge, Some(&billing_key));
    let (order, hooks) = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let sub = state.subscriptions.iter().find(|s| s.id == id).cloned().expect("checked above");
        let mut order = Order {
            order_id: shared.next_number(),
            order_code: format!("order_{}", shared.random(9)),
            id_key: shared.steppay_id_key(now),
            order_type: "RECURRING".into(),
            customer_id: sub.customer_id,
            price: sub.price.clone(),
            paid: false,
            failed: None,
            subscription_id: Some(id),
            parent_subscription: Some(id),
            changes_payment_of: None,
            created_at: now,
            payment_date: None,
        };
        let declined = matches!(fault, Some(Fault::Decline { .. }));
        if let Some(Fault::Decline { hard }) = fault {
            order.failed =
                Some((if hard { "CARD_INVALID" } else { "PAYMENT_DECLINED" }.into(), "renewal declined".into()));
        } else {
            order.paid = true;
            order.payment_date = Some(now);
            state.charges.push(Charge {
                pg: Pg::Steppay,
                id: order.id_key.clone(),
                amount: sub.price.amount,
                refunded: 0,
                status: "COMPLETE".into(),
                billing_key: Some(billing_key.clone()),
                partner_order_id: None,
                order_id: Some(order.order_id),
                method: "CARD_BILL".into(),
                goods: sub.price.product_name.clone(),
                payer_name: None,
                paid_at: now,
                pay_date: crate::state::yyyymmdd(now),
                pay_time: crate::state::yyyymmddhhmmss(now),
                trade_no: shared.random(20),
            });
        }
        let s = state.subscriptions.iter_mut().find(|s| s.id == id).expect("checked above");
        let was = s.status.clone();
        s.orders.push(order.order_id);
        if declined {
            s.status = "UNPAID".into();
        } else {
            s.status = "ACTIVE".into();
            s.recurring_count += 1;
            s.last_payment_date = now;
            s.next_payment_date = add_interval(s.start_date, &s.price, s.recurring_count);
        }
        let changed = (was != s.status).then(|| s.clone());
        state.orders.push(order.clone());
        // A paid renewal order: `order.payment_completed` (an order of type RECURRING naming the
        // subscription). A status change (UNPAID after a decline, ACTIVE after a paid retry):
        // `subscription.updated` (dev-docs 08-1-1_Webhook-Events.md).
        let mut hooks = Vec::new();
        if !declined {
            hooks.push(("order.payment_completed", order_webhook_data(&state, &order)));
        }
        if let Some(s) = changed {
            hooks.push(("subscription.updated", subscription_webhook_data(&state, &s)));
        }
        (order_json(&state, &order), hooks)
    };
    let mut webhook_fault = fault.filter(is_webhook_fault);
    for (event, data) in hooks {
        v2_webhook(&shared, event, data, webhook_fault.take());
    }
    Json(order).into_response()
}
