//! How the read models store times: TEXT in UTC with microseconds, fixed
//! width (`2024-01-01T00:00:00.000000Z`). Text order is then time order, so
//! a time range is a range of an index. The log records times to the
//! microsecond, so nothing is lost.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// The stored form of `time`.
pub fn to_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A stored time read back.
pub fn from_text(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("{text:?} is not a stored time: {error}"))
}

/// Where a caller's time falls among stored times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Before every time the text form can hold (a year before 0).
    BeforeAll,
    /// Compare stored texts with this one.
    Text(String),
    /// After every time the text form can hold (a year after 9999, which
    /// would not sort as text).
    AfterAll,
}

/// `time` rounded up to the microsecond, as a bound for stored times:
/// stored times have whole microseconds, so `stored >= time` exactly when
/// `stored >= bound`, and the same for `<`.
pub fn bound(time: DateTime<Utc>) -> Bound {
    let sub_micros = i64::from(time.timestamp_subsec_nanos() % 1000);
    let rounded = match sub_micros {
        0 => Some(time),
        _ => time.checked_add_signed(TimeDelta::nanoseconds(1000 - sub_micros)),
    };
    let Some(rounded) = rounded else { return Bound::AfterAll };
    match chrono::Datelike::year(&rounded) {
        ..0 => Bound::BeforeAll,
        0..=9999 => Bound::Text(to_text(rounded)),
        _ => Bound::AfterAll,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn text_order_is_time_order_and_reads_back() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let times =
            [start, start + TimeDelta::microseconds(1), start + TimeDelta::seconds(1), start + TimeDelta::days(400)];
        for pair in times.windows(2) {
            assert!(to_text(pair[0]) < to_text(pair[1]));
        }
        for time in times {
            assert_eq!(from_text(&to_text(time)).unwrap(), time);
        }
        assert_eq!(to_text(start), "2024-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_bound_rounds_up_to_the_microsecond_and_stays_in_the_text_range() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(bound(start + TimeDelta::nanoseconds(1)), Bound::Text(to_text(start + TimeDelta::microseconds(1))));
        assert_eq!(bound(start), Bound::Text(to_text(start)));
        assert_eq!(bound(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()), Bound::AfterAll);
        assert_eq!(bound(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap()), Bound::BeforeAll);
        assert_eq!(bound(DateTime::<Utc>::MAX_UTC), Bound::AfterAll);
    }
}
