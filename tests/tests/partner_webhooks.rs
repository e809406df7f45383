//! Issue #23: webhooks to the partner, end to end on the local stack — the EventBridge rule, the
//! events queue, `deliver`'s fan-out and attempts, the retry sweep by time travel — received by a
//! local receiver and verified by the independent `standardwebhooks` package from PyPI.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use paycycle::standard_webhooks::SigningSecret;
use paycycle_dev::receiver::{Mode, Receiver};
use paycycle_dev::{LocalStack, Options, journey};
use paycycle_e2e::{Partner, pypi_verify};
use serde_json::{Value, json};

async fn stack() -> LocalStack {
    LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap()
}

/// Registers `receiver` for the partner of `partner` (every event type); the receiver trusts
/// its secret. Returns (endpoint id, secret).
async fn register(partner: &Partner, receiver: &Receiver) -> (String, String) {
    let (status, created) = partner.post("/webhook-endpoints", &json!({"url": receiver.url()}), None).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    receiver.trust(vec![SigningSecret::parse(&secret).unwrap()]);
    (created["id"].as_str().unwrap().to_string(), secret)
}

/// Seeds active subscriptions of `partner_id` and changes each through the API: every change
/// publishes one event. Returns how many events that makes.
async fn make_events(stack: &LocalStack, partner: &Partner, partner_id: &str, n: usize) -> usize {
    let store = stack.store().await;
    for _ in 0..n {
        let r = paycycle_fixtures::subscription(&paycycle::ids::new_id("sub")).partner(partner_id).build();
        store.create_subscription(&r).await.unwrap();
        let (status, v) = partner.post(&format!("/subscriptions/{}/cancel", r.id().as_str()), &json!({}), None).await;
        assert_eq!(status, 200, "{v}");
    }
    n
}

/// The distinct event ids the receiver got, each with a good signature by our own verifier.
fn received_ids(receiver: &Receiver) -> BTreeSet<String> {
    receiver.received().iter().filter(|r| r.verified && r.answered < 300).map(|r| r.id.clone()).collect()
}

async fn deliveries_of(partner: &Partner, endpoint: &str) -> Vec<Value> {
    let (status, page) = partner.get(&format!("/webhook-endpoints/{endpoint}/deliveries?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

async fn sweep(stack: &LocalStack, now: Timestamp) -> Value {
    let report = stack.functions.deliver_sweep(Some(&now.to_string())).await.unwrap();
    stack.drain_webhooks().await;
    report
}

#[tokio::test]
async fn every_event_of_a_year_of_journeys_reaches_the_partner_once_and_the_pypi_library_verifies_it() {
    let stack = stack().await;
    let bus = stack.provisioned.buses.values().next().unwrap().clone();
    let tap = paycycle_e2e::EventTap::attach(&stack.moto.sdk_config().await, &bus, "webhooks-tap").await;
    let receiver = Receiver::start(0, false).await.unwrap();
    let partner = Partner::new(stack.api_url(), stack.create_api_key("webhooks", "default").await.unwrap());
    let (endpoint, secret) = register(&partner, &receiver).await;

    let mut sink = |_: String| {};
    let report = journey::run(&stack, None, &mut sink).await.unwrap();
    assert!(report.reconciliation.differences.is_empty());
    stack.drain_webhooks().await;

    let published: BTreeMap<String, Value> =
        tap.drain().await.into_iter().map(|e| (e["detail"]["id"].as_str().unwrap().to_string(), e)).collect();
    assert!(published.len() > 80, "a year of three customers publishes many events: {}", published.len());
    let received = receiver.received();
    let ids: BTreeSet<String> = received.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, published.keys().cloned().collect(), "every event reached the receiver");
    assert!(received.iter().all(|r| r.verified && r.answered == 204));
    let verdicts = pypi_verify(&[&secret], &received);
    assert!(verdicts.iter().all(|v| v == &[true]), "the PyPI verifier refused a delivery: {verdicts:?}");
    // The body is the event as published, in its catalog schema, with the subscription's version.
    for r in &received {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body, published[&r.id]["detail"]);
        let kind = body["type"].as_str().unwrap();
        paycycle_e2e::OpenApi::get().check_event(&json!({"detail-type": kind, "detail": body})).unwrap();
        if kind.starts_with("subscription.") {
            assert!(body["data"]["version"].as_u64().unwrap() >= 1);
        }
    }
    let log = deliveries_of(&partner, &endpoint).await;
    assert!(log.iter().all(|d| d["status"] == "delivered" && d["attempt_count"] == 1), "{log:#?}");

    // GET /events lists the same events, page by page, and filters by type.
    let mut listed = BTreeSet::new();
    let mut path = "/events?limit=25".to_string();
    loop {
        let (status, page) = partner.get(&path).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/events?limit=25&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(listed, ids);
    let (_, renewed) = partner.get("/events?type=subscription.renewed&limit=100").await;
    let renewed = renewed["data"].as_array().unwrap();
    assert!(!renewed.is_empty() && renewed.iter().all(|e| e["type"] == "subscription.renewed"));
}

#[tokio::test]
async fn a_receiver_down_for_two_days_gets_every_event_after_it_recovers() {
    let stack = stack().await;
    let receiver = Receiver::start(0, false).await.unwrap();
    let partner = Partner::new(stack.api_url(), stack.create_api_key("webhooks", "p_outage").await.unwrap());
    let (endpoint, secret) = register(&partner, &receiver).await;
    receiver.go_down();
    let start = Timestamp::now();
    let mut n = make_events(&stack, &partner, "p_outage", 4).await;
    // One subscription changed three times while the receiver is down: its events come back in
    // no particular order, and a receiver that keeps the highest version ends where paycycle is.
    let store = stack.store().await;
    let r = paycycle_fixtures::subscription(&paycycle::ids::new_id("sub")).partner("p_outage").build();
    store.create_subscription(&r).await.unwrap();
    for action in ["pause", "resume", "cancel"] {
        let (status, v) = partner.post(&format!("/subscriptions/{}/{action}", r.id().as_str()), &json!({}), None).await;
        assert_eq!(status, 200, "{v}");
        n += 1;
    }
    stack.drain_webhooks().await;
    // Down for two days: each sweep tries what is due, and every try finds the port closed.
    for hours in [1, 3, 6, 12, 18, 24, 30, 36, 42, 48] {
        sweep(&stack, start.checked_add(SignedDuration::from_hours(hours)).unwrap()).await;
    }
    assert!(receiver.received().is_empty());
    let log = deliveries_of(&partner, &endpoint).await;
    assert_eq!(log.len(), n);
    for d in &log {
        assert_eq!(d["status"], "pending", "{d}");
        assert!(d["attempt_count"].as_u64().unwrap() >= 5, "retried while down: {d}");
        assert!(d["attempts"].as_array().unwrap().iter().all(|a| a["status_code"].is_null() && a["error"].is_string()));
    }
    receiver.come_back().await.unwrap();
    // Every retry of the schedule is at most six hours after the last one.
    let report = sweep(&stack, start.checked_add(SignedDuration::from_hours(48 + 7)).unwrap()).await;
    assert_eq!(report["delivered"], n as u64, "{report}");
    assert_eq!(received_ids(&receiver).len(), n);
    let verdicts = pypi_verify(&[&secret], &receiver.received());
    assert!(verdicts.iter().all(|v| v == &[true]), "{verdicts:?}");
    let log = deliveries_of(&partner, &endpoint).await;
    assert!(
        log.iter()
            .all(|d| d["status"] == "delivered"
                && d["attempts"].as_array().unwrap().last().unwrap()["status_code"] == 204)
    );
    let (_, ep) = partner.get(&format!("/webhook-endpoints/{endpoint}")).await;
    assert_eq!(ep["status"], "enabled", "two days is inside the retry window: {ep}");
    let mut latest: Option<(u64, String)> = None;
    for got in receiver.received() {
        let body: Value = serde_json::from_str(&got.body).unwrap();
        if body["data"]["subscription_id"] != r.id().as_str() {
            continue;
        }
        let version = body["data"]["version"].as_u64().unwrap();
        if latest.as_ref().is_none_or(|(v, _)| version > *v) {
            latest = Some((version, body["data"]["state"].as_str().unwrap().to_string()));
        }
    }
    let stored = store.get_subscription(r.id()).await.unwrap().unwrap();
    assert_eq!(latest, Some((stored.version, "canceled".to_string())), "highest version wins, whatever the order");
}

#[tokio::test]
async fn a_rotated_secret_keeps_verifying_during_the_overlap_and_redeliver_sends_again() {
    let stack = stack().await;
    let receiver = Receiver::start(0, false).await.unwrap();
    let partner = Partner::new(stack.api_url(), stack.create_api_key("webhooks", "p_rotate").await.unwrap());
    let (endpoint, old) = register(&partner, &receiver).await;
    let (status, rotated) =
        partner.post(&format!("/webhook-endpoints/{endpoint}/rotate"), &json!({"overlap_seconds": 3600}), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    // A receiver that still has only the old secret keeps verifying during the overlap.
    make_events(&stack, &partner, "p_rotate", 1).await;
    stack.drain_webhooks().await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(pypi_verify(&[&old, &new], &got), vec![vec![true, true]], "both secrets sign during the overlap");

    // Redeliver: the same event (same webhook-id) again, now.
    let (_, events) = partner.get("/events").await;
    let event_id = events["data"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = partner.post(&format!("/events/{event_id}/redeliver"), &json!({}), None).await;
    assert_eq!((status, v["queued_for"].clone()), (202, json!([endpoint])), "{v}");
    stack.drain_webhooks().await;
    let got = receiver.received();
    assert_eq!(got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [event_id.as_str(), event_id.as_str()]);
    assert_eq!(pypi_verify(&[&new], &got[1..]), vec![vec![true]]);
    let (status, _) = partner.post("/events/evt_unknown/redeliver", &json!({}), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn private_targets_are_refused_and_a_misbehaving_endpoint_cannot_stall_the_deliverer() {
    let stack = stack().await;
    let partner = Partner::new(stack.api_url(), stack.create_api_key("webhooks", "p_hostile").await.unwrap());
    for url in ["https://169.254.169.254/latest/meta-data/", "https://10.1.2.3/hook", "http://example.com/hook"] {
        let (status, v) = partner.post("/webhook-endpoints", &json!({"url": url}), None).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_url")), "{url}: {v}");
    }
    let receiver = Receiver::start(0, false).await.unwrap();
    let (endpoint, _) = register(&partner, &receiver).await;
    let start = Timestamp::now();
    let modes = [
        Mode::Fail(500),
        Mode::Redirect("http://169.254.169.254/".into()),
        Mode::Hang(std::time::Duration::from_secs(30)),
        Mode::Endless,
    ];
    let mut now = start;
    for (i, mode) in modes.iter().enumerate() {
        receiver.set_mode(mode.clone());
        if i == 0 {
            make_events(&stack, &partner, "p_hostile", 1).await;
            stack.drain_webhooks().await;
        } else {
            now = now.checked_add(SignedDuration::from_hours(7)).unwrap();
            sweep(&stack, now).await;
        }
    }
    let log = deliveries_of(&partner, &endpoint).await;
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{log:#?}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[1]["status_code"], 302);
    assert!(attempts[1]["response_body"].as_str().unwrap().contains("not followed"));
    assert!(attempts[2]["status_code"].is_null() && attempts[2]["error"].as_str().unwrap().contains("timed out"));
    assert!(attempts[2]["duration_ms"].as_u64().unwrap() <= 11_000, "{}", attempts[2]);
    assert_eq!(attempts[3]["status_code"], 200, "an endless 200 is an answer: {}", attempts[3]);
    assert_eq!(attempts[3]["response_body"].as_str().unwrap().len(), 1024, "only the first KiB is read");
    assert_eq!(log[0]["status"], "delivered");
}

/// Every event any test publishes on the local stack is checked against its catalog schema on its
/// way to the partners (the stack fails on drop otherwise): an event off its schema is caught.
#[tokio::test]
async fn an_event_off_its_catalog_schema_is_caught_on_the_local_stack() {
    let stack = stack().await;
    let bus = stack.provisioned.buses.values().next().unwrap().clone();
    let events = aws_sdk_eventbridge::Client::new(&stack.moto.sdk_config().await);
    let detail = json!({"id": "evt_0123456789abcdef01234567", "type": "subscription.renewed",
        "occurred_at": "2027-02-01T00:00:00Z", "data": {"partner_id": "p_schema", "subscription_id": "sub_1"}});
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("paycycle")
        .detail_type("subscription.renewed")
        .detail(detail.to_string())
        .event_bus_name(&bus)
        .build();
    events.put_events().entries(entry).send().await.unwrap();
    stack.drain_webhooks().await;
    let caught = std::mem::take(&mut *stack.sqs_feeder.catalog_violations.lock().unwrap());
    assert_eq!(caught.len(), 1, "{caught:?}");
    assert!(caught[0].contains("subscription.renewed") && caught[0].contains("required"), "{caught:?}");
}
