//! The chaos suite (DESIGN §5–§7 beyond the happy path). A scenario is drawn from a seed: one to
//! three StepPay-self or Payple subscriptions with their own cards (a quarter of the scenarios
//! bill within days of the wall clock, so leases taken by ticks are live for the API as in
//! production), then 4–14 random steps — renew ticks (up to three overlapping, at billing times up
//! to five minutes apart or hours late, one of them possibly crashing at any step of a renewal, a
//! quarter of them raced by a cancel, pause, resume, plan change or a full refund with
//! `cancel_subscription`, half of those while the charge is held in flight at the PG),
//! PG faults on the next charge (soft or hard decline, a decline with an issuer code nobody
//! listed, timeout after the PG charged, 5xx, delay), Payple checkouts (PAY, CERT, AUTH) whose
//! browser posts tampered results to verify (the other work, another customer's billing key,
//! another total, a stale close) beside or instead of the genuine one,
//! bursts of up to three concurrent refunds of one payment (some asking more than is left, some
//! hitting a refund fault, some whose answer is lost while the PG's lookup lags), cancels, pauses,
//! resumes and plan changes, and jumps in time. Then it
//! settles (faults cleared, ticks past every lease and recheck window) and reconciles the PG
//! sandbox's ledger with our table:
//!
//! - no double charge: at most one approved PG charge per subscription and period;
//! - every PG body, sent or answered, has the shape the PG documents (pg-shapes/);
//! - no lost charge: every approved PG charge is a payment of ours, with the same amount;
//! - no over-refund: the PG never refunded more than a charge, nor more than we reserved, and our
//!   confirmed refunds never exceed what the PG refunded;
//! - every subscription in a legal state: its record parses, payments are for distinct periods up
//!   to its current one, nothing is left with an unknown outcome or a live collection lease once
//!   settled unless it went to `needs_review`, and no API answer was a 500 (502/504 pass a PG's
//!   failure on; 503 says DynamoDB failed and the call may be retried).
//!
//! Each scenario gets its own table and its own PG sandbox, so scenarios run side by side and one
//! seed reproduces exactly what it did (`make chaos SEED=… COUNT=1`). Nothing leaves 127.0.0.1.

pub mod fanout;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use paycycle::domain::attempt::{ChargeId, SubscriptionId};
use paycycle::domain::subscription::SubscriptionState;
use paycycle::events::EventPublisher;
use paycycle::pg::PgMode;
use paycycle::pg::payple::WindowWork;
use paycycle::pg::{Payer, Registry};
use paycycle::store::Store;
use paycycle::store::vault::KeyVault;
use paycycle_dev::event_sink::EventSink;
use paycycle_dev::{LocalNames, local_secrets, seed_subscription};
use paycycle_testkit::Template;
use pg_sandbox::state::Fault;
use renew::CrashPoint;
use serde_json::{Value, json};

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5EED_C4A0_5EED_C4A0)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The shared parts: where DynamoDB and EventBridge are, the template the tables come from.
pub struct World {
    ddb: aws_config::SdkConfig,
    events: aws_config::SdkConfig,
    /// The template's table without its stream: the scenario hands stored webhooks to verify
    /// itself (see `pump_webhooks`), and an emulator's stream only grows.
    table: paycycle_testkit::template::TableDef,
    /// Seals and opens the scenarios' billing keys (moto's KMS, or in memory on Dynoxide).
    vault: KeyVault,
    _sink: Option<EventSink>,
}

impl World {
    /// `dynamodb`: a DynamoDB endpoint (moto or Dynoxide). `events`: an EventBridge endpoint
    /// (moto), or `None` for a local counting PutEvents endpoint.
    pub async fn new(dynamodb: &str, events: Option<&str>) -> Result<Self, String> {
        let (sink, events_url) = match events {
            Some(url) => (None, url.to_string()),
            None => {
                let sink = EventSink::start().await.map_err(|e| e.to_string())?;
                let url = sink.url.clone();
                (Some(sink), url)
            }
        };
        let ddb = paycycle_testkit::moto::sdk_config_for(dynamodb).await;
        let vault = paycycle_dev::billing_key_vault(&ddb, "chaos").await;
        Ok(Self {
            ddb,
            vault,
            events: paycycle_testkit::moto::sdk_config_for(&events_url).await,
            table: {
                let mut def = Template::load().and_then(|t| t.table()).map_err(|e| e.to_string())?;
                def.stream_view_type = None;
                def
            },
            _sink: sink,
        })
    }
}

/// What the scenarios did and what the reconciliation found, added up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub scenarios: u64,
    pub subscriptions: u64,
    pub steps: u64,
    pub ticks: u64,
    pub overlapping_ticks: u64,
    /// Overlapping ticks whose billing `now` differ (by up to ±5 minutes).
    pub skewed_ticks: u64,
    /// Ticks that started late: an event time hours behind the scenario's billing time.
    pub late_ticks: u64,
    /// Scenarios whose billing time stays near the wall clock.
    pub near_wall_clock: u64,
    pub crashes: u64,
    /// Ticks that went through the fan-out (dispatch, then workers on the shard messages).
    pub fanned_out_ticks: u64,
    /// Shard messages walked by the fan-out's workers, and of those: received by a second worker
    /// at once, handed over at a deadline, failed and delivered again; dispatches run twice.
    pub shard_walks: u64,
    pub redelivered_messages: u64,
    pub hand_overs: u64,
    pub failed_messages: u64,
    pub twice_dispatched: u64,
    pub faults: BTreeMap<String, u64>,
    pub refund_requests: u64,
    pub refund_answers: BTreeMap<u16, u64>,
    pub actions: u64,
    /// Lifecycle calls made while ticks ran.
    pub raced_actions: u64,
    /// Full refunds with `cancel_subscription` sent while a tick ran (a charge held in flight).
    pub raced_refund_cancels: u64,
    pub action_answers: BTreeMap<u16, u64>,
    pub pg_charges: u64,
    pub payments: u64,
    pub charged_krw: i64,
    pub pg_refunded_krw: i64,
    pub our_refunded_krw: i64,
    /// Refunds whose outcome was still unknown at the end (never counted as refunded by us).
    pub refunds_unknown: u64,
    pub needs_review: u64,
    /// Approved PG charges held by a `needs_review` subscription for a person (not payments yet,
    /// never charged again).
    pub flagged_for_review: u64,
    /// A [`Tamper`] was planted (tests only).
    pub tampered: bool,
    /// The seeds of the scenarios that left such a charge (to replay them).
    pub review_seeds: Vec<u64>,
    /// Payple checkouts paid in the window and verified by the partner (`POST /payments/verify`).
    pub checkouts: u64,
    /// Verify calls whose body the browser tampered with (work, billing key, total, a stale close).
    pub tampered_verifies: u64,
    /// Webhooks verified (each delivery the PG made, duplicates included, once stored).
    pub webhooks: u64,
    pub final_states: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.scenarios += o.scenarios;
        self.subscriptions += o.subscriptions;
        self.steps += o.steps;
        self.ticks += o.ticks;
        self.overlapping_ticks += o.overlapping_ticks;
        self.skewed_ticks += o.skewed_ticks;
        self.late_ticks += o.late_ticks;
        self.near_wall_clock += o.near_wall_clock;
        self.crashes += o.crashes;
        self.fanned_out_ticks += o.fanned_out_ticks;
        self.shard_walks += o.shard_walks;
        self.redelivered_messages += o.redelivered_messages;
        self.hand_overs += o.hand_overs;
        self.failed_messages += o.failed_messages;
        self.twice_dispatched += o.twice_dispatched;
        for (k, v) in &o.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        self.refund_requests += o.refund_requests;
        for (k, v) in &o.refund_answers {
            *self.refund_answers.entry(*k).or_default() += v;
        }
        self.actions += o.actions;
        self.raced_actions += o.raced_actions;
        self.raced_refund_cancels += o.raced_refund_cancels;
        for (k, v) in &o.action_answers {
            *self.action_answers.entry(*k).or_default() += v;
        }
        self.pg_charges += o.pg_charges;
        self.payments += o.payments;
        self.charged_krw += o.charged_krw;
        self.pg_refunded_krw += o.pg_refunded_krw;
        self.our_refunded_krw += o.our_refunded_krw;
        self.refunds_unknown += o.refunds_unknown;
        self.needs_review += o.needs_review;
        self.webhooks += o.webhooks;
        self.checkouts += o.checkouts;
        self.tampered_verifies += o.tampered_verifies;
        self.flagged_for_review += o.flagged_for_review;
        self.review_seeds.extend(&o.review_seeds);
        for (k, v) in &o.final_states {
            *self.final_states.entry(k.clone()).or_default() += v;
        }
    }
}

/// A scenario that broke a promise (or could not run): its seed and what it did.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub message: String,
    pub log: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.message)?;
        for line in &self.log {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

struct Sub {
    id: SubscriptionId,
    key: String,
    pg: PgMode,
}

type RaceCall = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send>>;

/// A call that races a set of ticks, sent `after_ms` after they start.
struct Race {
    what: &'static str,
    sub: String,
    body: Value,
    after_ms: u64,
    call: RaceCall,
}

struct Scenario {
    seed: u64,
    rng: Rng,
    store: Store,
    sandbox: pg_sandbox::Sandbox,
    http: reqwest::Client,
    renew: renew::Deps,
    refund: refund::Deps,
    subscriptions: subscriptions::Deps,
    verify: verify::Deps,
    checkout: checkout::Deps,
    /// Kept alive for the scenario (dropping it stops the endpoint).
    _webhooks: WebhookEndpoint,
    api_key: String,
    subs: Vec<Sub>,
    now: Timestamp,
    log: Vec<String>,
    tally: Tally,
    requests: u64,
    /// Billing time stays within days of the wall clock (ticks move hours, not weeks).
    near_wall_clock: bool,
    /// Subscriptions started by a checkout: (subscription, checkout id = window OID, the window's
    /// billing key), whether or not the checkout completed.
    checkout_subs: Vec<(SubscriptionId, String, String)>,
}

/// A broken promise planted in the PG's ledger just before reconciling, to prove the
/// reconciliation catches it (tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// The PG approved the same order twice.
    DoubleCharge,
    /// The PG refunded more than it charged.
    OverRefund,
    /// The PG refunded 1원 we never asked for.
    UnrecordedRefund,
}

/// Runs the scenario of `seed` and reconciles it.
pub async fn run(world: &World, seed: u64) -> Result<Tally, Failure> {
    run_tampered(world, seed, None).await
}

/// [`run`], with `tamper` planted in the ledger before reconciling (when the scenario charged
/// anything; `Ok` with `pg_charges == 0` otherwise).
pub async fn run_tampered(world: &World, seed: u64, tamper: Option<Tamper>) -> Result<Tally, Failure> {
    let mut log = Vec::new();
    let table = format!("chaos-{seed}-table");
    let result = match setup(world, seed, &mut log).await {
        Ok(mut s) => {
            let outcome = async {
                s.play().await?;
                s.settle().await?;
                if let Some(t) = tamper {
                    s.tamper(t);
                }
                s.reconcile().await
            }
            .await;
            log = std::mem::take(&mut s.log);
            outcome.map(|()| s.tally)
        }
        Err(e) => Err(e),
    };
    // The table goes either way (Dynoxide keeps every table in memory); a failed one is
    // reproducible from its seed.
    let _ = aws_sdk_dynamodb::Client::new(&world.ddb).delete_table().table_name(&table).send().await;
    result.map_err(|message| Failure { seed, message, log })
}

/// The `i`-th subscription's id. In every other scenario all of them share the first one's
/// due-index shard, so a fan-out worker walks them in one shard (and can hand the rest over).
fn subscription_id(seed: u64, i: i64, first: Option<&SubscriptionId>) -> String {
    let plain = format!("sub_chaos{seed}n{i}");
    let Some(first) = first.filter(|_| seed % 2 == 0) else { return plain };
    let shard = paycycle::store::subscriptions::due_shard(first);
    let beside = |j: u32| format!("{plain}s{j}");
    let same = (0..10_000u32).find(|&j| {
        SubscriptionId::parse(&beside(j)).is_ok_and(|id| paycycle::store::subscriptions::due_shard(&id) == shard)
    });
    match same {
        Some(j) => beside(j),
        None => plain,
    }
}

fn kst_start(rng: &mut Rng, near_wall_clock: bool) -> Timestamp {
    if near_wall_clock {
        // Due within a day or two of the wall clock: billing time and lease time (the wall
        // clock) are close, as in production, so a lease taken by a tick is live for the
        // lifecycle API and the races below happen as they would in AWS.
        let back = SignedDuration::from_hours(31 * 24 + rng.range(-24, 48));
        return Timestamp::now().checked_sub(back).expect("in range");
    }
    // 2027-01-01 00:00 KST plus up to 60 days and any hour: anchors land on month ends too.
    let base: Timestamp = "2026-12-31T15:00:00Z".parse().expect("timestamp");
    base.checked_add(SignedDuration::from_hours(rng.range(0, 60 * 24))).expect("in range")
}

async fn setup(world: &World, seed: u64, log: &mut Vec<String>) -> Result<Scenario, String> {
    let mut rng = Rng::new(seed);
    let prefix = format!("chaos-{seed}");
    let (table, _, _) = paycycle_testkit::provision::provision_table_from(&world.ddb, world.table.clone(), &prefix)
        .await
        .map_err(|e| format!("provision: {e}"))?;
    let store = Store::new(&world.ddb, &table);
    let sandbox = pg_sandbox::Sandbox::start(0).await.map_err(|e| e.to_string())?;
    // A timeout after charge holds the PG's answer past our PG timeout (300 ms).
    sandbox.shared.config.lock().expect("sandbox config").timeout_after_charge_ms = 600;
    let names = LocalNames { table: table.clone(), bus: "chaos-bus".into(), kms_key: "chaos".into() };
    let config = paycycle_dev::local_config(&names, &sandbox.base_url(), Some(300)).map_err(|e| e.to_string())?;
    let pgs = Registry::new(&config.pg, &local_secrets());
    // Setup (card registration) is not under test: it gets the default PG timeout.
    let setup_config = paycycle_dev::local_config(&names, &sandbox.base_url(), None).map_err(|e| e.to_string())?;
    let setup_gateways = Registry::new(&setup_config.pg, &local_secrets());
    let publisher = EventPublisher::new(&world.events, "chaos-bus");
    let vault = world.vault.clone();
    let renew = renew::Deps {
        store: store.clone(),
        pgs: pgs.clone(),
        publisher: publisher.clone(),
        vault: vault.clone(),
        // Leases run on the wall clock: a short one, waited out for real after a crash (settle).
        // The sandbox's clock follows the scenario's time travel.
        settings: renew::Settings {
            concurrency: 4,
            lease: CHAOS_LEASE,
            allow_time_travel: true,
            ..renew::Settings::default()
        },
        crash_at: None,
        shard_queue: None,
    };
    let services = paycycle::boot::Services { store: store.clone(), pgs: pgs.clone(), publisher, vault };
    let (refund, subscriptions, verify) = (services.clone(), services.clone(), services);
    let checkout = checkout::Deps { store: store.clone(), pgs: pgs.clone(), vault: world.vault.clone() };
    // The PGs deliver their webhooks to webhook-ingest's handler, as in AWS.
    let webhooks = WebhookEndpoint::start(webhook_ingest::Deps {
        store: store.clone(),
        // The chaos sandbox signs nothing: signatures are not checked here.
        credentials: paycycle::pg::Credentials::fixed(paycycle::config::Secrets {
            steppay_webhook_secrets: vec![],
            ..local_secrets()
        }),
    })
    .await
    .map_err(|e| e.to_string())?;
    {
        let mut config = sandbox.shared.config.lock().expect("sandbox config");
        config.steppay_webhook_url = Some(format!("{}/webhooks/steppay", webhooks.url));
        config.payple_webhook_url = Some(format!("{}/webhooks/payple", webhooks.url));
    }
    let api_key = paycycle::store::api_keys::generate_api_key();
    store.create_api_key(&api_key, "chaos", "default", Timestamp::now()).await.map_err(|e| e.to_string())?;

    let http = reqwest::Client::new();
    let client = paycycle_dev::clients::Sandbox::new(sandbox.base_url());
    let mut subs = Vec::new();
    let mut earliest = None::<Timestamp>;
    let near_wall_clock = rng.chance(25);
    if near_wall_clock {
        log.push("billing time near the wall clock".into());
    }
    for i in 0..rng.range(1, 3) {
        let pg = *rng.pick(&[PgMode::SteppaySelf, PgMode::Payple]);
        let key = match pg {
            PgMode::Payple => {
                let payer = Payer {
                    customer_id: format!("cus_{seed}_{i}"),
                    name: "홍길동".into(),
                    phone: Some("01012345678".into()),
                    email: Some("hong@example.com".into()),
                    payer_no: None,
                };
                let params = setup_gateways
                    .payple
                    .window_params(WindowWork::Auth, "reg", "Pro", None, &payer, "http://127.0.0.1/r", "chaos")
                    .await
                    .map_err(|e| format!("payple auth params: {e}"))?;
                let v = client
                    .payple_window(&serde_json::to_value(&params).map_err(|e| e.to_string())?, None)
                    .await
                    .map_err(|e| e.to_string())?;
                v.get("PCD_PAYER_ID").and_then(Value::as_str).ok_or("no PCD_PAYER_ID")?.to_string()
            }
            _ => {
                let v = client
                    .steppay_sdk_pay(&json!({"amount": 0, "method": "CARD_BILL"}))
                    .await
                    .map_err(|e| e.to_string())?;
                v["idKey"].as_str().ok_or("no idKey")?.to_string()
            }
        };
        let anchor = kst_start(&mut rng, near_wall_clock);
        let amount = rng.range(10, 1_000) * 100;
        let id = subscription_id(seed, i, subs.first().map(|s: &Sub| &s.id));
        seed_subscription(&store, &world.vault, &id, pg, anchor, amount, &key).await?;
        log.push(format!("{id}: {pg:?}, {amount}원 monthly from {anchor}"));
        earliest = Some(earliest.map_or(anchor, |e| e.min(anchor)));
        subs.push(Sub { id: SubscriptionId::parse(&id).map_err(|e| e.to_string())?, key, pg });
    }
    let tally = Tally {
        scenarios: 1,
        subscriptions: subs.len() as u64,
        near_wall_clock: u64::from(near_wall_clock),
        ..Tally::default()
    };
    Ok(Scenario {
        seed,
        rng,
        store,
        sandbox,
        http,
        renew,
        refund,
        subscriptions,
        verify,
        checkout,
        _webhooks: webhooks,
        api_key,
        subs,
        now: earliest.unwrap_or_else(Timestamp::now),
        log: std::mem::take(log),
        tally,
        requests: 0,
        near_wall_clock,
        checkout_subs: Vec::new(),
    })
}

/// A renew lease in chaos scenarios (wall clock): longer than any renewal there (PG timeout 300 ms),
/// and long enough that a charge's requests can start before its send-by time (the lease's end,
/// in whole seconds, less a second and the PG timeout).
const CHAOS_LEASE: SignedDuration = SignedDuration::from_secs(3);

const CRASH_POINTS: [CrashPoint; 4] =
    [CrashPoint::AfterClaim, CrashPoint::AfterAttemptWrite, CrashPoint::AfterPgCall, CrashPoint::BeforeCommit];

impl Scenario {
    async fn play(&mut self) -> Result<(), String> {
        let steps = self.rng.range(4, 14);
        for _ in 0..steps {
            self.tally.steps += 1;
            match self.rng.below(100) {
                0..=39 => self.tick().await?,
                40..=59 => self.charge_fault(),
                60..=74 => self.refunds().await?,
                75..=84 => self.action().await?,
                85..=89 => self.checkout().await?,
                _ => {
                    let hours = self.rng.range(1, 72);
                    self.travel(SignedDuration::from_hours(hours)).await?;
                    self.log.push(format!("+{hours} h"));
                }
            }
        }
        Ok(())
    }

    async fn travel(&mut self, by: SignedDuration) -> Result<(), String> {
        self.now = self.now.checked_add(by).map_err(|e| e.to_string())?;
        let url = format!("{}/__admin/clock", self.sandbox.base_url());
        self.http.post(url).json(&json!({"now": self.now.to_string()})).send().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), String> {
        let hours = if self.near_wall_clock { self.rng.range(0, 60) } else { self.rng.range(0, 36 * 24) };
        self.travel(SignedDuration::from_hours(hours)).await?;
        self.pump_webhooks().await?;
        let overlapping = self.rng.range(1, 3) as usize;
        let crash =
            self.rng.chance(30).then(|| (self.rng.below(overlapping as u64) as usize, *self.rng.pick(&CRASH_POINTS)));
        // Overlapping ticks need not agree on the time: EventBridge's `time` of two schedule
        // firings differs by the schedule's rate, and a retried or late event carries an old one.
        let nows: Vec<Timestamp> = (0..overlapping).map(|i| self.tick_time(i)).collect();
        // A quarter of the ticks race a cancel / pause / resume / plan change or a full refund
        // that cancels the subscription; half of those hold the charge at the PG meanwhile, so
        // the call lands while the charge is in flight.
        let racing = if self.rng.chance(25) { Some(self.draw_race().await?) } else { None };
        let mut ticks = tokio::task::JoinSet::new();
        for (i, now) in nows.iter().copied().enumerate() {
            let mut deps = self.renew.clone();
            deps.crash_at = crash.filter(|(which, _)| *which == i).map(|(_, at)| at);
            // A third of the ticks go through the fan-out: dispatch, then workers.
            if self.rng.chance(33) {
                let plan = self.fan_plan(deps.crash_at.take());
                let (tick_id, live) = (format!("evt-{}-{}-{i}", self.seed, self.tally.steps), self.live_shards());
                ticks.spawn(async move {
                    let done = fanout::tick(&deps, &tick_id, now, &live, &plan).await;
                    (done.charged, Some((done, plan)))
                });
            } else {
                ticks.spawn(async move { (renew::tick(&deps, now, None).await.charged, None) });
            }
        }
        let racing = racing.map(|race| {
            let handle = tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(race.after_ms)).await;
                race.call.await
            });
            (race.what, race.sub, race.body, handle)
        });
        let mut charged = 0;
        while let Some(r) = ticks.join_next().await {
            let (n, fanned) = r.map_err(|e| format!("tick panicked: {e}"))?;
            charged += n;
            if let Some((done, plan)) = fanned {
                self.count_fan_out(&done, &plan);
            }
        }
        if let Some((what, sub, body, call)) = racing {
            let answered = call.await.map_err(|e| format!("{what} panicked: {e}"))?;
            self.log.push(format!("racing the tick(s): {what} {sub}"));
            if what == "refund+cancel" {
                self.tally.raced_refund_cancels += 1;
                self.record_refund_answer(&sub, answered)?;
            } else {
                self.record_action(what, &sub, &body, answered)?;
            }
            self.tally.raced_actions += 1;
        }
        self.tally.ticks += overlapping as u64;
        if overlapping > 1 {
            self.tally.overlapping_ticks += 1;
        }
        let skewed = |n: &Timestamp| *n != self.now && n.duration_since(self.now).abs() <= SignedDuration::from_mins(5);
        if nows.iter().any(skewed) {
            self.tally.skewed_ticks += 1;
        }
        if crash.is_some() {
            self.tally.crashes += 1;
        }
        self.log.push(format!(
            "+{hours} h → {} tick(s) at {}{}: {charged} charged",
            overlapping,
            nows.iter().map(Timestamp::to_string).collect::<Vec<_>>().join(", "),
            crash.map(|(i, at)| format!(", #{i} crashes {at:?}")).unwrap_or_default()
        ));
        Ok(())
    }

    /// How a fan-out tick is driven; it crashes at `crash` if the tick was to.
    fn fan_plan(&mut self, crash: Option<CrashPoint>) -> fanout::Plan {
        let workers = self.rng.range(2, 5) as usize;
        fanout::Plan {
            workers,
            dispatched_twice: self.rng.chance(25),
            past_dedupe_window: self.rng.chance(30),
            redeliver_percent: *self.rng.pick(&[0, 20, 50]),
            short_deadline_percent: *self.rng.pick(&[0, 15, 40]),
            one_at_a_time: self.rng.chance(50),
            crash: crash.map(|at| (self.rng.below(workers as u64) as usize, at)),
            seed: self.rng.next_u64(),
        }
    }

    fn count_fan_out(&mut self, done: &fanout::Done, plan: &fanout::Plan) {
        self.tally.fanned_out_ticks += 1;
        self.tally.shard_walks += done.walked;
        self.tally.redelivered_messages += done.redelivered;
        self.tally.hand_overs += done.handed_over;
        self.tally.failed_messages += done.failed_and_retried;
        self.tally.twice_dispatched += u64::from(plan.dispatched_twice);
        self.log.push(format!("fan-out: {plan:?} → {done:?}"));
    }

    /// The due-index shards the scenario's subscriptions live in.
    fn live_shards(&self) -> fanout::LiveShards {
        let ids = self.subs.iter().map(|s| &s.id).chain(self.checkout_subs.iter().map(|(id, _, _)| id));
        ids.map(paycycle::store::subscriptions::due_shard).collect()
    }

    /// The billing time of the `i`-th of a set of overlapping ticks: the first is the scenario's
    /// time; another is up to five minutes off it, or (one in ten) a late tick hours behind.
    fn tick_time(&mut self, i: usize) -> Timestamp {
        if i == 0 {
            return self.now;
        }
        let offset = if self.rng.chance(10) {
            self.tally.late_ticks += 1;
            SignedDuration::from_mins(-self.rng.range(60, 6 * 60))
        } else {
            SignedDuration::from_secs(self.rng.range(-300, 300))
        };
        self.now.checked_add(offset).unwrap_or(self.now)
    }

    /// A call to race a tick with: a lifecycle change, or a full refund of the subscription's
    /// latest payment with `cancel_subscription: true`.
    async fn draw_race(&mut self) -> Result<Race, String> {
        let hold = self.rng.chance(50);
        let after_ms = if hold { self.rng.range(5, 80) as u64 } else { 0 };
        let refund_cancel = self.rng.chance(30);
        let (what, sub, body, call): (&'static str, String, Value, RaceCall) = if refund_cancel {
            let sub = self.subs[self.rng.below(self.subs.len() as u64) as usize].id.clone();
            let payments = self.store.payments_of_subscription(&sub).await.map_err(|e| e.to_string())?;
            match payments.iter().max_by_key(|p| p.paid_at) {
                Some(latest) => {
                    let body = json!({"reason": "chaos: refund and cancel", "cancel_subscription": true});
                    let path = format!("/payments/{}/refunds", latest.payment_id);
                    let req = self.request("POST", &path, &latest.payment_id, Some(body.clone()), true);
                    let deps = self.refund.clone();
                    let call: RaceCall = Box::pin(async move { answer(refund::handler(&deps, req).await) });
                    ("refund+cancel", sub.as_str().to_string(), body, call)
                }
                None => self.draw_lifecycle_race(),
            }
        } else {
            self.draw_lifecycle_race()
        };
        if hold && let Some(s) = self.subs.iter().find(|s| s.id.as_str() == sub) {
            // The charge is held at the PG long enough for the call to land in the middle.
            let fault = Fault::Delay { ms: self.rng.range(100, 250) as u64 };
            self.add_fault(Some(s.key.clone()), None, fault);
            *self.tally.faults.entry("charge: held while raced".into()).or_default() += 1;
        }
        Ok(Race { what, sub, body, after_ms, call })
    }

    fn draw_lifecycle_race(&mut self) -> (&'static str, String, Value, RaceCall) {
        let (what, sub, body, req) = self.draw_action();
        let deps = self.subscriptions.clone();
        (what, sub, body, Box::pin(async move { answer(subscriptions::handler(&deps, req).await) }))
    }

    fn record_refund_answer(&mut self, sub: &str, (status, body): (u16, String)) -> Result<(), String> {
        self.tally.refund_requests += 1;
        *self.tally.refund_answers.entry(status).or_default() += 1;
        if !acceptable(status) {
            return Err(format!("refund+cancel of {sub}'s latest payment answered {status}: {body}"));
        }
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        self.log.push(format!("refund+cancel {sub} → {status} {code}"));
        Ok(())
    }

    /// A customer subscribes through a Payple checkout (PAY, CERT or AUTH) and pays in the
    /// window; the browser posts tampered copies of the result to `POST /payments/verify` (the
    /// other work, another customer's billing key, another total, a stale close), before, beside
    /// or instead of the genuine one. Whatever the browser says, the PG charges exactly what the
    /// checkout asked, once, and every charge is recorded (the webhook completes the checkout
    /// when the genuine verify never comes).
    async fn checkout(&mut self) -> Result<(), String> {
        let work = *self.rng.pick(&["PAY", "AUTH", "CERT"]);
        let amount = self.rng.range(10, 1_000) * 100;
        let n = self.requests;
        let body = json!({"pg": "payple",
            "customer": {"id": format!("cus_chk{}_{n}", self.seed), "name": "홍길동", "phone": "01012345678"},
            "plan": {"name": "Pro", "amount": amount, "interval": "month", "interval_count": 1},
            "return_url": "https://shop.example.com/return", "payple": {"work": work}});
        let req = self.request("POST", "/checkouts", "", Some(body), true);
        let (status, text) = answer(checkout::handler(&self.checkout, req).await);
        if status != 201 {
            return if acceptable(status) { Ok(()) } else { Err(format!("checkout answered {status}: {text}")) };
        }
        let c: Value = serde_json::from_str(&text).map_err(|e| format!("checkout body: {e}"))?;
        let (Some(checkout_id), Some(sub)) = (c["id"].as_str(), c["subscription_id"].as_str()) else {
            return Err(format!("checkout without id: {c}"));
        };
        let (checkout_id, sub) = (checkout_id.to_string(), sub.to_string());
        let client = paycycle_dev::clients::Sandbox::new(self.sandbox.base_url());
        let genuine = client.payple_window(&c["payple"], None).await.map_err(|e| format!("window: {e}"))?;
        let payer_id = genuine.get("PCD_PAYER_ID").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut bodies = Vec::new();
        for _ in 0..self.rng.range(1, 2) {
            bodies.push(self.tampered(&genuine, work));
        }
        let send_genuine = self.rng.chance(80);
        if send_genuine {
            let at = self.rng.below(bodies.len() as u64 + 1) as usize;
            bodies.insert(at, ("genuine", genuine.clone()));
        }
        let together = self.rng.chance(40);
        let mut calls = tokio::task::JoinSet::new();
        let mut answers = Vec::new();
        for (what, mut fields) in bodies {
            fields.insert("checkout_id".into(), json!(checkout_id));
            let req = self.request("POST", "/payments/verify", "", Some(Value::Object(fields)), false);
            if what != "genuine" {
                self.tally.tampered_verifies += 1;
            }
            let deps = self.verify.clone();
            let call = async move { (what, answer(verify::handler(&deps, req).await)) };
            if together {
                calls.spawn(call);
            } else {
                answers.push(call.await);
            }
        }
        while let Some(r) = calls.join_next().await {
            answers.push(r.map_err(|e| format!("verify panicked: {e}"))?);
        }
        for (what, (status, text)) in &answers {
            if !acceptable(*status) {
                return Err(format!("verify ({what}) of {checkout_id} answered {status}: {text}"));
            }
        }
        let summary: Vec<String> = answers.iter().map(|(w, (s, _))| format!("{w} {s}")).collect();
        self.log.push(format!("checkout {checkout_id} ({work}, {amount}원) for {sub}: verify {summary:?}"));
        self.tally.checkouts += 1;
        // The PG's webhook (sent with the window result) goes through the stream either way.
        self.pump_webhooks().await?;
        let id = SubscriptionId::parse(&sub).map_err(|e| e.to_string())?;
        self.checkout_subs.push((id.clone(), checkout_id.clone(), payer_id.clone()));
        if let Some(r) = self.store.get_subscription(&id).await.map_err(|e| e.to_string())? {
            let key = match &r.billing_key {
                Some(sealed) => {
                    self.verify.vault.open(&id, sealed).await.map_err(|e| e.to_string())?.expose().to_string()
                }
                None => payer_id,
            };
            self.subs.push(Sub { id, key, pg: PgMode::Payple });
        }
        Ok(())
    }

    /// A copy of a window result the browser changed.
    fn tampered(
        &mut self,
        genuine: &serde_json::Map<String, Value>,
        work: &str,
    ) -> (&'static str, serde_json::Map<String, Value>) {
        let mut f = genuine.clone();
        let other_key = self.subs.iter().find(|s| s.pg == PgMode::Payple).map(|s| s.key.clone());
        let what = match self.rng.below(4) {
            0 => {
                let flipped = if work == "AUTH" { "PAY" } else { "AUTH" };
                f.insert("PCD_PAY_WORK".into(), json!(flipped));
                "work flipped"
            }
            1 if other_key.is_some() => {
                f.insert("PCD_PAYER_ID".into(), json!(other_key));
                f.insert("PCD_PAY_WORK".into(), json!("AUTH"));
                "another customer's billing key"
            }
            2 => {
                f.insert("PCD_PAY_TOTAL".into(), json!("100"));
                "total"
            }
            _ => {
                f.insert("PCD_PAY_RST".into(), json!(if self.rng.chance(50) { "close" } else { "error" }));
                f.insert("PCD_PAY_CODE".into(), json!("PAYC9999"));
                "stale close"
            }
        };
        (what, f)
    }

    fn charge_fault(&mut self) {
        let sub = self.rng.below(self.subs.len() as u64) as usize;
        let (name, fault) = match self.rng.below(14) {
            0..=2 => ("soft decline", Fault::Decline { hard: false }),
            13 => ("decline with an unknown issuer code", Fault::DeclineWithCode { code: "ZZZZ7777".into() }),
            3 => ("hard decline", Fault::Decline { hard: true }),
            4..=5 => ("timeout after charge", Fault::TimeoutAfterCharge),
            6..=7 => ("5xx", Fault::ServerError),
            8 => ("delay", Fault::Delay { ms: self.rng.range(20, 250) as u64 }),
            9 => ("webhook twice", Fault::WebhookTwice),
            10 => ("webhook late", Fault::WebhookLate { ms: self.rng.range(50, 400) as u64 }),
            _ => ("webhook out of order", Fault::WebhookOutOfOrder),
        };
        self.add_fault(Some(self.subs[sub].key.clone()), None, fault);
        *self.tally.faults.entry(format!("charge: {name}")).or_default() += 1;
        self.log.push(format!("fault on {}'s next charge: {name}", self.subs[sub].id.as_str()));
    }

    fn add_fault(&self, billing_key: Option<String>, operation: Option<pg_sandbox::state::Operation>, fault: Fault) {
        self.sandbox.shared.state.lock().expect("sandbox state").scenarios.push(pg_sandbox::state::Scenario {
            billing_key,
            operation,
            count: Some(1),
            fault,
        });
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        id: &str,
        body: Option<Value>,
        idempotency: bool,
    ) -> lambda_http::Request {
        self.requests += 1;
        let request_id = format!("chaos-{}-{}", self.seed, self.requests);
        let mut req = paycycle_fixtures::request(method, path).bearer(&self.api_key).path_param("id", id);
        req = match body {
            Some(b) => req.json(&b),
            None => req.header("content-type", "application/json"),
        };
        if idempotency {
            req = req.idempotency_key(&request_id);
        }
        req.request_id(&request_id).build()
    }

    async fn refunds(&mut self) -> Result<(), String> {
        let mut payments = Vec::new();
        for s in &self.subs {
            payments.extend(self.store.payments_of_subscription(&s.id).await.map_err(|e| e.to_string())?);
        }
        if payments.is_empty() {
            self.log.push("refund: nothing paid yet".into());
            return Ok(());
        }
        let payment = payments[self.rng.below(payments.len() as u64) as usize].clone();
        if self.rng.chance(25) {
            let fault = match self.rng.below(4) {
                0 => Fault::ServerError,
                1 => Fault::TimeoutAfterCharge,
                2 => {
                    // The refund went through but its answer was lost, and the PG's lookup lags:
                    // StepPay's receipt says the cancel is in progress (Payple's shows no refunds
                    // at all), so the reservation must stay until the PG says so.
                    self.sandbox.shared.state.lock().expect("sandbox state").scenarios.push(
                        pg_sandbox::state::Scenario {
                            billing_key: None,
                            operation: Some(pg_sandbox::state::Operation::Lookup),
                            count: Some(self.rng.range(1, 3) as u32),
                            fault: Fault::CancelInProgress,
                        },
                    );
                    Fault::TimeoutAfterCharge
                }
                _ => Fault::Decline { hard: false },
            };
            *self.tally.faults.entry(format!("refund: {fault:?}")).or_default() += 1;
            self.log.push(format!("fault on the next refund: {fault:?}"));
            self.add_fault(None, Some(pg_sandbox::state::Operation::Refund), fault);
        }
        let paid = payment.amounts.paid.won();
        let burst = self.rng.range(1, 3);
        let deps = Arc::new(self.refund.clone());
        let mut calls = tokio::task::JoinSet::new();
        let mut asked = Vec::new();
        for _ in 0..burst {
            let amount = match self.rng.below(4) {
                0 => None,
                1 => Some(paid + 1),
                _ => Some(self.rng.range(1, paid.max(1))),
            };
            asked.push(amount);
            let mut body = json!({"reason": "chaos"});
            if let Some(a) = amount {
                body["amount"] = json!(a);
            }
            let path = format!("/payments/{}/refunds", payment.payment_id);
            let req = self.request("POST", &path, &payment.payment_id, Some(body), true);
            let deps = deps.clone();
            calls.spawn(async move { answer(refund::handler(&deps, req).await) });
        }
        let mut statuses = Vec::new();
        while let Some(r) = calls.join_next().await {
            let (status, body) = r.map_err(|e| format!("refund panicked: {e}"))?;
            self.tally.refund_requests += 1;
            *self.tally.refund_answers.entry(status).or_default() += 1;
            if !acceptable(status) {
                return Err(format!("refund of {} answered {status}: {body}", payment.payment_id));
            }
            statuses.push(status);
        }
        self.log.push(format!("refunds of {} (paid {paid}): asked {asked:?} → {statuses:?}", payment.payment_id));
        Ok(())
    }

    /// A lifecycle call drawn at random: (what, subscription, body, request).
    fn draw_action(&mut self) -> (&'static str, String, Value, lambda_http::Request) {
        let sub = self.subs[self.rng.below(self.subs.len() as u64) as usize].id.as_str().to_string();
        let (what, path, body) = match self.rng.below(6) {
            0 | 1 => ("cancel", format!("/subscriptions/{sub}/cancel"), json!({"at_period_end": self.rng.chance(50)})),
            2 | 3 => ("pause", format!("/subscriptions/{sub}/pause"), json!({"at_period_end": self.rng.chance(50)})),
            4 => ("resume", format!("/subscriptions/{sub}/resume"), json!({})),
            _ => ("plan", format!("/subscriptions/{sub}/plan"), json!({"amount": self.rng.range(10, 1_000) * 100})),
        };
        let req = self.request("POST", &path, &sub, Some(body.clone()), false);
        (what, sub, body, req)
    }

    fn record_action(
        &mut self,
        what: &str,
        sub: &str,
        body: &Value,
        (status, answer_body): (u16, String),
    ) -> Result<(), String> {
        self.tally.actions += 1;
        *self.tally.action_answers.entry(status).or_default() += 1;
        if !acceptable(status) {
            return Err(format!("{what} {sub} answered {status}: {answer_body}"));
        }
        let code = serde_json::from_str::<Value>(&answer_body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        self.log.push(format!("{what} {sub} {body} → {status} {code}"));
        Ok(())
    }

    async fn action(&mut self) -> Result<(), String> {
        let (what, sub, body, req) = self.draw_action();
        let answered = answer(subscriptions::handler(&self.subscriptions, req).await);
        self.record_action(what, &sub, &body, answered)
    }

    /// No more faults; held-back webhooks are delivered; time moves past every lease and recheck
    /// window (11 minutes, twice) and then past the review window (25 hours), with the stream's
    /// work, verify's sweep and a tick each time. An outcome still unknown by then is `needs_review` (a StepPay
    /// charge that failed with a 5xx is never confirmed either way by StepPay's API: a person
    /// must look), never charged again.
    async fn settle(&mut self) -> Result<(), String> {
        self.sandbox.shared.state.lock().expect("sandbox state").scenarios.clear();
        let flush = format!("{}/__admin/webhooks/flush", self.sandbox.base_url());
        self.http.post(flush).send().await.map_err(|e| e.to_string())?;
        if self.tally.crashes > 0 {
            // A dead worker's lease ends on the wall clock, whatever the billing time.
            tokio::time::sleep(CHAOS_LEASE.unsigned_abs()).await;
        }
        for step in [SignedDuration::from_mins(11), SignedDuration::from_mins(11), SignedDuration::from_hours(25)] {
            self.travel(step).await?;
            self.pump_webhooks().await?;
            // verify's schedule: open first charges and webhooks the stream did not settle.
            verify::sweep(&self.verify, self.now).await;
            renew::tick(&self.renew, self.now, None).await;
        }
        self.pump_webhooks().await?;
        self.log.push(format!("settled at {}", self.now));
        Ok(())
    }

    /// The table stream's job in AWS: every stored webhook not yet verified goes to verify (the
    /// stream delivers each new event once; verify records a verdict on each).
    async fn pump_webhooks(&mut self) -> Result<(), String> {
        let table = self.store.dynamo().ok_or("chaos runs on DynamoDB")?;
        let client = &table.client;
        let mut start = None;
        let mut events = Vec::new();
        loop {
            let out = client
                .scan()
                .table_name(&table.name)
                .filter_expression("#e = :e AND #s = :s")
                .expression_attribute_names("#e", paycycle::store::keys::ENTITY)
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":e", aws_sdk_dynamodb::types::AttributeValue::S("webhook_event".into()))
                .expression_attribute_values(
                    ":s",
                    aws_sdk_dynamodb::types::AttributeValue::S(
                        paycycle::store::webhooks::WebhookStatus::Received.as_str().into(),
                    ),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| format!("scan webhooks: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            for item in out.items() {
                let event: paycycle::store::webhooks::WebhookEvent =
                    serde_dynamo::from_item(item.clone()).map_err(|e| format!("webhook item: {e}"))?;
                events.push(event);
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        for event in events {
            if let Err(e) = verify::verify_event(&self.verify, &event, self.now).await {
                self.log.push(format!("verify {}: {e} (retried by the next pump)", event.dedupe_key));
            }
            self.tally.webhooks += 1;
        }
        Ok(())
    }

    fn tamper(&mut self, t: Tamper) {
        let mut state = self.sandbox.shared.state.lock().expect("sandbox state");
        // An unrecorded refund needs a charge with something left to refund (else it is an
        // over-refund, caught as that).
        let target =
            |c: &&pg_sandbox::state::Charge| c.amount > 0 && (t != Tamper::UnrecordedRefund || c.refunded < c.amount);
        let Some(charge) = state.charges.iter().find(target).cloned() else {
            return;
        };
        self.tally.tampered = true;
        match t {
            Tamper::DoubleCharge => {
                // The same order approved twice: its own PG id, the charge's order id (a window
                // payment's order is its PG id).
                let mut twin = charge.clone();
                twin.partner_order_id = Some(charge.partner_order_id.clone().unwrap_or_else(|| charge.id.clone()));
                twin.id = format!("{}TWIN", charge.id);
                state.charges.push(twin);
            }
            Tamper::OverRefund | Tamper::UnrecordedRefund => {
                let amount = if t == Tamper::OverRefund { charge.amount + 1 } else { 1 };
                state.refunds.push(pg_sandbox::state::RefundEntry {
                    pg: charge.pg,
                    charge_id: charge.id.clone(),
                    amount,
                    tid: "tampered".into(),
                    at: self.now,
                });
            }
        }
        self.log.push(format!("tampered: {t:?} on {}", charge.id));
    }

    async fn reconcile(&mut self) -> Result<(), String> {
        // Whatever the faults did, every body our client sent and the sandbox answered kept the
        // shape the PG documents (pg-shapes/).
        let off_shape: Vec<String> = {
            let log = self.sandbox.shared.shape_log.lock().expect("shape log");
            log.violations.iter().map(ToString::to_string).collect()
        };
        if !off_shape.is_empty() {
            return Err(format!("bodies off their PG's documented shape:\n{}", off_shape.join("\n")));
        }
        let (charges, pg_refunds) = {
            let state = self.sandbox.shared.state.lock().expect("sandbox state");
            (state.charges.clone(), state.refunds.clone())
        };
        // Our customers' cards: the subscriptions' billing keys and every key a checkout's window
        // issued (charged or not, activated or not).
        let keys: Vec<&str> = self
            .subs
            .iter()
            .map(|s| s.key.as_str())
            .chain(self.checkout_subs.iter().map(|(_, _, key)| key.as_str()))
            .collect();
        // Renewal charges: approved charges of our cards for an amount (the StepPay card
        // registration is a 0원 charge).
        let renewals: Vec<&pg_sandbox::state::Charge> = charges
            .iter()
            .filter(|c| c.amount > 0 && c.billing_key.as_deref().is_some_and(|k| keys.contains(&k)))
            .collect();
        let mut payments = Vec::new();
        let mut in_review: Vec<(SubscriptionId, u32)> = Vec::new();
        for s in &self.subs {
            let record = self.store.get_subscription(&s.id).await.map_err(|e| format!("{}: {e}", s.id.as_str()))?;
            let record = record.ok_or_else(|| format!("{} disappeared", s.id.as_str()))?;
            let state = record.subscription.state;
            *self.tally.final_states.entry(format!("{state:?}")).or_default() += 1;
            // Held for a person: in review, or canceled out of review (the canceled subscription
            // keeps the unknown charge on record, so a later webhook still settles it).
            let unknown_charge = record.subscription.collection.as_ref().filter(|c| c.unknown_since.is_some());
            let held = state == SubscriptionState::NeedsReview
                || (state == SubscriptionState::Canceled && unknown_charge.is_some());
            if held {
                self.tally.needs_review += 1;
                if let Some(c) = &record.subscription.collection {
                    in_review.push((s.id.clone(), c.period));
                }
            }
            let ps = self.store.payments_of_subscription(&s.id).await.map_err(|e| e.to_string())?;
            // Distinct periods, none beyond the current one.
            let current = record.subscription.current_period.as_ref().map(|p| p.index);
            let mut periods: Vec<u32> = ps.iter().filter_map(|p| p.charge_id.as_ref().map(ChargeId::period)).collect();
            periods.sort_unstable();
            if periods.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("double charge: {} has two payments for one period: {periods:?}", s.id.as_str()));
            }
            if let (Some(max), Some(current)) = (periods.last(), current)
                && *max > current
            {
                return Err(format!(
                    "{} has a payment for period {max} beyond its current period {current}",
                    s.id.as_str()
                ));
            }
            if let Some(c) = unknown_charge
                && !held
            {
                return Err(format!("{} still has an unknown charge outcome after settling: {c:?}", s.id.as_str()));
            }
            payments.extend(ps);
        }

        // Every approved PG charge is exactly one payment of ours, at the same amount, and every
        // payment an approved charge — production's comparison ([`paycycle::reconcile::compare`];
        // refunds are held to the stricter checks below) — except the charge a `needs_review`
        // subscription holds for a person (its outcome never became known to us). At most one
        // approved charge per subscription and period.
        let mut per_period: BTreeMap<(String, u32), u32> = BTreeMap::new();
        let mut held: Vec<&str> = Vec::new();
        for c in &renewals {
            let order = c.partner_order_id.clone().unwrap_or_else(|| c.id.clone());
            // A window payment's order is its checkout: period 0 of the checkout's subscription.
            let (sub, period) = match self.checkout_subs.iter().find(|(_, checkout, _)| *checkout == order) {
                Some((sub, _, _)) => (sub.clone(), 0),
                None => {
                    let charge: ChargeId = order.parse().map_err(|e| format!("PG order id {order}: {e:?}"))?;
                    (charge.subscription().clone(), charge.period())
                }
            };
            *per_period.entry((sub.as_str().to_string(), period)).or_default() += 1;
            let recorded = payments.iter().any(|p| p.pg_payment_id == c.id);
            if !recorded && in_review.iter().any(|(s, p)| *s == sub && *p == period) {
                self.tally.flagged_for_review += 1;
                if !self.tally.review_seeds.contains(&self.seed) {
                    self.tally.review_seeds.push(self.seed);
                }
                held.push(&c.id);
                continue;
            }
            self.tally.pg_charges += 1;
            self.tally.charged_krw += c.amount;
        }
        let krw = |n: i64| paycycle::money::Krw::new(n).unwrap_or(paycycle::money::Krw::ZERO);
        let seen = |id: &str, amount| paycycle::reconcile::Seen {
            payment_id: id.to_string(),
            pg_payment_id: id.to_string(),
            amount,
            refunded: None,
        };
        let pg_side: Vec<_> =
            renewals.iter().filter(|c| !held.contains(&c.id.as_str())).map(|c| seen(&c.id, krw(c.amount))).collect();
        let ours: Vec<_> = payments.iter().map(|p| seen(&p.pg_payment_id, p.amounts.paid)).collect();
        if let Some(d) = paycycle::reconcile::compare(&pg_side, &ours).differences.first() {
            return Err(format!("reconciliation: {d}"));
        }
        if let Some(((sub, period), n)) = per_period.iter().find(|(_, n)| **n > 1) {
            return Err(format!("double charge: the PG approved {n} charges for {sub} period {period}"));
        }
        self.tally.payments += payments.len() as u64;

        // Refunds: the PG never gave back more than a charge, nor more than we reserved; what we
        // confirmed the PG really refunded.
        for p in &payments {
            let pg_refunded: i64 = pg_refunds.iter().filter(|r| r.charge_id == p.pg_payment_id).map(|r| r.amount).sum();
            let charge = renewals.iter().find(|c| c.id == p.pg_payment_id).expect("matched above");
            let ours = self.store.refunds_of(&p.payment_id).await.map_err(|e| e.to_string())?;
            let unknown =
                ours.iter().filter(|r| matches!(r.status, paycycle::domain::payment::RefundStatus::Unknown)).count();
            self.tally.refunds_unknown += unknown as u64;
            let a = &p.amounts;
            let (refunded, pending, paid) = (a.refunded.won(), a.refund_pending.won(), a.paid.won());
            if pg_refunded > charge.amount || charge.refunded > charge.amount {
                return Err(format!(
                    "over-refund at the PG: {} refunded {pg_refunded}원 of {}원",
                    charge.id, charge.amount
                ));
            }
            if refunded + pending > paid {
                return Err(format!("payment {} commits {refunded}+{pending}원 of {paid}원", p.payment_id));
            }
            if pg_refunded < refunded || pg_refunded > refunded + pending {
                return Err(format!(
                    "payment {}: we say refunded {refunded}원 (+{pending}원 pending), the PG refunded {pg_refunded}원",
                    p.payment_id
                ));
            }
            if p.refundable.won() != paid - refunded - pending {
                return Err(format!(
                    "payment {}: refundable {} ≠ {paid} − {refunded} − {pending}",
                    p.payment_id,
                    p.refundable.won()
                ));
            }
            self.tally.pg_refunded_krw += pg_refunded;
            self.tally.our_refunded_krw += refunded;
        }
        Ok(())
    }
}

/// webhook-ingest's routes on 127.0.0.1, for the sandbox to deliver to.
struct WebhookEndpoint {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookEndpoint {
    async fn start(deps: webhook_ingest::Deps) -> std::io::Result<Self> {
        let deps = Arc::new(deps);
        let app = axum::Router::new().route(
            "/webhooks/{pg}",
            axum::routing::post(move |headers: http::HeaderMap, uri: http::Uri, body: String| {
                let deps = deps.clone();
                async move {
                    let (mut parts, body) = lambda_http::Request::new(lambda_http::Body::Text(body)).into_parts();
                    parts.method = http::Method::POST;
                    parts.uri = uri;
                    parts.headers = headers;
                    let (status, text) =
                        answer(webhook_ingest::handler(&deps, lambda_http::Request::from_parts(parts, body)).await);
                    (http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR), text)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, task })
    }
}

impl Drop for WebhookEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Any 2xx/4xx, a PG's failure passed on (502, 504), or 503 when DynamoDB failed (the emulator
/// under load, as DynamoDB throttles: "retry with the same Idempotency-Key"; the scenario goes on
/// and the reconciliation still has to hold). Never a 500.
fn acceptable(status: u16) -> bool {
    status < 500 || matches!(status, 502..=504)
}

/// A handler's answer as (status, body); a handler error is what API Gateway would make of it.
fn answer(result: Result<lambda_http::Response<lambda_http::Body>, lambda_http::Error>) -> (u16, String) {
    match result {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = match res.into_body() {
                lambda_http::Body::Text(t) => t,
                lambda_http::Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => String::new(),
            };
            (status, body)
        }
        Err(e) => (500, e.to_string()),
    }
}
