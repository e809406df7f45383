//! Webhooks to partners (issue 23): how fast one `deliver` instance delivers, what each delivery
//! costs in DynamoDB and SQS requests, and how long an event takes from commit to the partner.
//!
//! - **Throughput**: events fanned out to E endpoints (all on one local receiver that verifies
//!   every signature), then every queued delivery handed to `deliver::on_batch` in SQS batches of
//!   10 — one function instance, as the event source mapping would call it. DynamoDB: Dynoxide
//!   through the real SDK (moto would measure itself); the deliveries queue counts messages in
//!   memory.
//! - **Latency**: on the local stack (moto), N subscription changes through the HTTP API; each
//!   event's time from the API's answer (the commit) to the receiver's arrival. The path is the
//!   whole pipeline: outbox → EventBridge rule → events queue → fan-out → deliveries queue →
//!   attempt. The local feeder polls each queue every 50 ms when idle (AWS long-polls), so the
//!   numbers are an upper bound of what the code adds.

use std::time::Instant;

use jiff::Timestamp;
use paycycle::standard_webhooks::SigningSecret;
use paycycle::store::Store;
use paycycle::store::delivery_queue::DeliveryQueue;
use paycycle::store::partner_webhooks::{EndpointRecord, StoredSecret};
use paycycle_dev::receiver::Receiver;
use paycycle_dev::{LocalStack, Options};
use paycycle_testkit::Template;
use serde_json::{Value, json};

use crate::stats::Summary;

#[derive(Clone, Debug)]
pub struct Throughput {
    pub events: usize,
    pub endpoints: usize,
    pub deliveries: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// DynamoDB requests per delivery (fan-out's share included), reads and writes.
    pub reads: f64,
    pub writes: f64,
    /// SQS messages per delivery sent to the deliveries queue, and SendMessageBatch calls per event.
    pub messages: f64,
    pub batches_per_event: f64,
    pub verified: usize,
}

#[derive(Clone, Debug)]
pub struct Latency {
    pub events: usize,
    pub ms: Summary,
}

fn envelope(i: usize, partner: &str) -> Value {
    let id = format!("evt_{:024x}", i);
    json!({
        "version": "0", "id": format!("eb-{i}"), "detail-type": "subscription.renewed", "source": "paycycle",
        "time": "2027-01-01T00:00:00Z",
        "detail": {"id": id, "type": "subscription.renewed", "occurred_at": "2027-01-01T00:00:00Z",
                   "data": {"subscription_id": format!("sub_{i}"), "partner_id": partner, "customer_id": "c",
                            "state": "active", "period": 1, "next_attempt_at": null, "payment_id": "pay_1",
                            "amount": 9900, "version": 3}}
    })
}

/// `events` events to `endpoints` endpoints of one partner, delivered by one instance.
pub async fn throughput(dynamodb_endpoint: &str, events: usize, endpoints: usize) -> Result<Throughput, String> {
    let sdk = paycycle_testkit::moto::sdk_config_for(dynamodb_endpoint).await;
    let template = Template::load().map_err(|e| e.to_string())?;
    let mut def = template.table().map_err(|e| e.to_string())?;
    def.stream_view_type = None;
    let prefix = paycycle_testkit::provision::unique_prefix();
    let (table, _, _) =
        paycycle_testkit::provision::provision_table_from(&sdk, def, &prefix).await.map_err(|e| e.to_string())?;
    let receiver = Receiver::start(0, false).await.map_err(|e| e.to_string())?;
    let secret = SigningSecret::generate();
    receiver.trust(vec![secret.clone()]);
    let deps = deliver::Deps {
        store: Store::new(&sdk, &table),
        queue: DeliveryQueue::in_memory(),
        dead_letters: None,
        sender: deliver::Sender::new(true),
        settings: deliver::Settings { allow_time_travel: true, ..deliver::Settings::default() },
    };
    let partner = "bench_partner";
    for i in 0..endpoints {
        let endpoint = EndpointRecord::new(
            format!("we_bench{i:04}"),
            partner,
            receiver.url(),
            Vec::new(),
            StoredSecret::new(secret.expose()),
            Timestamp::now(),
        );
        deps.store.create_endpoint(&endpoint).await.map_err(|e| e.to_string())?;
    }
    let counted = deps.store.counter.snapshot();
    let started = Instant::now();
    // The events queue: batches of 10 events per invocation.
    let event_messages: Vec<String> = (0..events).map(|i| envelope(i, partner).to_string()).collect();
    for batch in event_messages.chunks(10) {
        let failed = deliver::on_batch(&deps, sqs_event(batch), Timestamp::now()).await;
        if !failed.batch_item_failures.is_empty() {
            return Err(format!("{} events failed to fan out", failed.batch_item_failures.len()));
        }
    }
    // The deliveries queue: batches of 10 deliveries per invocation.
    let keys = deps.queue.sent();
    let messages: Vec<String> = keys.iter().map(|k| serde_json::to_string(k).unwrap_or_default()).collect();
    for batch in messages.chunks(10) {
        let failed = deliver::on_batch(&deps, sqs_event(batch), Timestamp::now()).await;
        if !failed.batch_item_failures.is_empty() {
            return Err(format!("{} deliveries failed", failed.batch_item_failures.len()));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let store = deps.store.counter.snapshot().since(&counted);
    let received = receiver.received();
    let deliveries = events * endpoints;
    if received.len() != deliveries {
        return Err(format!("{} deliveries arrived, {deliveries} expected", received.len()));
    }
    let n = deliveries as f64;
    Ok(Throughput {
        events,
        endpoints,
        deliveries,
        seconds,
        per_second: n / seconds,
        reads: store.reads() as f64 / n,
        writes: (store.total_requests() - store.reads()) as f64 / n,
        messages: keys.len() as f64 / n,
        batches_per_event: endpoints.div_ceil(10) as f64,
        verified: received.iter().filter(|r| r.verified).count(),
    })
}

fn sqs_event(bodies: &[String]) -> aws_lambda_events::event::sqs::SqsEvent {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(json!({"Records": records})).unwrap_or_default()
}

/// Commit → delivery on the local stack, for `events` subscription cancels one after another.
pub async fn latency(events: usize) -> Result<Latency, String> {
    let stack = LocalStack::start(Options { api_port: 0, own_moto: true, ..Options::default() })
        .await
        .map_err(|e| e.to_string())?;
    let receiver = Receiver::start(0, false).await.map_err(|e| e.to_string())?;
    let key = stack.create_api_key("bench", "bench_latency").await.map_err(|e| e.to_string())?;
    paycycle_dev::receiver::register(&stack.api_url(), &key, &receiver).await?;
    let store = stack.store().await;
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(events);
    for _ in 0..events {
        let record = paycycle_fixtures::subscription(&paycycle::ids::new_id("sub")).partner("bench_latency").build();
        store.create_subscription(&record).await.map_err(|e| e.to_string())?;
        let before = receiver.received().len();
        let response = http
            .post(format!("{}/subscriptions/{}/cancel", stack.api_url(), record.id().as_str()))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("cancel answered {}", response.status()));
        }
        let committed = Instant::now();
        let deadline = committed + std::time::Duration::from_secs(30);
        while receiver.received().len() == before {
            if Instant::now() > deadline {
                return Err("an event did not arrive within 30 s".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        samples.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Latency { events, ms: Summary::of(&samples) })
}
