//! `make dev PG=external`: the local stack calls the PG hosts and credentials the environment
//! names, not the sandbox. Proven against an independent fake written here (not the sandbox
//! library) on a port of its own: it records what reached it, and the sandbox's load meter shows
//! that nothing reached the sandbox.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use paycycle_dev::{EXTERNAL_PG_VARIABLES, LocalStack, Options, PgTarget};
use serde_json::{Value, json};

/// What reached the fake: (path, the request's headers as lower-case name → value, its body).
type Seen = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Value)>>>;

fn headers(h: &HeaderMap) -> BTreeMap<String, String> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string())).collect()
}

/// A second PG fake: Payple's partner auth (seed 003 3-2: `result`, `cst_id`, `custKey`,
/// `AuthKey`, `PCD_PAY_HOST`, `PCD_PAY_URL`, `return_url`) and, for anything StepPay is asked, a
/// 503 (enough to see the request arrive with its token).
async fn start_fake() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let auth_base = base.clone();
    let app = axum::Router::new()
        .route(
            "/php/auth.php",
            post(move |State(seen): State<Seen>, h: HeaderMap, Json(body): Json<Value>| {
                let base = auth_base.clone();
                async move {
                    seen.lock().unwrap().push(("/php/auth.php".into(), headers(&h), body));
                    Json(json!({
                        "result": "success", "result_msg": "사용자 인증 완료",
                        "cst_id": "returned-cst", "custKey": "returned-key", "AuthKey": "external-auth-key-1",
                        "PCD_PAY_HOST": base, "PCD_PAY_URL": "/external/window", "return_url": format!("{base}/external/window")
                    }))
                }
            }),
        )
        .fallback(|State(seen): State<Seen>, uri: axum::http::Uri, h: HeaderMap, body: String| async move {
            let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
            seen.lock().unwrap().push((uri.path().to_string(), headers(&h), body));
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "external fake: not here").into_response()
        })
        .with_state(seen.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen, task)
}

fn external(base: &str) -> BTreeMap<String, String> {
    [
        ("STEPPAY_BASE_URL", base),
        ("PAYPLE_BASE_URL", base),
        ("PAYPLE_REFERER", "https://ext.shop.example.com"),
        ("STEPPAY_SECRET_TOKEN", "ext-steppay-token"),
        ("STEPPAY_WEBHOOK_SECRETS", "ext-steppay-signing"),
        ("PAYPLE_CST_ID", "ext-cst"),
        ("PAYPLE_CUST_KEY", "ext-cust-key"),
        ("PAYPLE_REFUND_KEY", "ext-refund-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn checkout(api: &str, key: &str, idem: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{api}/checkouts"))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_calls_the_pgs_the_environment_names_and_never_the_sandbox() {
    let (base, seen, fake) = start_fake().await;
    let vars = external(&base);
    let lookup = |k: &str| vars.get(k).cloned();
    let stack = LocalStack::start(Options { api_port: 0, pg: PgTarget::external_from(lookup), ..Options::default() })
        .await
        .unwrap();
    let key = stack.create_api_key("external", "default").await.unwrap();
    let api = stack.api_url();

    // Payple: the window's auth is the fake's, asked with the environment's partner id, key and
    // Referer; the window parameters point at the fake's window.
    let (status, body) = checkout(
        &api,
        &key,
        "ext-1",
        json!({
            "pg": "payple",
            "customer": {"id": "cus_ext", "name": "홍길동"},
            "plan": {"name": "Pro", "amount": 9900, "interval": "month"},
            "return_url": "http://127.0.0.1:9/return"
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payple"]["PCD_AUTH_KEY"], "external-auth-key-1", "{body}");
    assert_eq!(body["payple"]["PCD_PAY_URL"], format!("{base}/external/window"), "{body}");
    {
        let seen = seen.lock().unwrap();
        let (_, h, auth) = seen.iter().find(|(p, _, _)| p == "/php/auth.php").expect("Payple's auth reached the fake");
        assert_eq!(auth["cst_id"], "ext-cst");
        assert_eq!(auth["custKey"], "ext-cust-key");
        assert_eq!(h.get("referer").map(String::as_str), Some("https://ext.shop.example.com"));
    }

    // StepPay managed: its first call (the customer) reaches the fake with the environment's token.
    let (status, body) = checkout(
        &api,
        &key,
        "ext-2",
        json!({
            "pg": "steppay_managed",
            "customer": {"id": "cus_ext2", "name": "김민준"},
            "plan": {"name": "Pro", "amount": 9900, "interval": "month"},
            "return_url": "http://127.0.0.1:9/return",
            "steppay": {"product_code": "product_1", "price_code": "price_1"}
        }),
    )
    .await;
    assert!((500..600).contains(&status) || status == 409, "the fake refuses StepPay: {status} {body}");
    {
        let seen = seen.lock().unwrap();
        let steppay: Vec<_> = seen.iter().filter(|(p, _, _)| p.starts_with("/api/")).collect();
        assert!(!steppay.is_empty(), "StepPay was asked at the fake: {seen:?}");
        assert!(steppay.iter().all(|(_, h, _)| h.get("secret-token").map(String::as_str) == Some("ext-steppay-token")));
    }

    // No time travel against a real PG: `make tick NOW=<next month>` would charge real cards early.
    assert!(!stack.functions.travels_in_time());
    assert!(!format!("{:?}", PgTarget::External(vars.clone())).contains("ext-cust-key"), "Debug shows no credential");

    // Nothing reached the sandbox.
    let load: Value =
        reqwest::get(format!("{}/__admin/load", stack.sandbox.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(load["requests"], 0, "{load}");
    drop(stack);
    fake.abort();
}

#[tokio::test]
async fn an_external_pg_without_its_settings_names_the_missing_variable() {
    for missing in EXTERNAL_PG_VARIABLES.iter().filter(|v| **v != "STEPPAY_WEBHOOK_SECRETS") {
        let mut vars = external("http://127.0.0.1:9");
        vars.remove(*missing);
        let pg = PgTarget::External(vars);
        let err = pg.check().expect_err(missing).to_string();
        // And the stack refuses to start on it, before starting anything.
        let start = LocalStack::start(Options { api_port: 0, pg, ..Options::default() }).await;
        assert_eq!(start.err().map(|e| e.to_string()).as_deref(), Some(err.as_str()));
        assert!(err.contains(missing), "{missing}: {err}");
    }
    // Payple's live host only when the developer says so.
    let mut live = external("https://cpay.payple.kr");
    live.insert("STEPPAY_BASE_URL".into(), "http://127.0.0.1:9".into());
    let err = PgTarget::External(live).check().expect_err("the live host is refused").to_string();
    assert!(err.contains("PAYCYCLE_ALLOW_LIVE_PG"), "{err}");
}
