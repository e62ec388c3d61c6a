//! The ledger side of a cell: N tokio tasks appending one event at a time to
//! a fresh log, each timing its appends from submit to acknowledgement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use opledger::{Expectations, Log, LogOptions, LogStats};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::workload::{EventSource, Payloads};
use super::{Mode, Plan, StreamLayout};
use crate::stats::{micros, percentile, ratio};

#[derive(Debug, Clone, Serialize)]
pub struct LedgerSample {
    pub appends: u64,
    pub seconds: f64,
    pub appends_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub commits: u64,
    /// Events per group commit while measuring (from `Log::stats`).
    pub mean_group: f64,
}

pub fn measure(runtime: &Runtime, plan: &Plan, mode: Mode, appenders: usize) -> anyhow::Result<LedgerSample> {
    let dir = plan.tempdir()?;
    let options = LogOptions { durability: mode.durability(), ..LogOptions::default() };
    let log = Arc::new(Log::open(dir.path().join("log"), options).context("opening the bench log")?);
    // The warm-up lets sled allocate its first segments and the runtime spawn
    // its workers outside the measured window.
    runtime.block_on(drive(&log, appenders, plan.warmup, plan.streams))?;
    let before = log.stats();
    let started = Instant::now();
    let mut latencies = runtime.block_on(drive(&log, appenders, plan.duration, plan.streams))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = log.stats();
    log.close();
    Ok(sample(&mut latencies, seconds, before, after))
}

fn sample(latencies: &mut [f64], seconds: f64, before: LogStats, after: LogStats) -> LedgerSample {
    let appends = latencies.len() as u64;
    let commits = after.commits - before.commits;
    let events = after.events_appended - before.events_appended;
    LedgerSample {
        appends,
        seconds,
        appends_per_second: ratio(appends as f64, seconds),
        p50_us: percentile(latencies, 0.50),
        p99_us: percentile(latencies, 0.99),
        commits,
        mean_group: ratio(events as f64, commits as f64),
    }
}

/// Runs `appenders` tasks until `length` has passed; returns every
/// append's latency in microseconds. The window ends when the last append
/// submitted before the deadline is acknowledged.
async fn drive(log: &Arc<Log>, appenders: usize, length: Duration, streams: StreamLayout) -> anyhow::Result<Vec<f64>> {
    let until = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for index in 0..appenders {
        tasks.spawn(appender(Arc::clone(log), index, until, streams, Payloads::PerEvent));
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("an appender task failed")??);
    }
    Ok(latencies)
}

/// One client: appends one event at a time to `log` until `until`; each
/// append's latency in microseconds. The postgres bench's clients too.
pub(crate) async fn appender(
    log: Arc<Log>,
    index: usize,
    until: Instant,
    streams: StreamLayout,
    payloads: Payloads,
) -> anyhow::Result<Vec<f64>> {
    let mut source = EventSource::new(index, streams, payloads)?;
    let mut latencies = Vec::new();
    while Instant::now() < until {
        // Built before the clock starts: the caller's cost, not the log's.
        let event = source.next_event()?;
        let submitted = Instant::now();
        let outcome = log.append(vec![event], Expectations::none()).await?;
        latencies.push(micros(submitted.elapsed()));
        outcome.map_err(|conflict| anyhow!("unexpected conflict: {conflict:?}"))?;
    }
    Ok(latencies)
}
