//! What the server logs about requests: one DEBUG line per request, a WARN
//! line for every server error, and every [`REQUEST_SUMMARY_INTERVAL`] one
//! INFO line summing the interval up. A line per request at INFO cost CPU
//! under load (the HTTP bench printed one per request); the summary keeps
//! the traffic visible at the default level for the price of a few atomic
//! adds per request (no lock on the request path).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

/// How often the INFO summary of the requests served is logged.
pub const REQUEST_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Status classes counted apart: 1xx to 5xx.
const STATUS_CLASSES: usize = 5;

/// The requests of the current interval, added to by every request and
/// emptied by each summary.
#[derive(Debug, Default)]
pub struct RequestTally {
    by_class: [AtomicU64; STATUS_CLASSES],
    elapsed_us_total: AtomicU64,
    elapsed_us_max: AtomicU64,
}

/// One interval's requests: counts by status class and latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalSummary {
    /// Requests answered with 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; STATUS_CLASSES],
    pub elapsed_us_total: u64,
    pub elapsed_us_max: u64,
}

/// The index in `by_class` of a status; statuses outside 100..=599 (which
/// `http` does not build) count with the nearest class.
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1
}

impl RequestTally {
    /// Counts one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.by_class[class_index(status)].fetch_add(1, Ordering::Relaxed);
        self.elapsed_us_total.fetch_add(elapsed_us, Ordering::Relaxed);
        self.elapsed_us_max.fetch_max(elapsed_us, Ordering::Relaxed);
    }

    /// The interval so far, leaving the tally empty. Each counter is taken
    /// on its own, so a request recorded meanwhile may be split across two
    /// summaries; each request is still counted exactly once.
    pub fn take(&self) -> IntervalSummary {
        IntervalSummary {
            by_class: std::array::from_fn(|i| self.by_class[i].swap(0, Ordering::Relaxed)),
            elapsed_us_total: self.elapsed_us_total.swap(0, Ordering::Relaxed),
            elapsed_us_max: self.elapsed_us_max.swap(0, Ordering::Relaxed),
        }
    }
}

impl IntervalSummary {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// The mean latency in microseconds; `None` without requests.
    pub fn mean_us(&self) -> Option<u64> {
        self.elapsed_us_total.checked_div(self.requests())
    }
}

/// `12 requests: 2xx 10, 4xx 1, 5xx 1; latency mean 1.250 ms, max 9.000 ms`
/// (classes without requests left out).
impl fmt::Display for IntervalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests", self.requests())?;
        let classes = self.by_class.iter().enumerate().filter(|(_, count)| **count > 0);
        for (n, (index, count)) in classes.enumerate() {
            let separator = if n == 0 { ": " } else { ", " };
            write!(f, "{separator}{}xx {count}", index + 1)?;
        }
        match self.mean_us() {
            Some(mean) => write!(f, "; latency mean {}, max {}", Millis(mean), Millis(self.elapsed_us_max)),
            None => Ok(()),
        }
    }
}

/// Microseconds shown as milliseconds with three decimals.
struct Millis(u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.0 / 1000, self.0 % 1000)
    }
}

/// The line of one answered request (inside its span, which names the
/// method, route and run): DEBUG, or WARN for a server error, which an
/// operator must see whatever the traffic.
pub fn log_request(status: StatusCode, elapsed: Duration) {
    let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let status_code = status.as_u16();
    if status.is_server_error() {
        tracing::warn!(status = status_code, elapsed_us, "served a server error");
    } else {
        tracing::debug!(status = status_code, elapsed_us, "served");
    }
}

/// Logs the summary of `tally`'s interval at INFO, unless it saw no request
/// (an idle server stays quiet).
pub fn log_summary(tally: &RequestTally) {
    let summary = tally.take();
    if summary.requests() > 0 {
        tracing::info!(requests = summary.requests(), "{summary}");
    }
}

/// Logs a summary every [`REQUEST_SUMMARY_INTERVAL`] until aborted.
pub async fn summarize(tally: Arc<RequestTally>) {
    let start = tokio::time::Instant::now() + REQUEST_SUMMARY_INTERVAL;
    let mut ticks = tokio::time::interval_at(start, REQUEST_SUMMARY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        log_summary(&tally);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_sums_requests_by_status_class_and_empties_on_take() {
        let tally = RequestTally::default();
        tally.record(200, Duration::from_micros(1_000));
        tally.record(201, Duration::from_micros(2_000));
        tally.record(404, Duration::from_micros(500));
        tally.record(503, Duration::from_micros(9_000));
        let summary = tally.take();
        assert_eq!(summary.by_class, [0, 2, 0, 1, 1]);
        assert_eq!(summary.requests(), 4);
        assert_eq!(summary.elapsed_us_total, 12_500);
        assert_eq!(summary.elapsed_us_max, 9_000);
        assert_eq!(summary.mean_us(), Some(3_125));
        assert_eq!(tally.take(), IntervalSummary::default(), "take leaves the tally empty");
    }

    #[test]
    fn a_summary_names_the_classes_seen_and_the_latency() {
        let summary = IntervalSummary { by_class: [0, 10, 0, 1, 1], elapsed_us_total: 15_000, elapsed_us_max: 9_000 };
        assert_eq!(summary.to_string(), "12 requests: 2xx 10, 4xx 1, 5xx 1; latency mean 1.250 ms, max 9.000 ms");
    }

    #[test]
    fn an_empty_summary_has_no_latency() {
        assert_eq!(IntervalSummary::default().to_string(), "0 requests");
        assert_eq!(IntervalSummary::default().mean_us(), None);
    }

    #[test]
    fn statuses_outside_the_classes_count_with_the_nearest() {
        assert_eq!(class_index(99), 0);
        assert_eq!(class_index(100), 0);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(999), 4);
    }
}
