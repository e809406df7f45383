//! A PG's request budget (issue 25 §2): how many requests may be in flight to it and how many may
//! start per second, across every process that charges through it. A PG sells a contract, not a
//! firehose: a million renewals due on the 1st must reach it no faster than it agreed to take them.
//!
//! The totals are the operator's (template parameters: what the PG contract allows — neither
//! StepPay's nor Payple's public documents state a rate limit, so there is no default to cite).
//! Each process takes its share: the totals divided by the processes that share them (the renew
//! workers' maximum concurrency), so workers × share never exceeds the total.
//!
//! A PG that answers `429` or `5xx` is congested: every request of this process to it then waits
//! (`Retry-After` when the PG gives one, else a pause that doubles with each congested answer, up
//! to [`MAX_PAUSE`]) and the pace stays slowed until answers come back clean. Nothing is retried
//! here: a charge whose answer was a 5xx is an unknown outcome, looked up later by renew, never
//! sent again blind. The budget only decides when the next request may start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The first pause after a congested answer; it doubles with each one in a row.
pub const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause (and the most of a `Retry-After` honoured).
pub const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Clean answers in a row that halve the slowdown.
const CALM_AFTER: u32 = 8;
/// The most the pace is slowed (the interval between starts times this).
const MAX_SLOWDOWN: u32 = 32;

/// The totals of one PG's budget, shared by `sharers` processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Requests in flight at once (all processes together).
    pub in_flight: Option<u32>,
    /// Requests started per second (all processes together).
    pub per_second: Option<u32>,
}

impl BudgetLimits {
    /// This process's share when `sharers` processes share the totals; `None` when a total is
    /// smaller than the number of sharers (each would get less than one).
    pub fn share(self, sharers: u32) -> Option<Share> {
        let sharers = sharers.max(1);
        let in_flight = match self.in_flight {
            Some(total) if total < sharers => return None,
            Some(total) => Some(total / sharers),
            None => None,
        };
        // `sharers / per_second` seconds between two starts of this process.
        let interval = match self.per_second {
            Some(0) => return None,
            Some(rate) => Some(Duration::from_nanos(1_000_000_000 * u64::from(sharers) / u64::from(rate))),
            None => None,
        };
        Some(Share { in_flight, interval })
    }
}

/// One process's part of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub in_flight: Option<u32>,
    /// The least time between two request starts.
    pub interval: Option<Duration>,
}

tokio::task_local! {
    /// The latest moment a request of this task may start ([`sending_by`]).
    static SEND_BY: Instant;
}

/// Runs `f` with a send-by time: a request of `f` that cannot get its slot and its turn by
/// `deadline` is not sent at all ([`Unsent::NoRoom`]). renew sets it from the claim's lease: a
/// charge must be answered (or timed out) before the lease ends and another worker may look it
/// up and send it again.
pub async fn sending_by<F: std::future::Future>(deadline: Instant, f: F) -> F::Output {
    SEND_BY.scope(deadline, f).await
}

/// Why a request was not answered.
#[derive(Debug)]
pub enum Unsent {
    /// The budget had no room before the send-by time: the request never left.
    NoRoom,
    /// It was sent (or tried): the HTTP client's error.
    Http(reqwest::Error),
}

impl Unsent {
    /// As a PG error: not sent at all is [`PgError::Transient`] whatever the request; an HTTP
    /// failure is classed as [`crate::transport_error`] does.
    pub fn into_pg(self, moves_money: bool) -> crate::PgError {
        match self {
            Unsent::NoRoom => crate::PgError::Transient {
                reason: "not sent: the PG's budget had no room before the claim's send-by time".into(),
            },
            Unsent::Http(e) => crate::transport_error(&e, moves_money),
        }
    }
}

/// One PG's budget in this process, shared by every call to that PG (cheap to clone).
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pg: &'static str,
    in_flight: Option<Arc<Semaphore>>,
    limit: Option<u32>,
    interval: Duration,
    pace: Mutex<Pace>,
}

#[derive(Debug)]
struct Pace {
    /// When the next request may start.
    next: Instant,
    /// Until when the last congested answer paused every request.
    paused_until: Instant,
    /// The interval is multiplied by this while the PG is congested.
    slowdown: u32,
    /// The pause after the next congested answer.
    pause: Duration,
    calm: u32,
}

/// How the PG answered one request, for the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Any answer that is not congestion (a decline is an answer too).
    Clean,
    /// `429` or `5xx`, with the PG's `Retry-After`, if any.
    Congested { retry_after: Option<Duration> },
}

impl Answer {
    /// What an HTTP answer says about congestion.
    pub fn of(response: &reqwest::Response) -> Self {
        let status = response.status().as_u16();
        if status != 429 && !(500..=599).contains(&status) {
            return Answer::Clean;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Answer::Congested { retry_after }
    }
}

impl Budget {
    /// A budget with this process's `share` of `pg`'s limits.
    pub fn new(pg: &'static str, share: Share) -> Self {
        let now = Instant::now();
        let pace = Pace { next: now, paused_until: now, slowdown: 1, pause: FIRST_PAUSE, calm: 0 };
        Self {
            inner: Arc::new(Inner {
                pg,
                in_flight: share.in_flight.map(|n| Arc::new(Semaphore::new(n as usize))),
                limit: share.in_flight,
                interval: share.interval.unwrap_or_default(),
                pace: Mutex::new(pace),
            }),
        }
    }

    /// No limits, only the slowdown on congestion.
    pub fn unlimited(pg: &'static str) -> Self {
        Self::new(pg, Share { in_flight: None, interval: None })
    }

    /// Sends `request` when the budget allows: a free slot, then its turn at the pace (and past
    /// any pause a congested answer asked for); the answer is observed for congestion. The slot
    /// is held until the answer's headers arrive. Under [`sending_by`], nothing is sent once the
    /// send-by time has passed.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Unsent> {
        let send_by = SEND_BY.try_with(|d| *d).ok();
        let _slot = match &self.inner.in_flight {
            Some(slots) => {
                let acquire = slots.clone().acquire_owned();
                let permit = match send_by {
                    Some(by) => tokio::time::timeout_at(by, acquire).await.map_err(|_| Unsent::NoRoom)?,
                    None => acquire.await,
                };
                Some(permit.expect("the budget's semaphore is never closed"))
            }
            None => None,
        };
        let mut turn = self.turn();
        loop {
            if send_by.is_some_and(|by| turn > by) {
                return Err(Unsent::NoRoom);
            }
            if turn > Instant::now() {
                tokio::time::sleep_until(turn).await;
            }
            // A congested answer that came while this request waited pauses it too.
            match self.paused_until() {
                Some(until) if until > turn => turn = until,
                _ => break,
            }
        }
        let result = request.send().await.map_err(Unsent::Http);
        if let Ok(response) = &result {
            self.observe(Answer::of(response));
        }
        result
    }

    /// Until when a congested answer paused this PG's requests, if that is still ahead.
    fn paused_until(&self) -> Option<Instant> {
        let pace = self.inner.pace.lock().unwrap_or_else(PoisonError::into_inner);
        Some(pace.paused_until).filter(|t| *t > Instant::now())
    }

    /// Takes the next start time at the pace.
    fn turn(&self) -> Instant {
        let mut pace = self.inner.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let at = pace.next.max(Instant::now());
        pace.next = at + self.inner.interval * pace.slowdown;
        at
    }

    /// Slows down on congestion; recovers after clean answers in a row.
    pub fn observe(&self, answer: Answer) {
        let mut pace = self.inner.pace.lock().unwrap_or_else(PoisonError::into_inner);
        match answer {
            Answer::Clean => {
                pace.calm += 1;
                if pace.calm >= CALM_AFTER && (pace.slowdown > 1 || pace.pause > FIRST_PAUSE) {
                    pace.calm = 0;
                    pace.slowdown = (pace.slowdown / 2).max(1);
                    pace.pause = (pace.pause / 2).max(FIRST_PAUSE);
                }
            }
            Answer::Congested { retry_after } => {
                let wait = retry_after.unwrap_or(pace.pause).min(MAX_PAUSE);
                pace.paused_until = pace.paused_until.max(Instant::now() + wait);
                pace.next = pace.next.max(pace.paused_until);
                pace.slowdown = (pace.slowdown * 2).min(MAX_SLOWDOWN);
                pace.pause = (pace.pause * 2).min(MAX_PAUSE);
                pace.calm = 0;
                tracing::warn!(
                    pg = self.inner.pg,
                    wait_ms = wait.as_millis() as u64,
                    slowdown = pace.slowdown,
                    "the PG is congested (429/5xx): slowing down"
                );
            }
        }
    }

    /// How much the pace is slowed now (1: not at all).
    pub fn slowdown(&self) -> u32 {
        self.inner.pace.lock().unwrap_or_else(PoisonError::into_inner).slowdown
    }

    /// This process's in-flight limit (`None`: none).
    pub fn in_flight_limit(&self) -> Option<u32> {
        self.inner.limit
    }

    /// Requests that may start now without waiting for a slot (`None`: no in-flight limit).
    pub fn free_slots(&self) -> Option<usize> {
        self.inner.in_flight.as_ref().map(|s| s.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_times_their_share_never_exceeds_the_total() {
        for total in 1..=300u32 {
            for sharers in 1..=64u32 {
                let limits = BudgetLimits { in_flight: Some(total), per_second: Some(total) };
                match limits.share(sharers) {
                    None => assert!(total < sharers),
                    Some(share) => {
                        assert!(share.in_flight.unwrap() * sharers <= total);
                        assert!(share.in_flight.unwrap() >= 1);
                        // sharers starting once per interval each: at most `total` per second.
                        let per_second_all =
                            u64::from(sharers) * 1_000_000_000 / share.interval.unwrap().as_nanos() as u64;
                        assert!(per_second_all <= u64::from(total), "{total} {sharers}");
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_congested_answer_pauses_and_slows_the_pace_and_clean_answers_bring_it_back() {
        let budget = Budget::new("pg", Share { in_flight: Some(4), interval: Some(Duration::from_millis(100)) });
        let first = budget.turn();
        assert_eq!(budget.turn() - first, Duration::from_millis(100), "starts are paced");
        let congested_at = Instant::now();
        budget.observe(Answer::Congested { retry_after: None });
        assert_eq!(budget.slowdown(), 2);
        // The pause (250 ms from the answer) comes before the next start, then starts are 200 ms apart.
        let paused = budget.turn();
        assert!(paused >= congested_at + FIRST_PAUSE, "{:?}", paused - congested_at);
        assert_eq!(budget.turn() - paused, Duration::from_millis(200));
        let congested_at = Instant::now();
        budget.observe(Answer::Congested { retry_after: Some(Duration::from_secs(3)) });
        assert_eq!(budget.slowdown(), 4);
        assert!(budget.turn() >= congested_at + Duration::from_secs(3), "Retry-After is honoured");
        let congested_at = Instant::now();
        budget.observe(Answer::Congested { retry_after: Some(Duration::from_secs(3_600)) });
        assert!(budget.turn() <= congested_at + MAX_PAUSE + Duration::from_secs(1), "capped");
        for _ in 0..(CALM_AFTER * 4) {
            budget.observe(Answer::Clean);
        }
        assert_eq!(budget.slowdown(), 1, "recovered after clean answers");
    }
}
