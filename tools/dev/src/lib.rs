//! The local stack (DESIGN §9): moto on 127.0.0.1 provisioned from `template.yaml`, the PG
//! sandbox, and every function's handler behind the template's HttpApi routes — the same handler
//! functions the Lambda binaries run, fed the same request shapes (HTTP API v2 requests with path
//! and query parameters and a Lambda context; EventBridge scheduled events for renew).
//!
//! Everything it starts binds 127.0.0.1 and is stopped by whoever holds the [`LocalStack`]: moto by
//! the PID it spawned (on drop), the servers by aborting their tasks.

pub mod clients;
#[cfg(feature = "contract")]
pub mod contract;
pub mod event_sink;
pub mod http_bridge;
pub mod iam_authorizer;
pub mod journey;
pub mod receiver;
pub mod seed;
pub mod sqs_feeder;
pub mod stream_feeder;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use paycycle::boot::Boot;
use paycycle_testkit::template::Route;
use paycycle_testkit::{MotoServer, Provisioned, Template};

pub use http_bridge::Functions;

/// Where and how to start the stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// Port of the API on 127.0.0.1 (0 = any free port). `make dev` and `make demo` use 3000.
    pub api_port: u16,
    /// `PG_TIMEOUT_MS` for the functions (tests shorten it to exercise unknown outcomes).
    pub pg_timeout_ms: Option<u64>,
    /// Start a moto server of its own even when `PAYCYCLE_MOTO_ENDPOINT` names a shared one
    /// (moto copies tables inside transactions, so heavy tests run faster alone).
    pub own_moto: bool,
    /// Which PGs the functions call: the sandbox (default) or hosts of the integrator's choosing.
    pub pg: PgTarget,
}

impl Default for Options {
    fn default() -> Self {
        Self { api_port: 3000, pg_timeout_ms: None, own_moto: false, pg: PgTarget::Sandbox }
    }
}

/// The PGs the local stack's functions call.
#[derive(Clone, Default)]
pub enum PgTarget {
    /// The PG sandbox this stack starts (its webhooks come back to this stack's API).
    #[default]
    Sandbox,
    /// Real PG test servers (`make dev PG=external`): the PG variables of a deployed function —
    /// [`EXTERNAL_PG_VARIABLES`] — as the integrator's environment gives them. The sandbox still
    /// starts (its admin routes stay up) but nothing points at it.
    External(BTreeMap<String, String>),
}

/// What `make dev PG=external` reads from the environment: the PGs' hosts, the domain registered
/// with Payple, and the PG credentials (as `PAYCYCLE_SECRETS` would hold them in AWS).
pub const EXTERNAL_PG_VARIABLES: &[&str] = &[
    "STEPPAY_BASE_URL",
    "PAYPLE_BASE_URL",
    "PAYPLE_REFERER",
    "STEPPAY_SECRET_TOKEN",
    "STEPPAY_WEBHOOK_SECRETS",
    "PAYPLE_CST_ID",
    "PAYPLE_CUST_KEY",
    "PAYPLE_REFUND_KEY",
];

/// Names the hosts, never the credentials.
impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sandbox => f.write_str("Sandbox"),
            Self::External(vars) => {
                let host = |k: &str| vars.get(k).map(String::as_str).unwrap_or("(unset)");
                write!(f, "External(steppay {}, payple {})", host("STEPPAY_BASE_URL"), host("PAYPLE_BASE_URL"))
            }
        }
    }
}

/// Payple's live host (PG-FACTS: test `democpay.payple.kr`, live `cpay.payple.kr`): the local
/// stack calls it only when `PAYCYCLE_ALLOW_LIVE_PG=1` says the developer means real money.
const PAYPLE_LIVE_HOST: &str = "cpay.payple.kr";

impl PgTarget {
    /// Whether the functions may travel in time: only against the sandbox, whose clock travels too.
    /// Against a real PG a `make tick NOW=<next month>` would charge real billing keys for periods
    /// not yet due.
    pub fn allows_time_travel(&self) -> bool {
        matches!(self, Self::Sandbox)
    }

    /// [`PgTarget::External`] from `lookup` (the process environment for `make dev PG=external`).
    /// Missing variables are named when the stack starts.
    pub fn external_from(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let vars = EXTERNAL_PG_VARIABLES.iter().filter_map(|k| lookup(k).map(|v| (k.to_string(), v))).collect();
        Self::External(vars)
    }

    /// Checks an external target's variables before anything starts: a missing or malformed one
    /// is named (the same checks a deployed function's start makes).
    pub fn check(&self) -> Result<(), StackError> {
        if let Self::External(vars) = self {
            let live = vars.get("PAYPLE_BASE_URL").is_some_and(|u| u.contains(PAYPLE_LIVE_HOST));
            if live && std::env::var("PAYCYCLE_ALLOW_LIVE_PG").as_deref() != Ok("1") {
                return Err(StackError::Io(std::io::Error::other(format!(
                    "PAYPLE_BASE_URL is Payple's live host ({PAYPLE_LIVE_HOST}): real cards would be charged; \
                     use https://democpay.payple.kr, or set PAYCYCLE_ALLOW_LIVE_PG=1 if you mean it"
                ))));
            }
        }
        let names = LocalNames { table: "t".into(), bus: "b".into(), kms_key: "k".into() };
        self.config(&names, "http://127.0.0.1:9", None).map(|_| ())
    }

    /// The functions' config and PG credentials for this target.
    fn config(
        &self,
        names: &LocalNames,
        sandbox_url: &str,
        pg_timeout_ms: Option<u64>,
    ) -> Result<(paycycle::Config, paycycle::config::Secrets), StackError> {
        match self {
            Self::Sandbox => Ok((local_config(names, sandbox_url, pg_timeout_ms)?, local_secrets())),
            Self::External(vars) => {
                let local = local_config(names, sandbox_url, pg_timeout_ms)?;
                let lookup = |k: &str| match k {
                    "PAYCYCLE_TABLE" => Some(local.table.clone()),
                    "PAYCYCLE_EVENT_BUS" => Some(local.event_bus.clone()),
                    "PAYCYCLE_BILLING_KEY_KMS_KEY" => Some(local.billing_key_kms_key.clone()),
                    "PG_TIMEOUT_MS" => pg_timeout_ms.map(|ms| ms.to_string()),
                    other => vars.get(other).cloned(),
                };
                Ok((paycycle::Config::from_lookup(lookup)?, paycycle::config::Secrets::from_lookup(lookup)?))
            }
        }
    }
}

/// A running local stack. Dropping it stops everything it started.
pub struct LocalStack {
    pub api_addr: SocketAddr,
    pub provisioned: Provisioned,
    pub routes: Vec<Route>,
    pub functions: Arc<Functions>,
    pub sandbox: pg_sandbox::Sandbox,
    /// The stream → verify feeder's progress and dead letters.
    pub feeder: Arc<stream_feeder::FeederState>,
    /// The webhook queues → deliver feeder's progress.
    pub sqs_feeder: Arc<sqs_feeder::SqsFeederState>,
    api_task: tokio::task::JoinHandle<()>,
    feeder_task: tokio::task::JoinHandle<()>,
    sqs_feeder_task: tokio::task::JoinHandle<()>,
    // Dropped last: the functions above may still be finishing a call.
    pub moto: MotoServer,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Kit(#[from] paycycle_testkit::KitError),
    #[error(transparent)]
    Config(#[from] paycycle::ConfigError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The StepPay v2 webhook signing secret of the local stack (the sandbox signs with it).
pub const LOCAL_STEPPAY_SIGNING_SECRET: &str = "local-steppay-webhook-secret";

pub use paycycle_fixtures::{LocalNames, local_config, local_secrets};

impl LocalStack {
    /// Starts moto (shared with `PAYCYCLE_MOTO_ENDPOINT` if set), provisions it from the template,
    /// starts the sandbox and the API.
    pub async fn start(options: Options) -> Result<Self, StackError> {
        options.pg.check()?;
        let template = Template::load()?;
        let moto = if options.own_moto { MotoServer::start()? } else { MotoServer::shared_or_start()? };
        let sdk = moto.sdk_config().await;
        let provisioned =
            paycycle_testkit::provision(&sdk, &template, &paycycle_testkit::provision::unique_prefix()).await?;
        let sandbox = pg_sandbox::Sandbox::start(0).await?;

        let names = paycycle_fixtures::LocalNames::of(&provisioned);
        let (config, secrets) = options.pg.config(&names, &sandbox.base_url(), options.pg_timeout_ms)?;
        let external = matches!(options.pg, PgTarget::External(_));
        let credentials = paycycle::boot::credentials(&config, &sdk, &secrets);
        let boot = Boot { config, sdk, secrets, credentials };

        let routes = template.http_routes()?;
        let feeder_sdk = boot.sdk.clone();
        let queue = |id: &str| provisioned.queues.get(id).cloned().unwrap_or_default();
        let webhooks = paycycle::config::WebhookConfig {
            table: provisioned.table.clone(),
            delivery_queue_url: queue("WebhookDeliveriesQueue"),
            dead_letter_queue_url: Some(queue("WebhookDeadLetterQueue")),
            allow_time_travel: !external,
        };
        let sandbox_url = (!external).then(|| sandbox.base_url());
        let mut functions = Functions::new(boot, sandbox_url, &webhooks);
        functions.allow_time_travel(options.pg.allows_time_travel());
        let functions = Arc::new(functions);
        let app = http_bridge::router(&routes, functions.clone())?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.api_port)).await?;
        let api_addr = listener.local_addr()?;
        let api_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // The PGs deliver their webhooks to the local API, StepPay's v2 ones signed.
        {
            let mut config = sandbox.shared.config.lock().expect("sandbox config");
            config.steppay_webhook_url = Some(format!("http://{api_addr}/webhooks/steppay"));
            config.payple_webhook_url = Some(format!("http://{api_addr}/webhooks/payple"));
            config.steppay_signing_secret = Some(LOCAL_STEPPAY_SIGNING_SECRET.to_string());
        }
        let feeder = Arc::new(stream_feeder::FeederState::default());
        let (verify_deps, table, state) =
            (Arc::new(functions.verify_deps()), provisioned.table.clone(), feeder.clone());
        let stream_sdk = feeder_sdk.clone();
        let feeder_task = tokio::spawn(async move {
            if let Err(e) = stream_feeder::run(stream_sdk, table, verify_deps, state).await {
                tracing::error!(error = %e, "the stream feeder stopped: webhooks will not be verified");
            }
        });
        let sqs_feeder = Arc::new(sqs_feeder::SqsFeederState::default());
        let (deliver_deps, state, sdk) = (Arc::new(functions.deliver_deps()), sqs_feeder.clone(), feeder_sdk.clone());
        let queues = vec![queue("WebhookEventsQueue"), queue("WebhookDeliveriesQueue")];
        let sqs_feeder_task = tokio::spawn(sqs_feeder::run(sdk, queues, deliver_deps, state));
        Ok(Self {
            api_addr,
            provisioned,
            routes,
            functions,
            sandbox,
            feeder,
            sqs_feeder,
            api_task,
            feeder_task,
            sqs_feeder_task,
            moto,
        })
    }

    /// A store on the stack's table (for setup and inspection).
    pub async fn store(&self) -> paycycle::store::Store {
        let sdk = paycycle_testkit::moto::sdk_config_for(self.moto.endpoint()).await;
        paycycle::store::Store::new(&sdk, &self.provisioned.table)
    }

    /// A billing-key vault on the stack's KMS key, of its own (as another process's would be: its
    /// own data key, its own cache).
    pub async fn vault(&self) -> paycycle::store::vault::KeyVault {
        let sdk = paycycle_testkit::moto::sdk_config_for(self.moto.endpoint()).await;
        paycycle::store::vault::KeyVault::new(&sdk, paycycle_fixtures::kms_key(&self.provisioned))
    }

    /// `r`'s billing key, opened (it is stored sealed): what tests hand the sandbox.
    pub async fn billing_key_of(&self, r: &paycycle::store::subscriptions::SubscriptionRecord) -> Option<String> {
        let stored = r.billing_key.as_ref()?;
        Some(self.vault().await.open(r.id(), stored).await.ok()?.expose().to_string())
    }

    /// Creates an API key for `partner` in the stack's table and returns it.
    pub async fn create_api_key(&self, name: &str, partner: &str) -> Result<String, paycycle::store::StoreError> {
        let key = paycycle::store::api_keys::generate_api_key();
        self.store().await.create_api_key(&key, name, partner, jiff::Timestamp::now()).await?;
        Ok(key)
    }

    /// Waits until the sandbox has made at least `deliveries` webhook deliveries and verify has
    /// processed every webhook event stored so far (two empty stream polls after that).
    pub async fn settle_webhooks(&self, deliveries: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.sandbox.shared.state.lock().expect("sandbox state").deliveries.len() < deliveries
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.drain_stream().await;
    }

    /// Waits until the stream feeder has caught up with every write made before the call.
    pub async fn drain_stream(&self) {
        two_more_empty_polls(&self.feeder.empty_polls, 30).await;
    }

    /// Waits until the webhook queues have been empty for two polls after the call (every event
    /// published before it fanned out, every queued delivery attempted).
    pub async fn drain_webhooks(&self) {
        two_more_empty_polls(&self.sqs_feeder.empty_polls, 60).await;
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// A client of the admin routes signed as the local operator ([`iam_authorizer`]).
    pub fn operator(&self) -> paycycle_cli::Operator {
        let op = &iam_authorizer::LOCAL_OPERATOR;
        paycycle_cli::Operator::with_credentials(&self.api_url(), iam_authorizer::REGION, op.credentials())
            .expect("the stack's API URL is an http URL")
    }
}

impl LocalStack {
    /// Every body that crossed the sandbox off the shape its PG documents, so far (issue #21 §2).
    pub fn shape_violations(&self) -> Vec<String> {
        let log = self.sandbox.shared.shape_log.lock().expect("shape log");
        log.violations.iter().map(ToString::to_string).collect()
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.api_task.abort();
        self.feeder_task.abort();
        self.sqs_feeder_task.abort();
        // Every test that runs a local stack also checks that our client sent, and the sandbox
        // answered, only what the PGs document: a drift on either side fails it here.
        let violations = self.shape_violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("bodies off their PG's documented shape (pg-shapes/):\n{}", violations.join("\n"));
        }
        // And every event it published matched its schema in openapi.yaml's catalog.
        let events = self.sqs_feeder.catalog_violations.lock().map(|v| v.clone()).unwrap_or_default();
        if !events.is_empty() && !std::thread::panicking() {
            panic!("events off their catalog schema (openapi.yaml webhooks):\n{}", events.join("\n"));
        }
    }
}

/// Waits (at most `timeout_s`) until a feeder counted two more polls that found nothing: what
/// was written before the call has been handled.
async fn two_more_empty_polls(empty_polls: &std::sync::atomic::AtomicU64, timeout_s: u64) {
    use std::sync::atomic::Ordering;
    let start = empty_polls.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    while empty_polls.load(Ordering::SeqCst) < start + 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A billing-key vault on the template's KMS key, created at `sdk`'s endpoint (moto); in memory
/// where that endpoint has no KMS (Dynoxide, which the chaos suite and the benchmarks may run on).
pub async fn billing_key_vault(sdk: &aws_config::SdkConfig, prefix: &str) -> paycycle::store::vault::KeyVault {
    use paycycle::store::vault::KeyVault;
    let template = match Template::load() {
        Ok(t) => t,
        Err(_) => return KeyVault::in_memory(),
    };
    match paycycle_testkit::provision::provision_kms_keys(sdk, &template, prefix).await {
        Ok(keys) => keys.values().next().map_or_else(KeyVault::in_memory, |arn| KeyVault::new(sdk, arn)),
        Err(e) => {
            tracing::warn!(error = %e, "no KMS at this endpoint: billing keys are sealed in memory");
            KeyVault::in_memory()
        }
    }
}

/// An active monthly subscription anchored at `anchor` with a billing key the sandbox knows,
/// written straight to the store, its key sealed by `vault` as verify seals it (benchmarks and the
/// chaos suite seed thousands this way).
pub async fn seed_subscription(
    store: &paycycle::store::Store,
    vault: &paycycle::store::vault::KeyVault,
    id: &str,
    pg: paycycle::pg::PgMode,
    anchor: jiff::Timestamp,
    amount: i64,
    billing_key: &str,
) -> Result<paycycle::store::subscriptions::SubscriptionRecord, String> {
    let builder = paycycle_fixtures::subscription(id).pg(pg).anchor(anchor).amount(amount);
    let record = builder.billing_key(Some(billing_key)).sealed(vault).await;
    store.create_subscription(&record).await.map_err(|e| e.to_string())?;
    Ok(record)
}

/// The sample partner shop (`examples/checkout`) beside a stack: its backend holds `api_key`, its
/// pages load the sandbox's stand-ins for Payple's window script and StepPay's SDK, and its
/// managed plan is a StepPay price defined in the sandbox (19,900원 a month). `port` 0 = any.
pub async fn start_example_shop(
    stack: &LocalStack,
    api_key: &str,
    port: u16,
) -> Result<paycycle_example_checkout::Shop, String> {
    let sandbox = stack.sandbox.base_url();
    let managed = paycycle_example_checkout::PLANS.iter().find(|p| p.pg == "steppay_managed").map_or(0, |p| p.amount);
    clients::Sandbox::new(sandbox.clone()).steppay_price("prod_pro", "price_monthly", managed).await?;
    let config = paycycle_example_checkout::ShopConfig {
        api: stack.api_url(),
        api_key: api_key.to_string(),
        payple_script: format!("{sandbox}/js/v1/payment.js"),
        steppay_sdk: format!("{sandbox}/js/steppay-0.7.1.js"),
        steppay_product_code: "prod_pro".into(),
        steppay_price_code: "price_monthly".into(),
    };
    paycycle_example_checkout::Shop::start(port, config).await.map_err(|e| format!("the example shop: {e}"))
}
