//! Issue #8 end to end over HTTP (local stack: moto + sandbox + handlers + the stream → verify
//! feeder): first payments on all three PG modes from checkout to an active subscription,
//! webhooks stored first and verified by lookup, duplicates and out-of-order deliveries that
//! converge, forged webhooks that change nothing, and malformed bodies that get 4xx JSON.

use jiff::Timestamp;
use paycycle::store::Store;
use paycycle::store::checkouts::CheckoutStatus;
use paycycle::store::payments::payment_id_for;
use paycycle::store::webhooks::WebhookStatus;
use paycycle_dev::{LocalStack, Options};
use paycycle_e2e::{EventTap, Partner, SandboxDriver};
use serde_json::{Value, json};

struct Env {
    stack: LocalStack,
    store: Store,
    partner: Partner,
    sandbox: SandboxDriver,
    events: EventTap,
}

async fn env() -> Env {
    env_with(Options { api_port: 0, ..Options::default() }).await
}

async fn env_with(options: Options) -> Env {
    let stack = LocalStack::start(options).await.unwrap();
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let store = Store::new(&sdk, &stack.provisioned.table);
    let key = stack.create_api_key("e2e", "partner_a").await.unwrap();
    let bus = stack.provisioned.buses.values().next().unwrap().clone();
    let events = EventTap::attach(&sdk, &bus, &format!("{}-tap", stack.provisioned.table)).await;
    let partner = Partner::new(stack.api_url(), key);
    let sandbox = SandboxDriver::new(stack.sandbox.base_url());
    Env { stack, store, partner, sandbox, events }
}

fn customer() -> Value {
    json!({"id": "cus_1", "name": "홍길동", "phone": "01012345678", "email": "hong@example.com"})
}

fn plan(amount: i64) -> Value {
    json!({"name": "Pro", "amount": amount, "interval": "month", "interval_count": 1})
}

fn payple_checkout(work: &str, amount: i64) -> Value {
    json!({"pg": "payple", "customer": customer(), "plan": plan(amount),
           "return_url": "https://shop.example.com/return", "payple": {"work": work}})
}

impl Env {
    async fn deliveries(&self) -> usize {
        self.stack.sandbox.shared.state.lock().unwrap().deliveries.len()
    }

    async fn verify(&self, checkout_id: &str, mut fields: serde_json::Map<String, Value>) -> (u16, Value) {
        fields.insert("checkout_id".into(), json!(checkout_id));
        self.partner.post("/payments/verify", &Value::Object(fields), None).await
    }

    async fn checkout_status(&self, id: &str) -> CheckoutStatus {
        self.store.get_checkout(id).await.unwrap().unwrap().status
    }

    /// Event types published so far (drains the tap), each checked against its documented schema.
    async fn event_types(&self) -> Vec<String> {
        let events = self.events.drain().await;
        paycycle_e2e::check_events(&events).unwrap();
        let mut types: Vec<String> =
            events.iter().map(|e| e["detail-type"].as_str().unwrap_or("?").to_string()).collect();
        types.sort();
        types
    }

    async fn charges(&self) -> Vec<Value> {
        self.sandbox.ledger().await["charges"].as_array().cloned().unwrap_or_default()
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn payple_pay_window_to_active_subscription_with_its_webhook() {
    let e = env().await;
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["payple"]["PCD_PAY_WORK"], "PAY");
    assert_eq!(c["payple"]["PCD_PAY_TOTAL"], "9900");
    assert_eq!(c["payple"]["PCD_PAY_OID"], id);
    assert_eq!(c["payple"]["PCD_USER_DEFINE1"], c["subscription_id"]);
    assert!(c["payple"]["PCD_AUTH_KEY"].as_str().is_some_and(|k| !k.is_empty()));

    let result = e.sandbox.payple_window(&c["payple"], None).await;
    assert_eq!(result["PCD_PAY_RST"], "success");
    let (status, v) = e.verify(id, result.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["subscription"]["state"], "active");
    assert_eq!(v["subscription"]["current_period"]["index"], 0);
    assert_eq!(v["payment"]["amount"], 9_900);
    assert_eq!(v["checkout"]["status"], "completed");
    let payment_id = v["payment"]["id"].as_str().unwrap().to_string();

    // Verifying again answers the same, without another charge.
    let (status, again) = e.verify(id, result).await;
    assert_eq!((status, again["payment"]["id"].as_str()), (200, Some(payment_id.as_str())));
    // The PG's webhook (sent with the window result) is stored and verified: nothing changes.
    e.stack.settle_webhooks(1).await;
    let oid = id.to_string();
    let hooks =
        e.store.get_webhook_event(paycycle::pg::Pg::Payple, &format!("{oid}:success:PAYM0000")).await.unwrap().unwrap();
    assert_eq!(hooks.status, WebhookStatus::Verified, "{:?}", hooks.outcome);
    let sub =
        e.store.get_subscription(&c["subscription_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(sub.version, 1, "activated once");
    assert_eq!(e.stack.billing_key_of(&sub).await.as_deref(), e.charges().await[0]["billing_key"].as_str());
    assert_eq!(e.charges().await.len(), 1);
    let (status, p) = e.partner.get(&format!("/payments/{payment_id}")).await;
    assert_eq!((status, p["refundable"].as_i64()), (200, Some(9_900)));
    assert_eq!(e.event_types().await, sorted(&["checkout.completed", "payment.succeeded", "subscription.activated"]));
}

#[tokio::test]
async fn payple_cert_is_confirmed_and_auth_is_charged_by_paycycle() {
    let e = env().await;
    // CERT: the window authorizes; paycycle's verify sends the confirm and only its success counts.
    let c = e.partner.checkout(&payple_checkout("CERT", 15_000)).await;
    let result = e.sandbox.payple_window(&c["payple"], None).await;
    assert!(result["PCD_PAY_COFURL"].as_str().is_some());
    assert!(e.charges().await.is_empty(), "nothing charged before the confirm");
    let (status, v) = e.verify(c["id"].as_str().unwrap(), result).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["payment"]["amount"].as_i64(), v["subscription"]["state"].as_str()), (Some(15_000), Some("active")));
    assert_eq!(e.charges().await.len(), 1);

    // AUTH: the window only registers the card; verify charges period 0 with the charge id as OID.
    let c = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    assert!(c["payple"].get("PCD_PAY_TOTAL").is_none(), "AUTH windows carry no total");
    let result = e.sandbox.payple_window(&c["payple"], None).await;
    let (status, v) = e.verify(c["id"].as_str().unwrap(), result).await;
    assert_eq!(status, 200, "{v}");
    let sub = c["subscription_id"].as_str().unwrap();
    assert_eq!(v["payment"]["charge_id"], format!("{sub}-p0-a1"));
    let charges = e.charges().await;
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[1]["id"], format!("{sub}-p0-a1"));
    assert_eq!(charges[1]["amount"], 4_900);
}

#[tokio::test]
async fn a_closed_window_changes_nothing_and_a_tampered_total_fails_the_checkout_without_a_subscription() {
    let e = env().await;
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    // A close is the browser's word, not Payple's (issue 20 item 7): nothing changes.
    let closed = e.sandbox.payple_window(&c["payple"], Some("close")).await;
    let (status, v) = e.verify(id, closed.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("payment_not_completed")), "{v}");
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Open);
    assert!(
        e.store.get_subscription(&c["subscription_id"].as_str().unwrap().parse().unwrap()).await.unwrap().is_none()
    );

    // The browser's PCD_PAY_TOTAL is compared with the checkout: a customer who paid 100원
    // instead of 9,900원 gets no subscription.
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let mut params = c["payple"].clone();
    params["PCD_PAY_TOTAL"] = json!("100");
    let result = e.sandbox.payple_window(&params, None).await;
    let (status, v) = e.verify(c["id"].as_str().unwrap(), result).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("payment_failed")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("tampered"));
    // Evidence of another checkout is refused and changes nothing.
    let other = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let result = e.sandbox.payple_window(&other["payple"], None).await;
    let fresh = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let (status, v) = e.verify(fresh["id"].as_str().unwrap(), result).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("evidence_mismatch")));
    assert_eq!(e.checkout_status(fresh["id"].as_str().unwrap()).await, CheckoutStatus::Open);
}

#[tokio::test]
async fn steppay_self_completes_from_its_webhook_alone() {
    let e = env().await;
    let c = e.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(12_000)})).await;
    assert_eq!(c["steppay"]["sdk"]["partnerOrderId"], c["id"]);
    assert_eq!(c["steppay"]["sdk"]["method"], "CARD_BILL");
    let before = e.deliveries().await;
    let paid = e.sandbox.steppay_sdk_pay(&c["steppay"]["sdk"]).await;
    let id_key = paid["idKey"].as_str().unwrap().to_string();
    e.stack.settle_webhooks(before + 1).await;
    let checkout = e.store.get_checkout(c["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(checkout.status, CheckoutStatus::Completed);
    let sub = e.store.get_subscription(&checkout.subscription_id).await.unwrap().unwrap();
    assert_eq!(
        e.stack.billing_key_of(&sub).await,
        Some(id_key.clone()),
        "the CARD_BILL payment's idKey is the billing key"
    );
    assert_eq!(sub.subscription.state.as_str(), "active");
    // The partner's redirect handler verifying afterwards gets the same payment.
    let (status, v) =
        e.verify(c["id"].as_str().unwrap(), [("idKey".to_string(), json!(id_key))].into_iter().collect()).await;
    assert_eq!(status, 200);
    assert_eq!(v["payment"]["id"], payment_id_for(paycycle::pg::PgMode::SteppaySelf, &id_key));
}

/// A retried `POST /checkouts` is the same request however its client orders the PG options' keys
/// or spells an absent option: it gets the first checkout back, never `idempotency_key_reused`
/// (which would leave the first checkout orphaned and invite a second one).
#[tokio::test]
async fn a_retried_checkout_is_the_same_request_whatever_the_order_of_its_pg_options() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let managed = |options: Value| {
        json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
            "return_url": "https://shop.example.com/ok", "steppay": options})
    };
    let first = managed(json!({"product_code": "prod_pro", "price_code": "price_monthly"}));
    let reordered = managed(json!({"price_code": "price_monthly", "product_code": "prod_pro"}));
    assert_ne!(first.to_string(), reordered.to_string(), "the bodies differ in key order");
    let (status, a) = e.partner.post("/checkouts", &first, Some("retry-order")).await;
    assert_eq!(status, 201, "{a}");
    let (status, b) = e.partner.post("/checkouts", &reordered, Some("retry-order")).await;
    assert_eq!((status, &b["id"]), (201, &a["id"]), "{b}");

    let payple = |options: Value| {
        json!({"pg": "payple", "customer": customer(), "plan": plan(9_900),
            "return_url": "https://shop.example.com/ok", "payple": options})
    };
    let (status, a) = e.partner.post("/checkouts", &payple(json!({})), Some("retry-null")).await;
    assert_eq!(status, 201, "{a}");
    let (status, b) = e.partner.post("/checkouts", &payple(json!({"work": null})), Some("retry-null")).await;
    assert_eq!((status, &b["id"]), (201, &a["id"]), "{b}");
    // A work Payple does not have is refused, naming the three it has.
    let (status, bad) = e.partner.post("/checkouts", &payple(json!({"work": "REFUND"})), Some("bad-work")).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(["AUTH", "PAY", "CERT"].iter().all(|w| message.contains(w)), "{message}");
    // A different option is a different request.
    let (status, c) = e.partner.post("/checkouts", &payple(json!({"work": "AUTH"})), Some("retry-null")).await;
    assert_eq!((status, c["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{c}");
}

/// A StepPay price the partner names that StepPay does not have is the partner's mistake: a 422
/// naming it, not a 5xx that reads as paycycle's or StepPay's outage (make fuzz-api found the 502).
#[tokio::test]
async fn a_steppay_price_steppay_does_not_have_is_refused_as_the_partners_input() {
    let e = env().await;
    let body = json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
        "return_url": "https://shop.example.com/ok", "steppay": {"product_code": "prod_none", "price_code": "price_none"}});
    let (status, v) = e.partner.post("/checkouts", &body, Some("unknown-price")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("pg_refused")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("PRICE_NOT_FOUND"), "{v}");
    // The same key and body again: the same answer, nothing created meanwhile.
    let (status, _) = e.partner.post("/checkouts", &body, Some("unknown-price")).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn steppay_managed_first_order_and_renewal_webhooks_extend_the_period() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let body = json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
        "return_url": "https://shop.example.com/ok", "error_url": "https://shop.example.com/err",
        "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}});
    let c = e.partner.checkout(&body).await;
    let order_code = c["steppay"]["order_code"].as_str().unwrap().to_string();
    // A plan whose amount differs from StepPay's price is refused up front.
    // schemathesis found a checkout for 418,089,281,596,378,752원 accepted: plans are bounded.
    for amount in [99, 100_000_001, 418_089_281_596_378_752_i64] {
        let mut huge = body.clone();
        huge["plan"]["amount"] = json!(amount);
        let (status, v) = e.partner.post("/checkouts", &huge, Some(&format!("amount-{amount}"))).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_plan")), "{amount}");
    }
    let mut wrong = body.clone();
    wrong["plan"]["amount"] = json!(100);
    let (status, v) = e.partner.post("/checkouts", &wrong, Some("wrong-amount")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("plan_amount_mismatch")));

    let before = e.deliveries().await;
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    assert_eq!(redirect["status"], "success");
    let (status, v) = e
        .verify(
            c["id"].as_str().unwrap(),
            [("order_code".to_string(), json!(redirect["order_code"]))].into_iter().collect(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["subscription"]["renewer"], "pg");
    assert_eq!(v["subscription"]["next_attempt_at"], Value::Null, "StepPay renews it, not paycycle");
    e.stack.settle_webhooks(before + 1).await; // the first order's order.payment_completed: already applied
    let sub_id: paycycle::domain::attempt::SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let pg_sub = e.stack.billing_key_of(&e.store.get_subscription(&sub_id).await.unwrap().unwrap()).await.unwrap();
    assert_eq!(order_code, redirect["order_code"]);

    // StepPay renews twice (signed order.payment_completed webhooks); one renewal is delivered twice.
    e.sandbox
        .admin("/__admin/scenarios", json!({"operation": "charge", "fault": {"kind": "webhook_twice"}, "count": 1}))
        .await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    e.stack.settle_webhooks(before + 4).await;
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!(sub.subscription.current_period.unwrap().index, 2, "two renewals, the repeated one counted once");
    let payments = e.store.payments_of_subscription(&sub_id).await.unwrap();
    assert_eq!(payments.len(), 3);
    // StepPay writes amounts as decimals (`19900.0`): every renewal is recorded at what was paid.
    assert!(
        payments.iter().all(|p| p.amounts.paid.won() == 19_900),
        "{:?}",
        payments.iter().map(|p| p.amounts.paid).collect::<Vec<_>>()
    );

    // A failed renewal makes it past due (subscription.updated: UNPAID, confirmed by StepPay's
    // subscription lookup); StepPay's successful retry (order.payment_completed, and
    // subscription.updated: ACTIVE) makes it active again.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    e.stack.settle_webhooks(before + 5).await;
    assert_eq!(e.store.get_subscription(&sub_id).await.unwrap().unwrap().subscription.state.as_str(), "past_due");
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    e.stack.settle_webhooks(before + 7).await;
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!((sub.subscription.state.as_str(), sub.subscription.current_period.unwrap().index), ("active", 3));
    let types = e.event_types().await;
    assert_eq!(types.iter().filter(|t| *t == "subscription.renewed").count(), 3);
    assert_eq!(types.iter().filter(|t| *t == "subscription.past_due").count(), 1);
    assert!(e.stack.feeder.dead_letters.lock().await.is_empty());
}

/// StepPay customer creation takes no code of ours and answers StepPay's own `id`/`code`
/// (step-api-spec `service/account.json` `CustomerCreateDTO`, `CustomerV1DTO`): paycycle keeps them,
/// so one paycycle customer is one StepPay customer — across checkouts, and across checkouts made
/// at the same moment.
#[tokio::test]
async fn one_paycycle_customer_is_one_steppay_customer_even_with_concurrent_checkouts() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let body = |customer: &str| {
        json!({"pg": "steppay_managed", "customer": {"id": customer, "name": "홍길동", "email": "m@example.com"},
            "plan": plan(19_900), "return_url": "https://shop.example.com/ok",
            "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}})
    };
    let first = e.partner.checkout(&body("cus_one")).await;
    let second = e.partner.checkout(&body("cus_one")).await;
    let many = body("cus_many");
    let post = |key: &'static str| e.partner.post("/checkouts", &many, Some(key));
    let (a, b, c, d) = tokio::join!(post("many-1"), post("many-2"), post("many-3"), post("many-4"));
    let together = [a, b, c, d];
    for (status, v) in &together {
        assert!(*status == 201 || *status == 409, "{status} {v}");
    }
    assert!(together.iter().any(|(status, _)| *status == 201));
    let (customers, orders) = {
        let state = e.stack.sandbox.shared.state.lock().unwrap();
        (state.customers.clone(), state.orders.clone())
    };
    assert_eq!(customers.len(), 2, "one StepPay customer per paycycle customer: {customers:?}");
    let order_customer = |c: &Value| {
        let code = c["steppay"]["order_code"].as_str().unwrap();
        orders.iter().find(|o| o.order_code == code).unwrap().customer_id
    };
    assert_eq!(order_customer(&first), order_customer(&second), "the same StepPay customer orders again");
}

#[tokio::test]
async fn a_webhook_delivered_three_times_and_out_of_order_makes_one_payment_and_one_event_each() {
    let e = env().await;
    let a = e.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(5_000)})).await;
    let b = e.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(7_000)})).await;
    // A's webhook is held back and arrives after B's; then StepPay re-sends A's twice more.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "webhook_out_of_order"}, "count": 1}),
        )
        .await;
    let before = e.deliveries().await;
    let paid_a = e.sandbox.steppay_sdk_pay(&a["steppay"]["sdk"]).await;
    e.sandbox.steppay_sdk_pay(&b["steppay"]["sdk"]).await;
    e.stack.settle_webhooks(before + 2).await;
    let resend = json!({"pg": "steppay", "body": {"webHookType": "PAYMENT", "orderId": paid_a["orderId"], "idKey": paid_a["idKey"]}});
    e.sandbox.admin("/__admin/webhooks/send", resend.clone()).await;
    e.sandbox.admin("/__admin/webhooks/send", resend).await;
    e.stack.settle_webhooks(before + 4).await;
    for c in [&a, &b] {
        assert_eq!(e.checkout_status(c["id"].as_str().unwrap()).await, CheckoutStatus::Completed);
        let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(e.store.payments_of_subscription(&sub_id).await.unwrap().len(), 1);
        assert_eq!(e.store.get_subscription(&sub_id).await.unwrap().unwrap().version, 1);
    }
    let types = e.event_types().await;
    for t in ["checkout.completed", "payment.succeeded", "subscription.activated"] {
        assert_eq!(types.iter().filter(|x| *x == t).count(), 2, "{t} once per checkout: {types:?}");
    }
}

#[tokio::test]
async fn forged_webhooks_change_nothing_and_are_recorded_as_rejected() {
    let e = env().await;
    let http = reqwest::Client::new();
    let hook = |pg: &str| format!("{}/webhooks/{pg}", e.stack.api_url());

    // An idKey StepPay never issued.
    let r = http
        .post(hook("steppay"))
        .json(&json!({"webHookType": "PAYMENT", "orderId": 1, "idKey": "1700000000000forgedforgedforg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "stored first");
    // A tampered PCD_PAY_TOTAL for a real, unpaid checkout.
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let forged = [
        ("PCD_PAY_RST", "success"),
        ("PCD_PAY_CODE", "PAYM0000"),
        ("PCD_PAY_OID", id),
        ("PCD_PAY_TOTAL", "100"),
        ("PCD_PAYER_ID", "attacker"),
    ];
    let r = http.post(hook("payple")).form(&forged).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The right total, but Payple has no such payment: still nothing.
    let unpaid = [
        ("PCD_PAY_RST", "success"),
        ("PCD_PAY_CODE", "PAYM0001"),
        ("PCD_PAY_OID", id),
        ("PCD_PAY_TOTAL", "9900"),
        ("PCD_PAYER_ID", "attacker"),
    ];
    http.post(hook("payple")).form(&unpaid).send().await.unwrap();
    // A StepPay managed order that exists but is unpaid, announced by a validly signed webhook.
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let m = e.partner.checkout(&json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
        "return_url": "https://shop.example.com/ok", "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}})).await;
    let body = json!({"timestamp": Timestamp::now().as_second(), "version": "v1", "event": "order.payment_completed",
        "data": {"id": 1, "code": m["steppay"]["order_code"]}})
    .to_string();
    let secret = paycycle::secret::Secret::new(paycycle_dev::LOCAL_STEPPAY_SIGNING_SECRET);
    let sig = paycycle::pg::steppay::webhook::sign(&secret, Timestamp::now().as_second(), body.as_bytes());
    let r = http
        .post(hook("steppay"))
        .header("content-type", "application/json")
        .header("Steppay-Signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A bad signature is refused at the door and never stored.
    let bad = paycycle::pg::steppay::webhook::sign(
        &paycycle::secret::Secret::new("wrong"),
        Timestamp::now().as_second(),
        body.as_bytes(),
    );
    let r = http
        .post(hook("steppay"))
        .header("content-type", "application/json")
        .header("Steppay-Signature", bad)
        .body(body.replace("order.payment_completed", "order.updated"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_signature");

    e.stack.drain_stream().await;
    for (pg, key) in [
        (paycycle::pg::Pg::Steppay, "PAYMENT:1700000000000forgedforgedforg".to_string()),
        (paycycle::pg::Pg::Payple, format!("{id}:success:PAYM0000")),
        (paycycle::pg::Pg::Payple, format!("{id}:success:PAYM0001")),
    ] {
        let ev = e.store.get_webhook_event(pg, &key).await.unwrap().unwrap_or_else(|| panic!("{key} stored"));
        assert_eq!(ev.status, WebhookStatus::Rejected, "{key}: {:?}", ev.outcome);
    }
    // `order.payment_completed` of an unpaid order: StepPay's lookup may lag its own webhook, and
    // the event's key has no timestamp, so it is asked again later (never verified, alarmed after a
    // day) rather than refused for good — and it changes nothing meanwhile.
    let key = format!("order.payment_completed:{}", m["steppay"]["order_code"].as_str().unwrap());
    let ev = e
        .store
        .get_webhook_event(paycycle::pg::Pg::Steppay, &key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} stored"));
    assert_eq!(ev.status, WebhookStatus::Received, "{key}: {:?}", ev.outcome);
    let open = e.store.get_checkout(m["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!((open.status, open.payment_id), (CheckoutStatus::Open, None));
    assert!(
        e.store
            .get_webhook_event(paycycle::pg::Pg::Steppay, &{
                let updated = body.replace("order.payment_completed", "order.updated");
                let Ok(paycycle::pg::steppay::webhook::SteppayWebhook::V2(w)) =
                    paycycle::pg::steppay::webhook::parse("application/json", updated.as_bytes())
                else {
                    panic!("a v2 body")
                };
                w.dedupe_key().unwrap()
            })
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Open);
    assert_eq!(e.checkout_status(m["id"].as_str().unwrap()).await, CheckoutStatus::Open);
    assert!(e.event_types().await.is_empty(), "no events");
}

/// Generated bad bodies against every route #8 added: 4xx JSON with the error shape, never 5xx.
#[tokio::test]
async fn malformed_bodies_get_4xx_json_never_5xx() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let e = env().await;
    let http = reqwest::Client::new();
    let valid_checkout = payple_checkout("PAY", 9_900).to_string();
    let bodies = proptest::prop_oneof![
        // Truncated valid JSON.
        (0..valid_checkout.len()).prop_map(move |n| valid_checkout.as_bytes()[..n].to_vec()),
        // Arbitrary bytes (mostly not UTF-8).
        proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        // JSON of the wrong types in the right places.
        proptest::arbitrary::any::<(i64, bool, String)>().prop_map(|(n, b, s)| json!({
            "pg": n, "customer": b, "plan": s, "checkout_id": n, "webHookType": b, "idKey": n,
            "PCD_PAY_OID": b, "PCD_PAY_RST": n, "event": n, "data": s
        })
        .to_string()
        .into_bytes()),
        // Deeply nested JSON.
        (1usize..2000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ];
    let content_types = ["application/json", "application/x-www-form-urlencoded", "text/plain", ""];
    let routes = ["/checkouts", "/payments/verify", "/webhooks/steppay", "/webhooks/payple"];
    let mut runner = TestRunner::deterministic();
    let mut cases = 0;
    for i in 0..160 {
        let body = bodies.new_tree(&mut runner).unwrap().current();
        let route = routes[i % routes.len()];
        let ct = content_types[(i / routes.len()) % content_types.len()];
        let mut req = http
            .post(format!("{}{route}", e.stack.api_url()))
            .bearer_auth(&e.partner.key)
            .header("Idempotency-Key", format!("fuzz-{i}"))
            .body(body.clone());
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status) || status == 200, "{route} {ct} {body:?}: {status} {v}");
        if status != 200 {
            assert!(v["error"]["code"].as_str().is_some(), "{route}: error shape {v}");
        }
        cases += 1;
    }
    // A body over 64 KiB and a huge one.
    for size in [64 * 1024 + 1, 2 * 1024 * 1024] {
        for route in routes {
            let r = http
                .post(format!("{}{route}", e.stack.api_url()))
                .bearer_auth(&e.partner.key)
                .header("content-type", "application/json")
                .body(vec![b' '; size])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 413, "{route} {size}");
        }
    }
    assert_eq!(cases, 160);
}

#[tokio::test]
async fn a_webhooks_total_decides_nothing_payples_record_of_the_oid_does() {
    let e = env().await;
    // Payple's own webhook is switched off: only the bodies below arrive.
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    let hook = format!("{}/webhooks/payple", e.stack.api_url());
    let http = reqwest::Client::new();

    // A real payment of the right amount, announced with a tampered total: Payple's record of the
    // OID completes the checkout (the body is only a pointer).
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let mut paid = e.sandbox.payple_window(&c["payple"], None).await;
    assert_eq!(paid["PCD_PAY_RST"], "success");
    paid.insert("PCD_PAY_TOTAL".into(), json!("100"));
    assert_eq!(http.post(&hook).json(&paid).send().await.unwrap().status(), 200);
    e.stack.drain_stream().await;
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Completed);

    // A window whose total the customer's browser lowered to 100원 before paying, and a partner
    // that never verifies: the webhook alone gets the money recorded on the failed checkout
    // (refundable), with no subscription.
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let mut params = c["payple"].clone();
    params["PCD_PAY_TOTAL"] = json!("100");
    let paid = e.sandbox.payple_window(&params, None).await;
    assert_eq!(paid["PCD_PAY_RST"], "success");
    assert_eq!(http.post(&hook).json(&paid).send().await.unwrap().status(), 200);
    e.stack.drain_stream().await;
    let checkout = e.store.get_checkout(id).await.unwrap().unwrap();
    assert_eq!(checkout.status, CheckoutStatus::Failed);
    let payment_id = checkout.payment_id.expect("the 100원 Payple kept is a payment of ours");
    let (status, p) = e.partner.get(&format!("/payments/{payment_id}")).await;
    assert_eq!((status, p["amount"].as_i64(), p["refundable"].as_i64()), (200, Some(100), Some(100)), "{p}");
    assert_eq!(e.subscription_state(&c).await, None);
}

#[tokio::test]
async fn a_steppay_renewal_whose_answer_was_lost_is_resolved_through_its_payment_webhook() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    let c = e.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(8_000)})).await;
    let before = e.deliveries().await;
    e.sandbox.steppay_sdk_pay(&c["steppay"]["sdk"]).await;
    e.stack.settle_webhooks(before + 1).await;
    let sub_id: paycycle::domain::attempt::SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    let due = sub.subscription.current_period.unwrap().end;

    // The renewal is charged at StepPay but its answer never comes back (timeout after charge).
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let at = due.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    e.stack.functions.tick(Some(&at.to_string())).await.unwrap();
    let attempt = e.store.attempts_of(&sub_id).await.unwrap().pop().unwrap();
    // Unknown — or still pending when the webhook's hint landed first (renew then does not
    // overwrite the hint; its next look reads it).
    assert!(["unknown", "pending"].contains(&attempt.status.name()), "{:?}", attempt.status);
    // StepPay's PAYMENT webhook names the idKey; verify notes it on the attempt.
    e.stack.settle_webhooks(before + 2).await;
    let attempt = e.store.get_attempt(&attempt.charge_id).await.unwrap().unwrap();
    let charges = e.charges().await;

    assert_eq!(attempt.pg.pg_payment_hint.as_deref(), charges.last().unwrap()["id"].as_str());
    // The next tick looks the idKey up and records the payment: one charge at the PG.
    let later = at.checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    e.stack.functions.tick(Some(&later.to_string())).await.unwrap();
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!(sub.subscription.current_period.unwrap().index, 1);
    assert_eq!(sub.subscription.state.as_str(), "active");
    assert_eq!(e.store.payments_of_subscription(&sub_id).await.unwrap().len(), 2);
    assert_eq!(e.charges().await.len(), 2, "the renewal was charged once");
}

// ---------------- issue 20: hostile, late and racing browsers ----------------

fn steppay_self_checkout(amount: i64) -> Value {
    json!({"pg": "steppay_self", "customer": customer(), "plan": plan(amount)})
}

impl Env {
    async fn subscription_state(&self, c: &Value) -> Option<String> {
        let id = c["subscription_id"].as_str().unwrap().parse().unwrap();
        self.store.get_subscription(&id).await.unwrap().map(|s| s.subscription.state.as_str().to_string())
    }
}

/// Issue 20 item 1: the window work is the checkout's. A PAY window result re-posted with
/// `PCD_PAY_WORK=AUTH` must not make paycycle charge the key a second time.
#[tokio::test]
async fn the_window_work_is_the_checkouts_so_a_pay_posted_as_auth_is_charged_once() {
    let e = env().await;
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let mut result = e.sandbox.payple_window(&c["payple"], None).await;
    result.insert("PCD_PAY_WORK".into(), json!("AUTH"));
    let (status, v) = e.verify(id, result).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(e.charges().await.len(), 1, "one charge at the PG: the window's");
    assert_eq!(v["payment"]["id"], payment_id_for(paycycle::pg::PgMode::Payple, id));
    assert_eq!(v["payment"]["amount"], 9_900);
}

/// Issue 20 item 1: a billing key is charged only once Payple confirms it belongs to this
/// checkout's payer: another customer's `PCD_PAYER_ID` is refused and nothing is charged.
#[tokio::test]
async fn a_forged_payer_id_of_another_customer_is_never_charged() {
    let e = env().await;
    let victim = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let r = e.sandbox.payple_window(&victim["payple"], None).await;
    let (status, v) = e.verify(victim["id"].as_str().unwrap(), r).await;
    assert_eq!(status, 200, "{v}");
    let victims_key = e.charges().await[0]["billing_key"].as_str().unwrap().to_string();

    let attacker = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let mut r = e.sandbox.payple_window(&attacker["payple"], None).await;
    r.insert("PCD_PAYER_ID".into(), json!(victims_key));
    let (status, v) = e.verify(attacker["id"].as_str().unwrap(), r).await;
    assert!((400..500).contains(&status), "{status} {v}");
    assert_eq!(e.charges().await.len(), 1, "the victim's card is not charged again");
    assert_eq!(e.subscription_state(&attacker).await, None);
    assert_eq!(e.checkout_status(attacker["id"].as_str().unwrap()).await, CheckoutStatus::Open);
}

/// Issue 20 item 4: an AUTH first charge whose answer was lost is resolved without the
/// partner verifying again (Payple's webhook or the sweep looks it up).
#[tokio::test]
async fn an_auth_first_charge_whose_answer_was_lost_activates_without_another_verify() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    let c = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let before = e.deliveries().await;
    let (status, v) = e.verify(c["id"].as_str().unwrap(), r).await;
    assert_eq!(status, 504, "{v}");
    e.stack.settle_webhooks(before + 1).await;
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    assert_eq!(e.subscription_state(&c).await.as_deref(), Some("active"));
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let payments = e.store.payments_of_subscription(&sub_id).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].pg_payment_id, format!("{}-p0-a1", c["subscription_id"].as_str().unwrap()));
    assert_eq!(e.charges().await.len(), 1);
    assert_eq!(e.checkout_status(c["id"].as_str().unwrap()).await, CheckoutStatus::Completed);
}

/// Issue 20 item 5: a webhook whose verification kept failing (the PG answered 5xx through
/// every stream retry) is verified by the sweep later, and StepPay's renewal is recorded.
#[tokio::test]
async fn every_stored_webhook_reaches_a_verdict_after_the_stream_gave_up() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let body = json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
        "return_url": "https://shop.example.com/ok",
        "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}});
    let c = e.partner.checkout(&body).await;
    let before = e.deliveries().await;
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    let (status, v) = e
        .verify(
            c["id"].as_str().unwrap(),
            [("order_code".to_string(), json!(redirect["order_code"]))].into_iter().collect(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    e.stack.settle_webhooks(before + 1).await;
    let sub_id: paycycle::domain::attempt::SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let pg_sub = e.stack.billing_key_of(&e.store.get_subscription(&sub_id).await.unwrap().unwrap()).await.unwrap();

    // Every lookup verify makes for the renewal's webhook answers 500.
    e.sandbox
        .admin("/__admin/scenarios", json!({"operation": "lookup", "fault": {"kind": "server_error"}, "count": 50}))
        .await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    e.stack.settle_webhooks(before + 2).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while e.stack.feeder.dead_letters.lock().await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(e.stack.feeder.dead_letters.lock().await.len(), 1, "the stream gave up");
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!(sub.subscription.current_period.unwrap().index, 0, "not recorded yet");
    e.sandbox.http.delete(e.sandbox.url("/__admin/scenarios")).send().await.unwrap();

    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    let sub = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!(sub.subscription.current_period.unwrap().index, 1, "StepPay's renewal is recorded");
    assert_eq!(e.store.payments_of_subscription(&sub_id).await.unwrap().len(), 2);
}

/// Issue 20 item 7: a wrong StepPay idKey is a mismatch (nothing changes, and the idKey — a
/// billing key — is masked in the error); the genuine payment's webhook still completes it.
#[tokio::test]
async fn a_wrong_steppay_idkey_changes_nothing_and_the_genuine_webhook_completes_the_checkout() {
    let e = env().await;
    let a = e.partner.checkout(&steppay_self_checkout(12_000)).await;
    let b = e.partner.checkout(&steppay_self_checkout(12_000)).await;
    let before = e.deliveries().await;
    let paid_b = e.sandbox.steppay_sdk_pay(&b["steppay"]["sdk"]).await;
    let b_key = paid_b["idKey"].as_str().unwrap().to_string();
    let (status, v) =
        e.verify(a["id"].as_str().unwrap(), [("idKey".to_string(), json!(b_key))].into_iter().collect()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("evidence_mismatch")), "{v}");
    assert!(!v.to_string().contains(&b_key), "a billing key never appears in an error body: {v}");
    assert_eq!(e.checkout_status(a["id"].as_str().unwrap()).await, CheckoutStatus::Open);
    e.sandbox.steppay_sdk_pay(&a["steppay"]["sdk"]).await;
    e.stack.settle_webhooks(before + 2).await;
    assert_eq!(e.checkout_status(a["id"].as_str().unwrap()).await, CheckoutStatus::Completed);
}

/// Issue 20 item 7: a stale `close` posted by the browser does not fail the checkout; the
/// genuine payment's webhook completes it.
#[tokio::test]
async fn a_stale_payple_close_changes_nothing_and_the_genuine_webhook_completes_the_checkout() {
    let e = env().await;
    let hook_url = format!("{}/webhooks/payple", e.stack.api_url());
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let mut stale = serde_json::Map::new();
    for (k, v) in [("PCD_PAY_RST", "close"), ("PCD_PAY_CODE", ""), ("PCD_PAY_WORK", "PAY"), ("PCD_PAY_OID", id)] {
        stale.insert(k.into(), json!(v));
    }
    let (status, v) = e.verify(id, stale.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("payment_not_completed")), "{v}");
    stale.insert("PCD_PAY_RST".into(), json!("error"));
    stale.insert("PCD_PAY_CODE".into(), json!("CARD0001"));
    let (status, v) = e.verify(id, stale.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("payment_not_completed")), "{v}");
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Open);
    // The customer then pays; the browser's stale close arrives late, and changes nothing.
    let paid = e.sandbox.payple_window(&c["payple"], None).await;
    let (status, v) = e.verify(id, stale).await;
    assert!(status == 200 || status == 409, "{status} {v}");
    assert_ne!(e.checkout_status(id).await, CheckoutStatus::Failed);
    let r = reqwest::Client::new().post(&hook_url).json(&paid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    e.stack.drain_stream().await;
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Completed);
}

/// Issue 20 item 7: a StepPay self receipt that names no `partnerOrderId` cannot be shown to
/// be this checkout's: nothing is recorded.
#[tokio::test]
async fn a_steppay_receipt_without_a_partner_order_id_completes_nothing() {
    let e = env().await;
    let c = e.partner.checkout(&steppay_self_checkout(12_000)).await;
    let stray = e.sandbox.steppay_sdk_pay(&json!({"amount": 12_000, "method": "CARD_BILL"})).await;
    let key = stray["idKey"].as_str().unwrap().to_string();
    let (status, v) =
        e.verify(c["id"].as_str().unwrap(), [("idKey".to_string(), json!(key))].into_iter().collect()).await;
    assert!((400..500).contains(&status), "{status} {v}");
    assert!(!v.to_string().contains(&key), "{v}");
    assert_eq!(e.checkout_status(c["id"].as_str().unwrap()).await, CheckoutStatus::Open);
    assert_eq!(e.subscription_state(&c).await, None);
}

/// Issue 20 item 11: no panic is reachable from a request body — multi-byte and oversized
/// `PCD_*` fields on verify and on both webhook routes get an answer, and the stream keeps going.
#[tokio::test]
async fn multibyte_and_oversized_fields_never_panic_verify_or_the_webhook_routes() {
    let e = env().await;
    let http = reqwest::Client::new();
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let odd =
        ["가나다라마", "2024년01월01일", "😀😀😀", "2024010\u{301}112233", &"9".repeat(5_000), &"é".repeat(3_000)];
    for (i, t) in odd.iter().enumerate() {
        for work in ["PAY", "CERT", "AUTH"] {
            let body = json!({"checkout_id": id, "PCD_PAY_RST": "success", "PCD_PAY_CODE": format!("FUZZ{i:04}"),
                "PCD_PAY_WORK": work, "PCD_PAY_OID": id, "PCD_PAY_TOTAL": "9900", "PCD_PAY_TIME": t,
                "PCD_PAYER_ID": t, "PCD_PAYER_NO": t, "PCD_PAY_COFURL": t, "PCD_USER_DEFINE1": c["subscription_id"]});
            let (status, v) = e.partner.post("/payments/verify", &body, None).await;
            assert!(status < 500 || status == 502 || status == 504, "{work} {i}: {status} {v}");
            let r = http.post(format!("{}/webhooks/payple", e.stack.api_url())).json(&body).send().await.unwrap();
            assert!(r.status().as_u16() < 500, "payple webhook {i}: {}", r.status());
        }
        let steppay = json!({"webHookType": "PAYMENT", "orderId": t, "idKey": t});
        let r = http.post(format!("{}/webhooks/steppay", e.stack.api_url())).json(&steppay).send().await.unwrap();
        assert!(r.status().as_u16() < 500, "steppay webhook {i}: {}", r.status());
    }
    e.stack.drain_stream().await;
    // The stream still verifies: a genuine payment completes its checkout.
    let before = e.deliveries().await;
    let paid = e.sandbox.payple_window(&c["payple"], None).await;
    assert_eq!(paid["PCD_PAY_RST"], "success");
    e.stack.settle_webhooks(before + 1).await;
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Completed);
}

/// Issue 20 item 14: `return_url` is https unless the host is loopback.
#[tokio::test]
async fn return_url_must_be_https_unless_the_host_is_loopback() {
    let e = env().await;
    for url in ["http://shop.example.com/return", "http://10.0.0.1/r", "http://127.example.com/r"] {
        let mut body = payple_checkout("PAY", 9_900);
        body["return_url"] = json!(url);
        let (status, v) = e.partner.post("/checkouts", &body, Some(url)).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("insecure_return_url")), "{url}: {v}");
    }
    for url in ["http://127.0.0.1:8080/r", "http://localhost/r", "http://[::1]:3000/r", "https://shop.example.com/r"] {
        let mut body = payple_checkout("PAY", 9_900);
        body["return_url"] = json!(url);
        let (status, v) = e.partner.post("/checkouts", &body, Some(url)).await;
        assert_eq!(status, 201, "{url}: {v}");
    }
}

/// A forgery posted before the payment, with the key the genuine result will have (same OID,
/// result and code), is rejected — and must not shadow the genuine webhook: the genuine delivery
/// replaces the rejected event and the sweep completes the checkout, with no partner verify.
#[tokio::test]
async fn a_rejected_forgery_never_shadows_the_genuine_webhook_with_the_same_key() {
    let e = env().await;
    let http = reqwest::Client::new();
    let hook = format!("{}/webhooks/payple", e.stack.api_url());
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let id = c["id"].as_str().unwrap();
    let before = e.deliveries().await;
    // The genuine result's key, learned from a first genuine payment's webhook shape.
    let forged = [
        ("PCD_PAY_RST", "success"),
        ("PCD_PAY_CODE", "PAYM0000"),
        ("PCD_PAY_OID", id),
        ("PCD_PAY_TOTAL", "9900"),
        ("PCD_PAYER_ID", "attacker"),
    ];
    let r = http.post(&hook).form(&forged).send().await.unwrap();
    assert_eq!(r.status(), 200);
    e.stack.drain_stream().await;
    let key = format!("{id}:success:PAYM0000");
    let stored = e.store.get_webhook_event(paycycle::pg::Pg::Payple, &key).await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Rejected, "Payple has no such payment yet");

    // The customer pays; Payple's webhook carries the same OID, result and code.
    e.sandbox.payple_window(&c["payple"], None).await;
    e.stack.settle_webhooks(before + 1).await;
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    let stored = e.store.get_webhook_event(paycycle::pg::Pg::Payple, &key).await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Verified, "{:?}", stored.outcome);
    assert_eq!(e.checkout_status(id).await, CheckoutStatus::Completed);
    assert_eq!(e.subscription_state(&c).await.as_deref(), Some("active"));
    assert_eq!(e.charges().await.len(), 1);
}

// ---------------- review of issue 20's verify: first payments the PG kept ----------------

/// A CERT checkout whose confirm answer was lost (and whose webhook never came) is resolved by
/// the sweep under the OID its confirm charged — the checkout's own, not `{sub}-p0-a1` — and is
/// never failed while Payple holds the money.
#[tokio::test]
async fn a_cert_confirm_whose_answer_was_lost_is_completed_by_the_sweep_never_failed() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    let c = e.partner.checkout(&payple_checkout("CERT", 15_000)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    // Payple's webhook for the confirm is lost.
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let (status, v) = e.verify(&id, r).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(e.charges().await.len(), 1, "Payple charged the CERT confirm");
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(2)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    let status = e.checkout_status(&id).await;
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let payments = e.store.payments_of_subscription(&sub_id).await.unwrap();
    assert_eq!(
        (status, payments.len()),
        (CheckoutStatus::Completed, 1),
        "Payple charged {} for {id}; checkout is {status:?} with {} payments recorded",
        e.charges().await[0]["amount"],
        payments.len()
    );
    assert_eq!(payments[0].pg_payment_id, id, "the CERT payment's OID is the checkout's");
}

/// A CERT confirm Payple declines (its lookup shows no payment) fails the checkout on Payple's
/// word: it does not sit open in the sweep's index waiting for a payment that never was.
#[tokio::test]
async fn a_declined_cert_confirm_fails_the_checkout_on_payples_word() {
    let e = env().await;
    let c = e.partner.checkout(&payple_checkout("CERT", 15_000)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await;
    let (status, v) = e.verify(&id, r).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("payment_failed")), "{v}");
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Failed);
    assert!(e.charges().await.is_empty());
}

/// The "not found an hour after it was sent → failed" rule counts from the latest send: an AUTH
/// first charge re-sent by a partner's re-verify 59 minutes after the first send (which never
/// reached Payple), whose answer is lost and which Payple's lookup does not show yet, is not
/// failed by a sweep two minutes later — Payple holds the money — and is completed once it shows.
#[tokio::test]
async fn a_first_charge_resent_late_is_given_its_hour_from_the_resend() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    let c = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    // The first send never reaches Payple (5xx before anything is done): outcome unknown.
    e.sandbox
        .admin("/__admin/scenarios", json!({"operation": "charge", "fault": {"kind": "server_error"}, "count": 1}))
        .await;
    let (status, v) = e.verify(&id, r.clone()).await;
    assert_eq!(status, 504, "{v}");
    assert!(e.charges().await.is_empty());
    // ... and that was 59 minutes ago.
    let checkout = e.store.get_checkout(&id).await.unwrap().unwrap();
    let first = Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(59)).unwrap();
    let aged = paycycle::store::checkouts::CheckoutRecord { first_charge_at: Some(first), ..checkout.next() };
    e.store.update_checkout(&aged).await.unwrap();
    // The partner verifies again: Payple has nothing, so the charge is sent again — and charged,
    // but its answer is lost too.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let (status, v) = e.verify(&id, r).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(e.charges().await.len(), 1, "the re-send was charged");
    // Two minutes later Payple's lookup does not show it yet.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "lookup", "fault": {"kind": "decline_with_code", "code": "PCHK0001"}, "count": 20}),
        )
        .await;
    let soon = Timestamp::now().checked_add(jiff::SignedDuration::from_mins(3)).unwrap();
    e.stack.functions.sweep(Some(&soon.to_string())).await.unwrap();
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Open, "an hour counts from the re-send");
    // Once Payple's lookup shows it, the sweep completes the checkout.
    e.sandbox.http.delete(e.sandbox.url("/__admin/scenarios")).send().await.unwrap();
    let later = soon.checked_add(jiff::SignedDuration::from_mins(5)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Completed);
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(e.store.payments_of_subscription(&sub_id).await.unwrap().len(), 1);
    assert_eq!(e.charges().await.len(), 1);
}

/// Payple's manual documents no lookup error codes: an `error` answer to a result lookup that
/// does not say "no such payment" (maintenance, a limit) is no "not found". An hour of them
/// leaves an AUTH checkout whose first charge went through open, and it completes once Payple
/// answers.
#[tokio::test]
async fn lookup_errors_that_do_not_say_not_found_never_fail_a_checkout_whose_charge_went_through() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    let c = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let (status, v) = e.verify(&id, r).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(e.charges().await.len(), 1, "charged, answer lost");
    // Payple's lookup answers `error` with a code no document lists, for over an hour.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "lookup", "fault": {"kind": "decline_with_code", "code": "PCHK9999"}, "count": 50}),
        )
        .await;
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(2)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Open, "a lookup error is not Payple's 'not found'");
    e.sandbox.http.delete(e.sandbox.url("/__admin/scenarios")).send().await.unwrap();
    let much_later = later.checked_add(jiff::SignedDuration::from_hours(7)).unwrap();
    e.stack.functions.sweep(Some(&much_later.to_string())).await.unwrap();
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Completed);
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(e.store.payments_of_subscription(&sub_id).await.unwrap().len(), 1);
}

impl Env {
    /// The checkout's payment, recorded so it can be refunded: refunds it in full through the API.
    async fn refund_checkout_payment(&self, checkout_id: &str, amount: i64) -> (u16, Value) {
        let checkout = self.store.get_checkout(checkout_id).await.unwrap().unwrap();
        let payment_id = checkout.payment_id.unwrap_or_else(|| panic!("{checkout_id} names no payment"));
        let path = format!("/payments/{payment_id}/refunds");
        self.partner
            .post(&path, &json!({"amount": amount, "reason": "charged on a failed checkout"}), Some(checkout_id))
            .await
    }
}

/// Payple's success webhook for a first charge whose checkout was already failed (its lookup
/// showed nothing for over an hour) is the PG's positive word against ours: it is looked up, and
/// the payment Payple confirms is recorded on the failed checkout — refundable through the API —
/// without activating a subscription.
#[tokio::test]
async fn a_payple_success_webhook_for_a_failed_checkout_records_the_payment_payple_confirms() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    e.sandbox.admin("/__admin/config", json!({"payple_webhook_url": null})).await;
    let c = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let sub = c["subscription_id"].as_str().unwrap().to_string();
    let r = e.sandbox.payple_window(&c["payple"], None).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let (status, v) = e.verify(&id, r).await;
    assert_eq!(status, 504, "{v}");
    // Payple's lookup shows nothing for over an hour: the sweep fails the checkout.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "lookup", "fault": {"kind": "decline_with_code", "code": "PCHK0001"}, "count": 20}),
        )
        .await;
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(2)).unwrap();
    e.stack.functions.sweep(Some(&later.to_string())).await.unwrap();
    assert_eq!(e.checkout_status(&id).await, CheckoutStatus::Failed);
    e.sandbox.http.delete(e.sandbox.url("/__admin/scenarios")).send().await.unwrap();
    // Then Payple's webhook for the charge arrives.
    let charge = e.charges().await[0].clone();
    let hook = json!({"PCD_PAY_RST": "success", "PCD_PAY_CODE": "SPCD0000", "PCD_PAY_OID": format!("{sub}-p0-a1"),
        "PCD_PAY_TOTAL": "4900", "PCD_USER_DEFINE1": sub});
    let url = format!("{}/webhooks/payple", e.stack.api_url());
    let r = reqwest::Client::new().post(url).json(&hook).send().await.unwrap();
    assert_eq!(r.status(), 200);
    e.stack.drain_stream().await;
    let checkout = e.store.get_checkout(&id).await.unwrap().unwrap();
    assert_eq!(checkout.status, CheckoutStatus::Failed, "no subscription is resurrected silently");
    assert!(checkout.payment_id.is_some(), "Payple charged {} for {id}; nothing recorded", charge["amount"]);
    assert_eq!(e.subscription_state(&c).await, None);
    let (status, v) = e.refund_checkout_payment(&id, 4_900).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(e.sandbox.ledger().await["refunds"].as_array().unwrap().len(), 1);
}

/// If Payple's PUSERINFO answers for any live key and echoes our `PCD_PAYER_NO` (the manual calls
/// it a field that "comes back as is"; unconfirmed), the payer number proves nothing: the holder
/// PUSERINFO names (name, masked phone) must match the checkout's customer, or another
/// customer's key pasted into the result is refused and never charged.
#[tokio::test]
async fn a_key_whose_holder_is_another_customer_is_never_charged_even_if_payple_echoes_the_payer_number() {
    let e = env().await;
    e.sandbox.admin("/__admin/config", json!({"payple_userinfo_checks_payer_no": false})).await;
    let mut victim = payple_checkout("AUTH", 4_900);
    victim["customer"] = json!({"id": "cus_2", "name": "김철수", "phone": "01099998888"});
    let victim = e.partner.checkout(&victim).await;
    let r = e.sandbox.payple_window(&victim["payple"], None).await;
    let (status, v) = e.verify(victim["id"].as_str().unwrap(), r).await;
    assert_eq!(status, 200, "{v}");
    let victims_key = e.charges().await[0]["billing_key"].as_str().unwrap().to_string();

    let attacker = e.partner.checkout(&payple_checkout("AUTH", 4_900)).await;
    let mut r = e.sandbox.payple_window(&attacker["payple"], None).await;
    r.insert("PCD_PAYER_ID".into(), json!(victims_key));
    let (status, v) = e.verify(attacker["id"].as_str().unwrap(), r).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("evidence_mismatch")), "{v}");
    assert_eq!(e.charges().await.len(), 1, "the victim's card is not charged again");
    assert_eq!(e.checkout_status(attacker["id"].as_str().unwrap()).await, CheckoutStatus::Open);
}

/// A first payment the PG charged at another amount than the checkout's — a tampered Payple
/// window total, a CERT confirm of a tampered total, a StepPay self payment of another amount —
/// fails the checkout (no subscription) but is recorded as its payment, so the partner can refund
/// it through the API.
#[tokio::test]
async fn a_first_payment_of_another_amount_is_recorded_on_the_failed_checkout_and_refundable() {
    let e = env().await;
    let mut paid = Vec::new();
    // PAY: the browser changed the window's total; Payple charged 100.
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let mut params = c["payple"].clone();
    params["PCD_PAY_TOTAL"] = json!("100");
    let r = e.sandbox.payple_window(&params, None).await;
    paid.push((c["id"].as_str().unwrap().to_string(), r));
    // CERT: the window authorized a tampered total; the confirm charges it.
    let c = e.partner.checkout(&payple_checkout("CERT", 15_000)).await;
    let mut params = c["payple"].clone();
    params["PCD_PAY_TOTAL"] = json!("200");
    let r = e.sandbox.payple_window(&params, None).await;
    paid.push((c["id"].as_str().unwrap().to_string(), r));
    // StepPay self: the SDK paid another amount for this checkout.
    let c = e.partner.checkout(&steppay_self_checkout(12_000)).await;
    let mut sdk = c["steppay"]["sdk"].clone();
    sdk["amount"] = json!(300);
    let stray = e.sandbox.steppay_sdk_pay(&sdk).await;
    let fields = [("idKey".to_string(), stray["idKey"].clone())].into_iter().collect();
    paid.push((c["id"].as_str().unwrap().to_string(), fields));

    for ((id, fields), amount) in paid.into_iter().zip([100, 200, 300]) {
        let (status, v) = e.verify(&id, fields).await;
        assert_eq!((status, v["error"]["code"].as_str()), (422, Some("payment_failed")), "{id}: {v}");
        let checkout = e.store.get_checkout(&id).await.unwrap().unwrap();
        assert_eq!(checkout.status, CheckoutStatus::Failed);
        let sub = checkout.subscription_id.clone();
        assert!(e.store.get_subscription(&sub).await.unwrap().is_none(), "{id}: no subscription");
        let payment_id = checkout.payment_id.clone().unwrap_or_else(|| panic!("{id}: {amount}원 charged, no payment"));
        let payment = e.store.get_payment(&payment_id).await.unwrap().unwrap();
        assert_eq!(payment.amounts.paid.won(), amount, "{id}");
        let (status, v) = e.refund_checkout_payment(&id, amount).await;
        assert_eq!(status, 201, "{id}: {v}");
    }
    assert_eq!(e.sandbox.ledger().await["refunds"].as_array().unwrap().len(), 3);
}

/// A refund's `cancel_subscription` cancels only here; StepPay renews a managed subscription on its
/// own, so a 201 would promise a cancel StepPay never heard of and the customer would go on paying.
/// It is refused before anything is refunded: the lifecycle API cancels at StepPay first.
#[tokio::test]
async fn a_refund_never_cancels_a_steppay_managed_subscription_behind_steppays_back() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let body = json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
        "return_url": "https://shop.example.com/ok", "error_url": "https://shop.example.com/err",
        "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}});
    let c = e.partner.checkout(&body).await;
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    let (status, v) = e
        .verify(
            c["id"].as_str().unwrap(),
            [("order_code".to_string(), json!(redirect["order_code"]))].into_iter().collect(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let payment_id = v["payment"]["id"].as_str().unwrap().to_string();
    let (status, r) = e
        .partner
        .post(
            &format!("/payments/{payment_id}/refunds"),
            &json!({"reason": "cancel", "cancel_subscription": true}),
            Some("managed-cancel"),
        )
        .await;
    assert_eq!((status, r["error"]["code"].as_str()), (422, Some("cannot_cancel_subscription")), "{r}");
    assert!(e.sandbox.ledger().await["refunds"].as_array().unwrap().is_empty(), "nothing refunded");
    assert_eq!(e.subscription_state(&c).await.as_deref(), Some("active"));
}

/// Payple's window takes `PCD_CARD_VER` for card payments: `01` is the recurring (정기) window
/// that issues a billing key, `02` the one-off (일반) one (PAYPLECORP/manual_card README "1. 최초결제
/// - 공통"; PAYPLECORP/sample_php `order_confirm.php`, default `01`). paycycle renews, so `01`.
#[tokio::test]
async fn a_payple_checkout_opens_the_recurring_card_window_with_pcd_card_ver_01() {
    let e = env().await;
    for work in ["PAY", "CERT", "AUTH"] {
        let c = e.partner.checkout(&payple_checkout(work, 9_900)).await;
        assert_eq!(
            (c["payple"]["PCD_PAY_TYPE"].as_str(), c["payple"]["PCD_CARD_VER"].as_str()),
            (Some("card"), Some("01")),
            "{work}: {c}"
        );
    }
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let result = e.sandbox.payple_window(&c["payple"], None).await;
    assert_eq!(result["PCD_PAY_RST"], "success", "{result:?}");
}

/// Every Payple first payment (PAY by lookup, CERT by its confirm, AUTH by paycycle's first
/// charge) shows the card it was paid with and its receipt on `GET /payments/{id}`: card company,
/// the number masked (never a full number), trade number, receipt URL (manual_card README).
#[tokio::test]
async fn payple_first_payments_show_the_masked_card_and_the_receipt() {
    let e = env().await;
    for work in ["PAY", "CERT", "AUTH"] {
        let c = e.partner.checkout(&payple_checkout(work, 9_900)).await;
        let result = e.sandbox.payple_window(&c["payple"], None).await;
        let (status, v) = e.verify(c["id"].as_str().unwrap(), result).await;
        assert_eq!(status, 200, "{work}: {v}");
        for p in [
            v["payment"].clone(),
            e.partner.get(&format!("/payments/{}", v["payment"]["id"].as_str().unwrap())).await.1,
        ] {
            assert_eq!(p["card"]["name"], "NH", "{work}: {p}");
            let number = p["card"]["number_masked"].as_str().unwrap_or_default();
            let digits = number.chars().filter(char::is_ascii_digit).count();
            assert!(number.contains('*') && digits <= 8 && number.ends_with("2031"), "{work}: {number}");
            assert!(p["card"]["trade_number"].as_str().is_some_and(|t| !t.is_empty()), "{work}: {p}");
            assert!(p["receipt_url"].as_str().is_some_and(|u| u.starts_with("https://")), "{work}: {p}");
        }
    }
}

/// Payple checks a webhook URL before it uses it: `HEAD` on both webhook routes (the template's
/// routes, as the local stack serves them) answers 200 with no body. That it stores nothing is
/// checked on the handler (webhook-ingest's tests count its DynamoDB requests).
#[tokio::test]
async fn head_on_the_webhook_routes_answers_200_with_no_body_and_stores_nothing() {
    let e = env().await;
    let http = reqwest::Client::new();
    for pg in ["payple", "steppay"] {
        let r = http.head(format!("{}/webhooks/{pg}", e.stack.api_url())).send().await.unwrap();
        assert_eq!(r.status(), 200, "{pg}");
        assert!(r.bytes().await.unwrap().is_empty(), "{pg}");
    }
}

/// Every item of the table and of its `lookup` and `due` indexes, and every record of its stream,
/// as JSON text (tests look for what must not be there).
async fn everything_stored(e: &Env) -> Vec<(String, String)> {
    let sdk = paycycle_testkit::moto::sdk_config_for(e.stack.moto.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = &e.stack.provisioned.table;
    let mut out = Vec::new();
    for index in [None, Some("lookup"), Some("due"), Some("paid")] {
        let items = ddb.scan().table_name(table).set_index_name(index.map(str::to_string)).send().await.unwrap();
        for item in items.items() {
            let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            out.push((format!("{}: {pk}", index.unwrap_or("table")), format!("{item:?}")));
        }
    }
    for record in paycycle_dev::stream_feeder::all_records(&sdk, table).await.unwrap() {
        out.push(("stream".into(), record.to_string()));
    }
    out
}

#[tokio::test]
async fn a_billing_key_is_never_stored_in_the_clear() {
    let e = env().await;
    let c = e.partner.checkout(&payple_checkout("PAY", 9_900)).await;
    let result = e.sandbox.payple_window(&c["payple"], None).await;
    let (status, v) = e.verify(c["id"].as_str().unwrap(), result).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["subscription"]["has_billing_key"], true);
    let key = e.charges().await[0]["billing_key"].as_str().unwrap().to_string();
    assert!(key.len() >= 8, "a real PCD_PAYER_ID: {key}");
    assert!(!v.to_string().contains(&key), "the API shows no key: {v}");

    let stored = everything_stored(&e).await;
    assert!(stored.iter().any(|(w, _)| w.starts_with("lookup: SUB#")), "the subscription is in the lookup index");
    assert!(stored.iter().any(|(w, text)| w == "stream" && text.contains("SUB#")), "and in the stream");
    // Payple's webhook of that payment is stored too (store first, verify later), its key
    // redacted at ingest: verify asks Payple, it never needs the key from the body.
    assert!(stored.iter().any(|(_, text)| text.contains("WH#payple#")), "the webhook is stored");
    let clear: Vec<&String> = stored.iter().filter(|(_, text)| text.contains(&key)).map(|(w, _)| w).collect();
    assert!(clear.is_empty(), "the billing key in the clear in: {clear:?}");
    // It is there, sealed, and opens for its own subscription only.
    let sub = e.store.get_subscription(&v["subscription"]["id"].as_str().unwrap().parse().unwrap()).await.unwrap();
    assert_eq!(e.stack.billing_key_of(&sub.unwrap()).await, Some(key));
}
