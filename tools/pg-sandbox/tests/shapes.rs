//! The sandbox checks every PG body against the documented shapes (`pg-shapes/`): a sandbox that
//! drifts from the documents, or a client that sends a renamed field, is caught — proven here by
//! planting each drift on purpose.

mod common;

use common::{REFERER, env};
use serde_json::{Value, json};

async fn violations(e: &common::Env) -> Vec<Value> {
    let log: Value = e.http.get(format!("{}/__admin/shapes", e.base)).send().await.unwrap().json().await.unwrap();
    log["violations"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_documented_exchange_passes_and_is_counted() {
    let e = env().await;
    let auth = json!({"cst_id": "test", "custKey": "abcd1234567890", "PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"});
    let v: Value = e
        .http
        .post(format!("{}/php/auth.php", e.base))
        .header("Referer", REFERER)
        .json(&auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(violations(&e).await, Vec::<Value>::new());
    let log: Value = e.http.get(format!("{}/__admin/shapes", e.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["checked"]["payple POST /php/auth.php"], 2, "request and answer: {log}");
}

#[tokio::test]
async fn a_sandbox_answer_with_a_renamed_field_is_a_violation() {
    let e = env().await;
    let drift = json!({"from": "AuthKey", "to": "authKey"});
    let status = e.http.post(format!("{}/__admin/shapes/drift", e.base)).json(&drift).send().await.unwrap().status();
    assert_eq!(status, 204);
    let auth = json!({"cst_id": "test", "custKey": "abcd1234567890", "PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"});
    let v: Value = e
        .http
        .post(format!("{}/php/auth.php", e.base))
        .header("Referer", REFERER)
        .json(&auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("authKey").is_some() && v.get("AuthKey").is_none(), "the drift was planted: {v}");
    let found = violations(&e).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["direction"], "response");
    assert_eq!(found[0]["shape"], "payple/auth-response.json");
    assert!(found[0]["errors"].to_string().contains("authKey"), "{found:#?}");
}

#[tokio::test]
async fn a_client_request_with_a_renamed_field_is_a_violation() {
    let e = env().await;
    // `custKey` → `cust_key`: what a client drifting from Payple's partner auth would send.
    let auth = json!({"cst_id": "test", "cust_key": "abcd1234567890", "PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"});
    e.http.post(format!("{}/php/auth.php", e.base)).header("Referer", REFERER).json(&auth).send().await.unwrap();
    let found = violations(&e).await;
    let request: Vec<&Value> = found.iter().filter(|v| v["direction"] == "request").collect();
    assert_eq!(request.len(), 1, "{found:#?}");
    assert_eq!(request[0]["shape"], "payple/auth-request.json");
    assert!(request[0]["errors"].to_string().contains("cust_key"), "{found:#?}");
}

#[tokio::test]
async fn an_undocumented_route_is_a_violation_and_admin_routes_are_not_checked() {
    let e = env().await;
    e.http.get(format!("{}/__admin/ledger", e.base)).send().await.unwrap();
    assert_eq!(violations(&e).await, Vec::<Value>::new(), "the sandbox's own admin API is not a PG route");
    let shapes = pg_shapes::Shapes::load_default().unwrap();
    let routes = shapes.routes();
    assert!(routes.iter().any(|(pg, r)| pg == "payple" && r == "POST /php/PayChkAct.php"), "{routes:?}");
    // Every PG route the sandbox serves has its documented shapes: one the index lacks would be
    // reported on its first call as "no document shows this route".
    let err = shapes.check_request("steppay", "POST", "/api/v9/invented", "application/json", b"{}").unwrap_err();
    assert!(err.errors[0].contains("no document shows"), "{err}");
}
