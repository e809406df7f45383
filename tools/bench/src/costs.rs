//! DynamoDB requests and write units per renewal, per webhook ingested and per refund, and
//! webhook-ingest's own time per request — measured on the local stack (moto through the real
//! SDK) with each function's request counter (an SDK interceptor, `paycycle::store::metrics`).
//!
//! Write units follow DynamoDB's pricing rules: 1 WCU per 1 KB (rounded up) of each item written,
//! 2 per KB when written inside TransactWriteItems (a ConditionCheck item counts as a write there).
//! Item sizes are read back after the run (attribute names + values in UTF-8, DynamoDB's rule).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::pg::PgMode;
use paycycle::store::Counts;
use paycycle_dev::clients::{Api, Sandbox};
use paycycle_dev::{LocalStack, seed_subscription};
use serde_json::json;

use crate::stats::Summary;

/// Requests per operation kind, averaged over `n` operations.
#[derive(Clone, Debug)]
pub struct PerOp {
    pub what: String,
    pub n: u64,
    pub counts: Counts,
}

impl PerOp {
    pub fn reads(&self) -> f64 {
        self.counts.reads() as f64 / self.n as f64
    }
    pub fn writes(&self) -> f64 {
        let w = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"];
        w.iter().map(|op| self.counts.requests_of(op)).sum::<u64>() as f64 / self.n as f64
    }
    pub fn requests(&self) -> f64 {
        self.counts.total_requests() as f64 / self.n as f64
    }
    pub fn written_items(&self) -> f64 {
        self.counts.written_items as f64 / self.n as f64
    }
    pub fn write_units(&self) -> f64 {
        self.counts.write_units as f64 / self.n as f64
    }
    pub fn breakdown(&self) -> String {
        self.counts
            .requests
            .iter()
            .map(|(op, c)| format!("{op} {:.2}", *c as f64 / self.n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub struct Costs {
    pub per_op: Vec<PerOp>,
    /// webhook-ingest: handler time minus time on the wire to DynamoDB, per request (ms).
    pub ingest_overhead_ms: Summary,
    pub ingest_total_ms: Summary,
    pub ingest_wire_ms: Summary,
}

fn delta(counter: &Arc<paycycle::store::RequestCounter>, before: &Counts) -> Counts {
    counter.snapshot().since(before)
}

pub async fn measure(stack: &LocalStack, renewals: usize, webhooks: usize, refunds: usize) -> Result<Costs, String> {
    let fns = &stack.functions;
    let counter = |f: &str| fns.store_counter(f).expect("known function");
    let sandbox = Sandbox::new(stack.sandbox.base_url());
    let store = stack.store().await;
    let mut per_op = Vec::new();

    // Renewals: `renewals` StepPay self subscriptions due now, one tick.
    let card =
        sandbox.steppay_sdk_pay(&json!({"amount": 0, "method": "CARD_BILL"})).await.map_err(|e| e.to_string())?;
    let key = card["idKey"].as_str().ok_or("the sandbox gave no idKey")?.to_string();
    let anchor = Timestamp::now().checked_sub(SignedDuration::from_hours(24 * 31)).map_err(|e| e.to_string())?;
    let vault = stack.vault().await;
    let mut ids = Vec::new();
    for i in 0..renewals {
        let id = format!("sub_cost{i}");
        seed_subscription(&store, &vault, &id, PgMode::SteppaySelf, anchor, 9_900, &key).await?;
        ids.push(id);
    }
    let renew = counter("RenewFunction");
    let before = renew.snapshot();
    let report = fns.tick(None).await?;
    let charged = report["charged"].as_u64().unwrap_or(0);
    if charged != renewals as u64 {
        return Err(format!("cost run: {charged} of {renewals} renewals charged: {report}"));
    }
    per_op.push(PerOp { what: "renewal (renew)".into(), n: renewals as u64, counts: delta(&renew, &before) });

    // Webhooks: Payple results (as Payple posts them) through the HTTP route.
    let ingest = counter("WebhookIngestFunction");
    let verify = counter("VerifyFunction");
    stack.drain_stream().await;
    let (before_ingest, before_verify) = (ingest.snapshot(), verify.snapshot());
    let http = reqwest::Client::new();
    for i in 0..webhooks {
        let status = http
            .post(format!("{}/webhooks/payple", stack.api_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(payple_result(i))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status();
        if status != 200 {
            return Err(format!("webhook {i}: HTTP {status}"));
        }
    }
    let ingested = delta(&ingest, &before_ingest);
    stack.drain_stream().await;
    per_op.push(PerOp { what: "webhook ingested (webhook-ingest)".into(), n: webhooks as u64, counts: ingested });
    per_op.push(PerOp {
        what: "webhook verified (verify, via the stream; unknown order → rejected)".into(),
        n: webhooks as u64,
        counts: delta(&verify, &before_verify),
    });

    // Refunds: partial refunds of the renewals' payments through the API.
    let api_key = stack.create_api_key("bench", "default").await.map_err(|e| e.to_string())?;
    let api = Api::new(stack.api_url(), api_key);
    let refund = counter("RefundFunction");
    let mut payments = Vec::new();
    for id in ids.iter().take(refunds) {
        let sid = SubscriptionId::parse(id).map_err(|e| e.to_string())?;
        let p = store.payments_of_subscription(&sid).await.map_err(|e| e.to_string())?;
        payments.push(p.first().ok_or("renewal without a payment")?.payment_id.clone());
    }
    let before = refund.snapshot();
    for (i, payment) in payments.iter().enumerate() {
        let (status, body) = api
            .post(
                &format!("/payments/{payment}/refunds"),
                &json!({"amount": 1_000, "reason": "bench partial refund"}),
                Some(&format!("bench-refund-{i}")),
            )
            .await
            .map_err(|e| e.to_string())?;
        if status != 201 {
            return Err(format!("refund {payment}: HTTP {status} {body}"));
        }
    }
    per_op.push(PerOp { what: "partial refund (refund)".into(), n: refunds as u64, counts: delta(&refund, &before) });

    // webhook-ingest's own cost: its handler in-process, minus the time on the wire to DynamoDB.
    let deps = fns.webhook_ingest_deps();
    let (mut total, mut wire, mut own) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..webhooks {
        let req = lambda_http::Request::new(lambda_http::Body::Text(payple_result(100_000 + i)));
        let (mut parts, body) = req.into_parts();
        parts.method = http::Method::POST;
        parts.uri = "/webhooks/payple".parse().expect("uri");
        parts.headers.insert("content-type", "application/x-www-form-urlencoded".parse().expect("header"));
        let req = lambda_http::Request::from_parts(parts, body);
        let before = ingest.snapshot();
        let started = Instant::now();
        let res = webhook_ingest::handler(deps, req).await.map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        if res.status() != 200 {
            return Err(format!("in-process ingest: HTTP {}", res.status()));
        }
        let on_wire = delta(&ingest, &before).wire_nanos as f64 / 1e6;
        total.push(elapsed);
        wire.push(on_wire);
        own.push(elapsed - on_wire);
    }
    stack.drain_stream().await;
    Ok(Costs {
        per_op,
        ingest_overhead_ms: Summary::of(&own),
        ingest_total_ms: Summary::of(&total),
        ingest_wire_ms: Summary::of(&wire),
    })
}

/// A Payple payment result for an order nobody made (ingest stores it; verify rejects it).
pub fn payple_result(i: usize) -> String {
    let fields: BTreeMap<&str, String> = [
        ("PCD_PAY_RST", "success".to_string()),
        ("PCD_PAY_CODE", "0000".to_string()),
        ("PCD_PAY_MSG", "결제성공".to_string()),
        ("PCD_PAY_OID", format!("bench-order-{i}")),
        ("PCD_PAY_TYPE", "card".to_string()),
        ("PCD_PAY_WORK", "PAY".to_string()),
        ("PCD_PAY_TOTAL", "9900".to_string()),
        ("PCD_PAYER_ID", format!("bench-payer-{i}")),
        ("PCD_PAY_CARDNAME", "BC카드".to_string()),
        ("PCD_PAY_CARDNUM", "1234-****-****-5678".to_string()),
    ]
    .into_iter()
    .collect();
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}
