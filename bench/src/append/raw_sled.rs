//! The baseline of a cell: raw sled, one thread, writing records of the
//! ledger's size in batches of the size the ledger's group commits reached,
//! each batch made durable the way the ledger makes a group commit durable.
//! No JSON, no hashing, no indexes, no writer thread: what is left is the
//! floor the ledger is compared with.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use opledger::LogOptions;
use serde::Serialize;

use super::{Mode, Plan, StreamLayout};
use crate::stats::{micros, percentile, ratio};

/// How the baseline writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// `insert` then `flush`, per event: the single appender's baseline.
    Insert,
    /// One `Batch` of this many records, `apply_batch`, then `flush`.
    Batch(usize),
    /// As `Batch`, with the ledger's key layout: per event the record and its
    /// two index entries, per batch the head. Between the plain baseline and
    /// the ledger, it splits the ledger's cost into what its storage layout
    /// costs in sled and what its own machinery costs.
    Indexed { events: usize, appenders: usize, streams: StreamLayout },
}

impl Baseline {
    fn events(self) -> usize {
        match self {
            Baseline::Insert => 1,
            Baseline::Batch(events) | Baseline::Indexed { events, .. } => events,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RawSample {
    pub batch: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Per batch (per event for `Insert`).
    pub p50_us: f64,
    pub p99_us: f64,
    /// Mean time per batch in each step, to say where the time goes.
    pub apply_us: f64,
    pub flush_us: f64,
    pub fdatasync_us: f64,
}

pub fn measure(plan: &Plan, mode: Mode, baseline: Baseline, record: &[u8]) -> anyhow::Result<RawSample> {
    let dir = plan.tempdir()?;
    let mut raw = RawDb::open(dir.path(), mode, record)?;
    run_for(&mut raw, baseline, plan.warmup)?;
    let started = Instant::now();
    let mut run = run_for(&mut raw, baseline, plan.duration)?;
    let seconds = started.elapsed().as_secs_f64();
    let batches = run.latencies.len() as f64;
    let events = (run.latencies.len() * baseline.events()) as u64;
    Ok(RawSample {
        batch: baseline.events(),
        events,
        seconds,
        events_per_second: ratio(events as f64, seconds),
        p50_us: percentile(&mut run.latencies, 0.50),
        p99_us: percentile(&mut run.latencies, 0.99),
        apply_us: ratio(micros(run.apply), batches),
        flush_us: ratio(micros(run.flush), batches),
        fdatasync_us: ratio(micros(run.sync), batches),
    })
}

#[derive(Default)]
struct Run {
    latencies: Vec<f64>,
    apply: Duration,
    flush: Duration,
    sync: Duration,
}

fn run_for(raw: &mut RawDb, baseline: Baseline, length: Duration) -> anyhow::Result<Run> {
    let until = Instant::now() + length;
    let mut run = Run::default();
    while Instant::now() < until {
        let started = Instant::now();
        raw.write(baseline)?;
        let applied = Instant::now();
        raw.db.flush()?;
        let flushed = Instant::now();
        raw.sync()?;
        let synced = Instant::now();
        run.apply += applied - started;
        run.flush += flushed - applied;
        run.sync += synced - flushed;
        run.latencies.push(micros(synced - started));
    }
    Ok(run)
}

struct RawDb {
    db: sled::Db,
    /// sled's `db` file, synced after each flush in fsync mode as the ledger does.
    db_file: Option<File>,
    value: sled::IVec,
    next_key: u64,
}

impl RawDb {
    fn open(dir: &Path, mode: Mode, record: &[u8]) -> anyhow::Result<RawDb> {
        let path = dir.join("raw-sled");
        // The ledger's cache size, so that only the ledger's own work differs.
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(LogOptions::default().cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .context("opening the raw sled baseline")?;
        let db_file = match mode {
            Mode::Fsync => Some(File::open(path.join("db")).context("opening sled's db file")?),
            Mode::Flush => None,
        };
        Ok(RawDb { db, db_file, value: sled::IVec::from(record), next_key: 0 })
    }

    fn key(&mut self) -> [u8; 8] {
        self.next_key += 1;
        self.next_key.to_be_bytes()
    }

    fn write(&mut self, baseline: Baseline) -> anyhow::Result<()> {
        match baseline {
            Baseline::Insert => {
                let key = self.key();
                self.db.insert(key, self.value.clone())?;
            }
            Baseline::Batch(events) => {
                let mut batch = sled::Batch::default();
                for _ in 0..events {
                    batch.insert(&self.key(), self.value.clone());
                }
                self.db.apply_batch(batch)?;
            }
            Baseline::Indexed { events, appenders, streams } => {
                let mut batch = sled::Batch::default();
                for _ in 0..events {
                    self.stage_indexed(&mut batch, appenders, streams);
                }
                batch.insert(b"h", vec![0x5a; 40]);
                self.db.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    /// The keys `opledger`'s store writes for one event (see `src/log/store.rs`):
    /// `e`+position → record, `s`+stream+0+version → position, `i`+id → position.
    fn stage_indexed(&mut self, batch: &mut sled::Batch, appenders: usize, streams: StreamLayout) {
        let key = self.key();
        let id = uuid::Uuid::now_v7();
        let (stream, version) = match streams {
            StreamLayout::Appender => {
                let appenders = appenders.max(1) as u64;
                (format!("bench-appender-{}", self.next_key % appenders), (self.next_key - 1) / appenders + 1)
            }
            StreamLayout::Run => (format!("run-{id}"), 1),
        };
        batch.insert([&b"e"[..], &key].concat(), self.value.clone());
        batch.insert([&b"s"[..], stream.as_bytes(), &[0], &version.to_be_bytes()].concat(), &key);
        batch.insert([&b"i"[..], id.as_bytes()].concat(), &key);
    }

    fn sync(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.db_file {
            file.sync_data().context("fdatasync of sled's db file")?;
        }
        Ok(())
    }
}
