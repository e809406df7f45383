//! Reconciliation (DESIGN §13): every charge the PG made is a payment here with the same amount
//! and refunds, and every payment here is a charge the PG made.
//!
//! [`compare`] is the one comparison, whatever gathered its two sides: `make demo` and the chaos
//! suite take the PG's side from the sandbox's ledger; the `reconcile` function takes it from the
//! PGs' own lookups of the previous KST day's payments, attempts and refunds ([`gather`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::Krw;

/// One payment as one side sees it, under paycycle's payment id (`payment_id_for(pg, PG id)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub payment_id: String,
    /// The PG's id of it (StepPay idKey, Payple OID), for a person to look up.
    pub pg_payment_id: String,
    pub amount: Krw,
    /// `None`: this side cannot say what was refunded (Payple's lookup shows no refunds).
    pub refunded: Option<Krw>,
}

/// One way the two sides disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The PG charged it; paycycle has no payment.
    MissingHere {
        payment_id: String,
        pg_payment_id: String,
        amount: Krw,
    },
    /// paycycle has a payment the PG does not show paid.
    MissingAtPg {
        payment_id: String,
        pg_payment_id: String,
        amount: Krw,
    },
    AmountDiffers {
        payment_id: String,
        pg_payment_id: String,
        pg: Krw,
        ours: Krw,
    },
    RefundDiffers {
        payment_id: String,
        pg_payment_id: String,
        pg: Krw,
        ours: Krw,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::MissingHere { pg_payment_id, amount, .. } => {
                write!(f, "the PG charged {pg_payment_id} ({amount}) but paycycle has no payment")
            }
            Difference::MissingAtPg { payment_id, amount, .. } => {
                write!(f, "paycycle has payment {payment_id} ({amount}) the PG does not show paid")
            }
            Difference::AmountDiffers { payment_id, pg, ours, .. } => {
                write!(f, "{payment_id}: the PG {pg} vs paycycle {ours}")
            }
            Difference::RefundDiffers { payment_id, pg, ours, .. } => {
                write!(f, "{payment_id}: the PG refunded {pg} vs paycycle {ours}")
            }
        }
    }
}

/// What [`compare`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Payments both sides show alike.
    pub matched: u64,
    pub pg_charges: u64,
    pub pg_charged: i64,
    pub pg_refunded: i64,
    pub our_payments: u64,
    pub our_charged: i64,
    pub our_refunded: i64,
    /// Payments whose refunds only one side could show (not a difference).
    pub refunds_unchecked: u64,
    pub differences: Vec<Difference>,
}

impl Comparison {
    /// How many of each kind of difference: missing here, missing at the PG, amount, refund.
    pub fn counts(&self) -> [u64; 4] {
        let mut c = [0; 4];
        for d in &self.differences {
            c[match d {
                Difference::MissingHere { .. } => 0,
                Difference::MissingAtPg { .. } => 1,
                Difference::AmountDiffers { .. } => 2,
                Difference::RefundDiffers { .. } => 3,
            }] += 1;
        }
        c
    }
}

/// Both sides, payment by payment. A refunded amount is compared only where both sides show one.
pub fn compare(pg: &[Seen], ours: &[Seen]) -> Comparison {
    let mut c = Comparison::default();
    let ours_by_id: BTreeMap<&str, &Seen> = ours.iter().map(|s| (s.payment_id.as_str(), s)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for p in pg {
        c.pg_charges += 1;
        c.pg_charged += p.amount.won();
        c.pg_refunded += p.refunded.map(Krw::won).unwrap_or(0);
        seen.insert(p.payment_id.as_str());
        let (payment_id, pg_payment_id) = (p.payment_id.clone(), p.pg_payment_id.clone());
        let Some(o) = ours_by_id.get(p.payment_id.as_str()) else {
            c.differences.push(Difference::MissingHere { payment_id, pg_payment_id, amount: p.amount });
            continue;
        };
        if o.amount != p.amount {
            c.differences.push(Difference::AmountDiffers { payment_id, pg_payment_id, pg: p.amount, ours: o.amount });
            continue;
        }
        match (p.refunded, o.refunded) {
            (Some(pg), Some(ours)) if pg != ours => {
                c.differences.push(Difference::RefundDiffers { payment_id, pg_payment_id, pg, ours });
            }
            (Some(_), Some(_)) => c.matched += 1,
            _ => {
                c.refunds_unchecked += 1;
                c.matched += 1;
            }
        }
    }
    for o in ours {
        c.our_payments += 1;
        c.our_charged += o.amount.won();
        c.our_refunded += o.refunded.map(Krw::won).unwrap_or(0);
        if !seen.contains(o.payment_id.as_str()) {
            c.differences.push(Difference::MissingAtPg {
                payment_id: o.payment_id.clone(),
                pg_payment_id: o.pg_payment_id.clone(),
                amount: o.amount,
            });
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, amount: i64, refunded: Option<i64>) -> Seen {
        Seen {
            payment_id: format!("pay_{id}"),
            pg_payment_id: id.into(),
            amount: Krw::new(amount).unwrap(),
            refunded: refunded.map(|r| Krw::new(r).unwrap()),
        }
    }

    #[test]
    fn every_kind_of_difference_is_named_and_alike_payments_match() {
        let pg = [seen("a", 100, Some(0)), seen("b", 200, Some(50)), seen("c", 300, Some(0)), seen("d", 400, None)];
        let ours = [
            seen("a", 100, Some(0)),
            seen("b", 200, Some(0)),
            seen("c", 350, Some(0)),
            seen("d", 400, Some(100)),
            seen("e", 9, Some(0)),
        ];
        let c = compare(&pg, &ours);
        assert_eq!(c.counts(), [0, 1, 1, 1], "{:?}", c.differences);
        assert_eq!((c.matched, c.refunds_unchecked), (2, 1), "a matches; d's refunds only one side shows");
        assert_eq!((c.pg_charges, c.pg_charged, c.our_payments, c.our_charged), (4, 1_000, 5, 1_059));
        let c = compare(&[seen("x", 100, Some(0))], &[]);
        assert_eq!(
            c.differences,
            [Difference::MissingHere {
                payment_id: "pay_x".into(),
                pg_payment_id: "x".into(),
                amount: Krw::new(100).unwrap()
            }]
        );
        assert_eq!(c.differences[0].to_string(), "the PG charged x (100원) but paycycle has no payment");
        assert!(compare(&ours, &ours).differences.is_empty());
    }
}

/// How fast the reconciler may ask the PGs: one look-up per `interval` at most, so it never
/// competes with renew for them (`PAYCYCLE_RECONCILE_PER_SECOND`, default 5).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub interval: std::time::Duration,
}

impl Pace {
    pub fn per_second(n: u32) -> Self {
        Self { interval: std::time::Duration::from_millis(1_000 / u64::from(n.clamp(1, 1_000))) }
    }
}

/// What a day's reconciliation looked at, beside the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Looked {
    pub payments: u64,
    /// Attempts not approved here, asked about at the PG (a charge it made that we missed).
    pub attempts: u64,
    pub refunds: u64,
    /// Look-ups the PG did not answer, or cannot make (StepPay by our charge id): not compared.
    pub unchecked: u64,
    /// Everything was looked at before the deadline.
    pub complete: bool,
}

/// The two sides of KST day `day` (`YYYYMMDD`): ours — the day's payments and the payments of the
/// day's refunds — and the PG's answer for each; plus every charge attempt of the day not
/// approved here that the PG shows paid. Stops looking at `deadline` (wall clock), if there is one.
pub async fn gather(
    store: &crate::store::Store,
    pgs: &crate::pg::Registry,
    day: &str,
    pace: Pace,
    deadline: Option<jiff::Timestamp>,
) -> Result<(Vec<Seen>, Vec<Seen>, Looked), crate::store::StoreError> {
    use crate::domain::attempt::AttemptStatus;
    let mut g = Gathering { pgs, pace, deadline, pg: Vec::new(), ours: Vec::new(), looked: Looked::default() };
    let mut payments = store.payments_of_day(day).await?;
    for refund in store.refunds_of_day(day).await? {
        if !payments.iter().any(|p| p.payment_id == refund.payment_id) {
            if let Some(p) = store.get_payment(&refund.payment_id).await? {
                g.looked.refunds += 1;
                payments.push(p);
            }
        }
    }
    for p in &payments {
        if !g.payment(p).await {
            return Ok(g.done(false));
        }
    }
    for a in store.attempts_of_day(day).await? {
        if matches!(a.status, AttemptStatus::Approved { .. }) {
            continue;
        }
        let Some(sub) = store.get_subscription(a.charge_id.subscription()).await? else { continue };
        if !g.attempt(store, &a, sub.pg).await? {
            return Ok(g.done(false));
        }
    }
    Ok(g.done(true))
}

/// One reconciliation's look-ups as they go.
struct Gathering<'a> {
    pgs: &'a crate::pg::Registry,
    pace: Pace,
    deadline: Option<jiff::Timestamp>,
    pg: Vec<Seen>,
    ours: Vec<Seen>,
    looked: Looked,
}

impl Gathering<'_> {
    /// Waits for the next PG call's turn; `false` past the deadline.
    async fn turn(&self) -> bool {
        tokio::time::sleep(self.pace.interval).await;
        self.deadline.is_none_or(|d| jiff::Timestamp::now() < d)
    }

    fn done(self, complete: bool) -> (Vec<Seen>, Vec<Seen>, Looked) {
        (self.pg, self.ours, Looked { complete, ..self.looked })
    }

    /// Our payment `p` and what the PG says of it; unchecked (on neither side) if it cannot say.
    async fn payment(&mut self, p: &crate::store::payments::PaymentRecord) -> bool {
        use crate::pg::{PaymentState, RefundLookupCapability};
        if !self.turn().await {
            return false;
        }
        self.looked.payments += 1;
        let adapter = self.pgs.adapter(p.pg);
        let refunds_shown = adapter.capabilities().refund_lookup != RefundLookupCapability::None;
        let reference = shown(p.pg, &p.pg_payment_id);
        let seen = |amount: Krw, refunded: Krw| Seen {
            payment_id: p.payment_id.clone(),
            pg_payment_id: reference.clone(),
            amount,
            refunded: refunds_shown.then_some(refunded),
        };
        match look_up(&adapter, p).await {
            Ok((PaymentState::Paid { amount, refunded, .. }, _)) => self.pg.push(seen(amount, refunded)),
            Ok((PaymentState::Refunded { amount, .. }, _)) => self.pg.push(seen(amount, amount)),
            Ok((PaymentState::Failed { .. } | PaymentState::Pending, _)) | Err(crate::pg::PgError::NotFound) => {}
            Err(e) => {
                tracing::warn!(payment_id = %p.payment_id, error = %e, "reconciliation: the PG did not answer; not compared");
                self.looked.unchecked += 1;
                return true;
            }
        }
        self.ours.push(Seen {
            payment_id: p.payment_id.clone(),
            pg_payment_id: reference,
            amount: p.amounts.paid,
            refunded: Some(p.amounts.refunded),
        });
        true
    }

    /// A charge attempt not approved here: if the PG shows it paid and paycycle has no payment of
    /// it, the PG's side has a charge ours does not.
    async fn attempt(
        &mut self,
        store: &crate::store::Store,
        a: &crate::domain::attempt::Attempt,
        mode: crate::pg::PgMode,
    ) -> Result<bool, crate::store::StoreError> {
        use crate::pg::PaymentState;
        if !self.turn().await {
            return Ok(false);
        }
        self.looked.attempts += 1;
        let (pg_payment_id, amount) = match self.pgs.adapter(mode).find_charge(a).await {
            Ok((
                PaymentState::Paid { pg_payment_id, amount, .. } | PaymentState::Refunded { pg_payment_id, amount },
                _,
            )) => (pg_payment_id, amount),
            Ok(_) | Err(crate::pg::PgError::NotFound) => return Ok(true),
            Err(_) => {
                self.looked.unchecked += 1;
                return Ok(true);
            }
        };
        let payment_id = crate::store::payments::payment_id_for(mode, &pg_payment_id);
        let known =
            self.pg.iter().any(|s| s.payment_id == payment_id) || store.get_payment(&payment_id).await?.is_some();
        if !known {
            self.pg.push(Seen { payment_id, pg_payment_id: shown(mode, &pg_payment_id), amount, refunded: None });
        }
        Ok(true)
    }
}

/// A PG reference as a report may show it: masked where it may be a billing key (a StepPay idKey:
/// `Capabilities::references_are_ours` is false), whole where paycycle chose it (Payple's OID).
fn shown(mode: crate::pg::PgMode, reference: &str) -> String {
    mode.shown_reference(reference)
}

/// Payment `p` at its PG. Where the PG looks payments up by the KST date they were requested
/// (Payple), under its payment date and the day before: a charge sent just before midnight is
/// approved (and dated) the next day, and a charge whose answer was lost is dated when renew
/// learned it.
async fn look_up(
    adapter: &crate::pg::Adapter<'_>,
    p: &crate::store::payments::PaymentRecord,
) -> Result<(crate::pg::PaymentState, crate::pg::PaymentDetails), crate::pg::PgError> {
    use crate::pg::Lookup;
    let mut dates = vec![p.pay_date_kst.clone()];
    if adapter.capabilities().lookup_by_date {
        if let Some(before) = day_before(&p.pay_date_kst) {
            dates.push(before);
        }
    }
    let mut found = Err(crate::pg::PgError::NotFound);
    for date in dates {
        let q = Lookup::PgPayment { pg_payment_id: p.pg_payment_id.clone(), request_date_kst: Some(date) };
        match adapter.lookup(&q).await {
            Err(crate::pg::PgError::NotFound) => {}
            other => {
                found = other;
                break;
            }
        }
    }
    found
}

/// `YYYYMMDD` of the day before `day`.
fn day_before(day: &str) -> Option<String> {
    let date = jiff::civil::Date::strptime("%Y%m%d", day).ok()?;
    Some(date.yesterday().ok()?.strftime("%Y%m%d").to_string())
}
