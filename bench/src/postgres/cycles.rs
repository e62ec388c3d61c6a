//! The ledger's side of the cycles cell: full run cycles (start → begin →
//! complete) through `Ledger`s over the PostgreSQL log, one per node (each
//! its own `Log`, connections and decider), N client tasks spread over
//! them; the authority world of `opledger-bench cycles`, recorded on the
//! first node before the others open.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use opledger::domain::ledger::{Ledger, LedgerError};
use opledger::domain::model::Principal;
use opledger::domain::sequencer::AUTHORITY_BATCH_CHANGES_MAX;
use opledger::log::Clock;
use opledger::{Log, LogOptions};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::wal::WalMeter;
use super::window::Window;
use super::Plan;
use crate::cycles::{completion, start_request, world};
use crate::stats::{micros, percentile, ratio};

#[derive(Debug, Clone, Serialize)]
pub struct CycleSample {
    pub cycles: u64,
    pub cycles_per_second: f64,
    /// Per whole cycle (three commands).
    pub p50_us: f64,
    pub p99_us: f64,
    /// Events per group commit while measuring, over every node.
    pub events_per_commit: f64,
    /// Commands answered `Contended` (the other node won the race for the
    /// head every time the round was decided again) and sent again; over
    /// the whole run, warm-up included.
    pub contended: u64,
    /// WAL the cluster wrote while measured ([`super::wal`]).
    pub wal_bytes: u64,
}

pub fn measure(runtime: &Runtime, plan: &Plan, url: &str, clients: usize, nodes: usize) -> anyhow::Result<CycleSample> {
    let clock: Clock = Arc::new(chrono::Utc::now);
    let open = || -> anyhow::Result<Arc<Ledger>> {
        let log = Log::open_postgres(url, LogOptions::default()).context("opening the log on PostgreSQL")?;
        Ok(Arc::new(Ledger::over(Arc::new(log), Arc::clone(&clock))?))
    };
    let mut ledgers = vec![open()?];
    for chunk in world().chunks(AUTHORITY_BATCH_CHANGES_MAX) {
        runtime.block_on(ledgers[0].record_authority(Principal::System, chunk.to_vec()))?;
    }
    for _ in 1..nodes {
        ledgers.push(open()?);
    }
    let window = Window::starting_in(plan.warmup, plan.duration);
    let counted = |ledgers: &[Arc<Ledger>]| {
        ledgers.iter().map(|l| l.log().stats()).fold((0, 0), |(c, e), s| (c + s.commits, e + s.events_appended))
    };
    let mut tasks = JoinSet::new();
    for (worker, ledger) in (0..clients).zip(ledgers.iter().cycle()) {
        let ledger = Arc::clone(ledger);
        tasks.spawn_on(async move { client(&ledger, worker, window).await }, runtime.handle());
    }
    // The commits of the warm-up are left out as well as can be from
    // outside: counted from the start of the measured part.
    let mut wal = runtime.block_on(WalMeter::connect(url))?;
    runtime.block_on(async { tokio::time::sleep_until(window.from.into()).await });
    runtime.block_on(wal.start())?;
    let (commits_before, events_before) = counted(&ledgers);
    let mut latencies = Vec::new();
    let mut contended = 0;
    runtime.block_on(async {
        while let Some(joined) = tasks.join_next().await {
            let (client_latencies, client_contended) = joined.context("a cycle client failed")??;
            latencies.extend(client_latencies);
            contended += client_contended;
        }
        anyhow::Ok(())
    })?;
    let seconds = window.measured_seconds();
    let (commits, events) = counted(&ledgers);
    let wal_bytes = runtime.block_on(wal.written())?;
    for ledger in &ledgers {
        ledger.log().close();
    }
    Ok(CycleSample {
        cycles: latencies.len() as u64,
        cycles_per_second: ratio(latencies.len() as f64, seconds),
        p50_us: percentile(&mut latencies, 0.50),
        p99_us: percentile(&mut latencies, 0.99),
        events_per_commit: ratio((events - events_before) as f64, (commits - commits_before) as f64),
        contended,
        wal_bytes,
    })
}

/// Times one command is sent again after `Contended` answers before the
/// run fails (nothing was appended, so sending it again is safe).
const CONTENDED_RETRIES_MAX: u32 = 100;

/// What one client measured: each measured cycle's latency, and how many
/// of its commands were answered `Contended`.
type ClientResult = (Vec<f64>, u64);

/// Whole cycles on tenant `worker` (so scopes never collide, on either
/// node) until the window closes.
async fn client(ledger: &Ledger, worker: usize, window: Window) -> anyhow::Result<ClientResult> {
    let mut latencies = Vec::new();
    let mut contended = 0u64;
    let mut cycles = 0u64;
    while window.open() {
        let started = Instant::now();
        let request = start_request(worker, cycles);
        let run_id = retried(&mut contended, || ledger.start(request.clone())).await?.run().id;
        retried(&mut contended, || ledger.begin(run_id)).await?;
        retried(&mut contended, || ledger.complete(run_id, completion())).await?;
        if window.measuring(started) {
            latencies.push(micros(started.elapsed()));
        }
        cycles += 1;
    }
    Ok((latencies, contended))
}

/// Sends `command` again while it is answered `Contended`, counting those
/// answers, at most [`CONTENDED_RETRIES_MAX`] times.
async fn retried<T, F, Fut>(contended: &mut u64, mut command: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LedgerError>>,
{
    for _ in 0..CONTENDED_RETRIES_MAX {
        match command().await {
            Err(LedgerError::Contended { .. }) => *contended += 1,
            answer => return Ok(answer?),
        }
    }
    anyhow::bail!("a command was answered Contended {CONTENDED_RETRIES_MAX} times in a row")
}
