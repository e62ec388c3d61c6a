//! Restart to ready: what a server pays between start and its first answer,
//! against sled opening the same store.
//!
//! sled 0.34 writes its snapshot only while opening: an open reads the last
//! snapshot and replays everything written since the previous open. So the
//! first open after a stretch of writes (here: the log's generation and the
//! projections' catch-up) pays for those writes, and opens after it do not.
//! Both are reported: the first once (it cannot be repeated on the same
//! state, and it is raw sled that pays it, so the rounds after it compare
//! like with like), the later ones as rounds of raw sled then the ledger.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opledger::domain::ledger::Ledger;
use opledger::{Durability, Log, LogOptions};
use opledger_projections::Projector;

/// How long an open waits for the previous instance to let go of the store.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(60);
const LOCK_RETRY: Duration = Duration::from_millis(50);

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
    /// `Projector::open` on caught-up read models (authority state as of the checkpoint).
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

pub struct RestartResults {
    /// Raw sled's first open after the writes: its recovery of them.
    pub first_sled_open_ms: f64,
    pub rounds: Vec<RestartSample>,
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

pub fn measure(log_dir: &Path, repeat: usize) -> anyhow::Result<RestartResults> {
    let store = log_dir.join("store");
    let first_sled_open_ms = sled_open(&store)?;
    eprintln!("restart: first sled open after the writes {first_sled_open_ms:.0} ms; {repeat} rounds");
    let mut rounds = Vec::new();
    for round in 1..=repeat {
        let sled_open_ms = sled_open(&store)?;
        let sample = ready(log_dir, sled_open_ms)?;
        eprintln!(
            "[{round}/{repeat}] sled open {sled_open_ms:.0} ms; Log::open {:.0} ms, Ledger::over {:.0} ms, \
             Projector::open {:.0} ms",
            sample.log_open_ms, sample.over_ms, sample.projector_open_ms
        );
        rounds.push(sample);
    }
    Ok(RestartResults { first_sled_open_ms, rounds })
}

/// sled lets go of its file lock when the last of its IO threads drops the
/// store, which can be a moment after the last handle is dropped. An open
/// that meets the lock fails before doing any work, so it is retried and
/// only the attempt that opens is timed (by `open` itself).
fn when_unlocked<T, E>(mut open: impl FnMut() -> Result<T, E>, locked: impl Fn(&E) -> bool) -> Result<T, E> {
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    loop {
        match open() {
            Err(error) if locked(&error) && Instant::now() < deadline => std::thread::sleep(LOCK_RETRY),
            other => return other,
        }
    }
}

/// `Log::open` of the bench log.
pub fn open_log(log_dir: &Path, options: LogOptions) -> anyhow::Result<Log> {
    let (log, _) = open_log_timed(log_dir, options)?;
    Ok(log)
}

/// `Log::open` itself waits (boundedly) for a store this process just
/// closed; the time includes that wait, as a restart's would.
fn open_log_timed(log_dir: &Path, options: LogOptions) -> anyhow::Result<(Log, f64)> {
    let started = Instant::now();
    let log = Log::open(log_dir, options).context("opening the log")?;
    Ok((log, millis(started)))
}

/// The floor: sled's own recovery of the same files.
fn sled_open(store: &Path) -> anyhow::Result<f64> {
    let attempt = || {
        let started = Instant::now();
        let db = sled::Config::new()
            .path(store)
            .cache_capacity(LogOptions::default().cache_capacity_bytes)
            .flush_every_ms(None)
            .open()?;
        Ok::<_, sled::Error>((db, millis(started)))
    };
    // sled reports its lock as `ErrorKind::Other` with this text.
    let locked =
        |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
    let (db, elapsed) = when_unlocked(attempt, locked).context("opening the store with sled")?;
    drop(db);
    Ok(elapsed)
}

/// What `open_state` does (the ledger in flush mode, then the projections),
/// step by step. Everything is dropped before returning, closing the log.
fn ready(log_dir: &Path, sled_open_ms: f64) -> anyhow::Result<RestartSample> {
    let options = LogOptions { durability: Durability::Flush, ..LogOptions::default() };
    let clock = Arc::clone(&options.clock);
    let (log, log_open_ms) = open_log_timed(log_dir, options)?;
    let started = Instant::now();
    let ledger = Ledger::over(Arc::new(log), clock).context("restoring the domain state")?;
    let over_ms = millis(started);
    let started = Instant::now();
    let projector = Projector::open(Arc::clone(ledger.log()), opledger_projections::all())?;
    let projector_open_ms = millis(started);
    drop(projector);
    drop(ledger);
    Ok(RestartSample { sled_open_ms, log_open_ms, over_ms, projector_open_ms })
}
