//! A function with bad configuration stops at start and says which variable is wrong.
//! (Every function's `main` goes through `paycycle::boot::start`; this one stands for all.)

use std::process::Command;

fn run_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhook-ingest"));
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

const GOOD: &[(&str, &str)] = &[
    ("PAYCYCLE_TABLE", "t"),
    ("PAYCYCLE_EVENT_BUS", "b"),
    ("PAYCYCLE_BILLING_KEY_KMS_KEY", "arn:aws:kms:ap-northeast-2:1:key/k"),
    ("STEPPAY_BASE_URL", "http://127.0.0.1:9"),
    ("PAYPLE_BASE_URL", "http://127.0.0.1:9"),
    ("PAYPLE_REFERER", "https://shop.example.com"),
];

#[test]
fn missing_variable_is_named() {
    let (ok, output) = run_with(&[]);
    assert!(!ok);
    assert!(output.contains("PAYCYCLE_TABLE"), "{output}");
}

#[test]
fn a_missing_billing_key_kms_key_is_named() {
    let env: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != "PAYCYCLE_BILLING_KEY_KMS_KEY").collect();
    let (ok, output) = run_with(&env);
    assert!(!ok);
    assert!(output.contains("PAYCYCLE_BILLING_KEY_KMS_KEY"), "{output}");
}

#[test]
fn bad_url_is_named() {
    let mut env: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != "PAYPLE_BASE_URL").collect();
    env.push(("PAYPLE_BASE_URL", "cpay.payple.kr"));
    let (ok, output) = run_with(&env);
    assert!(!ok);
    assert!(output.contains("PAYPLE_BASE_URL"), "{output}");
}

#[test]
fn missing_local_secret_is_named_and_no_secret_is_printed() {
    let mut env = GOOD.to_vec();
    env.push(("STEPPAY_SECRET_TOKEN", "tok-DO-NOT-PRINT"));
    let (ok, output) = run_with(&env);
    assert!(!ok);
    assert!(output.contains("PAYPLE_CST_ID"), "{output}");
    assert!(!output.contains("DO-NOT-PRINT"), "{output}");
}
