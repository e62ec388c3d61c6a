//! The cycle every variant runs (start → begin → complete, on the client's
//! own tenant so scopes never collide, a unique dedupe key per cycle), and
//! the two ways of driving it: the `Ledger` API in-process, and HTTP over
//! keep-alive loopback connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::Completion;
use opledger::domain::model::WorkerOutcome;
use opledger::domain::start_gate::StartRequest;
use serde::Deserialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{Connection, Response};
use crate::projections::world;
use crate::stats::micros;

/// Latencies (µs) of each request kind: start, begin, complete.
#[derive(Debug, Default)]
pub struct Latencies {
    pub cycles: u64,
    pub by_kind: [Vec<f64>; 3],
    /// Response body bytes of each request kind, summed (HTTP only).
    pub response_bytes: [u64; 3],
}

impl Latencies {
    fn merge(&mut self, other: Latencies) {
        self.cycles += other.cycles;
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            mine.extend(theirs);
        }
        for (mine, theirs) in self.response_bytes.iter_mut().zip(other.response_bytes) {
            *mine += theirs;
        }
    }
}

fn start_request(client: usize, cycle: u64) -> StartRequest {
    let tenant = client % world::TENANTS;
    StartRequest {
        operation_type: world::SYNC.to_owned(),
        tenant_id: world::tenant(tenant),
        initiator: world::member(tenant, 0),
        provider_connection_id: None,
        context: serde_json::json!({"requested_from": "bench", "cycle": cycle}),
        dedupe_key: Some(format!("{client}-{cycle}")),
    }
}

fn completion() -> Completion {
    Completion {
        outcome: WorkerOutcome::Succeeded,
        summary_counts: Some(serde_json::json!({"total": 10, "processed": 10, "succeeded": 10})),
        failure: None,
        retryable: None,
    }
}

/// Runs `clients` tasks until `length` has passed; the window ends when
/// the last cycle begun before the deadline is done.
async fn drive<F>(clients: usize, length: Duration, client: impl Fn(usize, Instant) -> F) -> anyhow::Result<Latencies>
where
    F: std::future::Future<Output = anyhow::Result<Latencies>> + Send + 'static,
{
    let until = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for index in 0..clients {
        tasks.spawn(client(index, until));
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined.context("a client task failed")??);
    }
    Ok(all)
}

pub async fn drive_ledger(ledger: &Arc<Ledger>, clients: usize, length: Duration) -> anyhow::Result<Latencies> {
    drive(clients, length, |index, until| ledger_client(Arc::clone(ledger), index, until)).await
}

async fn ledger_client(ledger: Arc<Ledger>, client: usize, until: Instant) -> anyhow::Result<Latencies> {
    let mut out = Latencies::default();
    while Instant::now() < until {
        let request = start_request(client, out.cycles);
        let started = Instant::now();
        let run_id = ledger.start(request).await?.run().id;
        out.by_kind[0].push(micros(started.elapsed()));
        let started = Instant::now();
        ledger.begin(run_id).await?;
        out.by_kind[1].push(micros(started.elapsed()));
        let started = Instant::now();
        ledger.complete(run_id, completion()).await?;
        out.by_kind[2].push(micros(started.elapsed()));
        out.cycles += 1;
    }
    Ok(out)
}

pub async fn drive_http(
    address: SocketAddr,
    token: &str,
    clients: usize,
    length: Duration,
) -> anyhow::Result<Latencies> {
    let token: Arc<str> = Arc::from(token);
    drive(clients, length, |index, until| http_client(address, Arc::clone(&token), index, until)).await
}

/// The request bodies are built before the clock starts, as in the
/// in-process variant, where building the request is the caller's cost too.
async fn http_client(address: SocketAddr, token: Arc<str>, client: usize, until: Instant) -> anyhow::Result<Latencies> {
    let mut connection = Connection::open(address, &token).await?;
    let complete_body = serde_json::to_vec(&completion())?;
    let mut out = Latencies::default();
    while Instant::now() < until {
        let start_body = serde_json::to_vec(&start_request(client, out.cycles))?;
        let started = Instant::now();
        let response = connection.post("/v1/runs", &start_body).await?;
        out.by_kind[0].push(micros(started.elapsed()));
        out.response_bytes[0] += response.body.len() as u64;
        let run_id = started_run(&response)?;
        let (begin_path, complete_path) = (format!("/v1/runs/{run_id}/begin"), format!("/v1/runs/{run_id}/complete"));
        let started = Instant::now();
        let response = connection.post(&begin_path, b"{}").await?;
        out.by_kind[1].push(micros(started.elapsed()));
        out.response_bytes[1] += response.body.len() as u64;
        expect(&response, 200, "begin")?;
        let started = Instant::now();
        let response = connection.post(&complete_path, &complete_body).await?;
        out.by_kind[2].push(micros(started.elapsed()));
        out.response_bytes[2] += response.body.len() as u64;
        expect(&response, 200, "complete")?;
        out.cycles += 1;
    }
    Ok(out)
}

/// POSTs an authority batch (the world is seeded through the API too).
pub async fn post_authority(connection: &mut Connection, body: &[u8]) -> anyhow::Result<()> {
    let response = connection.post("/v1/authority", body).await?;
    expect(&response, 200, "authority")
}

fn expect(response: &Response, status: u16, what: &str) -> anyhow::Result<()> {
    if response.status != status {
        let body = String::from_utf8_lossy(&response.body);
        bail!("{what}: expected {status}, got {}: {body}", response.status);
    }
    Ok(())
}

#[derive(Deserialize)]
struct Started {
    run: StartedRun,
}

#[derive(Deserialize)]
struct StartedRun {
    id: Uuid,
}

fn started_run(response: &Response) -> anyhow::Result<Uuid> {
    expect(response, 201, "start")?;
    let started: Started = serde_json::from_slice(&response.body).context("the start answer")?;
    Ok(started.run.id)
}
