//! The `paycycle` binary against the local stack, whose bridge checks SigV4 like API Gateway's IAM
//! authorizer: an operator registers a partner, creates its key (which then works on a partner
//! route), lists and revokes it (which the partner route then refuses); and the admin routes
//! refuse unsigned requests, partner keys and signatures made with the wrong secret.

use aws_credential_types::Credentials;
use paycycle_dev::iam_authorizer::{LOCAL_OPERATOR, REGION};
use paycycle_dev::{LocalStack, Options};
use reqwest::Method;
use serde_json::{Value, json};

/// Runs the built `paycycle` binary with the local operator's credentials (and nothing else
/// from this machine's AWS configuration): its exit code and its stdout as JSON.
async fn paycycle(api: &str, secret: &str, args: &[&str]) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_paycycle"))
        .args(["--api", api])
        .args(args)
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", LOCAL_OPERATOR.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(secret) && !stdout.contains(secret), "the CLI never prints the secret key");
    let value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout} / {stderr}"));
    (out.status.code().unwrap_or(-1), value)
}

async fn partner_get(api: &str, key: &str) -> u16 {
    let resp = reqwest::Client::new().get(format!("{api}/webhook-endpoints")).bearer_auth(key).send().await.unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_key_that_works_and_revokes_it_on_the_local_stack() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let (api, secret) = (stack.api_url(), LOCAL_OPERATOR.secret_access_key);

    let (code, _) = paycycle(&api, secret, &["api-keys", "create", "--partner", "acme", "--name", "backend"]).await;
    assert_eq!(code, 1, "a key for a partner not registered is refused");
    let (code, partner) = paycycle(&api, secret, &["partners", "create", "acme", "--name", "Acme Corp"]).await;
    assert_eq!((code, &partner["created_by"]), (0, &json!(LOCAL_OPERATOR.user_arn)), "{partner}");

    let (code, created) =
        paycycle(&api, secret, &["api-keys", "create", "--partner", "acme", "--name", "backend"]).await;
    assert_eq!(code, 0, "{created}");
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    assert_eq!(partner_get(&api, key).await, 200, "the new key works on a partner route");

    let (code, list) = paycycle(&api, secret, &["api-keys", "list", "--partner", "acme"]).await;
    assert_eq!((code, &list["data"][0]["id"], &list["data"][0]["active"]), (0, &json!(id), &json!(true)), "{list}");
    assert!(!list.to_string().contains(key), "a listing never shows the key");

    let (code, revoked) = paycycle(&api, secret, &["api-keys", "revoke", id]).await;
    assert_eq!((code, &revoked["active"]), (0, &json!(false)), "{revoked}");
    assert_eq!(revoked["revoked_by"], LOCAL_OPERATOR.user_arn);
    assert_eq!(partner_get(&api, key).await, 401, "a revoked key is refused");

    let (code, refused) = paycycle(&api, "not-the-secret", &["partners", "list"]).await;
    assert_eq!((code, &refused["error"]["code"]), (1, &json!("forbidden")), "{refused}");
}

#[tokio::test]
async fn admin_routes_refuse_unsigned_requests_partner_keys_and_wrong_signatures() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let api = stack.api_url();
    let client = reqwest::Client::new();
    let partner_key = stack.create_api_key("partner", "default").await.unwrap();
    assert_eq!(partner_get(&api, &partner_key).await, 200);
    let body = json!({"partner_id": "default", "name": "x"});
    for req in [
        client.get(format!("{api}/admin/partners")),
        client.post(format!("{api}/admin/api-keys")).json(&body),
        client.post(format!("{api}/admin/api-keys")).bearer_auth(&partner_key).json(&body),
        client.get(format!("{api}/admin/api-keys?partner_id=default")).bearer_auth(&partner_key),
        client.post(format!("{api}/admin/api-keys/key_0123456789abcdef/revoke")).bearer_auth(&partner_key),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    }
    let wrong = Credentials::new(LOCAL_OPERATOR.access_key_id, "wrong-secret", None, None, "test");
    let forger = paycycle_cli::Operator::with_credentials(&api, REGION, wrong).unwrap();
    assert_eq!(forger.call(Method::GET, "/admin/partners", None).await.unwrap().0, 403);
    let other_key = Credentials::new("AKIASOMEONEELSE00000", LOCAL_OPERATOR.secret_access_key, None, None, "test");
    let stranger = paycycle_cli::Operator::with_credentials(&api, REGION, other_key).unwrap();
    assert_eq!(stranger.call(Method::GET, "/admin/partners", None).await.unwrap().0, 403);
    let elsewhere = paycycle_cli::Operator::with_credentials(&api, "us-east-1", LOCAL_OPERATOR.credentials()).unwrap();
    assert_eq!(elsewhere.call(Method::GET, "/admin/partners", None).await.unwrap().0, 403, "another region");

    let (status, keys) = stack.operator().call(Method::GET, "/admin/api-keys?partner_id=default", None).await.unwrap();
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "nothing was created by the refused requests: {keys}");
}
