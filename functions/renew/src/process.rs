//! One due subscription: claim, act, commit. Every write is conditional; the outcome of a charge
//! and everything it changes are one transaction.

use jiff::Timestamp;
use paycycle::domain::attempt::{Attempt, AttemptStatus, AttemptStatusKind, ChargeId, SubscriptionId};
use paycycle::domain::subscription::{DueAction, SubscriptionState, Transition};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::pg::{ChargeRequest, Charged, Lookup, Payer, PaymentDetails, PaymentState, PgError};
use paycycle::store::StoreError;
use paycycle::store::payments::PaymentRecord;
use paycycle::store::subscriptions::SubscriptionRecord;

use crate::Deps;

/// What happened to one due subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not due any more, or claimed by another tick.
    Skipped,
    Charged,
    Declined,
    /// Sent, outcome unknown: looked up on a later tick.
    Unknown,
    /// An unknown outcome was resolved (paid or not) by lookup.
    Resolved,
    /// The charge never reached the PG: sent again on a later tick.
    NotSent,
    NeedsReview,
    Canceled,
    Paused,
    /// The test hook stopped processing here.
    Crashed,
    Error,
}

/// Where the test hook can stop a worker as if its Lambda died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    AfterClaim,
    AfterAttemptWrite,
    AfterPgCall,
    BeforeCommit,
    /// Not a crash: the worker stalls this long after its claim (a frozen or throttled Lambda),
    /// then carries on — by then its lease may have expired.
    StallAfterClaim {
        ms: u64,
    },
}

fn crashed(deps: &Deps, at: CrashPoint) -> bool {
    deps.crash_at == Some(at)
}

fn log_err(id: &SubscriptionId, what: &str, e: &dyn std::fmt::Display) -> Outcome {
    tracing::error!(subscription_id = %id, error = %e, "{what}");
    Outcome::Error
}

pub async fn renew_one(deps: &Deps, id: &SubscriptionId, now: Timestamp, owner: &str) -> Outcome {
    let record = match deps.store.get_subscription(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Skipped,
        Err(e) => return log_err(id, "read failed", &e),
    };
    let action = match record.subscription.due_action(now) {
        Ok(DueAction::Nothing) => return Outcome::Skipped,
        Ok(a) => a,
        Err(e) => return log_err(id, "due action failed", &e),
    };
    // The lease runs on the wall clock: `now` is billing time and may be anywhere.
    let claimed = match deps.store.claim(&record, owner, Timestamp::now(), deps.settings.lease).await {
        Ok(c) => c,
        Err(StoreError::Conflict(_)) => return Outcome::Skipped,
        Err(e) => return log_err(id, "claim failed", &e),
    };
    if crashed(deps, CrashPoint::AfterClaim) {
        return Outcome::Crashed;
    }
    if let Some(CrashPoint::StallAfterClaim { ms }) = deps.crash_at {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    match action {
        DueAction::Nothing => Outcome::Skipped,
        DueAction::CancelAtPeriodEnd => {
            let t = claimed.subscription.period_end_cancel(now);
            finish(deps, &claimed, t, now, owner, Outcome::Canceled).await
        }
        DueAction::PauseAtPeriodEnd => {
            let t = claimed.subscription.pause_at_period_end_reached(now);
            finish(deps, &claimed, t, now, owner, Outcome::Paused).await
        }
        DueAction::ResolveUnknown { charge_id, .. } => resolve(deps, &claimed, &charge_id, now, owner).await,
        DueAction::Charge { .. } => charge(deps, &claimed, now, owner).await,
    }
}

/// Commits a transition that moves no money (cancel or pause at period end).
async fn finish(
    deps: &Deps,
    claimed: &SubscriptionRecord,
    t: Result<Transition, paycycle::domain::subscription::TransitionError>,
    now: Timestamp,
    owner: &str,
    outcome: Outcome,
) -> Outcome {
    let t = match t {
        Ok(t) => t,
        Err(e) => return log_err(claimed.id(), "transition failed", &e),
    };
    let next = claimed.next(t.subscription);
    let write = SubscriptionWrite::Next { lease_owner: Some(owner) };
    match deps
        .publisher
        .commit_transition(&deps.store, &TransitionCommit::new(&next, write, &t.events, now), |_| {})
        .await
    {
        Ok(_) => outcome,
        Err(e) => log_err(claimed.id(), "outcome commit failed", &e),
    }
}

fn charge_request(claimed: &SubscriptionRecord, attempt: &Attempt) -> Option<ChargeRequest> {
    Some(ChargeRequest {
        billing_key: claimed.billing_key.clone()?,
        charge_id: attempt.charge_id.clone(),
        amount: attempt.amount,
        goods: claimed.subscription.plan.name.clone(),
        payer: Payer {
            customer_id: claimed.customer.id.clone(),
            name: claimed.customer.name.clone(),
            phone: claimed.customer.phone.clone(),
            email: claimed.customer.email.clone(),
            payer_no: None,
        },
    })
}

/// A first try or a dunning retry: attempt record first, then the PG, then one transaction.
async fn charge(deps: &Deps, claimed: &SubscriptionRecord, now: Timestamp, owner: &str) -> Outcome {
    let (collecting, attempt) = match claimed.subscription.begin_charge(now) {
        Ok((c, a)) => (c, a.sent_at(send_time(deps, now))),
        Err(e) => return log_err(claimed.id(), "begin charge failed", &e),
    };
    // Only while this worker still holds the claim: a lease that ran out may have let a cancel
    // (or another worker) in, and nothing may be charged on a claim no longer held.
    let mut tx = deps.store.tx();
    tx.check_claim_held(claimed, Timestamp::now());
    tx.put_attempt_new(&attempt);
    match deps.store.commit(tx).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists(_)) => {
            // An earlier worker wrote this attempt and died: it may have charged. Look it up.
            return resolve(deps, claimed, &attempt.charge_id, now, owner).await;
        }
        Err(StoreError::Conflict(_)) => {
            tracing::warn!(subscription_id = %claimed.id(), "claim lost before the attempt write; nothing charged");
            return Outcome::Skipped;
        }
        Err(e) => return log_err(claimed.id(), "attempt write failed", &e),
    }
    if crashed(deps, CrashPoint::AfterAttemptWrite) {
        return Outcome::Crashed;
    }
    let collecting_record = SubscriptionRecord { subscription: collecting, ..claimed.clone() };
    send_and_settle(deps, &collecting_record, claimed, attempt, AttemptStatusKind::Pending, now, owner).await
}

/// Sends the charge of `attempt` (stored with status `stored_status`) and commits the outcome.
async fn send_and_settle(
    deps: &Deps,
    collecting: &SubscriptionRecord,
    claimed: &SubscriptionRecord,
    attempt: Attempt,
    stored_status: AttemptStatusKind,
    now: Timestamp,
    owner: &str,
) -> Outcome {
    let Some(req) = charge_request(claimed, &attempt) else {
        tracing::error!(subscription_id = %claimed.id(), "no billing key: needs review");
        return settle(
            deps,
            collecting,
            claimed,
            &attempt,
            stored_status,
            Err(PgError::Invalid("no billing key".into())),
            now,
            owner,
        )
        .await;
    };
    let result = match deps.pgs.adapter(claimed.pg).charge(&req).await {
        Err(PgError::AlreadyProcessed { .. }) => already_sent(deps, claimed, &attempt).await,
        other => other,
    };
    if crashed(deps, CrashPoint::AfterPgCall) {
        return Outcome::Crashed;
    }
    settle(deps, collecting, claimed, &attempt, stored_status, result, now, owner).await
}

/// Commits one charge outcome: attempt + payment + subscription + events.
#[allow(clippy::too_many_arguments)]
async fn settle(
    deps: &Deps,
    collecting: &SubscriptionRecord,
    claimed: &SubscriptionRecord,
    attempt: &Attempt,
    stored_status: AttemptStatusKind,
    result: Result<Approved, PgError>,
    now: Timestamp,
    owner: &str,
) -> Outcome {
    if crashed(deps, CrashPoint::BeforeCommit) {
        return Outcome::Crashed;
    }
    let sub = &collecting.subscription;
    let (attempt_status, transition, payment, outcome) = match result {
        Ok((charged, details)) => {
            let payment = payment_for(claimed, attempt, &charged).with_details(details);
            (
                AttemptStatus::Approved {
                    pg_payment_id: charged.pg_payment_id.clone(),
                    approved_at: charged.approved_at,
                },
                sub.charge_succeeded(&attempt.charge_id, now),
                Some(payment),
                if stored_status == AttemptStatusKind::Pending { Outcome::Charged } else { Outcome::Resolved },
            )
        }
        Err(PgError::Declined { hard, code, message }) => (
            AttemptStatus::Declined { code, message, hard },
            sub.charge_declined(&attempt.charge_id, hard, now, &deps.settings.dunning),
            None,
            Outcome::Declined,
        ),
        Err(PgError::Transient { reason }) if stored_status == AttemptStatusKind::Pending => {
            return not_sent(deps, collecting, claimed, attempt, &reason, now, owner).await;
        }
        Err(PgError::Invalid(reason)) => (
            // Our request cannot succeed as it is (e.g. below the PG's minimum): stop, loudly.
            AttemptStatus::Declined { code: "invalid_request".into(), message: reason, hard: true },
            sub.charge_declined(&attempt.charge_id, true, now, &deps.settings.dunning),
            None,
            Outcome::Declined,
        ),
        Err(e) => {
            // Unknown, unrecognized, already processed, or not sent (transient/config): the
            // outcome is looked up on a later tick before anything is charged again.
            tracing::warn!(subscription_id = %claimed.id(), charge_id = %attempt.charge_id, error = %e, "charge outcome unknown");
            if stored_status == AttemptStatusKind::Unknown {
                return still_unknown(deps, claimed, now, owner).await;
            }
            (
                AttemptStatus::Unknown { since: now },
                sub.charge_unknown(&attempt.charge_id, now, deps.settings.recheck_after),
                None,
                Outcome::Unknown,
            )
        }
    };
    let (transition, next_attempt) = match (transition, attempt.resolve(attempt_status.clone())) {
        (Ok(t), Ok(a)) => (t, a),
        (Err(e), _) => return untransitioned(deps, claimed, attempt, attempt_status, payment, now, outcome, &e).await,
        (_, Err(e)) => return untransitioned(deps, claimed, attempt, attempt_status, payment, now, outcome, &e).await,
    };
    let next = claimed.next(transition.subscription);
    let write = SubscriptionWrite::Next { lease_owner: Some(owner) };
    let mut change = TransitionCommit::new(&next, write, &transition.events, now);
    if let Some(p) = &payment {
        change = change.paid(p);
    }
    change.attempt = Some((&next_attempt, stored_status));
    let committed = deps.publisher.commit_transition(&deps.store, &change, |_| {}).await;
    match (committed, payment) {
        (Ok(_), _) => outcome,
        (Err(StoreError::Conflict(_) | StoreError::AlreadyExists(_)), Some(payment)) => {
            // The PG took the money: a lost race must not lose the payment.
            record_approved(deps, &next_attempt, &payment, now, outcome).await
        }
        (Err(e), _) => {
            // Nothing moved money here (or it is unknown and looked up again): give the lease
            // back so the next tick looks at once, with whatever changed meanwhile (e.g. a hint).
            if let Err(release) = deps.store.release_lease(claimed).await {
                tracing::warn!(subscription_id = %claimed.id(), error = %release, "lease not released");
            }
            log_err(claimed.id(), "outcome commit failed", &e)
        }
    }
}

/// An outcome that does not fit the subscription or attempt this worker read (someone settled or
/// changed them meanwhile). Nothing is written from the stale read; but if the PG approved, the
/// money moved: it is recorded against what is stored now, like a commit that lost a race, and
/// raises the needs-review alarm if it cannot be.
#[allow(clippy::too_many_arguments)]
async fn untransitioned(
    deps: &Deps,
    claimed: &SubscriptionRecord,
    attempt: &Attempt,
    status: AttemptStatus,
    payment: Option<PaymentRecord>,
    now: Timestamp,
    outcome: Outcome,
    error: &(dyn std::fmt::Display + Sync),
) -> Outcome {
    let Some(payment) = payment else { return log_err(claimed.id(), "transition failed", error) };
    tracing::warn!(subscription_id = %claimed.id(), charge_id = %attempt.charge_id, %error, "an approved charge does not fit the state read: recording it against the stored state");
    let approved = Attempt { status, ..attempt.clone() };
    record_approved(deps, &approved, &payment, now, outcome).await
}

/// How often an approved charge whose commit lost a race is recorded again before a person is
/// called.
const RECORD_TRIES: usize = 4;

/// Records an approved charge against what is stored now, after its outcome commit lost a race
/// (a webhook's hint noted on the attempt, the lease lost, the subscription changed meanwhile).
/// The payment is create-only per PG transaction, so retrying can never record it twice; the
/// subscription moves on only if it is still collecting this charge. Whatever cannot be recorded
/// raises the needs-review alarm with everything a person needs.
async fn record_approved(
    deps: &Deps,
    approved: &Attempt,
    payment: &PaymentRecord,
    now: Timestamp,
    outcome: Outcome,
) -> Outcome {
    let charge_id = &approved.charge_id;
    let id = charge_id.subscription();
    let mut last_error = String::new();
    for _ in 0..RECORD_TRIES {
        let reads = tokio::try_join!(
            deps.store.get_subscription(id),
            deps.store.get_attempt(charge_id),
            deps.store.get_payment(&payment.payment_id)
        );
        let (current, stored, recorded) = match reads {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        let attempt = stored.filter(|a| !a.status.is_final()).map(|stored| {
            let expected = stored.status.kind();
            (Attempt { status: approved.status.clone(), ..stored }, expected)
        });
        // The subscription moves on only if it is still collecting this charge. The collection
        // of a first try is written with its outcome: rebuild it if missing.
        let moved_on = current.as_ref().and_then(|current| {
            let sub = match &current.subscription.collection {
                None if current.subscription.next_charge_id().as_ref() == Some(charge_id) => {
                    current.subscription.begin_charge(now).map(|(s, _)| s).unwrap_or(current.subscription.clone())
                }
                _ => current.subscription.clone(),
            };
            let t = sub.charge_succeeded(charge_id, now).ok()?;
            Some((current.next(t.subscription), t.events))
        });
        let committed = match &moved_on {
            Some((next, kinds)) => {
                let write = SubscriptionWrite::Next { lease_owner: None };
                let mut change = TransitionCommit::new(next, write, kinds, now);
                change.payment = Some(payment);
                change.payment_is_new = recorded.is_none();
                change.attempt = attempt.as_ref().map(|(a, expected)| (a, *expected));
                deps.publisher.commit_transition(&deps.store, &change, |_| {}).await.map(|_| ())
            }
            None if attempt.is_none() && recorded.is_some() => return outcome, // recorded by someone else meanwhile
            None => {
                let mut tx = deps.store.tx();
                if let Some((a, expected)) = &attempt {
                    tx.put_attempt_if_status(a, *expected);
                }
                if recorded.is_none() {
                    tx.put_payment_new(payment);
                }
                deps.store.commit(tx).await
            }
        };
        match committed {
            Ok(()) => {
                tracing::warn!(subscription_id = %id, %charge_id, "approved charge recorded after its commit lost a race");
                return outcome;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    tracing::error!(
        alarm = "paycycle_needs_review",
        subscription_id = %id,
        %charge_id,
        pg_payment_id = %payment.pg_payment_id,
        amount = %payment.amounts.paid,
        error = %last_error,
        "the PG approved a charge that could not be recorded: needs review"
    );
    Outcome::Error
}

/// The charge never left (connection refused, Payple's partner auth refused): no money can have
/// moved, so it is neither a decline nor an unknown outcome. The pending attempt goes (its next
/// try writes it afresh and sends it), and renew comes back after `recheck_after`.
async fn not_sent(
    deps: &Deps,
    collecting: &SubscriptionRecord,
    claimed: &SubscriptionRecord,
    attempt: &Attempt,
    reason: &str,
    now: Timestamp,
    owner: &str,
) -> Outcome {
    tracing::warn!(subscription_id = %claimed.id(), charge_id = %attempt.charge_id, reason, "charge not sent; retried later");
    let t = match collecting.subscription.charge_not_sent(&attempt.charge_id, now, deps.settings.recheck_after) {
        Ok(t) => t,
        Err(e) => return log_err(claimed.id(), "transition failed", &e),
    };
    let next = claimed.next(t.subscription);
    let write = SubscriptionWrite::Next { lease_owner: Some(owner) };
    // Nothing was sent: the attempt goes, and nothing happened that an event would tell.
    let change = TransitionCommit::new(&next, write, &[], now);
    match deps.publisher.commit_transition(&deps.store, &change, |tx| _ = tx.delete_attempt_if_pending(attempt)).await {
        Ok(_) => Outcome::NotSent,
        Err(e) => log_err(claimed.id(), "outcome commit failed", &e),
    }
}

/// An approved charge with what the PG said about it for the customer (card, receipt).
type Approved = (Charged, PaymentDetails);

fn payment_for(claimed: &SubscriptionRecord, attempt: &Attempt, charged: &Charged) -> PaymentRecord {
    PaymentRecord::paid(
        claimed.pg,
        &charged.pg_payment_id,
        &claimed.customer.id,
        charged.amount,
        charged.approved_at,
        Some(claimed.id().clone()),
        Some(attempt.charge_id.clone()),
        None,
    )
    .for_partner(&claimed.partner_id)
}

/// An unknown outcome: ask the PG. Paid → recorded; not there → charged now with the same charge
/// id (the PG rejects a repeat of it); no answer → unknown again, or `needs_review` past the window.
async fn resolve(
    deps: &Deps,
    claimed: &SubscriptionRecord,
    charge_id: &ChargeId,
    now: Timestamp,
    owner: &str,
) -> Outcome {
    let attempt = match deps.store.get_attempt(charge_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return log_err(claimed.id(), "unknown attempt has no record", &"missing attempt"),
        Err(e) => return log_err(claimed.id(), "attempt read failed", &e),
    };
    if attempt.status.is_final() {
        // Settled meanwhile by a worker that claimed it after this one's lease ran out.
        tracing::warn!(subscription_id = %claimed.id(), %charge_id, status = attempt.status.name(), "attempt already settled; nothing re-sent");
        return Outcome::Skipped;
    }
    let stored_status = attempt.status.kind();
    // A subscription whose attempt was written by a worker that died is still `collecting` from
    // the domain's view only if the collection was committed; rebuild it from the attempt.
    let collecting = match &claimed.subscription.collection {
        Some(_) => claimed.clone(),
        None => match claimed.subscription.begin_charge(now) {
            Ok((s, _)) => SubscriptionRecord { subscription: s, ..claimed.clone() },
            Err(e) => return log_err(claimed.id(), "cannot rebuild the collection", &e),
        },
    };
    let looked_up = look_up(deps, claimed, &attempt).await;
    match looked_up {
        Ok((PaymentState::Paid { pg_payment_id, amount, paid_at, .. }, details)) => {
            let charged = Charged { pg_payment_id, amount, approved_at: paid_at.unwrap_or(now) };
            settle(deps, &collecting, claimed, &attempt, stored_status, Ok((charged, details)), now, owner).await
        }
        Ok((PaymentState::Refunded { pg_payment_id, amount }, details)) => {
            let charged = Charged { pg_payment_id, amount, approved_at: now };
            settle(deps, &collecting, claimed, &attempt, stored_status, Ok((charged, details)), now, owner).await
        }
        Ok((PaymentState::Failed { .. }, _)) if attempt.pg_payment_hint.is_some() && !stopped(claimed) => {
            // A verified PG webhook named this charge's payment (StepPay `payment.failed` /
            // FAILED) and the lookup by it confirms the failure: the charge reached the PG and was
            // declined there — dunning goes on; re-sending the same charge id is not a retry.
            let failed = PgError::Declined {
                hard: false,
                code: "failed_at_pg".into(),
                message: "the PG reports the payment failed".into(),
            };
            settle(deps, &collecting, claimed, &attempt, stored_status, Err(failed), now, owner).await
        }
        Err(PgError::NotFound) | Ok((PaymentState::Failed { .. }, _)) if stopped(claimed) => {
            // Woken by a hint in review (or canceled in review): a person stopped the charging, so
            // nothing is charged again here. A failure at the PG is a decline; a payment the PG
            // does not know goes back to the person.
            if let Ok((PaymentState::Failed { .. }, _)) = &looked_up {
                let failed = PgError::Declined {
                    hard: false,
                    code: "failed_at_pg".into(),
                    message: "the PG reports the payment failed".into(),
                };
                return settle(deps, &collecting, claimed, &attempt, stored_status, Err(failed), now, owner).await;
            }
            still_unknown(deps, claimed, now, owner).await
        }
        Err(PgError::NotFound) | Ok((PaymentState::Failed { .. }, _)) => {
            // Never reached the PG (or failed there): charge it now under the same id, dated
            // (and stored) as sent now, so a lost answer is looked up under the right date.
            let resent = attempt.sent_at(send_time(deps, now));
            // Written (even when the date is unchanged) only while this worker holds the claim and
            // the attempt is as it read it: a worker whose lease ran out may find it re-paid and
            // settled by another, or the subscription canceled, and must send nothing.
            let mut tx = deps.store.tx();
            tx.check_claim_held(claimed, Timestamp::now());
            tx.put_attempt_if_status(&resent, stored_status);
            match deps.store.commit(tx).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    tracing::warn!(subscription_id = %claimed.id(), %charge_id, "claim lost or attempt changed before the re-pay; nothing sent");
                    return Outcome::Skipped;
                }
                Err(e) => return log_err(claimed.id(), "attempt re-date failed", &e),
            }
            send_and_settle(deps, &collecting, claimed, resent, stored_status, now, owner).await
        }
        Ok((PaymentState::Pending, _)) | Err(_) => {
            if stored_status == AttemptStatusKind::Pending {
                // A dead worker's attempt we cannot look up (StepPay has no lookup by our id):
                // mark it unknown so the review window starts.
                let unknown = PgError::Unknown { reason: "attempt left pending by a stopped worker".into() };
                return settle(deps, &collecting, claimed, &attempt, stored_status, Err(unknown), now, owner).await;
            }
            still_unknown(deps, claimed, now, owner).await
        }
    }
}

/// Asks the PG about `attempt`: by the payment id a verified webhook named (StepPay cannot be
/// asked by our charge id), else by the charge id — at Payple under every KST date it was sent on
/// (its lookup is by OID and date, and a charge re-sent on another day may be known under the
/// earlier one). Paid anywhere wins; then anything inconclusive (pending, no answer); then a
/// failure; `NotFound` only when no date knows it.
async fn look_up(
    deps: &Deps,
    claimed: &SubscriptionRecord,
    attempt: &Attempt,
) -> Result<(PaymentState, PaymentDetails), PgError> {
    let adapter = deps.pgs.adapter(claimed.pg);
    let dates = if adapter.capabilities().lookup_by_date {
        lookup_dates(attempt)
    } else {
        vec![attempt.request_date_kst.clone()]
    };
    let mut found = Err(PgError::NotFound);
    for date in dates {
        let q = match &attempt.pg_payment_hint {
            Some(id) => Lookup::PgPayment { pg_payment_id: id.clone(), request_date_kst: Some(date) },
            None => Lookup::Charge { charge_id: attempt.charge_id.clone(), request_date_kst: date },
        };
        match adapter.lookup(&q).await {
            paid @ Ok((PaymentState::Paid { .. } | PaymentState::Refunded { .. }, _)) => return paid,
            Err(PgError::NotFound) => {}
            failed @ Ok((PaymentState::Failed { .. }, _)) => {
                if matches!(found, Err(PgError::NotFound)) {
                    found = failed;
                }
            }
            inconclusive => found = inconclusive,
        }
    }
    found
}

/// The most dates one look-up asks Payple under (each is a partner auth + a lookup): bounds the
/// worst renewal path ([`crate::WORST_PATH_PG_CALLS`]). Within the default 24 h review window a
/// charge is sent on at most two KST dates, so every date is asked; a longer window asks the
/// latest ones and the original.
pub const MAX_LOOKUP_DATES: usize = 3;

/// The dates to look `attempt` up under: the latest sends first, and the original, at most
/// [`MAX_LOOKUP_DATES`].
fn lookup_dates(attempt: &Attempt) -> Vec<String> {
    let mut dates: Vec<String> = attempt.request_dates_kst().into_iter().take(MAX_LOOKUP_DATES - 1).collect();
    match attempt.earlier_request_dates_kst.first() {
        Some(original) if !dates.contains(original) => dates.push(original.clone()),
        _ => {}
    }
    dates
}

/// The PG answered a send of `attempt` with "this charge id was already processed" (Payple
/// `SPCD0014` 이미 처리된 거래입니다, seed 003; StepPay's duplicate `partnerOrderId`): an earlier
/// send of it exists, so it is never a decline. Looked up at once; until the PG shows it, it is
/// an unknown outcome.
async fn already_sent(deps: &Deps, claimed: &SubscriptionRecord, attempt: &Attempt) -> Result<Approved, PgError> {
    match look_up(deps, claimed, attempt).await {
        Ok((PaymentState::Paid { pg_payment_id, amount, paid_at, .. }, details)) => {
            Ok((Charged { pg_payment_id, amount, approved_at: paid_at.unwrap_or_else(Timestamp::now) }, details))
        }
        Ok((PaymentState::Refunded { pg_payment_id, amount }, details)) => {
            Ok((Charged { pg_payment_id, amount, approved_at: Timestamp::now() }, details))
        }
        other => Err(PgError::Unknown {
            reason: format!(
                "the PG already processed {}, its lookup does not show it yet ({other:?})",
                attempt.charge_id
            ),
        }),
    }
}

/// When a charge request goes out, for the PG's date: the wall clock, which is the PG's. Under
/// time travel (local stack and tests) the local PG sandbox's clock follows billing time instead.
fn send_time(deps: &Deps, now: Timestamp) -> Timestamp {
    if deps.settings.allow_time_travel { now } else { Timestamp::now() }
}

/// In review, or canceled in review: renew only resolves the unknown charge, never charges.
fn stopped(claimed: &SubscriptionRecord) -> bool {
    matches!(claimed.subscription.state, SubscriptionState::NeedsReview | SubscriptionState::Canceled)
}

/// Still unknown after a lookup: look again later, or hand it to a person past the window.
async fn still_unknown(deps: &Deps, claimed: &SubscriptionRecord, now: Timestamp, owner: &str) -> Outcome {
    let sub = &claimed.subscription;
    let (transition, outcome) = if stopped(claimed) || sub.unknown_overdue(now, deps.settings.review_window) {
        tracing::error!(
            subscription_id = %claimed.id(),
            alarm = "paycycle_needs_review",
            "charge outcome still unknown after the review window: needs review"
        );
        (sub.require_review(), Outcome::NeedsReview)
    } else {
        let Some(c) = &sub.collection else { return log_err(claimed.id(), "unknown without a collection", &"state") };
        let charge_id = match ChargeId::new(claimed.id().clone(), c.period, c.attempt) {
            Ok(id) => id,
            Err(e) => return log_err(claimed.id(), "charge id", &e),
        };
        (sub.charge_unknown(&charge_id, now, deps.settings.recheck_after), Outcome::Unknown)
    };
    let t = match transition {
        Ok(t) => t,
        Err(e) => return log_err(claimed.id(), "transition failed", &e),
    };
    finish(deps, claimed, Ok(t), now, owner, outcome).await
}

#[cfg(test)]
mod tests {
    use paycycle::money::Krw;

    use super::*;

    #[test]
    fn a_charge_is_looked_up_under_its_latest_send_dates_and_the_original() {
        let at: Timestamp = "2027-02-28T01:00:00Z".parse().unwrap();
        let day = |d: i64| at.checked_add(jiff::SignedDuration::from_hours(24 * d)).unwrap();
        let id = ChargeId::new(SubscriptionId::parse("sub_a").unwrap(), 1, 1).unwrap();
        let a = Attempt::new(id, Krw::new(9_900).unwrap(), at);
        assert_eq!(lookup_dates(&a), ["20270228"]);
        assert_eq!(lookup_dates(&a.sent_at(day(1))), ["20270301", "20270228"]);
        let many = a.sent_at(day(1)).sent_at(day(2)).sent_at(day(3));
        assert_eq!(lookup_dates(&many), ["20270303", "20270302", "20270228"]);
        assert!(lookup_dates(&many).len() <= MAX_LOOKUP_DATES);
    }
}
