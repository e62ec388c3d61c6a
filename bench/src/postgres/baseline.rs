//! What the two SQL baselines (raw inserts, plain SQL cycles) share: N
//! connections, the baseline's tables created on the first, one task per
//! connection working until the window closes, the WAL the cluster wrote
//! while measured.

use std::future::Future;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

use super::wal::WalMeter;
use super::window::Window;
use super::Plan;

/// One baseline run, before its statistics.
pub struct Measured {
    /// Each measured piece of work's latency, in microseconds.
    pub latencies: Vec<f64>,
    pub seconds: f64,
    pub wal_bytes: u64,
}

/// Creates `tables` on `url`, then runs `work(connection, index, window)`
/// on each of `clients` connections at once until the window closes.
pub async fn run<F, Fut>(plan: &Plan, url: &str, clients: usize, tables: &str, work: F) -> anyhow::Result<Measured>
where
    F: Fn(Client, usize, Window) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<f64>>> + Send + 'static,
{
    let connections = connect_all(url, clients).await?;
    connections
        .first()
        .context("no connection")?
        .batch_execute(tables)
        .await
        .context("creating the baseline's tables")?;
    let mut wal = WalMeter::connect(url).await?;
    let window = Window::starting_in(plan.warmup, plan.duration);
    let mut tasks = JoinSet::new();
    for (index, client) in connections.into_iter().enumerate() {
        tasks.spawn(work(client, index, window));
    }
    tokio::time::sleep_until(window.from.into()).await;
    wal.start().await?;
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("a baseline client failed")??);
    }
    let seconds = window.measured_seconds();
    Ok(Measured { latencies, seconds, wal_bytes: wal.written().await? })
}

/// `count` connections to `url`, each driven by a task of its own.
async fn connect_all(url: &str, count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let (client, connection) =
            tokio_postgres::connect(url, NoTls).await.context("connecting to the bench database")?;
        tokio::spawn(connection);
        clients.push(client);
    }
    Ok(clients)
}
