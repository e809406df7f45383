//! verify's orchestration of a first payment on an in-memory store: a checkout made by the
//! checkout function's handler, the customer in the sandbox's Payple window over real HTTP, and
//! `POST /payments/verify` through verify's handler — each case in milliseconds (issue 22 §2). The
//! webhooks, the stream and the DynamoDB side are `tests/tests/first_payments.rs`.

use paycycle::domain::events::EventKind;
use paycycle::store::checkouts::CheckoutStatus;
use paycycle_fixtures::{Fresh, Pgs, json_body, request};
use serde_json::{Map, Value, json};

struct Env {
    fresh: Fresh,
    pgs: Pgs,
    deps: crate::Deps,
    checkout: checkout::Deps,
    key: String,
}

async fn env() -> Env {
    let fresh = Fresh::in_memory();
    let pgs = Pgs::start().await;
    let deps = fresh.services(&pgs);
    let checkout = checkout::Deps { store: fresh.store.clone(), pgs: pgs.registry.clone(), vault: deps.vault.clone() };
    let key = fresh.api_key("partner_a").await;
    Env { fresh, pgs, deps, checkout, key }
}

impl Env {
    /// `POST /checkouts` for a Payple checkout of `work` through the checkout handler.
    async fn payple_checkout(&self, work: &str, amount: i64) -> Value {
        let body = json!({"pg": "payple", "plan": {"name": "Pro", "amount": amount, "interval": "month", "interval_count": 1},
            "customer": {"id": "cus_1", "name": "홍길동", "phone": "01012345678", "email": "hong@example.com"},
            "return_url": "https://shop.example.com/return", "payple": {"work": work}});
        let req = request("POST", "/checkouts").bearer(&self.key).idempotency_key(&ulid()).json(&body).build();
        let res = checkout::handler(&self.checkout, req).await.unwrap();
        assert_eq!(res.status().as_u16(), 201, "{}", json_body(&res));
        json_body(&res)
    }

    /// The customer in Payple's window with the checkout's parameters: the result fields.
    async fn window(&self, params: &Value) -> Map<String, Value> {
        self.pgs.client.payple_window(params, None).await.unwrap()
    }

    /// `POST /payments/verify` with what the partner's page received.
    async fn verify(&self, checkout_id: &str, mut fields: Map<String, Value>) -> (u16, Value) {
        fields.insert("checkout_id".into(), json!(checkout_id));
        let req = request("POST", "/payments/verify").bearer(&self.key).json(&Value::Object(fields)).build();
        let res = crate::handler(&self.deps, req).await.unwrap();
        (res.status().as_u16(), json_body(&res))
    }

    async fn pg_charges(&self) -> usize {
        self.pgs.client.ledger().await.unwrap()["charges"].as_array().map_or(0, Vec::len)
    }

    fn published(&self, kind: EventKind) -> usize {
        self.fresh.publisher.published().iter().filter(|e| e.detail_type == kind.detail_type()).count()
    }
}

/// A unique Idempotency-Key.
fn ulid() -> String {
    paycycle::ids::new_id("idem")
}

#[tokio::test]
async fn a_payple_window_payment_activates_the_subscription_once() {
    let e = env().await;
    let c = e.payple_checkout("PAY", 9_900).await;
    let id = c["id"].as_str().unwrap();
    let result = e.window(&c["payple"]).await;
    let (status, v) = e.verify(id, result.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["subscription"]["state"].as_str(), v["payment"]["amount"].as_i64()), (Some("active"), Some(9_900)));
    let (status, again) = e.verify(id, result).await;
    assert_eq!((status, &again["payment"]["id"]), (200, &v["payment"]["id"]), "the same answer, no second payment");
    assert_eq!(e.pg_charges().await, 1);
    let kinds = [EventKind::CheckoutCompleted, EventKind::PaymentSucceeded, EventKind::SubscriptionActivated];
    assert_eq!(kinds.map(|k| e.published(k)), [1, 1, 1]);
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(e.fresh.store.get_subscription(&sub_id).await.unwrap().unwrap().version, 1, "activated once");
}

#[tokio::test]
async fn what_the_browser_says_decides_nothing() {
    let e = env().await;
    // A closed window is the browser's word, not Payple's: the checkout stays open.
    let c = e.payple_checkout("PAY", 9_900).await;
    let id = c["id"].as_str().unwrap();
    let closed = e.pgs.client.payple_window(&c["payple"], Some("close")).await.unwrap();
    let (status, v) = e.verify(id, closed).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("payment_not_completed")), "{v}");
    assert_eq!(e.fresh.store.get_checkout(id).await.unwrap().unwrap().status, CheckoutStatus::Open);
    // A window paid 100원 instead of 9,900원 gets no subscription.
    let c = e.payple_checkout("PAY", 9_900).await;
    let mut params = c["payple"].clone();
    params["PCD_PAY_TOTAL"] = json!("100");
    let paid_less = e.window(&params).await;
    let (status, v) = e.verify(c["id"].as_str().unwrap(), paid_less).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("payment_failed")), "{v}");
    let sub_id = c["subscription_id"].as_str().unwrap().parse().unwrap();
    assert!(e.fresh.store.get_subscription(&sub_id).await.unwrap().is_none());
    // Another checkout's evidence is refused and changes nothing.
    let other = e.payple_checkout("PAY", 9_900).await;
    let theirs = e.window(&other["payple"]).await;
    let fresh = e.payple_checkout("PAY", 9_900).await;
    let (status, v) = e.verify(fresh["id"].as_str().unwrap(), theirs).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("evidence_mismatch")), "{v}");
    assert_eq!(e.published(EventKind::SubscriptionActivated), 0);
}

#[tokio::test]
async fn an_auth_checkout_is_charged_by_paycycle_exactly_once() {
    let e = env().await;
    let c = e.payple_checkout("AUTH", 4_900).await;
    let id = c["id"].as_str().unwrap();
    let registered = e.window(&c["payple"]).await;
    assert_eq!(e.pg_charges().await, 0, "the window only registers the card");
    let (status, v) = e.verify(id, registered.clone()).await;
    assert_eq!((status, v["payment"]["amount"].as_i64()), (200, Some(4_900)), "{v}");
    let (status, _) = e.verify(id, registered).await;
    assert_eq!(status, 200);
    assert_eq!(e.pg_charges().await, 1, "paycycle's first charge, once");
}
