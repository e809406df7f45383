//! Our PG clients read what the PGs' own documents show: every example body transcribed in
//! `pg-shapes/` (the documents' own samples) that the client receives parses, keeping what it
//! names. The live side — every body the client sends and the sandbox answers — is checked by the
//! sandbox against the same shapes in every local-stack test (`pg-shapes` crate, issue #21 §2).

use paycycle::pg::payple::transformers::PaypleResult;
use paycycle::pg::steppay::webhook::{self as steppay_webhook, SteppayWebhook};
use pg_shapes::Shapes;
use serde_json::Value;

fn examples(shapes: &Shapes, file: &str) -> Vec<Value> {
    let examples = shapes.schema(file).and_then(|s| s["examples"].as_array().cloned()).unwrap_or_default();
    assert!(!examples.is_empty(), "{file} has no documented example to read");
    examples
}

#[test]
fn every_documented_payple_answer_and_webhook_parses_with_its_oid_and_result() {
    let shapes = Shapes::load_default().unwrap();
    let files = [
        "payple/repay-response.json",
        "payple/confirm-response.json",
        "payple/lookup-response.json",
        "payple/refund-response.json",
        "payple/user-response.json",
        "payple/webhook.json",
    ];
    for file in files {
        for example in examples(&shapes, file) {
            let body = example.to_string();
            let parsed = PaypleResult::parse("application/json", body.as_bytes())
                .unwrap_or_else(|e| panic!("{file}: the document's example does not parse: {e}\n{body}"));
            parsed.status().unwrap_or_else(|e| panic!("{file}: PCD_PAY_RST unread: {e}"));
            let oid = example.get("PCD_PAY_OID").map(|v| v.as_str().map(str::to_owned).unwrap_or(v.to_string()));
            assert_eq!(parsed.oid, oid, "{file}");
        }
    }
}

#[test]
fn every_documented_steppay_webhook_parses() {
    let shapes = Shapes::load_default().unwrap();
    for example in examples(&shapes, "steppay/webhook-self.json") {
        match steppay_webhook::parse("application/json", example.to_string().as_bytes()) {
            Ok(SteppayWebhook::Payment(w)) => assert_eq!(Some(w.id_key.as_str()), example["idKey"].as_str()),
            other => panic!("the seed's self webhook: {other:?}"),
        }
    }
    for example in examples(&shapes, "steppay/webhook-v2.json") {
        match steppay_webhook::parse("application/json", example.to_string().as_bytes()) {
            Ok(SteppayWebhook::V2(_)) => {}
            other => panic!("StepPay's v2 example ({}): {other:?}", example["event"]),
        }
    }
}
