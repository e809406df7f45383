//! The subscription state machine (DESIGN §5, §7).
//!
//! ```text
//! incomplete ──activate──▶ active ──declined──▶ past_due ──retries exhausted / hard──▶ unpaid | canceled
//!      │                   │  ▲ ▲                  │  │
//!      └──expire──▶ canceled│  │ └──charge ok───────┘  └──unknown past window──▶ needs_review
//!                  pause ▼  │ resume                      (also from active)      │ resolved
//!                      paused                                                      ▼ active / past_due
//! any live state ──cancel──▶ canceled (terminal)
//! ```
//!
//! Every method takes the current value and returns the next one plus the domain events to emit,
//! or a typed [`TransitionError`]; nothing mutates in place, so the caller can write the new value
//! with a condition on the old one. Periods come from the [`Schedule`] (anchor-based, KST), and
//! `next_attempt_at` always says when renew must look at the subscription next (`None` = never on
//! its own: paused, unpaid, needs review, canceled, or renewed by the PG itself).

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::attempt::{Attempt, ChargeId, IdError, SubscriptionId};
use crate::calendar::{CalendarError, Interval, Period, Schedule, unused_time};
use crate::dunning::{DunningDecision, DunningPolicy, FinalAction};
use crate::events::EventKind;
use crate::money::Krw;
use crate::review::ReviewNext;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    Incomplete,
    Active,
    PastDue,
    Unpaid,
    Canceled,
    Paused,
    /// A charge's outcome stayed unknown past the resolution window: a person must look.
    NeedsReview,
}

impl SubscriptionState {
    pub const ALL: [SubscriptionState; 7] = [
        SubscriptionState::Incomplete,
        SubscriptionState::Active,
        SubscriptionState::PastDue,
        SubscriptionState::Unpaid,
        SubscriptionState::Canceled,
        SubscriptionState::Paused,
        SubscriptionState::NeedsReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Incomplete => "incomplete",
            SubscriptionState::Active => "active",
            SubscriptionState::PastDue => "past_due",
            SubscriptionState::Unpaid => "unpaid",
            SubscriptionState::Canceled => "canceled",
            SubscriptionState::Paused => "paused",
            SubscriptionState::NeedsReview => "needs_review",
        }
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every (from, to) pair a transition may produce, self-loops included. Tests check that no
/// sequence of inputs ever takes a step outside this list.
pub const LEGAL_EDGES: &[(SubscriptionState, SubscriptionState)] = {
    use SubscriptionState::*;
    &[
        (Incomplete, Active),
        (Incomplete, Canceled),
        (Active, Active),
        (Active, PastDue),
        (Active, Unpaid),
        (Active, Canceled),
        (Active, Paused),
        (Active, NeedsReview),
        (PastDue, PastDue),
        (PastDue, Active),
        (PastDue, Unpaid),
        (PastDue, Canceled),
        (PastDue, NeedsReview),
        (Paused, Active),
        (Paused, Paused),
        (Paused, Canceled),
        (NeedsReview, Active),
        (NeedsReview, PastDue),
        (NeedsReview, NeedsReview),
        (NeedsReview, Unpaid),
        (NeedsReview, Canceled),
        (Unpaid, Canceled),
        // A charge left unknown when a subscription in review was canceled is still resolved.
        (Canceled, Canceled),
    ]
};

/// The smallest plan amount: Payple's card minimum (seed 003), applied to every PG.
pub const MIN_PLAN_AMOUNT: i64 = 100;
/// The largest plan amount: 100,000,000원 a period. Far above any subscription price, and it keeps
/// every amount (and sums of a year of them) exact in JSON numbers (2^53) for partners' clients.
pub const MAX_PLAN_AMOUNT: i64 = 100_000_000;

/// The shortest time between two charges of one subscription: min(one period, 1 day). Every
/// interval is at least a day, so it is one day.
pub const MIN_CHARGE_GAP: SignedDuration = SignedDuration::from_hours(24);

/// What is being sold: a price per interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub amount: Krw,
    pub interval: Interval,
}

/// Who renews the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Renewer {
    /// paycycle's renew charges the billing key (StepPay self, Payple recurring).
    Paycycle,
    /// The PG renews and tells us by webhook (StepPay managed); renew never charges it.
    Pg,
}

/// The period being collected after the paid one, while its charge is in progress or in dunning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    pub period: u32,
    pub due_at: Timestamp,
    /// Number of the attempt in flight or next to make (1 = first try).
    pub attempt: u8,
    /// Set while the current attempt's outcome is unknown: renew must look it up, not charge.
    pub unknown_since: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub at: Timestamp,
    /// Paid time not yet used when the pause took effect; given back on resume.
    pub credit: SignedDuration,
}

/// When a pause takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseWhen {
    /// At once; the unused part of the paid period is credited on resume.
    Now,
    /// When the paid period ends; nothing to credit.
    PeriodEnd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub state: SubscriptionState,
    pub plan: Plan,
    pub renewer: Renewer,
    /// Set at activation (the anchor is the first payment's time).
    pub schedule: Option<Schedule>,
    /// The latest paid period.
    pub current_period: Option<Period>,
    /// When renew must look at this subscription next; `None` = not on its own.
    pub next_attempt_at: Option<Timestamp>,
    pub collection: Option<Collection>,
    pub cancel_at_period_end: bool,
    pub pause_at_period_end: bool,
    pub pause: Option<Pause>,
    pub canceled_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action} a subscription that is {from}")]
    Illegal { from: SubscriptionState, action: &'static str },
    #[error("charge {got} is not the attempt in progress ({expected})")]
    WrongCharge { expected: String, got: String },
    #[error("the outcome of charge {0} is still unknown; it must be resolved before anything else is charged")]
    UnknownOutcomePending(String),
    #[error("this subscription is renewed by the PG; paycycle does not charge it")]
    RenewedByPg,
    #[error("charge {0} is being collected; its amount cannot change")]
    CollectionInProgress(String),
    #[error("this subscription is renewed by paycycle, not by the PG")]
    RenewedByPaycycle,
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// What renew should do with a subscription whose `next_attempt_at` has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DueAction {
    /// Not due (or nothing renew does on its own).
    Nothing,
    /// Charge this attempt.
    Charge { charge_id: ChargeId, amount: Krw },
    /// Look up the outcome of this attempt at the PG (it was sent, the answer was lost).
    ResolveUnknown { charge_id: ChargeId, since: Timestamp },
    /// The paid period ended with a cancel scheduled.
    CancelAtPeriodEnd,
    /// The paid period ended with a pause scheduled.
    PauseAtPeriodEnd,
}

/// The next value and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub subscription: Subscription,
    pub events: Vec<EventKind>,
}

type Result<T> = std::result::Result<T, TransitionError>;

impl Subscription {
    /// A new subscription awaiting its first payment.
    pub fn incomplete(id: SubscriptionId, plan: Plan, renewer: Renewer) -> Self {
        Self {
            id,
            state: SubscriptionState::Incomplete,
            plan,
            renewer,
            schedule: None,
            current_period: None,
            next_attempt_at: None,
            collection: None,
            cancel_at_period_end: false,
            pause_at_period_end: false,
            pause: None,
            canceled_at: None,
        }
    }

    fn illegal(&self, action: &'static str) -> TransitionError {
        TransitionError::Illegal { from: self.state, action }
    }

    fn require(&self, allowed: &[SubscriptionState], action: &'static str) -> Result<()> {
        if allowed.contains(&self.state) { Ok(()) } else { Err(self.illegal(action)) }
    }

    fn done(self, events: Vec<EventKind>) -> Result<Transition> {
        Ok(Transition { subscription: self, events })
    }

    fn schedule(&self, action: &'static str) -> Result<Schedule> {
        self.schedule.ok_or(self.illegal(action))
    }

    /// Next time renew must act for an active subscription whose paid period is `period`.
    fn next_for_period(&self, period: &Period) -> Option<Timestamp> {
        match self.renewer {
            Renewer::Paycycle => Some(period.end),
            Renewer::Pg => None,
        }
    }

    /// End of the paid time: the paid period's end, shifted by nothing (pauses re-anchor instead).
    pub fn paid_through(&self) -> Option<Timestamp> {
        self.current_period.map(|p| p.end)
    }

    /// The first payment succeeded at `paid_at`: the anchor, period 0 is paid.
    pub fn activate(&self, paid_at: Timestamp) -> Result<Transition> {
        self.require(&[SubscriptionState::Incomplete], "activate")?;
        let schedule = Schedule::new(paid_at, self.plan.interval);
        let period = schedule.period(0)?;
        let mut next = self.clone();
        next.state = SubscriptionState::Active;
        next.schedule = Some(schedule);
        next.current_period = Some(period);
        next.next_attempt_at = next.next_for_period(&period);
        next.done(vec![EventKind::SubscriptionActivated])
    }

    /// The checkout was abandoned or failed: the subscription never starts.
    pub fn expire(&self, at: Timestamp) -> Result<Transition> {
        self.require(&[SubscriptionState::Incomplete], "expire")?;
        let mut next = self.clone();
        next.state = SubscriptionState::Canceled;
        next.canceled_at = Some(at);
        next.done(vec![EventKind::SubscriptionCanceled])
    }

    /// What renew should do at `now`.
    pub fn due_action(&self, now: Timestamp) -> Result<DueAction> {
        let Some(due) = self.next_attempt_at else { return Ok(DueAction::Nothing) };
        if due > now {
            return Ok(DueAction::Nothing);
        }
        if self.renewer == Renewer::Pg {
            // The PG renews; paycycle only ends (or pauses) what the PG was told to stop.
            let active = self.state == SubscriptionState::Active;
            return Ok(match (active, self.cancel_at_period_end, self.pause_at_period_end) {
                (true, true, _) => DueAction::CancelAtPeriodEnd,
                (true, false, true) => DueAction::PauseAtPeriodEnd,
                _ => DueAction::Nothing,
            });
        }
        if matches!(self.state, SubscriptionState::NeedsReview | SubscriptionState::Canceled) {
            // Woken by a PG payment hint ([`Self::hint_arrived`]): look the unknown charge up.
            return Ok(match &self.collection {
                Some(Collection { period, attempt, unknown_since: Some(since), .. }) => DueAction::ResolveUnknown {
                    charge_id: ChargeId::new(self.id.clone(), *period, *attempt)?,
                    since: *since,
                },
                _ => DueAction::Nothing,
            });
        }
        if !matches!(self.state, SubscriptionState::Active | SubscriptionState::PastDue) {
            return Ok(DueAction::Nothing);
        }
        if let Some(c) = &self.collection {
            let charge_id = ChargeId::new(self.id.clone(), c.period, c.attempt)?;
            if let Some(since) = c.unknown_since {
                return Ok(DueAction::ResolveUnknown { charge_id, since });
            }
            return Ok(DueAction::Charge { charge_id, amount: self.plan.amount });
        }
        if self.cancel_at_period_end {
            return Ok(DueAction::CancelAtPeriodEnd);
        }
        if self.pause_at_period_end {
            return Ok(DueAction::PauseAtPeriodEnd);
        }
        let paid = self.current_period.ok_or(self.illegal("renew"))?;
        let charge_id = ChargeId::new(self.id.clone(), paid.index + 1, 1)?;
        Ok(DueAction::Charge { charge_id, amount: self.plan.amount })
    }

    /// Renew is about to send `charge_id`: the collection is opened (or continued) and the
    /// attempt record to write first is returned.
    pub fn begin_charge(&self, now: Timestamp) -> Result<(Subscription, Attempt)> {
        match self.due_action(now)? {
            DueAction::Charge { charge_id, amount } => {
                let schedule = self.schedule("charge")?;
                let mut next = self.clone();
                if next.collection.is_none() {
                    next.collection = Some(Collection {
                        period: charge_id.period(),
                        due_at: schedule.period_start(charge_id.period())?,
                        attempt: charge_id.attempt(),
                        unknown_since: None,
                    });
                }
                Ok((next, Attempt::new(charge_id, amount, now)))
            }
            DueAction::ResolveUnknown { charge_id, .. } => {
                Err(TransitionError::UnknownOutcomePending(charge_id.to_string()))
            }
            DueAction::Nothing if self.renewer == Renewer::Pg => Err(TransitionError::RenewedByPg),
            _ => Err(self.illegal("charge")),
        }
    }

    fn check_charge(&self, charge_id: &ChargeId) -> Result<Collection> {
        let c = self.collection.clone().ok_or(self.illegal("record a charge for"))?;
        if charge_id.subscription() != &self.id || charge_id.period() != c.period || charge_id.attempt() != c.attempt {
            let expected = ChargeId::new(self.id.clone(), c.period, c.attempt)?.to_string();
            return Err(TransitionError::WrongCharge { expected, got: charge_id.to_string() });
        }
        Ok(c)
    }

    /// The PG approved `charge_id` (directly, by lookup, or by webhook); renew learned it at `now`.
    ///
    /// Missed periods are never caught up: a period paid less than [`MIN_CHARGE_GAP`] before its
    /// end (a late dunning recovery, a late tick or resolution, a daily plan charged after its
    /// start) starts at the payment instead, for one full interval, and the schedule follows from
    /// there. So the next charge is never sooner than [`MIN_CHARGE_GAP`] after this one.
    pub fn charge_succeeded(&self, charge_id: &ChargeId, now: Timestamp) -> Result<Transition> {
        use SubscriptionState::*;
        self.require(&[Active, PastDue, NeedsReview, Canceled], "record a successful charge for")?;
        let c = self.check_charge(charge_id)?;
        if self.state == Canceled {
            return Ok(self.settled_after_cancel(EventKind::PaymentSucceeded));
        }
        let mut schedule = self.schedule("renew")?;
        let mut period = schedule.period(c.period)?;
        let mut next = self.clone();
        if period.end < now.saturating_add(MIN_CHARGE_GAP).unwrap_or(now) {
            schedule = schedule.reanchored(now, c.period);
            period = schedule.period(c.period)?;
            next.schedule = Some(schedule);
        }
        next.state = SubscriptionState::Active;
        next.current_period = Some(period);
        next.collection = None;
        next.next_attempt_at = next.next_for_period(&period);
        next.done(vec![EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed])
    }

    /// The PG declined `charge_id` at `now`; the dunning policy says what follows.
    pub fn charge_declined(
        &self,
        charge_id: &ChargeId,
        hard: bool,
        now: Timestamp,
        policy: &DunningPolicy,
    ) -> Result<Transition> {
        use SubscriptionState::*;
        self.require(&[Active, PastDue, NeedsReview, Canceled], "record a declined charge for")?;
        let c = self.check_charge(charge_id)?;
        if self.state == Canceled {
            return Ok(self.settled_after_cancel(EventKind::PaymentFailed));
        }
        let mut next = self.clone();
        let mut events = vec![EventKind::PaymentFailed];
        match policy.after_decline(c.due_at, c.attempt, hard, now) {
            DunningDecision::Retry { at, attempt } => {
                if next.state != SubscriptionState::PastDue {
                    events.push(EventKind::SubscriptionPastDue);
                }
                next.state = SubscriptionState::PastDue;
                next.collection = Some(Collection { attempt, unknown_since: None, ..c });
                next.next_attempt_at = Some(at);
            }
            DunningDecision::GiveUp(action) => {
                next.collection = None;
                next.next_attempt_at = None;
                match action {
                    FinalAction::Unpaid => {
                        next.state = SubscriptionState::Unpaid;
                        events.push(EventKind::SubscriptionUnpaid);
                    }
                    FinalAction::Canceled => {
                        next.state = SubscriptionState::Canceled;
                        next.canceled_at = Some(now);
                        events.push(EventKind::SubscriptionCanceled);
                    }
                }
            }
        }
        next.done(events)
    }

    /// `charge_id` was sent but its outcome is unknown. Renew comes back after `recheck_after`
    /// to look it up; it will not charge again meanwhile.
    pub fn charge_unknown(
        &self,
        charge_id: &ChargeId,
        now: Timestamp,
        recheck_after: SignedDuration,
    ) -> Result<Transition> {
        self.require(&[SubscriptionState::Active, SubscriptionState::PastDue], "record an unknown charge for")?;
        let c = self.check_charge(charge_id)?;
        let mut next = self.clone();
        next.collection = Some(Collection { unknown_since: c.unknown_since.or(Some(now)), ..c });
        next.next_attempt_at = Some(now.saturating_add(recheck_after).unwrap_or(now));
        next.done(vec![])
    }

    /// `charge_id` never reached the PG (connection refused, partner auth refused): nothing can have
    /// moved, so it is neither a decline nor an unknown outcome. Renew sends it again after
    /// `retry_after`; no review window starts.
    pub fn charge_not_sent(
        &self,
        charge_id: &ChargeId,
        now: Timestamp,
        retry_after: SignedDuration,
    ) -> Result<Transition> {
        self.require(&[SubscriptionState::Active, SubscriptionState::PastDue], "record an unsent charge for")?;
        self.check_charge(charge_id)?;
        let mut next = self.clone();
        next.next_attempt_at = Some(now.saturating_add(retry_after).unwrap_or(now));
        next.done(vec![])
    }

    /// Whether an unknown outcome has stayed unresolved for longer than `window` at `now`.
    pub fn unknown_overdue(&self, now: Timestamp, window: SignedDuration) -> bool {
        self.collection.as_ref().and_then(|c| c.unknown_since).is_some_and(|since| now.duration_since(since) > window)
    }

    /// The unknown outcome could not be resolved in time: a person must look. Renew stops.
    /// In review already (or canceled while in review), a look that found nothing new hands it
    /// back to the person: renew stops again.
    pub fn require_review(&self) -> Result<Transition> {
        use SubscriptionState::*;
        self.require(&[Active, PastDue, NeedsReview, Canceled], "send to review")?;
        if self.collection.as_ref().and_then(|c| c.unknown_since).is_none() {
            return Err(self.illegal("send to review without an unknown charge"));
        }
        let mut next = self.clone();
        if matches!(self.state, NeedsReview | Canceled) {
            next.next_attempt_at = None;
            return next.done(vec![]);
        }
        next.state = SubscriptionState::NeedsReview;
        next.next_attempt_at = None;
        next.done(vec![EventKind::SubscriptionNeedsReview])
    }

    /// A verified PG webhook named the payment of the charge whose outcome is unknown, on a
    /// subscription renew no longer looks at (in review, or canceled while in review): renew is
    /// woken to look it up by that payment (due since the charge went unknown).
    pub fn hint_arrived(&self) -> Result<Transition> {
        self.require(&[SubscriptionState::NeedsReview, SubscriptionState::Canceled], "resolve a hint for")?;
        let since = self.collection.as_ref().and_then(|c| c.unknown_since).ok_or(self.illegal("resolve a hint for"))?;
        let mut next = self.clone();
        next.next_attempt_at = Some(since);
        next.done(vec![])
    }

    /// Since when a person must settle this subscription's charge, if one must: in review (or
    /// canceled in review) with the charge's outcome still unknown, and renew not looking it up
    /// (a PG hint sets `next_attempt_at` until renew has looked).
    pub fn awaiting_review(&self) -> Option<Timestamp> {
        use SubscriptionState::*;
        if !matches!(self.state, NeedsReview | Canceled) || self.next_attempt_at.is_some() {
            return None;
        }
        self.collection.as_ref().and_then(|c| c.unknown_since)
    }

    /// The charge in review, if there is one a person can settle.
    fn in_review(&self, charge_id: &ChargeId) -> Result<Collection> {
        use SubscriptionState::*;
        self.require(&[NeedsReview, Canceled], "resolve a review of")?;
        let c = self.check_charge(charge_id)?;
        if c.unknown_since.is_none() {
            return Err(self.illegal("resolve a review without an unknown charge"));
        }
        Ok(c)
    }

    /// A person settled the charge in review as paid, after the PG's lookup confirmed it: a
    /// successful charge (still canceled if it was canceled in review). `then_cancel` also
    /// cancels it now, after the paid charge is on record.
    pub fn review_paid(&self, charge_id: &ChargeId, now: Timestamp, then_cancel: bool) -> Result<Transition> {
        self.in_review(charge_id)?;
        let paid = self.charge_succeeded(charge_id, now)?;
        if !then_cancel || paid.subscription.state == SubscriptionState::Canceled {
            return Ok(paid);
        }
        let canceled = paid.subscription.cancel(now, false)?;
        let mut events = paid.events;
        events.extend(canceled.events);
        canceled.subscription.done(events)
    }

    /// A person settled the charge in review as not paid (the PG's lookup does not show it paid,
    /// or the PG has none): the period is still unpaid, and `next` says what follows. `Retry` (now)
    /// and `PastDue` (at dunning's next retry, as after a soft decline) send **the same charge
    /// again**, under the same charge id: if the person was wrong and the PG did take it, the PG
    /// refuses the repeat of that order id (Payple `SPCD0014`, StepPay's duplicate
    /// `partnerOrderId`) and renew looks it up instead — a verdict can never cause a second charge.
    /// `Cancel` cancels now. A subscription canceled in review stays canceled whatever `next` says.
    pub fn review_not_paid(
        &self,
        charge_id: &ChargeId,
        next: ReviewNext,
        now: Timestamp,
        policy: &DunningPolicy,
    ) -> Result<Transition> {
        let c = self.in_review(charge_id)?;
        if self.state == SubscriptionState::Canceled {
            return Ok(self.settled_after_cancel(EventKind::PaymentFailed));
        }
        let again_at = |at: Timestamp| {
            let mut next = self.clone();
            next.state = SubscriptionState::PastDue;
            next.collection = Some(Collection { unknown_since: None, ..c });
            next.next_attempt_at = Some(at);
            next.done(vec![EventKind::PaymentFailed, EventKind::SubscriptionPastDue])
        };
        match next {
            ReviewNext::Retry => again_at(now),
            ReviewNext::PastDue => match policy.after_decline(c.due_at, c.attempt, false, now) {
                DunningDecision::Retry { at, .. } => again_at(at),
                DunningDecision::GiveUp(_) => self.charge_declined(charge_id, false, now, policy),
            },
            ReviewNext::Cancel => {
                let mut next = self.clone();
                next.state = SubscriptionState::Canceled;
                next.canceled_at = Some(now);
                next.collection = None;
                next.next_attempt_at = None;
                next.pause = None;
                next.pause_at_period_end = false;
                next.cancel_at_period_end = false;
                next.done(vec![EventKind::PaymentFailed, EventKind::SubscriptionCanceled])
            }
        }
    }

    /// The outcome of a charge left unknown by a subscription canceled in review: it stays
    /// canceled; the caller records the payment (or the decline).
    fn settled_after_cancel(&self, event: EventKind) -> Transition {
        let mut next = self.clone();
        next.collection = None;
        next.next_attempt_at = None;
        Transition { subscription: next, events: vec![event] }
    }

    /// The charge renew sends next, or has in flight: the collection's attempt, else the first try
    /// of the period after the paid one. `None` when paycycle never charges it.
    pub fn next_charge_id(&self) -> Option<ChargeId> {
        if self.renewer == Renewer::Pg {
            return None;
        }
        let (period, attempt) = match &self.collection {
            Some(c) => (c.period, c.attempt),
            None => (self.current_period?.index.checked_add(1)?, 1),
        };
        ChargeId::new(self.id.clone(), period, attempt).ok()
    }

    /// The PG renewed a PG-managed subscription (StepPay managed order webhook, verified by lookup).
    /// The PG took the money, so the renewal is recorded in every state that has a paid period to
    /// extend. Paused here (a pause overtook the renewal's webhook, or the PG renewed a
    /// subscription it resumed itself): the period is paid and stays paused, its unused time
    /// credited on resume; whether it is active again is the PG's status to say, applied by the
    /// caller after this.
    pub fn renewed_by_pg(&self) -> Result<Transition> {
        use SubscriptionState::{Active, PastDue, Paused};
        if self.renewer != Renewer::Pg {
            return Err(TransitionError::RenewedByPaycycle);
        }
        self.require(&[Active, PastDue, Paused], "record a PG renewal for")?;
        let paid = self.current_period.ok_or(self.illegal("renew"))?;
        let period = self.schedule("renew")?.period(paid.index + 1)?;
        let mut next = self.clone();
        next.current_period = Some(period);
        if self.state == Paused {
            if let Some(p) = next.pause.as_mut() {
                p.credit = unused_time(period.end, p.at);
            }
        } else {
            next.state = Active;
            // A cancel or pause at period end waits for the end of the period now paid (it was
            // set for the one before): renew must not end paid time early.
            if self.cancel_at_period_end || self.pause_at_period_end {
                next.next_attempt_at = Some(period.end);
            }
        }
        next.done(vec![EventKind::PaymentSucceeded, EventKind::SubscriptionRenewed])
    }

    /// The PG's own renewal of a PG-managed subscription failed (StepPay managed
    /// `subscription.updated` to UNPAID, or a renewal order with a payment error, verified by lookup): past due until the PG's retry succeeds
    /// ([`Self::renewed_by_pg`]) or it gives up. Repeats are no-ops (`Ok` with no events).
    pub fn renewal_failed_at_pg(&self) -> Result<Transition> {
        if self.renewer != Renewer::Pg {
            return Err(TransitionError::RenewedByPaycycle);
        }
        self.require(&[SubscriptionState::Active, SubscriptionState::PastDue], "record a failed PG renewal for")?;
        let mut next = self.clone();
        if self.state == SubscriptionState::PastDue {
            return next.done(vec![]);
        }
        next.state = SubscriptionState::PastDue;
        next.done(vec![EventKind::PaymentFailed, EventKind::SubscriptionPastDue])
    }

    /// StepPay reports a PG-managed subscription ACTIVE again after UNPAID (`subscription.updated`,
    /// confirmed by `GET /api/v1/subscriptions/{id}`): active, the paid period unchanged — the
    /// renewal order that paid it moves the period when it is recorded ([`Self::renewed_by_pg`]).
    /// Already active: a no-op.
    pub fn recovered_at_pg(&self) -> Result<Transition> {
        if self.renewer != Renewer::Pg {
            return Err(TransitionError::RenewedByPaycycle);
        }
        self.require(&[SubscriptionState::Active, SubscriptionState::PastDue], "record a PG recovery for")?;
        let mut next = self.clone();
        next.state = SubscriptionState::Active;
        next.done(vec![])
    }

    /// A charge whose outcome is unknown must be resolved before the subscription changes (else
    /// an approved charge could be lost with its collection).
    fn no_unknown_outcome(&self) -> Result<()> {
        if let Some(c) = &self.collection {
            if c.unknown_since.is_some() {
                return Err(TransitionError::UnknownOutcomePending(
                    ChargeId::new(self.id.clone(), c.period, c.attempt)?.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// A new plan from the next period on (amount, name, interval). The current period was paid
    /// at the old price and is not prorated. An interval change starts the new cadence at the end
    /// of the paid period. Not while a charge is being collected (its amount is fixed).
    pub fn change_plan(&self, plan: Plan) -> Result<Transition> {
        self.require(&[SubscriptionState::Active, SubscriptionState::Paused], "change the plan of")?;
        if self.renewer == Renewer::Pg {
            return Err(TransitionError::RenewedByPg);
        }
        if let Some(c) = &self.collection {
            return Err(TransitionError::CollectionInProgress(
                ChargeId::new(self.id.clone(), c.period, c.attempt)?.to_string(),
            ));
        }
        let mut next = self.clone();
        if plan.interval != self.plan.interval {
            let paid = self.current_period.ok_or(self.illegal("change the plan of"))?;
            next.schedule = Some(Schedule { anchor: paid.end, interval: plan.interval, first_index: paid.index + 1 });
        }
        next.plan = plan;
        next.done(vec![])
    }

    /// The customer registered a new card (a card change verified with the PG). Nothing about
    /// the schedule changes, except that a subscription in dunning is charged again at once, on
    /// the new card: the attempt next in line becomes due `now`. Not while an attempt's outcome
    /// is unknown: renew looks that charge up under the key it was sent with first (a re-send of
    /// its charge id on another card must never be possible). A PG-renewed subscription changes
    /// only by the event: its PG keeps the card and retries on its own schedule.
    pub fn payment_method_changed(&self, now: Timestamp) -> Result<Transition> {
        use SubscriptionState::*;
        self.require(&[Active, PastDue, Paused], "change the payment method of")?;
        self.no_unknown_outcome()?;
        let mut next = self.clone();
        if let (PastDue, Some(_), Renewer::Paycycle) = (self.state, &self.collection, self.renewer) {
            next.next_attempt_at = Some(self.next_attempt_at.map_or(now, |at| at.min(now)));
        }
        next.done(vec![EventKind::SubscriptionPaymentMethodUpdated])
    }

    /// Pause now (credit the unused paid time) or at the end of the paid period. A PG-renewed
    /// subscription is paused at the PG first (the caller's job); here it only stops being active:
    /// at the end of the paid period renew's wake-up pauses it, as it ends a canceled one.
    pub fn pause(&self, now: Timestamp, when: PauseWhen) -> Result<Transition> {
        self.require(&[SubscriptionState::Active], "pause")?;
        self.no_unknown_outcome()?;
        let mut next = self.clone();
        match when {
            PauseWhen::PeriodEnd => {
                next.pause_at_period_end = true;
                if self.renewer == Renewer::Pg {
                    next.next_attempt_at = self.paid_through();
                }
                next.done(vec![])
            }
            PauseWhen::Now => {
                let end = self.paid_through().ok_or(self.illegal("pause"))?;
                next.state = SubscriptionState::Paused;
                next.pause = Some(Pause { at: now, credit: unused_time(end, now) });
                next.pause_at_period_end = false;
                next.collection = None;
                next.next_attempt_at = None;
                next.done(vec![EventKind::SubscriptionPaused])
            }
        }
    }

    /// The paid period ended with a pause scheduled (renew's `PauseAtPeriodEnd`).
    pub fn pause_at_period_end_reached(&self, now: Timestamp) -> Result<Transition> {
        self.require(&[SubscriptionState::Active], "pause")?;
        if !self.pause_at_period_end {
            return Err(self.illegal("pause at period end without a scheduled pause"));
        }
        let end = self.paid_through().ok_or(self.illegal("pause"))?;
        let mut next = self.clone();
        next.state = SubscriptionState::Paused;
        next.pause = Some(Pause { at: end.min(now), credit: SignedDuration::ZERO });
        next.pause_at_period_end = false;
        next.next_attempt_at = None;
        next.done(vec![EventKind::SubscriptionPaused])
    }

    /// Resume at `now`. A paused subscription is re-anchored at `now + credit`: the next period
    /// starts (and is charged) then, and later periods follow from the new anchor. Resuming an
    /// active subscription with a scheduled pause just cancels that pause.
    pub fn resume(&self, now: Timestamp) -> Result<Transition> {
        match self.state {
            SubscriptionState::Active if self.pause_at_period_end => {
                let mut next = self.clone();
                next.pause_at_period_end = false;
                if self.renewer == Renewer::Pg && !self.cancel_at_period_end {
                    // Nothing left for renew to end: the PG renews it.
                    next.next_attempt_at = None;
                }
                next.done(vec![])
            }
            SubscriptionState::Paused => {
                let pause = self.pause.clone().ok_or(self.illegal("resume"))?;
                let paid = self.current_period.ok_or(self.illegal("resume"))?;
                let anchor = now.saturating_add(pause.credit).unwrap_or(now);
                let schedule = self.schedule("resume")?.reanchored(anchor, paid.index + 1);
                let mut next = self.clone();
                next.state = SubscriptionState::Active;
                next.schedule = Some(schedule);
                next.pause = None;
                // The paid period now ends where the new schedule starts.
                next.current_period = Some(Period { end: anchor, ..paid });
                next.next_attempt_at = next.next_for_period(&Period { end: anchor, ..paid });
                if self.renewer == Renewer::Pg && self.cancel_at_period_end {
                    // Still ending: renew ends it when the (re-anchored) paid time is over.
                    next.next_attempt_at = Some(anchor);
                }
                next.done(vec![EventKind::SubscriptionResumed])
            }
            _ => Err(self.illegal("resume")),
        }
    }

    /// Cancel now, or (only while active) at the end of the paid period.
    pub fn cancel(&self, now: Timestamp, at_period_end: bool) -> Result<Transition> {
        use SubscriptionState::*;
        self.require(&[Incomplete, Active, PastDue, Unpaid, Paused, NeedsReview], "cancel")?;
        if self.state != NeedsReview {
            self.no_unknown_outcome()?;
        }
        let mut next = self.clone();
        if at_period_end && self.state == Active {
            next.cancel_at_period_end = true;
            if self.renewer == Renewer::Pg {
                // The PG stops renewing; renew ends it here when the paid period ends.
                next.next_attempt_at = self.paid_through();
            }
            return next.done(vec![]);
        }
        next.state = Canceled;
        next.canceled_at = Some(now);
        next.next_attempt_at = None;
        // In review, renew has stopped and nothing is in flight, but the charge's outcome is still
        // unknown: it stays on record, so a later PG hint (or a person) still settles it.
        if self.state != NeedsReview {
            next.collection = None;
        }
        next.pause = None;
        next.pause_at_period_end = false;
        next.cancel_at_period_end = false;
        next.done(vec![EventKind::SubscriptionCanceled])
    }

    /// The paid period ended with a cancel scheduled (renew's `CancelAtPeriodEnd`).
    pub fn period_end_cancel(&self, now: Timestamp) -> Result<Transition> {
        self.require(&[SubscriptionState::Active], "cancel at period end")?;
        if !self.cancel_at_period_end {
            return Err(self.illegal("cancel at period end without a scheduled cancel"));
        }
        let mut next = self.clone();
        next.state = SubscriptionState::Canceled;
        next.canceled_at = Some(self.paid_through().unwrap_or(now).min(now));
        next.next_attempt_at = None;
        next.done(vec![EventKind::SubscriptionCanceled])
    }
}

#[cfg(test)]
mod tests;
