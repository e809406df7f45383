//! The StepPay and Payple clients against the PG sandbox over real HTTP: every call and every
//! fault class (decline soft/hard, timeout after charge → Unknown then resolved by lookup,
//! duplicate charge id → AlreadyProcessed, 5xx, connection refused, bad credentials).

use std::time::Duration;

use paycycle::domain::attempt::{ChargeId, SubscriptionId};
use paycycle::money::Krw;
use paycycle::pg::payple::{KeyHolder, PaypleClient, WindowCheck, WindowWork};
use paycycle::pg::steppay::SteppayClient;
use paycycle::pg::{
    ChargeRequest, FirstPaymentEvidence, Lookup, Payer, PaymentGateway, PaymentState, PgError, RefundRequest, Timeouts,
    http_client,
};
use paycycle::secret::Secret;
use pg_sandbox::Sandbox;
use serde_json::{Value, json};
use url::Url;

struct Env {
    sandbox: Sandbox,
    http: reqwest::Client,
    steppay: SteppayClient,
    payple: PaypleClient,
}

async fn env() -> Env {
    let sandbox = Sandbox::start(0).await.unwrap();
    let base = Url::parse(&sandbox.base_url()).unwrap();
    let pg_http = http_client(Timeouts { connect: Duration::from_secs(1), total: Duration::from_millis(1500) });
    let steppay = SteppayClient::new(pg_http.clone(), base.clone(), Secret::new("local-steppay-secret-token"));
    let payple = PaypleClient::new(
        pg_http,
        base,
        &Url::parse("https://shop.example.com").unwrap(),
        Secret::new("test"),
        Secret::new("abcd1234567890"),
        Secret::new("local-payple-refund-key"),
    );
    Env { sandbox, http: reqwest::Client::new(), steppay, payple }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    async fn admin(&self, path: &str, body: Value) {
        let r = self.http.post(self.url(path)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}");
    }

    async fn ledger(&self) -> Value {
        self.http.get(self.url("/__admin/ledger")).send().await.unwrap().json().await.unwrap()
    }

    async fn next(&self, operation: &str, fault: Value) {
        self.admin("/__admin/scenarios", json!({"operation": operation, "count": 1, "fault": fault})).await;
    }

    async fn steppay_billing_key(&self) -> String {
        let v: Value = self
            .http
            .post(self.url("/__sandbox/steppay/sdk/pay"))
            .json(&json!({"amount": 1000, "method": "CARD_BILL"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["idKey"].as_str().unwrap().to_string()
    }

    async fn window(&self, work: WindowWork, oid: &str, total: Option<i64>) -> serde_json::Map<String, Value> {
        let params = self
            .payple
            .window_params(
                work,
                oid,
                "Pro 월간",
                total.map(krw),
                &payer(),
                "https://shop.example.com/payple/result",
                "sub_w1",
            )
            .await
            .unwrap();
        let v: Value = self
            .http
            .post(self.url("/__sandbox/payple/window?format=json"))
            .json(&params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_object().unwrap().clone()
    }
}

fn krw(n: i64) -> Krw {
    Krw::new(n).unwrap()
}

fn payer() -> Payer {
    Payer {
        customer_id: "cus_1".into(),
        name: "홍길동".into(),
        phone: Some("01012345678".into()),
        email: Some("hong@example.com".into()),
        payer_no: Some("1".into()),
    }
}

fn charge(billing_key: &str, period: u32, amount: i64) -> ChargeRequest {
    ChargeRequest {
        billing_key: billing_key.into(),
        charge_id: ChargeId::new(SubscriptionId::parse("sub_c1").unwrap(), period, 1).unwrap(),
        amount: krw(amount),
        goods: "Pro 월간".into(),
        payer: payer(),
    }
}

// ---------------- StepPay ----------------

#[tokio::test]
async fn steppay_charge_receipt_and_refunds() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let c = e.steppay.charge(&charge(&key, 1, 9_900)).await.unwrap();
    assert_eq!(c.amount, krw(9_900));
    assert_eq!(c.pg_payment_id.len(), 29);
    let ledger = e.ledger().await;
    let entry =
        ledger["charges"].as_array().unwrap().iter().find(|x| x["id"] == c.pg_payment_id.as_str()).unwrap().clone();
    assert_eq!(entry["partner_order_id"], "sub_c1-p1-a1", "the charge id is StepPay's partnerOrderId");

    let state = e
        .steppay
        .lookup(&Lookup::PgPayment { pg_payment_id: c.pg_payment_id.clone(), request_date_kst: None })
        .await
        .unwrap();
    assert!(matches!(state, PaymentState::Paid { amount, .. } if amount == krw(9_900)));

    let refund = |amount: i64| RefundRequest {
        pg_payment_id: c.pg_payment_id.clone(),
        amount: krw(amount),
        pay_date_kst: String::new(),
        refund_id: "ref_1".into(),
        pg_order: None,
    };
    let r = e.steppay.refund(&refund(4_000)).await.unwrap();
    assert_eq!(r.amount, krw(4_000));
    assert!(r.pg_refund_id.is_some());
    assert!(
        matches!(e.steppay.refund(&refund(6_000)).await, Err(PgError::Declined { hard: false, .. })),
        "more than remains: refused, nothing refunded (StepPay publishes no codes, so never hard)"
    );
    e.steppay.refund(&refund(5_900)).await.unwrap();
    let state = e
        .steppay
        .lookup(&Lookup::PgPayment { pg_payment_id: c.pg_payment_id.clone(), request_date_kst: None })
        .await
        .unwrap();
    assert!(matches!(state, PaymentState::Refunded { .. }), "{state:?}");
    assert_eq!(e.ledger().await["totals"]["refunded"], 9_900);

    assert_eq!(
        e.steppay
            .lookup(&Lookup::Charge { charge_id: charge(&key, 1, 1).charge_id, request_date_kst: "20270101".into() })
            .await,
        Err(PgError::Unsupported("StepPay lookup by partnerOrderId"))
    );
    assert_eq!(
        e.steppay.lookup(&Lookup::PgPayment { pg_payment_id: "nope".into(), request_date_kst: None }).await,
        Err(PgError::NotFound)
    );
}

/// StepPay's refund answer is `ApiResponseCancelResponse` (step-api-spec `service/payment.json`
/// at 3ec8ceb9): `result` a boolean, `code` an int32, the refund in `response.cancelPayment` with a
/// decimal `canceledAmount`. A refund StepPay made is `Refunded`, never an unknown outcome.
#[tokio::test]
async fn a_successful_steppay_refund_is_refunded_not_unknown() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let paid = e.steppay.charge(&charge(&key, 1, 10_000)).await.unwrap();
    let req = RefundRequest {
        pg_payment_id: paid.pg_payment_id.clone(),
        amount: krw(2_500),
        pay_date_kst: String::new(),
        refund_id: "ref_ok".into(),
        pg_order: None,
    };
    let r = e.steppay.refund(&req).await;
    assert!(matches!(&r, Ok(done) if done.amount == krw(2_500)), "{r:?}");
}

/// `CANCEL_PROGRESS` in the cancel answer: StepPay took the refund and has not finished it. It is
/// neither succeeded nor failed: the client says unknown, so the refund stays reserved and is
/// settled by the receipt lookup — never released, never retried blind.
#[tokio::test]
async fn a_steppay_refund_in_progress_is_neither_succeeded_nor_failed() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let paid = e.steppay.charge(&charge(&key, 1, 10_000)).await.unwrap();
    e.next("refund", json!({"kind": "cancel_in_progress"})).await;
    let req = RefundRequest {
        pg_payment_id: paid.pg_payment_id.clone(),
        amount: krw(1_000),
        pay_date_kst: String::new(),
        refund_id: "ref_prog".into(),
        pg_order: None,
    };
    let err = e.steppay.refund(&req).await.unwrap_err();
    assert!(matches!(err, PgError::Unknown { .. }) && err.outcome_unknown(), "{err:?}");
}

/// A receipt saying COMPLETE without `paymentDate` contradicts itself: it is no answer
/// (`Unrecognized`, looked up again), never a decline that would move dunning on and re-charge a
/// payment that may have been taken.
#[tokio::test]
async fn a_steppay_receipt_complete_without_payment_date_is_unrecognized_not_failed() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    let paid = e.steppay.charge(&charge(&key, 1, 10_000)).await.unwrap();
    e.next("lookup", json!({"kind": "receipt_without_payment_date"})).await;
    let state = e.steppay.payment_state(&paid.pg_payment_id).await;
    assert!(matches!(state, Err(PgError::Unrecognized { .. })), "{state:?}");
    let state = e.steppay.payment_state(&paid.pg_payment_id).await;
    assert!(matches!(state, Ok(paycycle::pg::PaymentState::Paid { .. })), "{state:?}");
}

#[tokio::test]
async fn steppay_fault_classes() {
    let e = env().await;
    let key = e.steppay_billing_key().await;
    e.next("charge", json!({"kind": "decline", "hard": false})).await;
    assert!(matches!(e.steppay.charge(&charge(&key, 1, 100)).await, Err(PgError::Declined { hard: false, .. })));
    // StepPay publishes no error codes: whatever the sandbox's errorCode, a refused charge is a
    // soft decline (classified by HTTP status).
    e.next("charge", json!({"kind": "decline", "hard": true})).await;
    assert!(matches!(e.steppay.charge(&charge(&key, 2, 100)).await, Err(PgError::Declined { hard: false, .. })));
    assert!(matches!(
        e.steppay.charge(&charge("1600000000000unknownkey000000", 3, 100)).await,
        Err(PgError::Declined { hard: false, .. })
    ));
    e.next("charge", json!({"kind": "server_error"})).await;
    let err = e.steppay.charge(&charge(&key, 4, 100)).await.unwrap_err();
    assert!(matches!(err, PgError::Unknown { .. }) && err.outcome_unknown(), "a 5xx on a charge is unknown: {err:?}");

    // Timeout after charge → Unknown; the same charge id again → AlreadyProcessed naming the
    // payment; its receipt says it was paid. Nothing was charged twice.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 4000})).await;
    e.next("charge", json!({"kind": "timeout_after_charge"})).await;
    let err = e.steppay.charge(&charge(&key, 5, 100)).await.unwrap_err();
    assert!(matches!(err, PgError::Unknown { .. }), "{err:?}");
    let again = e.steppay.charge(&charge(&key, 5, 100)).await.unwrap_err();
    let PgError::AlreadyProcessed { pg_payment_id: Some(id) } = again else { panic!("{again:?}") };
    let state = e.steppay.lookup(&Lookup::PgPayment { pg_payment_id: id, request_date_kst: None }).await.unwrap();
    assert!(matches!(state, PaymentState::Paid { .. }));
    let ledger = e.ledger().await;
    assert_eq!(
        ledger["charges"].as_array().unwrap().iter().filter(|c| c["partner_order_id"] == "sub_c1-p5-a1").count(),
        1
    );

    // Wrong token → Config; nothing listening → Transient (not sent).
    let bad = SteppayClient::new(
        http_client(Timeouts::default()),
        Url::parse(&e.sandbox.base_url()).unwrap(),
        Secret::new("wrong"),
    );
    assert!(matches!(bad.charge(&charge(&key, 6, 100)).await, Err(PgError::Config { .. })));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = SteppayClient::new(
        http_client(Timeouts::default()),
        Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        Secret::new("t"),
    );
    let err = nowhere.charge(&charge(&key, 7, 100)).await.unwrap_err();
    assert!(err.retryable(), "{err:?}");

    e.next("refund", json!({"kind": "server_error"})).await;
    let paid = e.steppay.charge(&charge(&key, 8, 1000)).await.unwrap();
    let r = RefundRequest {
        pg_payment_id: paid.pg_payment_id,
        amount: krw(100),
        pay_date_kst: String::new(),
        refund_id: "r".into(),
        pg_order: None,
    };
    assert!(e.steppay.refund(&r).await.unwrap_err().outcome_unknown());
    e.next("refund", json!({"kind": "decline", "hard": false})).await;
    assert!(matches!(e.steppay.refund(&r).await, Err(PgError::Declined { hard: false, .. })));
    assert!(!format!("{:?}", e.steppay).contains("local-steppay-secret-token"), "secrets never in Debug");
}

#[tokio::test]
async fn steppay_managed_and_self_first_payments_verify_by_lookup() {
    let e = env().await;
    e.admin(
        "/__admin/steppay/prices",
        json!({"product_code": "p", "price_code": "m", "product_name": "Pro", "amount": 19900, "interval": "MONTH"}),
    )
    .await;
    // StepPay gives the customer its own id and code (no code of ours goes in); orders name it.
    let customer = e.steppay.create_customer("홍길동", "hong@example.com", Some("01012345678")).await.unwrap();
    assert!(!customer.id.is_empty() && customer.code.starts_with("customer_"), "{customer:?}");
    let order = e.steppay.create_order(&customer.code, "p", "m").await.unwrap();
    assert!(order.order_code.starts_with("order_"));
    let unpaid = e.steppay.verify_order(&order.order_code, krw(19_900)).await;
    assert!(matches!(unpaid, Err(PgError::NotPaid(_))), "not paid yet");

    let pay =
        e.steppay.pay_url(&order.order_code, "https://shop.example.com/ok", "https://shop.example.com/err").unwrap();
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(pay).send().await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().ends_with("status=success"));

    let evidence = FirstPaymentEvidence::SteppayOrder { order_code: order.order_code.clone() };
    let verify = |expected: i64| e.steppay.verify_first_payment(&evidence, krw(expected));
    let first = verify(19_900).await.unwrap();
    assert_eq!(first.charged.as_ref().unwrap().amount, krw(19_900));
    assert!(first.billing_key.is_some(), "StepPay's subscription id for a managed subscription");
    assert!(
        matches!(verify(100).await, Err(PgError::PaidOtherAmount { charged, .. }) if charged.amount == krw(19_900)),
        "amount must match the checkout; what was paid is named so it can be recorded"
    );

    // A card change: StepPay's PAYMENT_METHOD order for its subscription, confirmed by lookup
    // only once the customer registered a card on it; it charges nothing and is never a renewal.
    let steppay_subscription = first.billing_key.clone().unwrap();
    let change = e.steppay.change_payment_method(&steppay_subscription).await.unwrap();
    assert_eq!(change.order_type.as_deref(), Some("PAYMENT_METHOD"));
    let unregistered = e.steppay.verify_payment_method_order(&change.order_code).await;
    assert!(matches!(unregistered, Err(PgError::NotPaid(_))), "{unregistered:?}");
    assert!(matches!(e.steppay.verify_payment_method_order(&order.order_code).await, Err(PgError::Mismatch(_))));
    let pay = e.steppay.pay_url(&change.order_code, "https://shop.example.com/ok", "https://shop.example.com/err");
    let r = no_redirect.get(pay.unwrap()).send().await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().ends_with("status=success"));
    let registered = e.steppay.verify_payment_method_order(&change.order_code).await.unwrap();
    assert_eq!((registered.charged, registered.billing_key), (None, None));
    let managed = paycycle::pg::Adapter::SteppayManaged(&e.steppay);
    let report = managed.renewal_order(&change.order_code, jiff::Timestamp::now()).await;
    assert!(matches!(report, Ok(paycycle::pg::OrderReport::Unusable(_))), "a card change is no renewal");

    let key = e.steppay_billing_key().await;
    let first = e
        .steppay
        .verify_first_payment(
            &FirstPaymentEvidence::SteppayPayment { id_key: key.clone(), partner_order_id: None },
            krw(1000),
        )
        .await
        .unwrap();
    assert_eq!(first.billing_key.as_deref(), Some(key.as_str()), "a CARD_BILL payment's idKey is the billing key");
    assert!(matches!(
        e.steppay
            .verify_first_payment(
                &FirstPaymentEvidence::SteppayPayment { id_key: "nope".into(), partner_order_id: None },
                krw(1000)
            )
            .await,
        Err(PgError::NotFound)
    ));
}

// ---------------- Payple ----------------

/// What a checkout stored about its window (the browser's fields choose nothing).
fn check(work: WindowWork, oid: &str, amount: i64) -> WindowCheck {
    WindowCheck {
        work,
        oid: oid.into(),
        expected: krw(amount),
        payer_no: payer().payer_no,
        holder: KeyHolder { name: payer().name, phone: payer().phone },
        opened_at: jiff::Timestamp::now(),
    }
}

fn payple_evidence(fields: &serde_json::Map<String, Value>, window: WindowCheck) -> FirstPaymentEvidence {
    FirstPaymentEvidence::PaypleResult { fields: fields.clone(), window }
}

#[tokio::test]
async fn payple_window_auth_pay_and_cert_verify_with_payple() {
    let e = env().await;
    let auth = e.window(WindowWork::Auth, "sub_w1-p0-a1", None).await;
    let verify = |fields: &serde_json::Map<String, Value>, window: WindowCheck| {
        let expected = window.expected;
        let evidence = payple_evidence(fields, window);
        let payple = e.payple.clone();
        async move { payple.verify_first_payment(&evidence, expected).await }
    };
    let first = verify(&auth, check(WindowWork::Auth, "sub_w1-p0-a1", 9_900)).await.unwrap();
    assert!(first.charged.is_none(), "AUTH registers without paying");
    assert_eq!(first.billing_key.as_deref(), auth["PCD_PAYER_ID"].as_str());
    // PUSERINFO: a key registered under another payer number is not confirmed.
    let mut other_payer = check(WindowWork::Auth, "sub_w1-p0-a1", 9_900);
    other_payer.payer_no = Some("2".into());
    assert!(matches!(verify(&auth, other_payer).await, Err(PgError::Mismatch(_))));

    let pay = e.window(WindowWork::Pay, "sub_w2-p0-a1", Some(9_900)).await;
    let first = verify(&pay, check(WindowWork::Pay, "sub_w2-p0-a1", 9_900)).await.unwrap();
    assert_eq!(first.charged.unwrap().pg_payment_id, "sub_w2-p0-a1");
    // The browser's total, work and status choose nothing: Payple's record of our OID decides.
    let mut tampered = pay.clone();
    tampered.insert("PCD_PAY_TOTAL".into(), json!("100"));
    tampered.insert("PCD_PAY_WORK".into(), json!("AUTH"));
    tampered.insert("PCD_PAY_RST".into(), json!("close"));
    let first = verify(&tampered, check(WindowWork::Pay, "sub_w2-p0-a1", 9_900)).await.unwrap();
    assert_eq!(first.charged.unwrap().amount, krw(9_900));
    assert!(matches!(
        verify(&pay, check(WindowWork::Pay, "sub_w2-p0-a1", 100)).await,
        Err(PgError::PaidOtherAmount { charged, expected }) if charged.amount == krw(9_900) && expected == krw(100)
    ));
    // An OID Payple never charged is not paid, whatever the browser says.
    assert!(matches!(verify(&pay, check(WindowWork::Pay, "sub_forged-p0-a1", 9_900)).await, Err(PgError::NotPaid(_))));

    let cert = e.window(WindowWork::Cert, "sub_w3-p0-a1", Some(5_000)).await;
    assert_eq!(e.ledger().await["totals"]["charges"], 1, "CERT is not charged before the confirm");
    // A CERT result pointing the confirm elsewhere is refused before any call.
    let mut evil = cert.clone();
    evil.insert("PCD_PAY_COFURL".into(), json!("https://evil.example.com/confirm"));
    assert!(matches!(verify(&evil, check(WindowWork::Cert, "sub_w3-p0-a1", 5_000)).await, Err(PgError::Mismatch(_))));
    let first = verify(&cert, check(WindowWork::Cert, "sub_w3-p0-a1", 5_000)).await.unwrap();
    assert_eq!(first.charged.unwrap().amount, krw(5_000));
    assert_eq!(e.ledger().await["totals"]["charges"], 2);

    let mut closed = serde_json::Map::new();
    closed.insert("PCD_PAY_RST".into(), json!("close"));
    assert!(matches!(verify(&closed, check(WindowWork::Cert, "sub_w4-p0-a1", 5_000)).await, Err(PgError::NotPaid(_))));
}

#[tokio::test]
async fn payple_repay_lookup_refund_and_delete() {
    let e = env().await;
    let auth = e.window(WindowWork::Auth, "reg-1", None).await;
    let key = auth["PCD_PAYER_ID"].as_str().unwrap().to_string();
    let c = e.payple.charge(&charge(&key, 1, 10_000)).await.unwrap();
    assert_eq!(c.pg_payment_id, "sub_c1-p1-a1", "the charge id is the OID");
    let date = paycycle::calendar::kst_yyyymmdd(c.approved_at);
    let state = e
        .payple
        .lookup(&Lookup::Charge { charge_id: charge(&key, 1, 1).charge_id, request_date_kst: date.clone() })
        .await
        .unwrap();
    assert!(matches!(state, PaymentState::Paid { amount, .. } if amount == krw(10_000)));
    let missing = e
        .payple
        .lookup(&Lookup::Charge { charge_id: charge(&key, 9, 1).charge_id, request_date_kst: date.clone() })
        .await;
    assert_eq!(missing, Err(PgError::NotFound));

    let refund = |amount: i64| RefundRequest {
        pg_payment_id: c.pg_payment_id.clone(),
        amount: krw(amount),
        pay_date_kst: date.clone(),
        refund_id: "r".into(),
        pg_order: None,
    };
    assert_eq!(e.payple.refund(&refund(3_000)).await.unwrap().amount, krw(3_000));
    assert!(matches!(e.payple.refund(&refund(7_001)).await, Err(PgError::Declined { hard: true, .. })));
    e.admin("/__admin/config", json!({"payple_partial_refunds": false})).await;
    assert!(
        matches!(e.payple.refund(&refund(1_000)).await, Err(PgError::Declined { hard: true, .. })),
        "test account: no partial cancel"
    );
    e.admin("/__admin/config", json!({"payple_partial_refunds": true})).await;
    e.payple.refund(&refund(7_000)).await.unwrap();
    // Payple's result lookup has no refund fields (manual_card "결제결과 조회"): a refunded payment
    // still looks paid there, and the client never claims to know its refunds.
    assert!(matches!(
        e.payple
            .lookup(&Lookup::Charge { charge_id: charge(&key, 1, 1).charge_id, request_date_kst: date.clone() })
            .await,
        Ok(PaymentState::Paid { refunded, .. }) if refunded.is_zero()
    ));

    e.payple.delete_billing_key(&key, Some("1")).await.unwrap();
    assert!(matches!(e.payple.charge(&charge(&key, 2, 100)).await, Err(PgError::Declined { hard: true, .. })));
    assert!(
        matches!(e.payple.charge(&charge(&key, 3, 99)).await, Err(PgError::Invalid(_))),
        "the 100원 minimum is checked before sending"
    );
}

#[tokio::test]
async fn payple_fault_classes() {
    let e = env().await;
    let key = e.window(WindowWork::Auth, "reg-2", None).await["PCD_PAYER_ID"].as_str().unwrap().to_string();
    e.next("charge", json!({"kind": "decline", "hard": false})).await;
    assert!(matches!(e.payple.charge(&charge(&key, 1, 100)).await, Err(PgError::Declined { hard: false, .. })));
    e.next("charge", json!({"kind": "decline", "hard": true})).await;
    assert!(matches!(e.payple.charge(&charge(&key, 2, 100)).await, Err(PgError::Declined { hard: true, .. })));
    e.next("charge", json!({"kind": "server_error"})).await;
    assert!(e.payple.charge(&charge(&key, 3, 100)).await.unwrap_err().outcome_unknown());
    e.next("auth", json!({"kind": "server_error"})).await;
    let err = e.payple.charge(&charge(&key, 4, 100)).await.unwrap_err();
    assert!(err.retryable(), "auth failed: nothing was sent: {err:?}");

    // Timeout after charge → Unknown; the same OID again → SPCD0014 AlreadyProcessed; the
    // lookup by OID resolves it as paid. One charge in the PG's ledger.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 4000})).await;
    e.next("charge", json!({"kind": "timeout_after_charge"})).await;
    let req = charge(&key, 5, 100);
    assert!(matches!(e.payple.charge(&req).await, Err(PgError::Unknown { .. })));
    assert!(matches!(e.payple.charge(&req).await, Err(PgError::AlreadyProcessed { .. })));
    let today = paycycle::calendar::kst_yyyymmdd(jiff::Timestamp::now());
    let state =
        e.payple.lookup(&Lookup::Charge { charge_id: req.charge_id.clone(), request_date_kst: today }).await.unwrap();
    assert!(matches!(state, PaymentState::Paid { .. }));
    let ledger = e.ledger().await;
    assert_eq!(ledger["charges"].as_array().unwrap().iter().filter(|c| c["id"] == "sub_c1-p5-a1").count(), 1);

    // Referer not the registered one → Config (AUTH0007); wrong partner key → Config.
    e.admin("/__admin/config", json!({"payple_referer": "https://other.example.com"})).await;
    assert!(
        matches!(e.payple.charge(&charge(&key, 6, 100)).await, Err(PgError::Config { code, .. }) if code == "AUTH0007")
    );
    e.admin("/__admin/config", json!({"payple_referer": null})).await;
    let wrong = PaypleClient::new(
        http_client(Timeouts::default()),
        Url::parse(&e.sandbox.base_url()).unwrap(),
        &Url::parse("https://shop.example.com").unwrap(),
        Secret::new("test"),
        Secret::new("wrong"),
        Secret::new("x"),
    );
    assert!(matches!(wrong.charge(&charge(&key, 7, 100)).await, Err(PgError::Config { .. })));
    let debug = format!("{:?}", e.payple);
    assert!(!debug.contains("abcd1234567890") && !debug.contains("local-payple-refund-key"), "{debug}");
}

/// The window parameters ask for Payple's recurring card window: `PCD_CARD_VER` `01` (정기)
/// (PAYPLECORP/manual_card README "1. 최초결제 - 공통"; PAYPLECORP/sample_php `order_confirm.php`).
#[tokio::test]
async fn payple_window_params_ask_for_the_recurring_card_window() {
    let e = env().await;
    for work in [WindowWork::Auth, WindowWork::Pay, WindowWork::Cert] {
        let total = (work != WindowWork::Auth).then(|| krw(9_900));
        let params =
            e.payple.window_params(work, "chk_v", "Pro", total, &payer(), "https://shop/r", "sub_v").await.unwrap();
        let v = serde_json::to_value(&params).unwrap();
        assert_eq!((v["PCD_PAY_TYPE"].as_str(), v["PCD_CARD_VER"].as_str()), (Some("card"), Some("01")), "{v}");
    }
}

/// The re-pay's answer and the result lookup's both give the card (company, number, trade
/// number) and the receipt URL (manual_card README "3. 이후결제 - 정기결제", "결제결과 조회"); the
/// number is kept masked to at most its first and last four digits, whatever Payple shows (its
/// lookup sample shows eight leading digits); the lookup's numbers arrive as JSON numbers.
#[tokio::test]
async fn payple_repay_and_lookup_report_the_masked_card_and_the_receipt() {
    let e = env().await;
    let auth = e.window(WindowWork::Auth, "reg-d", None).await;
    let key = auth["PCD_PAYER_ID"].as_str().unwrap().to_string();
    let (c, details) = e.payple.repay_detailed(&charge(&key, 1, 10_000)).await.unwrap();
    let date = paycycle::calendar::kst_yyyymmdd(c.approved_at);
    let (state, looked_up) = e
        .payple
        .lookup_with_details(&Lookup::Charge { charge_id: charge(&key, 1, 1).charge_id, request_date_kst: date })
        .await
        .unwrap();
    assert!(matches!(state, PaymentState::Paid { amount, .. } if amount == krw(10_000)));
    for d in [&details, &looked_up] {
        let card = d.card.as_ref().expect("card");
        assert_eq!(card.name.as_deref(), Some("NH"));
        assert_eq!(card.number_masked.as_deref(), Some("2121********2031"), "{d:?}");
        assert!(card.trade_number.as_deref().is_some_and(|t| !t.is_empty()));
        assert!(d.receipt_url.as_deref().is_some_and(|u| u.starts_with("https://")));
    }
    assert_eq!(details, looked_up, "the same payment, the same details");
}
