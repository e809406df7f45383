//! renew throughput: one tick over N due subscriptions while the PG takes 50 ms per charge, at
//! renew's concurrency C. The most a tick can do is C ÷ 50 ms charges per second; we report the
//! fraction of that bound reached, and check the tick charged every subscription exactly once.
//!
//! The DynamoDB here is Dynoxide (a DynamoDB-compatible server, SQLite in memory) through the real
//! SDK: moto answers about a hundred requests per second one at a time, so it would measure moto,
//! not renew. EventBridge is a counting PutEvents endpoint (`EventSink`) for the same reason; the
//! moto-backed tests prove the events themselves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use paycycle::events::EventPublisher;
use paycycle::pg::PgMode;
use paycycle::pg::Registry;
use paycycle::store::Store;
use paycycle_dev::clients::Sandbox as SandboxClient;
use paycycle_testkit::Template;
use serde_json::json;

use paycycle_dev::event_sink::EventSink;
use paycycle_dev::seed_subscription;

pub const PG_LATENCY_MS: u64 = 50;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub subscriptions: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub bound_per_second: f64,
    pub fraction: f64,
    pub charged: u64,
    pub pg_charges: usize,
    pub events: u64,
    pub setup_seconds: f64,
    /// DynamoDB requests per renewal (the tick's queries included).
    pub store_requests_per_renewal: f64,
    /// Of those, reads (GetItem, Query) and write requests.
    pub reads_per_renewal: f64,
    pub writes_per_renewal: f64,
    /// Time a renewal waited on DynamoDB (sum of its requests' round trips, queueing included).
    pub store_ms_per_renewal: f64,
    /// C ÷ (PG latency + store time per renewal): the most this PG *and this store* allow.
    pub bound_with_store_per_second: f64,
    /// Renewals in flight on average ÷ C (Little's law: rate × time per renewal ÷ C): how full
    /// renew kept its C slots.
    pub utilization: f64,
}

pub struct Bench {
    pub ddb: aws_config::SdkConfig,
    pub sink: EventSink,
    pub template: Template,
}

impl Bench {
    /// The template's table without its stream: renew never reads it, and an emulator's stream
    /// grows with every write (Dynoxide's writes slow down as it does).
    fn table_without_stream(&self) -> Result<paycycle_testkit::template::TableDef, String> {
        let mut def = self.template.table().map_err(|e| e.to_string())?;
        def.stream_view_type = None;
        Ok(def)
    }

    pub async fn new(dynamodb_endpoint: &str) -> Result<Self, String> {
        Ok(Self {
            ddb: paycycle_testkit::moto::sdk_config_for(dynamodb_endpoint).await,
            sink: EventSink::start().await.map_err(|e| e.to_string())?,
            template: Template::load().map_err(|e| e.to_string())?,
        })
    }

    /// One tick over `subscriptions` due subscriptions at `concurrency`, on a fresh table and a
    /// fresh sandbox.
    pub async fn run(&self, subscriptions: usize, concurrency: usize) -> Result<Run, String> {
        let setup = Instant::now();
        let prefix = paycycle_testkit::provision::unique_prefix();
        let (table, _, _) =
            paycycle_testkit::provision::provision_table_from(&self.ddb, self.table_without_stream()?, &prefix)
                .await
                .map_err(|e| e.to_string())?;
        let store = Store::new(&self.ddb, &table);
        let sandbox = pg_sandbox::Sandbox::start(0).await.map_err(|e| e.to_string())?;
        let client = SandboxClient::new(sandbox.base_url());
        let card =
            client.steppay_sdk_pay(&json!({"amount": 0, "method": "CARD_BILL"})).await.map_err(|e| e.to_string())?;
        let key = card["idKey"].as_str().ok_or("no idKey")?.to_string();
        // Every charge with this card takes PG_LATENCY_MS at the PG.
        client
            .admin("/__admin/scenarios", json!({"billing_key": key, "fault": {"kind": "delay", "ms": PG_LATENCY_MS}}))
            .await
            .map_err(|e| e.to_string())?;

        let anchor = Timestamp::now().checked_sub(SignedDuration::from_hours(24 * 40)).map_err(|e| e.to_string())?;
        // Sealed as verify seals them; renew opens each with one cached data key (one Decrypt).
        let vault = paycycle_dev::billing_key_vault(&self.ddb, &prefix).await;
        let next = Arc::new(AtomicU64::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, key, next, vault) = (store.clone(), key.clone(), next.clone(), vault.clone());
            writers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= subscriptions {
                        return Ok::<(), String>(());
                    }
                    seed_subscription(&store, &vault, &format!("sub_tp{i}"), PgMode::SteppaySelf, anchor, 9_900, &key)
                        .await?;
                }
            });
        }
        while let Some(r) = writers.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        let names = paycycle_dev::LocalNames { table: table.clone(), bus: "bench-bus".into(), kms_key: "bench".into() };
        let config = paycycle_dev::local_config(&names, &sandbox.base_url(), None).map_err(|e| e.to_string())?;
        let events_sdk = paycycle_testkit::moto::sdk_config_for(&self.sink.url).await;
        let deps = renew::Deps {
            store,
            pgs: Registry::new(&config.pg, &paycycle_dev::local_secrets()),
            publisher: EventPublisher::new(&events_sdk, "bench-bus"),
            vault,
            settings: renew::Settings { concurrency, emit_metrics: false, ..renew::Settings::default() },
            crash_at: None,
            shard_queue: None,
        };
        let setup_seconds = setup.elapsed().as_secs_f64();
        let events_before = self.sink.entries.load(Ordering::Relaxed);

        let counted = deps.store.counter.snapshot();
        let started = Instant::now();
        let report = renew::tick(&deps, Timestamp::now(), None).await;
        let seconds = started.elapsed().as_secs_f64();
        let store = deps.store.counter.snapshot().since(&counted);

        let ledger = client.ledger().await.map_err(|e| e.to_string())?;
        let ours: Vec<&str> = ledger["charges"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["partner_order_id"].as_str()).collect())
            .unwrap_or_default();
        let unique: BTreeSet<&str> = ours.iter().copied().collect();
        if report.charged != subscriptions as u64 || ours.len() != subscriptions || unique.len() != subscriptions {
            return Err(format!(
                "tick over {subscriptions} at {concurrency}: charged {} (report {report:?}), PG ledger {} charges, {} distinct",
                report.charged,
                ours.len(),
                unique.len()
            ));
        }
        let per_second = subscriptions as f64 / seconds;
        let bound_per_second = concurrency as f64 * 1000.0 / PG_LATENCY_MS as f64;
        let n = subscriptions as f64;
        let store_ms_per_renewal = store.wire_nanos as f64 / 1e6 / n;
        let per_renewal_ms = PG_LATENCY_MS as f64 + store_ms_per_renewal;
        Ok(Run {
            subscriptions,
            concurrency,
            seconds,
            per_second,
            bound_per_second,
            fraction: per_second / bound_per_second,
            charged: report.charged,
            pg_charges: ours.len(),
            events: self.sink.entries.load(Ordering::Relaxed) - events_before,
            setup_seconds,
            store_requests_per_renewal: store.total_requests() as f64 / n,
            reads_per_renewal: store.reads() as f64 / n,
            writes_per_renewal: (store.total_requests() - store.reads()) as f64 / n,
            store_ms_per_renewal,
            bound_with_store_per_second: concurrency as f64 * 1000.0 / per_renewal_ms,
            utilization: per_second * per_renewal_ms / 1000.0 / concurrency as f64,
        })
    }
}
