//! One due subscription: claim, act, commit. Every write is conditional; the outcome of a charge
//! and everything it changes are one transaction.

use jiff::{SignedDuration, Timestamp};
use paycycle::Secret;
use paycycle::domain::attempt::{Attempt, AttemptStatus, AttemptStatusKind, ChargeId, SubscriptionId};
use paycycle::domain::subscription::{DueAction, SubscriptionState, Transition};
use paycycle::events::{SubscriptionWrite, TransitionCommit};
use paycycle::pg::{ChargeRequest, Charged, Payer, PaymentDetails, PaymentState, PgError, trace};
use paycycle::store::StoreError;
use paycycle::store::payments::PaymentRecord;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle::store::vault::VaultError;

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

/// A claim this worker did not get: another worker holds the subscription, or it changed after
/// the page was read.
pub(crate) struct ClaimLost;

/// Renews `read`, one subscription of a due page (read whole with the page: no read of its own).
/// A page is read before its renewals get their turn, so a subscription that changed meanwhile
/// (a webhook, a lifecycle change) loses the claim: it is read again once and, if no other worker
/// holds it, renewed as it is now rather than left for the next tick.
pub async fn renew_one(deps: &Deps, read: &SubscriptionRecord, now: Timestamp, owner: &str) -> Outcome {
    if let Ok(outcome) = renew_as_read(deps, read, now, owner).await {
        return outcome;
    }
    let fresh = match deps.store.get_subscription(read.id()).await {
        Ok(Some(fresh)) => fresh,
        Ok(None) => return Outcome::Skipped,
        Err(e) => return log_err(read.id(), "read failed", &e),
    };
    let held = fresh.lease_until > Timestamp::now().as_second();
    if fresh.version == read.version || held {
        return Outcome::Skipped; // another worker has it (or it is not due any more)
    }
    renew_as_read(deps, &fresh, now, owner).await.unwrap_or(Outcome::Skipped)
}

/// [`renew_one`] on the record as `read`.
async fn renew_as_read(
    deps: &Deps,
    read: &SubscriptionRecord,
    now: Timestamp,
    owner: &str,
) -> Result<Outcome, ClaimLost> {
    let action = match read.subscription.due_action(now) {
        Ok(DueAction::Nothing) => return Ok(Outcome::Skipped),
        Ok(a) => a,
        Err(e) => return Ok(log_err(read.id(), "due action failed", &e)),
    };
    if read.lease_until > Timestamp::now().as_second() {
        return Ok(Outcome::Skipped); // another worker holds it (no key opened, no write tried)
    }
    if let DueAction::Charge { .. } = action {
        return charge(deps, read, now, owner).await;
    }
    let claimed = match claim(deps, read, owner).await? {
        Ok(claimed) => claimed,
        Err(outcome) => return Ok(outcome),
    };
    if let Some(stopped) = stop_after_claim(deps).await {
        return Ok(stopped);
    }
    Ok(match action {
        DueAction::Nothing | DueAction::Charge { .. } => Outcome::Skipped,
        DueAction::CancelAtPeriodEnd => {
            let t = claimed.subscription.period_end_cancel(now);
            finish(deps, &claimed, t, now, owner, Outcome::Canceled).await
        }
        DueAction::PauseAtPeriodEnd => {
            let t = claimed.subscription.pause_at_period_end_reached(now);
            finish(deps, &claimed, t, now, owner, Outcome::Paused).await
        }
        DueAction::ResolveUnknown { charge_id, .. } => resolve(deps, &claimed, &charge_id, now, owner).await,
    })
}

/// Claims `read` on its own (no attempt written with it): the claimed record, or what renew
/// reports when the claim failed for another reason than a lost race. The lease runs on the
/// wall clock: `now` is billing time and may be anywhere.
async fn claim(
    deps: &Deps,
    read: &SubscriptionRecord,
    owner: &str,
) -> Result<Result<SubscriptionRecord, Outcome>, ClaimLost> {
    match deps.store.claim(read, owner, Timestamp::now(), deps.settings.lease).await {
        Ok(c) => Ok(Ok(c)),
        Err(StoreError::Conflict(_)) => Err(ClaimLost),
        Err(e) => Ok(Err(log_err(read.id(), "claim failed", &e))),
    }
}

/// The test hooks right after a claim: a crash ends the renewal there; a stall holds it.
async fn stop_after_claim(deps: &Deps) -> Option<Outcome> {
    if crashed(deps, CrashPoint::AfterClaim) {
        return Some(Outcome::Crashed);
    }
    if let Some(CrashPoint::StallAfterClaim { ms }) = deps.crash_at {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    None
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

/// `sub`'s billing key, opened before anything is written for a charge or a re-send. A key that
/// is missing or does not open, or KMS refusing for good, is nothing the customer did: no
/// decline, no unknown outcome, nothing written (a claim held is given back unchanged by the
/// caller: the next tick tries again) and a person is alarmed. KMS not answering is only logged.
async fn open_key(deps: &Deps, sub: &SubscriptionRecord) -> Option<Secret> {
    let opened = match &sub.billing_key {
        Some(stored) => deps.vault.open(sub.id(), stored).await,
        None => Err(VaultError::DoesNotOpen(format!("{} (no billing key)", sub.id()))),
    };
    let e = match opened {
        Ok(key) => return Some(key),
        Err(e) => e,
    };
    if matches!(e, VaultError::Kms { lasting: false, .. }) {
        tracing::warn!(subscription_id = %sub.id(), error = %e, "KMS did not answer; nothing sent, the next tick tries again");
    } else {
        tracing::error!(
            subscription_id = %sub.id(),
            alarm = "paycycle_needs_review",
            error = %e,
            "the billing key cannot be opened: nothing charged until a person fixes it (the KMS key, or a card change)"
        );
    }
    None
}

/// The claim given back with the subscription unchanged: still due, so the next tick looks again.
async fn give_back(deps: &Deps, claimed: &SubscriptionRecord, owner: &str) -> Outcome {
    let mut tx = deps.store.tx();
    tx.put_subscription_next(&claimed.next(claimed.subscription.clone()), Some(owner));
    match deps.store.commit(tx).await {
        Ok(()) => Outcome::NotSent,
        Err(e) => log_err(claimed.id(), "claim not given back; its lease ends it", &e),
    }
}

/// The charge of `attempt` on `claimed`'s billing key `key` (opened by [`open_key`]).
fn charge_request(claimed: &SubscriptionRecord, attempt: &Attempt, key: &Secret) -> ChargeRequest {
    ChargeRequest {
        billing_key: key.expose().to_string(),
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
    }
}

/// A first try or a dunning retry: the claim and the attempt record in one transaction (the
/// attempt is written only with the claim, and a lifecycle change waits while it is pending),
/// then the PG, then one transaction for the outcome.
async fn charge(deps: &Deps, read: &SubscriptionRecord, now: Timestamp, owner: &str) -> Result<Outcome, ClaimLost> {
    let Some(key) = open_key(deps, read).await else { return Ok(Outcome::NotSent) };
    let (collecting, attempt) = match read.subscription.begin_charge(now) {
        Ok((c, a)) => (c, trace::sent(&a, send_time(deps, now))),
        Err(e) => return Ok(log_err(read.id(), "begin charge failed", &e)),
    };
    let mut tx = deps.store.tx();
    let claimed = match tx.claim(read, owner, Timestamp::now(), deps.settings.lease) {
        Ok(claimed) => claimed,
        Err(_) => return Ok(Outcome::Skipped), // not due
    };
    tx.put_attempt_new(&attempt);
    match deps.store.commit(tx).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ClaimLost),
        Err(StoreError::AlreadyExists(_)) => {
            // An earlier worker wrote this attempt and died: it may have charged. Claimed on its
            // own, and looked up.
            let claimed = match claim(deps, read, owner).await? {
                Ok(claimed) => claimed,
                Err(outcome) => return Ok(outcome),
            };
            if let Some(stopped) = stop_after_claim(deps).await {
                return Ok(stopped);
            }
            return Ok(resolve(deps, &claimed, &attempt.charge_id, now, owner).await);
        }
        Err(e) => return Ok(log_err(read.id(), "claim and attempt write failed", &e)),
    }
    if crashed(deps, CrashPoint::AfterAttemptWrite) {
        return Ok(Outcome::Crashed);
    }
    if let Some(stopped) = stop_after_claim(deps).await {
        return Ok(stopped);
    }
    let collecting = SubscriptionRecord { subscription: collecting, ..claimed.clone() };
    let stored_status = AttemptStatusKind::Pending;
    let settling =
        Settling { deps, collecting: &collecting, claimed: &claimed, attempt: &attempt, stored_status, now, owner };
    Ok(settling.send(&key).await)
}

/// One charge this worker settles: the subscription it claimed, that subscription collecting the
/// charge, the attempt as stored (with `stored_status`), billing time and the lease owner.
#[derive(Clone, Copy)]
struct Settling<'a> {
    deps: &'a Deps,
    collecting: &'a SubscriptionRecord,
    claimed: &'a SubscriptionRecord,
    attempt: &'a Attempt,
    stored_status: AttemptStatusKind,
    now: Timestamp,
    owner: &'a str,
}

/// What a charge's result means for the records ([`Settling::verdict`]). One per charge, moved
/// once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    /// Record the attempt's new status, the subscription's transition and the payment, if any.
    Record { status: AttemptStatus, transition: TransitionResult, payment: Option<PaymentRecord>, outcome: Outcome },
    /// The charge never left: the pending attempt goes ([`not_sent`]).
    NotSent(String),
    /// Still unknown after a look-up: the claim waits for the next one ([`still_unknown`]).
    StillUnknown,
}

type TransitionResult = Result<Transition, paycycle::domain::subscription::TransitionError>;

impl Settling<'_> {
    /// Sends the charge of the attempt on `key` and commits the outcome. The charge's requests
    /// must start early enough to be answered (or given up) before the claim's lease ends: after
    /// it, another worker may look the charge up and send it again. One that cannot start in
    /// time — it waited for its PG's budget — is not sent at all.
    async fn send(&self, key: &Secret) -> Outcome {
        let req = charge_request(self.claimed, self.attempt, key);
        let charging = async {
            match self.deps.pgs.adapter(self.claimed.pg).charge(&req).await {
                Err(PgError::AlreadyProcessed { .. }) => already_sent(self.deps, self.claimed, self.attempt).await,
                other => other,
            }
        };
        let send_by = send_by(self.claimed, self.deps.pgs.request_timeout);
        let result = paycycle::pg::budget::sending_by(send_by, charging).await;
        if crashed(self.deps, CrashPoint::AfterPgCall) {
            return Outcome::Crashed;
        }
        self.settle(result).await
    }

    /// Commits one charge outcome: attempt + payment + subscription + events.
    async fn settle(&self, result: Result<Approved, PgError>) -> Outcome {
        if crashed(self.deps, CrashPoint::BeforeCommit) {
            return Outcome::Crashed;
        }
        let (status, transition, payment, outcome) = match self.verdict(result) {
            Verdict::Record { status, transition, payment, outcome } => (status, transition, payment, outcome),
            Verdict::NotSent(reason) => return not_sent(self, &reason).await,
            Verdict::StillUnknown => return still_unknown(self.deps, self.claimed, self.now, self.owner).await,
        };
        match (transition, self.attempt.resolve(status.clone())) {
            (Ok(t), Ok(next_attempt)) => self.commit(t, &next_attempt, payment, outcome).await,
            (Err(e), _) => untransitioned(self, status, payment, outcome, &e).await,
            (_, Err(e)) => untransitioned(self, status, payment, outcome, &e).await,
        }
    }

    fn verdict(&self, result: Result<Approved, PgError>) -> Verdict {
        let (sub, charge_id, now) = (&self.collecting.subscription, &self.attempt.charge_id, self.now);
        let dunning = &self.deps.settings.dunning;
        let pending = self.stored_status == AttemptStatusKind::Pending;
        match result {
            Ok((charged, details)) => Verdict::Record {
                status: AttemptStatus::Approved {
                    pg_payment_id: charged.pg_payment_id.clone(),
                    approved_at: charged.approved_at,
                },
                transition: sub.charge_succeeded(charge_id, now),
                payment: Some(payment_for(self.claimed, self.attempt, &charged).with_details(details)),
                outcome: if pending { Outcome::Charged } else { Outcome::Resolved },
            },
            Err(PgError::Declined { hard, code, message }) => Verdict::Record {
                status: AttemptStatus::Declined { code, message, hard },
                transition: sub.charge_declined(charge_id, hard, now, dunning),
                payment: None,
                outcome: Outcome::Declined,
            },
            Err(PgError::Transient { reason }) if pending => Verdict::NotSent(reason),
            Err(PgError::Invalid(reason)) => Verdict::Record {
                // Our request cannot succeed as it is (e.g. below the PG's minimum): stop, loudly.
                status: AttemptStatus::Declined { code: "invalid_request".into(), message: reason, hard: true },
                transition: sub.charge_declined(charge_id, true, now, dunning),
                payment: None,
                outcome: Outcome::Declined,
            },
            Err(e) => {
                // Unknown, unrecognized, already processed, or not sent (transient/config): the
                // outcome is looked up on a later tick before anything is charged again.
                tracing::warn!(subscription_id = %self.claimed.id(), %charge_id, error = %e, "charge outcome unknown");
                if self.stored_status == AttemptStatusKind::Unknown {
                    return Verdict::StillUnknown;
                }
                Verdict::Record {
                    status: AttemptStatus::Unknown { since: now },
                    transition: sub.charge_unknown(charge_id, now, self.deps.settings.recheck_after),
                    payment: None,
                    outcome: Outcome::Unknown,
                }
            }
        }
    }

    /// One transaction under this worker's lease; an approved charge that loses a race is still
    /// recorded ([`record_approved`]).
    async fn commit(
        &self,
        t: Transition,
        next_attempt: &Attempt,
        payment: Option<PaymentRecord>,
        outcome: Outcome,
    ) -> Outcome {
        let (deps, claimed) = (self.deps, self.claimed);
        let next = claimed.next(t.subscription);
        let write = SubscriptionWrite::Next { lease_owner: Some(self.owner) };
        let mut change = TransitionCommit::new(&next, write, &t.events, self.now);
        if let Some(p) = &payment {
            change = change.paid(p);
        }
        change.attempt = Some((next_attempt, self.stored_status));
        let committed = deps.publisher.commit_transition(&deps.store, &change, |_| {}).await;
        match (committed, payment) {
            (Ok(_), _) => outcome,
            (Err(StoreError::Conflict(_) | StoreError::AlreadyExists(_)), Some(payment)) => {
                // The PG took the money: a lost race must not lose the payment.
                record_approved(deps, next_attempt, &payment, self.now, outcome).await
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
}

/// An outcome that does not fit the subscription or attempt this worker read (someone settled or
/// changed them meanwhile). Nothing is written from the stale read; but if the PG approved, the
/// money moved: it is recorded against what is stored now, like a commit that lost a race, and
/// raises the needs-review alarm if it cannot be.
async fn untransitioned(
    s: &Settling<'_>,
    status: AttemptStatus,
    payment: Option<PaymentRecord>,
    outcome: Outcome,
    error: &(dyn std::fmt::Display + Sync),
) -> Outcome {
    let Some(payment) = payment else { return log_err(s.claimed.id(), "transition failed", error) };
    tracing::warn!(subscription_id = %s.claimed.id(), charge_id = %s.attempt.charge_id, %error, "an approved charge does not fit the state read: recording it against the stored state");
    let approved = Attempt { status, ..s.attempt.clone() };
    record_approved(s.deps, &approved, &payment, s.now, outcome).await
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
        match record_once(deps, approved, payment, now).await {
            Ok(true) => {
                tracing::warn!(subscription_id = %id, %charge_id, "approved charge recorded after its commit lost a race");
                return outcome;
            }
            Ok(false) => return outcome, // recorded by someone else meanwhile
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

/// One try of [`record_approved`] against what is stored now: `Ok(true)` when this try recorded
/// it, `Ok(false)` when it was already recorded.
async fn record_once(
    deps: &Deps,
    approved: &Attempt,
    payment: &PaymentRecord,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let charge_id = &approved.charge_id;
    let (current, stored, recorded) = tokio::try_join!(
        deps.store.get_subscription(charge_id.subscription()),
        deps.store.get_attempt(charge_id),
        deps.store.get_payment(&payment.payment_id)
    )?;
    let attempt = stored.filter(|a| !a.status.is_final()).map(|stored| {
        let expected = stored.status.kind();
        (Attempt { status: approved.status.clone(), ..stored }, expected)
    });
    match current.and_then(|current| still_collecting(&current, charge_id, now)) {
        Some((next, kinds)) => {
            let write = SubscriptionWrite::Next { lease_owner: None };
            let mut change = TransitionCommit::new(&next, write, &kinds, now);
            change.payment = Some(payment);
            change.payment_is_new = recorded.is_none();
            change.attempt = attempt.as_ref().map(|(a, expected)| (a, *expected));
            deps.publisher.commit_transition(&deps.store, &change, |_| {}).await?;
        }
        None if attempt.is_none() && recorded.is_some() => return Ok(false),
        None => {
            if attempt.is_none() {
                // The charge's attempt is settled (a person said not paid and canceled, say) and
                // the subscription moved on, yet the PG took the money: recorded, and a person
                // must look — the period may have been paid twice.
                tracing::error!(
                    alarm = "paycycle_needs_review",
                    subscription_id = %charge_id.subscription(),
                    %charge_id,
                    pg_payment_id = %payment.pg_payment_id,
                    amount = %payment.amounts.paid,
                    "the PG approved a charge whose attempt was already settled: recorded; check for a second charge"
                );
            }
            let mut tx = deps.store.tx();
            if let Some((a, expected)) = &attempt {
                tx.put_attempt_if_status(a, *expected);
            }
            if recorded.is_none() {
                tx.put_payment_new(payment);
            }
            deps.store.commit(tx).await?;
        }
    }
    Ok(true)
}

/// The subscription as it moves on with `charge_id` paid, if it is still collecting that charge
/// (the collection of a first try is written with its outcome: rebuilt if missing).
fn still_collecting(
    current: &SubscriptionRecord,
    charge_id: &ChargeId,
    now: Timestamp,
) -> Option<(SubscriptionRecord, Vec<paycycle::domain::events::EventKind>)> {
    let sub = match &current.subscription.collection {
        None if current.subscription.next_charge_id().as_ref() == Some(charge_id) => {
            current.subscription.begin_charge(now).map(|(s, _)| s).unwrap_or(current.subscription.clone())
        }
        _ => current.subscription.clone(),
    };
    let t = sub.charge_succeeded(charge_id, now).ok()?;
    Some((current.next(t.subscription), t.events))
}

/// The charge never left (connection refused, Payple's partner auth refused): no money can have
/// moved, so it is neither a decline nor an unknown outcome. The pending attempt goes (its next
/// try writes it afresh and sends it), and renew comes back after `recheck_after`.
async fn not_sent(s: &Settling<'_>, reason: &str) -> Outcome {
    let Settling { deps, collecting, claimed, attempt, now, owner, .. } = *s;
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
    let attempt = match unsettled_attempt(deps, claimed, charge_id).await {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    // A subscription whose attempt was written by a worker that died is still `collecting` from
    // the domain's view only if the collection was committed; rebuild it from the attempt.
    let collecting = match &claimed.subscription.collection {
        Some(_) => claimed.clone(),
        None => match claimed.subscription.begin_charge(now) {
            Ok((s, _)) => SubscriptionRecord { subscription: s, ..claimed.clone() },
            Err(e) => return log_err(claimed.id(), "cannot rebuild the collection", &e),
        },
    };
    let stored_status = attempt.status.kind();
    let s = Settling { deps, collecting: &collecting, claimed, attempt: &attempt, stored_status, now, owner };
    match deps.pgs.adapter(claimed.pg).find_charge(&attempt).await {
        Ok((PaymentState::Paid { pg_payment_id, amount, paid_at, .. }, details)) => {
            let charged = Charged { pg_payment_id, amount, approved_at: paid_at.unwrap_or(now) };
            s.settle(Ok((charged, details))).await
        }
        Ok((PaymentState::Refunded { pg_payment_id, amount }, details)) => {
            s.settle(Ok((Charged { pg_payment_id, amount, approved_at: now }, details))).await
        }
        // A verified PG webhook named this charge's payment (StepPay `payment.failed` / FAILED) and
        // the lookup by it confirms the failure: the charge reached the PG and was declined there
        // — dunning goes on; re-sending the same charge id is not a retry. Woken by a hint in
        // review (or canceled in review), a person stopped the charging: a failure at the PG is a
        // decline there too.
        Ok((PaymentState::Failed { .. }, _)) if trace::named_by_webhook(&attempt) || stopped(claimed) => {
            s.settle(Err(PgError::Declined {
                hard: false,
                code: "failed_at_pg".into(),
                message: "the PG reports the payment failed".into(),
            }))
            .await
        }
        // Stopped by a person: a payment the PG does not know goes back to the person.
        Err(PgError::NotFound) if stopped(claimed) => still_unknown(deps, claimed, now, owner).await,
        // A person settled it not paid and asked for it again, and the PG cannot be asked by our id
        // (StepPay): it is sent again under its own id — the PG refuses a repeat of a charge it took.
        Err(PgError::Unsupported(_)) if released_by_person(claimed, &attempt) => resend(&s).await,
        Err(PgError::NotFound) | Ok((PaymentState::Failed { .. }, _)) => resend(&s).await,
        Ok((PaymentState::Pending, _)) | Err(_) if stored_status == AttemptStatusKind::Pending => {
            // A dead worker's attempt we cannot look up (StepPay has no lookup by our id): mark it
            // unknown so the review window starts.
            s.settle(Err(PgError::Unknown { reason: "attempt left pending by a stopped worker".into() })).await
        }
        Ok((PaymentState::Pending, _)) | Err(_) => still_unknown(deps, claimed, now, owner).await,
    }
}

/// The attempt of `charge_id` if it is not settled yet; otherwise what renew does instead.
async fn unsettled_attempt(
    deps: &Deps,
    claimed: &SubscriptionRecord,
    charge_id: &ChargeId,
) -> Result<Attempt, Outcome> {
    let attempt = match deps.store.get_attempt(charge_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(log_err(claimed.id(), "unknown attempt has no record", &"missing attempt")),
        Err(e) => return Err(log_err(claimed.id(), "attempt read failed", &e)),
    };
    if attempt.status.is_final() {
        // Settled meanwhile by a worker that claimed it after this one's lease ran out.
        tracing::warn!(subscription_id = %claimed.id(), %charge_id, status = attempt.status.name(), "attempt already settled; nothing re-sent");
        return Err(Outcome::Skipped);
    }
    Ok(attempt)
}

/// A charge that never reached the PG (or failed there) is charged now under the same id, dated
/// (and stored) as sent now, so a lost answer is looked up under the right date.
async fn resend(s: &Settling<'_>) -> Outcome {
    let Some(key) = open_key(s.deps, s.claimed).await else { return give_back(s.deps, s.claimed, s.owner).await };
    let resent = trace::sent(s.attempt, send_time(s.deps, s.now));
    // Written (even when the date is unchanged) only while this worker holds the claim and the
    // attempt is as it read it: a worker whose lease ran out may find it re-paid and settled by
    // another, or the subscription canceled, and must send nothing.
    let mut tx = s.deps.store.tx();
    tx.check_claim_held(s.claimed, Timestamp::now());
    tx.put_attempt_if_status(&resent, s.stored_status);
    match s.deps.store.commit(tx).await {
        Ok(()) => Settling { attempt: &resent, ..*s }.send(&key).await,
        Err(StoreError::Conflict(_)) => {
            tracing::warn!(subscription_id = %s.claimed.id(), charge_id = %s.attempt.charge_id, "claim lost or attempt changed before the re-pay; nothing sent");
            Outcome::Skipped
        }
        Err(e) => log_err(s.claimed.id(), "attempt re-date failed", &e),
    }
}

/// The PG answered a send of `attempt` with "this charge id was already processed" (Payple
/// `SPCD0014` 이미 처리된 거래입니다, seed 003; StepPay's duplicate `partnerOrderId`): an earlier
/// send of it exists, so it is never a decline. Looked up at once; until the PG shows it, it is
/// an unknown outcome.
async fn already_sent(deps: &Deps, claimed: &SubscriptionRecord, attempt: &Attempt) -> Result<Approved, PgError> {
    match deps.pgs.adapter(claimed.pg).find_charge(attempt).await {
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

/// The latest moment a request of a charge under `claimed`'s lease may start: its lease's end
/// (whole seconds on the wall clock, as the claim's condition reads it) less one request's
/// timeout and a second for clocks, as a monotonic instant.
fn send_by(claimed: &SubscriptionRecord, request_timeout: std::time::Duration) -> tokio::time::Instant {
    let lease_end = Timestamp::from_second(claimed.lease_until).unwrap_or_else(|_| Timestamp::now());
    let left = lease_end.duration_since(Timestamp::now()) - SignedDuration::from_secs(1);
    let left = std::time::Duration::try_from(left).unwrap_or_default().saturating_sub(request_timeout);
    tokio::time::Instant::now() + left
}

/// When a charge request goes out, for the PG's date: the wall clock, which is the PG's. Under
/// time travel (local stack and tests) the local PG sandbox's clock follows billing time instead.
fn send_time(deps: &Deps, now: Timestamp) -> Timestamp {
    if deps.settings.allow_time_travel { now } else { Timestamp::now() }
}

/// Whether a person settled `attempt` not paid (`POST /subscriptions/{id}/resolve`) and renew is
/// to send it again: its outcome has not gone unknown again since.
fn released_by_person(claimed: &SubscriptionRecord, attempt: &Attempt) -> bool {
    use paycycle::domain::review::Verdict;
    let person_said_not_paid = attempt.resolution.as_ref().is_some_and(|r| r.verdict == Verdict::NotPaid);
    let unknown_again = claimed.subscription.collection.as_ref().is_some_and(|c| c.unknown_since.is_some());
    person_said_not_paid && !unknown_again
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
