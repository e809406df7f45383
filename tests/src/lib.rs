//! End-to-end tests live in `tests/` of this crate: they start the local stack of `tools/dev`
//! (moto + PG sandbox + every function behind the HttpApi routes on 127.0.0.1) and talk to it over
//! HTTP. This library holds what they share: driving the PG sandbox as a customer and as its admin.

use paycycle::pg::Payer;
use paycycle::pg::payple::{PaypleClient, WindowWork};
use serde_json::{Value, json};

/// The PG sandbox seen from a test: [`paycycle_dev::clients::Sandbox`] that insists on success.
pub struct SandboxDriver {
    pub inner: paycycle_dev::clients::Sandbox,
    pub base: String,
    pub http: reqwest::Client,
}

impl SandboxDriver {
    pub fn new(base: impl Into<String>) -> Self {
        let inner = paycycle_dev::clients::Sandbox::new(base);
        Self { base: inner.base.clone(), http: inner.http.clone(), inner }
    }

    pub fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    /// POSTs to an admin route and insists on success.
    pub async fn admin(&self, path: &str, body: Value) {
        self.inner.admin(path, body).await.unwrap();
    }

    /// What the PG believes happened.
    pub async fn ledger(&self) -> Value {
        self.inner.ledger().await.unwrap()
    }

    /// A first StepPay self payment with `CARD_BILL`: its idKey is the billing key.
    pub async fn steppay_billing_key(&self) -> String {
        let v = self.inner.steppay_sdk_pay(&json!({"amount": 0, "method": "CARD_BILL"})).await.unwrap();
        v["idKey"].as_str().expect("idKey").to_string()
    }

    /// A card registered in Payple's window (AUTH): its `PCD_PAYER_ID` is the billing key.
    pub async fn payple_billing_key(&self, payple: &PaypleClient, payer: &Payer) -> String {
        // Setup, not the behaviour under test: a partner auth that times out on a loaded machine
        // (some tests run the PG client with a 1 s timeout) is asked again.
        let mut params = None;
        for _ in 0..3 {
            match payple.window_params(WindowWork::Auth, "reg", "Pro", None, payer, "http://127.0.0.1/r", "e2e").await {
                Ok(p) => {
                    params = Some(p);
                    break;
                }
                Err(e) => eprintln!("window auth failed, asked again: {e}"),
            }
        }
        let params = params.expect("window auth");
        let v = self.inner.payple_window(&serde_json::to_value(&params).unwrap(), None).await.unwrap();
        v["PCD_PAYER_ID"].as_str().expect("PCD_PAYER_ID").to_string()
    }

    /// The customer in Payple's window with the checkout's parameters.
    pub async fn payple_window(&self, params: &Value, action: Option<&str>) -> serde_json::Map<String, Value> {
        self.inner.payple_window(params, action).await.unwrap()
    }

    /// The StepPay SDK's payment in the browser with the checkout's parameters.
    pub async fn steppay_sdk_pay(&self, sdk: &Value) -> Value {
        self.inner.steppay_sdk_pay(sdk).await.unwrap()
    }

    /// Defines a StepPay price plan for managed orders.
    pub async fn steppay_price(&self, product: &str, price: &str, amount: i64) {
        self.inner.steppay_price(product, price, amount).await.unwrap()
    }

    /// Opens the StepPay pay page; the redirect's query (order_id, order_code, status).
    pub async fn steppay_pay_page(&self, pay_url: &str) -> std::collections::HashMap<String, String> {
        self.inner.steppay_pay_page(pay_url).await.unwrap()
    }
}

/// An SQS queue subscribed (through an EventBridge rule) to everything paycycle publishes on a
/// bus: tests count the events consumers would get.
pub struct EventTap {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl EventTap {
    /// Creates the queue and the rule `source = paycycle` on `bus`.
    pub async fn attach(sdk: &aws_config::SdkConfig, bus: &str, name: &str) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let queue_url =
            sqs.create_queue().queue_name(name).send().await.expect("queue").queue_url().expect("url").to_string();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let arn = attrs.attributes().expect("attributes")[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        let events = aws_sdk_eventbridge::Client::new(sdk);
        events
            .put_rule()
            .name(name)
            .event_bus_name(bus)
            .event_pattern(r#"{"source":["paycycle"]}"#)
            .send()
            .await
            .expect("rule");
        events
            .put_targets()
            .rule(name)
            .event_bus_name(bus)
            .targets(aws_sdk_eventbridge::types::Target::builder().id("tap").arn(arn).build().expect("target"))
            .send()
            .await
            .expect("target");
        Self { sqs, queue_url }
    }

    /// Every event received so far (each EventBridge envelope), removed from the queue.
    pub async fn drain(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let r = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let messages = r.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                if let Some(body) = m.body() {
                    out.push(serde_json::from_str(body).unwrap_or(Value::Null));
                }
                if let Some(handle) = m.receipt_handle() {
                    let _ = self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
    }
}

/// A partner talking to the local stack's HTTP API with its API key; every answer is checked
/// against `openapi.yaml`.
pub struct Partner {
    pub api: paycycle_dev::clients::Api,
    pub key: String,
}

impl Partner {
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Self {
        let key = key.into();
        let mut api = paycycle_dev::clients::Api::new(base, key.clone());
        api.checker = Some(contract_checker());
        Self { api, key }
    }

    /// Sends a request; the answer's status and JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        self.api.call(method, path, body, idempotency_key).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), idempotency_key).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    /// `POST /checkouts` that must succeed.
    pub async fn checkout(&self, body: &Value) -> Value {
        self.api.checkout(body).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The OpenAPI contract as a [`paycycle_dev::clients::Checker`].
pub fn contract_checker() -> paycycle_dev::clients::Checker {
    Box::new(|method, path, status, body| OpenApi::get().check(method, path, status, body))
}

pub use paycycle_dev::contract::OpenApi;

/// Every event of `events` (EventBridge envelopes) matches its documented schema, and all the
/// events of one type carry the same fields, whichever code path produced them.
pub fn check_events(events: &[Value]) -> Result<(), String> {
    let mut shapes: std::collections::BTreeMap<String, (Vec<String>, String)> = Default::default();
    for e in events {
        OpenApi::get().check_event(e)?;
        let kind = e["detail-type"].as_str().unwrap_or_default().to_string();
        let mut fields: Vec<String> =
            e["detail"]["data"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        fields.sort();
        match shapes.get(&kind) {
            Some((first, example)) if *first != fields => {
                return Err(format!("{kind} has two shapes: {first:?} ({example}) and {fields:?} ({})", e["detail"]));
            }
            Some(_) => {}
            None => {
                shapes.insert(kind, (fields, e["detail"].to_string()));
            }
        }
    }
    Ok(())
}

/// Which of `secrets` verifies each delivery, by the independent `standardwebhooks` package from
/// PyPI (`tests/verify_webhooks.py`, run with the `.venv` that `make bootstrap` installs).
pub fn pypi_verify(secrets: &[&str], deliveries: &[paycycle_dev::receiver::Received]) -> Vec<Vec<bool>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.venv/bin/python");
    let input = json!({
        "secrets": secrets,
        "deliveries": deliveries.iter().map(|d| json!({
            "id": d.id, "timestamp": d.timestamp, "signature": d.signature, "body": d.body,
        })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(&python)
        .arg(root.join("verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (run `make bootstrap`): {e}", python.display()));
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("the verifier runs");
    assert!(out.status.success(), "the PyPI verifier failed: {}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).expect("the verifier answers JSON")
}
