//! Issue #11 end to end over HTTP: the subscriptions API on real subscriptions (made by checkout
//! and verify), every lifecycle transition and the illegal ones, renew honouring them over time
//! travel, partner isolation, paging — and every answer checked against `openapi.yaml`.

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::store::Store;
use paycycle_dev::{LocalStack, Options};
use paycycle_e2e::{Partner, SandboxDriver};
use serde_json::{Value, json};

struct Env {
    stack: LocalStack,
    store: Store,
    partner: Partner,
    sandbox: SandboxDriver,
}

async fn env() -> Env {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let store = Store::new(&sdk, &stack.provisioned.table);
    let key = stack.create_api_key("e2e", "partner_a").await.unwrap();
    let partner = Partner::new(stack.api_url(), key);
    let sandbox = SandboxDriver::new(stack.sandbox.base_url());
    Env { stack, store, partner, sandbox }
}

impl Env {
    /// An active Payple subscription, through checkout, the window and verify.
    async fn active(&self, customer: &str, amount: i64) -> Value {
        let c = self
            .partner
            .checkout(&json!({"pg": "payple", "customer": {"id": customer, "name": "홍길동"},
                "plan": {"name": "Pro", "amount": amount, "interval": "month"},
                "return_url": "https://shop.example.com/return"}))
            .await;
        let mut result = self.sandbox.payple_window(&c["payple"], None).await;
        result.insert("checkout_id".into(), c["id"].clone());
        let (status, v) = self.partner.post("/payments/verify", &Value::Object(result), None).await;
        assert_eq!(status, 200, "{v}");
        v["subscription"].clone()
    }

    async fn act(&self, id: &str, action: &str, body: Value) -> (u16, Value) {
        self.partner.post(&format!("/subscriptions/{id}/{action}"), &body, None).await
    }

    async fn get(&self, id: &str) -> Value {
        let (status, v) = self.partner.get(&format!("/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn tick(&self, at: Timestamp) {
        self.stack.functions.tick(Some(&at.to_string())).await.unwrap();
    }

    async fn charges(&self) -> usize {
        self.sandbox.ledger().await["charges"].as_array().map(Vec::len).unwrap_or(0)
    }
}

fn ts(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn hours(t: Timestamp, h: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_hours(h)).unwrap()
}

#[tokio::test]
async fn get_shows_period_next_charge_attempts_and_payments_and_list_pages_per_partner() {
    let e = env().await;
    let first = e.active("cus_list", 9_900).await;
    for _ in 0..2 {
        e.active("cus_list", 9_900).await;
    }
    let id = first["id"].as_str().unwrap();
    let v = e.get(id).await;
    assert_eq!(v["state"], "active");
    assert_eq!(v["next_charge"]["amount"], 9_900);
    assert_eq!(v["next_charge"]["period"], 1);
    assert_eq!(v["next_charge"]["at"], v["current_period"]["end"]);
    assert_eq!(v["payments"].as_array().unwrap().len(), 1);
    assert_eq!(v["attempts"].as_array().unwrap().len(), 0, "period 0 was paid in the window");

    let (status, page1) = e.partner.get("/subscriptions?customer_id=cus_list&limit=2").await;
    assert_eq!((status, page1["data"].as_array().unwrap().len(), page1["has_more"].as_bool()), (200, 2, Some(true)));
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = e.partner.get(&format!("/subscriptions?customer_id=cus_list&limit=2&cursor={cursor}")).await;
    let mut ids: Vec<String> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three subscriptions over two pages, none twice");
    for bad in [
        "/subscriptions",
        "/subscriptions?customer_id=cus_list&limit=0",
        "/subscriptions?customer_id=cus_list&cursor=%%%",
    ] {
        let (status, v) = e.partner.get(bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    // A cursor of another customer's listing is refused.
    let (status, _) = e.partner.get(&format!("/subscriptions?customer_id=cus_other&cursor={cursor}")).await;
    assert_eq!(status, 400);

    // Another partner sees none of it.
    let other = Partner::new(e.stack.api_url(), e.stack.create_api_key("other", "partner_b").await.unwrap());
    assert_eq!(other.get(&format!("/subscriptions/{id}")).await.0, 404);
    assert_eq!(other.post(&format!("/subscriptions/{id}/cancel"), &json!({}), None).await.0, 404);
    let (_, empty) = other.get("/subscriptions?customer_id=cus_list").await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(e.partner.get("/subscriptions/sub_doesnotexist").await.0, 404);
    assert_eq!(e.partner.get("/subscriptions/not-an-id").await.0, 404);
}

#[tokio::test]
async fn cancel_at_period_end_stops_renew_after_the_period_and_illegal_moves_are_409() {
    let e = env().await;
    let s = e.active("cus_1", 9_900).await;
    let id = s["id"].as_str().unwrap();
    let end = ts(&s["current_period"]["end"]);
    let (status, v) = e.act(id, "cancel", json!({"at_period_end": true})).await;
    assert_eq!((status, v["state"].as_str(), v["cancel_at_period_end"].as_bool()), (200, Some("active"), Some(true)));
    assert_eq!(v["next_charge"], Value::Null, "nothing more will be charged");
    // Not yet at the end: still active. At the end: canceled, and no charge.
    e.tick(hours(end, -1)).await;
    assert_eq!(e.get(id).await["state"], "active");
    e.tick(hours(end, 1)).await;
    let v = e.get(id).await;
    assert_eq!(v["state"], "canceled");
    e.tick(hours(end, 24 * 40)).await;
    assert_eq!(e.charges().await, 1, "only the first payment");
    for (action, body) in
        [("cancel", json!({})), ("pause", json!({})), ("resume", json!({})), ("plan", json!({"amount": 500}))]
    {
        let (status, v) = e.act(id, action, body).await;
        assert_eq!((status, v["error"]["code"].as_str()), (409, Some("illegal_transition")), "{action}: {v}");
    }
}

#[tokio::test]
async fn pause_skips_charges_and_resume_continues_from_the_next_period() {
    let e = env().await;
    let s = e.active("cus_1", 9_900).await;
    let id = s["id"].as_str().unwrap();
    let end = ts(&s["current_period"]["end"]);
    // Pause now: nothing is charged while paused, however long.
    let (status, v) = e.act(id, "pause", json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    assert_eq!(e.act(id, "pause", json!({})).await.0, 409, "already paused");
    assert_eq!(e.act(id, "cancel", json!({"at_period_end": true})).await.0, 200, "a paused subscription cancels now");
    let s = e.active("cus_1", 9_900).await;
    let id = s["id"].as_str().unwrap();
    let paused_at = Timestamp::now();
    e.act(id, "pause", json!({})).await;
    e.tick(hours(end, 24 * 60)).await;
    assert_eq!(e.charges().await, 2, "two first payments, no renewal while paused");
    // Resume later: the unused paid time is credited; period 1 is charged when it runs out.
    let (status, v) = e.act(id, "resume", json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
    let next_at = ts(&v["next_charge"]["at"]);
    let credit = end.duration_since(paused_at);
    assert!(
        (next_at.duration_since(Timestamp::now()) - credit).abs() < SignedDuration::from_secs(60),
        "credit honoured"
    );
    assert_eq!(v["next_charge"]["period"], 1);
    e.tick(hours(next_at, 1)).await;
    let v = e.get(id).await;
    assert_eq!(v["current_period"]["index"], 1);
    assert_eq!(e.charges().await, 3);

    // Pause at period end: renew pauses instead of charging; resume charges period 2 at once.
    let (_, v) = e.act(id, "pause", json!({"at_period_end": true})).await;
    assert_eq!((v["state"].as_str(), v["pause_at_period_end"].as_bool()), (Some("active"), Some(true)));
    let end1 = ts(&v["current_period"]["end"]);
    e.tick(hours(end1, 1)).await;
    assert_eq!(e.get(id).await["state"], "paused");
    assert_eq!(e.charges().await, 3);
    let (_, v) = e.act(id, "resume", json!({})).await;
    assert_eq!(v["next_charge"]["period"], 2);
    e.tick(hours(Timestamp::now(), 1)).await;
    assert_eq!(e.get(id).await["current_period"]["index"], 2);
    assert_eq!(e.charges().await, 4);
}

#[tokio::test]
async fn a_plan_change_is_charged_from_the_next_period_and_past_due_cannot_pause() {
    let e = env().await;
    let s = e.active("cus_1", 9_900).await;
    let id = s["id"].as_str().unwrap();
    let end = ts(&s["current_period"]["end"]);
    let (status, v) = e.act(id, "plan", json!({"name": "Team", "amount": 29_000})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["plan"]["amount"].as_i64(), v["next_charge"]["amount"].as_i64()), (Some(29_000), Some(29_000)));
    assert_eq!(v["current_period"], s["current_period"], "no proration: the paid period stays");
    for bad in
        [json!({"amount": 99}), json!({"amount": "1000"}), json!({"amount": 1000, "interval": "fortnight"}), json!({})]
    {
        let (status, v) = e.act(id, "plan", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    e.tick(hours(end, 1)).await;
    let ledger = e.sandbox.ledger().await;
    assert_eq!(ledger["charges"].as_array().unwrap().last().unwrap()["amount"], 29_000);

    // A soft decline: past due. Pause and plan changes wait; cancel works.
    let end1 = ts(&e.get(id).await["current_period"]["end"]);
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await;
    e.tick(hours(end1, 1)).await;
    let v = e.get(id).await;
    assert_eq!(v["state"], "past_due");
    assert_eq!(v["next_charge"]["retry"], true);
    assert_eq!(v["attempts"].as_array().unwrap().last().unwrap()["status"], "declined");
    assert_eq!(e.act(id, "pause", json!({})).await.0, 409);
    let (status, v) = e.act(id, "plan", json!({"amount": 1_000})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("illegal_transition")));
    let (status, v) = e.act(id, "cancel", json!({"at_period_end": true})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "past due cancels at once");
}

#[tokio::test]
async fn a_subscription_renew_is_charging_cannot_be_changed_and_keys_replay() {
    let e = env().await;
    let s = e.active("cus_1", 9_900).await;
    let id = s["id"].as_str().unwrap();
    let sub_id: SubscriptionId = id.parse().unwrap();
    let record = e.store.get_subscription(&sub_id).await.unwrap().unwrap();
    let due = record.subscription.next_attempt_at.unwrap();
    let claimed = e.store.claim(&record, "worker-1", due, SignedDuration::from_hours(1_000_000)).await.unwrap();
    let (status, v) = e.act(id, "cancel", json!({})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")));
    e.store.release_lease(&claimed).await.unwrap();

    let key = Some("cancel-once");
    let (status, first) = e.partner.post(&format!("/subscriptions/{id}/cancel"), &json!({}), key).await;
    assert_eq!((status, first["state"].as_str()), (200, Some("canceled")));
    let (status, again) = e.partner.post(&format!("/subscriptions/{id}/cancel"), &json!({}), key).await;
    assert_eq!((status, &again), (200, &first), "the same answer replayed");
    let (status, v) =
        e.partner.post(&format!("/subscriptions/{id}/cancel"), &json!({"at_period_end": true}), key).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
    let (status, _) = e.partner.post(&format!("/subscriptions/{id}/cancel"), &json!({"at": 1}), None).await;
    assert_eq!(status, 400, "unknown fields are refused");
}

/// StepPay's subscription of a managed customer, as StepPay shows it.
async fn steppay_subscription(e: &Env, pg_sub: &str) -> Value {
    reqwest::Client::new()
        .get(e.sandbox.url(&format!("/api/v1/subscriptions/{pg_sub}")))
        .header("Secret-Token", "local-steppay-secret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// StepPay renews a managed subscription, so a pause, a resume or a cancel is StepPay's to make
/// (merge/v1.json `/api/v1/subscriptions/{id}/pause`, `/active`, `/cancel`): each goes to StepPay
/// first and changes the subscription here only on StepPay's yes. A refund of a managed payment
/// goes through its order (`PATCH /api/v1/orders/{orderIdOrCode}/cancel`).
#[tokio::test]
async fn steppay_managed_pause_resume_cancel_and_refunds_go_to_steppay_first() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let c = e
        .partner
        .checkout(
            &json!({"pg": "steppay_managed", "customer": {"id": "cus_m", "name": "홍길동", "email": "m@example.com"},
            "plan": {"name": "Pro", "amount": 19_900, "interval": "month"}, "return_url": "https://shop.example.com/ok",
            "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}}),
        )
        .await;
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    let (status, v) = e
        .partner
        .post("/payments/verify", &json!({"checkout_id": c["id"], "order_code": redirect["order_code"]}), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["subscription"]["id"].as_str().unwrap().to_string();
    let payment_id = v["payment"]["id"].as_str().unwrap().to_string();
    let end = ts(&v["subscription"]["current_period"]["end"]);
    let pg_sub =
        e.stack.billing_key_of(&e.store.get_subscription(&id.parse().unwrap()).await.unwrap().unwrap()).await.unwrap();

    // StepPay answers 5xx (it may or may not have acted): nothing changes here, and the answer is
    // the one every function gives a PG that did not answer — 504 pg_unavailable, retry (the retry
    // asks StepPay's status first, so it converges).
    e.sandbox
        .admin("/__admin/scenarios", json!({"operation": "lifecycle", "count": 1, "fault": {"kind": "server_error"}}))
        .await;
    let (status, v) = e.act(&id, "pause", json!({})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (504, Some("pg_unavailable")), "{v}");
    assert_eq!(e.get(&id).await["state"], "active", "no pause without StepPay's yes");
    assert_eq!(steppay_subscription(&e, &pg_sub).await["status"], "ACTIVE");

    let (status, v) = e.act(&id, "pause", json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    assert_eq!(steppay_subscription(&e, &pg_sub).await["status"], "PAUSE", "paused at StepPay");
    let (status, v) = e.act(&id, "resume", json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
    assert_eq!(steppay_subscription(&e, &pg_sub).await["status"], "ACTIVE", "resumed at StepPay");
    assert_eq!(e.act(&id, "plan", json!({"amount": 1000})).await.0, 409, "plans are StepPay's prices");

    // A refund of the first payment goes through StepPay's order.
    let (status, r) = e
        .partner
        .post(&format!("/payments/{payment_id}/refunds"), &json!({"amount": 5000, "reason": "goodwill"}), Some("m-ref"))
        .await;
    assert_eq!((status, r["status"].as_str()), (201, Some("succeeded")), "{r}");
    let order: Value = reqwest::Client::new()
        .get(e.sandbox.url(&format!("/api/v1/orders/{}", redirect["order_code"])))
        .header("Secret-Token", "local-steppay-secret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["returnedAmount"].as_f64(), Some(5000.0), "{order}");

    let (status, v) = e.act(&id, "cancel", json!({"at_period_end": true})).await;
    assert_eq!((status, v["cancel_at_period_end"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(steppay_subscription(&e, &pg_sub).await["status"], "PENDING_CANCEL", "StepPay stops renewing");
    e.tick(hours(end, 1)).await;
    assert_eq!(e.get(&id).await["state"], "canceled", "renew ends it when the paid period ends");
}

#[tokio::test]
async fn a_conflict_is_never_saved_under_an_idempotency_key_so_a_retry_succeeds() {
    let e = env().await;
    let sub = e.active("cus_idem409", 9_900).await;
    let id = sub["id"].as_str().unwrap();
    // renew is charging it: a live lease on the wall clock.
    let record = e.store.get_subscription(&SubscriptionId::parse(id).unwrap()).await.unwrap().unwrap();
    let claimed = e.store.claim(&record, "renew-test", Timestamp::now(), SignedDuration::from_secs(60)).await.unwrap();
    let path = format!("/subscriptions/{id}/cancel");
    let (status, v) = e.partner.post(&path, &json!({}), Some("cancel-409-then-ok")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    // The renewal is over: the same request with the same key now goes through.
    e.store.release_lease(&claimed).await.unwrap();
    let (status, v) = e.partner.post(&path, &json!({}), Some("cancel-409-then-ok")).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
}
