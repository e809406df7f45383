//! `reconcile` (DESIGN §13): every day, on an EventBridge schedule, the previous KST day compared
//! with the PGs' own records — the day's payments (and the payments of its refunds) looked up at
//! the PG, and the day's charge attempts not approved here asked about (a charge the PG made that
//! paycycle missed) — with the one comparison `make demo` and the chaos suite use
//! ([`paycycle::reconcile::compare`]).
//!
//! The result is a report item (`RECON#{day}`), a `reconciliation.completed` event for the
//! operator (source `paycycle.operations`: no partner receives it), an EMF metric line and, for
//! each difference, an `alarm=paycycle_reconciliation` log line; the `ReconciliationDifferences`
//! alarm fires on any. The PGs are asked at most `PAYCYCLE_RECONCILE_PER_SECOND` times a second
//! (default 5), so reconciliation never competes with renew for them.

use jiff::{SignedDuration, Timestamp};
use lambda_runtime::LambdaEvent;
use paycycle::boot::{Boot, Services};
use paycycle::events::EventPublisher;
use paycycle::pg::Registry;
use paycycle::reconcile::{Comparison, Looked, Pace, compare, gather};
use paycycle::schedule::{TickTimeError, stop_by, tick_time};
use paycycle::store::Store;
use paycycle::store::outbox::OutboxEvent;
use serde::Serialize;
use serde_json::{Value, json};

/// Everything a run needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    pub pgs: Registry,
    pub publisher: EventPublisher,
    pub pace: Pace,
    /// `PAYCYCLE_ALLOW_TIME_TRAVEL=true`: an event may name the `day` (local stack and tests).
    pub allow_time_travel: bool,
}

/// What is left of the Lambda's time when the reconciler stops looking (it then writes what it
/// found, marked incomplete).
pub const DEADLINE_MARGIN: SignedDuration = SignedDuration::from_secs(60);

impl Deps {
    pub fn new(boot: Boot) -> Self {
        let Services { store, pgs, publisher, .. } = Services::new(&boot);
        let per_second = std::env::var("PAYCYCLE_RECONCILE_PER_SECOND")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=100).contains(n))
            .unwrap_or(5);
        let allow_time_travel = std::env::var("PAYCYCLE_ALLOW_TIME_TRAVEL").as_deref() == Ok("true");
        Self { store, pgs, publisher, pace: Pace::per_second(per_second), allow_time_travel }
    }
}

/// A day's reconciliation, as the report item, the event and the answer carry it.
#[derive(Clone, Debug, Serialize)]
pub struct DayReport {
    /// The KST day, `YYYYMMDD`.
    pub day: String,
    pub reconciled_at: String,
    pub looked: Looked,
    pub comparison: Comparison,
}

/// The most differences a report item and its event carry (the log has every one).
pub const MAX_LISTED: usize = 100;

pub async fn handler(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Diagnostic> {
    let day = day_of(&event.payload, deps.allow_time_travel).map_err(|e| lambda_runtime::Diagnostic {
        error_type: format!("Reconcile{}", e.kind()),
        error_message: e.to_string(),
    })?;
    let stop = stop_by(event.context.deadline, DEADLINE_MARGIN);
    let report = run(deps, &day, stop).await.map_err(|e| lambda_runtime::Diagnostic {
        error_type: "ReconcileStore".into(),
        error_message: e.to_string(),
    })?;
    Ok(listed(&report))
}

/// The report with at most [`MAX_LISTED`] differences: what the item, the event and the answer
/// carry (the log has every one).
pub fn listed(report: &DayReport) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(list) = v.pointer_mut("/comparison/differences").and_then(Value::as_array_mut) {
        list.truncate(MAX_LISTED);
    }
    v
}

/// The day to reconcile: the event's `day` (`YYYYMMDD`, with time travel), else the KST day before
/// the event's time (the schedule's `time`; `now` with time travel).
pub fn day_of(payload: &Value, allow_time_travel: bool) -> Result<String, TickTimeError> {
    if let Some(day) = payload.get("day").filter(|v| !v.is_null()) {
        if !allow_time_travel {
            return Err(TickTimeError::TimeTravelNotAllowed);
        }
        return day
            .as_str()
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
            .ok_or(TickTimeError::BadTime);
    }
    let at = tick_time(payload, allow_time_travel)?;
    let yesterday = at.checked_sub(SignedDuration::from_hours(24)).map_err(|_| TickTimeError::BadTime)?;
    Ok(paycycle::calendar::kst_yyyymmdd(yesterday))
}

/// Reconciles `day`: gathers both sides (stopping by `stop`, wall clock), compares, and writes the
/// report, the event, the metric and an alarm line per difference.
pub async fn run(deps: &Deps, day: &str, stop: Option<Timestamp>) -> Result<DayReport, paycycle::store::StoreError> {
    let (pg, ours, looked) = gather(&deps.store, &deps.pgs, day, deps.pace, stop).await?;
    let comparison = compare(&pg, &ours);
    for d in &comparison.differences {
        tracing::error!(alarm = "paycycle_reconciliation", day, difference = ?d, "{d}");
    }
    if !looked.complete {
        tracing::warn!(day, ?looked, "reconciliation stopped at the deadline: the rest was not compared");
    }
    let report = DayReport { day: day.to_string(), reconciled_at: Timestamp::now().to_string(), looked, comparison };
    let listed = listed(&report);
    deps.store.put_reconciliation(day, &listed).await?;
    publish(deps, day, &report, &listed).await;
    for (name, value) in metric_counts(&report) {
        paycycle::metrics::count("reconcile", name, value);
    }
    tracing::info!(
        day,
        matched = report.comparison.matched,
        differences = report.comparison.differences.len(),
        "reconciled"
    );
    Ok(report)
}

/// `reconciliation.completed` for the operator; a failure to publish is logged, never fatal (the
/// report item and the metric carry the same). Its id is the day's and the result's: a retried
/// run that finds the same publishes the same event (consumers drop the repeat).
async fn publish(deps: &Deps, day: &str, report: &DayReport, listed: &Value) {
    let detail_type = "reconciliation.completed".to_string();
    let occurred_at = Timestamp::now();
    let result = serde_json::to_string(&(&report.looked, &report.comparison)).unwrap_or_default();
    let event_id = format!("evt_{}", &paycycle::store::sha256_hex(format!("recon:{day}:{result}").as_bytes())[..24]);
    let detail = json!({"id": event_id, "type": detail_type, "occurred_at": occurred_at.to_string(), "data": listed})
        .to_string();
    let event = OutboxEvent { event_id, detail_type, occurred_at, detail };
    let (_, failed) = deps.publisher.send_operational(std::slice::from_ref(&event)).await;
    if !failed.is_empty() {
        tracing::warn!(day, ?failed, "reconciliation event not published");
    }
}

/// The day's counts by metric name: matched, each kind of difference, unchecked, incomplete
/// (`ReconciliationIncomplete` is what the template's alarm reads, dimension `Function` = `reconcile`).
pub fn metric_counts(r: &DayReport) -> [(&'static str, u64); 8] {
    let [missing_here, missing_at_pg, amount, refund] = r.comparison.counts();
    [
        ("ReconciliationMatched", r.comparison.matched),
        ("ReconciliationDifferences", missing_here + missing_at_pg + amount + refund),
        ("ReconciliationMissingHere", missing_here),
        ("ReconciliationMissingAtPg", missing_at_pg),
        ("ReconciliationAmountDiffers", amount),
        ("ReconciliationRefundDiffers", refund),
        ("ReconciliationUnchecked", r.looked.unchecked),
        ("ReconciliationIncomplete", u64::from(!r.looked.complete)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_the_kst_day_before_the_schedules_time_and_only_named_with_time_travel() {
        // 2027-03-01 04:00 KST is 2027-02-28 19:00 UTC: the day before is 2027-02-28 in KST.
        let scheduled = json!({"time": "2027-02-28T19:00:00Z"});
        assert_eq!(day_of(&scheduled, false).unwrap(), "20270228");
        assert!(matches!(day_of(&json!({"day": "20270101"}), false), Err(TickTimeError::TimeTravelNotAllowed)));
        assert_eq!(day_of(&json!({"day": "20270101"}), true).unwrap(), "20270101");
        assert!(matches!(day_of(&json!({"day": "2027-01-01"}), true), Err(TickTimeError::BadTime)));
        assert!(matches!(day_of(&json!({}), false), Err(TickTimeError::BadTime)));
    }
}
