//! The ledger's side of the appends cell: N tokio tasks, spread over the
//! nodes (one `Log` each over the same database, each with its own
//! connections), each appending one `run_queued` event per append through
//! `Log::append`, timed from submit to acknowledgement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opledger::{Log, LogOptions, LogStats};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::wal::WalMeter;
use super::Plan;
use crate::append::ledger::appender;
use crate::append::workload::Payloads;
use crate::append::StreamLayout;
use crate::stats::{percentile, ratio};

#[derive(Debug, Clone, Serialize)]
pub struct AppendSample {
    pub appends: u64,
    pub appends_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub commits: u64,
    /// Events per group commit while measuring, over every node.
    pub mean_group: f64,
    /// WAL the cluster wrote while measured ([`super::wal`]).
    pub wal_bytes: u64,
    /// Groups committed speculatively, and speculative groups that missed
    /// and were committed again on the locked head, while measured.
    pub speculative_commits: u64,
    pub speculative_misses: u64,
    /// Speculative groups staged without a read, while measured.
    pub speculative_unread: u64,
}

pub fn measure(
    runtime: &Runtime,
    plan: &Plan,
    url: &str,
    clients: usize,
    nodes: usize,
) -> anyhow::Result<AppendSample> {
    let logs = (0..nodes)
        .map(|_| Log::open_postgres(url, LogOptions::default()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .context("opening the bench log on PostgreSQL")?;
    // The warm-up opens the writers' first transactions and the runtime's
    // workers outside the measured window.
    let mut wal = runtime.block_on(WalMeter::connect(url))?;
    runtime.block_on(drive(&logs, clients, plan.warmup, plan.payloads))?;
    runtime.block_on(wal.start())?;
    let before = total(&logs);
    let started = Instant::now();
    let mut latencies = runtime.block_on(drive(&logs, clients, plan.duration, plan.payloads))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = total(&logs);
    let wal_bytes = runtime.block_on(wal.written())?;
    for log in &logs {
        log.close();
    }
    let commits = after.commits - before.commits;
    let events = after.events_appended - before.events_appended;
    Ok(AppendSample {
        appends: latencies.len() as u64,
        appends_per_second: ratio(latencies.len() as f64, seconds),
        p50_us: percentile(&mut latencies, 0.50),
        p99_us: percentile(&mut latencies, 0.99),
        commits,
        mean_group: ratio(events as f64, commits as f64),
        wal_bytes,
        speculative_commits: after.speculative_groups_committed - before.speculative_groups_committed,
        speculative_misses: after.speculative_groups_missed - before.speculative_groups_missed,
        speculative_unread: after.speculative_groups_staged_without_read
            - before.speculative_groups_staged_without_read,
    })
}

/// The nodes' counters added up (each node has its own writer).
fn total(logs: &[Arc<Log>]) -> LogStats {
    let mut sum = LogStats::default();
    for stats in logs.iter().map(|log| log.stats()) {
        sum.commits += stats.commits;
        sum.events_appended += stats.events_appended;
        sum.appends_acknowledged += stats.appends_acknowledged;
        sum.speculative_groups_committed += stats.speculative_groups_committed;
        sum.speculative_groups_missed += stats.speculative_groups_missed;
        sum.speculative_groups_staged_without_read += stats.speculative_groups_staged_without_read;
        sum.largest_commit_events = sum.largest_commit_events.max(stats.largest_commit_events);
    }
    sum
}

/// Runs `clients` tasks, client i on node i mod nodes, until `length` has
/// passed; every append's latency in microseconds.
async fn drive(logs: &[Arc<Log>], clients: usize, length: Duration, payloads: Payloads) -> anyhow::Result<Vec<f64>> {
    let until = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for (index, log) in (0..clients).zip(logs.iter().cycle()) {
        tasks.spawn(appender(Arc::clone(log), index, until, StreamLayout::Appender, payloads));
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("an appender task failed")??);
    }
    Ok(latencies)
}
