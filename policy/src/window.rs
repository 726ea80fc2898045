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

use std::cell::RefCell;

use caracal_api::snapshot::{Period, WindowSpec};
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// Number of buckets a rolling window is split into.
pub const ROLLING_BUCKETS: u64 = 60;

/// Why a window could not be computed (a bad time zone reaches here only if
/// the compile step let it through; evaluation then denies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unknown IANA time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("rolling window duration must be at least one second")]
    ZeroDuration,
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

/// Calendar windows computed recently on this thread, found by the address
/// of the spec in the snapshot (cheap to compare) and then checked for an
/// equal spec and a window containing `now`, so a hit is exactly what
/// recomputing would give (an address reused by a newer snapshot fails the
/// equality check). This only saves the time-zone arithmetic, which
/// dominated a decision with many budgets.
const RECENT_WINDOWS: usize = 64;

struct Recent {
    addr: usize,
    spec: WindowSpec,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

thread_local! {
    static RECENT: RefCell<Vec<Recent>> = const { RefCell::new(Vec::new()) };
}

fn recent_window(spec: &WindowSpec, now: DateTime<Utc>) -> Option<WindowInstance> {
    let addr = std::ptr::from_ref(spec) as usize;
    RECENT.with(|r| {
        r.borrow()
            .iter()
            .find(|e| e.addr == addr)
            .filter(|e| e.start <= now && now < e.end && e.spec == *spec)
            .map(|e| WindowInstance::Calendar {
                start: e.start,
                end: e.end,
            })
    })
}

fn remember_window(spec: &WindowSpec, start: DateTime<Utc>, end: DateTime<Utc>) {
    let addr = std::ptr::from_ref(spec) as usize;
    let entry = Recent {
        addr,
        spec: spec.clone(),
        start,
        end,
    };
    RECENT.with(|r| {
        let mut recent = r.borrow_mut();
        if let Some(slot) = recent.iter_mut().find(|e| e.addr == addr) {
            *slot = entry;
        } else {
            if recent.len() >= RECENT_WINDOWS {
                recent.remove(0);
            }
            recent.push(entry);
        }
    });
}

/// The window instance of `spec` that contains `now`.
pub fn window_at(spec: &WindowSpec, now: DateTime<Utc>) -> Result<WindowInstance, WindowError> {
    match spec {
        WindowSpec::Calendar { period, time_zone } => {
            if let Some(hit) = recent_window(spec, now) {
                return Ok(hit);
            }
            let tz = parse_time_zone(time_zone)?;
            let (start, end) = calendar_window(*period, tz, now)?;
            remember_window(spec, start, end);
            Ok(WindowInstance::Calendar { start, end })
        }
        WindowSpec::Rolling { seconds } => {
            if *seconds == 0 {
                return Err(WindowError::ZeroDuration);
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
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cal(period: Period, tz: &str) -> WindowSpec {
        WindowSpec::Calendar {
            period,
            time_zone: tz.into(),
        }
    }

    #[test]
    fn calendar_windows_table() {
        use Period::*;
        // (period, zone, now, start, end, hours long)
        let cases = [
            // Plain UTC day, and the exact boundary belongs to the new day.
            (
                Daily,
                "UTC",
                "2026-05-10T13:00:00Z",
                "2026-05-10T00:00:00Z",
                "2026-05-11T00:00:00Z",
            ),
            (
                Daily,
                "UTC",
                "2026-05-11T00:00:00Z",
                "2026-05-11T00:00:00Z",
                "2026-05-12T00:00:00Z",
            ),
            (
                Daily,
                "UTC",
                "2026-05-10T23:59:59.999Z",
                "2026-05-10T00:00:00Z",
                "2026-05-11T00:00:00Z",
            ),
            // Berlin spring forward (29 Mar 2026): 23-hour day.
            (
                Daily,
                "Europe/Berlin",
                "2026-03-29T12:00:00Z",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
            ),
            // Berlin fall back (25 Oct 2026): 25-hour day.
            (
                Daily,
                "Europe/Berlin",
                "2026-10-25T12:00:00Z",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
            ),
            // New York: 23h on 8 Mar 2026, 25h on 1 Nov 2026.
            (
                Daily,
                "America/New_York",
                "2026-03-08T12:00:00Z",
                "2026-03-08T05:00:00Z",
                "2026-03-09T04:00:00Z",
            ),
            (
                Daily,
                "America/New_York",
                "2026-11-01T12:00:00Z",
                "2026-11-01T04:00:00Z",
                "2026-11-02T05:00:00Z",
            ),
            // 23:30 local in New York is already the next UTC day.
            (
                Daily,
                "America/New_York",
                "2026-05-11T03:30:00Z",
                "2026-05-10T04:00:00Z",
                "2026-05-11T04:00:00Z",
            ),
            // Half-hour zone: Kolkata midnight is 18:30 UTC.
            (
                Daily,
                "Asia/Kolkata",
                "2026-05-10T18:29:59Z",
                "2026-05-09T18:30:00Z",
                "2026-05-10T18:30:00Z",
            ),
            (
                Hourly,
                "Asia/Kolkata",
                "2026-05-10T18:29:59Z",
                "2026-05-10T17:30:00Z",
                "2026-05-10T18:30:00Z",
            ),
            (
                Hourly,
                "UTC",
                "2026-05-10T07:00:00Z",
                "2026-05-10T07:00:00Z",
                "2026-05-10T08:00:00Z",
            ),
            // The repeated 02:00 hour in Berlin: two separate hourly windows.
            (
                Hourly,
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
            ),
            (
                Hourly,
                "Europe/Berlin",
                "2026-10-25T01:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
            ),
            // Weeks start Monday; Sunday 2026-05-10 belongs to the week of 4 May.
            (
                Weekly,
                "UTC",
                "2026-05-10T23:00:00Z",
                "2026-05-04T00:00:00Z",
                "2026-05-11T00:00:00Z",
            ),
            (
                Weekly,
                "UTC",
                "2026-05-11T00:00:00Z",
                "2026-05-11T00:00:00Z",
                "2026-05-18T00:00:00Z",
            ),
            // A week spanning the New York fall-back is 169 hours.
            (
                Weekly,
                "America/New_York",
                "2026-11-01T12:00:00Z",
                "2026-10-26T04:00:00Z",
                "2026-11-02T05:00:00Z",
            ),
            // Month ends, leap February, year rollover.
            (
                Monthly,
                "UTC",
                "2028-02-29T12:00:00Z",
                "2028-02-01T00:00:00Z",
                "2028-03-01T00:00:00Z",
            ),
            (
                Monthly,
                "UTC",
                "2027-02-28T12:00:00Z",
                "2027-02-01T00:00:00Z",
                "2027-03-01T00:00:00Z",
            ),
            (
                Monthly,
                "UTC",
                "2026-12-31T23:59:59Z",
                "2026-12-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                Monthly,
                "Europe/Berlin",
                "2026-03-31T22:30:00Z",
                "2026-03-31T22:00:00Z",
                "2026-04-30T22:00:00Z",
            ),
            (
                Monthly,
                "Europe/Berlin",
                "2026-03-31T21:59:59Z",
                "2026-02-28T23:00:00Z",
                "2026-03-31T22:00:00Z",
            ),
            // Santiago springs forward at local midnight (6 Sep 2026): the day
            // starts at 01:00 local, the first instant that exists.
            (
                Daily,
                "America/Santiago",
                "2026-09-06T12:00:00Z",
                "2026-09-06T04:00:00Z",
                "2026-09-07T03:00:00Z",
            ),
        ];
        for (period, tz, now, start, end) in cases {
            let got = window_at(&cal(period, tz), at(now)).unwrap();
            assert_eq!(
                got,
                WindowInstance::Calendar {
                    start: at(start),
                    end: at(end)
                },
                "{period:?} {tz} at {now}"
            );
        }
    }

    #[test]
    fn dst_days_have_23_and_25_hours() {
        let len =
            |now: &str| match window_at(&cal(Period::Daily, "Europe/Berlin"), at(now)).unwrap() {
                WindowInstance::Calendar { start, end } => (end - start).num_hours(),
                WindowInstance::Rolling { .. } => 0,
            };
        assert_eq!(len("2026-03-29T12:00:00Z"), 23);
        assert_eq!(len("2026-10-25T12:00:00Z"), 25);
        assert_eq!(len("2026-06-01T12:00:00Z"), 24);
    }

    #[test]
    fn window_that_resets_during_a_request() {
        // A request reserved one second before midnight belongs to the old
        // window; its settlement one second after midnight is charged to the
        // window the reservation was made in (the store keys by instance).
        let spec = cal(Period::Daily, "UTC");
        let reserved = window_at(&spec, at("2026-05-10T23:59:59Z")).unwrap();
        let settled = window_at(&spec, at("2026-05-11T00:00:01Z")).unwrap();
        assert_ne!(reserved, settled);
        assert_eq!(reserved.resets_at(), Some(at("2026-05-11T00:00:00Z")));
    }

    #[test]
    fn rolling_windows_use_bounded_buckets() {
        let cases = [
            (1, 1),
            (59, 1),
            (60, 1),
            (61, 2),
            (3600, 60),
            (86_400, 1440),
            (5400, 90),
        ];
        for (seconds, bucket) in cases {
            assert_eq!(
                window_at(&WindowSpec::Rolling { seconds }, at("2026-05-10T00:00:00Z")).unwrap(),
                WindowInstance::Rolling {
                    seconds,
                    bucket_seconds: bucket
                }
            );
        }
        assert_eq!(
            window_at(&WindowSpec::Rolling { seconds: 0 }, Utc::now()),
            Err(WindowError::ZeroDuration)
        );
    }

    #[test]
    fn remembered_windows_never_go_stale() {
        // The same address holding a different spec (a newer snapshot), and
        // the same spec at a later instant, both recompute.
        let now = at("2026-05-10T12:00:00Z");
        let mut spec = cal(Period::Daily, "UTC");
        let utc = window_at(&spec, now).unwrap();
        spec = cal(Period::Daily, "Asia/Tokyo");
        let tokyo = window_at(&spec, now).unwrap();
        assert_eq!(
            tokyo,
            WindowInstance::Calendar {
                start: at("2026-05-09T15:00:00Z"),
                end: at("2026-05-10T15:00:00Z")
            }
        );
        assert_ne!(utc, tokyo);
        let later = window_at(&spec, at("2026-05-10T15:00:00Z")).unwrap();
        assert_eq!(later.resets_at(), Some(at("2026-05-11T15:00:00Z")));
    }

    #[test]
    fn unknown_zone_is_an_error() {
        assert_eq!(
            window_at(&cal(Period::Daily, "Mars/Olympus"), Utc::now()),
            Err(WindowError::UnknownTimeZone("Mars/Olympus".into()))
        );
    }
}
