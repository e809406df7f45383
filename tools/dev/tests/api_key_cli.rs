//! `paycycle-dev api-key create|revoke` against a real (moto) table through the AWS SDK chain:
//! prints the key once, stores only its hash, revokes it.

use std::process::Command;

use paycycle_dev::{LocalStack, Options};

fn cli(stack: &LocalStack, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paycycle-dev"))
        .args(args)
        .env("PAYCYCLE_TABLE", &stack.provisioned.table)
        .env("AWS_ENDPOINT_URL", stack.moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "ap-northeast-2")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn create_prints_the_key_once_and_revoke_disables_it() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let (ok, key, err) = cli(&stack, &["api-key", "create", "--name", "backend", "--partner", "shop_1"]);
    assert!(ok, "{err}");
    assert!(key.starts_with("pc_") && key.len() == 43, "{key}");
    let store = stack.store().await;
    let record = store.find_api_key(&key).await.unwrap().unwrap();
    assert_eq!((record.partner_id.as_str(), record.name.as_str()), ("shop_1", "backend"));
    assert!(record.is_active());
    let scan = store.dynamo().unwrap().client.scan().table_name(&store.dynamo().unwrap().name).send().await.unwrap();
    assert!(!format!("{:?}", scan.items()).contains(&key), "only the hash is stored");

    let (ok, _, err) = cli(&stack, &["api-key", "revoke", "--key", &key]);
    assert!(ok, "{err}");
    assert!(!store.find_api_key(&key).await.unwrap().unwrap().is_active());
    let (ok, _, _) = cli(&stack, &["api-key", "create"]);
    assert!(!ok, "--name is required");
}
