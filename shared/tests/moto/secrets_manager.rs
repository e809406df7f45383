//! PG credentials load from a real Secrets Manager API (moto) through the SDK, as in AWS.

use paycycle::config::SecretsSource;
use paycycle_testkit::MotoServer;

#[tokio::test]
async fn secrets_load_from_secrets_manager_and_missing_ones_are_named() {
    let moto = MotoServer::shared_or_start().unwrap();
    let sdk = moto.sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = format!("{}-pg", paycycle_testkit::provision::unique_prefix());
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(
            r#"{"steppay_secret_token":"tok","steppay_webhook_secrets":["k1"],"payple_cst_id":"test",
                "payple_cust_key":"abcd1234567890","payple_refund_key":"rk"}"#,
        )
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_string();

    let secrets = paycycle::config::load_secrets(&SecretsSource::SecretsManager(arn.clone()), &sdk).await.unwrap();
    assert_eq!(secrets.steppay_secret_token.expose(), "tok");
    assert_eq!(secrets.steppay_webhook_secrets.len(), 1);
    assert_eq!(secrets.payple_cst_id.expose(), "test");

    let missing = paycycle::config::load_secrets(&SecretsSource::SecretsManager(format!("{name}-absent")), &sdk)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains(&format!("{name}-absent")), "{missing}");
}

/// A StepPay stand-in on 127.0.0.1 that records the `Secret-Token` of every request it gets
/// (over real HTTP, as the PG sees it) and answers 404.
async fn token_recorder() -> (url::Url, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let token = text
                .lines()
                .find_map(|l| l.strip_prefix("secret-token: ").or_else(|| l.strip_prefix("Secret-Token: ")));
            record.lock().unwrap().push(token.unwrap_or("(none)").trim().to_string());
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    });
    (base, seen)
}

fn document(token: &str) -> String {
    serde_json::json!({"steppay_secret_token": token, "steppay_webhook_secrets": ["k1"], "payple_cst_id": "test",
        "payple_cust_key": "abcd1234567890", "payple_refund_key": "rk"})
    .to_string()
}

/// The functions' dependencies as a cold start builds them (`paycycle::boot`): config from a
/// lookup naming secret `arn` with a 1-second TTL and StepPay at `steppay`.
async fn boot(sdk: &aws_config::SdkConfig, arn: &str, steppay: &url::Url) -> paycycle::boot::Services {
    let vars = [
        ("PAYCYCLE_TABLE", "t"),
        ("PAYCYCLE_EVENT_BUS", "b"),
        ("PAYCYCLE_BILLING_KEY_KMS_KEY", "alias/k"),
        ("STEPPAY_BASE_URL", steppay.as_str()),
        ("PAYPLE_BASE_URL", steppay.as_str()),
        ("PAYPLE_REFERER", "https://shop.example.com"),
        ("PAYCYCLE_SECRETS", arn),
        ("PAYCYCLE_SECRETS_TTL_SECONDS", "1"),
    ];
    let config =
        paycycle::Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
    assert_eq!(config.secrets_ttl, std::time::Duration::from_secs(1));
    let secrets = paycycle::config::load_secrets(&config.secrets_source, sdk).await.unwrap();
    let credentials = paycycle::boot::credentials(&config, sdk, &secrets);
    paycycle::boot::Services::new(&paycycle::boot::Boot { config, sdk: sdk.clone(), secrets, credentials })
}

/// The token the PG saw on one StepPay request made through the registry.
async fn token_sent(services: &paycycle::boot::Services, seen: &std::sync::Mutex<Vec<String>>) -> String {
    let _ = services.pgs.steppay.receipt("idkey-1").await;
    seen.lock().unwrap().last().cloned().expect("the PG got a request")
}

type Recorded = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A secret at v1 (`tok-v1`) in moto, the functions' dependencies over it, and one StepPay request
/// that carried v1.
async fn started_on_v1(suffix: &str) -> (aws_sdk_secretsmanager::Client, String, paycycle::boot::Services, Recorded) {
    let moto = MotoServer::shared_or_start().unwrap();
    let sdk = moto.sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = format!("{}-{suffix}", paycycle_testkit::provision::unique_prefix());
    let created = client.create_secret().name(&name).secret_string(document("tok-v1")).send().await.unwrap();
    let arn = created.arn().unwrap().to_string();
    let (steppay, seen) = token_recorder().await;
    let services = boot(&sdk, &arn, &steppay).await;
    assert_eq!(token_sent(&services, &seen).await, "tok-v1");
    (client, arn, services, seen)
}

#[tokio::test]
async fn a_rotated_pg_secret_is_sent_after_the_ttl_without_a_new_cold_start() {
    let (client, arn, services, seen) = started_on_v1("rotated").await;

    client.put_secret_value().secret_id(&arn).secret_string(document("tok-v2")).send().await.unwrap();
    assert_eq!(token_sent(&services, &seen).await, "tok-v1", "within the TTL the cached value is used");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(token_sent(&services, &seen).await, "tok-v2", "after the TTL the rotated value");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_pg_secret() {
    let (client, arn, services, seen) = started_on_v1("unreadable").await;

    // Gone from Secrets Manager: every read fails from now on.
    client.delete_secret().secret_id(&arn).force_delete_without_recovery(true).send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(token_sent(&services, &seen).await, "tok-v1", "the last good value stays in use");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(token_sent(&services, &seen).await, "tok-v1");
}

/// A rotation that drops StepPay's signing secrets would turn the webhook signature check off on
/// every warm process within one TTL: refused, the last good value kept (a deploy, a cold start,
/// is how an operator turns it off on purpose).
#[tokio::test]
async fn a_refresh_that_drops_the_webhook_signing_secrets_is_refused() {
    let (client, arn, services, seen) = started_on_v1("unsigned").await;
    let unsigned = serde_json::json!({"steppay_secret_token": "tok-v2", "steppay_webhook_secrets": [],
        "payple_cst_id": "test", "payple_cust_key": "abcd1234567890", "payple_refund_key": "rk"});
    client.put_secret_value().secret_id(&arn).secret_string(unsigned.to_string()).send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(token_sent(&services, &seen).await, "tok-v1", "the refresh was refused whole");
}

/// A document stored as a JSON string (a double-encoding slip) fails to parse; the error, which
/// a refresh logs, names the error's class and position, never the values inside.
#[test]
fn an_unreadable_secret_document_is_reported_without_its_values() {
    let inner = document("sk_live_never_in_a_log");
    let double_encoded = serde_json::to_string(&inner).unwrap();
    let err = paycycle::config::Secrets::from_json("arn:secret", &double_encoded).unwrap_err().to_string();
    assert!(!err.contains("sk_live_never_in_a_log") && !err.contains("abcd1234567890"), "{err}");
    assert!(err.contains("arn:secret"), "{err}");
}
