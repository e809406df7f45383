//! The refund function end to end over HTTP (local stack: moto + sandbox + handlers), checked on
//! the sandbox's ledger too: race-free partial refunds, idempotency, unknown outcomes resolved
//! without a second PG refund, API-key auth and partner isolation, validation.

use std::time::Duration;

use jiff::Timestamp;
use paycycle::domain::attempt::{ChargeId, SubscriptionId};
use paycycle::money::Krw;
use paycycle::pg::PgMode;
use paycycle::pg::payple::PaypleClient;
use paycycle::pg::steppay::SteppayClient;
use paycycle::pg::{ChargeRequest, Payer, PaymentGateway, Timeouts, http_client};
use paycycle::secret::Secret;
use paycycle::store::Store;
use paycycle::store::api_keys::generate_api_key;
use paycycle::store::payments::PaymentRecord;
use paycycle_dev::{LocalStack, Options};
use paycycle_e2e::SandboxDriver;
use serde_json::{Value, json};
use url::Url;

struct Env {
    stack: LocalStack,
    http: reqwest::Client,
    store: Store,
    key: String,
    steppay: SteppayClient,
    payple: PaypleClient,
}

async fn env() -> Env {
    env_with_pg_timeout(1_000).await
}

async fn env_with_pg_timeout(ms: u64) -> Env {
    let stack =
        LocalStack::start(Options { api_port: 0, pg_timeout_ms: Some(ms), ..Options::default() }).await.unwrap();
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let store = Store::new(&sdk, &stack.provisioned.table);
    let key = generate_api_key();
    store.create_api_key(&key, "e2e", "partner_a", Timestamp::now()).await.unwrap();
    let base = Url::parse(&stack.sandbox.base_url()).unwrap();
    let pg_http = http_client(Timeouts::default());
    let steppay = SteppayClient::new(pg_http.clone(), base.clone(), Secret::new("local-steppay-secret-token"));
    let payple = PaypleClient::new(
        pg_http,
        base,
        &Url::parse("http://127.0.0.1:3000").unwrap(),
        Secret::new("test"),
        Secret::new("abcd1234567890"),
        Secret::new("local-payple-refund-key"),
    );
    Env {
        stack,
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        store,
        key,
        steppay,
        payple,
    }
}

fn payer() -> Payer {
    Payer {
        customer_id: "cus_1".into(), name: "홍길동".into(), phone: None, email: None, payer_no: Some("1".into())
    }
}

impl Env {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.stack.api_url())
    }

    async fn admin(&self, path: &str, body: Value) {
        self.driver().admin(path, body).await
    }

    async fn ledger(&self) -> Value {
        self.driver().ledger().await
    }

    fn driver(&self) -> SandboxDriver {
        SandboxDriver::new(self.stack.sandbox.base_url())
    }

    /// A real StepPay charge in the sandbox, recorded as our payment.
    async fn steppay_payment(&self, sub: &str, amount: i64) -> PaymentRecord {
        let billing_key = self.driver().steppay_billing_key().await;
        self.record(PgMode::SteppaySelf, sub, amount, &billing_key).await
    }

    async fn payple_payment(&self, sub: &str, amount: i64) -> PaymentRecord {
        let billing_key = self.driver().payple_billing_key(&self.payple, &payer()).await;
        self.record(PgMode::Payple, sub, amount, &billing_key).await
    }

    async fn record(&self, pg: PgMode, sub: &str, amount: i64, billing_key: &str) -> PaymentRecord {
        let charge_id = ChargeId::new(SubscriptionId::parse(sub).unwrap(), 1, 1).unwrap();
        let req = ChargeRequest {
            billing_key: billing_key.into(),
            charge_id: charge_id.clone(),
            amount: Krw::new(amount).unwrap(),
            goods: "Pro".into(),
            payer: payer(),
        };
        let charged = match pg {
            PgMode::Payple => self.payple.charge(&req).await.unwrap(),
            _ => self.steppay.charge(&req).await.unwrap(),
        };
        let p = PaymentRecord::paid(
            pg,
            &charged.pg_payment_id,
            "cus_1",
            charged.amount,
            charged.approved_at,
            Some(SubscriptionId::parse(sub).unwrap()),
            Some(charge_id),
            None,
        )
        .for_partner("partner_a");
        self.store.create_payment(&p).await.unwrap();
        p
    }

    async fn refund(&self, payment_id: &str, idem: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.api(&format!("/payments/{payment_id}/refunds")))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn payment(&self, payment_id: &str) -> Value {
        self.http
            .get(self.api(&format!("/payments/{payment_id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_partial_refunds_never_exceed_the_payment_and_match_the_pg() {
    let e = env().await;
    let p = e.steppay_payment("sub_r50", 10_000).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = e.http.clone();
        let url = e.api(&format!("/payments/{}/refunds", p.payment_id));
        let key = e.key.clone();
        let amount = 300 + (i * 37) % 700;
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("k-{i}"))
                .json(&json!({"amount": amount, "reason": "partial"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), amount)
        }));
    }
    let mut refunded = 0;
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, amount) = t.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        if status == 201 {
            refunded += amount;
        } else {
            assert_eq!(status, 422, "the only refusal is 'exceeds refundable'");
        }
    }
    assert!(refunded <= 10_000, "refunded {refunded}");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(ours["refunded"], refunded);
    assert_eq!(ours["refund_pending"], 0);
    assert_eq!(ours["refundable"], 10_000 - refunded);
    let ledger = e.ledger().await;
    assert_eq!(ledger["totals"]["refunded"], refunded, "the PG's ledger and our table agree to the won");
    assert!(refunded >= 9_300, "refunds fill what is refundable: {refunded} ({statuses:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_refunds_once() {
    let e = env().await;
    let p = e.payple_payment("sub_idem", 10_000).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let http = e.http.clone();
        let url = e.api(&format!("/payments/{}/refunds", p.payment_id));
        let key = e.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "same-key")
                .json(&json!({"amount": 1000, "reason": "dup"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => {
                ids.insert(body["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(body["error"]["code"], "idempotency_in_progress"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success is the same refund");
    // After it finished, the same key replays the same answer.
    let (status, again) = e.refund(&p.payment_id, "same-key", json!({"amount": 1000, "reason": "dup"})).await;
    assert_eq!((status, again["id"].as_str().map(str::to_string)), (201, ids.iter().next().cloned()));
    let ledger = e.ledger().await;
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 1, "one PG refund");
    // Same key, different body → 422.
    let (status, body) = e.refund(&p.payment_id, "same-key", json!({"amount": 2000, "reason": "dup"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
}

#[tokio::test]
async fn a_pg_timeout_after_refunding_stays_reserved_then_resolves_without_a_second_refund() {
    let e = env().await;
    // StepPay: its receipt shows refunds (Payple's lookup cannot: see pg_answers.rs).
    let p = e.steppay_payment("sub_to", 10_000).await;
    // The refund reaches StepPay and is done there, but the answer is held past our 1 s timeout;
    // the receipt lookups fail meanwhile (ours, and verify's for the CANCELED webhook), so the
    // outcome stays unknown.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 100, "fault": {"kind": "server_error"}}))
        .await;
    let (status, body) = e.refund(&p.payment_id, "to-1", json!({"amount": 4000, "reason": "timeout"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(
        (ours["refund_pending"].as_i64(), ours["refundable"].as_i64()),
        (Some(4000), Some(6000)),
        "kept reserved"
    );
    assert_eq!(ours["refunds"][0]["status"], "unknown");
    assert_eq!(e.ledger().await["totals"]["refunded"], 4000, "the PG did refund");
    let driver = e.driver();
    driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();

    // The client retries with the same key: resolved by lookup, not refunded again.
    let (status, body) = e.refund(&p.payment_id, "to-1", json!({"amount": 4000, "reason": "timeout"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "succeeded");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(
        (ours["refunded"].as_i64(), ours["refund_pending"].as_i64(), ours["refundable"].as_i64()),
        (Some(4000), Some(0), Some(6000))
    );
    let ledger = e.ledger().await;
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 1, "exactly one PG refund");
}

/// StepPay answers a refund it has taken but not finished with `CANCEL_PROGRESS` (step-api-spec
/// `service/payment.json` `CancelPaymentDTO.paymentStatus`). That is neither a success nor a
/// failure: the refund stays reserved while StepPay's receipt still says `CANCEL_PROGRESS`, and is
/// settled — once, without a second refund — only when StepPay's receipt shows it done.
#[tokio::test]
async fn a_refund_steppay_reports_in_progress_stays_reserved_until_steppay_shows_it_done() {
    let e = env().await;
    let p = e.steppay_payment("sub_prog", 10_000).await;
    e.admin("/__admin/scenarios", json!({"operation": "refund", "count": 1, "fault": {"kind": "cancel_in_progress"}}))
        .await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "lookup", "count": 100, "fault": {"kind": "cancel_in_progress"}}),
    )
    .await;
    let (status, body) = e.refund(&p.payment_id, "prog-1", json!({"amount": 3000, "reason": "in progress"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(
        (ours["refunded"].as_i64(), ours["refund_pending"].as_i64(), ours["refundable"].as_i64()),
        (Some(0), Some(3000), Some(7000)),
        "neither succeeded nor released: {ours}"
    );
    let driver = e.driver();
    driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();

    let (status, body) = e.refund(&p.payment_id, "prog-1", json!({"amount": 3000, "reason": "in progress"})).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("succeeded")), "{body}");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(
        (ours["refunded"].as_i64(), ours["refund_pending"].as_i64(), ours["refundable"].as_i64()),
        (Some(3000), Some(0), Some(7000))
    );
    assert_eq!(e.ledger().await["refunds"].as_array().unwrap().len(), 1, "exactly one PG refund");
}

#[tokio::test]
async fn api_keys_and_partners() {
    let e = env().await;
    let p = e.steppay_payment("sub_auth", 5_000).await;
    let url = e.api(&format!("/payments/{}", p.payment_id));
    let unauthorized = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        assert_eq!(v["error"]["message"], "a valid API key is required", "never says which part was wrong");
    };
    unauthorized(e.http.get(&url).send().await.unwrap()).await;
    unauthorized(e.http.get(&url).bearer_auth("pc_wrong").send().await.unwrap()).await;
    unauthorized(e.http.get(&url).header("Authorization", format!("Basic {}", e.key)).send().await.unwrap()).await;
    let revoked = generate_api_key();
    let record = e.store.create_api_key(&revoked, "old", "partner_a", Timestamp::now()).await.unwrap();
    e.store.revoke_api_key(&record, Timestamp::now()).await.unwrap();
    unauthorized(e.http.get(&url).bearer_auth(&revoked).send().await.unwrap()).await;

    let ok = e.payment(&p.payment_id).await;
    assert_eq!(
        (ok["status"].as_str(), ok["amount"].as_i64(), ok["refundable"].as_i64()),
        (Some("paid"), Some(5000), Some(5000))
    );
    // Another partner's key: the payment does not exist for it.
    let other = generate_api_key();
    e.store.create_api_key(&other, "b", "partner_b", Timestamp::now()).await.unwrap();
    let r = e.http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = e
        .http
        .post(format!("{url}/refunds"))
        .bearer_auth(&other)
        .header("Idempotency-Key", "x")
        .json(&json!({"reason": "steal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(e.ledger().await["totals"]["refunded"], 0);
}

#[tokio::test]
async fn validation_declines_and_full_refund_with_cancel() {
    let e = env().await;
    let p = e.steppay_payment("sub_val", 5_000).await;
    let id = p.payment_id.clone();
    for (i, (body, code)) in [
        (json!({"amount": 0, "reason": "x"}), "invalid_amount"),
        (json!({"amount": -5, "reason": "x"}), "invalid_request"),
        (json!({"amount": 10.5, "reason": "x"}), "invalid_request"),
        (json!({"amount": "100", "reason": "x"}), "invalid_request"),
        (json!({"amount": 100}), "invalid_request"),
        (json!({"amount": 100, "reason": " "}), "invalid_reason"),
        (json!({"amount": 100, "reason": "x", "extra": 1}), "invalid_request"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, v) = e.refund(&id, &format!("v-{i}"), body.clone()).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{body}: {v}");
    }
    let r = e
        .http
        .post(e.api(&format!("/payments/{id}/refunds")))
        .bearer_auth(&e.key)
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "Idempotency-Key is required");
    let big = "x".repeat(70 * 1024);
    let r = e
        .http
        .post(e.api(&format!("/payments/{id}/refunds")))
        .bearer_auth(&e.key)
        .header("Idempotency-Key", "big")
        .json(&json!({"reason": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (status, v) = e.refund(&id, "over", json!({"amount": 5001, "reason": "x"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("amount_exceeds_refundable")));
    let (status, _) = e.refund("pay_nope", "nope", json!({"reason": "x"})).await;
    assert_eq!(status, 404);

    // A PG decline releases the reservation.
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let (status, v) = e.refund(&id, "declined", json!({"amount": 1000, "reason": "x"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (502, Some("refund_declined")), "{v}");
    assert_eq!(e.payment(&id).await["refundable"], 5000);

    // A partial refund cannot cancel the subscription; a full one can (no subscription stored
    // here, so the request is refused before any money moves).
    let (status, v) =
        e.refund(&id, "cancel-partial", json!({"amount": 1000, "reason": "x", "cancel_subscription": true})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("cannot_cancel_subscription")));

    // No amount = everything refundable.
    let (status, v) = e.refund(&id, "all", json!({"reason": "all"})).await;
    assert_eq!((status, v["amount"].as_i64()), (201, Some(5000)), "{v}");
    assert_eq!(e.payment(&id).await["status"], "refunded");
    let (status, v) = e.refund(&id, "more", json!({"reason": "again"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("nothing_refundable")));
    assert_eq!(e.ledger().await["totals"]["refunded"], 5000);
}

impl Env {
    /// An active subscription whose latest payment is `p`.
    async fn subscription_of(&self, id: &str, p: &PaymentRecord) -> paycycle::store::subscriptions::SubscriptionRecord {
        let record = paycycle_fixtures::subscription(id)
            .pg(p.pg)
            .anchor(p.paid_at)
            .amount(p.amounts.paid.won())
            .plan_name("Pro")
            .partner("partner_a")
            .customer(paycycle::domain::customer::Customer {
                id: "cus_1".into(),
                name: "홍길동".into(),
                phone: None,
                email: None,
            })
            .billing_key(Some("payer"))
            .build();
        self.store.create_subscription(&record).await.unwrap();
        record
    }
}

#[tokio::test]
async fn a_full_refund_of_the_latest_payment_can_cancel_the_subscription() {
    use paycycle::domain::subscription::SubscriptionState;

    let e = env().await;
    let p = e.payple_payment("sub_cancel", 9_900).await;
    let record = e.subscription_of("sub_cancel", &p).await;
    let (status, v) =
        e.refund(&p.payment_id, "full-cancel", json!({"reason": "customer left", "cancel_subscription": true})).await;
    assert_eq!(status, 201, "{v}");
    let after = e.store.get_subscription(record.id()).await.unwrap().unwrap();
    assert_eq!(after.subscription.state, SubscriptionState::Canceled);
    assert_eq!(after.subscription.next_attempt_at, None, "renew will not charge it again");
}

#[tokio::test]
async fn a_declined_refund_with_cancel_subscription_leaves_the_subscription_canceled_and_says_so() {
    use paycycle::domain::subscription::SubscriptionState;

    let e = env().await;
    let p = e.steppay_payment("sub_cdecl", 9_900).await;
    let record = e.subscription_of("sub_cdecl", &p).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let body = json!({"reason": "customer left", "cancel_subscription": true});
    let (status, v) = e.refund(&p.payment_id, "cdecl", body.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (502, Some("refund_declined")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("stays canceled"), "{v}");
    let after = e.store.get_subscription(record.id()).await.unwrap().unwrap();
    assert_eq!((after.subscription.state, after.subscription.next_attempt_at), (SubscriptionState::Canceled, None));
    assert_eq!(e.payment(&p.payment_id).await["refundable"], 9_900, "the declined refund's reservation is released");
    // The partner refunds again (new key) with cancel_subscription: the subscription stays canceled.
    let (status, v) = e.refund(&p.payment_id, "cdecl-2", body).await;
    assert_eq!((status, v["status"].as_str()), (201, Some("succeeded")), "{v}");
    assert_eq!(e.ledger().await["totals"]["refunded"], 9_900);
}

/// The race review found in `resolve`: our lookup is taken while another refund of the same amount
/// is at the PG but not yet settled here, so the PG's total looks like ours plus the unknown one.
/// The verdict is written only if the payment is still as it was read before the PG was asked.
#[tokio::test]
async fn an_unknown_refund_is_settled_only_against_the_payment_as_read_before_the_lookup() {
    let e = env_with_pg_timeout(3_000).await;
    let p = e.steppay_payment("sub_rrace", 10_000).await;
    let (u, r2) = (json!({"amount": 3000, "reason": "u"}), json!({"amount": 3000, "reason": "r2"}));
    e.admin("/__admin/config", json!({"steppay_webhook_url": null, "timeout_after_charge_ms": 5_000})).await;
    // U: StepPay answers 500 before doing anything (ambiguous to us): unknown, never refunded.
    e.admin("/__admin/scenarios", json!({"operation": "refund", "count": 1, "fault": {"kind": "server_error"}})).await;
    let (status, v) = e.refund(&p.payment_id, "u", u.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{v}");
    assert_eq!(e.ledger().await["totals"]["refunded"], 0, "U never reached StepPay");
    // U's retry asks StepPay (its lookup held 2 s); meanwhile R2's own lookup fails, R2 is reserved
    // and refunded at StepPay, its answer held.
    for fault in [json!({"kind": "delay", "ms": 2_000}), json!({"kind": "server_error"})] {
        e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 1, "fault": fault})).await;
    }
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    let retry = tokio::spawn({
        let (http, url, key) = (e.http.clone(), e.api(&format!("/payments/{}/refunds", p.payment_id)), e.key.clone());
        async move {
            let r = http.post(url).bearer_auth(key).header("Idempotency-Key", "u").json(&u).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn({
        let (http, url, key) = (e.http.clone(), e.api(&format!("/payments/{}/refunds", p.payment_id)), e.key.clone());
        async move {
            let r = http.post(url).bearer_auth(key).header("Idempotency-Key", "r2").json(&r2).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    let (status, v) = retry.await.unwrap();
    let _ = second.await.unwrap();
    let pg_refunded = e.ledger().await["totals"]["refunded"].as_i64().unwrap();
    let ours = e.payment(&p.payment_id).await;
    let u_status = ours["refunds"].as_array().unwrap().iter().find(|r| r["reason"] == "u").unwrap()["status"].clone();
    assert_eq!(pg_refunded, 3000, "StepPay refunded R2 only");
    assert_ne!(u_status, "succeeded", "U answered {status} {v}; payment {ours}");
    assert!(ours["refunded"].as_i64().unwrap() <= pg_refunded, "we never record more than StepPay refunded: {ours}");
}

/// An unknown outcome gives the Idempotency-Key back so a retry can resolve it; a "retry" under
/// that key with another body must not be answered from the first request's refund (its amount,
/// or a subscription cancel it never did).
#[tokio::test]
async fn a_reused_key_with_another_body_after_an_unknown_refund_is_refused_not_answered_from_that_refund() {
    let e = env().await;
    let p = e.steppay_payment("sub_reuse", 10_000).await;
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 100, "fault": {"kind": "server_error"}}))
        .await;
    let first = json!({"amount": 3000, "reason": "reuse"});
    let (status, v) = e.refund(&p.payment_id, "reuse-1", first.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{v}");

    // Same key, the subscription cancel asked now: it was never done, and must not be claimed.
    let cancel = json!({"amount": 3000, "reason": "reuse", "cancel_subscription": true});
    let (status, v) = e.refund(&p.payment_id, "reuse-1", cancel).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{v}");

    // Same key, another amount, once the PG can be asked: not a 201 for the 3,000 refund.
    let driver = e.driver();
    driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();
    let (status, v) = e.refund(&p.payment_id, "reuse-1", json!({"amount": 5000, "reason": "reuse"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{v}");

    // The real retry still resolves the first refund, without a second PG refund.
    let (status, v) = e.refund(&p.payment_id, "reuse-1", first).await;
    assert_eq!((status, v["amount"].as_i64(), v["status"].as_str()), (201, Some(3000), Some("succeeded")), "{v}");
    let ledger = e.ledger().await;
    assert_eq!((ledger["refunds"].as_array().unwrap().len(), ledger["totals"]["refunded"].as_i64()), (1, Some(3000)));
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(self.api(path)).bearer_auth(&self.key).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn reviews(&self) -> Value {
        let r = self.http.get(self.api("/reviews")).bearer_auth(&self.key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// A refund of `p` that met `fault` at the PG (`timeout_after_charge`: made there, its answer
    /// lost; `server_error`: a 500 before anything), with every lookup failing meanwhile: left
    /// unknown, for a person. Returns its id.
    async fn unknown_refund(&self, p: &PaymentRecord, amount: i64, fault: &str) -> String {
        self.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500, "steppay_webhook_url": null})).await;
        self.admin("/__admin/scenarios", json!({"operation": "refund", "count": 1, "fault": {"kind": fault}})).await;
        self.admin(
            "/__admin/scenarios",
            json!({"operation": "lookup", "count": 100, "fault": {"kind": "server_error"}}),
        )
        .await;
        let idem = format!("unknown-{}", p.payment_id);
        let (status, body) = self.refund(&p.payment_id, &idem, json!({"amount": amount, "reason": "lost"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
        let driver = self.driver();
        driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();
        tokio::time::sleep(Duration::from_millis(1_600)).await; // the held answer finishes
        let ours = self.payment(&p.payment_id).await;
        assert_eq!(ours["refunds"][0]["status"], "unknown", "{ours}");
        ours["refunds"][0]["id"].as_str().unwrap().to_string()
    }
}

/// A refund left unknown is listed for a person, and their verdict stands only where the PG's
/// refunded total allows it: StepPay shows the refund made, so `not_refunded` (which would let
/// the money be refunded twice) is refused and `refunded` is recorded, once. Payple shows no
/// refunds: the person's word stands, recorded as theirs.
#[tokio::test]
async fn a_refund_left_unknown_is_resolved_only_as_the_pgs_refunded_total_allows() {
    let e = env().await;
    let p = e.steppay_payment("sub_rrev", 10_000).await;
    let refund_id = e.unknown_refund(&p, 4_000, "timeout_after_charge").await;
    let reviews = e.reviews().await;
    let listed = reviews["data"].as_array().unwrap().iter().find(|r| r["refund_id"] == refund_id.as_str()).cloned();
    let listed = listed.expect("listed for a person");
    assert_eq!(listed["pg_reference"]["pg_payment_id"], json!(p.pg_payment_id), "{listed}");
    assert_eq!(listed["amount"], 4_000);

    let path = format!("/payments/{}/refunds/{refund_id}/resolve", p.payment_id);
    let (status, v) = e.post(&path, json!({"verdict": "not_refunded", "reason": "not in the admin"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("pg_shows_refunded")), "{v}");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!((ours["refund_pending"].as_i64(), ours["refundable"].as_i64()), (Some(4_000), Some(6_000)), "kept");
    let (status, v) = e.post(&path, json!({"verdict": "refunded", "reason": "CANCELED in StepPay's admin"})).await;
    assert_eq!(
        (status, v["status"].as_str(), v["resolution"]["pg"].as_str()),
        (200, Some("succeeded"), Some("confirmed")),
        "{v}"
    );
    assert_eq!(v["resolution"]["by"], "e2e");
    let ours = e.payment(&p.payment_id).await;
    assert_eq!(
        (ours["refunded"].as_i64(), ours["refund_pending"].as_i64(), ours["refundable"].as_i64()),
        (Some(4_000), Some(0), Some(6_000))
    );
    let (status, v) = e.post(&path, json!({"verdict": "refunded", "reason": "again"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("not_in_review")), "{v}");
    assert!(!e.reviews().await["data"].as_array().unwrap().iter().any(|r| r["refund_id"] == refund_id.as_str()));
    assert_eq!(e.ledger().await["refunds"].as_array().unwrap().len(), 1, "one PG refund");

    // StepPay's receipt may lag a cancel: a refund that never reached StepPay (a 500) cannot be
    // called not made until it is old enough for the receipt to show it.
    let young = e.steppay_payment("sub_rrevy", 10_000).await;
    let refund_id = e.unknown_refund(&young, 2_000, "server_error").await;
    let path = format!("/payments/{}/refunds/{refund_id}/resolve", young.payment_id);
    let (status, v) = e.post(&path, json!({"verdict": "not_refunded", "reason": "not in the admin"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("too_soon")), "{v}");

    // Payple: no refund lookup. The refund never reached it (a 500); the person finds no cancel
    // in Payple's admin and says so: on their word, the amount is refundable again.
    let p = e.payple_payment("sub_rrevp", 10_000).await;
    let refund_id = e.unknown_refund(&p, 3_000, "server_error").await;
    let path = format!("/payments/{}/refunds/{refund_id}/resolve", p.payment_id);
    let (status, v) = e.post(&path, json!({"verdict": "paid", "reason": "r"})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_resolution")), "{v}");
    let (status, v) = e.post(&path, json!({"verdict": "not_refunded", "reason": "no cancel in Payple's admin"})).await;
    assert_eq!(
        (status, v["status"].as_str(), v["resolution"]["pg"].as_str()),
        (200, Some("failed"), Some("operator_only")),
        "{v}"
    );
    let ours = e.payment(&p.payment_id).await;
    assert_eq!((ours["refund_pending"].as_i64(), ours["refundable"].as_i64()), (Some(0), Some(10_000)));

    // Another partner's key sees none of it.
    let other = generate_api_key();
    e.store.create_api_key(&other, "other", "partner_b", Timestamp::now()).await.unwrap();
    let r = e.http.get(e.api("/reviews")).bearer_auth(&other).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], json!([]), "{v}");
    let r = e
        .http
        .post(e.api(&path))
        .bearer_auth(&other)
        .json(&json!({"verdict": "refunded", "reason": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
