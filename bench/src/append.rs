//! `opledger-bench append`: append throughput and latency of the log against
//! raw sled writing the same bytes in the same batch sizes.
//!
//! Each cell (durability mode × number of appenders) opens a fresh log,
//! drives it with concurrent single-event appends for a fixed time, then runs
//! the raw sled baseline with the group-commit size the log reached, then the
//! same batches again with the ledger's key layout (record, two index entries
//! per event, head per batch). Cells are
//! repeated round-robin (every cell once, then again) so that a burst of
//! noise on a shared machine spoils one repeat of a few cells rather than
//! every repeat of one; the report shows medians.

pub(crate) mod ledger;
mod raw_sled;
mod report;
pub(crate) mod workload;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use opledger::Durability;
use serde::Serialize;
use tempfile::TempDir;
use tokio::runtime::Runtime;

use raw_sled::Baseline;
use report::CellSample;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct AppendArgs {
    /// Measured seconds of each run (ledger and baseline each), per cell and repeat.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 0.25)]
    warmup_seconds: f64,
    /// Runs of every cell; the tables show medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Durability modes to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "flush,fsync")]
    modes: Vec<Mode>,
    /// Numbers of concurrent appenders to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    appenders: Vec<usize>,
    /// One stream per appender (long streams) or one new stream per run.
    #[arg(long, value_enum, default_value = "appender")]
    streams: StreamLayout,
    /// Where the temporary logs go (default: the system temp dir). Put it on
    /// the disk you mean to measure: fsync on tmpfs costs nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print every sample and the medians as JSON instead of the tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Flush,
    Fsync,
}

impl Mode {
    fn durability(self) -> Durability {
        match self {
            Mode::Flush => Durability::Flush,
            Mode::Fsync => Durability::Fsync,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Flush => "flush",
            Mode::Fsync => "fsync",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamLayout {
    /// `bench-appender-N`: every append extends its appender's stream.
    Appender,
    /// `run-UUID`: every append opens a new stream, as a queued run does.
    Run,
}

/// What every run of every cell shares.
pub struct Plan {
    duration: Duration,
    warmup: Duration,
    streams: StreamLayout,
    dir: PathBuf,
    record: Vec<u8>,
}

impl Plan {
    fn new(args: &AppendArgs) -> anyhow::Result<Plan> {
        if args.repeat == 0 || args.modes.is_empty() || args.appenders.is_empty() || args.appenders.contains(&0) {
            bail!("--repeat, --modes and --appenders must each name at least one run, and appenders at least 1");
        }
        let duration = Duration::try_from_secs_f64(args.seconds).context("--seconds")?;
        let warmup = Duration::try_from_secs_f64(args.warmup_seconds).context("--warmup-seconds")?;
        if duration.is_zero() {
            bail!("--seconds must be more than 0");
        }
        let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(Plan { duration, warmup, streams: args.streams, dir, record: workload::sample_record()? })
    }

    /// A fresh directory per run, so no run reads another's data or cache.
    fn tempdir(&self) -> anyhow::Result<TempDir> {
        tempfile::Builder::new()
            .prefix("opledger-bench-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("creating a temp dir in {}", self.dir.display()))
    }
}

pub fn run(args: AppendArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cpu = workload::cpu_costs(20_000)?;
    let mut samples = Vec::new();
    for repeat in 1..=args.repeat {
        for &mode in &args.modes {
            for &appenders in &args.appenders {
                let sample = measure_cell(&runtime, &plan, mode, appenders, repeat)?;
                progress(&args, &sample);
                samples.push(sample);
            }
        }
    }
    let cells = report::medians(&args.modes, &args.appenders, &samples);
    report::print(&args, &cpu, &cells, &samples)?;
    Ok(ExitCode::SUCCESS)
}

fn measure_cell(
    runtime: &Runtime,
    plan: &Plan,
    mode: Mode,
    appenders: usize,
    repeat: usize,
) -> anyhow::Result<CellSample> {
    let ledger = ledger::measure(runtime, plan, mode, appenders)?;
    // The baseline writes the batches the ledger's group commit formed, so
    // the comparison isolates per-batch cost from batching luck.
    let baseline = match appenders {
        1 => Baseline::Insert,
        _ => Baseline::Batch((ledger.mean_group.round() as usize).max(1)),
    };
    let raw = raw_sled::measure(plan, mode, baseline, &plan.record)?;
    let events = raw.batch;
    let indexed = Baseline::Indexed { events, appenders, streams: plan.streams };
    let indexed = raw_sled::measure(plan, mode, indexed, &plan.record)?;
    Ok(CellSample { mode, appenders, repeat, ledger, raw, indexed })
}

/// One line per run on stderr, so a long run shows it is alive and a noisy
/// repeat can be spotted; stdout keeps only the report.
fn progress(args: &AppendArgs, s: &CellSample) {
    eprintln!(
        "[{}/{}] {} x{}: ledger {:.0}/s p50 {:.0}µs group {:.1} | raw sled {:.0}/s p50 {:.0}µs batch {} \
         | indexed {:.0}/s p50 {:.0}µs",
        s.repeat,
        args.repeat,
        s.mode,
        s.appenders,
        s.ledger.appends_per_second,
        s.ledger.p50_us,
        s.ledger.mean_group,
        s.raw.events_per_second,
        s.raw.p50_us,
        s.raw.batch,
        s.indexed.events_per_second,
        s.indexed.p50_us
    );
}
