//! Budget windows: which instance of a window a request falls in.
//!
//! Calendar windows are computed on local wall-clock time in the policy's
//! IANA time zone and converted back to exact UTC instants, so a "daily"
//! window on a daylight-saving day is 23 or 25 hours long. A local midnight
//! that does not exist (a zone that springs forward at 00:00) starts the day
//! at the first instant after the gap; a local time that occurs twice starts
//! the window at its first occurrence.
//!
//! Rolling windows are tracked in buckets of 1/60 of their duration (at
//! least one second) so a counter never holds more than ~61 buckets. The
//! spend counted at `now` is every bucket that overlaps `[now - duration,
//! now]`, which may include up to one bucket of spend slightly older than
//! the duration: the rounding can only make a budget stricter, never looser.

use caracal_api::snapshot::{Period, WindowSpec};
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// Number of buckets a rolling window is split into.
pub const ROLLING_BUCKETS: u64 = 60;

/// Longest rolling window: 366 days. The stores count rolling spend in
/// milliseconds, and a much longer window would overflow that arithmetic
/// (and could wrap into a window that counts nothing).
pub const MAX_ROLLING_SECONDS: u64 = 366 * 86_400;

/// Why a window could not be computed (a bad time zone reaches here only if
/// the compile step let it through; evaluation then denies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unknown IANA time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("rolling window duration must be at least one second")]
    ZeroDuration,
    #[error("rolling window duration is longer than {MAX_ROLLING_SECONDS} seconds (366 days)")]
    TooLong,
    #[error("time is outside the supported calendar range")]
    OutOfRange,
}

/// The window instance a request at some instant falls in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowInstance {
    /// `[start, end)`: spend counts until `end`, then a new window begins.
    Calendar {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Spend in buckets of `bucket_seconds` overlapping the last `seconds`.
    Rolling { seconds: u64, bucket_seconds: u64 },
}

impl WindowInstance {
    /// When the calendar window ends (rolling windows have no fixed reset).
    pub fn resets_at(&self) -> Option<DateTime<Utc>> {
        match self {
            WindowInstance::Calendar { end, .. } => Some(*end),
            WindowInstance::Rolling { .. } => None,
        }
    }
}

/// Parse an IANA zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz, WindowError> {
    name.parse::<Tz>()
        .map_err(|_| WindowError::UnknownTimeZone(name.to_owned()))
}

/// The window instance of `spec` that contains `now`.
pub fn window_at(spec: &WindowSpec, now: DateTime<Utc>) -> Result<WindowInstance, WindowError> {
    match spec {
        WindowSpec::Calendar { period, time_zone } => {
            let tz = parse_time_zone(time_zone)?;
            let (start, end) = calendar_window(*period, tz, now)?;
            Ok(WindowInstance::Calendar { start, end })
        }
        WindowSpec::Rolling { seconds } => {
            if *seconds == 0 {
                return Err(WindowError::ZeroDuration);
            }
            if *seconds > MAX_ROLLING_SECONDS {
                return Err(WindowError::TooLong);
            }
            Ok(WindowInstance::Rolling {
                seconds: *seconds,
                bucket_seconds: rolling_bucket_seconds(*seconds),
            })
        }
    }
}

/// Width of one rolling bucket: `ceil(seconds / 60)`, at least one second.
pub fn rolling_bucket_seconds(seconds: u64) -> u64 {
    seconds.div_ceil(ROLLING_BUCKETS).max(1)
}

/// `[start, end)` of the calendar window of `period` in `tz` containing `now`.
pub fn calendar_window(
    period: Period,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), WindowError> {
    let date = now.with_timezone(&tz).date_naive();
    let (first, next) = match period {
        Period::Hourly => return Ok(hourly_window(tz, now)),
        Period::Daily => (date, date.succ_opt().ok_or(WindowError::OutOfRange)?),
        Period::Weekly => {
            let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
            (monday, monday + Duration::days(7))
        }
        Period::Monthly => {
            let first = date.with_day(1).ok_or(WindowError::OutOfRange)?;
            (first, next_month(first)?)
        }
    };
    Ok((local_midnight(tz, first)?, local_midnight(tz, next)?))
}

/// Truncates on the instant timeline rather than on wall-clock time, so a
/// repeated local hour (the night clocks go back) is two separate one-hour
/// windows and half-hour zones get windows starting at :30 UTC.
fn hourly_window(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz);
    let into_hour = Duration::seconds(i64::from(local.minute() * 60 + local.second()))
        + Duration::nanoseconds(i64::from(local.nanosecond()));
    let start = now - into_hour;
    (start, start + Duration::hours(1))
}

fn next_month(first: NaiveDate) -> Result<NaiveDate, WindowError> {
    let (y, m) = if first.month() == 12 {
        (first.year() + 1, 1)
    } else {
        (first.year(), first.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).ok_or(WindowError::OutOfRange)
}

/// The first instant of local day `date` in `tz`.
fn local_midnight(tz: Tz, date: NaiveDate) -> Result<DateTime<Utc>, WindowError> {
    let midnight: NaiveDateTime = date.and_hms_opt(0, 0, 0).ok_or(WindowError::OutOfRange)?;
    // Walk forward a minute at a time through a gap; real gaps are at most
    // a few hours, and two days bounds the loop for any zone data.
    let mut probe = midnight;
    for _ in 0..(48 * 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Ok(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(earliest, _) => return Ok(earliest.with_timezone(&Utc)),
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    Err(WindowError::OutOfRange)
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
