//! `opledger-bench cycles`: the domain's cost.
//!
//! 1. Legitimacy decision evaluation, in ns per decision, beside the
//!    baseline a store-backed design would pay instead: reading the same
//!    facts from a raw sled tree.
//! 2. Full durable run cycles (start → begin → complete, five events) per
//!    second with N concurrent workers, beside raw sled committing the same
//!    number of event-sized records in the same group sizes the ledger
//!    achieved (apply_batch + flush, + fdatasync in fsync mode).

use std::hint::black_box;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opledger::domain::authority::{AuthorityChange as C, AuthorityState};
use opledger::domain::ledger::Ledger;
use opledger::domain::legitimacy::{evaluate, RunFacts};
use opledger::domain::lifecycle::Completion;
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal, WorkerOutcome};
use opledger::domain::start_gate::StartRequest;
use opledger::{Durability, LogOptions};
use uuid::Uuid;

use super::stats::{median, micros, percentile, ratio};

#[derive(Debug, clap::Args)]
pub struct CyclesArgs {
    /// Seconds per measured cell.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Repetitions of each cell; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Concurrent workers, each running whole cycles.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Durability modes to measure (comma separated: flush,fsync).
    #[arg(long, value_delimiter = ',', default_value = "flush,fsync")]
    modes: Vec<String>,
}

/// Tenants of the authority world (the postgres bench's cycles share it).
pub(crate) const TENANTS: usize = 1_000;

pub(crate) fn s(value: impl Into<String>) -> String {
    value.into()
}

/// A realistic authority world: TENANTS tenants in 10 workspaces, each
/// with 5 members holding 2 capabilities, a ready default connection and
/// an open write gate; three operation types.
pub(crate) fn world() -> Vec<C> {
    let mut changes = vec![];
    for workspace in 0..10 {
        changes.push(C::WorkspaceRegistered { workspace_id: format!("w{workspace}") });
    }
    for tenant in 0..TENANTS {
        let tenant_id = format!("t{tenant}");
        let workspace_id = format!("w{}", tenant % 10);
        changes.push(C::TenantRegistered {
            tenant_id: tenant_id.clone(),
            workspace_id: workspace_id.clone(),
            lifecycle: Lifecycle::Active,
        });
        for member in 0..5 {
            let actor_id = format!("u{}", tenant * 5 + member);
            changes.push(C::WorkspaceMemberAdded { workspace_id: workspace_id.clone(), actor_id: actor_id.clone() });
            changes.push(C::TenantMemberAdded { tenant_id: tenant_id.clone(), actor_id: actor_id.clone() });
            for capability in ["tenant.sync", "operations.view"] {
                changes.push(C::CapabilityGranted {
                    tenant_id: tenant_id.clone(),
                    actor_id: actor_id.clone(),
                    capability: s(capability),
                });
            }
        }
        let connection_id = format!("c{tenant}");
        changes.push(C::ProviderConnectionRegistered {
            connection_id: connection_id.clone(),
            tenant_id: tenant_id.clone(),
            status: ConnectionStatus::Ready,
        });
        changes.push(C::DefaultProviderConnectionSet { tenant_id: tenant_id.clone(), connection_id });
        changes.push(C::WriteGateChanged { tenant_id, open: true });
    }
    for (name, provider_backed) in [("inventory_sync", true), ("restore.execute", false), ("report.build", false)] {
        changes.push(C::OperationTypeRegistered(OperationTypeSpec {
            operation_type: s(name),
            required_capability: s("tenant.sync"),
            provider_backed,
            writes: false,
            system_authority_allowed: true,
            max_attempts: 3,
            lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
        }));
    }
    changes
}

pub fn run(args: CyclesArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "## Legitimacy decisions\n")?;
    writeln!(out, "| figure | opledger | baseline: raw sled reads of the same facts | ratio |")?;
    writeln!(out, "| --- | --- | --- | --- |")?;
    let (gate_ns, sled_ns) = decisions(&args)?;
    writeln!(
        out,
        "| ns per decision (median of {}) | {gate_ns:.0} | {sled_ns:.0} | {:.2}x faster |",
        args.repeat,
        ratio(sled_ns, gate_ns)
    )?;
    writeln!(out, "\n## Full durable run cycles, {} concurrent workers\n", args.workers)?;
    writeln!(out, "| mode | cycles/s | command p50 us | command p99 us | events per commit | raw sled cycles/s (same groups) | ratio |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for mode in &args.modes {
        let durability = match mode.as_str() {
            "flush" => Durability::Flush,
            "fsync" => Durability::Fsync,
            other => anyhow::bail!("unknown mode {other}: use flush or fsync"),
        };
        let cell = median_cell(&args, durability)?;
        writeln!(
            out,
            "| {mode} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} |",
            cell.cycles_per_second,
            cell.p50_us,
            cell.p99_us,
            cell.events_per_commit,
            cell.raw_cycles_per_second,
            ratio(cell.cycles_per_second, cell.raw_cycles_per_second)
        )?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// (gate ns per decision, raw sled ns per decision), medians.
fn decisions(args: &CyclesArgs) -> anyhow::Result<(f64, f64)> {
    let mut state = AuthorityState::default();
    for change in world() {
        state.apply(state.position + 1, &change).map_err(anyhow::Error::msg)?;
    }
    let dir = tempfile::tempdir()?;
    let tree = sled::Config::new().path(dir.path()).open()?;
    for key in fact_keys(0) {
        tree.insert(key, b"true".to_vec())?;
    }
    let initiator = Principal::actor("u0");
    let facts = RunFacts {
        run_id: Uuid::nil(),
        operation_type: "inventory_sync",
        tenant_id: "t0",
        workspace_id: "w0",
        initiator: &initiator,
        provider_connection_id: Some("c0"),
    };
    let rounds = 200_000u32;
    let mut gate = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..args.repeat {
        let started = Instant::now();
        for attempt in 0..rounds {
            black_box(evaluate(black_box(&facts), attempt, &state));
        }
        gate.push(started.elapsed().as_nanos() as f64 / f64::from(rounds));
        let started = Instant::now();
        for _ in 0..rounds {
            for key in fact_keys(0) {
                black_box(tree.get(key)?);
            }
        }
        raw.push(started.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    Ok((median(gate), median(raw)))
}

/// The seven facts a decision reads, as keys a store-backed design would look up.
fn fact_keys(tenant: usize) -> [String; 7] {
    [
        "catalog/inventory_sync".to_owned(),
        format!("workspace/w{}/member/u0", tenant % 10),
        format!("tenant/t{tenant}/member/u0"),
        format!("tenant/t{tenant}/capability/u0/tenant.sync"),
        format!("tenant/t{tenant}/lifecycle"),
        format!("connection/c{tenant}"),
        format!("tenant/t{tenant}/write_gate"),
    ]
}

struct Cell {
    cycles_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    events_per_commit: f64,
    raw_cycles_per_second: f64,
}

fn median_cell(args: &CyclesArgs, durability: Durability) -> anyhow::Result<Cell> {
    let mut cells = Vec::new();
    for _ in 0..args.repeat {
        cells.push(cycles_cell(args, durability)?);
    }
    Ok(Cell {
        cycles_per_second: median(cells.iter().map(|c| c.cycles_per_second)),
        p50_us: median(cells.iter().map(|c| c.p50_us)),
        p99_us: median(cells.iter().map(|c| c.p99_us)),
        events_per_commit: median(cells.iter().map(|c| c.events_per_commit)),
        raw_cycles_per_second: median(cells.iter().map(|c| c.raw_cycles_per_second)),
    })
}

fn cycles_cell(args: &CyclesArgs, durability: Durability) -> anyhow::Result<Cell> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let options = LogOptions { durability, ..LogOptions::default() };
    let ledger = Arc::new(Ledger::open(dir.path(), options).context("opening the ledger")?);
    for chunk in world().chunks(opledger::domain::sequencer::AUTHORITY_BATCH_CHANGES_MAX) {
        runtime.block_on(ledger.record_authority(Principal::System, chunk.to_vec()))?;
    }
    let before = ledger.log().stats();
    let deadline = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut latencies: Vec<f64> = Vec::new();
    let mut cycles = 0u64;
    for (worker_cycles, worker_latencies) in runtime.block_on(workers(&ledger, args.workers, deadline))? {
        cycles += worker_cycles;
        latencies.extend(worker_latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = ledger.log().stats();
    let commits = after.commits - before.commits;
    let events = after.events_appended - before.events_appended;
    let events_per_commit = ratio(events as f64, commits as f64);
    let record_bytes = mean_record_bytes(&ledger, before.events_appended + 1)?;
    drop(ledger);
    let raw_events_per_second = raw_sled(durability, events_per_commit, record_bytes, deadline)?;
    let events_per_cycle = ratio(events as f64, cycles as f64);
    Ok(Cell {
        cycles_per_second: cycles as f64 / elapsed,
        p50_us: percentile(&mut latencies, 0.5),
        p99_us: percentile(&mut latencies, 0.99),
        events_per_commit,
        raw_cycles_per_second: ratio(raw_events_per_second, events_per_cycle),
    })
}

type WorkerResult = (u64, Vec<f64>);

async fn workers(ledger: &Arc<Ledger>, count: usize, deadline: Duration) -> anyhow::Result<Vec<WorkerResult>> {
    let mut tasks = Vec::new();
    for worker in 0..count {
        let ledger = Arc::clone(ledger);
        tasks.push(tokio::spawn(async move { worker_loop(&ledger, worker, deadline).await }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await??);
    }
    Ok(results)
}

/// Cycle `cycle` of client `worker`: on tenant `worker` (so scopes never
/// collide while there are fewer clients than tenants), by the tenant's
/// first member, with a dedupe key no other cycle has. The postgres
/// bench's cycles too.
pub(crate) fn start_request(worker: usize, cycle: u64) -> StartRequest {
    let tenant = worker % TENANTS;
    StartRequest {
        operation_type: s("inventory_sync"),
        tenant_id: format!("t{tenant}"),
        initiator: Principal::actor(format!("u{}", tenant * 5)),
        provider_connection_id: None,
        context: serde_json::json!({"requested_from": "bench", "cycle": cycle}),
        dedupe_key: Some(format!("{worker}-{cycle}")),
    }
}

/// A worker's report that it did the run's work.
pub(crate) fn completion() -> Completion {
    Completion {
        outcome: WorkerOutcome::Succeeded,
        summary_counts: Some(serde_json::json!({"total": 10, "processed": 10, "succeeded": 10})),
        failure: None,
        retryable: None,
    }
}

/// Whole cycles on a tenant of its own (so scopes never collide), with a
/// unique dedupe key per cycle.
async fn worker_loop(ledger: &Ledger, worker: usize, deadline: Duration) -> anyhow::Result<WorkerResult> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut cycles = 0u64;
    while started.elapsed() < deadline {
        let t = Instant::now();
        let answer = ledger.start(start_request(worker, cycles)).await?;
        latencies.push(micros(t.elapsed()));
        let run_id = answer.run().id;
        let t = Instant::now();
        ledger.begin(run_id).await?;
        latencies.push(micros(t.elapsed()));
        let t = Instant::now();
        ledger.complete(run_id, completion()).await?;
        latencies.push(micros(t.elapsed()));
        cycles += 1;
    }
    Ok((cycles, latencies))
}

fn mean_record_bytes(ledger: &Ledger, from: u64) -> anyhow::Result<usize> {
    let sample = ledger.log().read(from, 1000)?;
    let total: usize = sample.iter().map(|event| event.encode().len()).sum();
    Ok(total / sample.len().max(1))
}

/// Raw sled committing `group`-sized batches of `record_bytes` records for
/// `deadline`; events per second.
fn raw_sled(durability: Durability, group: f64, record_bytes: usize, deadline: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open()?;
    let file = std::fs::File::open(dir.path().join("db"))?;
    let group = (group.round() as u64).max(1);
    let record = vec![0x5a_u8; record_bytes];
    let started = Instant::now();
    let mut key = 0u64;
    while started.elapsed() < deadline {
        let mut batch = sled::Batch::default();
        for _ in 0..group {
            key += 1;
            batch.insert(&key.to_be_bytes(), record.clone());
        }
        db.apply_batch(batch)?;
        db.flush()?;
        if durability == Durability::Fsync {
            file.sync_data()?;
        }
    }
    Ok(key as f64 / started.elapsed().as_secs_f64())
}
