//! Real resources for `make fuzz-api` (`paycycle-dev serve --seed`): paid subscriptions (one per
//! lifecycle operation, so a fuzzed cancel does not starve the others), their payments, an open
//! checkout, webhook endpoints and events — so that every operation is fuzzed on something that
//! exists, not only on 404s.

use http::Method;
use serde_json::{Value, json};

use crate::LocalStack;
use crate::clients::{Api, Sandbox};

/// A Payple customer through checkout, the window (PAY) and verify: (subscription id, payment id).
async fn paid_subscription(api: &Api, sandbox: &Sandbox, n: usize) -> Result<(String, String), String> {
    let body = json!({
        "pg": "payple",
        "customer": {"id": format!("cus_fuzz_{n}"), "name": "퍼즈"},
        "plan": {"name": "Pro", "amount": 9_900, "interval": "month"},
        "return_url": "https://shop.example.com/return",
    });
    let checkout = api.checkout(&body).await?;
    let mut result = sandbox.payple_window(&checkout["payple"], None).await?;
    result.insert("checkout_id".into(), checkout["id"].clone());
    let v = api.expect(200, Method::POST, "/payments/verify", Some(&Value::Object(result)), None).await?;
    let id = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string).ok_or(format!("verify: no {p} in {v}"));
    Ok((id("/subscription/id")?, id("/payment/id")?))
}

/// Seeds the resources and answers their ids by the operation that should use them.
pub async fn fuzz_fixtures(stack: &LocalStack, key: &str) -> Result<Value, String> {
    let api = Api::new(stack.api_url(), key);
    let sandbox = Sandbox::new(stack.sandbox.base_url());
    let mut subscriptions = Vec::new();
    let mut payments = Vec::new();
    for n in 0..6 {
        let (subscription, payment) = paid_subscription(&api, &sandbox, n).await?;
        subscriptions.push(subscription);
        payments.push(payment);
    }
    let open = api
        .checkout(&json!({"pg": "steppay_self", "customer": {"id": "cus_fuzz_open", "name": "퍼즈"},
                          "plan": {"name": "Pro", "amount": 9_900, "interval": "month"}}))
        .await?;
    let mut endpoints = Vec::new();
    for n in 0..2 {
        let (status, v) = api
            .post("/webhook-endpoints", &json!({"url": format!("https://hooks{n}.example.com/paycycle")}), None)
            .await?;
        if status != 201 {
            return Err(format!("POST /webhook-endpoints answered {status}: {v}"));
        }
        endpoints.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    stack.drain_webhooks().await;
    let events = api.expect(200, Method::GET, "/events?limit=1", None, None).await?;
    Ok(json!({
        "subscription": subscriptions[0],
        "cancel": subscriptions[1],
        "pause": subscriptions[2],
        "resume": subscriptions[3],
        "plan": subscriptions[4],
        "payment": payments[0],
        "refund": payments[5],
        "customer": "cus_fuzz_0",
        "checkout": open["id"],
        "endpoint": endpoints[0],
        "endpoint_to_delete": endpoints[1],
        "event": events["data"][0]["id"],
    }))
}
