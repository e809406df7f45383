//! The retry schedule, and attempts on an in-memory store against a real local HTTP receiver.

use super::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use paycycle::standard_webhooks::verify;
use paycycle::store::partner_webhooks::StoredSecret;
use std::sync::Mutex;

#[test]
fn backoff_doubles_within_its_upper_half_and_is_capped() {
    for n in 1..40 {
        let full = (FIRST_DELAY.as_secs() << (n - 1).min(20)).min(MAX_DELAY.as_secs());
        for random in [0, 1, 7, u32::MAX / 3, u32::MAX] {
            let d = backoff(n, random).as_secs();
            assert!(d >= full / 2 && d <= full, "retry {n}: {d}s outside [{}, {full}]", full / 2);
        }
    }
}

fn failed(at: Timestamp) -> DeliveryAttempt {
    DeliveryAttempt { at, duration_ms: 1, status_code: Some(500), error: None, response_body: String::new() }
}

fn pending() -> DeliveryRecord {
    let event = PartnerEvent {
        event_id: "evt_1".into(),
        partner_id: "p".into(),
        event_type: "subscription.renewed".into(),
        occurred_at: "2027-01-01T00:00:00Z".parse().unwrap(),
        payload: "{}".into(),
        received_at: "2027-01-01T00:00:00Z".parse().unwrap(),
    };
    DeliveryRecord::new(&event, "we_1", event.received_at)
}

#[test]
fn a_failing_delivery_is_retried_for_at_least_three_days_then_dead_lettered() {
    for random in [0, u32::MAX] {
        let mut d = pending();
        let first: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let mut now = first;
        let mut attempts = 0;
        while d.status == DeliveryStatus::Pending {
            d = after_attempt(&d, failed(now), now, random);
            attempts += 1;
            if let Some(due) = d.due_at {
                assert!(due > now);
                now = due;
            }
            assert!(attempts < 100, "never gives up");
        }
        assert_eq!(d.status, DeliveryStatus::Failed);
        let last = d.attempts.last().unwrap().at;
        assert!(
            last.duration_since(first) >= SignedDuration::from_hours(72),
            "gave up after {:?}",
            last.duration_since(first)
        );
        assert!(last.duration_since(first) <= RETRY_WINDOW + MAX_DELAY);
        assert!((12..=40).contains(&attempts), "{attempts} attempts");
        assert_eq!(d.attempt_count, attempts);
        assert_eq!(d.due_at, None);
    }
}

#[test]
fn a_success_ends_the_schedule() {
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let d = after_attempt(&pending(), failed(now), now, 0);
    let ok = DeliveryAttempt { status_code: Some(204), ..failed(now) };
    let d = after_attempt(&d, ok, now, 0);
    assert_eq!((d.status, d.due_at, d.attempt_count), (DeliveryStatus::Delivered, None, 2));
}

/// A receiver on 127.0.0.1 that answers `status` and keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receiver(status: StatusCode) -> Receiver {
    let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let keep = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((headers, body));
                (status, "thanks")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, got, task }
}

fn deps() -> Deps {
    Deps {
        store: Store::in_memory(),
        queue: DeliveryQueue::in_memory(),
        dead_letters: Some(DeliveryQueue::in_memory()),
        sender: Sender::new(true),
        settings: Settings { allow_time_travel: true, concurrency: 4 },
    }
}

async fn endpoint(deps: &Deps, url: &str, secret: &SigningSecret, types: &[&str]) -> EndpointRecord {
    let r = EndpointRecord::new(
        format!("we_{}", paycycle::ids::random_base32(8)),
        "partner_a",
        url,
        types.iter().map(ToString::to_string).collect(),
        StoredSecret::new(secret.expose()),
        Timestamp::now(),
    );
    deps.store.create_endpoint(&r).await.unwrap();
    r
}

fn envelope(id: &str, kind: &str) -> Value {
    serde_json::json!({
        "version": "0", "id": "eb-1", "detail-type": kind, "source": "paycycle",
        "time": "2027-01-01T00:00:00Z",
        "detail": {"id": id, "type": kind, "occurred_at": "2027-01-01T00:00:00Z",
                   "data": {"partner_id": "partner_a", "subscription_id": "sub_1", "version": 3}}
    })
}

#[tokio::test]
async fn an_event_reaches_each_endpoint_that_wants_it_once_signed() {
    let deps = deps();
    let rx = receiver(StatusCode::NO_CONTENT).await;
    let secret = SigningSecret::generate();
    let all = endpoint(&deps, &rx.url, &secret, &[]).await;
    let renewals = endpoint(&deps, &rx.url, &secret, &["subscription.renewed"]).await;
    let _refunds = endpoint(&deps, &rx.url, &secret, &["refund.succeeded"]).await;
    let now = Timestamp::now();
    let report = fan_out(&deps, &envelope("evt_a", "subscription.renewed"), now).await.unwrap();
    assert_eq!((report.events, report.queued), (1, 2));
    // EventBridge and SQS deliver at least once: the repeat queues nothing new.
    for key in deps.queue.sent() {
        attempt(&deps, &key, now).await.unwrap();
    }
    let again = fan_out(&deps, &envelope("evt_a", "subscription.renewed"), now).await.unwrap();
    assert_eq!((again.repeated_events, again.queued), (1, 0));
    for key in deps.queue.sent() {
        assert_eq!(attempt(&deps, &key, now).await.unwrap().skipped, 1, "a delivered delivery is not sent again");
    }
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for (headers, body) in &got {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(h("webhook-id"), Some("evt_a"));
        let secrets = [secret.clone()];
        let now = Timestamp::now().as_second();
        verify(&secrets, h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"), body, now).unwrap();
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["data"]["version"], 3);
    }
    for ep in [&all, &renewals] {
        let page = deps.store.deliveries_of(&ep.endpoint_id, 10, None).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].status, DeliveryStatus::Delivered);
        assert_eq!(page.items[0].attempts[0].status_code, Some(204));
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_by_the_sweep_and_dead_lettered_after_the_window() {
    let deps = deps();
    let rx = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let ep = endpoint(&deps, &rx.url, &SigningSecret::generate(), &[]).await;
    let start = Timestamp::now();
    fan_out(&deps, &envelope("evt_b", "payment.failed"), start).await.unwrap();
    let key = deps.queue.sent().remove(0);
    attempt(&deps, &key, start).await.unwrap();
    // Nothing is due before the first backoff.
    assert_eq!(sweep(&deps, start, None).await.attempted, 0);
    let mut now = start;
    let mut sweeps = 0;
    while deps.store.get_delivery(&key).await.unwrap().unwrap().status == DeliveryStatus::Pending {
        now = now.checked_add(SignedDuration::from_mins(30)).unwrap();
        sweep(&deps, now, None).await;
        sweeps += 1;
        assert!(sweeps < 400);
    }
    let d = deps.store.get_delivery(&key).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(now.duration_since(start) >= SignedDuration::from_hours(72));
    assert_eq!(rx.got.lock().unwrap().len() as u32, d.attempt_count);
    assert_eq!(deps.dead_letters.as_ref().unwrap().sent(), vec![key]);
    let flagged = deps.store.get_endpoint("partner_a", &ep.endpoint_id).await.unwrap().unwrap();
    assert_eq!(flagged.status, EndpointStatus::Failing);
    assert_eq!(flagged.failing_since, Some(now));
}

#[tokio::test]
async fn a_deleted_endpoint_gets_no_more_attempts() {
    let deps = deps();
    let rx = receiver(StatusCode::OK).await;
    let ep = endpoint(&deps, &rx.url, &SigningSecret::generate(), &[]).await;
    let now = Timestamp::now();
    fan_out(&deps, &envelope("evt_c", "payment.failed"), now).await.unwrap();
    deps.store.delete_endpoint(&ep).await.unwrap();
    let key = deps.queue.sent().remove(0);
    attempt(&deps, &key, now).await.unwrap();
    assert!(rx.got.lock().unwrap().is_empty());
    assert_eq!(deps.store.get_delivery(&key).await.unwrap().unwrap().status, DeliveryStatus::Canceled);
}

/// A flag written over an endpoint read before a rotation is not lost: it is written on the
/// endpoint as it is now.
#[tokio::test]
async fn an_endpoint_flag_survives_a_concurrent_change_of_the_endpoint() {
    let deps = deps();
    let stale = endpoint(&deps, "https://hooks.example.com/x", &SigningSecret::generate(), &[]).await;
    let rotated =
        stale.rotated(StoredSecret::new(SigningSecret::generate().expose()), Timestamp::now(), SignedDuration::ZERO);
    deps.store.put_endpoint_next(stale.version, &rotated).await.unwrap();
    let now = Timestamp::now();
    flag_endpoint(&deps, &stale, Some(now)).await;
    let stored = deps.store.get_endpoint("partner_a", &stale.endpoint_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.failing_since), (EndpointStatus::Failing, Some(now)));
    assert_eq!(stored.secrets, rotated.secrets, "the rotation stays");
}

/// A sweep starts no attempt it could not finish before the Lambda deadline: what is left is
/// deferred to the next sweep, not killed mid-POST (a POST sent but never recorded).
#[tokio::test]
async fn a_sweep_starts_nothing_past_its_deadline() {
    let deps = deps();
    let rx = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    endpoint(&deps, &rx.url, &SigningSecret::generate(), &[]).await;
    let start = Timestamp::now();
    for i in 0..3 {
        fan_out(&deps, &envelope(&format!("evt_d{i}"), "payment.failed"), start).await.unwrap();
    }
    let later = start.checked_add(SignedDuration::from_mins(5)).unwrap();
    let report = sweep(&deps, later, Some(Timestamp::now())).await;
    assert_eq!((report.attempted, report.deferred), (0, 3));
    let report = sweep(&deps, later, None).await;
    assert_eq!(report.attempted, 3);
}
