//! `/metrics`: one `prometheus-client` registry per server.
//!
//! Counters the handlers bump live here as typed families (no lock beyond
//! the family's read lock on a label set seen before). What the core
//! already counts (the log's counters and histograms, the projector's
//! progress, Monitoring's run counts) is read at scrape time by
//! [`scrape::CoreSample`]; the `process_*` families by [`process`].

mod process;
mod scrape;
mod text;

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::server::auth::ServiceReader;
use crate::server::state::AppState;

/// Upper bounds of the request latency histogram buckets, in seconds.
pub const REQUEST_LATENCY_BUCKETS_SECONDS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// The content type of the Prometheus text format (what `promtool` and
/// scrapers that do not ask for OpenMetrics read).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format, served when asked for.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

fn request_latency_histogram() -> Histogram {
    Histogram::new(REQUEST_LATENCY_BUCKETS_SECONDS)
}

/// The server's own counters and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    starts: Family<ResultLabel, Counter>,
    decisions: Family<ReasonLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    reopen_attempts: Counter,
    reopens: Counter,
    storage_errors: Counter,
    connections_refused: Counter,
    lease_abandonments: Counter,
    cancellations: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let starts = Family::<ResultLabel, Counter>::default();
        registry.register("opledger_starts", "Start answers, by result", starts.clone());
        let decisions = Family::<ReasonLabel, Counter>::default();
        registry.register("opledger_decisions", "Begin decisions, by reason (allowed when none)", decisions.clone());
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("opledger_http_requests", "HTTP requests served, by route and status", requests.clone());
        let latency = Family::new_with_constructor(request_latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "opledger_http_request_duration",
            "Time to serve an HTTP request, by route",
            Unit::Seconds,
            latency.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let storage_errors = counter(
            &mut registry,
            "opledger_storage_errors",
            "Storage failures that stopped the store (each closes it for a reopen)",
        );
        let reopen_attempts =
            counter(&mut registry, "opledger_store_reopen_attempts", "Tries to reopen the store after a storage error");
        let reopens = counter(&mut registry, "opledger_store_reopens", "Reopens that put a fresh store in place");
        let connections_refused = counter(
            &mut registry,
            "opledger_connections_refused",
            "Connections closed as accepted: past the connection bound and its overflow",
        );
        let lease_abandonments = counter(
            &mut registry,
            "opledger_lease_abandonments",
            "Attempts abandoned by the lease reaper because their lease lapsed",
        );
        let cancellations = counter(&mut registry, "opledger_cancellations", "Runs cancelled through the cancel route");
        process::register(&mut registry);
        Metrics {
            registry,
            starts,
            decisions,
            requests,
            latency,
            reopen_attempts,
            reopens,
            storage_errors,
            connections_refused,
            lease_abandonments,
            cancellations,
        }
    }

    pub fn count_reopen_attempt(&self) {
        self.reopen_attempts.inc();
    }

    pub fn count_reopen(&self) {
        self.reopens.inc();
    }

    pub fn count_storage_error(&self) {
        self.storage_errors.inc();
    }

    pub fn count_connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn count_lease_abandonments(&self, attempts: usize) {
        self.lease_abandonments.inc_by(attempts as u64);
    }

    pub fn count_cancellation(&self) {
        self.cancellations.inc();
    }

    pub fn count_start(&self, result: &str) {
        self.starts.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub fn count_decision(&self, reason: &str) {
        self.decisions.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route: route.to_owned(), status: status.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabel { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Every family in the OpenMetrics text format: the server's counters,
    /// then what `sample` read from the core (absent while the store is
    /// being reopened).
    fn encode(&self, sample: Option<scrape::CoreSample>) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        if let Some(sample) = sample {
            let mut scraped = Registry::default();
            scraped.register_collector(Box::new(sample));
            prometheus_client::encoding::text::encode_registry(&mut out, &scraped)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Service tokens only: the counters span every workspace. OpenMetrics
/// when the scraper asks for it (Prometheus does), the Prometheus text
/// format otherwise (what `promtool check metrics` reads).
/// `GET /metrics`: Prometheus text, or OpenMetrics when `Accept` asks for it.
#[utoipa::path(get, path = "/metrics", tag = "health",
    params(("Accept" = Option<String>, Header, description = "`application/openmetrics-text` for OpenMetrics.")),
    responses((status = 200, description = "Every family with HELP and TYPE (docs/api.md, Metrics).",
        content(
            (String = "text/plain; version=0.0.4"),
            (String = "application/openmetrics-text; version=1.0.0"),
        ))),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, _service: ServiceReader, headers: HeaderMap) -> impl IntoResponse {
    let sample = match state.core() {
        Ok(core) => Some(scrape::CoreSample::read(&core).await),
        Err(_) => None,
    };
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let encoded = state.metrics.encode(sample).unwrap_or_default();
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], encoded)
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text::to_prometheus_text(&encoded))
    }
}
