//! The handler called directly with an API Gateway HTTP API (v2) event, as STYLE prescribes.

use paycycle::boot::Boot;
use paycycle::config::{Config, Secrets};

fn deps() -> webhook_ingest::Deps {
    let env = |k: &str| {
        Some(
            match k {
                "PAYCYCLE_TABLE" => "t",
                "PAYCYCLE_EVENT_BUS" => "b",
                "STEPPAY_BASE_URL" | "PAYPLE_BASE_URL" => "http://127.0.0.1:9",
                "PAYPLE_REFERER" => "https://shop.example.com",
                "STEPPAY_SECRET_TOKEN" | "PAYPLE_CST_ID" | "PAYPLE_CUST_KEY" | "PAYPLE_REFUND_KEY" => "x",
                _ => return None,
            }
            .to_string(),
        )
    };
    let boot = Boot {
        config: Config::from_lookup(env).unwrap(),
        sdk: paycycle::aws::SdkConfig::builder().build(),
        secrets: Secrets::from_lookup(env).unwrap(),
    };
    webhook_ingest::Deps::new(boot)
}

#[tokio::test]
async fn not_implemented_yet_is_a_json_501_with_the_gateway_request_id() {
    let req = lambda_http::request::from_str(include_str!("fixtures/apigw_v2_steppay_webhook.json")).unwrap();
    let res = webhook_ingest::handler(&deps(), req).await.unwrap();
    assert_eq!(res.status(), 501);
    let body: serde_json::Value = match res.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("unexpected body {other:?}"),
    };
    assert_eq!(body["error"]["code"], "not_implemented");
    assert_eq!(body["error"]["request_id"], "Xyz1AbCdEfGhIjK=");
}
