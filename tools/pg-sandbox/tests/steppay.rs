//! Contract tests for the StepPay simulator: every endpoint, the seeds' example requests, and
//! every fault class.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Received, Receiver, TOKEN, env};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};

/// Seed 000/001's billing request, placeholders filled in.
fn seed_billing_body(id_key: &str, partner_order_id: &str, amount: Value) -> Value {
    json!({
        "idKey": id_key,
        "partner": {"partnerOrderId": partner_order_id, "partnerUserId": "user-1"},
        "product": {"itemName": "Pro 월간", "amount": amount, "quantity": 1},
        "customer": {"userName": "홍길동", "phone": "01012345678", "email": "hong@example.com"}
    })
}

fn assert_error_shape(v: &Value, code: &str) {
    assert_eq!(v["errorCode"], code, "{v}");
    assert!(v["traceId"].is_string() && v["errorMessage"].is_string() && v.get("details").is_some(), "{v}");
}

#[tokio::test]
async fn billing_charge_from_the_seed_body_then_receipt_and_ledger() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    assert_eq!(key.len(), 29);
    assert!(key[..13].bytes().all(|b| b.is_ascii_digit()), "13-digit epoch ms prefix: {key}");

    let (status, v) = e
        .steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "sub_a-p1-a1", json!(9900))))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["paymentStatus"], "COMPLETE");
    assert_eq!(v["amount"].as_f64(), Some(9900.0));
    let paid = v["idKey"].as_str().unwrap().to_string();
    assert_ne!(paid, key, "a charge has its own idKey");

    let (status, r) = e.steppay(Method::GET, &format!("/api/payment/receipt/{paid}"), None).await;
    assert_eq!(status, 200);
    assert!(r["paymentDate"].is_string(), "paid ⇔ paymentDate non-null: {r}");
    assert_eq!(r["paymentStatus"], "COMPLETE");

    let ledger = e.ledger().await;
    let charge = ledger["charges"].as_array().unwrap().iter().find(|c| c["id"] == paid.as_str()).unwrap().clone();
    assert_eq!(charge["billing_key"], key.as_str());
    assert_eq!(charge["partner_order_id"], "sub_a-p1-a1");

    // Amount as a string (the seed quotes its placeholders) is accepted too.
    let (status, _) = e
        .steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "sub_a-p2-a1", json!("9900"))))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_tokens_unknown_keys_and_repeated_order_ids_are_rejected() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let r = e
        .http
        .post(format!("{}/api/payment/billing", e.base))
        .header("Secret-Token", "wrong")
        .json(&seed_billing_body(&key, "o1", json!(100)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_error_shape(&r.json().await.unwrap(), "UNAUTHORIZED");

    let (status, v) = e
        .steppay(
            Method::POST,
            "/api/payment/billing",
            Some(seed_billing_body("1600000000000nokeyAAAAAAAAAAA", "o1", json!(100))),
        )
        .await;
    assert_eq!(status, 400);
    assert_error_shape(&v, "BILLING_KEY_NOT_FOUND");

    let (status, first) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "o-dup", json!(100)))).await;
    assert_eq!(status, 200);
    let (status, v) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "o-dup", json!(100)))).await;
    assert_eq!(status, 409, "a repeated partnerOrderId conflicts (sandbox choice, unconfirmed)");
    assert_error_shape(&v, "DUPLICATE_PARTNER_ORDER_ID");
    assert_eq!(v["details"]["idKey"], first["idKey"], "the existing payment is named");

    let (status, v) = e.steppay(Method::POST, "/api/payment/billing", Some(json!({"idKey": key}))).await;
    assert_eq!(status, 400);
    assert_error_shape(&v, "INVALID_REQUEST");
    let r = e
        .http
        .post(format!("{}/api/payment/billing", e.base))
        .header("Secret-Token", TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(e.ledger().await["totals"]["charges"], 2, "the SDK payment and one charge");
}

#[tokio::test]
async fn cancel_refunds_partially_and_fully_never_more_than_paid() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "o1", json!(10000)))).await;
    let id = paid["idKey"].as_str().unwrap();

    // Secret-Token is not the cancel header.
    let r = e
        .http
        .post(format!("{}/api/internal/payment/cancel", e.base))
        .header("Secret-Token", TOKEN)
        .json(&json!({"idKey": id, "requestPrice": "1000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let cancel = |price: Value| {
        let http = e.http.clone();
        let url = format!("{}/api/internal/payment/cancel", e.base);
        let body = json!({"idKey": id, "requestPrice": price});
        async move {
            let r = http.post(url).header("Secret-Key", TOKEN).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = cancel(json!("3000")).await; // the seed sends a string
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"]["cancelPayment"]["canceledAmount"].as_f64(), Some(3000.0));
    assert_eq!(v["response"]["cancelPayment"]["paymentStatus"], "PARTIAL_CANCELED");
    let (status, v) = cancel(json!(7001)).await;
    assert_eq!(status, 400);
    assert_error_shape(&v, "CANCEL_AMOUNT_EXCEEDED");
    let (status, v) = cancel(json!(7000)).await;
    assert_eq!(status, 200);
    assert_eq!(v["response"]["cancelPayment"]["paymentStatus"], "CANCELED");
    let (status, _) = cancel(json!(1)).await;
    assert_eq!(status, 400);

    let ledger = e.ledger().await;
    assert_eq!(ledger["totals"]["refunded"], 10000);
    let (_, receipt) = e.steppay(Method::GET, &format!("/api/payment/receipt/{id}"), None).await;
    assert_eq!(receipt["paymentStatus"], "CANCELED");
    assert_eq!(receipt["canceledAmount"].as_f64(), Some(10000.0));
    let (status, v) = e.steppay(Method::GET, "/api/payment/receipt/nope", None).await;
    assert_eq!(status, 404);
    assert_error_shape(&v, "PAYMENT_NOT_FOUND");
}

async fn managed_order(e: &common::Env) -> Value {
    e.admin(
        "/__admin/steppay/prices",
        json!({"product_code": "product_pro", "price_code": "price_monthly", "product_name": "Pro", "amount": 19900, "interval": "MONTH"}),
    )
    .await;
    let (status, customer) = e
        .steppay(
            Method::POST,
            "/api/v1/customers",
            Some(json!({"name": "홍길동", "email": "hong@example.com", "phone": "01012345678",
            "marketingSms": false, "marketingEmail": false, "marketingKakao": false, "attributes": {}})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, order) = e
        .steppay(Method::POST, "/api/v1/orders", Some(json!({"customerId": customer["id"],
            "items": [{"productCode": "product_pro", "priceCode": "price_monthly", "currency": "KRW", "minimumQuantity": 1}]})))
        .await;
    assert_eq!(status, 201, "{order}");
    order
}

fn verify_signature(secret: &str, header: &str, body: &str) -> bool {
    let mut t = "";
    let mut keys = vec![];
    for part in header.split(',') {
        if let Some(v) = part.strip_prefix("timestamp=") {
            t = v;
        } else if let Some(v) = part.strip_prefix("key=") {
            keys.push(v);
        }
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    keys.contains(&expected.as_str())
}

#[tokio::test]
async fn managed_order_pay_page_redirect_lookup_and_renewal_webhook() {
    let e = env().await;
    let hooks = Receiver::start().await;
    e.admin("/__admin/config", json!({"steppay_webhook_url": hooks.url, "steppay_signing_secret": "whsec"})).await;
    let order = managed_order(&e).await;
    let code = order["orderCode"].as_str().unwrap();
    assert!(code.starts_with("order_") && code.len() == 15, "{code}");
    assert_eq!(order["idKey"].as_str().unwrap().len(), 29);
    assert_eq!(order["type"], "RECURRING_INITIAL", "a subscription's first order (08-1-2 OrderType)");
    let (_, before) = e.steppay(Method::GET, &format!("/api/v1/orders/{code}"), None).await;
    assert!(before["paymentDate"].is_null());

    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect
        .get(format!(
            "{}/api/public/orders/{code}/pay?successUrl=https%3A%2F%2Fshop.example.com%2Fok&errorUrl=https%3A%2F%2Fshop.example.com%2Ferr",
            e.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("https://shop.example.com/ok?order_id={}&order_code={code}&status=success", order["orderId"])
    );

    let (_, after) = e.steppay(Method::GET, &format!("/api/v1/orders/{}", order["orderId"]), None).await;
    assert!(after["paymentDate"].is_string(), "paid: {after}");
    assert_eq!(after["paidAmount"].as_f64(), Some(19900.0));
    let sub_id = after["subscriptions"][0]["id"].as_u64().unwrap();
    let (status, sub) = e.steppay(Method::GET, &format!("/api/v1/subscriptions/{sub_id}"), None).await;
    assert_eq!((status, sub["status"].as_str()), (200, Some("ACTIVE")));

    let renewal = e.admin(&format!("/__admin/steppay/subscriptions/{sub_id}/renew"), json!({})).await;
    assert_eq!(renewal["parentSubscription"]["id"], sub_id);
    assert!(renewal["paymentDate"].is_string());
    let got = hooks.wait_for(2).await;
    assert_eq!(got.len(), 2, "first payment and renewal order webhooks");
    for hook in &got {
        assert!(verify_signature("whsec", hook.signature.as_deref().unwrap(), &hook.body), "signature verifies");
        assert!(!verify_signature("other", hook.signature.as_deref().unwrap(), &hook.body));
    }
    let (_, sub) = e.steppay(Method::GET, &format!("/api/v1/subscriptions/{sub_id}"), None).await;
    assert_eq!(sub["recurringCount"], 2);
}

fn hook_bodies(got: &[Received]) -> Vec<Value> {
    got.iter().map(|h| serde_json::from_str(&h.body).unwrap()).collect()
}

/// The managed journey's webhooks have StepPay's documented event types and schemas (dev-docs
/// `08-1-1_Webhook-Events.md`, `08-1-2_Webhook-Schema.md`): `order.payment_completed` with an
/// Order (`id`, `code` — no `orderCode` —, `type`, `subscriptions` ids, `idKey`, Decimal
/// `paidAmount`), `subscription.updated` with a Subscription (`subscriptionId`, `status`, the
/// `orderCode` of the order that created it) — never `order.paid` / `order.payment_failed`.
#[tokio::test]
async fn managed_webhooks_have_the_documented_event_types_and_schemas() {
    let e = env().await;
    let hooks = Receiver::start().await;
    e.admin("/__admin/config", json!({"steppay_webhook_url": hooks.url})).await;
    let order = managed_order(&e).await;
    let first_code = order["orderCode"].as_str().unwrap().to_string();
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    no_redirect
        .get(format!("{}/api/public/orders/{first_code}/pay?successUrl=https://s/ok&errorUrl=https://s/err", e.base))
        .send()
        .await
        .unwrap();
    let (_, paid) = e.steppay(Method::GET, &format!("/api/v1/orders/{first_code}"), None).await;
    let sub_id = paid["subscriptions"][0]["id"].as_u64().unwrap();
    let renew = format!("/__admin/steppay/subscriptions/{sub_id}/renew");
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    e.admin(&renew, json!({})).await; // declined: UNPAID
    let renewal = e.admin(&renew, json!({})).await; // paid: ACTIVE again
    let got = hook_bodies(&hooks.wait_for(4).await);
    let events: Vec<&str> = got.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["order.payment_completed", "subscription.updated", "order.payment_completed", "subscription.updated"]
    );
    for v in &got {
        assert!(v["timestamp"].is_i64() && v["version"].is_string(), "{v}");
    }
    let (first, renewed) = (&got[0]["data"], &got[2]["data"]);
    assert_eq!(
        (first["code"].as_str(), first["type"].as_str()),
        (Some(first_code.as_str()), Some("RECURRING_INITIAL"))
    );
    assert_eq!(
        (renewed["code"].as_str(), renewed["type"].as_str()),
        (renewal["orderCode"].as_str(), Some("RECURRING"))
    );
    for o in [first, renewed] {
        assert!(o.get("orderCode").is_none(), "the Order schema has `code`, not `orderCode`: {o}");
        assert!(o["id"].is_u64() && o["idKey"].is_string() && o["paidAmount"].is_f64(), "{o}");
        assert_eq!(o["subscriptions"], json!([sub_id]));
    }
    for (v, status) in [(&got[1]["data"], "UNPAID"), (&got[3]["data"], "ACTIVE")] {
        assert_eq!((v["subscriptionId"].as_u64(), v["status"].as_str()), (Some(sub_id), Some(status)), "{v}");
        assert_eq!(v["orderCode"].as_str(), Some(first_code.as_str()), "the order that created it");
    }
}

#[tokio::test]
async fn a_declined_pay_page_redirects_to_the_error_url() {
    let e = env().await;
    let order = managed_order(&e).await;
    let code = order["orderCode"].as_str().unwrap();
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect
        .get(format!("{}/api/public/orders/{code}/pay?successUrl=https://s/ok&errorUrl=https://s/err", e.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["location"].to_str().unwrap().starts_with("https://s/err?order_id="));
    assert!(r.headers()["location"].to_str().unwrap().ends_with("&status=error"));
    let (_, o) = e.steppay(Method::GET, &format!("/api/v1/orders/{code}"), None).await;
    assert!(o["paymentDate"].is_null());
    assert!(o["payment"]["errorCode"].is_string());
    let (_, receipt) =
        e.steppay(Method::GET, &format!("/api/payment/receipt/{}", order["idKey"].as_str().unwrap()), None).await;
    assert_eq!(receipt["paymentStatus"], "FAILED");
    assert!(receipt["paymentDate"].is_null());
    assert_eq!(e.ledger().await["totals"]["charges"], 0);
}

#[tokio::test]
async fn self_webhooks_as_json_and_as_form() {
    let e = env().await;
    let hooks = Receiver::start().await;
    e.admin("/__admin/config", json!({"steppay_webhook_url": hooks.url})).await;
    let key = e.steppay_billing_key().await;
    let got = hooks.wait_for(1).await;
    assert_eq!(got[0].content_type, "application/json");
    let v: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(v, json!({"webHookType": "PAYMENT", "orderId": v["orderId"], "idKey": key}));
    assert!(v["orderId"].is_u64());

    e.admin("/__admin/config", json!({"steppay_webhook_format": "form"})).await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "o1", json!(100)))).await;
    let got = hooks.wait_for(2).await;
    assert_eq!(got[1].content_type, "application/x-www-form-urlencoded");
    assert!(got[1].body.starts_with("webHookType=PAYMENT&orderId="), "{}", got[1].body);
    assert!(got[1].body.ends_with(&format!("&idKey={}", paid["idKey"].as_str().unwrap())));

    // USER_CANCELED and FAILED from the payment window.
    let http = &e.http;
    http.post(format!("{}/__sandbox/steppay/sdk/pay", e.base))
        .json(&json!({"amount": 100, "cancel": true}))
        .send()
        .await
        .unwrap();
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    let failed: Value = http
        .post(format!("{}/__sandbox/steppay/sdk/pay", e.base))
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failed["status"], "error");
    let got = hooks.wait_for(4).await;
    assert!(got[2].body.starts_with("webHookType=USER_CANCELED"));
    assert!(got[3].body.starts_with("webHookType=FAILED"));
}

#[tokio::test]
async fn faults_decline_timeout_5xx_and_delay() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let charge =
        |poid: &str| e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, poid, json!(100))));

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    let (status, v) = charge("f1").await;
    assert_eq!(status, 400);
    assert_error_shape(&v, "PAYMENT_DECLINED");
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": true}})).await;
    let (_, v) = charge("f2").await;
    assert_error_shape(&v, "BILLING_KEY_INVALID");

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "server_error"}})).await;
    let (status, _) = charge("f3").await;
    assert_eq!(status, 500);
    assert_eq!(e.ledger().await["totals"]["charges"], 1, "declines and 5xx charge nothing (1 = the SDK payment)");

    // Timeout after charge: the client gives up, but the PG charged.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 3000})).await;
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}})).await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let err = quick
        .post(format!("{}/api/payment/billing", e.base))
        .header("Secret-Token", TOKEN)
        .json(&seed_billing_body(&key, "f4", json!(100)))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let ledger = e.ledger().await;
    assert!(
        ledger["charges"].as_array().unwrap().iter().any(|c| c["partner_order_id"] == "f4"),
        "charged despite the timeout"
    );

    let t = std::time::Instant::now();
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "delay", "ms": 400}})).await;
    let (status, _) = charge("f5").await;
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_millis(400));

    // Per billing key: every charge on it declines until the scenario is cleared.
    e.scenario(json!({"billing_key": key, "fault": {"kind": "decline", "hard": true}})).await;
    assert_eq!(charge("f6").await.0, 400);
    assert_eq!(charge("f7").await.0, 400);
    e.http.delete(format!("{}/__admin/scenarios", e.base)).send().await.unwrap();
    assert_eq!(charge("f8").await.0, 200);
}

#[tokio::test]
async fn webhook_faults_twice_late_and_out_of_order() {
    let e = env().await;
    let hooks = Receiver::start().await;
    let key = e.steppay_billing_key().await;
    e.admin("/__admin/config", json!({"steppay_webhook_url": hooks.url})).await;
    let charge =
        |poid: &str| e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, poid, json!(100))));

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "webhook_twice"}})).await;
    let (_, a) = charge("w1").await;
    let got = hooks.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body, "the same webhook twice");
    assert!(got[0].body.contains(a["idKey"].as_str().unwrap()));

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "webhook_out_of_order"}})).await;
    let (_, first) = charge("w2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hooks.received.lock().unwrap().len(), 2, "held back");
    let (_, second) = charge("w3").await;
    let got = hooks.wait_for(4).await;
    assert!(got[2].body.contains(second["idKey"].as_str().unwrap()), "the later one first");
    assert!(got[3].body.contains(first["idKey"].as_str().unwrap()), "then the held one");

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "webhook_late", "ms": 600}})).await;
    charge("w4").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.received.lock().unwrap().len(), 4, "not yet");
    assert_eq!(hooks.wait_for(5).await.len(), 5);

    let log: Value = e.http.get(format!("{}/__admin/webhooks", e.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(log.as_array().unwrap().len(), 5);
    assert!(log.as_array().unwrap().iter().all(|d| d["status"] == 200));
}

#[tokio::test]
async fn refund_faults_decline_5xx_and_timeout_after_refund() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "r1", json!(5000)))).await;
    let id = paid["idKey"].as_str().unwrap().to_string();
    let cancel = |client: reqwest::Client, price: i64| {
        let url = format!("{}/api/internal/payment/cancel", e.base);
        let body = json!({"idKey": id, "requestPrice": price});
        async move { client.post(url).header("Secret-Key", TOKEN).json(&body).send().await }
    };
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    let r = cancel(e.http.clone(), 1000).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error_shape(&r.json().await.unwrap(), "CANCEL_FAILED");
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "server_error"}})).await;
    assert_eq!(cancel(e.http.clone(), 1000).await.unwrap().status(), 500);
    assert_eq!(e.ledger().await["totals"]["refunded"], 0, "declined and failed refunds move nothing");

    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 3000})).await;
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}})).await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    assert!(cancel(quick, 1000).await.unwrap_err().is_timeout());
    assert_eq!(e.ledger().await["totals"]["refunded"], 1000, "refunded despite the timeout");
    let (_, receipt) = e.steppay(Method::GET, &format!("/api/payment/receipt/{id}"), None).await;
    assert_eq!(receipt["canceledAmount"].as_f64(), Some(1000.0), "the receipt tells what happened");
}

/// step-api-spec `service/payment.json` (commit 3ec8ceb9) `ApiResponseCancelResponse`: `result`
/// boolean, `code` int32, `message`, `id` string, `response` `CancelResponse{tid,
/// paymentReceiptUrl, cancelPayment: CancelPaymentDTO{canceledAmount number, tid, paymentStatus,
/// canceledDate date-time}}`; `CancelRequestDTO.requestPrice` is a number (`1000.0` accepted).
#[tokio::test]
async fn the_refund_answer_has_steppays_documented_shape() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "shape1", json!(10000)))).await;
    let id = paid["idKey"].as_str().unwrap().to_string();
    let r = e
        .http
        .post(format!("{}/api/internal/payment/cancel", e.base))
        .header("Secret-Key", TOKEN)
        .json(&json!({"idKey": id, "requestPrice": 4000.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], json!(true), "result is a boolean: {v}");
    assert!(v["code"].is_i64(), "code is an int32: {v}");
    assert!(v["id"].is_string(), "id is a string: {v}");
    let cp = &v["response"]["cancelPayment"];
    assert!(cp["canceledAmount"].is_f64(), "canceledAmount is a decimal number like StepPay's: {v}");
    assert_eq!(cp["canceledAmount"].as_f64(), Some(4000.0));
    assert_eq!(cp["paymentStatus"], "PARTIAL_CANCELED");
    assert!(cp["canceledDate"].is_string() && cp["tid"].is_string(), "{v}");
    assert!(v["response"]["tid"].is_string() && v["response"]["paymentReceiptUrl"].is_string(), "{v}");
}

/// A refund StepPay has accepted but not finished: the cancel answer's `paymentStatus` is
/// `CANCEL_PROGRESS` (one of `CancelPaymentDTO.paymentStatus`'s documented values).
#[tokio::test]
async fn a_refund_still_processing_is_answered_cancel_progress() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "prog1", json!(5000)))).await;
    let id = paid["idKey"].as_str().unwrap().to_string();
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "cancel_in_progress"}})).await;
    let r = e
        .http
        .post(format!("{}/api/internal/payment/cancel", e.base))
        .header("Secret-Key", TOKEN)
        .json(&json!({"idKey": id, "requestPrice": 1000}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], json!(true), "{v}");
    assert_eq!(v["response"]["cancelPayment"]["paymentStatus"], "CANCEL_PROGRESS", "{v}");
    assert_eq!(e.ledger().await["totals"]["refunded"], 1000, "StepPay goes on to refund it");
}

/// StepPay's own examples write amounts as decimals (`10000.0`, `0.0`; step-api-spec, dev-docs
/// `08-1-2_Webhook-Schema.md`): the sandbox sends them so, in every body that carries one.
#[tokio::test]
async fn amounts_go_out_as_decimals_like_steppays_examples() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let (_, paid) =
        e.steppay(Method::POST, "/api/payment/billing", Some(seed_billing_body(&key, "dec1", json!(9900)))).await;
    assert!(paid["amount"].is_f64(), "{paid}");
    assert_eq!(paid["amount"].as_f64(), Some(9900.0));
    let id = paid["idKey"].as_str().unwrap();
    let (_, receipt) = e.steppay(Method::GET, &format!("/api/payment/receipt/{id}"), None).await;
    assert!(receipt["amount"].is_f64() && receipt["canceledAmount"].is_f64(), "{receipt}");
    assert_eq!(receipt["canceledAmount"].as_f64(), Some(0.0));
    let order = managed_order(&e).await;
    for field in ["paidAmount", "returnedAmount", "leftAmount", "discountedAmount"] {
        assert!(order[field].is_f64(), "{field}: {order}");
    }
}

/// merge/v1.json (3ec8ceb9): `POST /api/v1/subscriptions/{id}/pause` (only an ACTIVE one),
/// `POST …/{id}/active` (201; PAUSE or PENDING_CANCEL), `PATCH /api/v1/orders/{orderIdOrCode}/cancel`
/// `ReqV1{requestPrice*, reason}` (a paid order is refunded). A managed order's payment is refunded
/// through its order, not the self API's cancel by idKey (sandbox choice).
#[tokio::test]
async fn managed_pause_resume_and_order_refunds_follow_merge_v1() {
    let e = env().await;
    let order = managed_order(&e).await;
    let code = order["orderCode"].as_str().unwrap().to_string();
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    no_redirect
        .get(format!("{}/api/public/orders/{code}/pay?successUrl=https://s/ok&errorUrl=https://s/err", e.base))
        .send()
        .await
        .unwrap();
    let (_, paid) = e.steppay(Method::GET, &format!("/api/v1/orders/{code}"), None).await;
    let sub = paid["subscriptions"][0]["id"].clone();
    let sub_path = |action: &str| format!("/api/v1/subscriptions/{sub}/{action}");

    let (status, v) = e.steppay(Method::POST, &sub_path("active"), None).await;
    assert_eq!(status, 400, "an ACTIVE subscription cannot be activated: {v}");
    let (status, v) = e
        .steppay(Method::POST, &sub_path("pause"), Some(json!({"whenToPause": "IMMEDIATE", "whenToResume": "NOTHING"})))
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, s) = e.steppay(Method::GET, &format!("/api/v1/subscriptions/{sub}"), None).await;
    assert_eq!(s["status"], "PAUSE");
    let (status, _) = e
        .steppay(Method::POST, &sub_path("pause"), Some(json!({"whenToPause": "IMMEDIATE", "whenToResume": "NOTHING"})))
        .await;
    assert_eq!(status, 400, "only an ACTIVE subscription pauses");
    let (status, v) = e.steppay(Method::POST, &sub_path("active"), None).await;
    assert_eq!(status, 201, "{v}");
    let (_, s) = e.steppay(Method::GET, &format!("/api/v1/subscriptions/{sub}"), None).await;
    assert_eq!(s["status"], "ACTIVE");

    // The self API's cancel by idKey refuses a managed order's payment.
    let id_key = paid["idKey"].as_str().unwrap();
    let r = e
        .http
        .post(format!("{}/api/internal/payment/cancel", e.base))
        .header("Secret-Key", TOKEN)
        .json(&json!({"idKey": id_key, "requestPrice": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let cancel = |price: Value| {
        let http = e.http.clone();
        let url = format!("{}/api/v1/orders/{code}/cancel", e.base);
        async move {
            let r = http
                .patch(url)
                .header("Secret-Token", TOKEN)
                .json(&json!({"requestPrice": price, "reason": "test"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = cancel(json!(5000.0)).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = cancel(json!(20000)).await;
    assert_eq!(status, 400, "more than remains: {v}");
    let (_, after) = e.steppay(Method::GET, &format!("/api/v1/orders/{code}"), None).await;
    assert_eq!(after["returnedAmount"].as_f64(), Some(5000.0));
    assert_eq!(e.ledger().await["totals"]["refunded"], 5000);
}

/// step-api-spec `service/account.json` (3ec8ceb9) `CustomerCreateDTO{name*, email*, phone,
/// marketingSms*, marketingEmail*, marketingKakao*, attributes*}` has no `code`: StepPay gives the
/// customer its own `id` and `code` (`CustomerV1DTO`).
#[tokio::test]
async fn customer_creation_takes_no_code_and_answers_steppays_own_id_and_code() {
    let e = env().await;
    let body = json!({"name": "홍길동", "email": "hong@example.com", "phone": "01012345678", "code": "mine",
        "marketingSms": false, "marketingEmail": false, "marketingKakao": false, "attributes": {}});
    let (status, c) = e.steppay(Method::POST, "/api/v1/customers", Some(body.clone())).await;
    assert_eq!(status, 201, "{c}");
    assert!(c["id"].is_i64(), "{c}");
    assert!(c["code"].is_string() && c["code"] != "mine", "StepPay's own code, not ours: {c}");
    for required in ["name", "email", "marketingSms", "marketingEmail", "marketingKakao", "attributes"] {
        let mut missing = body.clone();
        missing.as_object_mut().unwrap().remove(required);
        let (status, v) = e.steppay(Method::POST, "/api/v1/customers", Some(missing)).await;
        assert_eq!(status, 400, "{required} is required: {v}");
    }
}
