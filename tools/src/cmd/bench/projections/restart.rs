//! Restart to ready: what a server pays between start and its first answer,
//! against sled opening the same store.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use opledger::domain::ledger::Ledger;
use opledger::{Durability, Log, LogOptions};
use opledger_projections::Projector;

/// Milliseconds of each step of one restart.
#[derive(Debug, Clone, Copy)]
pub struct RestartSample {
    /// `sled::Config::open` of the store with the log's settings, then drop.
    pub sled_open_ms: f64,
    /// `Log::open`: sled, the head, the last 1,024 events' chain, the witness.
    pub log_open_ms: f64,
    /// `Ledger::over`: the domain state from the latest snapshot (the
    /// authority stream and the tracked runs' streams) and the log's tail.
    pub over_ms: f64,
    /// `Projector::open` on caught-up views (authority state as of the checkpoint).
    pub projector_open_ms: f64,
}

impl RestartSample {
    /// `Ledger::open` is `Log::open` then `Ledger::over`.
    pub fn ledger_open_ms(&self) -> f64 {
        self.log_open_ms + self.over_ms
    }

    pub fn ready_ms(&self) -> f64 {
        self.ledger_open_ms() + self.projector_open_ms
    }
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

pub fn measure(log_dir: &Path, repeat: usize) -> anyhow::Result<Vec<RestartSample>> {
    // The first open after the rebuilds' writes replays sled's log tail and
    // takes a new snapshot; untimed, so that every timed open (baseline and
    // ledger alike) is a restart after a clean shutdown.
    let warmup_ms = sled_open(&log_dir.join("store"))?;
    eprintln!("untimed first sled open after the rebuilds: {warmup_ms:.0} ms");
    let mut samples = Vec::new();
    for round in 1..=repeat {
        let sled_open_ms = sled_open(&log_dir.join("store"))?;
        let sample = ready(log_dir, sled_open_ms)?;
        eprintln!(
            "[{round}/{repeat}] sled open {sled_open_ms:.0} ms; Log::open {:.0} ms, Ledger::over {:.0} ms, Projector::open {:.0} ms",
            sample.log_open_ms, sample.over_ms, sample.projector_open_ms
        );
        samples.push(sample);
    }
    Ok(samples)
}

/// The floor: sled's own recovery of the same files.
fn sled_open(store: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let db = sled::Config::new()
        .path(store)
        .cache_capacity(LogOptions::default().cache_capacity_bytes)
        .flush_every_ms(None)
        .open()
        .context("opening the store with sled")?;
    let elapsed = millis(started);
    drop(db);
    Ok(elapsed)
}

/// What `open_state` does (the ledger in flush mode, then the projections),
/// step by step. Everything is dropped before returning, closing the log.
fn ready(log_dir: &Path, sled_open_ms: f64) -> anyhow::Result<RestartSample> {
    let options = LogOptions { durability: Durability::Flush, ..LogOptions::default() };
    let clock = Arc::clone(&options.clock);
    let started = Instant::now();
    let log = Arc::new(Log::open(log_dir, options).context("opening the log")?);
    let log_open_ms = millis(started);
    let started = Instant::now();
    let ledger = Ledger::over(log, clock).context("restoring the domain state")?;
    let over_ms = millis(started);
    let started = Instant::now();
    let projector = Projector::open(Arc::clone(ledger.log()), opledger_projections::all())?;
    let projector_open_ms = millis(started);
    drop(projector);
    drop(ledger);
    Ok(RestartSample { sled_open_ms, log_open_ms, over_ms, projector_open_ms })
}
