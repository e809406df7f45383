//! Dunning: what happens after a renewal is declined.
//!
//! Retries are offsets from the period's due time (default +1, +3, +5, +7 days), not from the last
//! failure, so a slow retry never pushes the schedule. A hard decline (deleted billing key, lost or
//! stolen card, closed account) stops at once: retrying it only annoys the card company. When the
//! retries run out, the subscription becomes `unpaid` (kept, can be recovered) or `canceled`.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalAction {
    Unpaid,
    Canceled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningPolicy {
    /// Days after the due time for each retry, strictly increasing. The first try is at the due
    /// time itself and is not listed.
    pub retry_offsets_days: Vec<u16>,
    pub final_action: FinalAction,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self { retry_offsets_days: vec![1, 3, 5, 7], final_action: FinalAction::Unpaid }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("retry offsets must be strictly increasing whole days between 1 and 60, got {0:?}")]
    BadOffsets(Vec<u16>),
    #[error("at most 10 retries are allowed, got {0}")]
    TooManyRetries(usize),
}

/// What to do after a declined attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DunningDecision {
    /// Try again at this time (attempt number `attempt`).
    Retry { at: Timestamp, attempt: u8 },
    /// Stop: the subscription takes the policy's final action.
    GiveUp(FinalAction),
}

impl DunningPolicy {
    pub fn new(retry_offsets_days: Vec<u16>, final_action: FinalAction) -> Result<Self, PolicyError> {
        if retry_offsets_days.len() > 10 {
            return Err(PolicyError::TooManyRetries(retry_offsets_days.len()));
        }
        let increasing = retry_offsets_days.windows(2).all(|w| w[0] < w[1]);
        let in_range = retry_offsets_days.iter().all(|d| (1..=60).contains(d));
        if !increasing || !in_range {
            return Err(PolicyError::BadOffsets(retry_offsets_days));
        }
        Ok(Self { retry_offsets_days, final_action })
    }

    /// After attempt number `failed_attempt` (1 = the first try at `due_at`) was declined at `now`.
    /// A retry is never scheduled in the past: if its offset has already passed (renew was down),
    /// it is due now.
    pub fn after_decline(&self, due_at: Timestamp, failed_attempt: u8, hard: bool, now: Timestamp) -> DunningDecision {
        if hard {
            return DunningDecision::GiveUp(self.final_action);
        }
        // Retry k (k = failed_attempt) uses offset index k - 1.
        match self.retry_offsets_days.get(usize::from(failed_attempt.saturating_sub(1))) {
            Some(days) => {
                let at = due_at.saturating_add(SignedDuration::from_hours(i64::from(*days) * 24)).unwrap_or(due_at);
                DunningDecision::Retry { at: at.max(now), attempt: failed_attempt.saturating_add(1) }
            }
            None => DunningDecision::GiveUp(self.final_action),
        }
    }

    /// How many attempts a period gets at most (first try + retries).
    pub fn max_attempts(&self) -> u8 {
        u8::try_from(self.retry_offsets_days.len() + 1).unwrap_or(u8::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_retries_at_1_3_5_7_days_then_unpaid() {
        let p = DunningPolicy::default();
        let due = t("2027-02-28T01:00:00Z");
        let mut now = due;
        let mut retries = Vec::new();
        for attempt in 1..=5u8 {
            match p.after_decline(due, attempt, false, now) {
                DunningDecision::Retry { at, attempt: next } => {
                    assert_eq!(next, attempt + 1);
                    retries.push(at);
                    now = at;
                }
                DunningDecision::GiveUp(action) => {
                    assert_eq!(attempt, 5);
                    assert_eq!(action, FinalAction::Unpaid);
                }
            }
        }
        assert_eq!(
            retries,
            [
                t("2027-03-01T01:00:00Z"),
                t("2027-03-03T01:00:00Z"),
                t("2027-03-05T01:00:00Z"),
                t("2027-03-07T01:00:00Z")
            ]
        );
        assert_eq!(p.max_attempts(), 5);
    }

    #[test]
    fn hard_declines_stop_at_once() {
        let p = DunningPolicy::new(vec![2], FinalAction::Canceled).unwrap();
        let due = t("2027-02-28T01:00:00Z");
        assert_eq!(p.after_decline(due, 1, true, due), DunningDecision::GiveUp(FinalAction::Canceled));
    }

    #[test]
    fn a_late_retry_is_due_now_not_in_the_past() {
        let p = DunningPolicy::default();
        let due = t("2027-02-28T01:00:00Z");
        let late = t("2027-03-02T00:00:00Z");
        assert_eq!(p.after_decline(due, 1, false, late), DunningDecision::Retry { at: late, attempt: 2 });
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(DunningPolicy::new(vec![3, 1], FinalAction::Unpaid).is_err());
        assert!(DunningPolicy::new(vec![0], FinalAction::Unpaid).is_err());
        assert!(DunningPolicy::new(vec![1, 1], FinalAction::Unpaid).is_err());
        assert!(DunningPolicy::new((1..=11).collect(), FinalAction::Unpaid).is_err());
        assert_eq!(DunningPolicy::new(vec![], FinalAction::Canceled).unwrap().max_attempts(), 1);
    }
}
