//! Full rebuilds against the raw scan, and each projection rebuilt alone.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use opledger::domain::events::DomainEvent;
use opledger::Log;
use opledger_projections::projector::APPLY_BATCH_EVENTS_MAX;
use opledger_projections::Projector;

use crate::stats::ratio;

/// One repeat: the raw scan, then the rebuild right after it.
#[derive(Debug, Clone, Copy)]
pub struct RebuildSample {
    pub events: u64,
    pub scan_seconds: f64,
    pub rebuild_seconds: f64,
}

impl RebuildSample {
    pub fn scan_rate(&self) -> f64 {
        ratio(self.events as f64, self.scan_seconds)
    }

    pub fn rebuild_rate(&self) -> f64 {
        ratio(self.events as f64, self.rebuild_seconds)
    }

    /// Paired per repeat, so that drift of a shared machine cancels.
    pub fn ratio(&self) -> f64 {
        ratio(self.rebuild_rate(), self.scan_rate())
    }
}

/// One projection rebuilt alone: the log read, the decode and the authority
/// fold are the same for every projection, so this minus the raw scan is
/// roughly what the projection itself costs.
#[derive(Debug, Clone)]
pub struct Alone {
    pub name: &'static str,
    pub seconds: f64,
    /// Rows of the projection's tables once rebuilt.
    pub rows: u64,
}

/// Every event from position 1 to the head, in the projector's page size,
/// decoded into domain events: the floor of any rebuild. (events, seconds)
pub fn scan(log: &Log) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let head = log.head().position;
    let mut applied = 0u64;
    while applied < head {
        let page = log.read(applied + 1, APPLY_BATCH_EVENTS_MAX)?;
        if page.is_empty() {
            break;
        }
        for envelope in &page {
            black_box(DomainEvent::from_envelope(envelope).map_err(anyhow::Error::msg)?);
        }
        applied += page.len() as u64;
    }
    Ok((applied, started.elapsed().as_secs_f64()))
}

fn rebuild(projector: &Projector) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let applied = projector.rebuild(&mut |_, _| {}).context("rebuilding")?;
    Ok((applied, started.elapsed().as_secs_f64()))
}

/// Each round: an untimed scan, the timed scan, the timed rebuild. A
/// rebuild leaves gigabytes of dirty pages and a page cache full of view
/// trees; a scan right after it would read the log cold while the kernel
/// writes those pages back (20x slower here), and the rebuild it is paired
/// with reads the log warm, right after a scan. The untimed scan (and a sync
/// of the store first) puts both timed steps on a warm log and a quiet disk.
pub fn rebuilds(log: &Log, store: &Path, projector: &Projector, repeat: usize) -> anyhow::Result<Vec<RebuildSample>> {
    eprintln!("full rebuild against the raw scan, {repeat} repeats");
    let mut samples = Vec::new();
    for round in 1..=repeat {
        settle(store)?;
        let (_, warming_seconds) = scan(log)?;
        let (events, scan_seconds) = scan(log)?;
        eprintln!("[{round}/{repeat}] untimed warming scan {warming_seconds:.1} s");
        let (applied, rebuild_seconds) = rebuild(projector)?;
        anyhow::ensure!(applied == events, "the rebuild applied {applied} events, the scan read {events}");
        let sample = RebuildSample { events, scan_seconds, rebuild_seconds };
        eprintln!(
            "[{round}/{repeat}] scan {:.0} events/s ({scan_seconds:.1} s), rebuild {:.0} events/s ({rebuild_seconds:.1} s)",
            sample.scan_rate(),
            sample.rebuild_rate()
        );
        samples.push(sample);
    }
    Ok(samples)
}

/// Writes the store's dirty pages back before a timed step.
fn settle(store: &Path) -> anyhow::Result<()> {
    let db = store.join("db");
    std::fs::File::open(&db).and_then(|file| file.sync_all()).with_context(|| format!("syncing {}", db.display()))
}

/// Each projection rebuilt alone, once, by a projector that holds only it
/// (the file then holds only that projection's tables; the next full
/// projector finds a file of another set of projections and rebuilds it).
pub fn breakdown(log: &Arc<Log>) -> anyhow::Result<Vec<Alone>> {
    let mut alone = Vec::new();
    for projection in opledger_projections::all() {
        let name = projection.name();
        let projector = Projector::open(Arc::clone(log), vec![projection])?;
        let (_, seconds) = rebuild(&projector)?;
        let reader = projector.reader()?;
        let rows = table_rows(&reader)?;
        eprintln!("{name} alone: {seconds:.1} s, {rows} rows");
        alone.push(Alone { name, seconds, rows });
    }
    Ok(alone)
}

/// Rows of every table of a file but the projector's own bookkeeping.
fn table_rows(db: &rusqlite::Connection) -> anyhow::Result<u64> {
    let mut statement =
        db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'projector_%' AND name NOT LIKE 'sqlite_%'")?;
    let tables = statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    let mut rows = 0u64;
    for table in tables {
        let count: i64 = db.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| row.get(0))?;
        rows += u64::try_from(count).unwrap_or(0);
    }
    Ok(rows)
}
