//! The endpoints API on an in-memory store, through its Lambda handler. Deliveries themselves are
//! `deliver`'s tests and the end-to-end suite (`tests/tests/partner_webhooks.rs`).

use crate::Deps;
use paycycle::store::Store;
use paycycle::store::delivery_queue::DeliveryQueue;
use paycycle::store::partner_webhooks::{MAX_ENDPOINTS_PER_PARTNER, PartnerEvent};
use paycycle_fixtures::{Fresh, json_body, request};
use serde_json::{Value, json};

struct Env {
    deps: Deps,
    key: String,
}

async fn env(allow_loopback: bool) -> Env {
    let fresh = Fresh::in_memory();
    let key = fresh.api_key("partner_a").await;
    let deps = Deps { store: fresh.store.clone(), queue: DeliveryQueue::in_memory(), allow_loopback };
    Env { deps, key }
}

impl Env {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.key.clone(), method, path, body).await
    }

    async fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = request(method, path).bearer(key);
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() > 2 {
            req = req.path_param("id", segments[2]);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = crate::handler(&self.deps, req.build()).await.unwrap();
        (res.status().as_u16(), json_body(&res))
    }

    fn store(&self) -> &Store {
        &self.deps.store
    }
}

#[tokio::test]
async fn the_secret_is_shown_once_and_only_public_https_urls_are_taken() {
    let e = env(false).await;
    let (status, created) =
        e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://hooks.example.com/paycycle"}))).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["event_types"], json!(["*"]));
    let id = created["id"].as_str().unwrap();
    let (status, read) = e.call("GET", &format!("/webhook-endpoints/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(read.get("secret").is_none() && !read.to_string().contains("whsec_"), "{read}");
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://10.0.0.8/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://localhost/x",
        "https://user:pw@hooks.example.com/x",
        "not a url",
    ] {
        let (status, v) = e.call("POST", "/webhook-endpoints", Some(json!({"url": url}))).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_url")), "{url}: {v}");
    }
    let (status, v) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "http://127.0.0.1:9/x"}))).await;
    assert_eq!(status, 400, "loopback only where time travel is allowed: {v}");
    let local = env(true).await;
    let (status, _) = local.call("POST", "/webhook-endpoints", Some(json!({"url": "http://127.0.0.1:9/x"}))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn event_types_are_checked_against_the_catalog() {
    let e = env(false).await;
    let url = "https://hooks.example.com/x";
    let (status, v) = e
        .call(
            "POST",
            "/webhook-endpoints",
            Some(json!({"url": url, "event_types": ["subscription.renewed", "refund.failed"]})),
        )
        .await;
    assert_eq!((status, v["event_types"].clone()), (201, json!(["subscription.renewed", "refund.failed"])));
    let (status, v) =
        e.call("POST", "/webhook-endpoints", Some(json!({"url": url, "event_types": ["subscription.renewd"]}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_event_types")), "{v}");
    let (status, _) =
        e.call("POST", "/webhook-endpoints", Some(json!({"url": url, "event_types": ["*", "refund.failed"]}))).await;
    assert_eq!(status, 400);
    let (status, v) = e.call("POST", "/webhook-endpoints", Some(json!({"url": url, "extra": 1}))).await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn a_partner_has_at_most_the_limit_of_endpoints_and_a_delete_frees_a_place() {
    let e = env(false).await;
    let mut ids = Vec::new();
    for i in 0..MAX_ENDPOINTS_PER_PARTNER {
        let (status, v) =
            e.call("POST", "/webhook-endpoints", Some(json!({"url": format!("https://h{i}.example.com/x")}))).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (status, v) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://more.example.com/x"}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("too_many_endpoints")), "{v}");
    let (status, _) = e.call("DELETE", &format!("/webhook-endpoints/{}", ids[0]), None).await;
    assert_eq!(status, 200);
    let (status, _) = e.call("GET", &format!("/webhook-endpoints/{}", ids[0]), None).await;
    assert_eq!(status, 404);
    let (status, _) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://more.example.com/x"}))).await;
    assert_eq!(status, 201);
    assert_eq!(e.store().endpoint_count("partner_a").await.unwrap(), MAX_ENDPOINTS_PER_PARTNER);
    let (_, list) = e.call("GET", "/webhook-endpoints", None).await;
    assert_eq!(list["data"].as_array().unwrap().len() as u32, MAX_ENDPOINTS_PER_PARTNER);
}

#[tokio::test]
async fn another_partner_cannot_see_or_touch_an_endpoint_or_its_events() {
    let e = env(false).await;
    let (_, created) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://hooks.example.com/x"}))).await;
    let id = created["id"].as_str().unwrap();
    let other = Fresh { store: e.store().clone(), ..Fresh::in_memory() }.api_key("partner_b").await;
    for (method, path) in [
        ("GET", format!("/webhook-endpoints/{id}")),
        ("DELETE", format!("/webhook-endpoints/{id}")),
        ("POST", format!("/webhook-endpoints/{id}/rotate")),
        ("GET", format!("/webhook-endpoints/{id}/deliveries")),
    ] {
        let (status, v) = e.call_as(&other, method, &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {v}");
    }
    let (_, theirs) = e.call_as(&other, "GET", "/webhook-endpoints", None).await;
    assert_eq!(theirs["data"], json!([]));
    let event = PartnerEvent {
        event_id: "evt_0123456789abcdef01234567".into(),
        partner_id: "partner_a".into(),
        event_type: "payment.failed".into(),
        occurred_at: "2027-01-01T00:00:00Z".parse().unwrap(),
        payload: "{}".into(),
        received_at: "2027-01-01T00:00:00Z".parse().unwrap(),
    };
    e.store().record_partner_event(&event).await.unwrap();
    let (status, _) = e.call_as(&other, "POST", &format!("/events/{}/redeliver", event.event_id), None).await;
    assert_eq!(status, 404);
    assert!(e.deps.queue.sent().is_empty());
    let (status, _) = e.call("POST", &format!("/events/{}/redeliver", event.event_id), None).await;
    assert_eq!(status, 202);
    assert_eq!(e.deps.queue.sent().len(), 1);
}

#[tokio::test]
async fn a_rotation_keeps_the_old_secret_signing_for_the_overlap_only() {
    let e = env(false).await;
    let (_, created) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://hooks.example.com/x"}))).await;
    let id = created["id"].as_str().unwrap();
    let (status, rotated) =
        e.call("POST", &format!("/webhook-endpoints/{id}/rotate"), Some(json!({"overlap_seconds": 3600}))).await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["secret"], created["secret"]);
    let stored = e.store().get_endpoint("partner_a", id).await.unwrap().unwrap();
    let now = jiff::Timestamp::now();
    let signing: Vec<&str> = stored.signing_secrets(now).iter().map(|s| s.expose()).collect();
    assert_eq!(signing, [created["secret"].as_str().unwrap(), rotated["secret"].as_str().unwrap()]);
    let later = now.checked_add(jiff::SignedDuration::from_secs(3601)).unwrap();
    let signing: Vec<&str> = stored.signing_secrets(later).iter().map(|s| s.expose()).collect();
    assert_eq!(signing, [rotated["secret"].as_str().unwrap()]);
    let (status, _) =
        e.call("POST", &format!("/webhook-endpoints/{id}/rotate"), Some(json!({"overlap_seconds": 999_999_999}))).await;
    assert_eq!(status, 400);
}

/// Rotating again during an overlap ends the secret already on its way out: at most two secrets
/// ever sign (a partner rotating in a loop cannot grow the signature header or the item).
#[tokio::test]
async fn at_most_two_secrets_sign_however_often_the_partner_rotates() {
    let e = env(false).await;
    let (_, created) = e.call("POST", "/webhook-endpoints", Some(json!({"url": "https://hooks.example.com/x"}))).await;
    let id = created["id"].as_str().unwrap();
    let mut last = String::new();
    for _ in 0..5 {
        let (status, v) =
            e.call("POST", &format!("/webhook-endpoints/{id}/rotate"), Some(json!({"overlap_seconds": 604800}))).await;
        assert_eq!(status, 200, "{v}");
        last = v["secret"].as_str().unwrap().to_string();
    }
    let stored = e.store().get_endpoint("partner_a", id).await.unwrap().unwrap();
    let signing = stored.signing_secrets(jiff::Timestamp::now());
    assert_eq!(signing.len(), 2, "the newest and the one before it");
    assert_eq!(signing[1].expose(), last);
    assert!(stored.secrets.len() <= 2, "{} stored", stored.secrets.len());
}

async fn log_events(e: &Env, kind: &str, from: usize, n: usize) {
    for i in from..from + n {
        let at = jiff::Timestamp::from_second(1_800_000_000 + i as i64).unwrap();
        let event = PartnerEvent {
            event_id: format!("evt_{i:024x}"),
            partner_id: "partner_a".into(),
            event_type: kind.into(),
            occurred_at: at,
            payload: "{}".into(),
            received_at: jiff::Timestamp::now(),
        };
        e.store().record_partner_event(&event).await.unwrap();
    }
}

/// A type filter reads a bounded number of events per request: past the bound it answers what it
/// found with a cursor, and never more than `limit`.
#[tokio::test]
async fn a_type_filter_scans_a_bounded_number_of_events_per_request() {
    let e = env(false).await;
    log_events(&e, "payment.failed", 0, 1_200).await;
    log_events(&e, "refund.failed", 1_200, 3).await;
    let mut path = "/events?type=refund.failed&limit=2".to_string();
    let mut pages = Vec::new();
    loop {
        let (status, page) = e.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap().clone();
        assert!(data.len() <= 2, "{page}");
        assert!(data.iter().all(|d| d["type"] == "refund.failed"));
        pages.push(data.len());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/events?type=refund.failed&limit=2&cursor={c}"),
            None => break,
        }
        assert!(pages.len() < 10);
    }
    assert_eq!(pages.iter().sum::<usize>(), 3, "{pages:?}");
    assert_eq!(pages[0], 0, "the first 1,000 events hold none: an empty page with a cursor ({pages:?})");
}

/// A cursor this API did not hand out is a 400, never a store error (503).
#[tokio::test]
async fn a_forged_or_mismatched_cursor_is_a_bad_request() {
    use base64::Engine;
    let e = env(false).await;
    log_events(&e, "payment.failed", 0, 3).await;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"lookup_pk": {"S": "WHEVTS#partner_a"}}).to_string());
    let (status, v) = e.call("GET", &format!("/events?cursor={forged}"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_cursor")), "{v}");
    let (_, page) = e.call("GET", "/events?limit=1", None).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, v) = e.call("GET", &format!("/events?limit=1&since=2030-01-01T00:00:00Z&cursor={cursor}"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_cursor")), "{v}");
}
