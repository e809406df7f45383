//! renew against moto and the PG sandbox, checked on the sandbox's ledger: month-end anchors,
//! overlapping ticks, unknown outcomes, crashes at every step, dunning.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use paycycle::calendar::{in_seoul, seoul};
use paycycle::config::Config;
use paycycle::domain::attempt::SubscriptionId;
use paycycle::domain::subscription::SubscriptionState;
use paycycle::events::EventPublisher;
use paycycle::pg::PgMode;
use paycycle::pg::{Payer, Registry};
use paycycle::store::Store;
use paycycle::store::subscriptions::{SubscriptionRecord, due_shard};
use paycycle_dev::{LocalStack, Options};
use paycycle_e2e::{Partner, SandboxDriver};
use renew::{CrashPoint, Deps, Settings, tick};
use serde_json::{Value, json};

struct Env {
    stack: LocalStack,
    store: Store,
    deps: Deps,
    /// Seals the seeded subscriptions' keys as verify would: a process (and data key) of its own.
    sealer: paycycle::store::vault::KeyVault,
}

async fn env() -> Env {
    env_with(Options { api_port: 0, ..Options::default() }).await
}

async fn env_with(options: Options) -> Env {
    let stack = LocalStack::start(options).await.unwrap();
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let store = Store::new(&sdk, &stack.provisioned.table);
    let deps = renew_deps(&stack, &store, 1_000).await;
    let sealer = stack.vault().await;
    Env { stack, store, deps, sealer }
}

/// renew's dependencies on the stack with a PG client timeout of `pg_timeout_ms`.
async fn renew_deps(stack: &LocalStack, store: &Store, pg_timeout_ms: u64) -> Deps {
    renew_deps_with(stack, store, pg_timeout_ms, &[]).await
}

/// [`renew_deps`] with more environment (`extra`), as one process of its own (its own PG clients
/// and their budgets).
async fn renew_deps_with(
    stack: &LocalStack,
    store: &Store,
    pg_timeout_ms: u64,
    extra: &[(&'static str, &str)],
) -> Deps {
    let sdk = paycycle_testkit::moto::sdk_config_for(stack.moto.endpoint()).await;
    let mut vars: BTreeMap<&str, String> = [
        ("PAYCYCLE_TABLE", stack.provisioned.table.clone()),
        ("PAYCYCLE_EVENT_BUS", stack.provisioned.buses.values().next().unwrap().clone()),
        ("PAYCYCLE_BILLING_KEY_KMS_KEY", paycycle_fixtures::kms_key(&stack.provisioned)),
        ("STEPPAY_BASE_URL", stack.sandbox.base_url()),
        ("PAYPLE_BASE_URL", stack.sandbox.base_url()),
        ("PAYPLE_REFERER", "http://127.0.0.1:3000".to_string()),
        ("PG_TIMEOUT_MS", pg_timeout_ms.to_string()),
    ]
    .into_iter()
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    Deps {
        store: store.clone(),
        pgs: Registry::new(&config.pg, &paycycle_dev::local_secrets()),
        publisher: EventPublisher::new(&sdk, &config.event_bus),
        vault: paycycle::store::vault::KeyVault::new(&sdk, &config.billing_key_kms_key),
        // The sandbox's clock follows the tests' time travel (see `tick_at`).
        settings: Settings { concurrency: 8, allow_time_travel: true, ..Settings::default() },
        crash_at: None,
        shard_queue: None,
    }
}

fn kst(y: i16, m: i8, d: i8, h: i8) -> Timestamp {
    date(y, m, d).at(h, 0, 0, 0).to_zoned(seoul()).unwrap().timestamp()
}

impl Env {
    /// The partner that owns the seeded subscriptions, on the local stack's HTTP API.
    async fn partner(&self) -> Partner {
        Partner::new(self.stack.api_url(), self.stack.create_api_key("e2e", "default").await.unwrap())
    }

    fn driver(&self) -> SandboxDriver {
        SandboxDriver::new(self.stack.sandbox.base_url())
    }

    async fn admin(&self, path: &str, body: Value) {
        self.driver().admin(path, body).await
    }

    async fn ledger(&self) -> Value {
        self.driver().ledger().await
    }

    /// The PG's clock follows our time travel, then a worker walks `s`'s due-index shard only.
    async fn walk_at(&self, s: &SubscriptionRecord, now: Timestamp, deps: &Deps) -> renew::Report {
        self.admin("/__admin/clock", json!({"now": now.to_string()})).await;
        let (tick, shard) = ("evt-walk".to_string(), due_shard(s.id()));
        let work = paycycle::store::shard_queue::ShardWork { tick, shard, now, cursor: None, hop: 0 };
        let mut report = renew::Report::default();
        renew::fanout::walk_shard(deps, &work, None, &mut report).await.unwrap();
        report
    }

    /// The PG's clock follows our time travel, then one tick.
    async fn tick_at(&self, now: Timestamp, deps: &Deps) -> renew::Report {
        self.admin("/__admin/clock", json!({"now": now.to_string()})).await;
        tick(deps, now, None).await
    }

    async fn billing_key(&self, pg: PgMode) -> String {
        match pg {
            PgMode::Payple => {
                let payer =
                    Payer {
                        customer_id: "c".into(), name: "홍길동".into(), phone: None, email: None, payer_no: None
                    };
                self.driver().payple_billing_key(&self.deps.pgs.payple, &payer).await
            }
            _ => self.driver().steppay_billing_key().await,
        }
    }

    /// An active subscription anchored at `anchor` with a real billing key at the sandbox.
    async fn subscription(&self, id: &str, pg: PgMode, anchor: Timestamp, amount: i64) -> SubscriptionRecord {
        let billing_key = self.billing_key(pg).await;
        self.subscription_with_key(id, pg, anchor, amount, billing_key).await
    }

    async fn subscription_with_key(
        &self,
        id: &str,
        pg: PgMode,
        anchor: Timestamp,
        amount: i64,
        billing_key: String,
    ) -> SubscriptionRecord {
        let r = paycycle_fixtures::subscription(id)
            .pg(pg)
            .anchor(anchor)
            .amount(amount)
            .billing_key(Some(&billing_key))
            .sealed(&self.sealer)
            .await;
        self.store.create_subscription(&r).await.unwrap();
        r
    }

    /// `r`'s billing key, opened (it is stored sealed).
    async fn key_of(&self, r: &SubscriptionRecord) -> String {
        self.stack.billing_key_of(r).await.expect("a billing key that opens")
    }

    async fn get(&self, id: &str) -> SubscriptionRecord {
        self.store.get_subscription(&SubscriptionId::parse(id).unwrap()).await.unwrap().unwrap()
    }

    /// Charges in the sandbox's ledger for a subscription (by our charge id).
    async fn pg_charges(&self, id: &str) -> Vec<String> {
        let ledger = self.ledger().await;
        ledger["charges"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                let ours = c["partner_order_id"].as_str().or(c["id"].as_str()).unwrap_or("");
                ours.starts_with(&format!("{id}-p")).then(|| ours.to_string())
            })
            .collect()
    }
}

#[tokio::test]
async fn a_jan_31_anchor_renews_on_month_ends_across_a_year() {
    let e = env().await;
    e.subscription("sub_jan31", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    let mut charged_days = Vec::new();
    for _ in 0..12 {
        let due = e.get("sub_jan31").await.subscription.next_attempt_at.unwrap();
        // A minute early: nothing happens.
        let early = e.tick_at(due.checked_sub(SignedDuration::from_mins(1)).unwrap(), &e.deps).await;
        assert_eq!(early.charged, 0);
        let r = e.tick_at(due.checked_add(SignedDuration::from_mins(5)).unwrap(), &e.deps).await;
        assert_eq!(r.charged, 1, "{r:?}");
        let d = in_seoul(due).date();
        charged_days.push((d.month(), d.day()));
    }
    assert_eq!(
        charged_days,
        [(2, 28), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31), (9, 30), (10, 31), (11, 30), (12, 31), (1, 31)]
    );
    let s = e.get("sub_jan31").await;
    assert_eq!(s.subscription.current_period.unwrap().index, 12);
    let payments = e.store.payments_of_subscription(s.id()).await.unwrap();
    assert_eq!(payments.len(), 12);
    assert_eq!(e.pg_charges("sub_jan31").await.len(), 12, "the PG charged exactly once per period");
    // The PG charged each period on its KST date.
    let ledger = e.ledger().await;
    let dates: Vec<String> =
        ledger["charges"].as_array().unwrap().iter().map(|c| c["pay_date"].as_str().unwrap().to_string()).collect();
    assert_eq!(&dates[..4], ["20270228", "20270331", "20270430", "20270531"]);
}

/// Items written before billing keys were sealed hold the key as a plain string: renew still
/// charges it, and the sealed subscriptions of the same tick cost one KMS Decrypt between them.
#[tokio::test]
async fn a_legacy_plain_billing_key_still_renews() {
    let e = env().await;
    let anchor = kst(2027, 1, 15, 10);
    let key = e.billing_key(PgMode::Payple).await;
    let legacy = paycycle_fixtures::subscription("sub_legacy").anchor(anchor).billing_key(Some(&key)).build();
    assert!(legacy.billing_key.as_ref().unwrap().is_legacy());
    e.store.create_subscription(&legacy).await.unwrap();
    for i in 0..3 {
        e.subscription(&format!("sub_sealed{i}"), PgMode::Payple, anchor, 9_900).await;
    }
    let before = e.deps.vault.kms_calls();
    let r = e.tick_at(legacy.subscription.next_attempt_at.unwrap(), &e.deps).await;
    assert_eq!(r.charged, 4, "{r:?}");
    assert_eq!(e.pg_charges("sub_legacy").await, ["sub_legacy-p1-a1"]);
    let ledger = e.ledger().await;
    let charge = ledger["charges"].as_array().unwrap().iter().find(|c| c["id"] == "sub_legacy-p1-a1").unwrap().clone();
    assert_eq!(charge["billing_key"].as_str(), Some(key.as_str()), "charged on its own key");
    let after = e.deps.vault.kms_calls();
    assert_eq!((after.decrypt - before.decrypt, after.generate_data_key), (1, 0), "renew never generates keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_overlapping_ticks_charge_200_subscriptions_exactly_once() {
    // Its own moto: moto copies tables inside transactions, and this test makes many.
    let e = env_with(Options { api_port: 0, own_moto: true, ..Options::default() }).await;
    let anchor = kst(2027, 1, 10, 9);
    // One customer card for all: each charge has its own partnerOrderId.
    let key = e.billing_key(PgMode::SteppaySelf).await;
    for i in 0..200 {
        e.subscription_with_key(&format!("sub_ov{i}"), PgMode::SteppaySelf, anchor, 1_000, key.clone()).await;
    }
    let setup = std::time::Instant::now();
    let now = kst(2027, 2, 10, 9).checked_add(SignedDuration::from_mins(1)).unwrap();
    e.admin("/__admin/clock", json!({"now": now.to_string()})).await;
    let mut ticks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let deps = e.deps.clone();
        ticks.spawn(async move { tick(&deps, now, None).await });
    }
    let mut charged = 0;
    while let Some(r) = ticks.join_next().await {
        charged += r.unwrap().charged;
    }
    eprintln!("8 overlapping ticks over 200 subscriptions: {:.1} s", setup.elapsed().as_secs_f64());
    assert_eq!(charged, 200, "the ticks' reports add up to 200 charges");
    let ledger = e.ledger().await;
    let ours: Vec<&str> =
        ledger["charges"].as_array().unwrap().iter().filter_map(|c| c["partner_order_id"].as_str()).collect();
    assert_eq!(ours.len(), 200, "exactly 200 charges in the PG's ledger");
    let unique: std::collections::BTreeSet<_> = ours.iter().collect();
    assert_eq!(unique.len(), 200);
}

#[tokio::test]
async fn a_timeout_after_the_pg_charged_is_resolved_on_the_next_tick_without_a_second_charge() {
    let e = env().await;
    let s = e.subscription("sub_to", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    let r = e.tick_at(due, &e.deps).await;
    assert_eq!(r.unknown, 1, "{r:?}");
    assert_eq!(e.pg_charges("sub_to").await.len(), 1, "the PG charged");
    assert!(e.store.payments_of_subscription(s.id()).await.unwrap().is_empty(), "we do not know it yet");
    tokio::time::sleep(Duration::from_millis(1600)).await; // let the held answer finish
    let r = e.tick_at(due.checked_add(SignedDuration::from_mins(6)).unwrap(), &e.deps).await;
    assert_eq!(r.resolved, 1, "{r:?}");
    assert_eq!(e.pg_charges("sub_to").await.len(), 1, "no second charge");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1);
    assert_eq!(e.get("sub_to").await.subscription.state, SubscriptionState::Active);
}

#[tokio::test]
async fn a_crash_at_any_step_still_charges_every_period_exactly_once() {
    let e = env().await;
    // Leases run on the wall clock: a short one, waited for for real (held in whole seconds, so
    // at least 7 s of it are left for the ticks during it, on a busy machine too).
    let lease = SignedDuration::from_secs(8);
    let deps = Deps { settings: Settings { lease, ..e.deps.settings.clone() }, ..e.deps.clone() };
    let points =
        [CrashPoint::AfterClaim, CrashPoint::AfterAttemptWrite, CrashPoint::AfterPgCall, CrashPoint::BeforeCommit];
    for (i, point) in points.iter().enumerate() {
        let id = format!("sub_crash{i}");
        let s = e.subscription(&id, PgMode::Payple, kst(2027, 1, 20, 10), 5_000).await;
        let due = s.subscription.next_attempt_at.unwrap();
        let crashing = Deps { crash_at: Some(*point), ..deps.clone() };
        // Its shard only, not a whole tick: a tick's other shards take seconds of a loaded moto
        // shared by every test, and the lease runs from the claim.
        let r = e.walk_at(&s, due, &crashing).await;
        assert_eq!(r.errors, 1, "{point:?}: {r:?}");
        // Ticks during the lease do nothing, whatever their billing time; after it, the period is
        // settled exactly once.
        let during = e.walk_at(&s, due.checked_add(SignedDuration::from_mins(10)).unwrap(), &deps).await;
        assert_eq!(during.charged + during.resolved, 0, "{point:?}: lease still held: {during:?}");
        tokio::time::sleep(Duration::from_millis(8_200)).await;
        for minutes in [16, 22] {
            e.tick_at(due.checked_add(SignedDuration::from_mins(minutes)).unwrap(), &deps).await;
        }
        assert_eq!(e.pg_charges(&id).await.len(), 1, "{point:?}: exactly one PG charge");
        let after = e.get(&id).await;
        assert_eq!(after.subscription.state, SubscriptionState::Active, "{point:?}");
        assert_eq!(after.subscription.current_period.unwrap().index, 1, "{point:?}");
        assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "{point:?}");
    }
    // StepPay self: the claim is the attempt's write (one transaction), and StepPay cannot be
    // asked about a charge by our id: a worker that died after it may have charged, so the charge
    // is never sent again blind — its outcome is unknown until StepPay's webhook or a person says.
    let s = e.subscription("sub_crashsp", PgMode::SteppaySelf, kst(2027, 1, 20, 10), 5_000).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.tick_at(due, &Deps { crash_at: Some(CrashPoint::AfterClaim), ..deps.clone() }).await;
    tokio::time::sleep(Duration::from_millis(8_200)).await;
    let r = e.tick_at(due.checked_add(SignedDuration::from_mins(6)).unwrap(), &deps).await;
    assert_eq!((r.unknown, e.pg_charges("sub_crashsp").await.len()), (1, 0), "{r:?}");
}

#[tokio::test]
async fn dunning_soft_decline_retry_hard_stop_and_exhaustion() {
    let e = env().await;
    // Soft decline, then success on the +1 day retry, schedule unchanged.
    let s = e.subscription("sub_soft", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    assert_eq!(e.tick_at(due, &e.deps).await.declined, 1);
    let past_due = e.get("sub_soft").await;
    assert_eq!(past_due.subscription.state, SubscriptionState::PastDue);
    let retry = past_due.subscription.next_attempt_at.unwrap();
    assert_eq!(retry, due.checked_add(SignedDuration::from_hours(24)).unwrap());
    assert_eq!(e.tick_at(retry, &e.deps).await.charged, 1);
    let ok = e.get("sub_soft").await;
    assert_eq!(ok.subscription.state, SubscriptionState::Active);
    assert_eq!(
        in_seoul(ok.subscription.next_attempt_at.unwrap()).date(),
        date(2027, 3, 31),
        "no drift after a late payment"
    );
    assert_eq!(e.pg_charges("sub_soft").await, ["sub_soft-p1-a2"]);

    // Hard decline: no retries. (On Payple: StepPay publishes no error codes, so no StepPay
    // answer is ever a hard decline.)
    let h = e.subscription("sub_hard", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    e.admin(
        "/__admin/scenarios",
        json!({"billing_key": e.key_of(&h).await, "fault": {"kind": "decline", "hard": true}}),
    )
    .await;
    e.tick_at(h.subscription.next_attempt_at.unwrap(), &e.deps).await;
    let hard = e.get("sub_hard").await;
    assert_eq!((hard.subscription.state, hard.subscription.next_attempt_at), (SubscriptionState::Unpaid, None));

    // Soft declines every time: 1 + 4 retries, then unpaid.
    let x = e.subscription("sub_exh", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    e.admin(
        "/__admin/scenarios",
        json!({"billing_key": e.key_of(&x).await, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let mut tries = 0;
    while let Some(at) = e.get("sub_exh").await.subscription.next_attempt_at {
        e.tick_at(at, &e.deps).await;
        tries += 1;
        assert!(tries <= 5, "dunning must end");
    }
    assert_eq!(tries, 5);
    assert_eq!(e.get("sub_exh").await.subscription.state, SubscriptionState::Unpaid);
    assert!(e.pg_charges("sub_exh").await.is_empty());
    assert_eq!(e.store.attempts_of(x.id()).await.unwrap().len(), 5);
}

#[tokio::test]
async fn cancel_at_period_end_and_managed_subscriptions_are_not_charged() {
    let e = env().await;
    let s = e.subscription("sub_cpe", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    let next = s.next(s.subscription.cancel(kst(2027, 2, 1, 0), true).unwrap().subscription);
    let mut tx = e.store.tx();
    tx.put_subscription_next(&next, None);
    e.store.commit(tx).await.unwrap();
    let r = e.tick_at(s.subscription.next_attempt_at.unwrap(), &e.deps).await;
    assert_eq!((r.canceled, r.charged), (1, 0));
    assert_eq!(e.get("sub_cpe").await.subscription.state, SubscriptionState::Canceled);

    e.subscription("sub_managed", PgMode::SteppayManaged, kst(2027, 1, 31, 10), 9_900).await;
    let r = e.tick_at(kst(2027, 6, 1, 0), &e.deps).await;
    assert_eq!(r.due, 0, "StepPay renews managed subscriptions itself: {r:?}");
    assert!(e.pg_charges("sub_managed").await.is_empty());
}

#[test]
fn time_travel_needs_the_flag() {
    let settings = Settings::default();
    let event = json!({"time": "2027-02-28T00:00:00Z", "now": "2030-01-01T00:00:00Z"});
    assert!(matches!(renew::tick_time(&event, &settings), Err(renew::RenewError::TimeTravelNotAllowed)));
    let allowed = Settings { allow_time_travel: true, ..Settings::default() };
    assert_eq!(renew::tick_time(&event, &allowed).unwrap().to_string(), "2030-01-01T00:00:00Z");
    assert_eq!(
        renew::tick_time(&json!({"time": "2027-02-28T00:00:00Z"}), &settings).unwrap().to_string(),
        "2027-02-28T00:00:00Z"
    );
    assert!(renew::tick_time(&json!({}), &settings).is_err());
}

fn wall_now() -> Timestamp {
    Timestamp::now()
}

fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap()
}

/// Holds the next charge at the PG for `ms` before it is processed.
async fn hold_next_charge(e: &Env, ms: u64) {
    e.admin("/__admin/scenarios", json!({"operation": "charge", "count": 1, "fault": {"kind": "delay", "ms": ms}}))
        .await;
}

#[tokio::test]
async fn two_overlapping_ticks_whose_billing_times_differ_by_the_lease_charge_once() {
    let e = env().await;
    let slow = renew_deps(&e.stack, &e.store, 5_000).await;
    let s = e.subscription("sub_ovnow", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    hold_next_charge(&e, 2_000).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let first = tokio::spawn({
        let deps = slow.clone();
        async move { tick(&deps, due, None).await }
    });
    wait_for_attempt(&e, &s).await;
    // The next scheduled tick: its billing `now` is one lease later, its wall clock is not.
    let second = tick(&slow, plus(due, SignedDuration::from_secs(300)), None).await;
    let first = first.await.unwrap();
    assert_eq!(second.claimed, 0, "the first tick's lease is live on the wall clock: {second:?}");
    assert_eq!(first.charged, 1, "{first:?}");
    assert_eq!(e.pg_charges("sub_ovnow").await.len(), 1, "one charge at the PG");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "and it is recorded");
}

#[tokio::test]
async fn a_lease_taken_by_a_tick_behind_the_wall_clock_is_live_for_the_lifecycle_api() {
    let e = env().await;
    let slow = renew_deps(&e.stack, &e.store, 5_000).await;
    let partner = e.partner().await;
    // Anchored 40 days ago: its renewal was due 10 days ago, and a tick runs at that billing time.
    let anchor = plus(wall_now(), SignedDuration::from_hours(-40 * 24));
    let s = e.subscription("sub_behind", PgMode::Payple, anchor, 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    hold_next_charge(&e, 2_000).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let ticking = tokio::spawn({
        let deps = slow.clone();
        async move { tick(&deps, due, None).await }
    });
    wait_for_attempt(&e, &s).await;
    let (status, v) = partner.post("/subscriptions/sub_behind/cancel", &json!({}), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    let r = ticking.await.unwrap();
    assert_eq!(r.charged, 1, "{r:?}");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "the renewal is recorded");
    let (status, v) = partner.post("/subscriptions/sub_behind/cancel", &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
}

#[tokio::test]
async fn a_lease_expires_on_the_wall_clock_whatever_the_ticks_billing_time() {
    let e = env().await;
    let partner = e.partner().await;
    let s = e.subscription("sub_ahead", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    // Canceled at its period's end: renew claims it with no charge (a charge's claim writes its
    // attempt, and a pending attempt holds lifecycle changes until it is settled).
    let next = s.next(s.subscription.cancel(kst(2027, 1, 20, 0), true).unwrap().subscription);
    let mut tx = e.store.tx();
    tx.put_subscription_next(&next, None);
    e.store.commit(tx).await.unwrap();
    // A tick a year ahead of the wall clock claims it and dies there.
    let lease = SignedDuration::from_secs(2);
    let short = Deps {
        crash_at: Some(CrashPoint::AfterClaim),
        settings: Settings { lease, ..e.deps.settings.clone() },
        ..e.deps.clone()
    };
    assert_eq!(e.tick_at(due, &short).await.errors, 1);
    let (status, v) = partner.post("/subscriptions/sub_ahead/cancel", &json!({}), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (status, v) = partner.post("/subscriptions/sub_ahead/cancel", &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "the dead tick's lease expired: {v}");
}

#[tokio::test]
async fn a_stale_tick_event_does_nothing() {
    let settings = Settings::default();
    let late = plus(wall_now(), SignedDuration::from_mins(-30)).to_string();
    let event = json!({"time": late});
    assert!(renew::stale_event(&event, &settings, wall_now()), "a tick 30 minutes late is dropped");
    let on_time = json!({"time": plus(wall_now(), SignedDuration::from_secs(-20)).to_string()});
    assert!(!renew::stale_event(&on_time, &settings, wall_now()));
    // Time travel (local stack and tests only) names its own `now`.
    let travel = json!({"time": late, "now": "2030-01-01T00:00:00Z"});
    let allowed = Settings { allow_time_travel: true, ..Settings::default() };
    assert!(!renew::stale_event(&travel, &allowed, wall_now()));
    assert!(renew::stale_event(&travel, &settings, wall_now()));
}

impl Env {
    /// The subscription's first payment, charged at the PG and recorded (period 0).
    async fn first_payment(&self, r: &SubscriptionRecord) -> paycycle::store::payments::PaymentRecord {
        let charge_id = paycycle::domain::attempt::ChargeId::new(r.id().clone(), 0, 1).unwrap();
        let req = paycycle::pg::ChargeRequest {
            billing_key: self.key_of(r).await,
            charge_id: charge_id.clone(),
            amount: r.subscription.plan.amount,
            goods: "Pro".into(),
            payer: Payer {
                customer_id: r.customer.id.clone(),
                name: "홍길동".into(),
                phone: None,
                email: None,
                payer_no: None,
            },
        };
        let charged = self.deps.pgs.adapter(r.pg).charge(&req).await.unwrap().0;
        let p = paycycle::store::payments::PaymentRecord::paid(
            r.pg,
            &charged.pg_payment_id,
            &r.customer.id,
            charged.amount,
            charged.approved_at,
            Some(r.id().clone()),
            Some(charge_id),
            None,
        );
        self.store.create_payment(&p).await.unwrap();
        p
    }
}

#[tokio::test]
async fn an_approved_renewal_is_recorded_when_a_cancel_subscription_refund_races_it() {
    let e = env().await;
    let slow = renew_deps(&e.stack, &e.store, 5_000).await;
    let partner = e.partner().await;
    let anchor = plus(wall_now(), SignedDuration::from_hours(-40 * 24));
    let s = e.subscription("sub_refrace", PgMode::Payple, anchor, 9_900).await;
    let first = e.first_payment(&s).await;
    let due = s.subscription.next_attempt_at.unwrap();
    hold_next_charge(&e, 2_000).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let ticking = tokio::spawn({
        let deps = slow.clone();
        async move { tick(&deps, due, None).await }
    });
    wait_for_attempt(&e, &s).await;
    let (status, v) = partner
        .post(
            &format!("/payments/{}/refunds", first.payment_id),
            &json!({"reason": "customer left", "cancel_subscription": true}),
            Some("refund-cancel-race"),
        )
        .await;
    let r = ticking.await.unwrap();
    assert_eq!(r.charged, 1, "{r:?}");
    assert_eq!(e.pg_charges("sub_refrace").await.len(), 2, "the first payment and the renewal");
    let payments = e.store.payments_of_subscription(s.id()).await.unwrap();
    assert_eq!(payments.len(), 2, "the renewal the PG approved is recorded");
    // Refused up front: nothing was refunded, nothing canceled.
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    assert_eq!(e.ledger().await["totals"]["refunded"], 0);
    assert_eq!(e.get("sub_refrace").await.subscription.state, SubscriptionState::Active);
}

#[tokio::test]
async fn a_charge_left_pending_by_a_dead_worker_blocks_lifecycle_changes_until_renew_records_it() {
    let e = env().await;
    let partner = e.partner().await;
    let s = e.subscription("sub_pend", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    // Long enough for the charge to start before its send-by time (the lease's end less the PG
    // timeout of 1 s and a second).
    let lease = SignedDuration::from_secs(4);
    let settings = Settings { lease, ..e.deps.settings.clone() };
    let dying = Deps { crash_at: Some(CrashPoint::AfterPgCall), settings: settings.clone(), ..e.deps.clone() };
    assert_eq!(e.tick_at(due, &dying).await.errors, 1);
    assert_eq!(e.pg_charges("sub_pend").await.len(), 1, "the PG charged");
    tokio::time::sleep(Duration::from_millis(4_200)).await; // the dead worker's lease is over
    for (action, body) in [("cancel", json!({})), ("pause", json!({})), ("plan", json!({"amount": 5_000}))] {
        let (status, v) = partner.post(&format!("/subscriptions/sub_pend/{action}"), &body, None).await;
        assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{action}: {v}");
    }
    let live = Deps { settings, ..e.deps.clone() };
    let r = e.tick_at(plus(due, SignedDuration::from_mins(6)), &live).await;
    assert_eq!(r.charged + r.resolved, 1, "{r:?}");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "recorded, once");
    let (status, v) = partner.post("/subscriptions/sub_pend/cancel", &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
}

#[tokio::test]
async fn an_approved_charge_is_recorded_even_when_its_commit_loses_a_race() {
    let e = env().await;
    let slow = renew_deps(&e.stack, &e.store, 5_000).await;
    let s = e.subscription("sub_commitrace", PgMode::SteppaySelf, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    hold_next_charge(&e, 1_500).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let ticking = tokio::spawn({
        let deps = slow.clone();
        async move { tick(&deps, due, None).await }
    });
    wait_for_attempt(&e, &s).await;
    // verify hears of the charge meanwhile and notes a payment id on the pending attempt.
    let charge_id = paycycle::domain::attempt::ChargeId::new(s.id().clone(), 1, 1).unwrap();
    e.store.hint_attempt(&charge_id, "hinted-by-a-webhook", false).await.unwrap();
    let r = ticking.await.unwrap();
    assert_eq!((r.charged, r.errors), (1, 0), "{r:?}");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "recorded in the same tick");
    assert_eq!(e.get("sub_commitrace").await.subscription.current_period.unwrap().index, 1);
}

impl Env {
    /// A StepPay self subscription whose renewal charged at the PG but whose answer was lost, left
    /// unresolved past the review window: `needs_review`. Returns the PG's idKey of that charge.
    async fn in_review(&self, id: &str) -> (SubscriptionRecord, String) {
        let (s, id_key) = self.in_review_with(id, PgMode::SteppaySelf, "timeout_after_charge").await;
        (s, id_key.expect("the PG charged it"))
    }

    /// A subscription of `pg` whose renewal met `fault` at the PG (`timeout_after_charge`: charged,
    /// answer lost; `timeout_after_decline`: declined, answer lost) and whose lookups failed until
    /// past the review window: `needs_review`. Returns the PG's payment id of the charge, if the
    /// PG charged it (StepPay's idKey, Payple's OID).
    async fn in_review_with(&self, id: &str, pg: PgMode, fault: &str) -> (SubscriptionRecord, Option<String>) {
        let s = self.subscription(id, pg, kst(2027, 1, 15, 10), 9_900).await;
        let due = s.subscription.next_attempt_at.unwrap();
        // StepPay's PAYMENT webhook is held back: the hint comes later, in review.
        self.admin("/__admin/config", json!({"timeout_after_charge_ms": 1_500, "steppay_webhook_url": null})).await;
        self.admin("/__admin/scenarios", json!({"operation": "charge", "count": 1, "fault": {"kind": fault}})).await;
        // Payple can be asked by our charge id: its lookups fail until the window has passed.
        self.admin(
            "/__admin/scenarios",
            json!({"operation": "lookup", "count": 100, "fault": {"kind": "server_error"}}),
        )
        .await;
        let r = self.tick_at(due, &self.deps).await;
        assert_eq!(r.unknown, 1, "{r:?}");
        tokio::time::sleep(Duration::from_millis(1_700)).await; // let the held answer finish
        let r = self.tick_at(plus(due, SignedDuration::from_hours(25)), &self.deps).await;
        assert_eq!(r.needs_review, 1, "{r:?}");
        let driver = self.driver();
        driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();
        assert_eq!(self.get(id).await.subscription.state, SubscriptionState::NeedsReview);
        let ledger = self.ledger().await;
        let charged = ledger["charges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["partner_order_id"] == format!("{id}-p1-a1") || c["id"] == format!("{id}-p1-a1"))
            .map(|c| c["id"].as_str().unwrap().to_string());
        (s, charged)
    }
}

#[tokio::test]
async fn needs_review_is_resolved_by_a_later_steppay_hint_and_can_be_canceled() {
    let e = env().await;
    let partner = e.partner().await;
    let later = kst(2027, 2, 20, 0);

    // A verified StepPay webhook naming the payment arrives after review: renew records it.
    let (s, id_key) = e.in_review("sub_rev").await;
    let charge_id = paycycle::domain::attempt::ChargeId::new(s.id().clone(), 1, 1).unwrap();
    e.store.hint_attempt(&charge_id, &id_key, true).await.unwrap();
    let r = e.tick_at(later, &e.deps).await;
    assert_eq!(r.resolved, 1, "{r:?}");
    let after = e.get("sub_rev").await;
    assert_eq!(
        (after.subscription.state, after.subscription.current_period.unwrap().index),
        (SubscriptionState::Active, 1)
    );
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1);
    assert_eq!(e.pg_charges("sub_rev").await.len(), 1, "looked up, never charged again");

    // In review, nothing is in flight: it can be canceled, and a later hint still records the payment.
    let (s, id_key) = e.in_review("sub_revc").await;
    let (status, v) = partner.post("/subscriptions/sub_revc/cancel", &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
    let charge_id = paycycle::domain::attempt::ChargeId::new(s.id().clone(), 1, 1).unwrap();
    e.store.hint_attempt(&charge_id, &id_key, true).await.unwrap();
    let r = e.tick_at(later, &e.deps).await;
    assert_eq!(r.resolved, 1, "{r:?}");
    assert_eq!(e.get("sub_revc").await.subscription.state, SubscriptionState::Canceled);
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "the approved charge is recorded");
}

/// One StepPay charge id can carry a declined try and then the payment that took the money: the
/// declined one's hint (`payment.failed`) must not keep the paid one's out — renew would look up
/// the declined payment and settle an approved charge as declined. A paid hint replaces a failed
/// one; a failed hint never replaces a paid one.
#[tokio::test]
async fn a_paid_steppay_hint_replaces_a_failed_one_so_the_approved_charge_is_recorded() {
    let e = env().await;
    let (s, id_key) = e.in_review("sub_hintpaid").await;
    let charge_id = paycycle::domain::attempt::ChargeId::new(s.id().clone(), 1, 1).unwrap();
    e.store.hint_attempt(&charge_id, "idkey-of-a-declined-try", false).await.unwrap();
    e.store.hint_attempt(&charge_id, &id_key, true).await.expect("the paid payment's hint replaces the declined one's");
    assert!(
        matches!(
            e.store.hint_attempt(&charge_id, "idkey-of-another-declined-try", false).await,
            Err(paycycle::store::StoreError::Conflict(_))
        ),
        "a failed hint never replaces a paid one"
    );
    let r = e.tick_at(kst(2027, 2, 20, 0), &e.deps).await;
    assert_eq!(r.resolved, 1, "{r:?}");
    let after = e.get("sub_hintpaid").await;
    assert_eq!(
        (after.subscription.state, after.subscription.current_period.unwrap().index),
        (SubscriptionState::Active, 1)
    );
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "the approved charge is recorded");
}

#[tokio::test]
async fn a_payple_lookup_uses_the_kst_date_the_charge_was_sent_not_the_ticks() {
    let e = env().await;
    // Production: the PG's clock is the wall clock; the tick's billing `now` is two KST days back.
    let deps = Deps { settings: Settings { allow_time_travel: false, ..e.deps.settings.clone() }, ..e.deps.clone() };
    let anchor = plus(wall_now(), SignedDuration::from_hours(-33 * 24));
    let s = e.subscription("sub_sentdate", PgMode::Payple, anchor, 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    assert_ne!(paycycle::calendar::kst_yyyymmdd(due), paycycle::calendar::kst_yyyymmdd(wall_now()));
    e.driver().inner.http.delete(e.driver().url("/__admin/clock")).send().await.unwrap();
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 1_500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    assert_eq!(tick(&deps, due, None).await.unknown, 1);
    let attempt = &e.store.attempts_of(s.id()).await.unwrap()[0];
    assert_eq!(attempt.pg.request_date_kst, paycycle::calendar::kst_yyyymmdd(wall_now()), "dated when it was sent");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = tick(&deps, plus(due, SignedDuration::from_mins(6)), None).await;
    assert_eq!(r.resolved, 1, "found under the send date: {r:?}");
    assert_eq!(e.pg_charges("sub_sentdate").await.len(), 1);
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1);
}

#[test]
fn the_deadline_margin_covers_the_worst_renewal_path_at_the_pg_timeouts() {
    for secs in [1, 5, 20, 60] {
        let timeout = Duration::from_secs(secs);
        let fitted = Settings::default().fitted_to(timeout);
        let worst = SignedDuration::from_secs(i64::from(renew::WORST_PATH_PG_CALLS) * secs as i64)
            .checked_add(renew::STORE_BUDGET)
            .unwrap();
        assert_eq!(renew::worst_renewal(timeout), worst);
        assert!(fitted.deadline_margin >= worst, "{secs} s: margin {:?}", fitted.deadline_margin);
        assert!(fitted.lease > worst, "{secs} s: the lease outlives the renewal");
    }
    // The defaults, as deployed (PG_TIMEOUT_MS 20000), are raised but leave the 900 s tick room.
    let deployed = Settings::default().fitted_to(Duration::from_millis(20_000));
    assert!(deployed.deadline_margin >= SignedDuration::from_secs(130), "{:?}", deployed.deadline_margin);
    assert!(deployed.deadline_margin < SignedDuration::from_secs(600), "{:?}", deployed.deadline_margin);
}

impl Env {
    /// Counts every request the sandbox answers from now on (a no-op scenario behind the others).
    async fn count_pg_requests(&self) {
        self.admin("/__admin/scenarios", json!({"operation": "any", "count": 1_000, "fault": {"kind": "approve"}}))
            .await;
    }

    /// Requests the sandbox answered since [`Env::count_pg_requests`] (besides other scenarios').
    async fn pg_requests(&self) -> u64 {
        let d = self.driver();
        let v: Value = d.http.get(d.url("/__admin/scenarios")).send().await.unwrap().json().await.unwrap();
        let left = v.as_array().unwrap().iter().find(|s| s["operation"] == "any").map(|s| s["count"].as_u64().unwrap());
        1_000 - left.unwrap_or(0)
    }
}

/// The PG calls one renewal makes on the longest paths, counted at the sandbox: each must fit in
/// [`renew::WORST_PATH_PG_CALLS`], which sizes the tick's deadline margin and the lease.
#[tokio::test]
async fn the_longest_renewal_paths_make_no_more_pg_calls_than_the_deadline_margin_covers() {
    let e = env().await;
    // An unknown charge Payple never got, re-paid, declined, the decline confirmed by lookup:
    // auth + lookup, auth + re-pay, auth + lookup.
    let s = e.subscription("sub_worst1", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/scenarios", json!({"operation": "charge", "count": 1, "fault": {"kind": "server_error"}})).await;
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    e.count_pg_requests().await;
    let r = e.tick_at(plus(due, SignedDuration::from_mins(6)), &e.deps).await;
    let declined_path = e.pg_requests().await + 1; // the declined re-pay took its own scenario
    assert_eq!(r.declined, 1, "{r:?}");
    e.driver().http.delete(e.driver().url("/__admin/scenarios")).send().await.unwrap();

    // An unknown charge re-sent the next day after a lagging lookup, answered SPCD0014, and found
    // under both dates' lookups.
    let s = e.subscription("sub_worst2", PgMode::Payple, kst(2027, 3, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 1_500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 1, "fault": {"kind": "lookup_lags"}})).await;
    e.count_pg_requests().await;
    let r = e.tick_at(plus(due, SignedDuration::from_hours(23)), &e.deps).await;
    let duplicate_path = e.pg_requests().await + 1; // the lagging lookup took its own scenario
    assert_eq!(r.resolved, 1, "{r:?}");

    let budget = u64::try_from(renew::WORST_PATH_PG_CALLS).unwrap();
    assert!(
        declined_path <= budget && duplicate_path <= budget,
        "PG calls: declined re-pay {declined_path}, duplicate re-pay {duplicate_path}; the margin covers {budget}"
    );
}

/// A tick that waited for a worker slot past its deadline starts nothing more: the deadline is
/// checked again once the slot is free.
#[tokio::test]
async fn a_tick_starts_no_renewal_after_its_deadline_even_when_it_waited_for_a_worker() {
    let e = env().await;
    let slow = renew_deps(&e.stack, &e.store, 5_000).await;
    let one = Deps { settings: Settings { concurrency: 1, ..slow.settings.clone() }, ..slow };
    let a = e.subscription("sub_dl1", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let b = e.subscription("sub_dl2", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = a.subscription.next_attempt_at.unwrap().max(b.subscription.next_attempt_at.unwrap());
    hold_next_charge(&e, 2_000).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let deadline = plus(wall_now(), SignedDuration::from_millis(800));
    let r = tick(&one, due, Some(deadline)).await;
    let charged = e.pg_charges("sub_dl1").await.len() + e.pg_charges("sub_dl2").await.len();
    assert_eq!((r.charged, r.deferred, charged), (1, 1, 1), "{r:?}");
}

/// A renewal that would start while a `cancel_subscription` refund is at the PG (and end
/// unknown): the refund answers 201 only if the subscription is canceled and nothing was charged
/// after it. Found by review: the cancel ran after the refund and was silently skipped.
#[tokio::test]
async fn a_refund_with_cancel_subscription_answers_201_only_with_the_subscription_canceled_and_nothing_charged_after() {
    let e = env().await;
    let partner = e.partner().await;
    let anchor = plus(wall_now(), SignedDuration::from_hours(-40 * 24));
    let s = e.subscription("sub_refunk", PgMode::Payple, anchor, 9_900).await;
    let first = e.first_payment(&s).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/scenarios", json!({"operation": "refund", "count": 1, "fault": {"kind": "delay", "ms": 4_000}}))
        .await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    let refunding = tokio::spawn({
        let path = format!("/payments/{}/refunds", first.payment_id);
        async move {
            partner
                .post(&path, &json!({"reason": "customer left", "cancel_subscription": true}), Some("refund-unk"))
                .await
        }
    });
    // The refund has reserved its amount and is at the PG: a tick comes.
    for _ in 0..100 {
        let p = e.store.get_payment(&first.payment_id).await.unwrap().unwrap();
        if !p.amounts.refund_pending.is_zero() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let r = tick(&e.deps, due, None).await;
    let (status, v) = refunding.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // a held charge answer finishes
    e.tick_at(plus(due, SignedDuration::from_mins(10)), &e.deps).await;
    let sub = e.get("sub_refunk").await;
    let renewals = e.pg_charges("sub_refunk").await.into_iter().filter(|c| !c.contains("-p0-")).count();
    assert_eq!(
        (status, sub.subscription.state, renewals),
        (201, SubscriptionState::Canceled, 0),
        "refund answered {status} {v}; subscription left {:?} with next_attempt_at {:?}; tick {r:?}",
        sub.subscription.state,
        sub.subscription.next_attempt_at
    );
}

/// Review: an unknown Payple charge whose lookup by its send date lagged (not found) was re-dated,
/// re-sent, answered `SPCD0014` (the OID exists) and then looked up only under the new date: never
/// found, `needs_review` although Payple approved it. Every date it was sent on is looked up, and a
/// duplicate OID on a re-send means the first send exists.
#[tokio::test]
async fn a_payple_charge_resent_on_another_day_is_found_under_every_date_it_was_sent() {
    let e = env().await;
    let s = e.subscription("sub_redate", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 1_500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    tokio::time::sleep(Duration::from_millis(700)).await; // let the held answer finish
    // The next KST day, within the review window: the lookup by the send date lags (not found yet).
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 1, "fault": {"kind": "lookup_lags"}})).await;
    let next_day = plus(due, SignedDuration::from_hours(23));
    assert_ne!(paycycle::calendar::kst_yyyymmdd(next_day), paycycle::calendar::kst_yyyymmdd(due));
    let r2 = e.tick_at(next_day, &e.deps).await;
    let r3 = e.tick_at(plus(next_day, SignedDuration::from_mins(10)), &e.deps).await;
    let r4 = e.tick_at(plus(due, SignedDuration::from_hours(25)), &e.deps).await;
    let after = e.get("sub_redate").await;
    let payments = e.store.payments_of_subscription(s.id()).await.unwrap().len();
    assert_eq!(e.pg_charges("sub_redate").await.len(), 1, "Payple charged once");
    assert_eq!(
        (after.subscription.state, payments),
        (SubscriptionState::Active, 1),
        "the approved charge is recorded: ticks {r2:?} {r3:?} {r4:?}; attempts {:?}",
        e.store.attempts_of(s.id()).await.unwrap()
    );
}

/// Review: a worker whose lease ran out between its claim and its attempt write (a stalled
/// Lambda) charged a subscription the partner had canceled meanwhile. The claim and the attempt
/// are now one transaction, and a lifecycle change waits while the attempt is pending. Review of
/// that (issue 25): a worker stalled past its lease (a frozen Lambda, or one waiting for its PG's
/// budget) must not send then: the next worker looks the charge up, re-sends it and is declined,
/// and Payple would approve the stalled worker's send of the same order after that decline — a
/// charge nobody is collecting any more, and a second one for the period with the dunning retry.
/// Nothing is sent after the claim's send-by time.
#[tokio::test]
async fn a_worker_stalled_past_its_lease_sends_nothing_after_the_next_worker_settled_the_charge() {
    let e = env().await;
    let partner = e.partner().await;
    let s = e.subscription("sub_stall", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    let stalling = Deps {
        crash_at: Some(CrashPoint::StallAfterClaim { ms: 8_000 }),
        settings: Settings { lease: SignedDuration::from_secs(2), ..e.deps.settings.clone() },
        ..e.deps.clone()
    };
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let ticking = tokio::spawn(async move { tick(&stalling, due, None).await });
    // The stalled worker's attempt is pending: a cancel waits for it.
    wait_for_attempt(&e, &s).await;
    let (status, v) = partner.post("/subscriptions/sub_stall/cancel", &json!({}), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("renewal_in_progress")), "{v}");
    tokio::time::sleep(Duration::from_millis(2_200)).await; // the stalled worker's lease is over
    // The next worker finds the attempt, looks it up (not there), re-sends it: declined.
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let next = e.tick_at(due, &e.deps).await;
    assert_eq!(next.declined, 1, "{next:?}");
    let stalled = ticking.await.unwrap();
    assert_eq!(
        e.pg_charges("sub_stall").await,
        Vec::<String>::new(),
        "the stalled worker sent nothing after its send-by time: {stalled:?}"
    );
    assert_eq!(e.get("sub_stall").await.subscription.state, SubscriptionState::PastDue, "dunning goes on");
}

/// Review: a worker stalled past its lease while resolving an unknown charge re-paid it after
/// another worker had re-paid it (declined) and a cancel had committed — and the approval it got
/// could not be recorded. A re-pay goes out only while the claim is held and the attempt is still
/// pending or unknown.
#[tokio::test]
async fn a_worker_whose_lease_expired_while_resolving_an_unknown_charge_charges_nothing_after_another_settled_it() {
    let e = env().await;
    let partner = e.partner().await;
    let s = e.subscription("sub_stallres", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    // The first send never reaches Payple's books: the charge's outcome is unknown.
    e.admin("/__admin/scenarios", json!({"operation": "charge", "count": 1, "fault": {"kind": "server_error"}})).await;
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    let recheck = plus(due, SignedDuration::from_mins(6));
    let stalling = Deps {
        crash_at: Some(CrashPoint::StallAfterClaim { ms: 4_000 }),
        settings: Settings { lease: SignedDuration::from_secs(1), ..e.deps.settings.clone() },
        ..e.deps.clone()
    };
    e.admin("/__admin/clock", json!({"now": recheck.to_string()})).await;
    let ticking = tokio::spawn(async move { tick(&stalling, recheck, None).await });
    tokio::time::sleep(Duration::from_millis(2_000)).await; // the stalled worker's lease is over
    // Another worker looks it up (not found), re-pays it and is declined; then the partner cancels.
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let r = e.tick_at(recheck, &e.deps).await;
    assert_eq!(r.declined, 1, "{r:?}");
    let (status, v) = partner.post("/subscriptions/sub_stallres/cancel", &json!({}), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
    let r = ticking.await.unwrap();
    let after = e.get("sub_stallres").await;
    assert_eq!(
        (e.pg_charges("sub_stallres").await, after.subscription.state),
        (Vec::<String>::new(), SubscriptionState::Canceled),
        "the stalled worker charged nothing: tick {r:?}; attempts {:?}",
        e.store.attempts_of(s.id()).await.unwrap()
    );
}

/// Review: with the attempt still unknown (another worker's lookup got no answer and it committed
/// "look again later"), a worker stalled past its lease re-paid it on a claim it no longer held.
#[tokio::test]
async fn a_worker_whose_lease_expired_while_resolving_an_unknown_charge_sends_nothing() {
    let e = env().await;
    let s = e.subscription("sub_stallunk", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin("/__admin/scenarios", json!({"operation": "charge", "count": 1, "fault": {"kind": "server_error"}})).await;
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    let recheck = plus(due, SignedDuration::from_mins(6));
    let stalling = Deps {
        crash_at: Some(CrashPoint::StallAfterClaim { ms: 4_000 }),
        settings: Settings { lease: SignedDuration::from_secs(1), ..e.deps.settings.clone() },
        ..e.deps.clone()
    };
    e.admin("/__admin/clock", json!({"now": recheck.to_string()})).await;
    let ticking = tokio::spawn(async move { tick(&stalling, recheck, None).await });
    tokio::time::sleep(Duration::from_millis(2_000)).await; // the stalled worker's lease is over
    // Another worker claims it; its lookup gets no answer, so the charge stays unknown.
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 1, "fault": {"kind": "server_error"}})).await;
    let r = e.tick_at(recheck, &e.deps).await;
    assert_eq!(r.unknown, 1, "{r:?}");
    let r = ticking.await.unwrap();
    assert_eq!(
        e.pg_charges("sub_stallunk").await,
        Vec::<String>::new(),
        "a worker without its claim sends nothing: tick {r:?}; attempts {:?}",
        e.store.attempts_of(s.id()).await.unwrap()
    );
}

/// `SPCD0001` is reported on Payple's developer site as "the billing key does not exist" (PG-FACTS;
/// not in PAYPLECORP/manual_card or sample_php): a hard decline — dunning stops at once, nothing
/// retried on a key that is gone.
#[tokio::test]
async fn a_payple_billing_key_that_no_longer_exists_is_a_hard_decline_that_stops_dunning() {
    let e = env().await;
    let s = e.subscription("sub_gone", PgMode::Payple, kst(2027, 1, 31, 10), 9_900).await;
    e.deps.pgs.payple.delete_billing_key(&e.key_of(&s).await, None).await.unwrap();
    let r = e.tick_at(s.subscription.next_attempt_at.unwrap(), &e.deps).await;
    assert_eq!(r.declined, 1, "{r:?}");
    let gone = e.get("sub_gone").await;
    assert_eq!((gone.subscription.state, gone.subscription.next_attempt_at), (SubscriptionState::Unpaid, None));
    let attempts = e.store.attempts_of(s.id()).await.unwrap();
    assert_eq!(attempts.len(), 1, "no retry");
    match &attempts[0].status {
        paycycle::domain::attempt::AttemptStatus::Declined { code, hard, .. } => {
            assert_eq!((code.as_str(), *hard), ("SPCD0001", true));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.pg_charges("sub_gone").await.is_empty());
}

/// What the customer's statement needs survives a renewal: the card company, the masked card
/// number (never more than its first and last four digits, whatever Payple shows: its lookup's
/// sample shows eight leading digits) and the trade number from the re-pay's answer, or from the
/// result lookup that resolves a lost answer; and the receipt URL (`PCD_PAY_CARDNAME`,
/// `PCD_PAY_CARDNUM`, `PCD_PAY_CARDTRADENUM`, `PCD_PAY_CARDRECEIPT`, manual_card README).
#[tokio::test]
async fn a_payple_renewal_payment_keeps_the_masked_card_and_the_receipt() {
    let e = env().await;
    let partner = e.partner().await;
    let s = e.subscription("sub_card", PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
    let lost = e.subscription("sub_cardlost", PgMode::Payple, kst(2027, 1, 16, 10), 9_900).await;
    e.tick_at(s.subscription.next_attempt_at.unwrap(), &e.deps).await;
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"billing_key": e.key_of(&lost).await, "fault": {"kind": "timeout_after_charge"}, "count": 1}),
    )
    .await;
    let due = lost.subscription.next_attempt_at.unwrap();
    assert_eq!(e.tick_at(due, &e.deps).await.unknown, 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(e.tick_at(due.checked_add(SignedDuration::from_mins(6)).unwrap(), &e.deps).await.resolved, 1);
    for id in [s.id(), lost.id()] {
        let payments = e.store.payments_of_subscription(id).await.unwrap();
        assert_eq!(payments.len(), 1, "{id}");
        let (status, p) = partner.get(&format!("/payments/{}", payments[0].payment_id)).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["card"]["name"], "NH", "{p}");
        let number = p["card"]["number_masked"].as_str().unwrap();
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        assert!(number.contains('*') && digits.len() <= 8, "{id}: {number}");
        assert!(number.ends_with("2031"), "{number}");
        assert!(p["card"]["trade_number"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["receipt_url"].as_str().is_some_and(|u| u.starts_with("https://")), "{p}");
    }
}

/// The charges a person can see in `GET /reviews` (subscription ids).
async fn reviewed_subscriptions(partner: &Partner) -> Vec<String> {
    let (status, v) = partner.get("/reviews").await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().unwrap().iter().filter_map(|r| r["subscription_id"].as_str().map(String::from)).collect()
}

/// A charge in review is recorded paid only on the PG's word for that very payment: a payment the
/// PG does not know, or another order's payment, is refused; the right one is recorded once,
/// with who resolved it, and the subscription renews — nothing is charged again.
#[tokio::test]
async fn a_charge_in_review_is_recorded_paid_only_when_the_pg_confirms_that_payment_is_its() {
    let e = env().await;
    let bus = e.stack.provisioned.buses.values().next().unwrap().clone();
    let tap = paycycle_e2e::EventTap::attach(
        &e.stack.moto.sdk_config().await,
        &bus,
        &format!("{}-rv", e.stack.provisioned.table),
    )
    .await;
    let partner = e.partner().await;
    let (s, id_key) = e.in_review("sub_rvpaid").await;
    let listed = partner.get("/reviews").await.1;
    let review = listed["data"].as_array().unwrap().iter().find(|r| r["subscription_id"] == "sub_rvpaid").cloned();
    let review = review.expect("listed for a person");
    assert_eq!(review["charge"]["pg_reference"]["order_id"], "sub_rvpaid-p1-a1", "{review}");
    assert_eq!(review["charge"]["amount"], 9_900);

    let path = "/subscriptions/sub_rvpaid/resolve";
    let paid = |id: &str| json!({"verdict": "paid", "pg_payment_id": id, "reason": "seen in StepPay's admin"});
    let (status, v) = partner.post(path, &paid("no-such-idkey"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("pg_does_not_confirm")), "{v}");
    // A real, paid StepPay payment — the customer's first, another order's — is not this charge.
    let first_payment = e.key_of(&s).await;
    let (status, v) = partner.post(path, &paid(&first_payment), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("pg_payment_mismatch")), "{v}");
    assert_eq!(e.get("sub_rvpaid").await.subscription.state, SubscriptionState::NeedsReview, "nothing recorded");

    let (status, v) = partner.post(path, &paid(&id_key), Some("resolve-1")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["state"].as_str(), v["resolution"]["by"].as_str()), (Some("active"), Some("e2e")), "{v}");
    assert_eq!(v["resolution"]["pg"], "confirmed");
    let (again, replay) = partner.post(path, &paid(&id_key), Some("resolve-1")).await;
    assert_eq!((again, &replay), (200, &v), "the same key answers the same");
    let payments = e.store.payments_of_subscription(s.id()).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!((payments[0].pg_payment_id.as_str(), payments[0].amounts.paid.won()), (id_key.as_str(), 9_900));
    let attempt = &e.store.attempts_of(s.id()).await.unwrap()[0];
    let resolution = attempt.resolution.as_ref().expect("the attempt keeps the resolution");
    assert_eq!((resolution.by.as_str(), resolution.reason.as_str()), ("e2e", "seen in StepPay's admin"));
    assert_eq!(e.pg_charges("sub_rvpaid").await.len(), 1, "never charged again");
    assert!(!reviewed_subscriptions(&partner).await.contains(&"sub_rvpaid".to_string()), "no longer listed");
    let (status, v) = partner.post(path, &paid(&id_key), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("not_in_review")), "{v}");
    let detail = partner.get("/subscriptions/sub_rvpaid").await.1;
    assert_eq!(detail["attempts"][0]["resolution"]["verdict"], "paid", "{detail}");

    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(tap.drain().await);
        if events.iter().any(|ev| ev["detail-type"] == "subscription.review_resolved") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resolved: Vec<&Value> =
        events.iter().filter(|ev| ev["detail-type"] == "subscription.review_resolved").collect();
    assert_eq!(resolved.len(), 1, "{events:?}");
    assert_eq!(resolved[0]["detail"]["data"]["payment_id"], json!(payments[0].payment_id));
    paycycle_e2e::check_events(&events).unwrap();
}

/// A charge in review is recorded not paid only when the PG's lookup does not show it paid: a
/// Payple charge the PG took is refused as `not_paid` (and recorded once as paid by its OID); one
/// the PG never took is settled not paid and, as the person asked, sent again at once under its
/// own id — one charge at the PG in all.
#[tokio::test]
async fn a_charge_in_review_is_recorded_not_paid_only_when_the_pg_does_not_show_it_paid() {
    let e = env().await;
    let partner = e.partner().await;
    let not_paid = |next: &str| json!({"verdict": "not_paid", "next": next, "reason": "not in Payple's admin"});

    // Charged at Payple, its answer lost: the lookup shows it paid.
    let (s, oid) = e.in_review_with("sub_rvtook", PgMode::Payple, "timeout_after_charge").await;
    let oid = oid.expect("Payple charged it");
    let (status, v) = partner.post("/subscriptions/sub_rvtook/resolve", &not_paid("retry"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("pg_shows_paid")), "{v}");
    let other_oid = json!({"verdict": "paid", "pg_payment_id": "sub_rvtook-p1-a9", "reason": "r"});
    let (status, v) = partner.post("/subscriptions/sub_rvtook/resolve", &other_oid, None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("pg_payment_mismatch")), "another OID: {v}");
    let paid = json!({"verdict": "paid", "pg_payment_id": oid, "reason": "approved in Payple's admin"});
    let (status, v) = partner.post("/subscriptions/sub_rvtook/resolve", &paid, None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1);

    // Never taken at Payple (a 500 before anything), its lookups failed all window long.
    let (s, taken) = e.in_review_with("sub_rvnot", PgMode::Payple, "server_error").await;
    assert_eq!(taken, None);
    let false_paid = json!({"verdict": "paid", "pg_payment_id": "sub_rvnot-p1-a1", "reason": "r"});
    let (status, v) = partner.post("/subscriptions/sub_rvnot/resolve", &false_paid, None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("pg_does_not_confirm")), "a false paid: {v}");
    let (status, v) = partner.post("/subscriptions/sub_rvnot/resolve", &not_paid("retry"), None).await;
    let got = (status, v["state"].as_str(), v["resolution"]["pg"].as_str());
    assert_eq!(got, (200, Some("past_due"), Some("confirmed")), "{v}");
    assert_eq!(v["next_charge"]["attempt"], 1, "sent again under its own id: {v}");
    let now = e.get("sub_rvnot").await.subscription.next_attempt_at.unwrap();
    let r = e.tick_at(now, &e.deps).await;
    assert_eq!(r.resolved, 1, "looked up, not there, sent again: {r:?}");
    let after = e.get("sub_rvnot").await;
    let got = (after.subscription.state, after.subscription.current_period.unwrap().index);
    assert_eq!(got, (SubscriptionState::Active, 1));
    assert_eq!(e.pg_charges("sub_rvnot").await, ["sub_rvnot-p1-a1"], "one charge at the PG");
    let payments = e.store.payments_of_subscription(s.id()).await.unwrap();
    assert_eq!(payments.len(), 1);
    let attempt = &e.store.attempts_of(s.id()).await.unwrap()[0];
    assert_eq!(attempt.status.name(), "approved");
    assert_eq!(attempt.resolution.as_ref().map(|r| r.verdict), Some(paycycle::domain::review::Verdict::NotPaid));
}

/// A person who wrongly says `not_paid` cannot make paycycle charge twice: StepPay cannot be asked
/// by our charge id, so the verdict stands on their word (`operator_only`) and the charge is sent
/// again under its own id — StepPay refuses the repeat of an order it took, the outcome is unknown
/// again, and the PG's webhook later records the one payment. A cancel instead ends it now.
#[tokio::test]
async fn a_wrong_not_paid_on_the_persons_word_never_charges_twice() {
    let e = env().await;
    let partner = e.partner().await;
    let (s, id_key) = e.in_review("sub_rvword").await;
    let body = json!({"verdict": "not_paid", "next": "retry", "reason": "not found in StepPay's admin"});
    let (status, v) = partner.post("/subscriptions/sub_rvword/resolve", &body, None).await;
    let got = (status, v["state"].as_str(), v["resolution"]["pg"].as_str());
    assert_eq!(got, (200, Some("past_due"), Some("operator_only")), "{v}");
    let now = e.get("sub_rvword").await.subscription.next_attempt_at.unwrap();
    let r = e.tick_at(now, &e.deps).await;
    assert_eq!((r.charged, r.unknown), (0, 1), "StepPay refused the repeat: {r:?}");
    assert_eq!(e.pg_charges("sub_rvword").await.len(), 1, "never charged twice");
    let charge_id = paycycle::domain::attempt::ChargeId::new(s.id().clone(), 1, 1).unwrap();
    e.store.hint_attempt(&charge_id, &id_key, true).await.unwrap();
    let r = e.tick_at(plus(now, SignedDuration::from_mins(10)), &e.deps).await;
    assert_eq!(r.resolved, 1, "{r:?}");
    let after = e.get("sub_rvword").await;
    assert_eq!(
        (after.subscription.state, after.subscription.current_period.unwrap().index),
        (SubscriptionState::Active, 1)
    );
    assert_eq!(e.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "the one payment is recorded");

    let (_, _) = e.in_review("sub_rvgone").await;
    let cancel = json!({"verdict": "not_paid", "next": "cancel", "reason": "customer asked to stop"});
    let (status, v) = partner.post("/subscriptions/sub_rvgone/resolve", &cancel, None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("canceled")), "{v}");
    let no_next = json!({"verdict": "not_paid", "reason": "r"});
    let (status, v) = partner.post("/subscriptions/sub_rvgone/resolve", &no_next, None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_resolution")), "{v}");
}

/// The day's reconciliation asks the PG about every payment and every charge not approved here,
/// with the comparison `make demo` uses: a clean day has no difference; a charge planted at the PG
/// under a declined attempt's order id, and an amount changed at the PG, are reported, written to
/// the day's report and published for the operator.
#[tokio::test]
async fn a_charge_planted_at_the_pg_is_reported_by_the_days_reconciliation() {
    let e = env().await;
    let anchor = kst(2027, 1, 15, 10);
    let paid = e.subscription("sub_rcok", PgMode::Payple, anchor, 9_900).await;
    e.subscription("sub_rcplant", PgMode::Payple, anchor, 9_900).await;
    let planted_key = e.key_of(&e.get("sub_rcplant").await).await;
    e.admin(
        "/__admin/scenarios",
        json!({"billing_key": planted_key, "count": 1, "fault": {"kind": "decline", "hard": false}}),
    )
    .await;
    let due = paid.subscription.next_attempt_at.unwrap();
    let r = e.tick_at(due, &e.deps).await;
    assert_eq!((r.charged, r.declined), (1, 1), "{r:?}");
    let day = paycycle::calendar::kst_yyyymmdd(due);
    let deps = reconcile::Deps {
        store: e.store.clone(),
        pgs: e.deps.pgs.clone(),
        publisher: EventPublisher::in_memory(),
        pace: paycycle::reconcile::Pace::per_second(1_000),
        allow_time_travel: true,
    };
    let clean = reconcile::run(&deps, &day, None).await.unwrap();
    assert!(clean.comparison.differences.is_empty(), "{:?}", clean.comparison.differences);
    assert_eq!((clean.looked.payments, clean.looked.attempts, clean.comparison.matched), (1, 1, 1), "{clean:?}");
    assert!(clean.looked.complete);

    // Tampered at the PG: the declined order was charged after all, and the paid one's amount changed.
    {
        let mut state = e.stack.sandbox.shared.state.lock().unwrap();
        let mut planted = state.charges.iter().find(|c| c.id == "sub_rcok-p1-a1").unwrap().clone();
        planted.id = "sub_rcplant-p1-a1".into();
        planted.billing_key = Some(planted_key);
        state.charges.push(planted);
        state.charges.iter_mut().find(|c| c.id == "sub_rcok-p1-a1").unwrap().amount = 9_000;
    }
    let tampered = reconcile::run(&deps, &day, None).await.unwrap();
    let kinds: Vec<String> = tampered.comparison.differences.iter().map(|d| format!("{d}")).collect();
    assert_eq!(tampered.comparison.counts(), [1, 0, 1, 0], "missing here, amount differs: {kinds:?}");
    assert!(kinds.iter().any(|k| k.contains("sub_rcplant-p1-a1")), "{kinds:?}");
    let stored = e.store.get_reconciliation(&day).await.unwrap().expect("the day's report");
    assert_eq!(stored["comparison"]["differences"].as_array().unwrap().len(), 2, "{stored}");
    let published = deps.publisher.published();
    assert_eq!(published.iter().filter(|ev| ev.detail_type == "reconciliation.completed").count(), 2);
    let metric: std::collections::HashMap<_, _> = reconcile::metric_counts(&tampered).into_iter().collect();
    assert_eq!((metric["ReconciliationDifferences"], metric["ReconciliationMissingHere"]), (2, 1));
}

/// A canceled customer's billing key is deleted at Payple (`PUSERDEL`) by the next tick — unless
/// another live subscription of the customer uses it: then it is only dropped from the canceled
/// one, and deleted when the last one ends. A StepPay key stays (StepPay publishes no deletion).
#[tokio::test]
async fn a_canceled_customers_billing_key_is_deleted_at_the_pg_unless_another_live_subscription_uses_it() {
    let e = env().await;
    let partner = e.partner().await;
    let anchor = kst(2027, 1, 15, 10);
    let key = e.billing_key(PgMode::Payple).await;
    let same_customer = |id: &str| {
        paycycle_fixtures::subscription(id).pg(PgMode::Payple).anchor(anchor).billing_key(Some(&key)).customer(
            paycycle::domain::customer::Customer {
                id: "cus_shared".into(),
                name: "홍길동".into(),
                phone: None,
                email: None,
            },
        )
    };
    // Sealed each for its own subscription (two ciphertexts of one key): renew opens both to
    // compare them.
    for id in ["sub_keya", "sub_keyb"] {
        e.store.create_subscription(&same_customer(id).sealed(&e.sealer).await).await.unwrap();
    }
    let steppay = e.subscription("sub_keysp", PgMode::SteppaySelf, anchor, 9_900).await;
    let deleted = |e: &Env| e.stack.sandbox.shared.state.lock().unwrap().payers.get(&key).map(|p| p.deleted);
    let day_later = plus(anchor, SignedDuration::from_hours(24));

    for id in ["sub_keya", "sub_keysp"] {
        let (status, v) = partner.post(&format!("/subscriptions/{id}/cancel"), &json!({}), None).await;
        assert_eq!(status, 200, "{v}");
    }
    let r = e.tick_at(day_later, &e.deps).await;
    assert_eq!(r.keys_released, 1, "{r:?}");
    let a = e.get("sub_keya").await;
    assert_eq!((a.billing_key.is_some(), a.billing_key_released_at.is_some()), (false, true));
    assert_eq!(deleted(&e), Some(false), "sub_keyb still charges it");
    assert_eq!(e.get("sub_keysp").await.billing_key, steppay.billing_key, "StepPay keeps its key");

    let (status, v) = partner.post("/subscriptions/sub_keyb/cancel", &json!({}), None).await;
    assert_eq!(status, 200, "{v}");
    let r = e.tick_at(plus(day_later, SignedDuration::from_mins(5)), &e.deps).await;
    assert_eq!(r.keys_released, 1, "{r:?}");
    assert_eq!(deleted(&e), Some(true), "deleted at Payple with the last subscription that used it");
    assert_eq!(e.get("sub_keyb").await.billing_key, None);
    let r = e.tick_at(plus(day_later, SignedDuration::from_mins(10)), &e.deps).await;
    assert_eq!(r.keys_released, 0, "released once");
}

/// The sandbox's charges of `id`'s periods: (charge id, billing key, amount).
fn charges_of(e: &Env, id: &str) -> Vec<(String, String, i64)> {
    let state = e.stack.sandbox.shared.state.lock().unwrap();
    state
        .charges
        .iter()
        .filter(|c| c.id.starts_with(&format!("{id}-")))
        .map(|c| (c.id.clone(), c.billing_key.clone().unwrap_or_default(), c.amount))
        .collect()
}

fn payple_key_deleted(e: &Env, key: &str) -> Option<bool> {
    e.stack.sandbox.shared.state.lock().unwrap().payers.get(key).map(|p| p.deleted)
}

/// The customer registers a card in a card change's Payple AUTH window and the partner forwards
/// the result to verify; verify's answer.
async fn change_card(e: &Env, partner: &Partner, id: &str, idempotency_key: &str) -> (u16, Value) {
    let body = json!({"return_url": "https://shop.example.com/card"});
    let (status, c) = partner.post(&format!("/subscriptions/{id}/payment-method"), &body, Some(idempotency_key)).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!((c["purpose"].as_str(), c["subscription_id"].as_str()), (Some("payment_method"), Some(id)), "{c}");
    assert_eq!(c["payple"]["PCD_PAY_WORK"], "AUTH", "a card change registers without paying: {c}");
    assert!(c["payple"].get("PCD_PAY_TOTAL").is_none(), "{c}");
    let mut fields = e.driver().payple_window(&c["payple"], None).await;
    fields.insert("checkout_id".into(), c["id"].clone());
    partner.post("/payments/verify", &Value::Object(fields), None).await
}

/// Issue 24 §5: a card change on a `past_due` subscription swaps the key without a charge,
/// recovers it with exactly one charge on the new card at the next tick (the attempt next in
/// line, under its own charge id), and deletes the old Payple key at Payple.
#[tokio::test]
async fn a_card_change_recovers_a_past_due_subscription_with_one_charge_on_the_new_card_and_deletes_the_old_key() {
    let e = env().await;
    let partner = e.partner().await;
    let anchor = kst(2027, 1, 15, 10);
    let s = e.subscription("sub_card", PgMode::Payple, anchor, 9_900).await;
    let old_key = e.key_of(&s).await;
    e.admin("/__admin/scenarios", json!({"billing_key": old_key, "fault": {"kind": "decline", "hard": false}})).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.tick_at(due, &e.deps).await;
    let declined = e.get("sub_card").await;
    assert_eq!(declined.subscription.state, SubscriptionState::PastDue);
    let retry_at = declined.subscription.next_attempt_at.unwrap();
    let now = plus(due, SignedDuration::from_hours(2));
    assert!(retry_at > now, "the next retry is a day away");

    let (status, v) = change_card(&e, &partner, "sub_card", "card-1").await;
    assert_eq!(status, 200, "{v}");
    assert!(charges_of(&e, "sub_card").is_empty(), "declined, and the registration charged nothing");
    let swapped = e.get("sub_card").await;
    let new_key = e.key_of(&swapped).await;
    assert_ne!(new_key, old_key);
    assert_eq!(swapped.subscription.state, SubscriptionState::PastDue);
    assert!(swapped.subscription.next_attempt_at.unwrap() <= now, "the retry is due at once");
    assert_eq!(e.store.retired_keys_of(swapped.id()).await.unwrap().len(), 1, "the old key waits for renew");

    let r = e.tick_at(now, &e.deps).await;
    assert_eq!(r.keys_released, 1, "{r:?}");
    let recovered = e.get("sub_card").await;
    assert_eq!(recovered.subscription.state, SubscriptionState::Active);
    let charges = charges_of(&e, "sub_card");
    assert_eq!(charges, [("sub_card-p1-a2".to_string(), new_key.clone(), 9_900)], "one charge, on the new card");
    assert_eq!(payple_key_deleted(&e, &old_key), Some(true), "PUSERDEL of the old key");
    assert_eq!(payple_key_deleted(&e, &new_key), Some(false));
    assert!(e.store.retired_keys_of(recovered.id()).await.unwrap().is_empty());
    // A person sees the card the subscription last paid with, never a key.
    let (status, shown) = partner.get("/subscriptions/sub_card").await;
    assert_eq!(status, 200, "{shown}");
    let card = &shown["last_paid_with"];
    assert_eq!(card["payment_id"], shown["payments"][0]["id"], "{shown}");
    assert!(card["number_masked"].as_str().is_some_and(|n| n.contains('*')), "{shown}");
    assert!(!shown.to_string().contains(&new_key) && !shown.to_string().contains(&old_key), "{shown}");

    // Nothing more: the next tick charges nothing, and a repeated verify changes nothing.
    let r = e.tick_at(plus(now, SignedDuration::from_mins(5)), &e.deps).await;
    assert_eq!((r.keys_released, charges_of(&e, "sub_card").len()), (0, 1), "{r:?}");
}

/// A card change's new card is deleted at Payple when the subscription ended before the swap;
/// and only live subscriptions of a mode where paycycle registers cards take one.
#[tokio::test]
async fn a_card_registered_for_a_subscription_that_ended_meanwhile_is_deleted_and_never_charged() {
    let e = env().await;
    let partner = e.partner().await;
    let anchor = kst(2027, 1, 15, 10);
    let s = e.subscription("sub_cardx", PgMode::Payple, anchor, 9_900).await;
    let body = json!({"return_url": "https://shop.example.com/card"});
    let (status, c) = partner.post("/subscriptions/sub_cardx/payment-method", &body, Some("cx-1")).await;
    assert_eq!(status, 201, "{c}");
    let (status, v) = partner.post("/subscriptions/sub_cardx/cancel", &json!({}), None).await;
    assert_eq!(status, 200, "{v}");
    let mut fields = e.driver().payple_window(&c["payple"], None).await;
    let new_key = fields["PCD_PAYER_ID"].as_str().unwrap().to_string();
    fields.insert("checkout_id".into(), c["id"].clone());
    let (status, v) = partner.post("/payments/verify", &Value::Object(fields), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("illegal_transition")), "{v}");
    assert_eq!(e.get("sub_cardx").await.billing_key, s.billing_key, "the canceled subscription kept nothing new");

    let r = e.tick_at(plus(anchor, SignedDuration::from_hours(1)), &e.deps).await;
    assert_eq!(r.keys_released, 2, "the canceled subscription's key and the refused new card: {r:?}");
    assert_eq!(payple_key_deleted(&e, &new_key), Some(true));
    assert_eq!(payple_key_deleted(&e, &e.key_of(&s).await), Some(true));
    assert_eq!(charges_of(&e, "sub_cardx").len(), 0);

    // Refused before any window opens: an ended subscription, a StepPay self one, another partner's.
    let (status, v) = partner.post("/subscriptions/sub_cardx/payment-method", &body, Some("cx-2")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("illegal_transition")), "{v}");
    e.subscription("sub_cardsp", PgMode::SteppaySelf, anchor, 9_900).await;
    let (status, v) = partner.post("/subscriptions/sub_cardsp/payment-method", &body, Some("cx-3")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("card_change_unsupported")), "{v}");
    let other = Partner::new(e.stack.api_url(), e.stack.create_api_key("other", "partner_b").await.unwrap());
    let (status, _) = other.post("/subscriptions/sub_cardx/payment-method", &body, Some("cx-4")).await;
    assert_eq!(status, 404);
    let (status, v) = partner.post("/subscriptions/sub_cardsp/payment-method", &json!({}), Some("cx-5")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
}

/// A billing key that does not open (here: sealed for another subscription, so its AAD fails) is
/// nobody's decline: renew writes nothing — no attempt, no dunning, no charge — gives the claim
/// back and tries again on the next tick; the same key, once it opens, charges once.
#[tokio::test]
async fn a_billing_key_that_does_not_open_is_never_a_decline_and_charges_nothing() {
    let e = env().await;
    let anchor = kst(2027, 1, 15, 10);
    let a = e.subscription("sub_keyok", PgMode::Payple, anchor, 9_900).await;
    let mut b = paycycle_fixtures::subscription("sub_keybad").pg(PgMode::Payple).anchor(anchor).amount(9_900).build();
    b.billing_key = a.billing_key.clone(); // sealed for sub_keyok: it does not open on sub_keybad
    e.store.create_subscription(&b).await.unwrap();
    let due = b.subscription.next_attempt_at.unwrap();

    let r = e.tick_at(due, &e.deps).await;
    assert_eq!((r.charged, r.declined, r.unknown, r.errors), (1, 0, 0, 1), "{r:?}");
    let after = e.get("sub_keybad").await;
    assert_eq!(after.subscription, b.subscription, "no dunning, no unknown outcome");
    assert_eq!(after.lease_until, 0, "the claim was given back");
    assert!(e.store.attempts_of(after.id()).await.unwrap().is_empty(), "no attempt written");
    assert!(charges_of(&e, "sub_keybad").is_empty());

    // Still due: the next tick looks again (and a person was alarmed). Once the key opens, one charge.
    let fixed = SubscriptionRecord {
        billing_key: Some(e.sealer.seal(after.id(), &e.key_of(&a).await).await.unwrap()),
        ..after.next(after.subscription.clone())
    };
    let mut tx = e.store.tx();
    tx.put_subscription_next(&fixed, None);
    e.store.commit(tx).await.unwrap();
    let r = e.tick_at(plus(due, SignedDuration::from_mins(5)), &e.deps).await;
    assert_eq!((r.charged, r.declined), (1, 0), "{r:?}");
    assert_eq!(charges_of(&e, "sub_keybad").len(), 1);
}

/// A FIFO shard queue on moto for the fan-out, and `e.deps` dispatching to it.
async fn fanned_out(e: &Env) -> (Deps, aws_sdk_sqs::Client, String) {
    let sdk = paycycle_testkit::moto::sdk_config_for(e.stack.moto.endpoint()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("{}-renew-shards.fifo", e.stack.provisioned.table);
    let created = sqs
        .create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let url = created.queue_url().unwrap().to_string();
    let queue = paycycle::store::shard_queue::ShardQueue::new(&sdk, &url);
    (Deps { shard_queue: Some(queue), ..e.deps.clone() }, sqs, url)
}

/// Receives what the shard queue holds now, as the Lambda SQS event (messages stay in flight).
async fn shard_batch(sqs: &aws_sdk_sqs::Client, url: &str) -> (Value, Vec<String>) {
    let got = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
    let messages = got.messages();
    let records: Vec<Value> = messages
        .iter()
        .map(|m| json!({"messageId": m.message_id(), "body": m.body(), "eventSource": "aws:sqs"}))
        .collect();
    let handles = messages.iter().filter_map(|m| m.receipt_handle().map(str::to_string)).collect();
    (json!({"Records": records}), handles)
}

/// Issue 25 §1: the scheduled tick only dispatches, one message per shard name (every name a
/// subscription may have been written under; a tick dispatched twice queues them once); workers
/// drain the shards; a worker out of time before its first renewal hands nothing on but fails the
/// message (SQS delivers it again); a batch handled twice charges nothing twice: every due
/// subscription is charged exactly once.
#[tokio::test]
async fn a_fanned_out_tick_charges_every_due_subscription_once_across_workers_and_redeliveries() {
    let e = env().await;
    let (deps, sqs, url) = fanned_out(&e).await;
    let anchor = kst(2027, 1, 15, 10);
    let ids: Vec<String> = (0..12).map(|i| format!("sub_fan{i:02}")).collect();
    let mut due = anchor;
    for id in &ids {
        let r = e.subscription(id, PgMode::Payple, anchor, 9_900).await;
        due = due.max(r.subscription.next_attempt_at.unwrap());
    }
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    let shards = u64::from(paycycle::store::subscriptions::MAX_DUE_SHARDS);
    for _ in 0..2 {
        let r = renew::tick_as(&deps, "evt-fan-1", due, None).await;
        assert_eq!((r.dispatched, r.charged, r.due), (shards, 0, 0), "the tick only dispatches: {r:?}");
    }

    // A worker whose deadline has passed starts nothing: its messages with due work fail (they
    // come back), the empty shards are done.
    let (batch, handles) = shard_batch(&sqs, &url).await;
    let past = plus(wall_now(), SignedDuration::from_secs(-1));
    let answer = renew::fanout::worker(&deps, &batch, Some(past)).await;
    let failed: Vec<&str> =
        answer["batchItemFailures"].as_array().unwrap().iter().filter_map(|f| f["itemIdentifier"].as_str()).collect();
    for (record, handle) in batch["Records"].as_array().unwrap().iter().zip(&handles) {
        let back = failed.contains(&record["messageId"].as_str().unwrap());
        let call = sqs.change_message_visibility().queue_url(&url).receipt_handle(handle).visibility_timeout(0);
        if back {
            call.send().await.unwrap();
        } else {
            sqs.delete_message().queue_url(&url).receipt_handle(handle).send().await.unwrap();
        }
    }
    // The rest, by workers with time; one batch handled twice (a redelivery).
    let (mut received, mut replayed) = (0, false);
    loop {
        let (batch, handles) = shard_batch(&sqs, &url).await;
        if handles.is_empty() {
            break;
        }
        received += handles.len();
        let answer = renew::fanout::worker(&deps, &batch, None).await;
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        if !replayed && !failed.is_empty() {
            renew::fanout::worker(&deps, &batch, None).await;
            replayed = true;
        }
        let entries = handles.iter().enumerate().map(|(i, h)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
                .unwrap()
        });
        sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries.collect())).send().await.unwrap();
    }
    let done_first = handles.len() - failed.len();
    assert_eq!(received, shards as usize - done_first, "one message per shard: the second dispatch deduplicated");
    for id in &ids {
        assert_eq!(e.pg_charges(id).await.len(), 1, "{id} charged once");
        assert_eq!(e.get(id).await.subscription.current_period.unwrap().index, 1, "{id}");
    }

    // Work that is not a shard's (a shard out of range, a cursor of another shard) is walked by
    // nobody: reported failed, so SQS sends it to the dead-letter queue after its retries.
    let forged =
        |body: Value| json!({"Records": [{"messageId": "m1", "body": body.to_string(), "eventSource": "aws:sqs"}]});
    let other_shard = paycycle::api::encode_cursor(
        &[
            ("pk".to_string(), aws_sdk_dynamodb::types::AttributeValue::S("SUB#sub_fan00".into())),
            ("sk".to_string(), aws_sdk_dynamodb::types::AttributeValue::S("SUB".into())),
            ("due_shard".to_string(), aws_sdk_dynamodb::types::AttributeValue::S("due#01".into())),
            ("next_attempt_at".to_string(), aws_sdk_dynamodb::types::AttributeValue::N("1".into())),
        ]
        .into_iter()
        .collect(),
    );
    for body in [
        json!({"tick": "x", "shard": "due#999", "now": due.to_string()}),
        json!({"tick": "x", "shard": "due#00", "now": due.to_string(), "cursor": other_shard}),
        json!({"nothing": true}),
    ] {
        let answer = renew::fanout::worker(&deps, &forged(body.clone()), None).await;
        assert_eq!(answer["batchItemFailures"], json!([{"itemIdentifier": "m1"}]), "{body}");
    }
}

/// A worker that runs out of time after real progress hands the rest of its shard to the next
/// worker with the page it stopped at (a real cursor, one subscription per page here), and the
/// next worker charges the rest: each subscription of the shard charged once.
#[tokio::test]
async fn a_worker_out_of_time_hands_the_rest_of_its_shard_on_and_nothing_is_charged_twice() {
    let e = env().await;
    let (deps, sqs, url) = fanned_out(&e).await;
    let anchor = kst(2027, 1, 15, 10);
    // Three subscriptions of one shard.
    let shard = paycycle::store::subscriptions::due_shard(&SubscriptionId::parse("sub_hop0").unwrap());
    let ids: Vec<String> = (0..400)
        .map(|i| format!("sub_hop{i}"))
        .filter(|id| paycycle::store::subscriptions::due_shard(&SubscriptionId::parse(id).unwrap()) == shard)
        .take(3)
        .collect();
    assert_eq!(ids.len(), 3);
    let mut due = anchor;
    for id in &ids {
        let r = e.subscription(id, PgMode::Payple, anchor, 9_900).await;
        due = due.max(r.subscription.next_attempt_at.unwrap());
    }
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    // One renewal at a time, one per page, each stalled past the worker's deadline.
    let settings = Settings { concurrency: 1, page_size: 1, ..deps.settings.clone() };
    let slow = Deps { settings, crash_at: Some(CrashPoint::StallAfterClaim { ms: 1_500 }), ..deps.clone() };
    let work =
        paycycle::store::shard_queue::ShardWork { tick: "evt-hop".into(), shard, now: due, cursor: None, hop: 0 };
    let mut report = renew::Report::default();
    let deadline = plus(wall_now(), SignedDuration::from_millis(700));
    renew::fanout::walk_shard(&slow, &work, Some(deadline), &mut report).await.unwrap();
    assert_eq!((report.charged, report.dispatched), (1, 1), "{report:?}");

    let (batch, handles) = shard_batch(&sqs, &url).await;
    assert_eq!(handles.len(), 1);
    let next: paycycle::store::shard_queue::ShardWork =
        serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!((next.hop, next.cursor.is_some()), (1, true), "handed on from the page it stopped at");
    let answer = renew::fanout::worker(&deps, &batch, None).await;
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    for id in &ids {
        assert_eq!(e.pg_charges(id).await.len(), 1, "{id} charged once");
    }
}

/// Issue 25 §3: on a renewal's critical path, two DynamoDB round trips — the claim with its
/// attempt (one transaction), then the outcome (one transaction). The subscriptions come whole
/// with their page (one BatchGetItem per page, no read per renewal), and the events are published
/// a page at a time off the path (PutEvents and the outbox's deletes in batches).
#[tokio::test]
async fn a_charged_renewal_makes_two_store_round_trips_and_no_read_of_its_own() {
    let e = env().await;
    let n = 6;
    // Six subscriptions in one shard: one page.
    let shard_of = |i: u32| due_shard(&SubscriptionId::parse(&format!("sub_trips{i}")).unwrap());
    let ids: Vec<String> =
        (0..500).filter(|&i| shard_of(i) == shard_of(0)).take(n as usize).map(|i| format!("sub_trips{i}")).collect();
    let mut due = Vec::new();
    for id in &ids {
        let s = e.subscription(id, PgMode::Payple, kst(2027, 1, 15, 10), 9_900).await;
        due.push(s.subscription.next_attempt_at.unwrap());
    }
    let now = due.into_iter().max().unwrap();
    let one_at_a_time = Deps { settings: Settings { concurrency: 1, ..e.deps.settings.clone() }, ..e.deps.clone() };
    e.admin("/__admin/clock", json!({"now": now.to_string()})).await;
    let before = e.store.counter.snapshot();
    let r = tick(&one_at_a_time, now, None).await;
    let used = e.store.counter.snapshot().since(&before);
    assert_eq!(r.charged, n, "{r:?}");
    let shards = paycycle::store::subscriptions::due_shards().len() as u64;
    assert_eq!(used.requests_of("BatchGetItem"), 1, "one page, read whole: {used:?}");
    assert_eq!(used.requests_of("GetItem"), 0, "no read per renewal: {used:?}");
    assert_eq!(used.requests_of("UpdateItem"), 0, "no claim on its own: {used:?}");
    assert_eq!(used.requests_of("TransactWriteItems"), 2 * n, "claim with attempt, then outcome: {used:?}");
    // The walk's queries: one per shard, none per renewal (the outbox drain and the key sweep's
    // few partitions query too).
    assert!(used.requests_of("Query") <= shards + 8, "{used:?}");
    // The 2n events: deleted from the outbox in batches, not one request per renewal.
    let deletes = used.requests_of("BatchWriteItem") + used.requests_of("DeleteItem");
    assert!(deletes <= 2, "outbox deletes batched per page: {used:?}");
    assert_eq!(r.outbox_published, 2 * n, "{r:?}");
}

/// The sandbox's peaks since `DELETE /__admin/load`: (requests, most in flight, most started in a second).
async fn pg_load(e: &Env) -> (u64, u64, u64) {
    let v: Value =
        reqwest::get(format!("{}/__admin/load", e.stack.sandbox.base_url())).await.unwrap().json().await.unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    (n("requests"), n("max_in_flight"), n("max_per_second"))
}

async fn reset_pg_load(e: &Env) {
    let url = format!("{}/__admin/load", e.stack.sandbox.base_url());
    reqwest::Client::new().delete(url).send().await.unwrap().error_for_status().unwrap();
}

/// Three workers (each a process with its own PG clients and its share of `budget`) walk the same
/// shard at once, 8 renewals each in flight, over 18 due Payple subscriptions whose charges
/// Payple holds `hold_ms`. Every subscription is charged exactly once; answers the sandbox's
/// load: (requests, most in flight, most started within one second).
async fn three_workers_renew(e: &Env, prefix: &str, budget: &[(&'static str, &str)], hold_ms: u64) -> (u64, u64, u64) {
    let anchor = kst(2027, 1, 15, 10);
    // All in one shard: its walk has them all in flight at once.
    let shard_of = |i: u32| due_shard(&SubscriptionId::parse(&format!("{prefix}{i:03}")).unwrap());
    let ids: Vec<String> =
        (0..2_000).filter(|&i| shard_of(i) == shard_of(0)).take(18).map(|i| format!("{prefix}{i:03}")).collect();
    let mut due = anchor;
    for id in &ids {
        let r = e.subscription(id, PgMode::Payple, anchor, 9_900).await;
        due = due.max(r.subscription.next_attempt_at.unwrap());
    }
    let shard = shard_of(0);
    let hold = json!({"operation": "charge", "count": 100, "fault": {"kind": "delay", "ms": hold_ms}});
    e.admin("/__admin/scenarios", hold).await;
    e.admin("/__admin/clock", json!({"now": due.to_string()})).await;
    reset_pg_load(e).await;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..3 {
        let mut deps = renew_deps_with(&e.stack, &e.store, 20_000, budget).await;
        deps.settings.concurrency = 8;
        // The shard's message received by all three (redeliveries): the claims share it out.
        let (tick, shard) = (format!("evt-budget-{w}"), shard.clone());
        workers.spawn(async move {
            let mut report = renew::Report::default();
            let work = paycycle::store::shard_queue::ShardWork { tick, shard, now: due, cursor: None, hop: 0 };
            renew::fanout::walk_shard(&deps, &work, None, &mut report).await.unwrap();
            report
        });
    }
    let charged: u64 = workers.join_all().await.iter().map(|r| r.charged).sum();
    let load = pg_load(e).await;
    assert_eq!(charged, 18);
    for id in &ids {
        assert_eq!(e.pg_charges(id).await.len(), 1, "{id} charged once");
    }
    assert_eq!(load.0, 36, "a partner auth and a re-pay per charge, nothing more");
    load
}

/// Issue 25 §2: a Payple budget of 6 requests in flight, shared by three workers (the template's
/// total divided by the workers): Payple never sees more than 6 at once, though the workers would
/// have 24 renewals in flight.
#[tokio::test]
async fn workers_together_never_exceed_the_pgs_in_flight_budget() {
    let e = env().await;
    let budget = [("PAYCYCLE_PG_BUDGET_SHARERS", "3"), ("PAYPLE_MAX_IN_FLIGHT", "6")];
    let (_, in_flight, _) = three_workers_renew(&e, "sub_flight", &budget, 1_000).await;
    assert!(in_flight <= 6, "{in_flight} requests in flight at once");
}

/// Issue 25 §2: a Payple budget of 12 requests per second shared by three workers: no second
/// sees more than 12 start, give or take one per worker at a window's edge and a few a busy
/// machine bunches on their way to the sandbox's meter — unpaced, 34 of the 36 started within one.
#[tokio::test]
async fn workers_together_never_exceed_the_pgs_requests_per_second() {
    let e = env().await;
    let budget = [("PAYCYCLE_PG_BUDGET_SHARERS", "3"), ("PAYPLE_REQUESTS_PER_SECOND", "12")];
    let (_, _, per_second) = three_workers_renew(&e, "sub_rate", &budget, 0).await;
    assert!(per_second <= 12 + 3 + 4, "{per_second} requests started within one second");
}

/// Issue 25 §2: Payple answers `429` (Retry-After: 2 s) to the first two partner auths. Those two
/// renewals send nothing (the charge never left) and every request after them waits the two
/// seconds: the worker slows down instead of multiplying requests, and nothing is charged twice.
#[tokio::test]
async fn a_pg_answering_429_slows_renew_down_and_nothing_is_sent_twice() {
    let e = env().await;
    let anchor = kst(2027, 1, 15, 10);
    let ids: Vec<String> = (0..6).map(|i| format!("sub_busy{i}")).collect();
    let mut due = anchor;
    for id in &ids {
        let r = e.subscription(id, PgMode::Payple, anchor, 9_900).await;
        due = due.max(r.subscription.next_attempt_at.unwrap());
    }
    let budget = [("PAYPLE_MAX_IN_FLIGHT", "2")];
    let deps = renew_deps_with(&e.stack, &e.store, 20_000, &budget).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "auth", "count": 2, "fault": {"kind": "too_many_requests", "retry_after_s": 2}}),
    )
    .await;
    reset_pg_load(&e).await;
    let started = std::time::Instant::now();
    let r = e.tick_at(due, &deps).await;
    let took = started.elapsed();
    let (requests, in_flight, _) = pg_load(&e).await;
    assert_eq!((r.charged, r.errors), (4, 2), "the two refused were not sent: {r:?}");
    assert!(took >= Duration::from_secs(2), "the Retry-After was waited: {took:?}");
    assert_eq!(requests, 2 + 4 * 2, "no request was repeated: {r:?}");
    assert!(in_flight <= 2);
    // The two come back after the recheck, and are charged once.
    let r = e.tick_at(plus(due, SignedDuration::from_mins(6)), &deps).await;
    assert_eq!(r.charged, 2, "{r:?}");
    for id in &ids {
        assert_eq!(e.pg_charges(id).await.len(), 1, "{id} charged once");
    }
}

/// Waits (up to 10 s, a busy machine's tick) until a tick has claimed `s` and written its attempt.
async fn wait_for_attempt(e: &Env, s: &SubscriptionRecord) {
    for _ in 0..500 {
        if !e.store.attempts_of(s.id()).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no tick claimed {} and wrote its attempt", s.id());
}
