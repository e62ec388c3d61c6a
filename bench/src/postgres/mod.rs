//! `opledger-bench postgres`: the log on PostgreSQL, in one run.
//!
//! Cells: clients × nodes (two nodes are two `Log`s, or two `Ledger`s, in
//! this process over the same database, each with its own connections and
//! writer). Per cell and repeat, five runs, each on a fresh database:
//! 1. **appends**: the ledger's log, one event per append;
//! 2. **raw inserts**: the same rows in the ledger's mean group size,
//!    straight into a table of the log's shape (the backend's floor), and
//!    again one row per transaction (each client's append, committed the
//!    plain way);
//! 3. **cycles**: full run cycles through the ledger;
//! 4. **plain SQL**: the same cycles as a conventional two-table design.
//!
//! Before every run the server is brought to the same state (by default a
//! `CHECKPOINT` once the run's database is created: [`server::Settle`]), so
//! no run pays for the WAL and dirty buffers of the runs before it.
//!
//! Cells are repeated round-robin (every cell once, then again), so a burst
//! of noise on a shared machine spoils one repeat of a few cells rather than
//! every repeat of one; the report shows medians. Within a cell, odd
//! repeats run each ledger side before its baselines and even repeats
//! after, except the same-groups raw inserts, which always follow the
//! appends whose mean group they take.

mod appends;
mod baseline;
mod cycles;
mod plain;
mod raw;
mod report;
mod server;
mod wal;
mod window;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::append::workload::Payloads;
use report::CellSample;
use server::{Server, Settle};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct PostgresArgs {
    /// An existing server to measure (a postgres:// URL or key=value string
    /// whose user may create databases); by default the bench starts a
    /// throwaway cluster of its own (needs PostgreSQL's server binaries).
    #[arg(long)]
    #[serde(skip)]
    url: Option<String>,
    /// Numbers of concurrent clients to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Numbers of nodes (logs or ledgers over the same database) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    nodes: Vec<usize>,
    /// Measured seconds of each run, per cell and repeat.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Runs of every cell; the tables show medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// How the server is brought to the same state before every run.
    #[arg(long, value_enum, default_value_t = Settle::Checkpoint)]
    settle: Settle,
    /// How the appends run's clients get their events' payloads:
    /// `prebuilt` (once per client, as the raw baselines' record) or
    /// `per-event` (built as JSON for every event, the method before
    /// session 18).
    #[arg(long, value_enum, default_value_t = Payloads::Prebuilt)]
    payloads: Payloads,
    /// Give the bench's own cluster a synchronous standby (a second cluster
    /// on this machine, `synchronous_standby_names = '*'`): every
    /// synchronous commit then also waits for the standby's flush, as in
    /// the setup the README recommends for surviving the primary's loss.
    /// Not with `--url` or `--settle cluster`.
    #[arg(long)]
    standby: bool,
    /// Print every sample and the medians as JSON instead of the tables.
    #[arg(long)]
    json: bool,
}

/// What every run of every cell shares.
pub struct Plan {
    duration: Duration,
    warmup: Duration,
    /// A stored record of a `run_queued` event: the raw rows' and the plain
    /// SQL events' payload, so every side moves the same bytes.
    record: Vec<u8>,
    /// Where the appends run's clients get their payloads.
    payloads: Payloads,
}

impl Plan {
    fn new(args: &PostgresArgs) -> anyhow::Result<Plan> {
        if args.repeat == 0 || args.clients.is_empty() || args.nodes.is_empty() {
            bail!("--repeat, --clients and --nodes must each name at least one run");
        }
        if args.clients.contains(&0) || args.nodes.contains(&0) {
            bail!("--clients and --nodes must be at least 1");
        }
        let duration = Duration::try_from_secs_f64(args.seconds).context("--seconds")?;
        let warmup = Duration::try_from_secs_f64(args.warmup_seconds).context("--warmup-seconds")?;
        if duration.is_zero() {
            bail!("--seconds must be more than 0");
        }
        Ok(Plan { duration, warmup, record: crate::append::workload::sample_record()?, payloads: args.payloads })
    }
}

pub fn run(args: PostgresArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut server = match &args.url {
        Some(_) if args.standby => bail!("--standby gives the bench's own cluster a standby: not with --url"),
        Some(url) => Server::existing(url, args.settle)?,
        None if args.standby && args.settle == Settle::Cluster => {
            bail!("--standby keeps one primary and its standby for the whole bench: not with --settle cluster")
        }
        None => Server::start(args.settle, args.standby),
    };
    let mut samples = Vec::new();
    for repeat in 1..=args.repeat {
        for &clients in &args.clients {
            for &nodes in &args.nodes {
                let sample = measure_cell(&runtime, &mut server, &plan, clients, nodes, repeat)?;
                progress(&args, &sample);
                samples.push(sample);
            }
        }
    }
    let cells = report::medians(&args.clients, &args.nodes, &samples);
    report::print(&args, &cells, &samples, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn measure_cell(
    runtime: &Runtime,
    server: &mut Server,
    plan: &Plan,
    clients: usize,
    nodes: usize,
    repeat: usize,
) -> anyhow::Result<CellSample> {
    // Alternating which side runs first cancels whatever drift is left
    // between a ledger run and the baseline it is paired with.
    let ledger_first = repeat % 2 == 1;
    // The rows as the clients append them, one per transaction: what the
    // same clients would get from PostgreSQL without the log.
    let per_append =
        |server: &mut Server| on_fresh(server, runtime, |url| raw::measure(runtime, plan, url, clients, 1));
    let early_per_append = if ledger_first { None } else { Some(per_append(server)?) };
    let appends = on_fresh(server, runtime, |url| appends::measure(runtime, plan, url, clients, nodes))?;
    // The baseline commits the groups the ledger's writers formed, so the
    // comparison isolates per-group cost from batching luck.
    let group = (appends.mean_group.round() as usize).max(1);
    let raw = on_fresh(server, runtime, |url| raw::measure(runtime, plan, url, clients, group))?;
    let raw_per_append = match early_per_append {
        Some(sample) => sample,
        None => per_append(server)?,
    };
    let ledger_cycles =
        |server: &mut Server| on_fresh(server, runtime, |url| cycles::measure(runtime, plan, url, clients, nodes));
    let plain_cycles =
        |server: &mut Server| on_fresh(server, runtime, |url| plain::measure(runtime, plan, url, clients));
    let (cycles, plain) = if ledger_first {
        let cycles = ledger_cycles(server)?;
        (cycles, plain_cycles(server)?)
    } else {
        let plain = plain_cycles(server)?;
        (ledger_cycles(server)?, plain)
    };
    Ok(CellSample { clients, nodes, repeat, appends, raw, raw_per_append, cycles, plain })
}

/// Runs `measure` on a fresh database of `server`, dropped right after.
fn on_fresh<T>(
    server: &mut Server,
    runtime: &Runtime,
    measure: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let database = server.fresh(runtime)?;
    measure(&database.url)
}

/// One line per run on stderr, so a long run shows it is alive and a noisy
/// repeat can be spotted; stdout keeps only the report.
fn progress(args: &PostgresArgs, s: &CellSample) {
    eprintln!(
        "[{}/{}] x{} {} node(s): appends {:.0}/s p50 {:.0}µs group {:.1} speculative {}/{} missed ({} without a read) WAL {:.0} B/event | raw {:.0}/s WAL {:.0} B/event, \
         one per transaction {:.0}/s | cycles {:.0}/s p50 {:.0}µs contended {} | plain SQL {:.0}/s",
        s.repeat,
        args.repeat,
        s.clients,
        s.nodes,
        s.appends.appends_per_second,
        s.appends.p50_us,
        s.appends.mean_group,
        s.appends.speculative_commits,
        s.appends.speculative_misses,
        s.appends.speculative_unread,
        s.append_wal_per_event(),
        s.raw.events_per_second,
        s.raw_wal_per_event(),
        s.raw_per_append.events_per_second,
        s.cycles.cycles_per_second,
        s.cycles.p50_us,
        s.cycles.contended,
        s.plain.cycles_per_second
    );
}
