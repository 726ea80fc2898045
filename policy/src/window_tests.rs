//! Table tests for windows, with exact instants.

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
    let len = |now: &str| match window_at(&cal(Period::Daily, "Europe/Berlin"), at(now)).unwrap() {
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
fn rolling_windows_longer_than_a_year_are_refused() {
    // Millisecond arithmetic on a longer window could wrap and count no
    // spend at all; a snapshot carrying one must deny, not allow.
    let now = at("2026-05-10T00:00:00Z");
    let longest = WindowSpec::Rolling {
        seconds: MAX_ROLLING_SECONDS,
    };
    assert!(window_at(&longest, now).is_ok());
    for seconds in [MAX_ROLLING_SECONDS + 1, u64::MAX / 1000 + 1, u64::MAX] {
        assert_eq!(
            window_at(&WindowSpec::Rolling { seconds }, now),
            Err(WindowError::TooLong),
            "{seconds}"
        );
    }
}

#[test]
fn windows_follow_the_zone_and_the_instant() {
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
