//! The plain SQL cycle, the side-by-side figure: what a conventional
//! implementation of a run cycle costs on the same server. A `runs` table
//! and an `events` table, three transactions per cycle (insert the run and
//! its event; update it to running and insert an event; update it to
//! completed and insert an event), no gates, no chain, no head. N
//! connections from an in-process tokio-postgres client (not pgbench),
//! prepared statements, one statement per round trip as pgbench sends them.

use std::time::Instant;

use serde::Serialize;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::baseline;
use super::window::Window;
use super::Plan;
use crate::stats::{micros, percentile, ratio};

const CREATE: &str = "
CREATE TABLE runs (
    id UUID PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    operation_type TEXT NOT NULL,
    status TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    run_id UUID NOT NULL REFERENCES runs (id),
    event_type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX events_run ON events (run_id);";

#[derive(Debug, Clone, Serialize)]
pub struct PlainSample {
    pub cycles: u64,
    pub cycles_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// WAL the cluster wrote while measured ([`super::wal`]).
    pub wal_bytes: u64,
}

pub fn measure(runtime: &Runtime, plan: &Plan, url: &str, clients: usize) -> anyhow::Result<PlainSample> {
    let mut measured = runtime.block_on(baseline::run(plan, url, clients, CREATE, |client, index, window| {
        let payload = plan.record.clone();
        async move { worker(client, index, &payload, window).await }
    }))?;
    Ok(PlainSample {
        cycles: measured.latencies.len() as u64,
        cycles_per_second: ratio(measured.latencies.len() as f64, measured.seconds),
        p50_us: percentile(&mut measured.latencies, 0.50),
        p99_us: percentile(&mut measured.latencies, 0.99),
        wal_bytes: measured.wal_bytes,
    })
}

struct Statements {
    insert_run: Statement,
    update_run: Statement,
    insert_event: Statement,
}

async fn worker(mut client: Client, index: usize, payload: &[u8], window: Window) -> anyhow::Result<Vec<f64>> {
    let statements = Statements {
        insert_run: client
            .prepare("INSERT INTO runs (id, tenant_id, operation_type, status, dedupe_key) VALUES ($1, $2, $3, 'queued', $4)")
            .await?,
        update_run: client.prepare("UPDATE runs SET status = $2, updated_at = now() WHERE id = $1").await?,
        insert_event: client.prepare("INSERT INTO events (run_id, event_type, payload) VALUES ($1, $2, $3)").await?,
    };
    let tenant = format!("t{index}");
    let mut latencies = Vec::new();
    let mut cycles = 0u64;
    while window.open() {
        let started = Instant::now();
        let run = Uuid::now_v7();
        let dedupe_key = format!("{index}-{cycles}");
        let tx = client.transaction().await?;
        tx.execute(&statements.insert_run, &[&run, &tenant, &"inventory_sync", &dedupe_key]).await?;
        tx.execute(&statements.insert_event, &[&run, &"run_queued", &payload]).await?;
        tx.commit().await?;
        for (status, event) in [("running", "run_started"), ("completed", "run_completed")] {
            let tx = client.transaction().await?;
            tx.execute(&statements.update_run, &[&run, &status]).await?;
            tx.execute(&statements.insert_event, &[&run, &event, &payload]).await?;
            tx.commit().await?;
        }
        if window.measuring(started) {
            latencies.push(micros(started.elapsed()));
        }
        cycles += 1;
    }
    Ok(latencies)
}
