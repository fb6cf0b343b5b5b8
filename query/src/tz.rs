//! Report days: cutting UTC instants into days of a report time zone.
//!
//! Events are stored by UTC hour; a report day in any zone is a set of UTC hours (24 of them
//! for whole-hour offsets, 23 or 25 around a DST change). [`ReportTz`] turns an instant into
//! its local day and a local day back into the UTC hours and instants it spans.

use chrono::{DateTime, Days, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// Microseconds in a second, minute, hour.
pub const SEC_US: i64 = 1_000_000;
pub const MIN_US: i64 = 60 * SEC_US;
pub const HOUR_US: i64 = 60 * MIN_US;

/// The report time zone, by IANA name; Asia/Shanghai by default (a day starts at 16:00 UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportTz(Tz);

pub const DEFAULT_TZ: &str = "Asia/Shanghai";

impl Default for ReportTz {
    fn default() -> Self {
        Self(chrono_tz::Asia::Shanghai)
    }
}

impl std::str::FromStr for ReportTz {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<Tz>().map(Self).map_err(|_| {
            format!("unknown time zone {s:?}: expected an IANA name such as Asia/Shanghai or UTC")
        })
    }
}

impl std::fmt::Display for ReportTz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Days since 1970-01-01 of a calendar date (Arrow's Date32).
pub fn date32(day: NaiveDate) -> i32 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The calendar date of a Date32 value.
pub fn from_date32(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(days as i64)
}

impl ReportTz {
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The zone's offset from UTC, in microseconds, at instant `ts_us`.
    pub fn offset_us(&self, ts_us: i64) -> i64 {
        let secs = ts_us.div_euclid(SEC_US);
        match DateTime::from_timestamp(secs, 0) {
            Some(t) => {
                self.0
                    .offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc() as i64
                    * SEC_US
            }
            None => 0,
        }
    }

    /// The UTC instant (µs) at which local day `day` (Date32) starts. Where midnight does not
    /// exist (a DST jump at midnight), the day starts at the first instant that does.
    pub fn day_start_us(&self, day: i32) -> i64 {
        let date = from_date32(day);
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight");
        let mut probe = midnight;
        for _ in 0..48 {
            if let Some(t) = self.0.from_local_datetime(&probe).earliest() {
                return t.timestamp_micros();
            }
            probe += chrono::Duration::minutes(30);
        }
        midnight.and_utc().timestamp_micros()
    }

    /// The UTC `(date, hour)` partitions whose hours overlap local day `day`.
    pub fn utc_hours(&self, day: i32) -> Vec<(String, i32)> {
        let start = self.day_start_us(day);
        let end = self.day_start_us(day + 1);
        let mut hour = start.div_euclid(HOUR_US);
        let mut out = Vec::new();
        while hour * HOUR_US < end {
            let (date, h) = utc_partition(hour * HOUR_US);
            out.push((date, h));
            hour += 1;
        }
        out
    }

    /// The local days that UTC hour partition `(date, hour)` overlaps (one, or two for
    /// offsets that are not whole hours).
    pub fn days_of_utc_hour(&self, date: NaiveDate, hour: i32) -> Vec<i32> {
        let start = date
            .and_hms_opt(hour as u32, 0, 0)
            .map(|t| t.and_utc().timestamp_micros());
        let Some(start) = start else {
            return Vec::new();
        };
        let mut clock = LocalClock::new(*self);
        let first = clock.day(start);
        let last = clock.day(start + HOUR_US - 1);
        (first..=last).collect()
    }
}

/// The UTC `(YYYY-MM-DD, hour)` partition of an instant.
pub fn utc_partition(ts_us: i64) -> (String, i32) {
    let t = DateTime::from_timestamp_micros(ts_us).unwrap_or_default();
    (
        t.format("%Y-%m-%d").to_string(),
        (ts_us.div_euclid(HOUR_US) % 24) as i32,
    )
}

/// Cuts instants into local days and local times, remembering the offset of the last UTC
/// minute asked (rows come in time order, so nearly every lookup is a hit).
#[derive(Debug, Clone)]
pub struct LocalClock {
    tz: ReportTz,
    minute: i64,
    offset_us: i64,
}

impl LocalClock {
    pub fn new(tz: ReportTz) -> Self {
        Self {
            tz,
            minute: i64::MIN,
            offset_us: 0,
        }
    }

    /// The zone's offset at `ts_us`, in microseconds.
    #[inline]
    pub fn offset_us(&mut self, ts_us: i64) -> i64 {
        let minute = ts_us.div_euclid(MIN_US);
        if minute != self.minute {
            self.minute = minute;
            self.offset_us = self.tz.offset_us(minute * MIN_US);
        }
        self.offset_us
    }

    /// Local wall-clock microseconds since the epoch (as if the zone were UTC).
    #[inline]
    pub fn local_us(&mut self, ts_us: i64) -> i64 {
        ts_us + self.offset_us(ts_us)
    }

    /// The local day (Date32) of instant `ts_us`.
    #[inline]
    pub fn day(&mut self, ts_us: i64) -> i32 {
        self.local_us(ts_us).div_euclid(24 * HOUR_US) as i32
    }

    /// The UTC instant of the start of the local hour containing `ts_us`.
    pub fn hour_start_us(&mut self, ts_us: i64) -> i64 {
        let off = self.offset_us(ts_us);
        (ts_us + off).div_euclid(HOUR_US) * HOUR_US - off
    }
}

/// Parses `YYYY-MM-DD` into Date32.
pub fn parse_day(s: &str) -> Result<i32, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(date32)
        .map_err(|_| format!("expected a date as YYYY-MM-DD, got {s:?}"))
}

/// Formats Date32 as `YYYY-MM-DD`.
pub fn format_day(day: i32) -> String {
    from_date32(day).format("%Y-%m-%d").to_string()
}

/// The day after `day` by the calendar (for iteration over ranges).
pub fn next_day(day: NaiveDate) -> NaiveDate {
    day.checked_add_days(Days::new(1)).unwrap_or(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_starts_at_16_utc() {
        let tz = ReportTz::default();
        let day = parse_day("2015-04-28").unwrap();
        let start = tz.day_start_us(day);
        assert_eq!(start, 1_430_150_400_000_000); // 2015-04-27T16:00:00Z
        let mut c = LocalClock::new(tz);
        assert_eq!(c.day(start), day);
        assert_eq!(c.day(start - 1), day - 1);
        let hours = tz.utc_hours(day);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0], ("2015-04-27".to_string(), 16));
        assert_eq!(hours[23], ("2015-04-28".to_string(), 15));
    }

    #[test]
    fn dst_days_have_23_and_25_hours() {
        let tz: ReportTz = "Europe/Berlin".parse().unwrap();
        assert_eq!(tz.utc_hours(parse_day("2024-03-31").unwrap()).len(), 23);
        assert_eq!(tz.utc_hours(parse_day("2024-10-27").unwrap()).len(), 25);
        let india: ReportTz = "Asia/Kolkata".parse().unwrap();
        let d = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        assert_eq!(india.days_of_utc_hour(d, 18).len(), 2);
        assert!("Mars/Olympus".parse::<ReportTz>().is_err());
    }
}
