//! Run-list pages against raw SQLite point gets of run documents, on the
//! same read-model file.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Context;
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger_projections::monitoring::{self, Counts, RunFilter};
use opledger_projections::Projector;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::world;
use crate::stats::{micros, percentile, ratio};

pub const PAGE_SIZE: usize = 50;
/// Pages read per query: the first, then following the cursor.
const PAGES_PER_QUERY: usize = 3;
pub const KINDS: [&str; 4] = ["none", "tenant", "status", "outcome"];

/// Latency of one kind of read over one repeat.
#[derive(Debug, Clone)]
pub struct Figure {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_runs: f64,
}

/// One repeat: each filter kind, all of them together, and the baselines.
#[derive(Debug, Clone)]
pub struct Round {
    pub kinds: Vec<Figure>,
    pub mix: Figure,
    pub one_get: Figure,
    pub page_of_gets: Figure,
}

pub struct ListResults {
    pub counts: Counts,
    pub rounds: Vec<Round>,
}

pub fn measure(projector: &Projector, queries: usize, repeat: usize) -> anyhow::Result<ListResults> {
    let reader = projector.reader()?;
    let view: &rusqlite::Connection = &reader;
    let counts = monitoring::counts(view, None)?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut rounds = Vec::new();
    for _ in 0..repeat {
        rounds.push(round(view, queries, &mut rng)?);
    }
    Ok(ListResults { counts, rounds })
}

fn round(view: &rusqlite::Connection, queries: usize, rng: &mut StdRng) -> anyhow::Result<Round> {
    let mut kinds = Vec::new();
    let (mut all, mut all_runs, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for kind in KINDS {
        // One untimed query first, so the first sample does not pay for
        // faulting in the index it is the first to touch.
        pages(view, &filter(kind, rng), &mut Vec::new())?;
        let (mut latencies, mut runs) = (Vec::new(), Vec::new());
        for _ in 0..queries {
            for (micros, found) in pages(view, &filter(kind, rng), &mut ids)? {
                latencies.push(micros);
                runs.push(found as f64);
            }
        }
        all.extend_from_slice(&latencies);
        all_runs.extend_from_slice(&runs);
        kinds.push(figure(&mut latencies, &runs));
    }
    let mix = figure(&mut all, &all_runs);
    let (one_get, page_of_gets) = gets(view, &ids, queries * PAGES_PER_QUERY * KINDS.len(), rng)?;
    Ok(Round { kinds, mix, one_get, page_of_gets })
}

fn figure(latencies: &mut [f64], runs: &[f64]) -> Figure {
    Figure {
        samples: latencies.len(),
        p50_us: percentile(latencies, 0.5),
        p99_us: percentile(latencies, 0.99),
        mean_runs: ratio(runs.iter().sum(), runs.len() as f64),
    }
}

fn filter(kind: &str, rng: &mut StdRng) -> RunFilter {
    let statuses = [RunStatus::Queued, RunStatus::Running, RunStatus::Completed];
    let outcomes = RunOutcome::ALL;
    match kind {
        "tenant" => {
            RunFilter { tenant_id: Some(world::tenant(rng.gen_range(0..world::TENANTS))), ..RunFilter::default() }
        }
        "status" => RunFilter { status: statuses.choose(rng).copied(), ..RunFilter::default() },
        "outcome" => RunFilter { outcome: outcomes.choose(rng).copied(), ..RunFilter::default() },
        _ => RunFilter::default(),
    }
}

/// The first pages of one query, each timed: (µs, runs on the page). The
/// run ids seen go to `ids` for the baseline.
fn pages(view: &rusqlite::Connection, filter: &RunFilter, ids: &mut Vec<Uuid>) -> anyhow::Result<Vec<(f64, usize)>> {
    let mut cursor: Option<String> = None;
    let mut timed = Vec::new();
    for _ in 0..PAGES_PER_QUERY {
        let started = Instant::now();
        let page = monitoring::list(view, filter, cursor.as_deref(), PAGE_SIZE)?;
        timed.push((micros(started.elapsed()), page.runs.len()));
        ids.extend(page.runs.iter().map(|run| run.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(timed)
}

/// The baselines: one raw SQLite point get of a run's document by primary
/// key (its stored, compressed bytes, not decoded), and the 50 gets a page
/// must at least do, on the same file (the `run_documents` table of
/// `monitoring.rs`; each run's `first_position` looked up untimed).
fn gets(
    view: &rusqlite::Connection,
    ids: &[Uuid],
    samples: usize,
    rng: &mut StdRng,
) -> anyhow::Result<(Figure, Figure)> {
    anyhow::ensure!(!ids.is_empty(), "the run list returned no run");
    let mut positions = Vec::with_capacity(ids.len());
    for id in ids {
        let position: i64 = view
            .query_row("SELECT first_position FROM runs WHERE run_id = ?1", [id.to_string()], |row| row.get(0))
            .with_context(|| format!("run {id} has no row"))?;
        positions.push(position);
    }
    let mut get = view.prepare("SELECT run FROM run_documents WHERE first_position = ?1")?;
    let mut fetch = |position: i64| -> anyhow::Result<Vec<u8>> { Ok(get.query_row([position], |row| row.get(0))?) };
    let (mut one, mut fifty) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let page: Vec<i64> = (0..PAGE_SIZE).filter_map(|_| positions.choose(rng).copied()).collect();
        let started = Instant::now();
        for position in &page {
            black_box(fetch(*position)?);
        }
        fifty.push(micros(started.elapsed()));
        // Another run than the page's, so the single get is not served from
        // the page just read.
        let single = positions.choose(rng).copied().unwrap_or_default();
        let started = Instant::now();
        black_box(fetch(single)?);
        one.push(micros(started.elapsed()));
    }
    let runs = vec![1.0; samples];
    let fifties = vec![PAGE_SIZE as f64; samples];
    Ok((figure(&mut one, &runs), figure(&mut fifty, &fifties)))
}
