//! Issue #13: the journeys `make demo` runs, as a test — three customers (Payple, StepPay self,
//! StepPay managed) from checkout through a year of renewals by time travel (a month-end anchor,
//! a soft decline and its dunning retry, a failed StepPay renewal and its retry), partial refunds
//! and cancels at period end, every API answer checked against openapi.yaml, and the sandbox's
//! ledger reconciled with our table: zero differences.

use paycycle::pg::PgMode;
use paycycle_dev::journey;
use paycycle_dev::{LocalStack, Options};

#[tokio::test]
async fn a_year_on_all_three_pg_modes_reconciles_with_the_pg_ledger() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let bus = stack.provisioned.buses.values().next().unwrap().clone();
    let tap = paycycle_e2e::EventTap::attach(&stack.moto.sdk_config().await, &bus, "journeys-tap").await;
    let mut lines = Vec::new();
    let mut sink = |line: String| lines.push(line);
    let report = journey::run(&stack, Some(paycycle_e2e::contract_checker()), &mut sink).await.unwrap();
    let text = journey::render(&report);
    let r = &report.reconciliation;
    assert!(r.differences.is_empty(), "{text}");
    assert_eq!((r.pg_charges, r.our_payments), (40, 40), "{text}");
    assert_eq!((r.pg_charged, r.our_charged), (555_400, 555_400));
    assert_eq!((r.pg_refunded, r.our_refunded), (8_000, 8_000));

    let by_pg = |pg: PgMode| report.subscriptions.iter().find(|s| s.pg == pg).unwrap();
    let payple = by_pg(PgMode::Payple);
    assert_eq!((payple.state.as_str(), payple.payments, payple.refunded), ("canceled", 13, 3_000), "{text}");
    // The month-end anchor: the 31st, then each month's last day (the April charge was declined
    // and collected by dunning on May 1st), into a leap year.
    assert_eq!(
        payple.anchor_days[..6],
        ["2027-01-31", "2027-02-28", "2027-03-31", "2027-05-01", "2027-05-31", "2027-06-30"]
    );
    assert_eq!(payple.anchor_days.last().unwrap(), "2028-01-31");
    let steppay_self = by_pg(PgMode::SteppaySelf);
    assert_eq!((steppay_self.state.as_str(), steppay_self.payments, steppay_self.refunded), ("active", 14, 5_000));
    let managed = by_pg(PgMode::SteppayManaged);
    assert_eq!((managed.state.as_str(), managed.payments, managed.periods_paid), ("canceled", 13, 13), "{text}");
    assert!(lines.iter().any(|l| l.contains("soft decline → \"past_due\"")), "{lines:#?}");
    // StepPay's documented events drive the managed journey (issue 21 §1): a declined renewal is
    // subscription.updated (UNPAID → past due), the paid retry order.payment_completed and
    // subscription.updated (ACTIVE again); never order.paid / order.payment_failed.
    assert!(lines.iter().any(|l| l.contains("subscription.updated webhook (UNPAID")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("→ \"past_due\"")), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("order.payment_completed + subscription.updated webhook → period")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("order.paid") || l.contains("order.payment_failed")), "{lines:#?}");
    assert!(stack.feeder.dead_letters.lock().await.is_empty());

    // Every event the journeys published is in openapi.yaml's catalog, in its documented shape,
    // and one type has one shape whichever path produced it (issue 22 §3).
    let events = tap.drain().await;
    let kinds: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["detail-type"].as_str()).collect();
    assert!(kinds.len() >= 8, "the journeys publish most kinds: {kinds:?}");
    paycycle_e2e::check_events(&events).unwrap();
}
