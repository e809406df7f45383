//! The billing calendar: subscription periods in Korean time (Asia/Seoul), stored as UTC instants.
//!
//! Period `n` is always computed **from the anchor** (`anchor + n × interval` in Seoul's calendar),
//! never from the previous period, so a Jan 31 anchor renews on Feb 28 (29 in leap years), Mar 31,
//! Apr 30 … and nothing drifts over years. Month and year steps clamp the day to the month's end
//! (jiff's civil arithmetic); the time of day in KST is kept.
//!
//! The tz database is bundled into the binary (jiff `tzdb-bundle-always`): Lambda's
//! `provided.al2023` image may have no `/usr/share/zoneinfo`, and billing must not depend on it.

use std::fmt;
use std::sync::LazyLock;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, Zoned};
use serde::{Deserialize, Serialize};

static SEOUL: LazyLock<TimeZone> =
    LazyLock::new(|| TimeZone::get("Asia/Seoul").expect("the bundled tz database has Asia/Seoul"));

/// Asia/Seoul, from the bundled tz database.
pub fn seoul() -> TimeZone {
    SEOUL.clone()
}

/// An instant in Korean time.
pub fn in_seoul(t: Timestamp) -> Zoned {
    t.to_zoned(seoul())
}

/// `YYYYMMDD` of an instant in Korean time (Payple's `PCD_PAY_DATE`).
pub fn kst_yyyymmdd(t: Timestamp) -> String {
    in_seoul(t).strftime("%Y%m%d").to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalUnit {
    Day,
    Week,
    Month,
    Year,
}

impl IntervalUnit {
    /// The largest count per unit: three years of any unit (longer plans are not recurring billing).
    pub const fn max_count(self) -> u32 {
        match self {
            IntervalUnit::Day => 1095,
            IntervalUnit::Week => 156,
            IntervalUnit::Month => 36,
            IntervalUnit::Year => 3,
        }
    }
}

/// How often a subscription renews: `unit × count` (e.g. every 3 months).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawInterval", into = "RawInterval")]
pub struct Interval {
    unit: IntervalUnit,
    count: u32,
}

#[derive(Serialize, Deserialize)]
struct RawInterval {
    unit: IntervalUnit,
    count: u32,
}

impl TryFrom<RawInterval> for Interval {
    type Error = CalendarError;
    fn try_from(r: RawInterval) -> Result<Self, Self::Error> {
        Interval::new(r.unit, r.count)
    }
}

impl From<Interval> for RawInterval {
    fn from(i: Interval) -> Self {
        RawInterval { unit: i.unit, count: i.count }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("interval_count must be 1..={max} for {unit:?}, got {count}")]
    BadCount { unit: IntervalUnit, count: u32, max: u32 },
    #[error("period {0} is beyond the supported calendar")]
    OutOfRange(u32),
}

impl Interval {
    pub fn new(unit: IntervalUnit, count: u32) -> Result<Self, CalendarError> {
        let max = unit.max_count();
        if count == 0 || count > max {
            return Err(CalendarError::BadCount { unit, count, max });
        }
        Ok(Self { unit, count })
    }

    pub fn monthly() -> Self {
        Self { unit: IntervalUnit::Month, count: 1 }
    }

    pub fn unit(self) -> IntervalUnit {
        self.unit
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The span of `n` intervals.
    fn times(self, n: u32) -> Result<Span, CalendarError> {
        let total = i64::from(self.count) * i64::from(n);
        let span = match self.unit {
            IntervalUnit::Day => Span::new().try_days(total),
            IntervalUnit::Week => Span::new().try_days(total * 7),
            IntervalUnit::Month => Span::new().try_months(total),
            IntervalUnit::Year => Span::new().try_years(total),
        };
        span.map_err(|_| CalendarError::OutOfRange(n))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every {} {:?}", self.count, self.unit)
    }
}

/// One billing period: `[start, end)`, index 0 being the first (paid at activation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub index: u32,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The rule that generates a subscription's periods: an anchor instant and an interval, plus the
/// index of the period that starts at the anchor (non-zero after a resume re-anchors the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub anchor: Timestamp,
    pub interval: Interval,
    /// Period index that starts exactly at `anchor`.
    #[serde(default)]
    pub first_index: u32,
}

impl Schedule {
    pub fn new(anchor: Timestamp, interval: Interval) -> Self {
        Self { anchor, interval, first_index: 0 }
    }

    /// Start of period `index` (`index >= first_index`), computed from the anchor in Seoul time.
    pub fn period_start(&self, index: u32) -> Result<Timestamp, CalendarError> {
        let steps = index.checked_sub(self.first_index).ok_or(CalendarError::OutOfRange(index))?;
        let start = in_seoul(self.anchor)
            .checked_add(self.interval.times(steps)?)
            .map_err(|_| CalendarError::OutOfRange(index))?;
        Ok(start.timestamp())
    }

    pub fn period(&self, index: u32) -> Result<Period, CalendarError> {
        let next = index.checked_add(1).ok_or(CalendarError::OutOfRange(index))?;
        Ok(Period { index, start: self.period_start(index)?, end: self.period_start(next)? })
    }

    /// The period containing `t` (`t` before the anchor → the first period).
    pub fn period_at(&self, t: Timestamp) -> Result<Period, CalendarError> {
        if t < self.anchor {
            return self.period(self.first_index);
        }
        // Estimate from elapsed time, then correct by stepping (at most a couple of steps).
        let elapsed_days = (t.as_second() - self.anchor.as_second()) / 86_400;
        let days_per_interval: i64 = match self.interval.unit {
            IntervalUnit::Day => 1,
            IntervalUnit::Week => 7,
            IntervalUnit::Month => 28,
            IntervalUnit::Year => 365,
        } * i64::from(self.interval.count);
        let guess = u32::try_from(elapsed_days / days_per_interval).unwrap_or(u32::MAX / 2);
        let mut index = self.first_index.saturating_add(guess);
        loop {
            let p = self.period(index)?;
            if t < p.start {
                index = index.checked_sub(1).ok_or(CalendarError::OutOfRange(index))?;
            } else if t >= p.end {
                index += 1;
            } else {
                return Ok(p);
            }
        }
    }

    /// A new schedule that starts period `index` at `anchor` (used by resume): later periods are
    /// computed from the new anchor, with the same interval.
    pub fn reanchored(&self, anchor: Timestamp, index: u32) -> Self {
        Self { anchor, interval: self.interval, first_index: index }
    }
}

/// The unused part of a paid period when a subscription is paused immediately: `end - at`, zero if
/// `at` is at or past the end.
pub fn unused_time(period_end: Timestamp, at: Timestamp) -> SignedDuration {
    let d = period_end.duration_since(at);
    if d.is_negative() { SignedDuration::ZERO } else { d }
}

#[cfg(test)]
mod tests {
    use jiff::civil::{Date, date};
    use proptest::prelude::*;

    use super::*;

    fn kst(y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
        date(y, m, d).at(h, min, 0, 0).to_zoned(seoul()).unwrap().timestamp()
    }

    fn kst_date(t: Timestamp) -> Date {
        in_seoul(t).date()
    }

    #[test]
    fn seoul_is_bundled_and_nine_hours_ahead() {
        let t: Timestamp = "2026-01-31T15:00:00Z".parse().unwrap();
        let z = in_seoul(t);
        assert_eq!(z.date(), date(2026, 2, 1));
        assert_eq!(z.hour(), 0);
        assert_eq!(z.offset().seconds(), 9 * 3600);
    }

    #[test]
    fn month_end_anchor_clamps_and_returns() {
        let s = Schedule::new(kst(2027, 1, 31, 10, 30), Interval::monthly());
        let dates: Vec<Date> = (0..13).map(|n| kst_date(s.period_start(n).unwrap())).collect();
        assert_eq!(
            dates,
            [
                date(2027, 1, 31),
                date(2027, 2, 28),
                date(2027, 3, 31),
                date(2027, 4, 30),
                date(2027, 5, 31),
                date(2027, 6, 30),
                date(2027, 7, 31),
                date(2027, 8, 31),
                date(2027, 9, 30),
                date(2027, 10, 31),
                date(2027, 11, 30),
                date(2027, 12, 31),
                date(2028, 1, 31),
            ]
        );
        // Leap year: Feb 29.
        let leap = Schedule::new(kst(2028, 1, 31, 10, 30), Interval::monthly());
        assert_eq!(kst_date(leap.period_start(1).unwrap()), date(2028, 2, 29));
        // Time of day in KST is kept.
        assert_eq!(in_seoul(s.period_start(1).unwrap()).hour(), 10);
        assert_eq!(in_seoul(s.period_start(1).unwrap()).minute(), 30);
    }

    #[test]
    fn no_drift_over_ten_years() {
        let s = Schedule::new(kst(2026, 1, 31, 9, 0), Interval::monthly());
        assert_eq!(s.period_start(120).unwrap(), kst(2036, 1, 31, 9, 0));
        let yearly = Schedule::new(kst(2024, 2, 29, 0, 0), Interval::new(IntervalUnit::Year, 1).unwrap());
        assert_eq!(kst_date(yearly.period_start(1).unwrap()), date(2025, 2, 28));
        assert_eq!(kst_date(yearly.period_start(4).unwrap()), date(2028, 2, 29));
    }

    #[test]
    fn kst_midnight_around_utc_day_changes() {
        // 2027-03-01 00:00 KST is 2027-02-28 15:00 UTC: the period is March's in Korea.
        let s = Schedule::new("2027-02-28T15:00:00Z".parse().unwrap(), Interval::monthly());
        assert_eq!(kst_date(s.period_start(0).unwrap()), date(2027, 3, 1));
        assert_eq!(s.period_start(1).unwrap().to_string(), "2027-03-31T15:00:00Z");
        assert_eq!(kst_date(s.period_start(1).unwrap()), date(2027, 4, 1));
        // 23:59 KST on Jan 31 stays Jan 31 → Feb 28 23:59 KST.
        let late = Schedule::new(kst(2027, 1, 31, 23, 59), Interval::monthly());
        assert_eq!(late.period_start(1).unwrap(), kst(2027, 2, 28, 23, 59));
        assert_eq!(late.period_start(1).unwrap().to_string(), "2027-02-28T14:59:00Z");
        // The Payple request date is the KST date, not the UTC one.
        assert_eq!(kst_yyyymmdd("2027-02-28T15:00:00Z".parse().unwrap()), "20270301");
        assert_eq!(kst_yyyymmdd("2027-02-28T14:59:59Z".parse().unwrap()), "20270228");
    }

    #[test]
    fn days_and_weeks() {
        let d = Schedule::new(kst(2027, 12, 30, 8, 0), Interval::new(IntervalUnit::Day, 3).unwrap());
        assert_eq!(kst_date(d.period_start(1).unwrap()), date(2028, 1, 2));
        let w = Schedule::new(kst(2027, 2, 25, 8, 0), Interval::new(IntervalUnit::Week, 2).unwrap());
        assert_eq!(kst_date(w.period_start(1).unwrap()), date(2027, 3, 11));
    }

    #[test]
    fn interval_limits() {
        assert!(Interval::new(IntervalUnit::Month, 0).is_err());
        assert!(Interval::new(IntervalUnit::Month, 36).is_ok());
        assert!(Interval::new(IntervalUnit::Month, 37).is_err());
        assert!(serde_json::from_str::<Interval>(r#"{"unit":"month","count":0}"#).is_err());
        assert!(serde_json::from_str::<Interval>(r#"{"unit":"fortnight","count":1}"#).is_err());
        let i: Interval = serde_json::from_str(r#"{"unit":"week","count":2}"#).unwrap();
        assert_eq!(i.unit(), IntervalUnit::Week);
    }

    #[test]
    fn period_at_finds_the_containing_period() {
        let s = Schedule::new(kst(2027, 1, 31, 10, 0), Interval::monthly());
        assert_eq!(s.period_at(kst(2027, 3, 31, 9, 59)).unwrap().index, 1);
        assert_eq!(s.period_at(kst(2027, 3, 31, 10, 0)).unwrap().index, 2);
        assert_eq!(s.period_at(kst(2026, 1, 1, 0, 0)).unwrap().index, 0);
        assert_eq!(s.period_at(kst(2037, 2, 1, 0, 0)).unwrap().index, 120);
    }

    #[test]
    fn reanchoring_continues_the_index_from_the_new_anchor() {
        let s = Schedule::new(kst(2027, 1, 31, 10, 0), Interval::monthly());
        let r = s.reanchored(kst(2027, 6, 15, 12, 0), 5);
        assert_eq!(r.period_start(5).unwrap(), kst(2027, 6, 15, 12, 0));
        assert_eq!(r.period_start(6).unwrap(), kst(2027, 7, 15, 12, 0));
        assert!(r.period_start(4).is_err(), "periods before the re-anchor are not generated");
    }

    #[test]
    fn unused_time_is_never_negative() {
        let end = kst(2027, 2, 28, 0, 0);
        assert_eq!(unused_time(end, kst(2027, 2, 27, 0, 0)), SignedDuration::from_hours(24));
        assert_eq!(unused_time(end, kst(2027, 3, 1, 0, 0)), SignedDuration::ZERO);
    }

    proptest! {
        /// For every anchor day 1–31 in every month of 2024–2040, monthly periods are strictly
        /// increasing, land in the right month, and fall on the anchor day clamped to the month.
        #[test]
        fn monthly_periods_follow_the_clamped_anchor_day(
            year in 2024i16..=2040,
            month in 1i8..=12,
            day in 1i8..=31,
            hour in 0i8..24,
            n in 0u32..240,
        ) {
            let first = date(year, month, 1);
            prop_assume!(day <= first.days_in_month());
            let s = Schedule::new(kst(year, month, day, hour, 0), Interval::monthly());
            let a = s.period_start(n).unwrap();
            let b = s.period_start(n + 1).unwrap();
            prop_assert!(a < b);
            let expected_month = first.checked_add(Span::new().months(i64::from(n))).unwrap();
            let got = kst_date(a);
            prop_assert_eq!((got.year(), got.month()), (expected_month.year(), expected_month.month()));
            prop_assert_eq!(got.day(), day.min(expected_month.days_in_month()));
            prop_assert_eq!(in_seoul(a).hour(), hour);
            // The containing period of its own start is itself.
            prop_assert_eq!(s.period_at(a).unwrap().index, n);
        }

        #[test]
        fn every_anchor_day_in_every_year(day in 1i8..=31, year in 2024i16..=2040) {
            let s = Schedule::new(kst(year, 1, day, 0, 0), Interval::monthly());
            let mut prev = s.period_start(0).unwrap();
            for n in 1..=12 {
                let cur = s.period_start(n).unwrap();
                prop_assert!(cur > prev);
                let d = kst_date(cur);
                prop_assert_eq!(d.day(), day.min(d.days_in_month()));
                prev = cur;
            }
        }
    }
}
