//! What a PG needs to find one of our charges again — the attempt's [`PgTrace`], the adapter's
//! reference data the domain only carries: the KST dates a charge was sent on (Payple's result
//! lookup is by OID and date) and the PG's payment id a verified webhook named (StepPay has no
//! lookup by our charge id). [`sent`] records a send; [`Adapter::find_charge`] asks the PG.

use jiff::Timestamp;
use paycycle_domain::attempt::{Attempt, PgTrace};
use paycycle_domain::calendar::kst_yyyymmdd;

use crate::{Adapter, Lookup, PaymentDetails, PaymentState, PgError};

/// The request of `attempt` goes out (again) at `at`: Payple's result lookup is by the KST date
/// the PG received it, so the date is the send moment's, not the tick's billing date. The dates it
/// was sent on before are kept ([`sent_dates`]).
pub fn sent(attempt: &Attempt, at: Timestamp) -> Attempt {
    let date = kst_yyyymmdd(at);
    let trace = &attempt.pg;
    let mut earlier = trace.earlier_request_dates_kst.clone();
    if !trace.request_date_kst.is_empty()
        && date != trace.request_date_kst
        && !earlier.contains(&trace.request_date_kst)
    {
        earlier.push(trace.request_date_kst.clone());
    }
    earlier.retain(|d| *d != date);
    let pg = PgTrace { request_date_kst: date, earlier_request_dates_kst: earlier, ..trace.clone() };
    Attempt { pg, ..attempt.clone() }
}

/// Every KST date the charge was sent on, the latest first. An attempt recorded before it was
/// sent (none should be) counts as sent on the day it was requested: never no date at all.
pub fn sent_dates(attempt: &Attempt) -> Vec<String> {
    let trace = &attempt.pg;
    let latest = if trace.request_date_kst.is_empty() {
        kst_yyyymmdd(attempt.requested_at)
    } else {
        trace.request_date_kst.clone()
    };
    let mut dates = vec![latest];
    for d in trace.earlier_request_dates_kst.iter().rev() {
        if !dates.contains(d) {
            dates.push(d.clone());
        }
    }
    dates
}

/// Whether a verified PG webhook named this charge's payment (the PG reached a verdict on it).
pub fn named_by_webhook(attempt: &Attempt) -> bool {
    attempt.pg.pg_payment_hint.is_some()
}

/// The most dates one look-up asks Payple under (each is a partner auth + a lookup): bounds the
/// worst renewal path (renew's `WORST_PATH_PG_CALLS`). Within the default 24 h review window a
/// charge is sent on at most two KST dates, so every date is asked; a longer window asks the
/// latest ones and the original.
pub const MAX_LOOKUP_DATES: usize = 3;

/// The dates to look `attempt` up under: the latest sends first, and the original, at most
/// [`MAX_LOOKUP_DATES`].
pub fn lookup_dates(attempt: &Attempt) -> Vec<String> {
    let mut dates: Vec<String> = sent_dates(attempt).into_iter().take(MAX_LOOKUP_DATES - 1).collect();
    match attempt.pg.earlier_request_dates_kst.first() {
        Some(original) if !dates.contains(original) => dates.push(original.clone()),
        _ => {}
    }
    dates
}

impl Adapter<'_> {
    /// Asks the PG about `attempt`: by the payment id a verified webhook named (StepPay cannot be
    /// asked by our charge id), else by the charge id — where the PG looks up by date (Payple),
    /// under every KST date it was sent on (a charge re-sent on another day may be known under
    /// the earlier one). Paid anywhere wins; then anything inconclusive (pending, no answer); then
    /// a failure; `NotFound` only when no date knows it.
    pub async fn find_charge(&self, attempt: &Attempt) -> Result<(PaymentState, PaymentDetails), PgError> {
        let dates = if self.capabilities().lookup_by_date {
            lookup_dates(attempt)
        } else {
            sent_dates(attempt).into_iter().take(1).collect()
        };
        let mut found = Err(PgError::NotFound);
        for date in dates {
            let q = match &attempt.pg.pg_payment_hint {
                Some(id) => Lookup::PgPayment { pg_payment_id: id.clone(), request_date_kst: Some(date) },
                None => Lookup::Charge { charge_id: attempt.charge_id.clone(), request_date_kst: date },
            };
            match self.lookup(&q).await {
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

    /// Asks the PG about payment `pg_payment_id` as the payment of `attempt`'s charge — what a
    /// person names when they settle a charge in review as paid. The PG must show it is this
    /// charge's, not just any payment: Payple's OID is our charge id (the re-payment sends it as
    /// `PCD_PAY_OID`, seed 003), looked up under every date the charge was sent on; StepPay's
    /// receipt must name the charge id as its `partnerOrderId`
    /// ([`SteppayClient::charge_state`](crate::steppay::SteppayClient::charge_state)). StepPay
    /// managed renewals are StepPay's own: paycycle never charges them, so has none in review.
    pub async fn confirm_charge(
        &self,
        attempt: &Attempt,
        pg_payment_id: &str,
    ) -> Result<(PaymentState, PaymentDetails), PgError> {
        let charge_id = attempt.charge_id.to_string();
        match self {
            Adapter::Payple(_) if pg_payment_id != charge_id => Err(PgError::Mismatch(format!(
                "Payple OID {pg_payment_id} is not charge {charge_id}'s (its OID is the charge id)"
            ))),
            Adapter::Payple(_) => {
                let named = Attempt {
                    pg: PgTrace { pg_payment_hint: Some(pg_payment_id.to_string()), ..attempt.pg.clone() },
                    ..attempt.clone()
                };
                self.find_charge(&named).await
            }
            Adapter::SteppaySelf(c) => {
                c.charge_state(pg_payment_id, &charge_id).await.map(|s| (s, PaymentDetails::default()))
            }
            Adapter::SteppayManaged(_) => Err(PgError::Unsupported("StepPay renews managed subscriptions itself")),
        }
    }
}

#[cfg(test)]
mod tests {
    use paycycle_domain::attempt::{AttemptStatus, ChargeId, SubscriptionId};
    use paycycle_domain::money::Krw;

    use super::*;

    fn attempt(at: Timestamp) -> Attempt {
        let id = ChargeId::new(SubscriptionId::parse("sub_a").unwrap(), 1, 1).unwrap();
        Attempt::new(id, Krw::new(9_900).unwrap(), at)
    }

    #[test]
    fn a_send_records_its_kst_date() {
        let at: Timestamp = "2027-02-28T15:30:00Z".parse().unwrap();
        let a = sent(&attempt(at), at);
        assert_eq!(a.pg.request_date_kst, "20270301");
        assert_eq!(a.status, AttemptStatus::Pending);
    }

    #[test]
    fn a_charge_resent_on_other_days_keeps_every_date_it_was_sent_on() {
        let at: Timestamp = "2027-02-28T01:00:00Z".parse().unwrap();
        let day = |d: i64| at.checked_add(jiff::SignedDuration::from_hours(24 * d)).unwrap();
        let a = sent(&attempt(at), at);
        assert_eq!(sent_dates(&a), ["20270228"]);
        assert_eq!(sent_dates(&sent(&a, at)), ["20270228"], "same day: nothing new");
        let b = sent(&sent(&a, day(1)), day(2));
        assert_eq!(b.pg.request_date_kst, "20270302");
        assert_eq!(sent_dates(&b), ["20270302", "20270301", "20270228"]);
        // Back on a day it was sent before: still every date once, the latest send first.
        assert_eq!(sent_dates(&sent(&b, day(0))), ["20270228", "20270302", "20270301"]);
    }

    #[test]
    fn an_attempt_never_sent_is_looked_up_on_the_day_it_was_requested() {
        let at: Timestamp = "2027-02-28T15:30:00Z".parse().unwrap();
        assert_eq!(sent_dates(&attempt(at)), ["20270301"]);
        assert_eq!(sent_dates(&sent(&attempt(at), at)), ["20270301"], "the first send is not an earlier date");
    }

    #[test]
    fn a_charge_is_looked_up_under_its_latest_send_dates_and_the_original() {
        let at: Timestamp = "2027-02-28T01:00:00Z".parse().unwrap();
        let day = |d: i64| at.checked_add(jiff::SignedDuration::from_hours(24 * d)).unwrap();
        let a = sent(&attempt(at), at);
        assert_eq!(lookup_dates(&a), ["20270228"]);
        assert_eq!(lookup_dates(&sent(&a, day(1))), ["20270301", "20270228"]);
        let many = sent(&sent(&sent(&a, day(1)), day(2)), day(3));
        assert_eq!(lookup_dates(&many), ["20270303", "20270302", "20270228"]);
        assert!(lookup_dates(&many).len() <= MAX_LOOKUP_DATES);
    }
}
