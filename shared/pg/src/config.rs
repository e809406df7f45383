//! What the PGs need configured: their variables, their settings (base URLs, Referer, timeouts)
//! and their credentials. Only this crate knows which PG needs what; the `paycycle` facade's
//! `config` reads the common variables and hands these to [`Registry::new`](crate::Registry::new).
//! Nothing here ever prints a secret.

use std::fmt;

use paycycle_domain::gateway::Pg;
use paycycle_domain::secret::Secret;
use url::Url;

use crate::budget::{BudgetLimits, Share};

/// What a PG needs configured ([`PgConfigured::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// Environment variables, with what each is for (named in error messages).
    pub variables: &'static [(&'static str, &'static str)],
    /// Keys of the PG-credentials secret.
    pub secret_keys: &'static [&'static str],
}

/// The configuration facts of a PG (a trait: [`Pg`] is the domain's, its settings are ours).
pub trait PgConfigured {
    /// What this PG needs configured.
    fn config(self) -> PgConfig;
}

impl PgConfigured for Pg {
    /// What this PG needs configured: the environment variables every function reads (in the
    /// template's `Globals`), and the keys of the PG-credentials secret (`PAYCYCLE_SECRETS`; the
    /// same names upper-cased as variables for local runs). [`variables`] and [`secret_keys`] list them all.
    fn config(self) -> PgConfig {
        match self {
            Pg::Steppay => PgConfig {
                variables: &[("STEPPAY_BASE_URL", "StepPay's API base URL, e.g. https://api.steppay.kr")],
                secret_keys: &["steppay_secret_token", "steppay_webhook_secrets"],
            },
            Pg::Payple => PgConfig {
                variables: &[
                    ("PAYPLE_BASE_URL", "Payple's API base URL, e.g. https://cpay.payple.kr"),
                    ("PAYPLE_REFERER", "the Referer registered with Payple, e.g. https://shop.example.com"),
                ],
                secret_keys: &["payple_cst_id", "payple_cust_key", "payple_refund_key"],
            },
        }
    }
}

/// Every PG variable with what it is for (named in error messages).
pub fn variables() -> Vec<(&'static str, &'static str)> {
    Pg::ALL.into_iter().flat_map(|pg| pg.config().variables.iter().copied()).collect()
}

/// Every key of the PG-credentials secret, of every PG in the registry.
pub fn secret_keys() -> Vec<&'static str> {
    Pg::ALL.into_iter().flat_map(|pg| pg.config().secret_keys.iter().copied()).collect()
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

/// What `var` is for: `extra` (the caller's own variables) first, then the PGs'.
fn what(var: &'static str, extra: &[(&'static str, &'static str)]) -> &'static str {
    extra.iter().copied().chain(variables()).find(|(name, _)| *name == var).map(|(_, what)| what).unwrap_or("required")
}

/// A required, non-empty variable; `extra` describes the caller's own variables for the message.
pub fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    extra: &[(&'static str, &'static str)],
) -> Result<String, ConfigError> {
    match lookup(var) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Some(_) => Err(ConfigError::Invalid { var, reason: "is empty".into() }),
        None => Err(ConfigError::Missing { var, what: what(var, extra) }),
    }
}

pub fn http_url(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Url, ConfigError> {
    let raw = required(lookup, var, &[])?;
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

/// Where the PGs are and how long paycycle waits for them.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub steppay_base_url: Url,
    pub payple_base_url: Url,
    /// Payple rejects calls whose `Referer` is not the registered domain (AUTH0004/AUTH0007).
    pub payple_referer: Url,
    /// `PG_CONNECT_TIMEOUT_MS` (default 3000) and `PG_TIMEOUT_MS` (default 20000): a PG call that
    /// takes longer becomes an unknown outcome and is looked up, never retried blind.
    pub pg_connect_timeout_ms: u64,
    pub pg_timeout_ms: u64,
    /// This process's share of each PG's request budget ([`crate::budget`]).
    pub steppay_budget: Share,
    pub payple_budget: Share,
}

impl PgSettings {
    /// Reads from any lookup (the facade's `Config::from_lookup` passes the environment's).
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let millis =
            |var: &'static str, default: u64| -> Result<u64, ConfigError> {
                match lookup(var) {
                    None => Ok(default),
                    Some(v) => v.trim().parse::<u64>().ok().filter(|ms| (100..=900_000).contains(ms)).ok_or(
                        ConfigError::Invalid { var, reason: format!("milliseconds between 100 and 900000, got {v:?}") },
                    ),
                }
            };
        Ok(Self {
            steppay_base_url: http_url(lookup, "STEPPAY_BASE_URL")?,
            payple_base_url: http_url(lookup, "PAYPLE_BASE_URL")?,
            payple_referer: http_url(lookup, "PAYPLE_REFERER")?,
            pg_connect_timeout_ms: millis("PG_CONNECT_TIMEOUT_MS", 3_000)?,
            pg_timeout_ms: millis("PG_TIMEOUT_MS", 20_000)?,
            steppay_budget: budget_share(lookup, "STEPPAY_MAX_IN_FLIGHT", "STEPPAY_REQUESTS_PER_SECOND")?,
            payple_budget: budget_share(lookup, "PAYPLE_MAX_IN_FLIGHT", "PAYPLE_REQUESTS_PER_SECOND")?,
        })
    }
}

/// The processes that share every PG budget: `PAYCYCLE_PG_BUDGET_SHARERS` (the renew workers'
/// maximum concurrency in the template), else 1.
const SHARERS: &str = "PAYCYCLE_PG_BUDGET_SHARERS";

/// This process's share of the PG budget in `in_flight_var` / `per_second_var` (unset: no limit).
/// A total smaller than the number of sharers is refused at boot: each would get less than one,
/// and rounding it up would exceed the PG's budget.
fn budget_share(
    lookup: &impl Fn(&str) -> Option<String>,
    in_flight_var: &'static str,
    per_second_var: &'static str,
) -> Result<Share, ConfigError> {
    let count =
        |var: &'static str| -> Result<Option<u32>, ConfigError> {
            match lookup(var).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u32>().ok().filter(|n| (1..=100_000).contains(n)).map(Some).ok_or(
                    ConfigError::Invalid { var, reason: format!("a whole number between 1 and 100000, got {v:?}") },
                ),
            }
        };
    let sharers = count(SHARERS)?.unwrap_or(1);
    let limits = BudgetLimits { in_flight: count(in_flight_var)?, per_second: count(per_second_var)? };
    limits.share(sharers).ok_or(ConfigError::Invalid {
        var: in_flight_var,
        reason: format!(
            "{limits:?} cannot be shared by {sharers} renew workers ({SHARERS}): lower RenewWorkerMaxConcurrency or raise the budget"
        ),
    })
}

/// The PG credentials. Loaded once per cold start (the facade's `config::load_secrets`).
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
        // Only the error's class and position: serde's message quotes an unexpected value whole
        // (a document stored as a JSON string would be logged with every key in it).
        let doc: SecretDocument = serde_json::from_str(json).map_err(|e| {
            err(format!(
                "not the expected JSON object ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
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
}
