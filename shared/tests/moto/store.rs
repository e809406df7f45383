//! The repository against moto through the real AWS SDK (DESIGN §7): conditional writes,
//! transactions, leases, the due index, refunds, idempotency, webhooks, checkouts, API keys and
//! the outbox all the way to an SQS queue behind an EventBridge rule.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use paycycle::calendar::Interval;
use paycycle::domain::attempt::{AttemptStatus, SubscriptionId};
use paycycle::domain::customer::Customer;
use paycycle::domain::events::EventKind;
use paycycle::domain::payment::{RefundFailure, RefundStatus};
use paycycle::domain::subscription::{Plan, SubscriptionState};
use paycycle::events::EventPublisher;
use paycycle::money::Krw;
use paycycle::pg::PgMode;
use paycycle::store::checkouts::{CheckoutRecord, CheckoutStatus};
use paycycle::store::idempotency::{Claim, IdempotencyConfig};
use paycycle::store::outbox::OutboxEvent;
use paycycle::store::payments::{PaymentRecord, RefundOutcome, RefundRecord, payment_id_for};
use paycycle::store::subscriptions::{SubscriptionRecord, due_shard, due_shards};
use paycycle::store::webhooks::WebhookEvent;
use paycycle::store::{Store, StoreError, sha256_hex};
use paycycle_fixtures::Fresh;

/// A fresh store, on moto's DynamoDB or in memory: every case below runs on both (`on_both!`), so
/// the in-memory table the orchestration tests use is held to what DynamoDB does.
pub(crate) struct Env {
    pub(crate) store: Store,
    fresh: Fresh,
}

pub(crate) async fn env() -> Env {
    let fresh = Fresh::dynamodb().await;
    Env { store: fresh.store.clone(), fresh }
}

pub(crate) fn in_memory() -> Env {
    let fresh = Fresh::in_memory();
    Env { store: fresh.store.clone(), fresh }
}

impl Env {
    /// moto's side, for what only DynamoDB shows (request counts, raw items, the bus).
    pub(crate) fn aws(&self) -> Option<&paycycle_fixtures::Aws> {
        self.fresh.aws.as_ref()
    }

    /// A publisher on `bus` (moto), or in memory.
    fn publisher(&self, bus: &str) -> EventPublisher {
        match self.aws() {
            Some(aws) => EventPublisher::new(&aws.sdk, bus),
            None => EventPublisher::in_memory(),
        }
    }

    /// Every item of the table.
    async fn all_items(&self) -> Vec<paycycle::store::Item> {
        match self.store.dynamo() {
            Some(t) => t.client.scan().table_name(&t.name).send().await.unwrap().items.unwrap_or_default(),
            None => self.store.memory_items().unwrap(),
        }
    }
}

/// Each case as two tests: `<case>::dynamodb` (moto) and `<case>::in_memory`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn dynamodb() {
                super::$case(super::env().await).await
            }

            #[tokio::test]
            async fn in_memory() {
                super::$case(super::in_memory()).await
            }
        }
    )*};
}
pub(crate) use on_both;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn krw(n: i64) -> Krw {
    Krw::new(n).unwrap()
}

/// An open Payple checkout of 9,900원 for subscription `sub`, known at the PG as `reference`.
fn open_checkout(id: &str, sub: &str, reference: &str, at: Timestamp) -> CheckoutRecord {
    CheckoutRecord {
        checkout_id: id.into(),
        partner_id: "partner_a".into(),
        pg: PgMode::Payple,
        customer: Customer { id: "cus_9".into(), name: "홍길동".into(), phone: None, email: None },
        plan: Plan { name: "Pro".into(), amount: krw(9_900), interval: Interval::monthly() },
        status: CheckoutStatus::Open,
        pg_reference: Some(reference.into()),
        subscription_id: SubscriptionId::parse(sub).unwrap(),
        created_at: at,
        failure: None,
        version: 1,
        work: Some("PAY".into()),
        return_url: None,
        verifying_until: 0,
        first_charge_at: None,
        last_sent_at: None,
        sweep_after: None,
        payment_id: None,
        payer_no: None,
        purpose: Default::default(),
    }
}

fn record(id: &str, anchor: Timestamp) -> SubscriptionRecord {
    let customer =
        Customer { id: "cus_1".into(), name: "홍길동".into(), phone: Some("01012345678".into()), email: None };
    let s = paycycle_fixtures::subscription(id).plan_name("Pro").partner("partner_a").customer(customer);
    s.billing_key(Some("payer-id-1")).anchor(anchor).build()
}

async fn subscriptions_round_trip_and_are_created_once(e: Env) {
    let r = record("sub_rt1", t("2027-01-31T01:00:00Z"));
    e.store.create_subscription(&r).await.unwrap();
    assert_eq!(e.store.get_subscription(r.id()).await.unwrap().unwrap(), r);
    assert!(matches!(e.store.create_subscription(&r).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(e.store.get_subscription(&SubscriptionId::parse("sub_none").unwrap()).await.unwrap(), None);
    let page = e.store.subscriptions_of_customer("partner_a", "cus_1", 10, None).await.unwrap();
    assert_eq!(page.items, [r]);
    let other_partner = e.store.subscriptions_of_customer("partner_b", "cus_1", 10, None).await.unwrap();
    assert!(other_partner.items.is_empty(), "a customer id is scoped to its partner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_claimers_never_both_win() {
    let e = env().await;
    let store = Arc::new(e.store.clone());
    let anchor = t("2027-01-31T01:00:00Z");
    let now = t("2027-03-01T00:00:00Z");
    for i in 0..200 {
        let r = record(&format!("sub_claim{i}"), anchor);
        store.create_subscription(&r).await.unwrap();
        let (a, b) = (store.clone(), store.clone());
        let (ra, rb) = (r.clone(), r.clone());
        let (x, y) = tokio::join!(
            tokio::spawn(async move { a.claim(&ra, "worker-a", now, SignedDuration::from_mins(2)).await }),
            tokio::spawn(async move { b.claim(&rb, "worker-b", now, SignedDuration::from_mins(2)).await }),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "round {i}: exactly one claimer wins ({x:?}, {y:?})");
        for loser in [&x, &y].into_iter().filter(|r| r.is_err()) {
            assert!(matches!(loser, Err(StoreError::Conflict(_))), "{loser:?}");
        }
    }
}

async fn a_lease_blocks_other_claims_until_it_expires(e: Env) {
    let r = record("sub_lease", t("2027-01-31T01:00:00Z"));
    e.store.create_subscription(&r).await.unwrap();
    let now = t("2027-03-01T00:00:00Z");
    let claimed = e.store.claim(&r, "a", now, SignedDuration::from_mins(2)).await.unwrap();
    assert_eq!(claimed.version, 2);
    // Another worker that read the claimed record still cannot take a live lease.
    let one_minute = now.checked_add(SignedDuration::from_mins(1)).unwrap();
    assert!(matches!(
        e.store.claim(&claimed, "b", one_minute, SignedDuration::from_mins(2)).await,
        Err(StoreError::Conflict(_))
    ));
    // After it expires (the first worker crashed), it can.
    let later = now.checked_add(SignedDuration::from_mins(3)).unwrap();
    let taken = e.store.claim(&claimed, "b", later, SignedDuration::from_mins(2)).await.unwrap();
    assert_eq!(taken.lease_owner.as_deref(), Some("b"));
    // The crashed worker's commit now fails: its lease and version are gone.
    let mut tx = e.store.tx();
    tx.put_subscription_next(&claimed.next(claimed.subscription.clone()), Some("a"));
    assert!(matches!(e.store.commit(tx).await, Err(StoreError::Conflict(_))));
    e.store.release_lease(&taken).await.unwrap();
    let released = e.store.get_subscription(r.id()).await.unwrap().unwrap();
    assert_eq!((released.lease_owner, released.lease_until, released.version), (None, 0, 4));
}

async fn a_renewal_commits_attempt_payment_subscription_and_outbox_in_one_transaction(e: Env) {
    let r = record("sub_renew1", t("2027-01-31T01:00:00Z"));
    e.store.create_subscription(&r).await.unwrap();
    let due = r.subscription.next_attempt_at.unwrap();
    assert_eq!(e.store.due_subscriptions(&due_shard(r.id()), due, 10, None).await.unwrap().items, [r.id().clone()]);

    let before = e.store.counter.snapshot();
    // renew's claim and its attempt: one transaction.
    let (collecting, attempt) = r.subscription.begin_charge(due).unwrap();
    let mut tx = e.store.tx();
    let claimed = tx.claim(&r, "w1", due, SignedDuration::from_mins(2)).unwrap();
    tx.put_attempt_new(&attempt);
    e.store.commit(tx).await.unwrap();

    // The PG approved it.
    let approved = attempt
        .resolve(AttemptStatus::Approved { pg_payment_id: attempt.charge_id.to_string(), approved_at: due })
        .unwrap();
    let t2 = collecting.charge_succeeded(&attempt.charge_id, due).unwrap();
    let next = claimed.next(t2.subscription);
    let payment = PaymentRecord::paid(
        PgMode::Payple,
        &attempt.charge_id.to_string(),
        "cus_1",
        attempt.amount,
        due,
        Some(r.id().clone()),
        Some(attempt.charge_id.clone()),
        None,
    );
    let events: Vec<OutboxEvent> = paycycle::store::outbox::subscription_events(&next, &t2.events, due, Some(&payment));
    let mut tx = e.store.tx();
    tx.put_attempt_if_status(&approved, paycycle::domain::attempt::AttemptStatusKind::Pending);
    tx.put_payment_new(&payment);
    tx.put_subscription_next(&next, Some("w1"));
    for ev in &events {
        tx.put_outbox(ev);
    }
    e.store.commit(tx).await.unwrap();
    if e.aws().is_some() {
        let used = e.store.counter.snapshot().since(&before);
        assert_eq!(used.requests_of("UpdateItem"), 0, "the claim is in the first transaction");
        assert_eq!(used.requests_of("TransactWriteItems"), 2, "claim with attempt, then outcome");
        assert_eq!(used.written_items, 2 + 5, "(claim, attempt) + (attempt, payment, subscription, 2 events)");
    }

    let stored = e.store.get_subscription(r.id()).await.unwrap().unwrap();
    assert_eq!(stored, next);
    assert_eq!(stored.subscription.current_period.unwrap().index, 1);
    assert_eq!(e.store.get_attempt(&attempt.charge_id).await.unwrap().unwrap(), approved);
    assert_eq!(e.store.get_payment(&payment.payment_id).await.unwrap().unwrap(), payment);
    assert_eq!(e.store.payments_of_subscription(r.id()).await.unwrap(), std::slice::from_ref(&payment));
    assert_eq!(e.store.attempts_of(r.id()).await.unwrap(), std::slice::from_ref(&approved));
    assert_eq!(e.store.pending_outbox(10).await.unwrap().len(), 2);

    // No longer due now; due at the next period start.
    assert!(e.store.due_subscriptions(&due_shard(r.id()), due, 10, None).await.unwrap().items.is_empty());
    let next_due = stored.subscription.next_attempt_at.unwrap();
    assert_eq!(e.store.due_subscriptions(&due_shard(r.id()), next_due, 10, None).await.unwrap().items.len(), 1);

    // Replaying the same outcome (a retried Lambda) changes nothing: every condition fails.
    let mut tx = e.store.tx();
    tx.put_attempt_if_status(&approved, paycycle::domain::attempt::AttemptStatusKind::Pending);
    tx.put_payment_new(&payment);
    tx.put_subscription_next(&next, Some("w1"));
    assert!(e.store.commit(tx).await.is_err());
    assert_eq!(e.store.get_subscription(r.id()).await.unwrap().unwrap(), next);
}

async fn a_transaction_with_one_failing_condition_writes_nothing(e: Env) {
    let r = record("sub_tx1", t("2027-01-31T01:00:00Z"));
    e.store.create_subscription(&r).await.unwrap();
    let payment =
        PaymentRecord::paid(PgMode::Payple, "oid-1", "cus_1", krw(9_900), t("2027-01-31T01:00:00Z"), None, None, None);
    let event =
        OutboxEvent::new(EventKind::RefundSucceeded, &payment.payment_id, 1, payment.paid_at, refund_data("ref_p"));
    let mut tx = e.store.tx();
    tx.put_payment_new(&payment);
    tx.put_outbox(&event);
    tx.put_subscription_new(&r); // exists already: this condition fails
    let err = e.store.commit(tx).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_) | StoreError::Conflict(_)), "{err:?}");
    assert_eq!(e.store.get_payment(&payment.payment_id).await.unwrap(), None);
    assert!(e.store.pending_outbox(10).await.unwrap().is_empty());

    // A stale version is a conflict, not an SDK error.
    let stale = r.next(r.subscription.cancel(t("2027-02-01T00:00:00Z"), false).unwrap().subscription);
    let mut tx = e.store.tx();
    tx.put_subscription_next(&stale, None);
    e.store.commit(tx).await.unwrap();
    let mut tx = e.store.tx();
    tx.put_subscription_next(&stale, None);
    assert!(matches!(e.store.commit(tx).await, Err(StoreError::Conflict(_))));
    let canceled = e.store.get_subscription(r.id()).await.unwrap().unwrap();
    assert_eq!(canceled.subscription.state, SubscriptionState::Canceled);
    // Canceled subscriptions leave the due index.
    assert!(
        e.store
            .due_subscriptions(&due_shard(r.id()), t("2030-01-01T00:00:00Z"), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn the_due_index_pages_across_shards(e: Env) {
    let anchor = t("2027-01-10T01:00:00Z");
    for i in 0..40 {
        e.store.create_subscription(&record(&format!("sub_due{i}"), anchor)).await.unwrap();
    }
    let due = t("2027-02-10T01:00:00Z");
    let mut found = Vec::new();
    for shard in due_shards() {
        let mut start = None;
        loop {
            let page = e.store.due_subscriptions(&shard, due, 3, start).await.unwrap();
            found.extend(page.items);
            match page.next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    found.sort();
    found.dedup();
    assert_eq!(found.len(), 40);
    let used_shards: std::collections::BTreeSet<_> = found.iter().map(due_shard).collect();
    assert!(used_shards.len() >= 8, "ids spread over shards: {used_shards:?}");
    let before = t("2027-02-10T00:59:59Z");
    let mut early = 0;
    for shard in due_shards() {
        early += e.store.due_subscriptions(&shard, before, 100, None).await.unwrap().items.len();
    }
    assert_eq!(early, 0);
}

fn refund(payment_id: &str, id: &str, amount: i64) -> RefundRecord {
    RefundRecord {
        refund_id: id.into(),
        payment_id: payment_id.into(),
        amount: krw(amount),
        reason: "test".into(),
        status: RefundStatus::Reserved,
        requested_at: t("2027-02-01T00:00:00Z"),
        pg_refund_id: None,
        failure_code: None,
        failure_message: None,
        request_hash: None,
        cancel_subscription: false,
        partner_id: "default".into(),
        resolution: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_reservations_never_exceed_the_payment() {
    let e = env().await;
    let payment = PaymentRecord::paid(
        PgMode::SteppaySelf,
        "idkey-1",
        "cus_1",
        krw(10_000),
        t("2027-01-31T01:00:00Z"),
        None,
        None,
        None,
    );
    e.store.create_payment(&payment).await.unwrap();
    assert!(
        matches!(e.store.create_payment(&payment).await, Err(StoreError::AlreadyExists(_))),
        "one payment per PG transaction"
    );
    assert_eq!(
        payment.payment_id,
        payment_id_for(PgMode::SteppayManaged, "idkey-1"),
        "both StepPay modes share StepPay's ids"
    );

    let store = Arc::new(e.store.clone());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let r = refund(&payment.payment_id, &format!("ref_{i}"), 300 + (i * 37) % 700);
        tasks.push(tokio::spawn(async move { (r.amount, store.reserve_refund(&r).await) }));
    }
    let mut reserved = Krw::ZERO;
    for task in tasks {
        let (amount, result) = task.await.unwrap();
        match result {
            Ok(()) => reserved = reserved.checked_add(amount).unwrap(),
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    let p = e.store.get_payment(&payment.payment_id).await.unwrap().unwrap();
    assert!(reserved <= krw(10_000));
    assert_eq!(p.amounts.refund_pending, reserved);
    assert_eq!(p.refundable, krw(10_000).checked_sub(reserved).unwrap());
    assert!(reserved >= krw(9_300), "reservations fill up what is refundable: {reserved}");
}

async fn refunds_settle_success_failure_and_unknown(e: Env) {
    let payment =
        PaymentRecord::paid(PgMode::Payple, "oid-r", "cus_1", krw(10_000), t("2027-01-31T01:00:00Z"), None, None, None);
    e.store.create_payment(&payment).await.unwrap();
    let pid = payment.payment_id.clone();
    let (a, b, c) = (refund(&pid, "ref_a", 3_000), refund(&pid, "ref_b", 2_000), refund(&pid, "ref_c", 5_000));
    for r in [&a, &b, &c] {
        e.store.reserve_refund(r).await.unwrap();
    }
    assert!(matches!(e.store.reserve_refund(&refund(&pid, "ref_d", 1)).await, Err(StoreError::Conflict(_))));
    assert!(e.store.reserve_refund(&a).await.is_err(), "a refund id is reserved once");

    let ev = OutboxEvent::new(EventKind::RefundSucceeded, "ref_a", 1, t("2027-02-01T00:00:00Z"), refund_data("ref_a"));
    let a2 = e
        .store
        .settle_refund(&a, &RefundOutcome::Succeeded { pg_refund_id: Some("tid-1".into()) }, &[ev])
        .await
        .unwrap();
    assert_eq!(a2.status, RefundStatus::Succeeded);
    let b2 = e
        .store
        .settle_refund(
            &b,
            &RefundOutcome::Failed(RefundFailure::Declined { code: "PAYC0001".into(), message: "x".into() }),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(b2.status, RefundStatus::Failed);
    let c2 = e.store.settle_refund(&c, &RefundOutcome::Unknown, &[]).await.unwrap();

    let p = e.store.get_payment(&pid).await.unwrap().unwrap();
    assert_eq!((p.amounts.refunded, p.amounts.refund_pending, p.refundable), (krw(3_000), krw(5_000), krw(2_000)));
    assert_eq!(e.store.pending_outbox(10).await.unwrap().len(), 1);

    // Final states do not move again; an unknown one resolves later.
    assert!(e.store.settle_refund(&a2, &RefundOutcome::Unknown, &[]).await.is_err());
    assert!(
        e.store.settle_refund(&a, &RefundOutcome::Succeeded { pg_refund_id: None }, &[]).await.is_err(),
        "stale status"
    );
    e.store.settle_refund(&c2, &RefundOutcome::Succeeded { pg_refund_id: None }, &[]).await.unwrap();
    let p = e.store.get_payment(&pid).await.unwrap().unwrap();
    assert_eq!((p.amounts.refunded, p.amounts.refund_pending, p.refundable), (krw(8_000), Krw::ZERO, krw(2_000)));
    assert_eq!(e.store.get_refund(&pid, "ref_c").await.unwrap().unwrap().status, RefundStatus::Succeeded);
}

async fn idempotency_records_follow_powertools_semantics(e: Env) {
    let cfg = IdempotencyConfig::default();
    let now = t("2027-02-01T00:00:00Z");
    let h1 = sha256_hex(b"{\"amount\":1000}");
    let h2 = sha256_hex(b"{\"amount\":2000}");
    assert_eq!(e.store.claim_idempotency("refund:pay_1", "key-1", &h1, now, cfg).await.unwrap(), Claim::Claimed);
    assert_eq!(e.store.claim_idempotency("refund:pay_1", "key-1", &h1, now, cfg).await.unwrap(), Claim::InProgress);
    assert_eq!(e.store.claim_idempotency("refund:pay_1", "key-1", &h2, now, cfg).await.unwrap(), Claim::Mismatch);
    // The same key in another scope is another request.
    assert_eq!(e.store.claim_idempotency("refund:pay_2", "key-1", &h2, now, cfg).await.unwrap(), Claim::Claimed);

    e.store.complete_idempotency("refund:pay_1", "key-1", &h1, 201, "{\"id\":\"ref_1\"}").await.unwrap();
    assert_eq!(
        e.store.claim_idempotency("refund:pay_1", "key-1", &h1, now, cfg).await.unwrap(),
        Claim::Replay { status: 201, body: "{\"id\":\"ref_1\"}".into() }
    );
    assert_eq!(e.store.claim_idempotency("refund:pay_1", "key-1", &h2, now, cfg).await.unwrap(), Claim::Mismatch);

    // A claim whose runner crashed can be taken over after the in-progress expiry.
    assert_eq!(e.store.claim_idempotency("s", "crashed", &h1, now, cfg).await.unwrap(), Claim::Claimed);
    let later = now.checked_add(SignedDuration::from_mins(16)).unwrap();
    assert_eq!(e.store.claim_idempotency("s", "crashed", &h1, later, cfg).await.unwrap(), Claim::Claimed);
    // A released claim can be claimed again; an expired record too.
    e.store.release_idempotency("s", "crashed", &h1).await.unwrap();
    assert_eq!(e.store.claim_idempotency("s", "crashed", &h2, later, cfg).await.unwrap(), Claim::Claimed);
    e.store.complete_idempotency("s", "crashed", &h2, 200, "{}").await.unwrap();
    let next_week = now.checked_add(SignedDuration::from_hours(24 * 7)).unwrap();
    assert_eq!(e.store.claim_idempotency("s", "crashed", &h1, next_week, cfg).await.unwrap(), Claim::Claimed);
}

async fn webhook_events_are_stored_once_with_a_ttl(e: Env) {
    let event = WebhookEvent::received(
        paycycle::pg::Pg::Steppay,
        "PAYMENT:16057932413479698c8vqQG0kMix9".into(),
        "application/json",
        r#"{"webHookType":"PAYMENT","orderId":1,"idKey":"16057932413479698c8vqQG0kMix9"}"#.into(),
        [("user-agent".to_string(), "StepPay".to_string())].into_iter().collect(),
        t("2027-02-01T00:00:00Z"),
    );
    let before = e.store.counter.snapshot();
    e.store.put_webhook_event(&event).await.unwrap();
    if e.aws().is_some() {
        let used = e.store.counter.snapshot().since(&before);
        assert_eq!((used.total_requests(), used.written_items), (1, 1), "exactly one write per webhook");
    }
    assert!(matches!(e.store.put_webhook_event(&event).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(e.store.get_webhook_event(paycycle::pg::Pg::Steppay, &event.dedupe_key).await.unwrap().unwrap(), event);
    let items = e.all_items().await;
    let pk = aws_sdk_dynamodb::types::AttributeValue::S(event.pk());
    let item = items.iter().find(|i| i.get("pk") == Some(&pk)).unwrap();
    assert_eq!(item["entity"].as_s().unwrap(), "webhook_event");
    let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires - event.received_at.as_second(), 180 * 24 * 3600);
}

async fn checkouts_are_found_by_pg_reference_and_completed_once(e: Env) {
    let c = CheckoutRecord {
        return_url: Some("https://shop.example.com/return".into()),
        ..open_checkout("chk_1", "sub_c1", "sub_c1-p0-a1", t("2027-02-01T00:00:00Z"))
    };
    e.store.create_checkout(&c).await.unwrap();
    assert!(matches!(e.store.create_checkout(&c).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(e.store.checkout_by_pg_reference(PgMode::Payple, "sub_c1-p0-a1").await.unwrap().unwrap(), c);
    assert_eq!(e.store.checkout_by_pg_reference(PgMode::SteppaySelf, "sub_c1-p0-a1").await.unwrap(), None);
    let done = CheckoutRecord { status: CheckoutStatus::Completed, version: 2, ..c.clone() };
    let mut tx = e.store.tx();
    tx.put_checkout_next(&done);
    e.store.commit(tx).await.unwrap();
    let mut tx = e.store.tx();
    tx.put_checkout_next(&done);
    assert!(matches!(e.store.commit(tx).await, Err(StoreError::Conflict(_))), "completed once");
    assert_eq!(e.store.get_checkout("chk_1").await.unwrap().unwrap().status, CheckoutStatus::Completed);
}

async fn api_keys_are_stored_as_hashes_and_can_be_revoked(e: Env) {
    let now = t("2027-02-01T00:00:00Z");
    let key = "pc_live_4f9a0c1d2e3b";
    let r = e.store.create_api_key(key, "partner backend", "partner_a", now).await.unwrap();
    assert_eq!(r.key_hash, sha256_hex(key.as_bytes()));
    assert!(!format!("{:?}", e.all_items().await).contains(key), "the key itself is never stored");
    assert!(e.store.find_api_key(key).await.unwrap().unwrap().is_active());
    assert_eq!(e.store.find_api_key("pc_live_wrong").await.unwrap(), None);
    // Listed per partner and found by its id (not the key), which is what operators revoke by.
    let (listed, _) = e.store.api_keys_of_partner("partner_a", 10, None).await.unwrap();
    assert_eq!(listed, vec![r.clone()]);
    assert!(e.store.api_keys_of_partner("partner_b", 10, None).await.unwrap().0.is_empty());
    assert_eq!(e.store.api_key_by_id(&r.key_id()).await.unwrap(), Some(r.clone()));
    e.store.revoke_api_key_by(&r, now, Some("arn:aws:iam::1:user/ops")).await.unwrap();
    let revoked = e.store.api_key_by_id(&r.key_id()).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_by.as_deref(), Some("arn:aws:iam::1:user/ops"));
    assert!(!e.store.find_api_key(key).await.unwrap().unwrap().is_active());
    assert!(matches!(e.store.revoke_api_key(&r, now).await, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn outbox_events_reach_an_sqs_queue_through_a_bus_rule() {
    let e = env().await;
    let aws = e.aws().unwrap();
    let bus = aws.provisioned.buses["PaycycleBus"].clone();
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{}-events", aws.provisioned.table))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let events_client = aws_sdk_eventbridge::Client::new(&aws.sdk);
    events_client
        .put_rule()
        .name("all-paycycle")
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["paycycle"]}"#)
        .send()
        .await
        .unwrap();
    events_client
        .put_targets()
        .rule("all-paycycle")
        .event_bus_name(&bus)
        .targets(aws_sdk_eventbridge::types::Target::builder().id("q").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();

    // Committed with a state change, then flushed.
    let at = t("2027-02-01T00:00:00Z");
    let events: Vec<OutboxEvent> = (0..12)
        .map(|v| OutboxEvent::new(EventKind::RefundSucceeded, "sub_ob1", v, at, refund_data(&format!("ref_{v}"))))
        .collect();
    let mut tx = e.store.tx();
    for ev in &events {
        tx.put_outbox(ev);
    }
    e.store.commit(tx).await.unwrap();

    // A bus that does not exist accepts nothing: everything stays in the outbox.
    let broken = EventPublisher::new(&aws.sdk, "no-such-bus");
    let report = broken.flush(&e.store, &events).await.unwrap();
    assert_eq!(report.published, 0);
    assert_eq!(report.failed.len(), 12);
    assert_eq!(e.store.pending_outbox(100).await.unwrap().len(), 12);

    // The next drain publishes the leftovers (more than one PutEvents batch) and empties it.
    let publisher = EventPublisher::new(&aws.sdk, &bus);
    let report = publisher.drain(&e.store, 100).await.unwrap();
    assert_eq!((report.published, report.failed.len()), (12, 0));
    assert!(e.store.pending_outbox(100).await.unwrap().is_empty());

    let mut received = Vec::new();
    for _ in 0..10 {
        let out = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
        for m in out.messages() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(body["source"], "paycycle");
            assert_eq!(body["detail-type"], "refund.succeeded");
            received.push(body["detail"]["id"].as_str().unwrap().to_string());
        }
        if received.len() >= 12 {
            break;
        }
    }
    received.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    want.sort();
    assert_eq!(received, want, "every event once, with its stable id");
    // Stable: the same change yields the same id.
    assert_eq!(
        OutboxEvent::new(EventKind::RefundSucceeded, "sub_ob1", 3, at, refund_data("ref_3")).event_id,
        events[3].event_id
    );
}

/// One partner customer, one PG customer: the first claim creates, others wait; a recorded mapping
/// is never overwritten (a late creator gets the recorded one back); a dead claim is taken over.
async fn a_recorded_pg_customer_is_never_overwritten_and_a_dead_claim_is_taken_over(e: Env) {
    use paycycle::store::pg_customers::{PgCustomer, PgCustomerClaim};
    let now = t("2027-01-01T00:00:00Z");
    let lease = SignedDuration::from_secs(30);
    let claim = |at: Timestamp| e.store.claim_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", at, lease);
    let PgCustomerClaim::Claimed(dead) = claim(now).await.unwrap() else { panic!("claimed") };
    assert_eq!(claim(now).await.unwrap(), PgCustomerClaim::Busy, "another checkout is creating it");
    let later = now.checked_add(SignedDuration::from_secs(31)).unwrap();
    let PgCustomerClaim::Claimed(taken_over) = claim(later).await.unwrap() else { panic!("the first creator is gone") };
    // The first claimant's claim was taken over: it neither releases nor records over it.
    e.store.release_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", &dead).await.unwrap();
    assert_eq!(claim(later).await.unwrap(), PgCustomerClaim::Busy, "the live claim was not released by another");
    let first = PgCustomer { id: "1".into(), code: "customer_a".into() };
    let second = PgCustomer { id: "2".into(), code: "customer_b".into() };
    assert!(matches!(
        e.store.record_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", &dead, &second).await,
        Err(paycycle::store::StoreError::Conflict(_))
    ));
    assert_eq!(
        e.store.record_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", &taken_over, &first).await.unwrap(),
        first
    );
    assert_eq!(
        e.store.record_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", &dead, &second).await.unwrap(),
        first,
        "the recorded mapping stands"
    );
    assert_eq!(claim(later).await.unwrap(), PgCustomerClaim::Known(first.clone()));
    e.store.release_pg_customer(paycycle::pg::Pg::Steppay, "p1", "cus_1", &taken_over).await.unwrap();
    assert_eq!(claim(later).await.unwrap(), PgCustomerClaim::Known(first), "a recorded mapping is never released");
    assert!(
        matches!(
            e.store.claim_pg_customer(paycycle::pg::Pg::Steppay, "p2", "cus_1", now, lease).await.unwrap(),
            PgCustomerClaim::Claimed(_)
        ),
        "per partner"
    );
}

/// Event data for the outbox's own tests (what the event says does not matter to them).
fn refund_data(refund_id: &str) -> paycycle::domain::events::EventData {
    paycycle::domain::events::EventData::Refund(paycycle::domain::events::RefundEventData {
        refund_id: refund_id.into(),
        payment_id: "pay_x".into(),
        amount: paycycle::money::Krw::new(1_000).unwrap(),
        partner_id: "p1".into(),
        external: false,
    })
}

/// Two verifies of one checkout whose lease changed hands: the slower one's commit fails on the
/// checkout it no longer holds (a conflict: verify waits and answers the completed checkout), not
/// on the payment the faster one recorded (which would read as "this PG payment is another
/// checkout's"). The commit helper writes the checkout first.
async fn a_stale_checkout_completion_fails_on_the_checkout_not_on_the_payment(e: Env) {
    use paycycle::events::{SubscriptionWrite, TransitionCommit};
    let at = t("2027-02-01T00:00:00Z");
    let c = open_checkout("chk_race", "sub_race", "chk_race", at);
    e.store.create_checkout(&c).await.unwrap();
    // A holds it (v2); its lease runs out and B takes it over (v3) and completes it (v4).
    e.store.update_checkout(&CheckoutRecord { version: 2, ..c.clone() }).await.unwrap();
    e.store.update_checkout(&CheckoutRecord { version: 3, ..c.clone() }).await.unwrap();
    let sub = record("sub_race", at);
    let p =
        PaymentRecord::paid(PgMode::Payple, "chk_race", "cus_9", krw(9_900), at, Some(sub.id().clone()), None, None);
    let kinds = [EventKind::CheckoutCompleted, EventKind::PaymentSucceeded];
    let publisher = e.publisher("no-such-bus");
    let done = |version| CheckoutRecord { status: CheckoutStatus::Completed, version, ..c.clone() };
    let change = TransitionCommit::new(&sub, SubscriptionWrite::New, &kinds, at).paid(&p);
    let b = TransitionCommit { checkout: Some(&done(4)), ..change };
    publisher.commit_transition(&e.store, &b, |_| {}).await.unwrap();
    // A commits from its stale hold.
    let a = TransitionCommit { checkout: Some(&done(3)), ..change };
    let err = publisher.commit_transition(&e.store, &a, |_| {}).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(key) if key.starts_with("CHK#")), "{err:?}");
    assert!(!err.payment_exists());
}

/// `r`, its first renewal left unknown since `since` and sent to review, written with its attempt.
async fn in_review(e: &Env, r: SubscriptionRecord, since: Timestamp) -> SubscriptionRecord {
    let s = &r.subscription;
    let (s, a) = s.begin_charge(s.next_attempt_at.unwrap()).unwrap();
    let s = s.charge_unknown(&a.charge_id, since, SignedDuration::from_mins(5)).unwrap().subscription;
    let r = SubscriptionRecord { subscription: s.require_review().unwrap().subscription, ..r };
    let mut tx = e.store.tx();
    tx.put_subscription_new(&r);
    tx.put_attempt_new(&a.resolve(AttemptStatus::Unknown { since }).unwrap());
    e.store.commit(tx).await.unwrap();
    r
}

async fn what_needs_a_person_is_listed_per_partner_oldest_first_until_it_is_settled(e: Env) {
    use paycycle::store::reviews::Review;
    let anchor = t("2027-01-10T01:00:00Z");
    let now = t("2027-03-01T00:00:00Z");
    in_review(&e, record("sub_rvb", anchor), t("2027-02-10T03:00:00Z")).await;
    let earlier = in_review(&e, record("sub_rva", anchor), t("2027-02-10T02:00:00Z")).await;
    e.store.create_subscription(&record("sub_rvfine", anchor)).await.unwrap();
    let payment = PaymentRecord::paid(PgMode::Payple, "oid-rv", "cus_1", krw(10_000), anchor, None, None, None)
        .for_partner("partner_a");
    e.store.create_payment(&payment).await.unwrap();
    let unknown = RefundRecord {
        partner_id: "partner_a".into(),
        requested_at: t("2027-02-10T04:00:00Z"),
        ..refund(&payment.payment_id, "ref_rv", 4_000)
    };
    e.store.reserve_refund(&unknown).await.unwrap();
    let unknown = e.store.settle_refund(&unknown, &RefundOutcome::Unknown, &[]).await.unwrap();

    let first = e.store.reviews("partner_a", 2, None, now).await.unwrap();
    let ids: Vec<String> = first
        .items
        .iter()
        .map(|r| match r {
            Review::Subscription { record, attempt } => {
                assert_eq!(attempt.as_ref().map(|a| a.status.name()), Some("unknown"), "with its attempt");
                record.id().to_string()
            }
            Review::Refund { refund, .. } => refund.refund_id.clone(),
        })
        .collect();
    assert_eq!(ids, ["sub_rva", "sub_rvb"], "oldest first");
    let second = e.store.reviews("partner_a", 2, first.next, now).await.unwrap();
    match &second.items[..] {
        [Review::Refund { refund, payment }] => {
            assert_eq!(refund.refund_id, "ref_rv");
            assert_eq!(payment.as_ref().map(|p| p.pg_payment_id.as_str()), Some("oid-rv"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.store.reviews("partner_b", 10, None, now).await.unwrap().items.is_empty(), "per partner");

    // Settled, each leaves the list with the write that settles it.
    e.store.settle_refund(&unknown, &RefundOutcome::Failed(RefundFailure::NotAtPg), &[]).await.unwrap();
    let charge = earlier.subscription.next_charge_id().unwrap();
    let paid = earlier.subscription.review_paid(&charge, now, false).unwrap().subscription;
    let mut tx = e.store.tx();
    tx.put_subscription_next(&earlier.next(paid), None);
    e.store.commit(tx).await.unwrap();
    let left = e.store.reviews("partner_a", 10, None, now).await.unwrap();
    assert_eq!(left.items.len(), 1);
    assert!(matches!(&left.items[0], Review::Subscription { record, .. } if record.id().as_str() == "sub_rvb"));
}

on_both!(
    subscriptions_round_trip_and_are_created_once,
    a_lease_blocks_other_claims_until_it_expires,
    a_renewal_commits_attempt_payment_subscription_and_outbox_in_one_transaction,
    a_transaction_with_one_failing_condition_writes_nothing,
    the_due_index_pages_across_shards,
    refunds_settle_success_failure_and_unknown,
    idempotency_records_follow_powertools_semantics,
    webhook_events_are_stored_once_with_a_ttl,
    checkouts_are_found_by_pg_reference_and_completed_once,
    api_keys_are_stored_as_hashes_and_can_be_revoked,
    a_recorded_pg_customer_is_never_overwritten_and_a_dead_claim_is_taken_over,
    a_stale_checkout_completion_fails_on_the_checkout_not_on_the_payment,
    what_needs_a_person_is_listed_per_partner_oldest_first_until_it_is_settled,
);
