//! The chaos suite's fixed set for `make test`: seeded scenarios against moto (the real SDK),
//! each reconciled with the PG sandbox's ledger; and proof that the reconciliation fails when a
//! promise is broken. `make chaos` runs ten thousand of them against Dynoxide.

use paycycle_chaos::{Tally, Tamper, World, run, run_tampered};
use paycycle_testkit::MotoServer;

const SEEDS: std::ops::Range<u64> = 1..25;

async fn world(moto: &MotoServer) -> World {
    World::new(moto.endpoint(), None).await.expect("world")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_four_seeded_scenarios_reconcile_with_the_pg_ledger() {
    let moto = MotoServer::shared_or_start().expect("moto");
    let world = std::sync::Arc::new(world(&moto).await);
    let mut total = Tally::default();
    let mut failures = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    for seed in SEEDS {
        let world = world.clone();
        running.spawn(async move { run(&world, seed).await });
        if running.len() == 4
            && let Some(r) = running.join_next().await
        {
            match r.expect("scenario task") {
                Ok(t) => total.add(&t),
                Err(f) => failures.push(f.to_string()),
            }
        }
    }
    while let Some(r) = running.join_next().await {
        match r.expect("scenario task") {
            Ok(t) => total.add(&t),
            Err(f) => failures.push(f.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(total.scenarios, SEEDS.end - SEEDS.start);
    // The set exercises what it claims to: charges, crashes, overlapping ticks, refunds, faults.
    assert!(total.pg_charges > 20, "{total:?}");
    assert!(total.crashes > 3 && total.overlapping_ticks > 3, "{total:?}");
    assert!(total.refund_requests > 5 && total.actions > 5 && total.faults.len() > 4, "{total:?}");
    assert!(total.raced_actions > 0, "some lifecycle calls race a tick: {total:?}");
    assert!(total.raced_refund_cancels > 0, "some refunds with cancel_subscription race a tick: {total:?}");
    assert!(total.skewed_ticks > 0 && total.late_ticks > 0, "ticks at different times overlap: {total:?}");
    assert!(total.near_wall_clock > 0, "some scenarios bill near the wall clock: {total:?}");
    assert!(total.checkouts > 0 && total.tampered_verifies > 0, "browsers tamper with verify: {total:?}");
    // Issue 25: ticks through the fan-out, with messages received twice at once and hand-overs.
    assert!(total.fanned_out_ticks > 3 && total.shard_walks > total.fanned_out_ticks, "{total:?}");
    assert!(total.redelivered_messages > 0 && total.twice_dispatched > 0, "{total:?}");
    assert_eq!(total.pg_charges, total.payments + total.flagged_for_review);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reconciliation_catches_double_charges_and_over_refunds() {
    let moto = MotoServer::shared_or_start().expect("moto");
    let world = world(&moto).await;
    for (tamper, expected) in [
        (Tamper::DoubleCharge, "charge"),
        (Tamper::OverRefund, "over-refund"),
        (Tamper::UnrecordedRefund, "the PG refunded"),
    ] {
        // The first seed whose scenario has a charge to tamper with.
        let mut caught = None;
        for seed in 100..140 {
            match run_tampered(&world, seed, Some(tamper)).await {
                Ok(t) if !t.tampered => continue,
                Ok(t) => panic!("{tamper:?} on seed {seed} went unnoticed: {t:?}"),
                Err(f) => {
                    caught = Some(f);
                    break;
                }
            }
        }
        let f = caught.unwrap_or_else(|| panic!("no seed in 100..140 charged anything"));
        assert!(f.message.contains(expected), "{tamper:?}: {f}");
    }
}
