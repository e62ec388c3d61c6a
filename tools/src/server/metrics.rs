//! `/metrics` in the Prometheus text format: appends and group commits
//! (from the log), start answers and decisions by reason, request counts
//! and latencies per route, and projection lag.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::server::auth::ServiceReader;
use crate::server::state::{AppState, Core};

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Debug, Default)]
struct Inner {
    starts: BTreeMap<String, u64>,
    decisions: BTreeMap<String, u64>,
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Tries to reopen the store after a storage error, and the ones that
    /// put a fresh core in place.
    reopen_attempts: AtomicU64,
    reopens: AtomicU64,
    /// Connections closed as accepted: past the connection bound and its overflow.
    connections_refused: AtomicU64,
}

impl Metrics {
    fn with(&self, update: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            update(&mut inner);
        }
    }

    pub fn count_reopen_attempt(&self) {
        self.reopen_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_reopen(&self) {
        self.reopens.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_start(&self, result: &str) {
        self.with(|inner| *inner.starts.entry(result.to_owned()).or_default() += 1);
    }

    pub fn count_decision(&self, reason: &str) {
        self.with(|inner| *inner.decisions.entry(reason.to_owned()).or_default() += 1);
    }

    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.with(|inner| {
            *inner.requests.entry((route.to_owned(), status)).or_default() += 1;
            let histogram = inner.latency.entry(route.to_owned()).or_default();
            histogram.count += 1;
            histogram.sum_seconds += seconds;
            for (bucket, bound) in histogram.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
        });
    }

    fn render(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "# TYPE opledger_store_reopen_attempts_total counter")?;
        writeln!(out, "opledger_store_reopen_attempts_total {}", self.reopen_attempts.load(Ordering::Relaxed))?;
        writeln!(out, "# TYPE opledger_store_reopens_total counter")?;
        writeln!(out, "opledger_store_reopens_total {}", self.reopens.load(Ordering::Relaxed))?;
        writeln!(out, "# TYPE opledger_connections_refused_total counter")?;
        writeln!(out, "opledger_connections_refused_total {}", self.connections_refused.load(Ordering::Relaxed))?;
        let Ok(inner) = self.inner.lock() else { return Ok(()) };
        writeln!(out, "# TYPE opledger_starts_total counter")?;
        for (result, count) in &inner.starts {
            writeln!(out, "opledger_starts_total{{result=\"{result}\"}} {count}")?;
        }
        writeln!(out, "# TYPE opledger_decisions_total counter")?;
        for (reason, count) in &inner.decisions {
            writeln!(out, "opledger_decisions_total{{reason=\"{reason}\"}} {count}")?;
        }
        writeln!(out, "# TYPE opledger_http_requests_total counter")?;
        for ((route, status), count) in &inner.requests {
            writeln!(out, "opledger_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}")?;
        }
        writeln!(out, "# TYPE opledger_http_request_duration_seconds histogram")?;
        for (route, histogram) in &inner.latency {
            for (count, bound) in histogram.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
                writeln!(
                    out,
                    "opledger_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                )?;
            }
            let (count, sum) = (histogram.count, histogram.sum_seconds);
            writeln!(out, "opledger_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}")?;
            writeln!(out, "opledger_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}")?;
            writeln!(out, "opledger_http_request_duration_seconds_count{{route=\"{route}\"}} {count}")?;
        }
        Ok(())
    }
}

/// Service tokens only: the counters span every workspace.
/// The log's and the projector's gauges and the request counters. While
/// the store is being reopened only the counters kept here are shown (the
/// reopen attempts among them).
pub async fn metrics(State(state): State<AppState>, _service: ServiceReader) -> impl IntoResponse {
    let mut out = String::new();
    if let Ok(core) = state.core() {
        render_core(&core, &mut out);
    }
    let _ = state.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

fn render_core(core: &Core, out: &mut String) {
    let stats = core.ledger.log().stats();
    let head = core.ledger.log().head().position;
    let applied = match core.projector.progress() {
        opledger_projections::projector::Progress::Applied(position) => position,
        opledger_projections::projector::Progress::Stopped { position, .. } => position.saturating_sub(1),
    };
    let gauges = [
        ("opledger_log_head_position", head),
        ("opledger_log_commits_total", stats.commits),
        ("opledger_log_events_appended_total", stats.events_appended),
        ("opledger_log_appends_acknowledged_total", stats.appends_acknowledged),
        ("opledger_log_appends_duplicate_total", stats.appends_duplicate),
        ("opledger_log_appends_conflicted_total", stats.appends_conflicted),
        ("opledger_log_largest_commit_events", stats.largest_commit_events),
        ("opledger_projection_applied_position", applied),
        ("opledger_projection_lag_events", head.saturating_sub(applied)),
    ];
    for (name, value) in gauges {
        let _ = writeln!(out, "{name} {value}");
    }
}
