//! Latency and size observations of the write pipeline, for metrics.
//!
//! The writer and the syncer record into fixed buckets of atomic counters:
//! one `fetch_add` per observation, no lock, no allocation, so the hot path
//! of an append does not wait on a scrape. A server reads a
//! [`HistogramSnapshot`] at scrape time and exposes it in whatever format
//! it speaks; the core depends on no metrics crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency buckets: from 100 µs (a
/// group commit in `flush` mode on a fast disk) to 2.5 s (a disk in
/// trouble). Shared by the append and the sync latency histograms.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Upper bounds of the group commit size buckets, in events: powers of
/// two up to [`crate::limits::GROUP_COMMIT_EVENTS_MAX`].
pub const COMMIT_EVENTS_BUCKETS: [f64; 13] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// Units of a latency sum: nanoseconds, so that a sum of `u64` holds
/// centuries of waiting without losing sub-microsecond observations.
const NANOS_PER_SECOND: f64 = 1e9;

/// A histogram of fixed buckets, each an atomic counter.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds: &'static [f64],
    /// One counter per bound plus the last one for `+Inf` (not cumulative).
    buckets: Box<[AtomicU64]>,
    /// The sum of observations in `1 / scale` units.
    sum_units: AtomicU64,
    scale: f64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> AtomicHistogram {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram { bounds, buckets, sum_units: AtomicU64::new(0), scale }
    }

    /// Latencies, in seconds.
    pub(crate) fn latency() -> AtomicHistogram {
        AtomicHistogram::new(&LATENCY_BUCKETS_SECONDS, NANOS_PER_SECOND)
    }

    /// Group commit sizes, in events.
    pub(crate) fn commit_events() -> AtomicHistogram {
        AtomicHistogram::new(&COMMIT_EVENTS_BUCKETS, 1.0)
    }

    pub(crate) fn observe_duration(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.record(elapsed.as_secs_f64(), nanos);
    }

    pub(crate) fn observe_count(&self, count: u64) {
        self.record(count as f64, count);
    }

    fn record(&self, value: f64, units: u64) {
        let index = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_units.fetch_add(units, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds,
            count: counts.iter().sum(),
            counts,
            sum: self.sum_units.load(Ordering::Relaxed) as f64 / self.scale,
        }
    }
}

/// A histogram as read at one moment. Buckets are read one by one while
/// writers go on, so `sum` may be a few observations ahead of `count`;
/// `count` is always the sum of `counts`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the finite buckets.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative): one per bound, then the
    /// ones above every bound.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// The write pipeline's histograms, as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct LogObservations {
    /// From an append handed to the log to its answer, in seconds: every
    /// append the syncer answers (acknowledged, duplicate or conflicted).
    pub append_latency: HistogramSnapshot,
    /// One make-durable step, in seconds: sled's flush plus, in `fsync`
    /// mode, the `fdatasync`. One step may cover several group commits.
    pub sync_latency: HistogramSnapshot,
    /// Events per group commit (commits of at least one event).
    pub commit_events: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = AtomicHistogram::commit_events();
        for events in [1, 3, 4, 5, 4096, 5000] {
            histogram.observe_count(events);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts.len(), COMMIT_EVENTS_BUCKETS.len() + 1);
        assert_eq!(snapshot.counts[0], 1, "1 event");
        assert_eq!(snapshot.counts[2], 2, "3 and 4 events");
        assert_eq!(snapshot.counts[3], 1, "5 events");
        assert_eq!(snapshot.counts[12], 1, "4096 events");
        assert_eq!(snapshot.counts[13], 1, "above every bound");
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, (1 + 3 + 4 + 5 + 4096 + 5000) as f64);
    }

    #[test]
    fn latency_sums_are_kept_in_seconds() {
        let histogram = AtomicHistogram::latency();
        histogram.observe_duration(Duration::from_micros(300));
        histogram.observe_duration(Duration::from_millis(20));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 2);
        assert!((snapshot.sum - 0.0203).abs() < 1e-9, "{snapshot:?}");
        assert_eq!(snapshot.counts[2], 1, "300 µs is in the 500 µs bucket");
        assert_eq!(snapshot.counts[7], 1, "20 ms is in the 25 ms bucket");
    }
}
