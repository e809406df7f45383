//! The handler called directly with an API Gateway HTTP API (v2) event, as STYLE prescribes,
//! against moto's DynamoDB: one conditional write per webhook, repeats are no-op 200s, and bad
//! input is a JSON 4xx carrying the gateway's request id.

const FIXTURE: &str = include_str!("fixtures/apigw_v2_steppay_webhook.json");

async fn deps() -> (paycycle_fixtures::Fresh, webhook_ingest::Deps) {
    let fresh = paycycle_fixtures::Fresh::dynamodb().await;
    // No signing secret configured: StepPay v2 signatures are not checked here.
    let secrets = paycycle::config::Secrets::from_lookup(|k| match k {
        "STEPPAY_SECRET_TOKEN" | "PAYPLE_CST_ID" | "PAYPLE_CUST_KEY" | "PAYPLE_REFUND_KEY" => Some("x".into()),
        _ => None,
    })
    .unwrap();
    let deps =
        webhook_ingest::Deps { store: fresh.store.clone(), credentials: paycycle::pg::Credentials::fixed(secrets) };
    (fresh, deps)
}

fn request(body: &str, content_type: &str) -> lambda_http::Request {
    let mut event: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    event["body"] = body.into();
    event["headers"]["content-type"] = content_type.into();
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

fn json(res: &lambda_http::Response<lambda_http::Body>) -> serde_json::Value {
    match res.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

#[tokio::test]
async fn the_seed_webhook_is_stored_once_with_one_write() {
    let (_moto, deps) = deps().await;
    let req = lambda_http::request::from_str(FIXTURE).unwrap();
    let before = deps.store.counter.snapshot();
    let res = webhook_ingest::handler(&deps, req).await.unwrap();
    let used = deps.store.counter.snapshot().since(&before);
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["duplicate"], false);
    assert_eq!((used.total_requests(), used.written_items), (1, 1), "one conditional PutItem");
    let again = webhook_ingest::handler(&deps, lambda_http::request::from_str(FIXTURE).unwrap()).await.unwrap();
    assert_eq!((again.status().as_u16(), json(&again)["duplicate"].as_bool()), (200, Some(true)));
    let stored =
        deps.store.get_webhook_event(paycycle::pg::Pg::Steppay, "PAYMENT:16057932413479698c8vqQG0kMix9").await.unwrap();
    let stored = stored.unwrap();
    assert_eq!(stored.headers.get("user-agent").map(String::as_str), None, "only kept headers");
    assert_eq!(stored.body, r#"{"webHookType":"PAYMENT","orderId":1,"idKey":"16057932413479698c8vqQG0kMix9"}"#);
}

#[tokio::test]
async fn form_bodies_are_accepted_and_bad_ones_are_json_4xx_with_the_request_id() {
    let (_moto, deps) = deps().await;
    let form = "webHookType=PAYMENT&orderId=2&idKey=1605793241347aaaaaaaaaaaaaaaa";
    let res = webhook_ingest::handler(&deps, request(form, "application/x-www-form-urlencoded")).await.unwrap();
    assert_eq!(res.status(), 200);
    for (body, ct, status, code) in [
        (r#"{"webHookType":"PAYMENT""#, "application/json", 400, "invalid_webhook"),
        (r#"{"webHookType":"NOPE","idKey":"x"}"#, "application/json", 400, "invalid_webhook"),
        (r#"{"webHookType":"PAYMENT","idKey":""}"#, "application/json", 400, "invalid_webhook"),
        (form, "text/plain", 415, "unsupported_media_type"),
        ("", "application/json", 400, "invalid_webhook"),
    ] {
        let res = webhook_ingest::handler(&deps, request(body, ct)).await.unwrap();
        let v = json(&res);
        assert_eq!((res.status().as_u16(), v["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert_eq!(v["error"]["request_id"], "Xyz1AbCdEfGhIjK=");
    }
}

/// Payple checks a webhook URL with `HEAD` before it sends to it: both webhook routes answer 200
/// with no body, and nothing is read or written.
#[tokio::test]
async fn head_on_a_webhook_route_answers_200_with_no_body_and_stores_nothing() {
    let (_moto, deps) = deps().await;
    for path in ["/webhooks/payple", "/webhooks/steppay"] {
        let mut event: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        event["requestContext"]["http"]["method"] = "HEAD".into();
        event["requestContext"]["http"]["path"] = path.into();
        event["rawPath"] = path.into();
        event["routeKey"] = format!("HEAD {path}").into();
        event["body"] = serde_json::Value::Null;
        event["headers"].as_object_mut().unwrap().remove("content-type");
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        let before = deps.store.counter.snapshot();
        let res = webhook_ingest::handler(&deps, req).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(matches!(res.body(), lambda_http::Body::Empty), "{path}: {:?}", res.body());
        assert_eq!(deps.store.counter.snapshot().since(&before).total_requests(), 0, "{path}");
    }
    // Other methods are still refused.
    let mut event: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    event["requestContext"]["http"]["method"] = "GET".into();
    let res =
        webhook_ingest::handler(&deps, lambda_http::request::from_str(&event.to_string()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 405);
}
