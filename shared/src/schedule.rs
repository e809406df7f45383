//! When a scheduled invocation runs (renew's tick, deliver's retry sweep): the EventBridge event's
//! `time`, or — only where time travel is allowed (the local stack and tests) — its `now`.

use jiff::Timestamp;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TickTimeError {
    #[error("`now` in the event is time travel, allowed only with PAYCYCLE_ALLOW_TIME_TRAVEL=true")]
    TimeTravelNotAllowed,
    #[error("the event has no usable time")]
    BadTime,
}

impl TickTimeError {
    /// The name a function's Lambda error type is built from.
    pub fn kind(self) -> &'static str {
        match self {
            TickTimeError::TimeTravelNotAllowed => "TimeTravelNotAllowed",
            TickTimeError::BadTime => "BadTime",
        }
    }
}

/// When a scheduled invocation must stop starting work: the Lambda deadline (`deadline_ms`,
/// epoch milliseconds from the invocation's context; 0 outside Lambda = none) less `margin`.
pub fn stop_by(deadline_ms: u64, margin: jiff::SignedDuration) -> Option<Timestamp> {
    let deadline = Timestamp::from_millisecond(i64::try_from(deadline_ms).ok().filter(|ms| *ms > 0)?).ok()?;
    deadline.checked_sub(margin).ok()
}

/// The event's `now` (with `allow_time_travel`) or `time`, as RFC 3339 or a zoned time.
pub fn tick_time(payload: &Value, allow_time_travel: bool) -> Result<Timestamp, TickTimeError> {
    let parse = |s: &str| s.parse::<Timestamp>().ok().or_else(|| s.parse::<jiff::Zoned>().ok().map(|z| z.timestamp()));
    if let Some(now) = payload.get("now").filter(|v| !v.is_null()) {
        if !allow_time_travel {
            return Err(TickTimeError::TimeTravelNotAllowed);
        }
        return now.as_str().and_then(parse).ok_or(TickTimeError::BadTime);
    }
    payload.get("time").and_then(Value::as_str).and_then(parse).ok_or(TickTimeError::BadTime)
}
