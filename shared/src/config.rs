//! Configuration from the environment (DESIGN §8), read once per cold start.
//!
//! Every variable is required and validated here, so a mistake in the template or the local
//! stack fails the function at start with a message that names the variable, not at 3 a.m. on
//! the first renewal. Secrets come from Secrets Manager (`PAYCYCLE_SECRETS`, an ARN) in AWS and
//! from plain variables locally; see [`Secrets`]. Nothing here ever prints a secret.

use std::fmt;

use url::Url;

use crate::pg::Pg;
use crate::secret::Secret;

/// The variables of DESIGN §8 every function reads, besides each PG's ([`variables`]).
pub const COMMON_VARIABLES: &[(&str, &str)] =
    &[("PAYCYCLE_TABLE", "the DynamoDB table name"), ("PAYCYCLE_EVENT_BUS", "the EventBridge bus name")];

/// Every required variable with what it is for (used in error messages): the common ones and
/// those of every PG in the registry ([`Pg::config`]).
pub fn variables() -> Vec<(&'static str, &'static str)> {
    let pgs = Pg::ALL.into_iter().flat_map(|pg| pg.config().variables.iter().copied());
    COMMON_VARIABLES.iter().copied().chain(pgs).collect()
}

/// Every key of the PG-credentials secret, of every PG in the registry ([`Pg::config`]).
pub fn secret_keys() -> Vec<&'static str> {
    Pg::ALL.into_iter().flat_map(|pg| pg.config().secret_keys.iter().copied()).collect()
}

#[derive(Clone, Debug)]
pub struct Config {
    pub table: String,
    pub event_bus: String,
    pub steppay_base_url: Url,
    pub payple_base_url: Url,
    /// Payple rejects calls whose `Referer` is not the registered domain (AUTH0004/AUTH0007).
    pub payple_referer: Url,
    pub secrets_source: SecretsSource,
    /// `PG_CONNECT_TIMEOUT_MS` (default 3000) and `PG_TIMEOUT_MS` (default 20000): a PG call that
    /// takes longer becomes an unknown outcome and is looked up, never retried blind.
    pub pg_connect_timeout_ms: u64,
    pub pg_timeout_ms: u64,
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

#[derive(thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing environment variable {var} ({what})")]
    Missing { var: &'static str, what: &'static str },
    #[error("invalid environment variable {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("secret {source_name}: {reason}")]
    Secret { source_name: String, reason: String },
}

// `main` returns this through `lambda_runtime`, which prints errors with `Debug`: keep the readable
// message there too.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn what(var: &'static str) -> &'static str {
    variables().into_iter().find(|(name, _)| *name == var).map(|(_, what)| what).unwrap_or("required")
}

fn required(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<String, ConfigError> {
    match lookup(var) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Some(_) => Err(ConfigError::Invalid { var, reason: "is empty".into() }),
        None => Err(ConfigError::Missing { var, what: what(var) }),
    }
}

fn http_url(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Url, ConfigError> {
    let raw = required(lookup, var)?;
    let url =
        Url::parse(&raw).map_err(|e| ConfigError::Invalid { var, reason: format!("not a URL ({e}): {raw:?}") })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("scheme must be http or https, got {:?}", url.scheme()),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::Invalid { var, reason: "has no host".into() });
    }
    Ok(url)
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from any lookup (tests pass a map; the process environment is never mutated).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = required(&lookup, "PAYCYCLE_TABLE")?;
        let event_bus = required(&lookup, "PAYCYCLE_EVENT_BUS")?;
        let steppay_base_url = http_url(&lookup, "STEPPAY_BASE_URL")?;
        let payple_base_url = http_url(&lookup, "PAYPLE_BASE_URL")?;
        let payple_referer = http_url(&lookup, "PAYPLE_REFERER")?;
        let millis =
            |var: &'static str, default: u64| -> Result<u64, ConfigError> {
                match lookup(var) {
                    None => Ok(default),
                    Some(v) => v.trim().parse::<u64>().ok().filter(|ms| (100..=900_000).contains(ms)).ok_or(
                        ConfigError::Invalid { var, reason: format!("milliseconds between 100 and 900000, got {v:?}") },
                    ),
                }
            };
        let pg_connect_timeout_ms = millis("PG_CONNECT_TIMEOUT_MS", 3_000)?;
        let pg_timeout_ms = millis("PG_TIMEOUT_MS", 20_000)?;
        let secrets_source = match lookup("PAYCYCLE_SECRETS") {
            Some(arn) if !arn.trim().is_empty() => SecretsSource::SecretsManager(arn.trim().to_string()),
            _ => SecretsSource::Environment,
        };
        Ok(Self {
            table,
            event_bus,
            steppay_base_url,
            payple_base_url,
            payple_referer,
            secrets_source,
            pg_connect_timeout_ms,
            pg_timeout_ms,
        })
    }
}

/// The PG credentials. Loaded once per cold start by [`Secrets::load`].
#[derive(Clone, Debug)]
pub struct Secrets {
    /// StepPay `Secret-Token` (also sent as `Secret-Key` on refunds).
    pub steppay_secret_token: Secret,
    /// StepPay v2 webhook signing secrets; empty = signatures are not checked (DESIGN §3).
    /// More than one during key rotation.
    pub steppay_webhook_secrets: Vec<Secret>,
    /// Payple partner id (`cst_id`).
    pub payple_cst_id: Secret,
    /// Payple partner key (`custKey`).
    pub payple_cust_key: Secret,
    /// Payple `PCD_REFUND_KEY`.
    pub payple_refund_key: Secret,
}

/// The JSON object stored in Secrets Manager.
#[derive(serde::Deserialize)]
struct SecretDocument {
    steppay_secret_token: Option<Secret>,
    #[serde(default)]
    steppay_webhook_secrets: Option<WebhookSecrets>,
    payple_cst_id: Option<Secret>,
    payple_cust_key: Option<Secret>,
    payple_refund_key: Option<Secret>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum WebhookSecrets {
    List(Vec<Secret>),
    Joined(Secret),
}

fn split_keys(joined: &str) -> Vec<Secret> {
    joined.split([',', ';']).map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect()
}

impl Secrets {
    /// Local runs: from plain environment variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let secret = |var: &'static str| -> Result<Secret, ConfigError> {
            match lookup(var) {
                Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                _ => Err(ConfigError::Missing { var, what: "a PG credential (set PAYCYCLE_SECRETS in AWS)" }),
            }
        };
        Ok(Self {
            steppay_secret_token: secret("STEPPAY_SECRET_TOKEN")?,
            steppay_webhook_secrets: lookup("STEPPAY_WEBHOOK_SECRETS").as_deref().map(split_keys).unwrap_or_default(),
            payple_cst_id: secret("PAYPLE_CST_ID")?,
            payple_cust_key: secret("PAYPLE_CUST_KEY")?,
            payple_refund_key: secret("PAYPLE_REFUND_KEY")?,
        })
    }

    /// Parses the Secrets Manager document. `source_name` is the ARN, used in error messages.
    pub fn from_json(source_name: &str, json: &str) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::Secret { source_name: source_name.to_string(), reason };
        // serde_json's error text never contains the input's values, only positions.
        let doc: SecretDocument =
            serde_json::from_str(json).map_err(|e| err(format!("not the expected JSON object: {e}")))?;
        let need = |field: Option<Secret>, key: &str| {
            field.filter(|s| !s.is_empty()).ok_or_else(|| err(format!("missing key {key:?}")))
        };
        Ok(Self {
            steppay_secret_token: need(doc.steppay_secret_token, "steppay_secret_token")?,
            steppay_webhook_secrets: match doc.steppay_webhook_secrets {
                None => Vec::new(),
                Some(WebhookSecrets::List(keys)) => keys.into_iter().filter(|k| !k.is_empty()).collect(),
                Some(WebhookSecrets::Joined(joined)) => split_keys(joined.expose()),
            },
            payple_cst_id: need(doc.payple_cst_id, "payple_cst_id")?,
            payple_cust_key: need(doc.payple_cust_key, "payple_cust_key")?,
            payple_refund_key: need(doc.payple_refund_key, "payple_refund_key")?,
        })
    }

    /// Loads from wherever `source` says.
    pub async fn load(source: &SecretsSource, sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        Self::load_recorded(source, sdk, None).await
    }

    /// [`Secrets::load`], with the Secrets Manager call recorded in `log` (the IAM test checks
    /// it against each function's policy).
    pub async fn load_recorded(
        source: &SecretsSource,
        sdk: &aws_config::SdkConfig,
        log: Option<&std::sync::Arc<crate::aws::calls::CallLog>>,
    ) -> Result<Self, ConfigError> {
        match source {
            SecretsSource::Environment => Self::from_lookup(|name| std::env::var(name).ok()),
            SecretsSource::SecretsManager(id) => {
                let mut config = aws_sdk_secretsmanager::config::Builder::from(sdk);
                if let Some(log) = log {
                    config = config.interceptor(log.interceptor());
                }
                let client = aws_sdk_secretsmanager::Client::from_conf(config.build());
                let out = client.get_secret_value().secret_id(id).send().await.map_err(|e| ConfigError::Secret {
                    source_name: id.clone(),
                    reason: format!("GetSecretValue failed: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)),
                })?;
                let json = out.secret_string().ok_or_else(|| ConfigError::Secret {
                    source_name: id.clone(),
                    reason: "has no SecretString".into(),
                })?;
                Self::from_json(id, json)
            }
        }
    }
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
        ("STEPPAY_BASE_URL", "http://127.0.0.1:4010"),
        ("PAYPLE_BASE_URL", "http://127.0.0.1:4010/payple"),
        ("PAYPLE_REFERER", "https://shop.example.com"),
    ];

    #[test]
    fn loads_a_complete_environment() {
        let c = Config::from_lookup(env(GOOD)).unwrap();
        assert_eq!(c.table, "paycycle");
        assert_eq!(c.steppay_base_url.as_str(), "http://127.0.0.1:4010/");
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
        assert_eq!((c.pg_connect_timeout_ms, c.pg_timeout_ms), (3_000, 20_000));
        let mut pairs = GOOD.to_vec();
        pairs.push(("PG_TIMEOUT_MS", "5000"));
        assert_eq!(Config::from_lookup(env(&pairs)).unwrap().pg_timeout_ms, 5_000);
        pairs.push(("PG_CONNECT_TIMEOUT_MS", "fast"));
        let err = Config::from_lookup(env(&pairs)).unwrap_err();
        assert!(err.to_string().contains("PG_CONNECT_TIMEOUT_MS"), "{err}");
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
