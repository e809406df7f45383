//! verify's Lambda entry takes both of its triggers' event shapes: an HTTP API (v2) request and a
//! DynamoDB stream batch (answered with `batchItemFailures`). Against moto's DynamoDB; no PG call
//! is needed for these cases.

use serde_json::json;

async fn deps() -> (paycycle_fixtures::Fresh, verify::Deps) {
    let fresh = paycycle_fixtures::Fresh::dynamodb().await;
    // Nothing listens there: a PG call would fail, and none must be made.
    let config = fresh.config("http://127.0.0.1:9", None);
    let pgs = paycycle::pg::Registry::new(&config.pg, &paycycle_fixtures::local_secrets());
    let deps = verify::Deps {
        store: fresh.store.clone(),
        pgs,
        publisher: fresh.publisher.clone(),
        vault: fresh.vault.clone(),
    };
    (fresh, deps)
}

fn event(payload: serde_json::Value) -> lambda_runtime::LambdaEvent<serde_json::Value> {
    let mut ctx = lambda_runtime::Context::default();
    ctx.request_id = "req-7".into();
    lambda_runtime::LambdaEvent::new(payload, ctx)
}

#[tokio::test]
async fn an_http_api_request_gets_an_http_api_response() {
    let (_moto, deps) = deps().await;
    let mut request: serde_json::Value =
        serde_json::from_str(include_str!("../../webhook-ingest/tests/fixtures/apigw_v2_steppay_webhook.json"))
            .unwrap();
    request["rawPath"] = json!("/payments/verify");
    request["requestContext"]["http"]["path"] = json!("/payments/verify");
    let out = verify::dispatch(&deps, event(request)).await.unwrap();
    assert_eq!(out["statusCode"], 401, "no API key: {out}");
    let body: serde_json::Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["request_id"].as_str()),
        (Some("unauthorized"), Some("req-7"))
    );
    assert_eq!(out["headers"]["content-type"], "application/json");
}

#[tokio::test]
async fn a_stream_batch_reports_the_record_that_cannot_be_read_and_skips_other_entities() {
    let (_moto, deps) = deps().await;
    // Records as Lambda delivers them (aws_lambda_events' DynamoDB stream event).
    let record = |seq: &str, image: serde_json::Value| {
        json!({"eventID": seq, "eventName": "INSERT", "eventSource": "aws:dynamodb", "awsRegion": "ap-northeast-2",
               "dynamodb": {"SequenceNumber": seq, "NewImage": image, "SizeBytes": 100, "StreamViewType": "NEW_IMAGE"}})
    };
    // A webhook event whose item is not one (no PG, no body) is reported alone: the records
    // before it were handled, the ones after it come again with it.
    let batch = json!({"Records": [
        record("100", json!({"pk": {"S": "SUB#sub_1"}, "sk": {"S": "SUB"}, "entity": {"S": "subscription"}})),
        record("200", json!({"pk": {"S": "WH#steppay#x"}, "sk": {"S": "WH"}, "entity": {"S": "webhook_event"}})),
        record("300", json!({"pk": {"S": "WH#steppay#y"}, "sk": {"S": "WH"}, "entity": {"S": "webhook_event"}})),
    ]});
    let out = verify::dispatch(&deps, event(batch)).await.unwrap();
    assert_eq!(out, json!({"batchItemFailures": [{"itemIdentifier": "200"}]}));
    // A batch that is not a stream event (an attribute type DynamoDB does not have) is a function
    // error: the event source mapping retries and bisects it; nothing is skipped silently.
    let corrupt = json!({"Records": [record("400", json!({"pk": {"Q": "?"}}))]});
    assert!(verify::dispatch(&deps, event(corrupt)).await.is_err());
    let modify = json!({"Records": [{"eventID": "1", "eventName": "MODIFY", "awsRegion": "ap-northeast-2",
        "dynamodb": {"SequenceNumber": "1", "NewImage": {}, "SizeBytes": 1}}]});
    assert_eq!(verify::dispatch(&deps, event(modify)).await.unwrap(), json!({"batchItemFailures": []}));
}
