//! The subscriptions API's orchestration on an in-memory store, through its Lambda handler (the
//! PG sandbox in this process for what asks a PG): each case runs in milliseconds (issue 22 §2).
//! The DynamoDB side and StepPay managed's changes at the PG are `tests/tests/subscriptions.rs`.

use crate::Deps;
use jiff::{SignedDuration, Timestamp};
use paycycle::domain::events::EventKind;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle_fixtures::{Fresh, Pgs, json_body, request, subscription};
use serde_json::{Value, json};

const PARTNER: &str = "partner_a";

struct Env {
    fresh: Fresh,
    _pgs: Pgs,
    deps: Deps,
    key: String,
}

async fn env() -> Env {
    let fresh = Fresh::in_memory();
    let pgs = Pgs::start().await;
    let deps = fresh.services(&pgs);
    let key = fresh.api_key(PARTNER).await;
    Env { fresh, _pgs: pgs, deps, key }
}

impl Env {
    async fn active(&self, id: &str) -> SubscriptionRecord {
        let r = subscription(id).partner(PARTNER).build();
        self.fresh.store.create_subscription(&r).await.unwrap();
        r
    }

    async fn call(&self, method: &str, path: &str, id: &str, body: Option<Value>, key: &str) -> (u16, Value) {
        let mut req = request(method, path).bearer(key).path_param("id", id);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = crate::handler(&self.deps, req.build()).await.unwrap();
        (res.status().as_u16(), json_body(&res))
    }

    async fn act(&self, r: &SubscriptionRecord, action: &str, body: Value) -> (u16, Value) {
        let id = r.id().as_str();
        self.call("POST", &format!("/subscriptions/{id}/{action}"), id, Some(body), &self.key).await
    }

    fn published(&self, kind: EventKind) -> usize {
        self.fresh.publisher.published().iter().filter(|e| e.detail_type == kind.detail_type()).count()
    }
}

#[tokio::test]
async fn pause_resume_and_cancel_each_commit_once_with_their_event() {
    let e = env().await;
    let r = e.active("sub_life").await;
    let (status, paused) = e.act(&r, "pause", json!({})).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    let (status, resumed) = e.act(&r, "resume", json!({})).await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("active")), "{resumed}");
    let (status, canceled) = e.act(&r, "cancel", json!({})).await;
    assert_eq!((status, canceled["state"].as_str()), (200, Some("canceled")), "{canceled}");
    let (status, again) = e.act(&r, "resume", json!({})).await;
    assert_eq!(status, 409, "a canceled subscription does not resume: {again}");
    let kinds = [EventKind::SubscriptionPaused, EventKind::SubscriptionResumed, EventKind::SubscriptionCanceled];
    assert_eq!(kinds.map(|k| e.published(k)), [1, 1, 1]);
    let stored = e.fresh.store.get_subscription(r.id()).await.unwrap().unwrap();
    assert_eq!(stored.version, r.version + 3, "three changes, three writes");
}

#[tokio::test]
async fn no_change_is_made_while_renew_holds_the_subscription() {
    let e = env().await;
    let r = e.active("sub_held").await;
    let claimed = e.fresh.store.claim(&r, "worker-1", Timestamp::now(), SignedDuration::from_mins(5)).await.unwrap();
    let (status, v) = e.act(&r, "cancel", json!({})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    assert_eq!(e.published(EventKind::SubscriptionCanceled), 0);
    e.fresh.store.release_lease(&claimed).await.unwrap();
    let (status, v) = e.act(&r, "cancel", json!({"at_period_end": true})).await;
    assert_eq!((status, v["cancel_at_period_end"].as_bool()), (200, Some(true)), "{v}");
}

#[tokio::test]
async fn a_partner_sees_only_its_own_subscriptions() {
    let e = env().await;
    let r = e.active("sub_mine").await;
    let id = r.id().as_str();
    let (status, mine) = e.call("GET", &format!("/subscriptions/{id}"), id, None, &e.key).await;
    assert_eq!((status, mine["id"].as_str()), (200, Some(id)), "{mine}");
    let other = e.fresh.api_key("partner_b").await;
    let (status, _) = e.call("GET", &format!("/subscriptions/{id}"), id, None, &other).await;
    assert_eq!(status, 404);
    let (status, _) = e.call("POST", &format!("/subscriptions/{id}/cancel"), id, Some(json!({})), &other).await;
    assert_eq!(status, 404);
    assert_eq!(e.fresh.store.get_subscription(r.id()).await.unwrap().unwrap().version, r.version, "untouched");
}
