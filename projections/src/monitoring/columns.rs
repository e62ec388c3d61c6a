//! How values are written into Monitoring's columns: times as fixed-width
//! UTC text (so text order is time order), the initiator as one string,
//! positions as SQLite integers, and the counters' names.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use opledger::domain::model::{Principal, SYSTEM_PRINCIPAL_WORD};

/// Counter dimensions (`run_counts.dimension`).
pub(super) const TOTAL: &str = "total";
pub(super) const BY_STATUS: &str = "status";
pub(super) const BY_OUTCOME: &str = "outcome";
pub(super) const BY_REASON: &str = "reason";
/// Counter scopes (`run_counts.scope`).
pub(super) const SCOPE_ALL: &str = "all";
pub(super) const SCOPE_TENANT: &str = "tenant";

/// Text before every time column value (a bound below every time).
const BEFORE_EVERY_TIME: &str = "";
/// Text after every time column value (digits sort before `~`).
const AFTER_EVERY_TIME: &str = "~";

/// The initiator as a column value. Actors carry a kind prefix so that an
/// actor whose id happens to be `system` is never confused with the system.
pub fn initiator_value(initiator: &Principal) -> String {
    match initiator {
        Principal::Actor { id } => format!("actor:{id}"),
        Principal::System => SYSTEM_PRINCIPAL_WORD.to_owned(),
    }
}

/// A time as a column value: `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the log stamps
/// whole microseconds; finer parts are truncated).
pub(super) fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A column value back as a time.
pub(super) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|at| at.with_timezone(&Utc))
}

/// The text that every stored time at or after `at` is at or above. Times
/// are stored in whole microseconds, so a bound with a fraction of one
/// starts at the next; years outside the four-digit form bound everything.
pub(super) fn from_bound(at: DateTime<Utc>) -> String {
    let rounding = i64::from(1000 - at.timestamp_subsec_nanos() % 1000) % 1000;
    match at.checked_add_signed(chrono::Duration::nanoseconds(rounding)) {
        Some(up) if four_digit_year(up) => time_text(up),
        Some(up) if up.year() < 0 => BEFORE_EVERY_TIME.to_owned(),
        _ => AFTER_EVERY_TIME.to_owned(),
    }
}

/// The text that every stored time at or before `at` is at or below.
pub(super) fn to_bound(at: DateTime<Utc>) -> String {
    match at.year() {
        year if year < 0 => BEFORE_EVERY_TIME.to_owned(),
        _ if four_digit_year(at) => time_text(at),
        _ => AFTER_EVERY_TIME.to_owned(),
    }
}

fn four_digit_year(at: DateTime<Utc>) -> bool {
    (0..=9999).contains(&at.year())
}

/// A log position as a column value (positions never reach 2^63).
pub(super) fn position_value(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}
