//! Issue 21 §1: StepPay's v2 webhooks as StepPay documents them (dev-docs
//! `docs/08-1-1_Webhook-Events.md`, `08-1-2_Webhook-Schema.md`, `08-1-3_Signature.md`), end to end
//! through the local stack: event types paycycle does not use are stored and ignored, a valid
//! signature is never refused for its age, two updates of one subscription are two events, a
//! managed subscription follows what StepPay answers for it (never the webhook's body), and a self
//! renewal left unknown is settled by its `payment.failed` webhook — declined, and dunning goes on.

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::pg::steppay::webhook::{self as steppay_webhook, SteppayWebhook};
use paycycle::secret::Secret;
use paycycle::store::Store;
use paycycle::store::webhooks::WebhookStatus;
use paycycle_dev::{LOCAL_STEPPAY_SIGNING_SECRET, LocalStack, Options};
use paycycle_e2e::{Partner, SandboxDriver};
use serde_json::{Value, json};

struct Env {
    stack: LocalStack,
    store: Store,
    partner: Partner,
    sandbox: SandboxDriver,
    http: reqwest::Client,
}

async fn env_with(options: Options) -> Env {
    let stack = LocalStack::start(options).await.unwrap();
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let store = Store::new(&sdk, &stack.provisioned.table);
    let key = stack.create_api_key("e2e", "partner_a").await.unwrap();
    let partner = Partner::new(stack.api_url(), key);
    let sandbox = SandboxDriver::new(stack.sandbox.base_url());
    Env { stack, store, partner, sandbox, http: reqwest::Client::new() }
}

async fn env() -> Env {
    env_with(Options { api_port: 0, ..Options::default() }).await
}

fn customer() -> Value {
    json!({"id": "cus_1", "name": "홍길동", "phone": "01012345678", "email": "hong@example.com"})
}

fn plan(amount: i64) -> Value {
    json!({"name": "Pro", "amount": amount, "interval": "month", "interval_count": 1})
}

impl Env {
    fn deliveries(&self) -> usize {
        self.stack.sandbox.shared.state.lock().unwrap().deliveries.len()
    }

    /// POSTs a v2 webhook body signed (`Steppay-Signature`) at `signed_at`, as StepPay would.
    async fn post_signed(&self, body: &str, signed_at: i64, secret: &str) -> (u16, Value) {
        let sig = steppay_webhook::sign(&Secret::new(secret), signed_at, body.as_bytes());
        let r = self
            .http
            .post(format!("{}/webhooks/steppay", self.stack.api_url()))
            .header("content-type", "application/json")
            .header("Steppay-Signature", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, body: &str) -> (u16, Value) {
        self.post_signed(body, Timestamp::now().as_second(), LOCAL_STEPPAY_SIGNING_SECRET).await
    }

    async fn stored(&self, body: &str) -> Option<paycycle::store::webhooks::WebhookEvent> {
        let Ok(SteppayWebhook::V2(w)) = steppay_webhook::parse("application/json", body.as_bytes()) else {
            panic!("a v2 body")
        };
        self.store.get_webhook_event("steppay", &w.dedupe_key().unwrap()).await.unwrap()
    }

    async fn state(&self, id: &SubscriptionId) -> String {
        self.store.get_subscription(id).await.unwrap().unwrap().subscription.state.as_str().to_string()
    }

    /// A StepPay managed subscription, paid and active: (ours, StepPay's id).
    async fn managed_active(&self) -> (SubscriptionId, String) {
        self.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
        let c = self
            .partner
            .checkout(&json!({"pg": "steppay_managed", "customer": customer(), "plan": plan(19_900),
                "return_url": "https://shop.example.com/ok", "error_url": "https://shop.example.com/err",
                "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}}))
            .await;
        let before = self.deliveries();
        let redirect = self.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
        assert_eq!(redirect["status"], "success");
        self.stack.settle_webhooks(before + 1).await; // order.payment_completed completes the checkout
        let id: SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
        let record = self.store.get_subscription(&id).await.unwrap().unwrap();
        assert_eq!(record.subscription.state.as_str(), "active");
        (id, record.billing_key.unwrap())
    }
}

fn v2(event: &str, timestamp: i64, data: Value) -> String {
    json!({"timestamp": timestamp, "version": "v1", "event": event, "data": data}).to_string()
}

#[tokio::test]
async fn steppay_event_types_paycycle_does_not_use_are_stored_and_ignored_never_refused() {
    let e = env().await;
    let t = Timestamp::now().as_second();
    let bodies = [
        v2("invoice.created", t, json!({"id": 1, "status": "SENT"})),
        v2("customer.updated", t, json!({"id": 2, "name": "x"})),
        // Not a StepPay event type at all (the names paycycle used to expect).
        v2("order.paid", t, json!({"orderCode": "order_abc"})),
        v2("subscription.payment_due_notification", t, json!({"subscriptionId": 9, "status": "ACTIVE"})),
    ];
    for body in &bodies {
        let (status, v) = e.post(body).await;
        assert_eq!(status, 200, "{body}: {v}");
    }
    e.stack.drain_stream().await;
    for body in &bodies {
        let ev = e.stored(body).await.unwrap_or_else(|| panic!("{body} stored"));
        assert_eq!(ev.status, WebhookStatus::Ignored, "{body}: {:?}", ev.outcome);
    }
}

#[tokio::test]
async fn a_valid_steppay_signature_is_not_refused_for_its_age_only_a_bad_one_is() {
    let e = env().await;
    // A portal re-send two days later carries the original signature (not re-signed).
    let two_days_ago = Timestamp::now().as_second() - 2 * 86_400;
    let body = v2("invoice.updated", two_days_ago, json!({"id": 3}));
    let (status, v) = e.post_signed(&body, two_days_ago, LOCAL_STEPPAY_SIGNING_SECRET).await;
    assert_eq!((status, v["received"].as_bool()), (200, Some(true)), "{v}");
    let bad = v2("invoice.updated", two_days_ago, json!({"id": 4}));
    let (status, v) = e.post_signed(&bad, Timestamp::now().as_second(), "not-the-secret").await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_signature")), "{v}");
    e.stack.drain_stream().await;
    assert!(e.stored(&body).await.is_some());
    assert!(e.stored(&bad).await.is_none(), "a bad signature is never stored");
}

#[tokio::test]
async fn two_updates_of_one_steppay_subscription_are_two_events_and_a_resend_is_one() {
    let e = env().await;
    let t = Timestamp::now().as_second();
    let unpaid = v2("subscription.updated", t, json!({"subscriptionId": 77, "status": "UNPAID"}));
    let active = v2("subscription.updated", t, json!({"subscriptionId": 77, "status": "ACTIVE"}));
    let later_unpaid = v2("subscription.updated", t + 60, json!({"subscriptionId": 77, "status": "UNPAID"}));
    let mut duplicates = Vec::new();
    for body in [&unpaid, &active, &later_unpaid, &unpaid] {
        let (status, v) = e.post(body).await;
        assert_eq!(status, 200, "{v}");
        duplicates.push(v["duplicate"].as_bool().unwrap());
    }
    assert_eq!(duplicates, [false, false, false, true], "only the literal re-send is a duplicate");
}

#[tokio::test]
async fn a_managed_subscription_follows_what_steppay_answers_for_it_not_the_webhook_body() {
    let e = env().await;
    let (id, pg_sub) = e.managed_active().await;

    // A validly signed subscription.updated claiming CANCELED while StepPay answers ACTIVE: the
    // lookup decides, nothing changes.
    let lie = v2(
        "subscription.updated",
        Timestamp::now().as_second(),
        json!({"subscriptionId": pg_sub.parse::<u64>().unwrap(), "status": "CANCELED"}),
    );
    assert_eq!(e.post(&lie).await.0, 200);
    e.stack.drain_stream().await;
    assert_eq!(e.state(&id).await, "active");
    assert_eq!(e.stored(&lie).await.unwrap().status, WebhookStatus::Verified);

    // StepPay's renewal is declined: subscription.updated (UNPAID) → past due.
    let mut n = e.deliveries();
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    n += 1;
    e.stack.settle_webhooks(n).await;
    assert_eq!(e.state(&id).await, "past_due");

    // StepPay's retry is paid: order.payment_completed (RECURRING, naming the subscription) is
    // looked up and recorded; subscription.updated (ACTIVE after UNPAID) → recovered.
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    n += 2;
    e.stack.settle_webhooks(n).await;
    let record = e.store.get_subscription(&id).await.unwrap().unwrap();
    assert_eq!((record.subscription.state.as_str(), record.subscription.current_period.unwrap().index), ("active", 1));
    assert_eq!(e.store.payments_of_subscription(&id).await.unwrap().len(), 2);

    // StepPay's dunning ends it (EXPIRED) → canceled here.
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/status"), json!({"status": "EXPIRED"})).await;
    e.stack.settle_webhooks(n + 1).await;
    assert_eq!(e.state(&id).await, "canceled");
}

#[tokio::test]
async fn a_steppay_self_renewal_left_unknown_is_settled_as_declined_by_its_payment_failed_webhook() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    e.sandbox.admin("/__admin/config", json!({"steppay_payment_events": true})).await;
    let c = e.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(8_000)})).await;
    let before = e.deliveries();
    e.sandbox.steppay_sdk_pay(&c["steppay"]["sdk"]).await;
    e.stack.settle_webhooks(before + 1).await;
    let id: SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let due = e.store.get_subscription(&id).await.unwrap().unwrap().subscription.current_period.unwrap().end;

    // The renewal is declined at StepPay, but the answer never comes back: unknown.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_decline"}, "count": 1}),
        )
        .await;
    let at = due.checked_add(SignedDuration::from_hours(1)).unwrap();
    e.stack.functions.tick(Some(&at.to_string())).await.unwrap();
    let attempt = e.store.attempts_of(&id).await.unwrap().pop().unwrap();
    assert!(["unknown", "pending"].contains(&attempt.status.name()), "{:?}", attempt.status);
    // StepPay's payment.failed names the failed payment's idKey (orderId = our charge id):
    // verify looks the receipt up (FAILED, this charge) and notes the idKey on the attempt.
    e.stack.settle_webhooks(before + 2).await;
    let attempt = e.store.get_attempt(&attempt.charge_id).await.unwrap().unwrap();
    assert!(attempt.pg_payment_hint.is_some(), "the payment.failed webhook's idKey is noted");

    // The next tick asks StepPay by that idKey: FAILED → declined, dunning goes on; nothing re-sent.
    let later = at.checked_add(SignedDuration::from_mins(10)).unwrap();
    e.stack.functions.tick(Some(&later.to_string())).await.unwrap();
    let record = e.store.get_subscription(&id).await.unwrap().unwrap();
    assert_eq!(record.subscription.state.as_str(), "past_due");
    assert_eq!(record.subscription.current_period.unwrap().index, 0);
    let attempt = e.store.get_attempt(&attempt.charge_id).await.unwrap().unwrap();
    assert_eq!(attempt.status.name(), "declined", "{:?}", attempt.status);
    assert_eq!(e.sandbox.ledger().await["charges"].as_array().unwrap().len(), 1, "only the first payment");
    assert_eq!(e.store.payments_of_subscription(&id).await.unwrap().len(), 1);
}
