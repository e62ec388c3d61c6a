//! The raw inserts baseline: the rows the log stores (position, event id,
//! stream, stream version, record of the same size), inserted with
//! tokio-postgres directly into a table of the log's shape and unique
//! constraints, one transaction per group of the ledger's mean group size,
//! from as many connections as the ledger had clients. No head row, no
//! chain, no staging: the physical floor of the backend.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio_postgres::Client;
use uuid::Uuid;

use super::baseline;
use super::window::Window;
use super::Plan;
use crate::stats::{micros, percentile, ratio};

/// The log's events table (`src/log/postgres/schema.rs`), renamed.
const CREATE: &str = "
CREATE TABLE raw_events (
    position BIGINT PRIMARY KEY CHECK (position > 0),
    event_id UUID NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    stream_version BIGINT NOT NULL CHECK (stream_version > 0),
    record BYTEA NOT NULL,
    UNIQUE (stream, stream_version)
)";

/// The log's own insert statement (`writer.rs`), one per group.
const INSERT: &str = "INSERT INTO raw_events (position, event_id, stream, stream_version, record)
     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::bytea[])";

#[derive(Debug, Clone, Serialize)]
pub struct RawSample {
    /// Rows per transaction: the ledger's mean group size, rounded.
    pub group: usize,
    pub events: u64,
    pub events_per_second: f64,
    /// Per transaction (one group).
    pub p50_us: f64,
    pub p99_us: f64,
    /// WAL the cluster wrote while measured ([`super::wal`]).
    pub wal_bytes: u64,
}

pub fn measure(runtime: &Runtime, plan: &Plan, url: &str, clients: usize, group: usize) -> anyhow::Result<RawSample> {
    let shared = Arc::new(Counters::default());
    let mut measured = runtime.block_on(baseline::run(plan, url, clients, CREATE, |client, index, window| {
        let (shared, record) = (Arc::clone(&shared), plan.record.clone());
        async move { inserter(client, index, &shared, group, &record, window).await }
    }))?;
    let events = shared.measured.load(Ordering::Relaxed);
    Ok(RawSample {
        group,
        events,
        events_per_second: ratio(events as f64, measured.seconds),
        p50_us: percentile(&mut measured.latencies, 0.50),
        p99_us: percentile(&mut measured.latencies, 0.99),
        wal_bytes: measured.wal_bytes,
    })
}

#[derive(Debug, Default)]
struct Counters {
    /// The next free position minus one (positions are unique, not gapless).
    reserved: AtomicI64,
    /// Rows committed inside the measured window.
    measured: AtomicU64,
}

/// Commits groups of `group` rows on its own stream until the window
/// closes; each measured group's latency.
async fn inserter(
    mut client: Client,
    index: usize,
    counters: &Counters,
    group: usize,
    record: &[u8],
    window: Window,
) -> anyhow::Result<Vec<f64>> {
    let statement = client.prepare(INSERT).await.context("preparing the raw insert")?;
    let stream = format!("raw-client-{index}");
    let size = i64::try_from(group)?;
    let records: Vec<&[u8]> = vec![record; group];
    let streams: Vec<&str> = vec![stream.as_str(); group];
    let mut version = 0i64;
    let mut latencies = Vec::new();
    while window.open() {
        let first = counters.reserved.fetch_add(size, Ordering::Relaxed) + 1;
        let positions: Vec<i64> = (first..first + size).collect();
        let ids: Vec<Uuid> = (0..group).map(|_| Uuid::now_v7()).collect();
        let versions: Vec<i64> = (version + 1..=version + size).collect();
        let started = Instant::now();
        let tx = client.transaction().await?;
        tx.execute(&statement, &[&positions, &ids, &streams, &versions, &records]).await?;
        tx.commit().await?;
        let ended = Instant::now();
        version += size;
        if window.measuring(started) {
            latencies.push(micros(ended - started));
            counters.measured.fetch_add(group as u64, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}
