//! The cold start every function shares: logs first (so a bad start is logged), then config,
//! then the AWS SDK config, then secrets. `main` calls [`start`] and hands the result to its
//! handler's dependencies; an error here stops the function with a message naming the variable.

use crate::config::{Config, ConfigError, Secrets, SecretsSource};
use crate::events::EventPublisher;
use crate::pg::{Credentials, Registry};
use crate::store::Store;
use crate::store::vault::KeyVault;

/// What a function needs from the environment, built once per cold start.
#[derive(Clone, Debug)]
pub struct Boot {
    pub config: Config,
    pub sdk: aws_config::SdkConfig,
    /// The PG credentials as loaded at the cold start.
    pub secrets: Secrets,
    /// The PG credentials as the clients read them per request: [`Boot::secrets`], kept current
    /// from Secrets Manager with a TTL ([`crate::secrets`]); fixed for the environment source.
    pub credentials: Credentials,
}

/// Initializes logging and loads config, SDK config and secrets. `function` names the Lambda in
/// the start-up log line.
pub async fn start(function: &'static str) -> Result<Boot, ConfigError> {
    crate::telemetry::init();
    crate::metrics::install(function);
    let result = load().await;
    match &result {
        Ok(boot) => {
            tracing::info!(function, table = %boot.config.table, bus = %boot.config.event_bus, "started")
        }
        Err(e) => {
            tracing::error!(function, error = %e, "bad configuration");
            eprintln!("{function}: {e}");
        }
    }
    result
}

async fn load() -> Result<Boot, ConfigError> {
    let config = Config::from_env()?;
    let sdk = crate::aws::load().await;
    let secrets = crate::config::load_secrets(&config.secrets_source, &sdk).await?;
    let credentials = credentials(&config, &sdk, &secrets);
    Ok(Boot { config, sdk, secrets, credentials })
}

/// The per-request credentials over `loaded`: cached with the TTL for a Secrets Manager source.
pub fn credentials(config: &Config, sdk: &aws_config::SdkConfig, loaded: &Secrets) -> Credentials {
    match &config.secrets_source {
        SecretsSource::SecretsManager(id) => {
            let client = crate::config::secrets_manager(sdk, None);
            crate::secrets::SecretsCache::credentials(client, id, config.secrets_ttl, loaded.clone())
        }
        SecretsSource::Environment => Credentials::fixed(loaded.clone()),
    }
}

/// What the functions that move money share, built once per cold start from [`Boot`]: the store,
/// the PG registry, the event publisher and the billing-key vault (it calls KMS only when a key
/// is sealed or opened, so a function that does neither needs no KMS permission). refund, verify
/// and subscriptions take exactly this as their dependencies; renew adds its settings.
#[derive(Clone, Debug)]
pub struct Services {
    pub store: Store,
    pub pgs: Registry,
    pub publisher: EventPublisher,
    pub vault: KeyVault,
}

impl Services {
    pub fn new(boot: &Boot) -> Self {
        Self {
            store: Store::new(&boot.sdk, &boot.config.table),
            pgs: Registry::new(&boot.config.pg, &boot.secrets).with_credentials(&boot.credentials),
            publisher: EventPublisher::new(&boot.sdk, &boot.config.event_bus),
            vault: KeyVault::new(&boot.sdk, &boot.config.billing_key_kms_key),
        }
    }
}

/// The cold start of the partner-webhook functions: logs, [`WebhookConfig`], the SDK config. They
/// call no PG, so they load no PG settings or credentials.
pub async fn start_webhooks(
    function: &'static str,
) -> Result<(crate::config::WebhookConfig, aws_config::SdkConfig), ConfigError> {
    crate::telemetry::init();
    crate::metrics::install(function);
    let config = logged_start(function, crate::config::WebhookConfig::from_env(), |c| &c.table)?;
    Ok((config, crate::aws::load().await))
}

/// The cold start of the admin function: logs, `PAYCYCLE_TABLE`, the SDK config. It calls no PG
/// and publishes nothing, so it loads no PG settings, credentials or bus.
pub async fn start_admin(function: &'static str) -> Result<(String, aws_config::SdkConfig), ConfigError> {
    crate::telemetry::init();
    crate::metrics::install(function);
    let lookup = |name: &str| std::env::var(name).ok();
    let table = paycycle_pg::config::required(&lookup, "PAYCYCLE_TABLE", crate::config::COMMON_VARIABLES);
    let table = logged_start(function, table, |t| t)?;
    Ok((table, crate::aws::load().await))
}

/// Logs a start (naming the table) or its bad configuration, and passes the result on.
fn logged_start<T>(
    function: &'static str,
    result: Result<T, ConfigError>,
    table: impl Fn(&T) -> &String,
) -> Result<T, ConfigError> {
    match &result {
        Ok(config) => tracing::info!(function, table = %table(config), "started"),
        Err(e) => {
            tracing::error!(function, error = %e, "bad configuration");
            eprintln!("{function}: {e}");
        }
    }
    result
}
