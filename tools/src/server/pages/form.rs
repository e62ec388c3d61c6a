//! What the pages' forms send and their links carry: times as a browser's
//! `datetime-local` field sends them, and query strings that keep a page's
//! fields.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer};

/// A time from a page's query string: RFC 3339 (what the pages' own links
/// carry, and what the JSON API takes) or what a `datetime-local` field
/// sends (`2024-05-01T14:30`, seconds optional), which has no zone and is
/// read as UTC (the pages show every time in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTime(pub DateTime<Utc>);

/// The forms a `datetime-local` field sends, with and without seconds.
const LOCAL_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"];

impl PageTime {
    pub fn parse(text: &str) -> Option<PageTime> {
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Some(PageTime(at.with_timezone(&Utc)));
        }
        LOCAL_FORMATS
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
            .map(|at| PageTime(at.and_utc()))
    }
}

impl<'de> Deserialize<'de> for PageTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PageTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        PageTime::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a time (RFC 3339, or YYYY-MM-DDTHH:MM in UTC)"))
        })
    }
}

/// The value a `datetime-local` field shows for `at` (UTC, to the second).
pub fn local_value(at: Option<PageTime>) -> String {
    at.map(|PageTime(at)| at.format("%Y-%m-%dT%H:%M:%S").to_string()).unwrap_or_default()
}

/// `at` as the pages' links carry it.
pub fn link_time(at: Option<PageTime>) -> Option<String> {
    at.map(|PageTime(at)| at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// `path` with the fields that have a value as its query string. Empty
/// fields are left out: they mean "no filter" anyway.
pub fn href(path: &str, fields: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = fields.iter().filter_map(|(name, value)| Some((*name, value.as_deref()?))).collect();
    if set.is_empty() {
        return path.to_owned();
    }
    // Encoding pairs of strings cannot fail; an empty query would only
    // lose the filter, never widen what the access rule lets a viewer see.
    let encoded = serde_urlencoded::to_string(&set).unwrap_or_default();
    format!("{path}?{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_rfc_3339_or_a_datetime_local_value_in_utc() {
        let rfc = PageTime::parse("2024-05-01T16:30:00+02:00").map(|t| t.0.to_rfc3339());
        assert_eq!(rfc.as_deref(), Some("2024-05-01T14:30:00+00:00"));
        let local = PageTime::parse("2024-05-01T14:30").map(|t| t.0.to_rfc3339());
        assert_eq!(local.as_deref(), Some("2024-05-01T14:30:00+00:00"));
        let seconds = PageTime::parse("2024-05-01T14:30:05");
        assert_eq!(local_value(seconds), "2024-05-01T14:30:05");
        assert_eq!(link_time(seconds).as_deref(), Some("2024-05-01T14:30:05Z"));
        assert_eq!(PageTime::parse("yesterday"), None);
    }

    #[test]
    fn a_link_keeps_the_fields_with_a_value_only() {
        let fields = [("tenant_id", Some("t 1".to_owned())), ("status", None), ("limit", Some("2".to_owned()))];
        assert_eq!(href("/admin/operations", &fields), "/admin/operations?tenant_id=t+1&limit=2");
        assert_eq!(href("/admin/inbox", &[("actor_id", None)]), "/admin/inbox");
    }
}
