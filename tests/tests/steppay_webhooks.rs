//! Issue 21 §1: StepPay's v2 webhooks as StepPay documents them (dev-docs
//! `docs/08-1-1_Webhook-Events.md`, `08-1-2_Webhook-Schema.md`, `08-1-3_Signature.md`), end to end
//! through the local stack: event types paycycle does not use are stored and ignored, a valid
//! signature is never refused for its age, two updates of one subscription are two events, a
//! managed subscription follows what StepPay answers for it (never the webhook's body), and a self
//! renewal left unknown is settled by its `payment.failed` webhook — declined, and dunning goes on.
//!
//! Then managed mode against a hostile order of events (issue 21's review, each test written
//! failing first): a renewal StepPay confirms is recorded whatever our state, our state follows
//! StepPay's subscription and never an order alone, a declined try keeps the checkout open,
//! lifecycle retries converge, the StepPay customer mapping survives its claim, and amounts are
//! read exactly.

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

    /// A StepPay self subscription of `amount` whose first payment's webhook has been handled,
    /// with StepPay sending `payment.*` events: its id, when its first period ends (the renewal is
    /// due), and how many webhooks the sandbox had delivered before that first one.
    async fn steppay_self_with_payment_events(&self, amount: i64) -> (SubscriptionId, Timestamp, usize) {
        self.sandbox.admin("/__admin/config", json!({"steppay_payment_events": true})).await;
        let c =
            self.partner.checkout(&json!({"pg": "steppay_self", "customer": customer(), "plan": plan(amount)})).await;
        let before = self.deliveries();
        self.sandbox.steppay_sdk_pay(&c["steppay"]["sdk"]).await;
        self.stack.settle_webhooks(before + 1).await;
        let id: SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
        let due = self.store.get_subscription(&id).await.unwrap().unwrap().subscription.current_period.unwrap().end;
        (id, due, before)
    }

    async fn stored(&self, body: &str) -> Option<paycycle::store::webhooks::WebhookEvent> {
        let Ok(SteppayWebhook::V2(w)) = steppay_webhook::parse("application/json", body.as_bytes()) else {
            panic!("a v2 body")
        };
        self.store.get_webhook_event(paycycle::pg::Pg::Steppay, &w.dedupe_key().unwrap()).await.unwrap()
    }

    async fn state(&self, id: &SubscriptionId) -> String {
        self.store.get_subscription(id).await.unwrap().unwrap().subscription.state.as_str().to_string()
    }

    /// A StepPay managed subscription of customer `customer_id`, paid and active: (ours, StepPay's id).
    async fn managed_active(&self, customer_id: &str) -> (SubscriptionId, String) {
        self.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
        let mut customer = customer();
        customer["id"] = json!(customer_id);
        let c = self
            .partner
            .checkout(&json!({"pg": "steppay_managed", "customer": customer, "plan": plan(19_900),
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
        (id, self.stack.billing_key_of(&record).await.unwrap())
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
    let (id, pg_sub) = e.managed_active("cus_1").await;

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
    let (id, due, before) = e.steppay_self_with_payment_events(8_000).await;

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
    assert!(attempt.pg.pg_payment_hint.is_some(), "the payment.failed webhook's idKey is noted");

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

/// StepPay renewed (and charged) a managed subscription; its `order.payment_completed` webhook
/// arrives after the partner paused the subscription (now) at StepPay and here. The approved
/// renewal must still be recorded: `renewed_by_pg` refuses a paused subscription, so verify
/// answers Retry forever and the charge StepPay took is never a payment here.
#[tokio::test]
async fn an_approved_managed_renewal_is_recorded_even_when_a_pause_overtakes_its_webhook() {
    let e = env().await;
    let (id, pg_sub) = e.managed_active("cus_pause_race").await;

    // StepPay renews and charges; its webhook is held (delivered late).
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "webhook_out_of_order"}, "count": 1}),
        )
        .await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    let charges = e.sandbox.ledger().await["charges"].as_array().unwrap().len();
    assert_eq!(charges, 2, "StepPay took the first payment and the renewal");

    // The partner pauses now: StepPay says yes (its subscription is ACTIVE), so it is paused here.
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/pause"), &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");

    // The renewal's webhook arrives now.
    let before = e.deliveries();
    e.sandbox.admin("/__admin/webhooks/flush", json!({})).await;
    e.stack.settle_webhooks(before + 1).await;
    for _ in 0..20 {
        e.stack.drain_stream().await;
    }
    let paid = e.store.payments_of_subscription(&id).await.unwrap().len();
    assert_eq!(paid, 2, "StepPay charged the renewal: it must be a payment here (first + renewal)");
    // StepPay says PAUSE: it stays paused here, with the renewed period paid (credited on resume).
    let s = e.store.get_subscription(&id).await.unwrap().unwrap().subscription;
    assert_eq!((s.state.as_str(), s.current_period.map(|p| p.index)), ("paused", Some(1)));
}

/// A managed checkout's first order is declined once at StepPay; StepPay's `order.updated` for it
/// (or a forged one: v2 signatures are off by default, `steppay_webhook_secrets: []`) is now
/// verified against the order, which shows the payment error, and the checkout is failed for good.
/// The customer then pays the same, still open, order on StepPay's pay page: StepPay took the
/// money, its `order.payment_completed` arrives — and is "verified" against the failed checkout
/// without recording anything. An approved charge must always be recorded.
#[tokio::test]
async fn an_approved_managed_first_payment_is_recorded_after_an_order_updated_for_an_earlier_decline() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let c = e
        .partner
        .checkout(&json!({"pg": "steppay_managed",
            "customer": {"id": "cus_retry", "name": "홍길동", "email": "hong@example.com"},
            "plan": {"name": "Pro", "amount": 19_900, "interval": "month", "interval_count": 1},
            "return_url": "https://shop.example.com/ok", "error_url": "https://shop.example.com/err",
            "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}}))
        .await;
    let pay_url = c["steppay"]["pay_url"].as_str().unwrap().to_string();
    let code = pay_url.split("/orders/").nth(1).unwrap().split('/').next().unwrap().to_string();

    // First try: declined (no money moved); StepPay updates the order with the payment error.
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await;
    let redirect = e.sandbox.steppay_pay_page(&pay_url).await;
    assert_eq!(redirect["status"], "error");
    let updated = json!({"timestamp": Timestamp::now().as_millisecond(), "version": "v1", "event": "order.updated",
        "data": {"id": 1, "code": code, "type": "RECURRING_INITIAL"}})
    .to_string();
    assert_eq!(e.post(&updated).await.0, 200);
    for _ in 0..5 {
        e.stack.drain_stream().await;
    }

    // Second try on the same order: paid at StepPay.
    let before = e.deliveries();
    let redirect = e.sandbox.steppay_pay_page(&pay_url).await;
    assert_eq!(redirect["status"], "success");
    e.stack.settle_webhooks(before + 1).await;
    for _ in 0..5 {
        e.stack.drain_stream().await;
    }
    assert_eq!(e.sandbox.ledger().await["charges"].as_array().unwrap().len(), 1, "StepPay took 19,900원 once");
    let id: SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    let paid = e.store.payments_of_subscription(&id).await.unwrap().len();
    let state = e.store.get_subscription(&id).await.unwrap().map(|r| r.subscription.state.as_str().to_string());
    let checkout = e.store.get_checkout(c["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        paid, 1,
        "the approved first payment is recorded (subscription {state:?}, checkout {:?}: {:?})",
        checkout.status, checkout.failure
    );
}

/// StepPay's renewal of a managed subscription is declined (UNPAID → past due here), then its
/// retry is paid on a new order (ACTIVE → active here, period 1 recorded). A replay of the old,
/// failed renewal order's `order.updated` (a portal re-send, or any replay: signatures have no age
/// and the key holds the timestamp, so it is processed again) must change nothing: the subscription
/// is paid and ACTIVE at StepPay. Verify asks StepPay about the *order* (failed, as it always will
/// be), never about the subscription, and sets a paid subscription past due again.
#[tokio::test]
async fn a_replayed_order_updated_of_an_old_failed_renewal_does_not_set_a_paid_managed_subscription_past_due() {
    let e = env().await;
    let (id, pg_sub) = e.managed_active("cus_replay").await;
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
    assert_eq!(e.store.get_subscription(&id).await.unwrap().unwrap().subscription.state.as_str(), "past_due");
    let failed_order = {
        let state = e.stack.sandbox.shared.state.lock().unwrap();
        let o = state.orders.iter().rev().find(|o| o.failed.is_some()).unwrap();
        (o.order_id, o.order_code.clone())
    };
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    n += 2;
    e.stack.settle_webhooks(n).await;
    let record = e.store.get_subscription(&id).await.unwrap().unwrap();
    assert_eq!((record.subscription.state.as_str(), record.subscription.current_period.unwrap().index), ("active", 1));

    let replay = json!({"timestamp": Timestamp::now().as_millisecond(), "version": "v1", "event": "order.updated",
        "data": {"id": failed_order.0, "code": failed_order.1, "type": "RECURRING", "subscriptions": [pg_sub.parse::<u64>().unwrap()]}})
    .to_string();
    assert_eq!(e.post(&replay).await.0, 200);
    for _ in 0..5 {
        e.stack.drain_stream().await;
    }
    let record = e.store.get_subscription(&id).await.unwrap().unwrap();
    assert_eq!(
        record.subscription.state.as_str(),
        "active",
        "StepPay says the subscription is ACTIVE and paid; an old order's failure decides nothing"
    );
}

/// StepPay amounts arrive as JSON numbers (`19900.0`); `de_opt_string` turns them into text with
/// `serde_json::Number::to_string` (no `arbitrary_precision`: through an f64) and
/// `Krw::parse_pg_decimal` reads that text. A fraction below the float's resolution is gone
/// before the exact parser sees it, and 2^53 + 1 written as a decimal becomes 2^53 and passes the
/// `> 2^53` guard: neither is "parsed exactly".
#[test]
fn a_steppay_json_amount_is_read_exactly_or_refused() {
    let as_steppay_sends = |json: &str| {
        let v: Value = serde_json::from_str(json).unwrap();
        let Value::Number(n) = v else { panic!("{json}") };
        paycycle::pg::steppay::parse_amount(&n.to_string(), "paidAmount").map(|k| k.won())
    };
    assert_eq!(as_steppay_sends("19900.0"), Ok(19_900));
    assert!(as_steppay_sends("19900.5").is_err());
    assert!(
        as_steppay_sends("19900.000000000000001").is_err(),
        "a JSON amount with a fraction is not a whole number of won: {:?}",
        as_steppay_sends("19900.000000000000001")
    );
    assert!(
        as_steppay_sends("9007199254740993.0").is_err(),
        "beyond 2^53 a decimal may not be the amount StepPay meant: {:?}",
        as_steppay_sends("9007199254740993.0")
    );
}

/// Paused here and at StepPay; StepPay then makes it ACTIVE again by itself (a `whenToResume`, or a
/// resume in StepPay's portal: `subscription.updated`, confirmed by `GET /api/v1/subscriptions/{id}`)
/// and renews it. Verify ignores ACTIVE for a paused subscription (`recovered_at_pg` wants active
/// or past due) and then cannot apply the paid renewal (`renewed_by_pg` refuses paused): StepPay
/// charged, nothing is recorded.
#[tokio::test]
async fn a_managed_renewal_steppay_charged_after_resuming_at_steppay_is_recorded() {
    let e = env().await;
    let (id, pg_sub) = e.managed_active("cus_resumed_at_pg").await;
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/pause"), &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");

    let mut n = e.deliveries();
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/status"), json!({"status": "ACTIVE"})).await;
    n += 1;
    e.stack.settle_webhooks(n).await;
    e.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await;
    n += 1;
    e.stack.settle_webhooks(n).await;
    for _ in 0..10 {
        e.stack.drain_stream().await;
    }
    assert_eq!(e.sandbox.ledger().await["charges"].as_array().unwrap().len(), 2, "StepPay charged the renewal");
    let paid = e.store.payments_of_subscription(&id).await.unwrap().len();
    let state = e.store.get_subscription(&id).await.unwrap().unwrap().subscription.state;
    assert_eq!(paid, 2, "the renewal StepPay charged is recorded (subscription {state})");
    // StepPay says ACTIVE: active here again, the renewed period recorded.
    let s = e.store.get_subscription(&id).await.unwrap().unwrap().subscription;
    assert_eq!((s.state.as_str(), s.current_period.map(|p| p.index)), ("active", Some(1)));
}

/// A pause made at StepPay whose write here was lost (a concurrent change failed our conditional
/// write after StepPay said yes): StepPay is PAUSE, we are still active, and StepPay refuses to
/// pause a subscription that is not ACTIVE. The partner's retry must converge — StepPay's own
/// status (`GET /api/v1/subscriptions/{id}`) shows the pause is made — instead of a 502 forever
/// with the two sides disagreeing.
#[tokio::test]
async fn a_managed_pause_made_at_steppay_but_lost_here_converges_on_retry() {
    let e = env().await;
    let (id, pg_sub) = e.managed_active("cus_pause_lost").await;
    {
        // StepPay's side of the first try (no webhook: StepPay sends none for a pause it was asked).
        let mut state = e.stack.sandbox.shared.state.lock().unwrap();
        let sub = state.subscriptions.iter_mut().find(|s| s.id.to_string() == pg_sub).unwrap();
        sub.status = "PAUSE".into();
    }
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/pause"), &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/resume"), &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
}

/// A StepPay customer created by a checkout whose claim was released meanwhile (its lease ran
/// out, the next checkout took the claim over and released it after a refusal) is still recorded
/// — `record_pg_customer` allows `attribute_not_exists` — but as an item without `lease_until`
/// (and without what `to_item` writes), which no later read can decode: every later managed
/// checkout of that customer fails on the store instead of using the customer.
#[tokio::test]
async fn a_recorded_steppay_customer_stays_readable_whatever_happened_to_its_claim() {
    let e = env().await;
    let lease = jiff::SignedDuration::from_secs(30);
    use paycycle::store::pg_customers::PgCustomerClaim;
    let now = Timestamp::now();
    let Ok(PgCustomerClaim::Claimed(first)) =
        e.store.claim_pg_customer(paycycle::pg::Pg::Steppay, "partner_a", "cus_x", now, lease).await
    else {
        panic!("claimed")
    };
    // The first creation is slower than the lease: another checkout takes the claim over …
    let later = now.checked_add(jiff::SignedDuration::from_secs(31)).unwrap();
    let Ok(PgCustomerClaim::Claimed(second)) =
        e.store.claim_pg_customer(paycycle::pg::Pg::Steppay, "partner_a", "cus_x", later, lease).await
    else {
        panic!("taken over")
    };
    // … is refused by StepPay and gives it up …
    e.store.release_pg_customer(paycycle::pg::Pg::Steppay, "partner_a", "cus_x", &second).await.unwrap();
    // … while the first creation succeeded at StepPay and is recorded.
    let created = paycycle::pg::PgCustomer { id: "77".into(), code: "cust_77".into() };
    assert_eq!(
        e.store.record_pg_customer(paycycle::pg::Pg::Steppay, "partner_a", "cus_x", &first, &created).await.unwrap(),
        created
    );
    let again =
        e.store.claim_pg_customer(paycycle::pg::Pg::Steppay, "partner_a", "cus_x", Timestamp::now(), lease).await;
    assert_eq!(again, Ok(PgCustomerClaim::Known(created)));
}

/// StepPay's `order.payment_completed` can arrive before StepPay's own order lookup says paid
/// (its lookup may lag; nothing promises read-after-write). The event's dedupe key has no
/// timestamp, so refused then, it would never be processed again and the payment would be lost
/// (here StepPay sends no other webhook for it). It is asked again later and recorded then.
#[tokio::test]
async fn an_order_payment_completed_before_steppay_shows_the_order_paid_is_retried_and_recorded() {
    let e = env().await;
    e.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await;
    let c = e
        .partner
        .checkout(&json!({"pg": "steppay_managed",
            "customer": {"id": "cus_lag", "name": "홍길동", "email": "hong@example.com"},
            "plan": {"name": "Pro", "amount": 19_900, "interval": "month", "interval_count": 1},
            "return_url": "https://shop.example.com/ok", "error_url": "https://shop.example.com/err",
            "steppay": {"product_code": "prod_pro", "price_code": "price_monthly"}}))
        .await;
    let pay_url = c["steppay"]["pay_url"].as_str().unwrap().to_string();
    let code = c["steppay"]["order_code"].as_str().unwrap().to_string();
    // Only the early webhook reaches us: StepPay's own delivery of it is lost.
    e.sandbox.admin("/__admin/config", json!({"steppay_webhook_url": null})).await;
    let early =
        json!({"timestamp": Timestamp::now().as_millisecond(), "version": "v1", "event": "order.payment_completed",
        "data": {"id": 1, "code": code, "type": "RECURRING_INITIAL"}})
        .to_string();
    assert_eq!(e.post(&early).await.0, 200);
    e.stack.drain_stream().await;
    let redirect = e.sandbox.steppay_pay_page(&pay_url).await;
    assert_eq!(redirect["status"], "success");
    assert_eq!(e.sandbox.ledger().await["charges"].as_array().unwrap().len(), 1, "StepPay took the money");

    // verify's sweep asks again once the event's backoff is due.
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    verify::sweep(&e.stack.functions.verify_deps(), later).await;
    let id: SubscriptionId = c["subscription_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(e.store.payments_of_subscription(&id).await.unwrap().len(), 1, "the approved first payment is recorded");
}

/// A person settled a StepPay renewal not paid — StepPay cannot be asked by our charge id, so on
/// their word — and canceled the subscription. StepPay's `payment.completed` for that charge comes
/// later (re-sent from its portal): it was paid after all. The payment is confirmed with StepPay
/// (that idKey, this charge's `partnerOrderId`), recorded, and a person alarmed; the subscription
/// stays canceled.
#[tokio::test]
async fn a_renewal_a_person_settled_not_paid_is_recorded_when_steppays_webhook_shows_it_paid() {
    let e = env_with(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await;
    let (id, due, _) = e.steppay_self_with_payment_events(8_000).await;

    // The renewal is charged at StepPay; its answer and its webhook are both lost.
    e.sandbox.admin("/__admin/config", json!({"steppay_webhook_url": null, "timeout_after_charge_ms": 1_500})).await;
    e.sandbox
        .admin(
            "/__admin/scenarios",
            json!({"operation": "charge", "fault": {"kind": "timeout_after_charge"}, "count": 1}),
        )
        .await;
    let at = due.checked_add(SignedDuration::from_hours(1)).unwrap();
    e.stack.functions.tick(Some(&at.to_string())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    let later = at.checked_add(SignedDuration::from_hours(25)).unwrap();
    e.stack.functions.tick(Some(&later.to_string())).await.unwrap();
    assert_eq!(e.state(&id).await, "needs_review");

    let body = json!({"verdict": "not_paid", "next": "cancel", "reason": "not found in StepPay's admin"});
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/resolve"), &body, None).await;
    assert_eq!(
        (status, v["resolution"]["pg"].as_str(), v["state"].as_str()),
        (200, Some("operator_only"), Some("canceled")),
        "{v}"
    );
    assert_eq!(e.store.payments_of_subscription(&id).await.unwrap().len(), 1, "only the first payment");

    // StepPay's webhook for the renewal, re-sent: its payment (the dev-docs Payment schema).
    let ledger = e.sandbox.ledger().await;
    let charge = ledger["charges"].as_array().unwrap().iter().find(|c| c["partner_order_id"] == format!("{id}-p1-a1"));
    let charge = charge.expect("StepPay took the renewal").clone();
    let hook = json!({"timestamp": Timestamp::now().as_second(), "version": "v1", "event": "payment.completed",
        "data": {"paymentId": charge["order_id"], "idKey": charge["id"], "orderId": charge["partner_order_id"],
                 "productName": charge["goods"], "paidAmount": 8_000.0, "paidAt": charge["paid_at"],
                 "status": "COMPLETE", "paymentGateway": "UNKNOWN", "paymentMethod": charge["method"],
                 "paymentOnly": true, "errorMessage": null, "cancel": null}})
    .to_string();
    assert_eq!(e.post(&hook).await.0, 200);
    e.stack.drain_stream().await;
    let payments = e.store.payments_of_subscription(&id).await.unwrap();
    assert_eq!(payments.len(), 2, "the renewal StepPay took is recorded");
    assert!(
        payments.iter().any(|p| p.pg_payment_id == charge["id"].as_str().unwrap() && p.amounts.paid.won() == 8_000)
    );
    assert_eq!(e.state(&id).await, "canceled");
}

/// Issue 24 §5, StepPay managed: a card change is StepPay's payment-method order, registered on
/// its pay page. Verify asks StepPay (a `PAYMENT_METHOD` order with a payment date) before it
/// records anything, charges nothing, and StepPay's next renewal charges the new card.
#[tokio::test]
async fn a_managed_card_change_is_steppays_payment_method_order_and_its_next_renewal_charges_the_new_card() {
    let e = env().await;
    let (id, steppay_id) = e.managed_active("cus_mcard").await;
    let body = json!({"return_url": "https://shop.example.com/card"});
    let (status, c) = e.partner.post(&format!("/subscriptions/{id}/payment-method"), &body, Some("mc-1")).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["purpose"], "payment_method", "{c}");
    let order_code = c["steppay"]["order_code"].as_str().unwrap().to_string();
    let verify = json!({"checkout_id": c["id"], "order_code": order_code});

    // The browser's word before StepPay has a card: nothing changes.
    let (status, v) = e.partner.post("/payments/verify", &verify, None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("payment_not_completed")), "{v}");
    // A first payment's order is no card change of this checkout.
    let first_order = e.stack.sandbox.shared.state.lock().unwrap().orders[0].order_code.clone();
    let (status, v) =
        e.partner.post("/payments/verify", &json!({"checkout_id": c["id"], "order_code": first_order}), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("evidence_mismatch")), "{v}");

    let charges_before = e.stack.sandbox.shared.state.lock().unwrap().charges.len();
    let before = e.deliveries();
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    assert_eq!((redirect["status"].as_str(), redirect["order_code"].as_str()), ("success", order_code.as_str()));
    // StepPay's order webhook completes the card change; the partner's verify then reads it.
    e.stack.settle_webhooks(before + 1).await;
    let (status, v) = e.partner.post("/payments/verify", &verify, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["payment"].is_null(), v["subscription"]["state"].as_str()), (true, Some("active")), "{v}");
    let record = e.store.get_subscription(&id).await.unwrap().unwrap();
    assert_eq!(e.stack.billing_key_of(&record).await.as_deref(), Some(steppay_id.as_str()), "StepPay keeps the card");

    let new_key = {
        let state = e.stack.sandbox.shared.state.lock().unwrap();
        assert_eq!(state.charges.len(), charges_before, "a registration charges nothing");
        state.orders.iter().find(|o| o.order_code == order_code).unwrap().id_key.clone()
    };
    let renewed =
        e.http.post(format!("{}/__admin/steppay/subscriptions/{steppay_id}/renew", e.stack.sandbox.base_url()));
    assert!(renewed.send().await.unwrap().status().is_success());
    let state = e.stack.sandbox.shared.state.lock().unwrap();
    assert_eq!(state.charges.last().unwrap().billing_key.as_deref(), Some(new_key.as_str()), "the new card");
}

/// A managed card change StepPay completes after the subscription was canceled here changes
/// nothing and records no money: verify refuses it (409), and StepPay's later order webhook for
/// the failed card change is settled as a registration that charged nothing (not retried, not
/// recorded as a payment, not taken for a renewal).
#[tokio::test]
async fn a_managed_card_change_completed_after_a_cancel_records_no_payment() {
    let e = env().await;
    let (id, _) = e.managed_active("cus_mcx").await;
    let body = json!({"return_url": "https://shop.example.com/card"});
    let (status, c) = e.partner.post(&format!("/subscriptions/{id}/payment-method"), &body, Some("mcx-1")).await;
    assert_eq!(status, 201, "{c}");
    let (status, v) = e.partner.post(&format!("/subscriptions/{id}/cancel"), &json!({}), None).await;
    assert_eq!(status, 200, "{v}");
    // StepPay's own delivery of the order webhook is held back: the partner's verify comes first.
    e.sandbox.admin("/__admin/config", json!({"steppay_webhook_url": null})).await;
    let code = c["steppay"]["order_code"].as_str().unwrap().to_string();
    let redirect = e.sandbox.steppay_pay_page(c["steppay"]["pay_url"].as_str().unwrap()).await;
    assert_eq!(redirect["status"], "success");
    let verify = json!({"checkout_id": c["id"], "order_code": code});
    let (status, v) = e.partner.post("/payments/verify", &verify, None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("illegal_transition")), "{v}");
    let checkout = e.store.get_checkout(c["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(checkout.status, paycycle::store::checkouts::CheckoutStatus::Failed);

    let order_id =
        e.stack.sandbox.shared.state.lock().unwrap().orders.iter().find(|o| o.order_code == code).unwrap().order_id;
    let late =
        json!({"timestamp": Timestamp::now().as_millisecond(), "version": "v1", "event": "order.payment_completed",
        "data": {"id": order_id, "code": code, "type": "PAYMENT_METHOD"}})
        .to_string();
    assert_eq!(e.post(&late).await.0, 200);
    e.stack.drain_stream().await;
    let stored = e.stored(&late).await.expect("stored first");
    assert_eq!(stored.status, WebhookStatus::Ignored, "{stored:?}");
    assert_eq!(e.store.payments_of_subscription(&id).await.unwrap().len(), 1, "only the first payment");
    assert_eq!(e.state(&id).await, "canceled");
}
