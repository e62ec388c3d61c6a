//! What a scrape reads from the core: the log's counters and histograms,
//! the projector's progress, and the runs by status and by outcome.

use opledger::domain::model::RunStatus;
use opledger::domain::state::LiveCounts;
use opledger::log::{HistogramSnapshot, LogObservations};
use opledger::LogStats;
use opledger_projections::monitoring::{self, Counts};
use opledger_projections::projector::Progress;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::server::state::Core;

/// The core's numbers at one moment, encoded as metric families.
#[derive(Debug)]
pub struct CoreSample {
    head: u64,
    applied: u64,
    stats: LogStats,
    observations: LogObservations,
    /// `None` when Monitoring cannot be read (its families are left out).
    counts: Option<Counts>,
    live: LiveCounts,
}

impl CoreSample {
    /// Reads the core. Monitoring's counts are left out when its view
    /// cannot be read; everything else is in memory.
    pub async fn read(core: &Core) -> CoreSample {
        let log = core.ledger.log();
        let head = log.head().position;
        let applied = match core.projector.progress() {
            Progress::Applied(position) => position,
            Progress::Stopped { position, .. } => position.saturating_sub(1),
        };
        let counts = core.projector.reader().ok().and_then(|db| monitoring::counts(&db, None).ok());
        let live = core.ledger.live_counts().await;
        CoreSample { head, applied, stats: log.stats(), observations: log.observations(), counts, live }
    }

    /// Runs by status: queued and running from the sequencer (the live
    /// truth), completed from Monitoring (every run it counted that is no
    /// longer pending).
    fn by_status(&self) -> Vec<(&'static str, u64)> {
        let mut statuses =
            vec![(RunStatus::Queued.as_str(), self.live.queued), (RunStatus::Running.as_str(), self.live.running)];
        if let Some(counts) = &self.counts {
            let pending = counts.by_outcome.get("pending").copied().unwrap_or(0);
            statuses.push((RunStatus::Completed.as_str(), counts.total.saturating_sub(pending)));
        }
        statuses
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One gauge family with one label.
fn labelled_gauges(
    encoder: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_label, value) in values {
        let labels = [(label, *value_label)];
        let gauge = ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX));
        gauge.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    snapshot: &HistogramSnapshot,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    // The encoder accumulates the counts; f64::MAX is its `+Inf` bound.
    let bounds = snapshot.bounds.iter().copied().chain(std::iter::once(f64::MAX));
    let buckets: Vec<(f64, u64)> = bounds.zip(snapshot.counts.iter().copied()).collect();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(snapshot.sum, snapshot.count, &buckets, None)
}

impl Collector for CoreSample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let s = &self.stats;
        gauge(e, "opledger_log_head_position", "Position of the last acknowledged event.", self.head)?;
        counter(e, "opledger_log_commits", "Group commits of at least one event.", s.commits)?;
        counter(e, "opledger_log_events_appended", "Events appended.", s.events_appended)?;
        counter(e, "opledger_log_appends_acknowledged", "Appends acknowledged durable.", s.appends_acknowledged)?;
        counter(
            e,
            "opledger_log_appends_duplicate",
            "Appends answered as replays of earlier ones.",
            s.appends_duplicate,
        )?;
        counter(e, "opledger_log_appends_conflicted", "Appends refused on a version conflict.", s.appends_conflicted)?;
        counter(
            e,
            "opledger_log_heads_held",
            "Heads held locked for a decision (a log on PostgreSQL: rounds that lost the race to another node, \
             or that hold while the nodes keep colliding).",
            s.heads_held,
        )?;
        counter(
            e,
            "opledger_log_speculative_groups_committed",
            "Group commits staged on the head this node expected and inserted before locking it (a log on \
             PostgreSQL).",
            s.speculative_groups_committed,
        )?;
        counter(
            e,
            "opledger_log_speculative_groups_missed",
            "Speculative groups that found the head moved or waited too long for its lock, rolled back and \
             were staged again on the locked head.",
            s.speculative_groups_missed,
        )?;
        counter(
            e,
            "opledger_log_speculative_groups_staged_without_read",
            "Speculative groups staged on the stream versions this node knew, without reading them first (one \
             round trip for the whole group).",
            s.speculative_groups_staged_without_read,
        )?;
        gauge(e, "opledger_log_largest_commit_events", "Events in the largest group commit.", s.largest_commit_events)?;
        let o = &self.observations;
        let seconds = Some(&Unit::Seconds);
        let append = ("opledger_log_append_duration", "From an append handed to the log to its answer.", seconds);
        histogram(e, append, &o.append_latency)?;
        let sync =
            ("opledger_log_fsync_duration", "One make-durable step: flush, plus fdatasync in fsync mode.", seconds);
        histogram(e, sync, &o.sync_latency)?;
        histogram(e, ("opledger_log_group_commit_events", "Events per group commit.", None), &o.commit_events)?;
        gauge(e, "opledger_projection_applied_position", "Last position the projections applied.", self.applied)?;
        let lag = self.head.saturating_sub(self.applied);
        gauge(e, "opledger_projection_lag_events", "Events acknowledged but not yet projected (head - applied).", lag)?;
        let statuses = self.by_status();
        labelled_gauges(e, ("opledger_runs_by_status", "Runs by status.", "status"), &statuses)?;
        if let Some(counts) = &self.counts {
            let outcomes: Vec<(&str, u64)> = counts.by_outcome.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let family = ("opledger_runs_by_outcome", "Runs by outcome (blocked apart from failed).", "outcome");
            labelled_gauges(e, family, &outcomes)?;
        }
        Ok(())
    }
}
