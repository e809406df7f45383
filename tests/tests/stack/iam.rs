//! Issue 20 item 12: moto enforces no IAM, so a function can work in every test and fail in AWS
//! (the refund role could not query the `lookup` index). Here every function runs a representative
//! journey on the local stack — checkout, verify (browser result and webhooks through the stream),
//! webhook-ingest, renew, refund (including `cancel_subscription`, the payments list and export),
//! subscriptions, the partner webhooks, the daily reconciliation and the operator's admin routes —
//! with an SDK interceptor recording each DynamoDB / EventBridge / Secrets Manager call as IAM
//! authorizes it (action + table / index / bus / secret), and each call is checked against that
//! function's policy in `template.yaml`.

use std::collections::BTreeMap;

use paycycle::aws::calls::{AwsCall, AwsResource, ENV};
use paycycle_dev::http_bridge::BINARIES;
use paycycle_dev::{LocalStack, Options, journey};
use paycycle_testkit::Template;
use paycycle_testkit::template::{PolicyResource, PolicyStatement, wildcard_match};
use serde_json::json;

/// Whether `statement` allows `call`, given the names the stack provisioned for the template's
/// table and buses.
fn allows(
    statement: &PolicyStatement,
    call: &AwsCall,
    table: (&str, &str),
    buses: &BTreeMap<String, String>,
    queues: &BTreeMap<String, String>,
    kms_keys: &BTreeMap<String, String>,
) -> bool {
    if !statement.allows_action(&call.action) {
        return false;
    }
    // A condition on the encryption context holds only for a call that carries it.
    let purpose = match &call.resource {
        AwsResource::KmsKey { purpose, .. } => purpose.as_deref(),
        _ => None,
    };
    if !statement.string_equals.iter().all(|(k, v)| k == "kms:EncryptionContext:purpose" && purpose == Some(v)) {
        return false;
    }
    statement.resources.iter().any(|r| match (r, &call.resource) {
        (PolicyResource::Other(any), _) => any == "*",
        (PolicyResource::Table { logical_id, index: None }, AwsResource::Table(name)) => {
            logical_id == table.0 && name == table.1
        }
        (PolicyResource::Table { logical_id, index: Some(pattern) }, AwsResource::Index { table: name, index }) => {
            logical_id == table.0 && name == table.1 && wildcard_match(pattern, index)
        }
        (PolicyResource::Bus(logical_id), AwsResource::Bus(name)) => buses.get(logical_id) == Some(name),
        (PolicyResource::Queue(logical_id), AwsResource::Queue(url)) => queues.get(logical_id) == Some(url),
        (PolicyResource::KmsKey(logical_id), AwsResource::KmsKey { key, .. }) => kms_keys.get(logical_id) == Some(key),
        // The local stack reads no secret; a recorded one names the template's secret by its ARN.
        (PolicyResource::Secret(logical_id), AwsResource::Secret(id)) => id.contains(logical_id.as_str()),
        _ => false,
    })
}

/// The operator's day: a partner, its key, the listings, a revocation (signed requests).
async fn admin_routes(stack: &LocalStack) {
    use reqwest::Method;
    let op = stack.operator();
    let partner = json!({"partner_id": "iam_partner", "name": "IAM"});
    assert_eq!(op.call(Method::POST, "/admin/partners", Some(&partner)).await.unwrap().0, 201);
    assert_eq!(op.call(Method::GET, "/admin/partners", None).await.unwrap().0, 200);
    let key = json!({"partner_id": "iam_partner", "name": "backend"});
    let (status, created) = op.call(Method::POST, "/admin/api-keys", Some(&key)).await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(op.call(Method::GET, "/admin/api-keys?partner_id=iam_partner", None).await.unwrap().0, 200);
    let revoke = format!("/admin/api-keys/{}/revoke", created["id"].as_str().unwrap());
    assert_eq!(op.call(Method::POST, &revoke, None).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_aws_call_each_function_makes_is_allowed_by_its_policy_in_the_template() {
    // SAFETY: set before the stack (and any other thread of this test process) starts; nextest
    // runs each test in its own process.
    unsafe { std::env::set_var(ENV, "1") };
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    // A partner's webhook endpoint (webhook-endpoints), which deliver then serves through the
    // journey; its events, log, rotation and a redelivery at the end.
    let receiver = paycycle_dev::receiver::Receiver::start(0, false).await.unwrap();
    let hooks_key = stack.create_api_key("iam hooks", "default").await.unwrap();
    let endpoint = paycycle_dev::receiver::register(&stack.api_url(), &hooks_key, &receiver).await.unwrap();
    let mut sink = |_: String| {};
    let report = journey::run(&stack, None, &mut sink).await.unwrap();
    stack.drain_webhooks().await;
    let hooks = paycycle_e2e::Partner::new(stack.api_url(), hooks_key);
    let (_, events) = hooks.get("/events?limit=1").await;
    let event_id = events["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(hooks.post(&format!("/events/{event_id}/redeliver"), &json!({}), None).await.0, 202);
    assert_eq!(hooks.get(&format!("/webhook-endpoints/{endpoint}/deliveries")).await.0, 200);
    assert_eq!(hooks.post(&format!("/webhook-endpoints/{endpoint}/rotate"), &json!({}), None).await.0, 200);
    stack.functions.deliver_sweep(Some("2030-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(hooks.call(reqwest::Method::DELETE, &format!("/webhook-endpoints/{endpoint}"), None, None).await.0, 200);
    stack.drain_webhooks().await;

    // A full refund that cancels the subscription (the journey refunds only partly): its latest
    // payment, on the StepPay self customer.
    let store = stack.store().await;
    let sub = report.subscriptions.iter().find(|s| s.pg == paycycle::pg::PgMode::SteppaySelf).unwrap();
    let id = paycycle::domain::attempt::SubscriptionId::parse(&sub.subscription_id).unwrap();
    let latest = store.payments_of_subscription(&id).await.unwrap().into_iter().max_by_key(|p| p.paid_at).unwrap();
    let key = stack.create_api_key("iam", "default").await.unwrap();
    let api = paycycle_e2e::Partner::new(stack.api_url(), key);
    let (status, body) = api
        .post(
            &format!("/payments/{}/refunds", latest.payment_id),
            &json!({"reason": "cancel", "cancel_subscription": true}),
            Some("iam-cancel"),
        )
        .await;
    assert!(status < 500, "{status} {body}");
    // The partner's books (issue 24 §4): the paid index, and the refunds of refunded payments.
    assert_eq!(api.get("/payments?from=2027-01-01&limit=100").await.0, 200);
    let export = reqwest::Client::new()
        .get(format!("{}/payments/export?from=2027-01-01&to=2028-12-31", stack.api_url()))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    // A canceled Payple customer's billing key, released by the next tick (renew reads the
    // customer's subscriptions and deletes the key at the PG).
    let payple = report.subscriptions.iter().find(|s| s.pg == paycycle::pg::PgMode::Payple).unwrap();
    let (status, body) = api.post(&format!("/subscriptions/{}/cancel", payple.subscription_id), &json!({}), None).await;
    assert!(status == 200 || status == 409, "{status} {body}");
    let ticked = stack.functions.tick(None).await.unwrap();
    let payple_id = paycycle::domain::attempt::SubscriptionId::parse(&payple.subscription_id).unwrap();
    let released = store.get_subscription(&payple_id).await.unwrap().unwrap();
    assert!(released.billing_key_released_at.is_some(), "{ticked}");
    // The daily reconciliation of a day the journey charged on.
    let reconciled = stack.functions.reconcile(&latest.pay_date_kst).await.unwrap();
    assert!(reconciled["looked"]["payments"].as_u64().unwrap() > 0, "{reconciled}");
    admin_routes(&stack).await;

    let template = Template::load().unwrap();
    let table_id = template.table().unwrap().logical_id;
    let table = (table_id.as_str(), stack.provisioned.table.as_str());
    let buses = stack.provisioned.buses.clone();
    let queues = stack.provisioned.queues.clone();
    let kms_keys = stack.provisioned.kms_keys.clone();
    // Every function reads the PG credentials once per cold start (the template's global
    // PAYCYCLE_SECRETS): the same read, recorded per function, against moto's Secrets Manager.
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("{}-PgCredentials", stack.provisioned.table))
        .secret_string(
            r#"{"steppay_secret_token":"tok","payple_cst_id":"test","payple_cust_key":"k","payple_refund_key":"rk"}"#,
        )
        .send()
        .await
        .unwrap();
    let source = paycycle::config::SecretsSource::SecretsManager(secret.arn().unwrap().to_string());
    let mut denied = Vec::new();
    for (function, _) in BINARIES {
        let boot_log = std::sync::Arc::new(paycycle::aws::calls::CallLog::default());
        if paycycle_dev::Functions::reads_pg_secrets(function) {
            paycycle::config::load_secrets_recorded(&source, &sdk, Some(&boot_log)).await.unwrap();
            assert!(boot_log.calls().iter().any(|c| c.action == "secretsmanager:GetSecretValue"));
        }
        let boot_calls = boot_log.calls();
        let calls = stack.functions.aws_calls(function).into_iter().chain(boot_calls);
        let calls: Vec<_> = calls.collect();
        assert!(calls.len() > 1, "{function} made no recorded call: is the recorder on?");
        let policy = template.function_policy(function).unwrap();
        for call in calls {
            if !policy.iter().any(|s| allows(s, &call, table, &buses, &queues, &kms_keys)) {
                denied.push(format!("{function}: {} on {:?}", call.action, call.resource));
            }
        }
    }
    assert!(denied.is_empty(), "calls the template's IAM policies do not allow:\n{}", denied.join("\n"));
    // The journey sealed and opened keys: verify generated a data key, renew unwrapped one.
    let kms = |f: &str, action: &str| stack.functions.aws_calls(f).iter().any(|c| c.action == action);
    assert!(kms("VerifyFunction", "kms:GenerateDataKey") && kms("RenewFunction", "kms:Decrypt"));
}

/// Billing keys (issue #24 §6): only verify may have KMS generate a data key (it seals first
/// payments' and card changes' keys), only renew, subscriptions and checkout may unwrap one
/// (checkout: a StepPay managed card change names StepPay's subscription, kept sealed) — each on
/// the billing keys' key alone, with the billing-key purpose as a condition — and no other
/// function has any KMS permission.
#[test]
fn only_the_functions_that_seal_or_open_billing_keys_may_use_their_kms_key() {
    let template = Template::load().unwrap();
    let expected: BTreeMap<&str, &str> = [
        ("VerifyFunction", "kms:GenerateDataKey"),
        ("RenewFunction", "kms:Decrypt"),
        ("RenewWorkerFunction", "kms:Decrypt"),
        ("SubscriptionsFunction", "kms:Decrypt"),
        ("CheckoutFunction", "kms:Decrypt"),
    ]
    .into_iter()
    .collect();
    for function in template.functions().unwrap() {
        let policy = template.function_policy(&function.logical_id).unwrap();
        let kms: Vec<&PolicyStatement> =
            policy.iter().filter(|s| s.actions.iter().any(|a| a.to_ascii_lowercase().starts_with("kms:"))).collect();
        for (action, granted) in [("kms:GenerateDataKey", true), ("kms:Decrypt", true), ("kms:Encrypt", false)] {
            let has = policy.iter().any(|s| s.allows_action(action));
            let want = granted && expected.get(function.logical_id.as_str()) == Some(&action);
            assert_eq!(has, want, "{}: {action}", function.logical_id);
        }
        for s in kms {
            assert_eq!(s.actions.len(), 1, "{}: one KMS action per statement: {s:?}", function.logical_id);
            assert_eq!(s.resources, [PolicyResource::KmsKey("BillingKeysKmsKey".into())], "{}", function.logical_id);
            let purpose = ("kms:EncryptionContext:purpose".to_string(), "paycycle-billing-key".to_string());
            assert_eq!(s.string_equals, [purpose], "{}: the purpose condition", function.logical_id);
        }
    }
}
