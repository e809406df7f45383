//! renew's orchestration on an in-memory store, against the PG sandbox in this process over real
//! HTTP: each case runs in milliseconds (issue 22 §2). The DynamoDB side of the same flows —
//! conditions on moto, overlapping ticks, leases on the wall clock — is `tests/tests/renew.rs`.

use crate::{CrashPoint, Deps, Settings, tick};
use jiff::{SignedDuration, Timestamp};
use paycycle::domain::events::EventKind;
use paycycle::domain::subscription::SubscriptionState;
use paycycle::pg::PgMode;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle_fixtures::{Fresh, Pgs, subscription};
use serde_json::json;

struct Env {
    fresh: Fresh,
    pgs: Pgs,
    deps: Deps,
}

async fn env() -> Env {
    let fresh = Fresh::in_memory();
    let pgs = Pgs::start().await;
    let paycycle::boot::Services { store, pgs: registry, publisher, vault } = fresh.services(&pgs);
    let deps = Deps {
        store,
        pgs: registry,
        publisher,
        vault,
        settings: Settings { concurrency: 4, allow_time_travel: true, ..Settings::default() },
        crash_at: None,
    };
    Env { fresh, pgs, deps }
}

impl Env {
    /// `s`'s billing key, opened (it is stored sealed).
    async fn key_of(&self, s: &SubscriptionRecord) -> String {
        self.fresh.vault.open(s.id(), s.billing_key.as_ref().unwrap()).await.unwrap().expose().to_string()
    }

    /// An active subscription with a billing key the sandbox issued.
    async fn subscription(&self, id: &str, pg: PgMode) -> SubscriptionRecord {
        let key = self.pgs.billing_key(pg).await;
        let r = subscription(id).pg(pg).billing_key(Some(&key)).sealed(&self.fresh.vault).await;
        self.fresh.store.create_subscription(&r).await.unwrap();
        r
    }

    /// One tick at `now`, the PG's clock set to it first.
    async fn tick_at(&self, now: Timestamp, deps: &Deps) -> crate::Report {
        self.pgs.client.set_clock(now).await.unwrap();
        tick(deps, now, None).await
    }

    /// The PG's charges of subscription `id` (by our charge ids, `{id}-p…`).
    async fn pg_charges(&self, id: &str) -> usize {
        let ledger = self.pgs.client.ledger().await.unwrap();
        let ours = |c: &serde_json::Value| {
            let reference = c["partner_order_id"].as_str().or(c["id"].as_str()).unwrap_or_default().to_string();
            reference.starts_with(&format!("{id}-p"))
        };
        ledger["charges"].as_array().unwrap().iter().filter(|c| ours(c)).count()
    }

    async fn state(&self, r: &SubscriptionRecord) -> SubscriptionRecord {
        self.fresh.store.get_subscription(r.id()).await.unwrap().unwrap()
    }

    fn published(&self, kind: EventKind) -> usize {
        self.fresh.publisher.published().iter().filter(|e| e.detail_type == kind.detail_type()).count()
    }
}

#[tokio::test]
async fn a_due_subscription_is_charged_once_however_many_ticks_run() {
    for pg in [PgMode::Payple, PgMode::SteppaySelf] {
        let e = env().await;
        let s = e.subscription("sub_due", pg).await;
        let due = s.subscription.next_attempt_at.unwrap();
        let r = e.tick_at(due, &e.deps).await;
        assert_eq!((r.due, r.charged), (1, 1), "{pg}: {r:?}");
        for later in [1, 5, 60] {
            let again = e.tick_at(due.checked_add(SignedDuration::from_mins(later)).unwrap(), &e.deps).await;
            assert_eq!(again.charged + again.resolved, 0, "{pg}: {again:?}");
        }
        assert_eq!(e.pg_charges("sub_due").await, 1, "{pg}: one PG charge");
        let payments = e.fresh.store.payments_of_subscription(s.id()).await.unwrap();
        assert_eq!(payments.len(), 1, "{pg}");
        assert_eq!(payments[0].amounts.paid, s.subscription.plan.amount, "{pg}");
        let after = e.state(&s).await;
        assert_eq!(
            (after.subscription.state, after.subscription.current_period.unwrap().index),
            (SubscriptionState::Active, 1)
        );
        assert_eq!(
            (e.published(EventKind::SubscriptionRenewed), e.published(EventKind::PaymentSucceeded)),
            (1, 1),
            "{pg}"
        );
    }
}

#[tokio::test]
async fn a_soft_decline_goes_past_due_and_the_dunning_retry_charges() {
    let e = env().await;
    let s = e.subscription("sub_dun", PgMode::Payple).await;
    let key = e.key_of(&s).await;
    e.pgs
        .client
        .admin(
            "/__admin/scenarios",
            json!({"billing_key": key, "fault": {"kind": "decline", "hard": false}, "count": 1}),
        )
        .await
        .unwrap();
    let due = s.subscription.next_attempt_at.unwrap();
    let r = e.tick_at(due, &e.deps).await;
    assert_eq!(r.declined, 1, "{r:?}");
    let past_due = e.state(&s).await;
    assert_eq!(past_due.subscription.state, SubscriptionState::PastDue);
    assert_eq!(e.published(EventKind::PaymentFailed), 1);
    let retry_at = past_due.subscription.next_attempt_at.expect("dunning schedules a retry");
    assert!(retry_at > due);
    assert_eq!(e.tick_at(retry_at, &e.deps).await.charged, 1);
    assert_eq!(e.state(&s).await.subscription.state, SubscriptionState::Active);
    assert_eq!(e.fresh.store.payments_of_subscription(s.id()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_crash_at_any_step_still_charges_the_period_exactly_once() {
    let points =
        [CrashPoint::AfterClaim, CrashPoint::AfterAttemptWrite, CrashPoint::AfterPgCall, CrashPoint::BeforeCommit];
    let e = env().await;
    for (i, point) in points.into_iter().enumerate() {
        let id = format!("sub_crash{i}");
        let s = e.subscription(&id, PgMode::Payple).await;
        let due = s.subscription.next_attempt_at.unwrap();
        let crashing = Deps { crash_at: Some(point), ..e.deps.clone() };
        assert_eq!(e.tick_at(due, &crashing).await.errors, 1, "{point:?}");
        // The dead worker's lease runs out (on the wall clock; `tests/tests/renew.rs` waits for
        // it on moto): here it is given back at once.
        let held = e.state(&s).await;
        assert!(held.lease_owner.is_some(), "{point:?}: the dead worker still holds it");
        e.fresh.store.release_lease(&held).await.unwrap();
        for minutes in [6, 12] {
            e.tick_at(due.checked_add(SignedDuration::from_mins(minutes)).unwrap(), &e.deps).await;
        }
        assert_eq!(e.pg_charges(&id).await, 1, "{point:?}: exactly one PG charge");
        assert_eq!(e.fresh.store.payments_of_subscription(s.id()).await.unwrap().len(), 1, "{point:?}");
        let after = e.state(&s).await;
        assert_eq!(after.subscription.current_period.unwrap().index, 1, "{point:?}");
        assert_eq!(after.subscription.state, SubscriptionState::Active, "{point:?}");
    }
}

#[tokio::test]
async fn a_hard_decline_stops_dunning_and_charges_nothing_more() {
    let e = env().await;
    let s = e.subscription("sub_hard", PgMode::Payple).await;
    let key = e.key_of(&s).await;
    e.pgs
        .client
        .admin("/__admin/scenarios", json!({"billing_key": key, "fault": {"kind": "decline", "hard": true}}))
        .await
        .unwrap();
    let due = s.subscription.next_attempt_at.unwrap();
    assert_eq!(e.tick_at(due, &e.deps).await.declined, 1);
    let after = e.state(&s).await;
    assert_ne!(after.subscription.state, SubscriptionState::Active);
    assert_eq!(after.subscription.next_attempt_at, None, "nothing is retried after a hard decline");
    let later = e.tick_at(due.checked_add(SignedDuration::from_hours(72)).unwrap(), &e.deps).await;
    assert_eq!(later.due, 0, "{later:?}");
    assert!(e.fresh.store.payments_of_subscription(s.id()).await.unwrap().is_empty());
}
