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
