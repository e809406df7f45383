//! Configuration from the environment (DESIGN §8), read once per cold start.
//!
//! Every variable is required and validated here, so a mistake in the template or the local
//! stack fails the function at start with a message that names the variable, not at 3 a.m. on
//! the first renewal. The PG variables and credentials are the `pg` crate's
//! ([`paycycle_pg::config`]); this module adds the table, the bus and the billing keys' KMS key,
//! and loads the credentials
//! from Secrets Manager (`PAYCYCLE_SECRETS`, an ARN) in AWS or from plain variables locally.
//! Nothing here ever prints a secret.

use paycycle_pg::config::required;
pub use paycycle_pg::config::{ConfigError, PgSettings, Secrets, secret_keys};

/// The variables of DESIGN §8 every function reads, besides each PG's ([`variables`]).
pub const COMMON_VARIABLES: &[(&str, &str)] = &[
    ("PAYCYCLE_TABLE", "the DynamoDB table name"),
    ("PAYCYCLE_EVENT_BUS", "the EventBridge bus name"),
    ("PAYCYCLE_BILLING_KEY_KMS_KEY", "the KMS key (ARN or alias) billing keys are sealed under"),
];

/// Every required variable with what it is for (used in error messages): the common ones and
/// those of every PG in the registry.
pub fn variables() -> Vec<(&'static str, &'static str)> {
    COMMON_VARIABLES.iter().copied().chain(paycycle_pg::config::variables()).collect()
}

#[derive(Clone, Debug)]
pub struct Config {
    pub table: String,
    pub event_bus: String,
    /// `PAYCYCLE_BILLING_KEY_KMS_KEY`: the KMS key billing keys are sealed under
    /// ([`crate::store::vault`]).
    pub billing_key_kms_key: String,
    /// The PGs' base URLs, Referer and timeouts.
    pub pg: PgSettings,
    pub secrets_source: SecretsSource,
    /// `PAYCYCLE_SECRETS_TTL_SECONDS` (default 300, 1 to 86400): how long a Secrets Manager value
    /// is used before it is read again, so a rotated PG secret takes effect without a redeploy.
    pub secrets_ttl: std::time::Duration,
}

/// The default of `PAYCYCLE_SECRETS_TTL_SECONDS`.
pub const DEFAULT_SECRETS_TTL_SECONDS: u64 = 300;

fn secrets_ttl(lookup: &impl Fn(&str) -> Option<String>) -> Result<std::time::Duration, ConfigError> {
    let var = "PAYCYCLE_SECRETS_TTL_SECONDS";
    let seconds =
        match lookup(var) {
            None => DEFAULT_SECRETS_TTL_SECONDS,
            Some(v) => v.trim().parse::<u64>().ok().filter(|s| (1..=86_400).contains(s)).ok_or_else(|| {
                ConfigError::Invalid { var, reason: format!("seconds between 1 and 86400, got {v:?}") }
            })?,
        };
    Ok(std::time::Duration::from_secs(seconds))
}

/// Where the PG credentials live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretsSource {
    /// `PAYCYCLE_SECRETS`: a Secrets Manager secret (ARN or name) holding a JSON object.
    SecretsManager(String),
    /// Local runs: `STEPPAY_SECRET_TOKEN`, `STEPPAY_WEBHOOK_SECRETS`, `PAYPLE_CST_ID`,
    /// `PAYPLE_CUST_KEY`, `PAYPLE_REFUND_KEY`.
    Environment,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from any lookup (tests pass a map; the process environment is never mutated).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = required(&lookup, "PAYCYCLE_TABLE", COMMON_VARIABLES)?;
        let event_bus = required(&lookup, "PAYCYCLE_EVENT_BUS", COMMON_VARIABLES)?;
        let billing_key_kms_key = required(&lookup, "PAYCYCLE_BILLING_KEY_KMS_KEY", COMMON_VARIABLES)?;
        let pg = PgSettings::from_lookup(&lookup)?;
        let secrets_source = match lookup("PAYCYCLE_SECRETS") {
            Some(arn) if !arn.trim().is_empty() => SecretsSource::SecretsManager(arn.trim().to_string()),
            _ => SecretsSource::Environment,
        };
        let secrets_ttl = secrets_ttl(&lookup)?;
        Ok(Self { table, event_bus, billing_key_kms_key, pg, secrets_source, secrets_ttl })
    }
}

/// What the partner-webhook functions (`deliver`, `webhook-endpoints`) read: no PG, no bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub table: String,
    /// `PAYCYCLE_DELIVERY_QUEUE_URL`: one message per (event, endpoint) to attempt.
    pub delivery_queue_url: String,
    /// `PAYCYCLE_WEBHOOK_DLQ_URL`: where a delivery that ran out of retries is dead-lettered
    /// (`deliver` only).
    pub dead_letter_queue_url: Option<String>,
    /// `PAYCYCLE_ALLOW_TIME_TRAVEL=true` (local stack and tests only): a scheduled sweep may carry
    /// `{"now": ...}`, and endpoints may be `http://127.0.0.1` (the local receiver).
    pub allow_time_travel: bool,
}

/// The variables of [`WebhookConfig`].
pub const WEBHOOK_VARIABLES: &[(&str, &str)] = &[
    ("PAYCYCLE_TABLE", "the DynamoDB table name"),
    ("PAYCYCLE_DELIVERY_QUEUE_URL", "the SQS queue of partner webhook deliveries"),
];

impl WebhookConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            table: required(&lookup, "PAYCYCLE_TABLE", WEBHOOK_VARIABLES)?,
            delivery_queue_url: required(&lookup, "PAYCYCLE_DELIVERY_QUEUE_URL", WEBHOOK_VARIABLES)?,
            dead_letter_queue_url: lookup("PAYCYCLE_WEBHOOK_DLQ_URL").filter(|v| !v.trim().is_empty()),
            allow_time_travel: lookup("PAYCYCLE_ALLOW_TIME_TRAVEL").as_deref() == Some("true"),
        })
    }
}

/// Loads the PG credentials from wherever `source` says.
pub async fn load_secrets(source: &SecretsSource, sdk: &aws_config::SdkConfig) -> Result<Secrets, ConfigError> {
    load_secrets_recorded(source, sdk, None).await
}

/// [`load_secrets`], recording the AWS call in `log` (the IAM test).
pub async fn load_secrets_recorded(
    source: &SecretsSource,
    sdk: &aws_config::SdkConfig,
    log: Option<&std::sync::Arc<paycycle_store::aws::calls::CallLog>>,
) -> Result<Secrets, ConfigError> {
    match source {
        SecretsSource::Environment => Secrets::from_lookup(|name| std::env::var(name).ok()),
        SecretsSource::SecretsManager(id) => get_secret(&secrets_manager(sdk, log), id).await,
    }
}

/// The Secrets Manager client the functions read the PG secret with (`log` records its calls).
pub fn secrets_manager(
    sdk: &aws_config::SdkConfig,
    log: Option<&std::sync::Arc<paycycle_store::aws::calls::CallLog>>,
) -> aws_sdk_secretsmanager::Client {
    let mut config = aws_sdk_secretsmanager::config::Builder::from(sdk);
    if let Some(log) = log {
        config = config.interceptor(log.interceptor());
    }
    aws_sdk_secretsmanager::Client::from_conf(config.build())
}

/// Reads secret `id` (one `GetSecretValue`) and parses its JSON document.
pub async fn get_secret(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Secrets, ConfigError> {
    let out = client.get_secret_value().secret_id(id).send().await.map_err(|e| ConfigError::Secret {
        source_name: id.to_string(),
        reason: format!("GetSecretValue failed: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)),
    })?;
    let json = out
        .secret_string()
        .ok_or_else(|| ConfigError::Secret { source_name: id.to_string(), reason: "has no SecretString".into() })?;
    Secrets::from_json(id, json)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const GOOD: &[(&str, &str)] = &[
        ("PAYCYCLE_TABLE", "paycycle"),
        ("PAYCYCLE_EVENT_BUS", "paycycle-bus"),
        ("PAYCYCLE_BILLING_KEY_KMS_KEY", "arn:aws:kms:ap-northeast-2:1:key/k"),
        ("STEPPAY_BASE_URL", "http://127.0.0.1:4010"),
        ("PAYPLE_BASE_URL", "http://127.0.0.1:4010/payple"),
        ("PAYPLE_REFERER", "https://shop.example.com"),
    ];

    #[test]
    fn loads_a_complete_environment() {
        let c = Config::from_lookup(env(GOOD)).unwrap();
        assert_eq!(c.table, "paycycle");
        assert_eq!(c.pg.steppay_base_url.as_str(), "http://127.0.0.1:4010/");
        assert_eq!(c.secrets_source, SecretsSource::Environment);
    }

    /// The registry's secret keys are the ones read: from the secret's JSON, and upper-cased from
    /// the environment for local runs. A missing key is named; only a list (webhook signing
    /// secrets) may be absent.
    #[test]
    fn every_secret_key_of_every_pg_is_read() {
        let value = |k: &str| if k.ends_with("_secrets") { serde_json::json!(["s"]) } else { serde_json::json!("v") };
        let full: serde_json::Map<String, serde_json::Value> =
            secret_keys().into_iter().map(|k| (k.to_string(), value(k))).collect();
        Secrets::from_json("arn:x", &serde_json::Value::Object(full.clone()).to_string()).unwrap();
        let upper: Vec<(String, String)> = secret_keys().into_iter().map(|k| (k.to_uppercase(), "v".into())).collect();
        Secrets::from_lookup(|n| upper.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())).unwrap();
        for key in secret_keys() {
            let mut doc = full.clone();
            doc.remove(key);
            match Secrets::from_json("arn:x", &serde_json::Value::Object(doc).to_string()) {
                Err(e) => assert!(e.to_string().contains(key), "{e} does not name {key}"),
                Ok(_) => assert!(key.ends_with("_secrets"), "{key} is required but its absence passed"),
            }
            let env: Vec<_> = upper.iter().filter(|(k, _)| *k != key.to_uppercase()).cloned().collect();
            match Secrets::from_lookup(|n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())) {
                Err(e) => assert!(e.to_string().contains(&key.to_uppercase()), "{e} does not name {key}"),
                Ok(_) => assert!(key.ends_with("_secrets"), "{key} is required but its absence passed"),
            }
        }
    }

    #[test]
    fn every_missing_variable_is_named() {
        for (var, _) in variables() {
            let pairs: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != var).collect();
            let err = Config::from_lookup(env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(var), "{err} does not name {var}");
            assert!(format!("{err:?}").contains(var), "Debug must stay readable: {err:?}");
        }
    }

    #[test]
    fn bad_urls_are_rejected_with_the_variable_name() {
        for bad in ["not a url", "ftp://x.example", "http://", "   "] {
            let mut pairs: Vec<_> = GOOD.to_vec();
            pairs.retain(|(k, _)| *k != "STEPPAY_BASE_URL");
            pairs.push(("STEPPAY_BASE_URL", bad));
            let err = Config::from_lookup(env(&pairs)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { var: "STEPPAY_BASE_URL", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn pg_timeouts_default_and_validate() {
        let c = Config::from_lookup(env(GOOD)).unwrap();
        assert_eq!((c.pg.pg_connect_timeout_ms, c.pg.pg_timeout_ms), (3_000, 20_000));
        let mut pairs = GOOD.to_vec();
        pairs.push(("PG_TIMEOUT_MS", "5000"));
        assert_eq!(Config::from_lookup(env(&pairs)).unwrap().pg.pg_timeout_ms, 5_000);
        pairs.push(("PG_CONNECT_TIMEOUT_MS", "fast"));
        let err = Config::from_lookup(env(&pairs)).unwrap_err();
        assert!(err.to_string().contains("PG_CONNECT_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn a_pg_budget_is_shared_by_the_workers_and_one_too_small_to_share_is_refused_at_boot() {
        let c = Config::from_lookup(env(GOOD)).unwrap();
        assert_eq!(c.pg.payple_budget, paycycle_pg::budget::Share { in_flight: None, interval: None }, "no limit");
        let mut pairs = GOOD.to_vec();
        pairs.extend([("PAYCYCLE_PG_BUDGET_SHARERS", "4"), ("PAYPLE_MAX_IN_FLIGHT", "64")]);
        pairs.push(("PAYPLE_REQUESTS_PER_SECOND", "100"));
        let share = Config::from_lookup(env(&pairs)).unwrap().pg.payple_budget;
        assert_eq!(share.in_flight, Some(16));
        assert_eq!(share.interval, Some(std::time::Duration::from_millis(40)), "4 workers at 100/s: 25/s each");
        pairs.push(("STEPPAY_MAX_IN_FLIGHT", "3"));
        let err = Config::from_lookup(env(&pairs)).unwrap_err();
        assert!(
            err.to_string().contains("STEPPAY_MAX_IN_FLIGHT") && err.to_string().contains("4 renew workers"),
            "{err}"
        );
    }

    #[test]
    fn the_secrets_ttl_defaults_to_five_minutes_and_names_its_variable_when_bad() {
        let c = Config::from_lookup(env(GOOD)).unwrap();
        assert_eq!(c.secrets_ttl, std::time::Duration::from_secs(300));
        let mut pairs = GOOD.to_vec();
        pairs.push(("PAYCYCLE_SECRETS_TTL_SECONDS", "1"));
        assert_eq!(Config::from_lookup(env(&pairs)).unwrap().secrets_ttl, std::time::Duration::from_secs(1));
        for bad in ["0", "soon", "86401"] {
            let mut pairs = GOOD.to_vec();
            pairs.push(("PAYCYCLE_SECRETS_TTL_SECONDS", bad));
            let err = Config::from_lookup(env(&pairs)).unwrap_err();
            assert!(err.to_string().contains("PAYCYCLE_SECRETS_TTL_SECONDS"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn secrets_manager_arn_selects_that_source() {
        let mut pairs = GOOD.to_vec();
        pairs.push(("PAYCYCLE_SECRETS", "arn:aws:secretsmanager:ap-northeast-2:1:secret:pc"));
        let c = Config::from_lookup(env(&pairs)).unwrap();
        assert_eq!(
            c.secrets_source,
            SecretsSource::SecretsManager("arn:aws:secretsmanager:ap-northeast-2:1:secret:pc".into())
        );
    }

    #[test]
    fn secret_document_parses_and_names_missing_keys_without_values() {
        let json = r#"{"steppay_secret_token":"tok-1","steppay_webhook_secrets":["a","b"],
            "payple_cst_id":"test","payple_cust_key":"abcd1234567890","payple_refund_key":"rk"}"#;
        let s = Secrets::from_json("arn:x", json).unwrap();
        assert_eq!(s.steppay_webhook_secrets.len(), 2);
        assert_eq!(s.payple_cust_key.expose(), "abcd1234567890");
        assert!(!format!("{s:?}").contains("abcd1234567890"));

        let joined = r#"{"steppay_secret_token":"t","steppay_webhook_secrets":"a;b, c",
            "payple_cst_id":"x","payple_cust_key":"y","payple_refund_key":"z"}"#;
        assert_eq!(Secrets::from_json("arn:x", joined).unwrap().steppay_webhook_secrets.len(), 3);

        let missing = r#"{"steppay_secret_token":"tok-SECRETVALUE","payple_cst_id":"x","payple_cust_key":"y"}"#;
        let err = Secrets::from_json("arn:x", missing).unwrap_err().to_string();
        assert!(err.contains("payple_refund_key") && err.contains("arn:x"), "{err}");
        assert!(!err.contains("SECRETVALUE"));

        let broken = Secrets::from_json("arn:x", "{\"steppay_secret_token\": SECRETVALUE").unwrap_err().to_string();
        assert!(!broken.contains("SECRETVALUE"), "{broken}");
    }

    #[test]
    fn environment_secrets_name_the_missing_variable() {
        let err = Secrets::from_lookup(env(&[("STEPPAY_SECRET_TOKEN", "t")])).unwrap_err();
        assert!(err.to_string().contains("PAYPLE_CST_ID"), "{err}");
        let s = Secrets::from_lookup(env(&[
            ("STEPPAY_SECRET_TOKEN", "t"),
            ("STEPPAY_WEBHOOK_SECRETS", "k1,k2"),
            ("PAYPLE_CST_ID", "test"),
            ("PAYPLE_CUST_KEY", "abcd1234567890"),
            ("PAYPLE_REFUND_KEY", "r"),
        ]))
        .unwrap();
        assert_eq!(s.steppay_webhook_secrets.len(), 2);
    }
}
