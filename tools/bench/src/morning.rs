//! A morning of renewals, set up for one measured run: a fresh Dynoxide with the table and a fresh
//! PG sandbox, N StepPay-self subscriptions due now whose every charge the sandbox holds for the
//! run's PG latency, and renew's dependencies pointed at them. After the run, [`Morning::ledger`]
//! checks the PG's side: exactly N charges, N distinct order ids.
//!
//! The DynamoDB is Dynoxide (a DynamoDB-compatible server, SQLite in memory) through the real SDK:
//! moto answers about a hundred requests per second one at a time, so it would measure moto, not
//! renew. EventBridge is a counting PutEvents endpoint (`EventSink`) for the same reason; the
//! moto-backed tests prove the events themselves. Every SDK client here sends through
//! [`RoundTrips`], which notes who waited for which request.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::events::EventPublisher;
use paycycle::pg::{PgMode, Registry};
use paycycle::store::Store;
use paycycle::store::subscriptions::{due_shard, due_shards};
use paycycle_dev::clients::Sandbox as SandboxClient;
use paycycle_dev::event_sink::EventSink;
use paycycle_dev::seed_subscription;
use paycycle_testkit::Template;
use serde_json::json;

use crate::dynoxide::Dynoxide;
use crate::round_trips::RoundTrips;

/// How the due subscriptions lie over the due index's shards.
#[derive(Clone, Copy, Debug)]
pub enum Spread {
    /// Exactly `per_shard` in every shard (ids picked by their shard): a morning's shards hold
    /// thousands each, so a worker's concurrency never waits on a shard's last few; at bench
    /// sizes a random spread would measure shard ends instead.
    Even { per_shard: usize },
    /// `subscriptions` ids spread by their hash, as production spreads them.
    Hashed { subscriptions: usize },
}

impl Spread {
    /// The subscription ids to seed.
    fn ids(self) -> Result<Vec<String>, String> {
        let per_shard = match self {
            Spread::Hashed { subscriptions } => return Ok((0..subscriptions).map(|i| format!("sub_tp{i}")).collect()),
            Spread::Even { per_shard } => per_shard,
        };
        let mut filled: HashMap<String, usize> = due_shards().into_iter().map(|s| (s, 0)).collect();
        let wanted = per_shard * filled.len();
        let mut ids = Vec::with_capacity(wanted);
        for i in 0.. {
            if ids.len() == wanted {
                break;
            }
            let id = format!("sub_tp{i}");
            let shard = due_shard(&SubscriptionId::parse(&id).map_err(|e| e.to_string())?);
            let n = filled.get_mut(&shard).ok_or(format!("{shard} is not among the due shards"))?;
            if *n < per_shard {
                *n += 1;
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// What every morning shares: the emulator to start, the events sink, the round-trip log.
pub struct Bench {
    pub dynoxide: PathBuf,
    pub sink: EventSink,
    pub template: Template,
    pub trips: RoundTrips,
}

impl Bench {
    pub async fn new(dynoxide: &Path) -> Result<Self, String> {
        Ok(Self {
            dynoxide: dynoxide.to_path_buf(),
            sink: EventSink::start().await.map_err(|e| e.to_string())?,
            template: Template::load().map_err(|e| e.to_string())?,
            trips: RoundTrips::default(),
        })
    }

    /// The template's table without its stream: renew never reads it, and an emulator's stream
    /// grows with every write (Dynoxide's writes slow down as it does).
    fn table_without_stream(&self) -> Result<paycycle_testkit::template::TableDef, String> {
        let mut def = self.template.table().map_err(|e| e.to_string())?;
        def.stream_view_type = None;
        Ok(def)
    }
}

/// One morning, ready to run.
pub struct Morning {
    /// renew's dependencies (no shard queue: a run adds one to fan out).
    pub deps: renew::Deps,
    pub subscriptions: usize,
    pub latency: Duration,
    pub setup_seconds: f64,
    client: SandboxClient,
    /// Held for the run: dropping them stops the sandbox and the emulator.
    _sandbox: pg_sandbox::Sandbox,
    _dynoxide: Dynoxide,
}

impl Morning {
    pub async fn prepare(bench: &Bench, spread: Spread, latency: Duration) -> Result<Self, String> {
        let setup = Instant::now();
        let dynoxide = Dynoxide::start(&bench.dynoxide).await?;
        let ddb = bench.trips.config(&paycycle_testkit::moto::sdk_config_for(&dynoxide.endpoint).await);
        let prefix = paycycle_testkit::provision::unique_prefix();
        let (table, _, _) =
            paycycle_testkit::provision::provision_table_from(&ddb, bench.table_without_stream()?, &prefix)
                .await
                .map_err(|e| e.to_string())?;
        let store = Store::new(&ddb, &table);
        let sandbox = pg_sandbox::Sandbox::start(0).await.map_err(|e| e.to_string())?;
        let client = SandboxClient::new(sandbox.base_url());
        let key = held_card(&client, latency).await?;
        // Sealed as verify seals them; renew opens each with one cached data key (one Decrypt).
        let vault = paycycle_dev::billing_key_vault(&ddb, &prefix).await;
        let ids = spread.ids()?;
        seed(&store, &vault, &ids, &key).await?;
        let names = paycycle_dev::LocalNames { table, bus: "bench-bus".into(), kms_key: "bench".into() };
        let config = paycycle_dev::local_config(&names, &sandbox.base_url(), None).map_err(|e| e.to_string())?;
        let events_sdk = bench.trips.config(&paycycle_testkit::moto::sdk_config_for(&bench.sink.url).await);
        let deps = renew::Deps {
            store,
            pgs: Registry::new(&config.pg, &paycycle_dev::local_secrets()),
            publisher: EventPublisher::new(&events_sdk, "bench-bus"),
            vault,
            settings: renew::Settings::default(),
            crash_at: None,
            shard_queue: None,
        };
        let setup_seconds = setup.elapsed().as_secs_f64();
        Ok(Self {
            deps,
            subscriptions: ids.len(),
            latency,
            setup_seconds,
            client,
            _sandbox: sandbox,
            _dynoxide: dynoxide,
        })
    }

    /// The PG's ledger after the run: its charges if there are exactly one per subscription, each
    /// with its own order id (no double charge, none missed); an error saying what is off if not.
    pub async fn ledger(&self) -> Result<usize, String> {
        let ledger = self.client.ledger().await.map_err(|e| e.to_string())?;
        let orders: Vec<&str> = ledger["charges"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["partner_order_id"].as_str()).collect())
            .unwrap_or_default();
        let distinct: BTreeSet<&str> = orders.iter().copied().collect();
        let n = self.subscriptions;
        if orders.len() != n || distinct.len() != n {
            return Err(format!(
                "PG ledger: {} charges, {} distinct order ids, for {n} due",
                orders.len(),
                distinct.len()
            ));
        }
        Ok(orders.len())
    }
}

/// A StepPay billing key whose every charge the sandbox holds for `latency`.
async fn held_card(client: &SandboxClient, latency: Duration) -> Result<String, String> {
    let card = client.steppay_sdk_pay(&json!({"amount": 0, "method": "CARD_BILL"})).await.map_err(|e| e.to_string())?;
    let key = card["idKey"].as_str().ok_or("no idKey")?.to_string();
    let hold = json!({"billing_key": key, "fault": {"kind": "delay", "ms": latency.as_millis() as u64}});
    client.admin("/__admin/scenarios", hold).await.map_err(|e| e.to_string())?;
    Ok(key)
}

/// Seeds `ids` as StepPay-self subscriptions due now (anchored 40 days ago), 16 writes at a time.
async fn seed(
    store: &Store,
    vault: &paycycle::store::vault::KeyVault,
    ids: &[String],
    key: &str,
) -> Result<(), String> {
    let anchor = Timestamp::now().checked_sub(SignedDuration::from_hours(24 * 40)).map_err(|e| e.to_string())?;
    let (ids, next) = (Arc::new(ids.to_vec()), Arc::new(AtomicUsize::new(0)));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, vault, ids, next, key) = (store.clone(), vault.clone(), ids.clone(), next.clone(), key.to_string());
        writers.spawn(async move {
            while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                seed_subscription(&store, &vault, id, PgMode::SteppaySelf, anchor, 9_900, &key).await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}
