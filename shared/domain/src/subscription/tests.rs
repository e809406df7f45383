use jiff::civil::date;
use proptest::prelude::*;

use super::*;
use crate::calendar::{IntervalUnit, in_seoul, seoul};

fn kst(y: i16, m: i8, d: i8, h: i8) -> Timestamp {
    date(y, m, d).at(h, 0, 0, 0).to_zoned(seoul()).unwrap().timestamp()
}

fn plan() -> Plan {
    Plan { name: "Pro".into(), amount: Krw::new(9_900).unwrap(), interval: Interval::monthly() }
}

fn fresh(renewer: Renewer) -> Subscription {
    Subscription::incomplete(SubscriptionId::parse("sub_test1").unwrap(), plan(), renewer)
}

fn active_from(anchor: Timestamp) -> Subscription {
    fresh(Renewer::Paycycle).activate(anchor).unwrap().subscription
}

/// Charges at the due time and reports success; returns the renewed subscription.
fn renew_ok(s: &Subscription) -> Subscription {
    let now = s.next_attempt_at.unwrap();
    let (s, attempt) = s.begin_charge(now).unwrap();
    s.charge_succeeded(&attempt.charge_id, now).unwrap().subscription
}

fn kst_day(t: Timestamp) -> (i16, i8, i8) {
    let d = in_seoul(t).date();
    (d.year(), d.month(), d.day())
}

#[test]
fn jan_31_anchor_renews_on_month_ends_without_drift() {
    let mut s = active_from(kst(2027, 1, 31, 10));
    assert_eq!(s.state, SubscriptionState::Active);
    let mut charged = Vec::new();
    for _ in 0..12 {
        let due = s.next_attempt_at.unwrap();
        assert_eq!(s.due_action(due.checked_sub(SignedDuration::from_secs(1)).unwrap()).unwrap(), DueAction::Nothing);
        charged.push(kst_day(due));
        s = renew_ok(&s);
    }
    assert_eq!(
        &charged[..4],
        &[(2027, 2, 28), (2027, 3, 31), (2027, 4, 30), (2027, 5, 31)],
        "month-end anchor clamps and comes back"
    );
    assert_eq!(charged[11], (2028, 1, 31));
    assert_eq!(s.current_period.unwrap().index, 12);
}

#[test]
fn the_first_charge_of_a_period_has_a_deterministic_id() {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    match s.due_action(due).unwrap() {
        DueAction::Charge { charge_id, amount } => {
            assert_eq!(charge_id.to_string(), "sub_test1-p1-a1");
            assert_eq!(amount.won(), 9_900);
        }
        other => panic!("{other:?}"),
    }
    let (a, attempt_a) = s.begin_charge(due).unwrap();
    let (b, attempt_b) = s.begin_charge(due).unwrap();
    assert_eq!((a, attempt_a.charge_id), (b, attempt_b.charge_id), "a crashed tick recomputes the same charge");
}

#[test]
fn soft_declines_retry_by_policy_then_recover_on_the_anchor_schedule() {
    let policy = DunningPolicy::default();
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a1) = s.begin_charge(due).unwrap();
    let t = s.charge_declined(&a1.charge_id, false, due, &policy).unwrap();
    assert_eq!(t.events, [EventKind::PaymentFailed, EventKind::SubscriptionPastDue]);
    let s = t.subscription;
    assert_eq!(s.state, SubscriptionState::PastDue);
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 3, 1), "due + 1 day");

    let retry_at = s.next_attempt_at.unwrap();
    let (s, a2) = s.begin_charge(retry_at).unwrap();
    assert_eq!(a2.charge_id.to_string(), "sub_test1-p1-a2");
    let t = s.charge_declined(&a2.charge_id, false, retry_at, &policy).unwrap();
    assert_eq!(t.events, [EventKind::PaymentFailed], "already past due: no second past_due event");
    let s = t.subscription;
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 3, 3), "due + 3 days, from the due time");

    let (s, a3) = s.begin_charge(s.next_attempt_at.unwrap()).unwrap();
    let t = s.charge_succeeded(&a3.charge_id, kst(2027, 3, 3, 10)).unwrap();
    assert_eq!(t.events, [EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed]);
    let s = t.subscription;
    assert_eq!(s.state, SubscriptionState::Active);
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 3, 31), "a late payment does not move the schedule");
}

#[test]
fn exhausted_retries_and_hard_declines_stop_dunning() {
    let policy = DunningPolicy::default();
    let mut s = active_from(kst(2027, 1, 15, 10));
    for attempt in 1..=5 {
        let now = s.next_attempt_at.unwrap();
        let (next, a) = s.begin_charge(now).unwrap();
        assert_eq!(a.charge_id.attempt(), attempt);
        let t = next.charge_declined(&a.charge_id, false, now, &policy).unwrap();
        s = t.subscription;
        if attempt == 5 {
            assert_eq!(t.events, [EventKind::PaymentFailed, EventKind::SubscriptionUnpaid]);
        }
    }
    assert_eq!(s.state, SubscriptionState::Unpaid);
    assert_eq!(s.next_attempt_at, None);
    assert_eq!(s.due_action(kst(2030, 1, 1, 0)).unwrap(), DueAction::Nothing);

    let cancel_policy = DunningPolicy::new(vec![1, 3], FinalAction::Canceled).unwrap();
    let s = active_from(kst(2027, 1, 15, 10));
    let now = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(now).unwrap();
    let t = s.charge_declined(&a.charge_id, true, now, &cancel_policy).unwrap();
    assert_eq!(t.subscription.state, SubscriptionState::Canceled);
    assert_eq!(t.events, [EventKind::PaymentFailed, EventKind::SubscriptionCanceled]);
}

#[test]
fn unknown_outcomes_are_never_charged_again_and_go_to_review() {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(due).unwrap();
    let s = s.charge_unknown(&a.charge_id, due, SignedDuration::from_mins(5)).unwrap().subscription;
    let later = due.checked_add(SignedDuration::from_mins(5)).unwrap();
    assert_eq!(s.due_action(later).unwrap(), DueAction::ResolveUnknown { charge_id: a.charge_id.clone(), since: due });
    assert!(matches!(s.begin_charge(later), Err(TransitionError::UnknownOutcomePending(_))));
    assert!(matches!(s.pause(later, PauseWhen::Now), Err(TransitionError::UnknownOutcomePending(_))));

    // Still unknown at the next look: the first `since` is kept.
    let s = s.charge_unknown(&a.charge_id, later, SignedDuration::from_mins(5)).unwrap().subscription;
    assert!(!s.unknown_overdue(later, SignedDuration::from_hours(24)));
    let day_later = due.checked_add(SignedDuration::from_hours(25)).unwrap();
    assert!(s.unknown_overdue(day_later, SignedDuration::from_hours(24)));

    let t = s.require_review().unwrap();
    assert_eq!(t.events, [EventKind::SubscriptionNeedsReview]);
    let s = t.subscription;
    assert_eq!((s.state, s.next_attempt_at), (SubscriptionState::NeedsReview, None));

    // The PG's answer arrives (lookup or webhook): approved → active, on schedule.
    let s = s.charge_succeeded(&a.charge_id, day_later).unwrap().subscription;
    assert_eq!(s.state, SubscriptionState::Active);
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 3, 31));
}

#[test]
fn results_for_another_attempt_are_rejected() {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(due).unwrap();
    let stale = ChargeId::new(s.id.clone(), 0, 1).unwrap();
    assert!(matches!(s.charge_succeeded(&stale, due), Err(TransitionError::WrongCharge { .. })));
    let other = ChargeId::new(SubscriptionId::parse("sub_other").unwrap(), 1, 1).unwrap();
    assert!(matches!(s.charge_succeeded(&other, due), Err(TransitionError::WrongCharge { .. })));
    assert!(s.charge_succeeded(&a.charge_id, due).is_ok());
}

#[test]
fn pause_now_credits_unused_time_and_resume_continues_from_there() {
    let s = active_from(kst(2027, 1, 10, 10));
    // Paused 10 days into the period: 21 days of Jan 10 → Feb 10 are left.
    let t = s.pause(kst(2027, 1, 20, 10), PauseWhen::Now).unwrap();
    assert_eq!(t.events, [EventKind::SubscriptionPaused]);
    let s = t.subscription;
    assert_eq!(s.state, SubscriptionState::Paused);
    assert_eq!(s.next_attempt_at, None);
    assert_eq!(s.pause.as_ref().unwrap().credit, SignedDuration::from_hours(21 * 24));
    assert_eq!(s.due_action(kst(2027, 12, 1, 0)).unwrap(), DueAction::Nothing, "paused: nothing is charged");

    let t = s.resume(kst(2027, 5, 1, 10)).unwrap();
    assert_eq!(t.events, [EventKind::SubscriptionResumed]);
    let s = t.subscription;
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 5, 22), "resume + 21 days of credit");
    let s = renew_ok(&s);
    assert_eq!(s.current_period.unwrap().index, 1, "the period index continues");
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2027, 6, 22), "later periods follow the new anchor");
}

#[test]
fn pause_at_period_end_then_resume_charges_at_resume() {
    let s = active_from(kst(2027, 1, 10, 10));
    let s = s.pause(kst(2027, 1, 20, 10), PauseWhen::PeriodEnd).unwrap().subscription;
    assert_eq!(s.state, SubscriptionState::Active);
    let end = s.next_attempt_at.unwrap();
    assert_eq!(s.due_action(end).unwrap(), DueAction::PauseAtPeriodEnd);
    let s = s.pause_at_period_end_reached(end).unwrap().subscription;
    assert_eq!(s.state, SubscriptionState::Paused);
    let s = s.resume(kst(2027, 3, 5, 9)).unwrap().subscription;
    assert_eq!(s.next_attempt_at, Some(kst(2027, 3, 5, 9)), "no credit: charged when resumed");

    // Resuming before a scheduled pause takes effect just unschedules it.
    let s = active_from(kst(2027, 1, 10, 10)).pause(kst(2027, 1, 20, 10), PauseWhen::PeriodEnd).unwrap().subscription;
    let t = s.resume(kst(2027, 1, 21, 10)).unwrap();
    assert!(t.events.is_empty());
    assert!(!t.subscription.pause_at_period_end);
    assert!(matches!(t.subscription.due_action(end).unwrap(), DueAction::Charge { .. }));
}

#[test]
fn cancel_at_period_end_stops_after_the_paid_period() {
    let s = active_from(kst(2027, 1, 31, 10));
    let t = s.cancel(kst(2027, 2, 10, 0), true).unwrap();
    assert!(t.events.is_empty());
    let s = t.subscription;
    assert_eq!(s.state, SubscriptionState::Active, "still paid through Feb 28");
    let end = s.next_attempt_at.unwrap();
    assert_eq!(s.due_action(kst(2027, 2, 27, 0)).unwrap(), DueAction::Nothing);
    assert_eq!(s.due_action(end).unwrap(), DueAction::CancelAtPeriodEnd);
    assert!(s.begin_charge(end).is_err(), "nothing is charged for the next period");
    let t = s.period_end_cancel(end).unwrap();
    assert_eq!(t.events, [EventKind::SubscriptionCanceled]);
    assert_eq!(t.subscription.state, SubscriptionState::Canceled);
    assert_eq!(t.subscription.canceled_at, Some(end));
}

#[test]
fn immediate_cancel_from_every_live_state() {
    let now = kst(2027, 2, 1, 0);
    let cases = [
        fresh(Renewer::Paycycle),
        active_from(kst(2027, 1, 1, 0)),
        active_from(kst(2027, 1, 1, 0)).pause(now, PauseWhen::Now).unwrap().subscription,
    ];
    for s in cases {
        let t = s.cancel(now, false).unwrap();
        assert_eq!(t.subscription.state, SubscriptionState::Canceled);
        assert_eq!(t.events, [EventKind::SubscriptionCanceled]);
        assert_eq!(t.subscription.next_attempt_at, None);
    }
}

#[test]
fn pg_managed_subscriptions_are_never_charged_by_paycycle() {
    let s = fresh(Renewer::Pg).activate(kst(2027, 1, 31, 10)).unwrap().subscription;
    assert_eq!(s.next_attempt_at, None);
    assert_eq!(s.due_action(kst(2030, 1, 1, 0)).unwrap(), DueAction::Nothing);
    assert_eq!(s.begin_charge(kst(2030, 1, 1, 0)).unwrap_err(), TransitionError::RenewedByPg);
    let t = s.renewed_by_pg().unwrap();
    assert_eq!(t.events, [EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed]);
    assert_eq!(kst_day(t.subscription.current_period.unwrap().start), (2027, 2, 28));
    assert_eq!(active_from(kst(2027, 1, 1, 0)).renewed_by_pg().unwrap_err(), TransitionError::RenewedByPaycycle);
    // A failed PG renewal: past due (once), and the PG's successful retry makes it active again.
    let failed = t.subscription.renewal_failed_at_pg().unwrap();
    assert_eq!(failed.subscription.state, SubscriptionState::PastDue);
    assert_eq!(failed.events, [EventKind::PaymentFailed, EventKind::SubscriptionPastDue]);
    assert!(failed.subscription.renewal_failed_at_pg().unwrap().events.is_empty());
    let recovered = failed.subscription.renewed_by_pg().unwrap().subscription;
    assert_eq!(recovered.state, SubscriptionState::Active);
    assert_eq!(recovered.current_period.unwrap().index, 2);
    assert_eq!(active_from(kst(2027, 1, 1, 0)).renewal_failed_at_pg().unwrap_err(), TransitionError::RenewedByPaycycle);
}

/// A renewal the PG charged is recorded on a paused PG-managed subscription too (a pause overtook
/// its webhook): the period is paid, it stays paused, and the whole new period is credited on
/// resume.
#[test]
fn a_pg_renewal_of_a_paused_subscription_extends_the_paid_period_and_its_credit() {
    let s = fresh(Renewer::Pg).activate(kst(2027, 1, 31, 10)).unwrap().subscription;
    let paused = s.pause(kst(2027, 2, 27, 10), PauseWhen::Now).unwrap().subscription;
    let credit = paused.pause.as_ref().unwrap().credit;
    let t = paused.renewed_by_pg().unwrap();
    assert_eq!(t.events, [EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed]);
    assert_eq!(t.subscription.state, SubscriptionState::Paused);
    let period = t.subscription.current_period.unwrap();
    assert_eq!(period.index, 1);
    let more = t.subscription.pause.as_ref().unwrap().credit;
    assert_eq!(more, period.end.duration_since(kst(2027, 2, 27, 10)), "the new period's time is credited");
    assert!(more > credit);
}

#[test]
fn illegal_transitions_are_typed_errors() {
    let canceled = active_from(kst(2027, 1, 1, 0)).cancel(kst(2027, 1, 2, 0), false).unwrap().subscription;
    let now = kst(2027, 3, 1, 0);
    let c = ChargeId::new(canceled.id.clone(), 1, 1).unwrap();
    let errors = [
        canceled.activate(now).unwrap_err(),
        canceled.cancel(now, false).unwrap_err(),
        canceled.pause(now, PauseWhen::Now).unwrap_err(),
        canceled.resume(now).unwrap_err(),
        canceled.charge_succeeded(&c, now).unwrap_err(),
        canceled.begin_charge(now).unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, TransitionError::Illegal { from: SubscriptionState::Canceled, .. }), "{e}");
    }
    let active = active_from(kst(2027, 1, 1, 0));
    assert!(matches!(active.resume(now), Err(TransitionError::Illegal { .. })));
    assert!(matches!(active.activate(now), Err(TransitionError::Illegal { .. })));
    assert!(matches!(active.require_review(), Err(TransitionError::Illegal { .. })));
    assert!(matches!(active.period_end_cancel(now), Err(TransitionError::Illegal { .. })));
    let msg = canceled.pause(now, PauseWhen::Now).unwrap_err().to_string();
    assert_eq!(msg, "cannot pause a subscription that is canceled");
}

#[test]
fn weekly_plans_and_serialization() {
    let mut p = plan();
    p.interval = Interval::new(IntervalUnit::Week, 1).unwrap();
    let s = Subscription::incomplete(SubscriptionId::parse("sub_w").unwrap(), p, Renewer::Paycycle)
        .activate(kst(2027, 12, 28, 9))
        .unwrap()
        .subscription;
    assert_eq!(kst_day(s.next_attempt_at.unwrap()), (2028, 1, 4));
    let json = serde_json::to_string(&s).unwrap();
    let back: Subscription = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert!(json.contains("\"state\":\"active\""));
}

// ---- property tests: random lives of a subscription ----

#[derive(Debug, Clone)]
enum Input {
    Activate,
    Expire,
    Tick { hours: u16 },
    Approve,
    Decline { hard: bool },
    Unknown,
    Review,
    Pause { now: bool },
    Resume,
    Cancel { at_period_end: bool },
    PgRenewal,
    PgRenewalFailed,
    ChangePlan { amount: i64, yearly: bool },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::Activate),
        Just(Input::Expire),
        (0u16..2000).prop_map(|hours| Input::Tick { hours }),
        Just(Input::Approve),
        any::<bool>().prop_map(|hard| Input::Decline { hard }),
        Just(Input::Unknown),
        Just(Input::Review),
        any::<bool>().prop_map(|now| Input::Pause { now }),
        Just(Input::Resume),
        any::<bool>().prop_map(|at_period_end| Input::Cancel { at_period_end }),
        Just(Input::PgRenewalFailed),
        (100i64..100_000, any::<bool>()).prop_map(|(amount, yearly)| Input::ChangePlan { amount, yearly }),
        Just(Input::PgRenewal),
    ]
}

/// One step: returns the transition's result (or None when the input does not apply).
fn step(
    s: &Subscription,
    input: &Input,
    now: &mut Timestamp,
    in_flight: &mut Option<ChargeId>,
) -> Option<Result<Transition>> {
    let policy = DunningPolicy::default();
    Some(match input {
        Input::Activate => s.activate(*now),
        Input::Expire => s.expire(*now),
        Input::Tick { hours } => {
            *now = now.checked_add(SignedDuration::from_hours(i64::from(*hours))).unwrap();
            match s.due_action(*now).unwrap() {
                DueAction::Charge { .. } => match s.begin_charge(*now) {
                    Ok((next, attempt)) => {
                        *in_flight = Some(attempt.charge_id);
                        return Some(Ok(Transition { subscription: next, events: vec![] }));
                    }
                    Err(e) => Err(e),
                },
                DueAction::CancelAtPeriodEnd => s.period_end_cancel(*now),
                DueAction::PauseAtPeriodEnd => s.pause_at_period_end_reached(*now),
                DueAction::ResolveUnknown { .. } | DueAction::Nothing => return None,
            }
        }
        Input::Approve => s.charge_succeeded(in_flight.as_ref()?, *now),
        Input::Decline { hard } => s.charge_declined(in_flight.as_ref()?, *hard, *now, &policy),
        Input::Unknown => s.charge_unknown(in_flight.as_ref()?, *now, SignedDuration::from_mins(5)),
        Input::Review => s.require_review(),
        Input::Pause { now: true } => s.pause(*now, PauseWhen::Now),
        Input::Pause { now: false } => s.pause(*now, PauseWhen::PeriodEnd),
        Input::Resume => s.resume(*now),
        Input::Cancel { at_period_end } => s.cancel(*now, *at_period_end),
        Input::PgRenewal => s.renewed_by_pg(),
        Input::PgRenewalFailed => s.renewal_failed_at_pg(),
        Input::ChangePlan { amount, yearly } => s.change_plan(Plan {
            name: "Changed".into(),
            amount: Krw::new(*amount).unwrap(),
            interval: if *yearly { Interval::new(IntervalUnit::Year, 1).unwrap() } else { Interval::monthly() },
        }),
    })
}

fn check_invariants(s: &Subscription) -> std::result::Result<(), TestCaseError> {
    use SubscriptionState::*;
    let renew_looks = s.next_attempt_at.is_some();
    match s.state {
        Active => prop_assert_eq!(
            renew_looks,
            s.renewer == Renewer::Paycycle || s.cancel_at_period_end || s.pause_at_period_end
        ),
        PastDue => prop_assert!(renew_looks || s.renewer == Renewer::Pg),
        Incomplete | Unpaid | Canceled | Paused | NeedsReview => {
            prop_assert!(!renew_looks, "{:?} with next attempt", s.state)
        }
    }
    prop_assert_eq!(s.state == Canceled, s.canceled_at.is_some());
    prop_assert_eq!(s.state == Paused, s.pause.is_some());
    if s.state == NeedsReview {
        prop_assert!(s.collection.as_ref().and_then(|c| c.unknown_since).is_some());
    }
    if let (Some(c), Some(p)) = (&s.collection, &s.current_period) {
        prop_assert_eq!(c.period, p.index + 1, "collecting the period after the paid one");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens, every step is a legal edge, invariants hold, paid periods only move
    /// forward, and canceled is terminal.
    #[test]
    fn random_lives_take_only_legal_steps(
        pg in any::<bool>(),
        anchor_day in 1i8..=31,
        inputs in proptest::collection::vec(input(), 1..60),
    ) {
        let renewer = if pg { Renewer::Pg } else { Renewer::Paycycle };
        let mut s = fresh(renewer);
        let mut now = kst(2027, 1, 1, 0).checked_add(SignedDuration::from_hours(24 * i64::from(anchor_day - 1))).unwrap();
        let mut in_flight = None;
        for input in &inputs {
            let before = s.clone();
            let Some(result) = step(&s, input, &mut now, &mut in_flight) else { continue };
            // A rejected input leaves the (immutable) value as it was.
            if let Ok(t) = result {
                let edge = (before.state, t.subscription.state);
                prop_assert!(LEGAL_EDGES.contains(&edge), "illegal edge {:?} on {:?}", edge, input);
                if let (Some(a), Some(b)) = (before.current_period, t.subscription.current_period) {
                    prop_assert!(b.index >= a.index);
                    if b.index > a.index { prop_assert!(b.start >= a.start); }
                }
                if before.state == SubscriptionState::Canceled {
                    // Only the outcome of a charge left unknown in review is still recorded.
                    // Either that outcome settles it, or (sent back to review while still unknown)
                    // it stays held and renew stops looking.
                    prop_assert_eq!(t.subscription.state, SubscriptionState::Canceled, "canceled is terminal");
                    prop_assert!(before.collection.is_some(), "a canceled subscription changes only for its held charge");
                    let settled = t.subscription.collection.is_none();
                    let held_quietly = t.subscription.collection == before.collection && t.subscription.next_attempt_at.is_none();
                    prop_assert!(settled || held_quietly, "{:?} on a canceled subscription", input);
                }
                s = t.subscription;
                check_invariants(&s)?;
            }
        }
    }
}

#[test]
fn every_state_is_reachable() {
    let policy = DunningPolicy::new(vec![1], FinalAction::Unpaid).unwrap();
    let a = active_from(kst(2027, 1, 1, 0));
    let due = a.next_attempt_at.unwrap();
    let (collecting, attempt) = a.begin_charge(due).unwrap();
    let past_due = collecting.charge_declined(&attempt.charge_id, false, due, &policy).unwrap().subscription;
    let unpaid = collecting.charge_declined(&attempt.charge_id, true, due, &policy).unwrap().subscription;
    let review = collecting
        .charge_unknown(&attempt.charge_id, due, SignedDuration::from_mins(5))
        .unwrap()
        .subscription
        .require_review()
        .unwrap()
        .subscription;
    let paused = a.pause(due, PauseWhen::Now).unwrap().subscription;
    let canceled = a.cancel(due, false).unwrap().subscription;
    let seen: std::collections::BTreeSet<_> = [fresh(Renewer::Paycycle), a, past_due, unpaid, review, paused, canceled]
        .iter()
        .map(|s| s.state.as_str())
        .collect();
    assert_eq!(seen.len(), SubscriptionState::ALL.len());
}

#[test]
fn a_plan_change_applies_from_the_next_period_without_proration() {
    let s = active_from(kst(2027, 1, 31, 10));
    let yearly = Plan {
        name: "Pro yearly".into(),
        amount: Krw::new(99_000).unwrap(),
        interval: Interval::new(IntervalUnit::Year, 1).unwrap(),
    };
    let t = s.change_plan(yearly.clone()).unwrap();
    assert!(t.events.is_empty());
    let next = t.subscription;
    assert_eq!(next.current_period, s.current_period, "the paid period is untouched");
    assert_eq!(next.next_attempt_at, s.next_attempt_at, "charged when the paid period ends");
    let DueAction::Charge { charge_id, amount } = next.due_action(kst(2027, 3, 1, 0)).unwrap() else { panic!() };
    assert_eq!((charge_id.period(), amount), (1, yearly.amount));
    let (collecting, _) = next.begin_charge(kst(2027, 3, 1, 0)).unwrap();
    assert!(matches!(collecting.change_plan(yearly.clone()), Err(TransitionError::CollectionInProgress(_))));
    let renewed = collecting.charge_succeeded(&charge_id, kst(2027, 3, 1, 0)).unwrap().subscription;
    let p1 = renewed.current_period.unwrap();
    assert_eq!(
        (kst_day(p1.start), kst_day(p1.end)),
        ((2027, 2, 28), (2028, 2, 28)),
        "a year from the old period's end"
    );
    assert_eq!(
        fresh(Renewer::Pg).activate(kst(2027, 1, 1, 0)).unwrap().subscription.change_plan(yearly).unwrap_err(),
        TransitionError::RenewedByPg
    );
}

#[test]
fn an_unknown_outcome_blocks_cancel_and_a_pg_renewed_cancel_at_period_end_is_finished_by_renew() {
    let s = active_from(kst(2027, 1, 1, 0));
    let due = s.next_attempt_at.unwrap();
    let (collecting, attempt) = s.begin_charge(due).unwrap();
    let unknown =
        collecting.charge_unknown(&attempt.charge_id, due, SignedDuration::from_mins(5)).unwrap().subscription;
    assert!(matches!(unknown.cancel(due, false), Err(TransitionError::UnknownOutcomePending(_))));

    let pg = fresh(Renewer::Pg).activate(kst(2027, 1, 1, 0)).unwrap().subscription;
    let end = pg.paid_through().unwrap();
    let ending = pg.cancel(kst(2027, 1, 5, 0), true).unwrap().subscription;
    assert_eq!(ending.next_attempt_at, Some(end));
    assert_eq!(ending.due_action(kst(2027, 1, 20, 0)).unwrap(), DueAction::Nothing);
    assert_eq!(ending.due_action(end).unwrap(), DueAction::CancelAtPeriodEnd);
    assert_eq!(ending.period_end_cancel(end).unwrap().subscription.state, SubscriptionState::Canceled);
    assert_eq!(
        pg.change_plan(Plan { amount: Krw::new(1000).unwrap(), ..pg.plan.clone() }).unwrap_err(),
        TransitionError::RenewedByPg
    );
}

/// StepPay managed pause/resume: the PG is told first (the caller); here a PG-renewed subscription
/// pauses and resumes without paycycle ever charging it.
#[test]
fn a_pg_renewed_subscription_pauses_and_resumes_without_paycycle_charging() {
    let pg = fresh(Renewer::Pg).activate(kst(2027, 1, 1, 0)).unwrap().subscription;
    let end = pg.paid_through().unwrap();
    let paused = pg.pause(kst(2027, 1, 5, 0), PauseWhen::Now).unwrap();
    assert_eq!(paused.subscription.state, SubscriptionState::Paused);
    assert_eq!(paused.events, vec![EventKind::SubscriptionPaused]);
    let resumed = paused.subscription.resume(kst(2027, 1, 10, 0)).unwrap().subscription;
    assert_eq!((resumed.state, resumed.next_attempt_at), (SubscriptionState::Active, None), "the PG renews it");
    assert!(matches!(resumed.begin_charge(kst(2030, 1, 1, 0)), Err(TransitionError::RenewedByPg)));

    let later = pg.pause(kst(2027, 1, 5, 0), PauseWhen::PeriodEnd).unwrap().subscription;
    assert_eq!(later.next_attempt_at, Some(end), "renew pauses it when the paid period ends");
    assert_eq!(later.due_action(end).unwrap(), DueAction::PauseAtPeriodEnd);
    assert_eq!(later.pause_at_period_end_reached(end).unwrap().subscription.state, SubscriptionState::Paused);
    let kept = later.resume(kst(2027, 1, 6, 0)).unwrap().subscription;
    assert_eq!((kept.pause_at_period_end, kept.next_attempt_at), (false, None));
}

// ---- property: no two charges closer than min(period, 1 day) ----

/// One step of a subscription's life as renew and the partner drive it: a tick at a random time
/// whose charge is approved, declined or left unknown (resolved at a later tick as paid or never
/// sent), or a pause, resume or plan change in between.
#[derive(Debug, Clone)]
enum Life {
    Tick { minutes: u32, outcome: u8 },
    Pause { now: bool },
    Resume { minutes: u32 },
    Review,
}

fn life() -> impl Strategy<Value = Life> {
    prop_oneof![
        6 => (0u32..(10 * 24 * 60), 0u8..6).prop_map(|(minutes, outcome)| Life::Tick { minutes, outcome }),
        2 => (0u32..(3 * 24 * 60), 0u8..6).prop_map(|(minutes, outcome)| Life::Tick { minutes, outcome }),
        1 => any::<bool>().prop_map(|now| Life::Pause { now }),
        1 => (0u32..(20 * 24 * 60)).prop_map(|minutes| Life::Resume { minutes }),
        1 => Just(Life::Review),
    ]
}

/// The moments money moved at the PG over one random life (approved charges, at their send time).
fn charges_over(unit: IntervalUnit, lives: &[Life]) -> Vec<Timestamp> {
    let policy = DunningPolicy::default();
    let plan = Plan { name: "P".into(), amount: Krw::new(1_000).unwrap(), interval: Interval::new(unit, 1).unwrap() };
    let mut now = kst(2027, 1, 31, 10);
    let mut s = Subscription::incomplete(SubscriptionId::parse("sub_life").unwrap(), plan, Renewer::Paycycle)
        .activate(now)
        .unwrap()
        .subscription;
    let mut charged = vec![now];
    // The send time of a charge whose outcome is unknown.
    let mut unknown_sent: Option<Timestamp> = None;
    let after = |t: Timestamp, m: u32| t.checked_add(SignedDuration::from_mins(i64::from(m))).unwrap();
    for l in lives {
        match l {
            Life::Tick { minutes, outcome } => {
                now = after(now, *minutes);
                let next = match s.due_action(now).unwrap() {
                    DueAction::Charge { .. } => {
                        let (collecting, a) = s.begin_charge(now).unwrap();
                        match outcome {
                            0..=2 => {
                                charged.push(now);
                                collecting.charge_succeeded(&a.charge_id, now)
                            }
                            3 | 4 => collecting.charge_declined(&a.charge_id, *outcome == 4, now, &policy),
                            _ => {
                                unknown_sent = Some(now);
                                collecting.charge_unknown(&a.charge_id, now, SignedDuration::from_mins(5))
                            }
                        }
                    }
                    DueAction::ResolveUnknown { charge_id, .. } => match outcome {
                        // The lookup finds it paid: the money moved when it was sent.
                        0..=2 => {
                            charged.push(unknown_sent.take().unwrap());
                            s.charge_succeeded(&charge_id, now)
                        }
                        _ => s.charge_unknown(&charge_id, now, SignedDuration::from_mins(5)),
                    },
                    DueAction::CancelAtPeriodEnd => s.period_end_cancel(now),
                    DueAction::PauseAtPeriodEnd => s.pause_at_period_end_reached(now),
                    DueAction::Nothing => continue,
                };
                s = next.unwrap().subscription;
            }
            Life::Pause { now: at_once } => {
                let when = if *at_once { PauseWhen::Now } else { PauseWhen::PeriodEnd };
                if let Ok(t) = s.pause(now, when) {
                    s = t.subscription;
                }
            }
            Life::Resume { minutes } => {
                now = after(now, *minutes);
                if let Ok(t) = s.resume(now) {
                    s = t.subscription;
                }
            }
            Life::Review => {
                if s.unknown_overdue(now, SignedDuration::from_hours(24)) && s.state != SubscriptionState::NeedsReview {
                    s = s.require_review().unwrap().subscription;
                }
            }
        }
    }
    charged
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Late ticks, dunning recoveries, late resolutions and resumes never bring two charges of
    /// one subscription closer than min(period, 1 day) (every interval is at least a day).
    #[test]
    fn never_two_charges_closer_than_min_period_or_one_day(
        unit in prop_oneof![Just(IntervalUnit::Day), Just(IntervalUnit::Week), Just(IntervalUnit::Month)],
        lives in proptest::collection::vec(life(), 1..80),
    ) {
        let charged = charges_over(unit, &lives);
        for w in charged.windows(2) {
            let gap = w[1].duration_since(w[0]);
            prop_assert!(gap >= MIN_CHARGE_GAP, "charges at {} and {} are {:?} apart ({:?})", w[0], w[1], gap, unit);
        }
    }
}

#[test]
fn a_daily_plan_recovering_on_the_seven_day_retry_is_not_charged_back_to_back() {
    let policy = DunningPolicy::default();
    let plan = Plan {
        name: "D".into(),
        amount: Krw::new(1_000).unwrap(),
        interval: Interval::new(IntervalUnit::Day, 1).unwrap(),
    };
    let start = kst(2027, 1, 1, 10);
    let mut s = Subscription::incomplete(SubscriptionId::parse("sub_daily").unwrap(), plan, Renewer::Paycycle)
        .activate(start)
        .unwrap()
        .subscription;
    // Declined on the due day and on every retry until the +7-day one, which succeeds.
    loop {
        let now = s.next_attempt_at.unwrap();
        let (c, a) = s.begin_charge(now).unwrap();
        if a.charge_id.attempt() == 5 {
            s = c.charge_succeeded(&a.charge_id, now).unwrap().subscription;
            break;
        }
        s = c.charge_declined(&a.charge_id, false, now, &policy).unwrap().subscription;
    }
    let recovered = kst(2027, 1, 9, 10);
    assert_eq!(s.next_attempt_at, Some(recovered.checked_add(SignedDuration::from_hours(24)).unwrap()));
    // The next ticks (every 5 minutes for a day) charge nothing.
    let mut t = recovered;
    while t < s.next_attempt_at.unwrap() {
        assert_eq!(s.due_action(t).unwrap(), DueAction::Nothing, "{t}");
        t = t.checked_add(SignedDuration::from_mins(5)).unwrap();
    }
}

#[test]
fn needs_review_can_be_canceled_and_a_later_hint_still_settles_its_charge() {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(due).unwrap();
    let s = s.charge_unknown(&a.charge_id, due, SignedDuration::from_mins(5)).unwrap().subscription;
    let review = s.require_review().unwrap().subscription;
    // In review renew has stopped: a cancel is allowed, and the unknown charge stays on record.
    let canceled = review.cancel(kst(2027, 3, 5, 0), false).unwrap().subscription;
    assert_eq!(canceled.state, SubscriptionState::Canceled);
    assert_eq!(canceled.next_charge_id(), Some(a.charge_id.clone()));
    // A PG hint wakes renew to look it up; the payment is recorded, the subscription stays canceled.
    let woken = canceled.hint_arrived().unwrap().subscription;
    assert_eq!(
        woken.due_action(kst(2027, 3, 6, 0)).unwrap(),
        DueAction::ResolveUnknown { charge_id: a.charge_id.clone(), since: due }
    );
    let t = woken.charge_succeeded(&a.charge_id, kst(2027, 3, 6, 0)).unwrap();
    assert_eq!((t.subscription.state, t.subscription.next_attempt_at), (SubscriptionState::Canceled, None));
    assert_eq!(t.events, [EventKind::PaymentSucceeded]);
    // In review, a hint resolves it back to active.
    let woken = review.hint_arrived().unwrap().subscription;
    let t = woken.charge_succeeded(&a.charge_id, kst(2027, 3, 6, 0)).unwrap();
    assert_eq!(t.subscription.state, SubscriptionState::Active);
}

/// A subscription whose first renewal went unknown and then to review.
fn in_review() -> (Subscription, ChargeId, Timestamp) {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(due).unwrap();
    let s = s.charge_unknown(&a.charge_id, due, SignedDuration::from_mins(5)).unwrap().subscription;
    (s.require_review().unwrap().subscription, a.charge_id, due)
}

#[test]
fn only_a_charge_in_review_waits_for_a_person_and_only_until_a_hint_wakes_renew() {
    let (review, charge, due) = in_review();
    assert_eq!(review.awaiting_review(), Some(due));
    assert_eq!(review.hint_arrived().unwrap().subscription.awaiting_review(), None, "renew looks first");
    let canceled = review.cancel(kst(2027, 3, 5, 0), false).unwrap().subscription;
    assert_eq!(canceled.awaiting_review(), Some(due), "canceled in review, the charge still needs a person");
    let paid = review.review_paid(&charge, kst(2027, 3, 5, 0), false).unwrap().subscription;
    assert_eq!(paid.awaiting_review(), None);
    assert_eq!(active_from(kst(2027, 1, 31, 10)).awaiting_review(), None);
    let other = ChargeId::new(charge.subscription().clone(), charge.period(), charge.attempt() + 1).unwrap();
    assert!(matches!(review.review_paid(&other, due, false), Err(TransitionError::WrongCharge { .. })));
    let active = active_from(kst(2027, 1, 31, 10));
    assert!(matches!(active.review_paid(&charge, due, false), Err(TransitionError::Illegal { .. })));
}

#[test]
fn a_charge_resolved_paid_renews_and_can_then_be_canceled() {
    let (review, charge, _) = in_review();
    let at = kst(2027, 3, 2, 0);
    let t = review.review_paid(&charge, at, false).unwrap();
    assert_eq!(t.subscription.state, SubscriptionState::Active);
    assert_eq!(t.subscription.current_period.unwrap().index, 1);
    assert_eq!(t.events, [EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed]);
    let t = review.review_paid(&charge, at, true).unwrap();
    assert_eq!((t.subscription.state, t.subscription.collection.clone()), (SubscriptionState::Canceled, None));
    assert_eq!(
        t.events,
        [EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed, EventKind::SubscriptionCanceled]
    );
}

#[test]
fn a_charge_resolved_not_paid_is_sent_again_under_its_own_id_or_canceled() {
    let (review, charge, _) = in_review();
    let at = kst(2027, 3, 2, 0);
    let policy = DunningPolicy::default();
    let retry = review.review_not_paid(&charge, ReviewNext::Retry, at, &policy).unwrap();
    assert_eq!(retry.subscription.state, SubscriptionState::PastDue);
    assert_eq!(retry.subscription.next_attempt_at, Some(at));
    assert_eq!(
        retry.subscription.next_charge_id(),
        Some(charge.clone()),
        "the same charge id: the PG refuses a repeat"
    );
    assert_eq!(
        retry.subscription.due_action(at).unwrap(),
        DueAction::Charge { charge_id: charge.clone(), amount: plan().amount }
    );
    assert_eq!(retry.events, [EventKind::PaymentFailed, EventKind::SubscriptionPastDue]);
    let same_day = kst(2027, 2, 28, 12);
    let dunned = review.review_not_paid(&charge, ReviewNext::PastDue, same_day, &policy).unwrap();
    assert_eq!(dunned.subscription.state, SubscriptionState::PastDue);
    assert_eq!(
        dunned.subscription.next_attempt_at,
        Some(kst(2027, 3, 1, 10)),
        "dunning's own schedule: a day after due"
    );
    assert_eq!(dunned.subscription.next_charge_id(), Some(charge.clone()));
    assert_eq!(dunned.subscription.collection.as_ref().unwrap().unknown_since, None);
    let exhausted = DunningPolicy::new(vec![], FinalAction::Unpaid).unwrap();
    let gone = review.review_not_paid(&charge, ReviewNext::PastDue, at, &exhausted).unwrap();
    assert_eq!((gone.subscription.state, gone.subscription.next_attempt_at), (SubscriptionState::Unpaid, None));
    let canceled = review.review_not_paid(&charge, ReviewNext::Cancel, at, &policy).unwrap();
    assert_eq!(canceled.subscription.state, SubscriptionState::Canceled);
    assert_eq!(canceled.events, [EventKind::PaymentFailed, EventKind::SubscriptionCanceled]);
    // Canceled in review: it stays canceled, whatever follows was asked.
    let was = review.cancel(at, false).unwrap().subscription;
    let t = was.review_not_paid(&charge, ReviewNext::Retry, at, &policy).unwrap();
    assert_eq!(
        (t.subscription.state, t.subscription.collection, t.subscription.next_attempt_at),
        (SubscriptionState::Canceled, None, None)
    );
    for t in [retry, dunned, gone, canceled] {
        assert!(LEGAL_EDGES.contains(&(review.state, t.subscription.state)));
    }
}

#[test]
fn a_card_change_in_dunning_makes_the_next_attempt_due_at_once_and_changes_nothing_else() {
    let policy = DunningPolicy::default();
    let s = active_from(kst(2027, 1, 31, 10));
    // Active: nothing moves, one event.
    let t = s.payment_method_changed(kst(2027, 2, 10, 9)).unwrap();
    assert_eq!(t.events, [EventKind::SubscriptionPaymentMethodUpdated]);
    assert_eq!(t.subscription, s);

    let due = s.next_attempt_at.unwrap();
    let (s, a1) = s.begin_charge(due).unwrap();
    let s = s.charge_declined(&a1.charge_id, false, due, &policy).unwrap().subscription;
    let retry_at = s.next_attempt_at.unwrap();
    let now = due.checked_add(SignedDuration::from_hours(2)).unwrap();
    assert!(retry_at > now);
    let t = s.payment_method_changed(now).unwrap();
    let changed = t.subscription;
    assert_eq!(changed.next_attempt_at, Some(now), "the retry is due at once");
    assert_eq!((changed.state, &changed.collection), (SubscriptionState::PastDue, &s.collection));
    // The attempt renew sends is the one next in line: a2, on the new card, once.
    assert_eq!(
        changed.due_action(now).unwrap(),
        DueAction::Charge { charge_id: ChargeId::new(s.id.clone(), 1, 2).unwrap(), amount: s.plan.amount }
    );
}

#[test]
fn a_card_change_waits_for_a_charge_whose_outcome_is_unknown() {
    let s = active_from(kst(2027, 1, 31, 10));
    let due = s.next_attempt_at.unwrap();
    let (s, a) = s.begin_charge(due).unwrap();
    let s = s.charge_unknown(&a.charge_id, due, SignedDuration::from_mins(5)).unwrap().subscription;
    let now = due.checked_add(SignedDuration::from_mins(1)).unwrap();
    // Renew looks the unknown charge up under the key it was sent with; a new key could re-send
    // its charge id on another card.
    assert!(matches!(s.payment_method_changed(now), Err(TransitionError::UnknownOutcomePending(_))));
    for state in [SubscriptionState::Unpaid, SubscriptionState::Canceled, SubscriptionState::NeedsReview] {
        let other = Subscription { state, ..s.clone() };
        assert!(matches!(other.payment_method_changed(now), Err(TransitionError::Illegal { .. })), "{state}");
    }
}

/// Found by `random_lives_take_only_legal_steps`: StepPay renews a managed subscription with a
/// pause at period end (twice), and renew woke at the old period's end, paused it with the paid
/// months uncredited, and a resume then moved the paid period backwards. The wake-up follows the
/// period the PG's renewal paid.
#[test]
fn a_pg_renewal_moves_a_period_end_pause_or_cancel_to_the_end_of_the_period_it_paid() {
    let s = fresh(Renewer::Pg).activate(kst(2027, 1, 1, 0)).unwrap().subscription;
    for pause in [true, false] {
        let waiting = if pause {
            s.pause(kst(2027, 1, 2, 0), PauseWhen::PeriodEnd).unwrap().subscription
        } else {
            s.cancel(kst(2027, 1, 2, 0), true).unwrap().subscription
        };
        let once = waiting.renewed_by_pg().unwrap().subscription;
        let twice = once.renewed_by_pg().unwrap().subscription;
        assert_eq!(twice.next_attempt_at, Some(twice.current_period.unwrap().end), "pause: {pause}");
        assert_eq!(kst_day(twice.next_attempt_at.unwrap()), (2027, 4, 1));
        // Nothing is due before the paid time ends.
        assert_eq!(twice.due_action(kst(2027, 2, 1, 0)).unwrap(), DueAction::Nothing);
    }
}
