//! `opledger-bench projections`: the read side at a million events.
//!
//! On one realistic log (see `projections/generate.rs`), in the same run:
//!
//! 1. a full rebuild of every projection, in events/s, beside a raw scan
//!    of the same log (`Log::read` pages + `DomainEvent::from_envelope`),
//!    then each projection rebuilt alone to show which one costs what;
//! 2. run-list pages (`monitoring::list`, 50 per page) with no filter, a
//!    tenant, a status or an outcome, beside sled point gets of run records;
//! 3. restart-to-ready (`Ledger::open`, split into `Log::open` and
//!    `Ledger::over`, then `Projector::open`) beside a raw sled open of the store;
//! 4. the peak RSS of `opledger rebuild` in a child process, beside a child
//!    that only scans and decodes the log.

mod generate;
mod list;
mod measure;
mod report;
mod restart;
mod rss;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use opledger::{Log, LogOptions};
use opledger_projections::Projector;

use super::stats::median;

#[derive(Debug, clap::Args)]
pub struct ProjectionsArgs {
    /// Events in the bench log (the last command may add up to three more).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Where the bench log is kept (as `DIR/log`, the layout of `--data`) and
    /// reused by later runs asking for the same --events. Default: a temp dir,
    /// removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Regenerate the log in --dir even if it matches.
    #[arg(long)]
    regenerate: bool,
    /// Repeats of each timed step (run round-robin with its baseline); medians reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Run-list queries per filter kind and repeat (each reads up to 3 pages).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Skip every rebuild (with their raw scans and the breakdown): the run
    /// list, the restart and the RSS alone, in minutes instead of an hour.
    #[arg(long)]
    no_rebuild: bool,
    /// Skip rebuilding each projection alone.
    #[arg(long)]
    no_breakdown: bool,
    /// Skip the peak-RSS children.
    #[arg(long)]
    no_rss: bool,
    /// sled's page cache (MiB) of the logs the bench opens to read (as
    /// `serve --cache-mib`). Default: the log's default, 64.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Internal: scan and decode the log in --dir, then exit (the RSS baseline's child).
    #[arg(long, hide = true)]
    scan_only: bool,
}

pub fn run(args: ProjectionsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.repeat > 0 && args.queries > 0, "--repeat and --queries must be at least 1");
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("opledger-bench-projections-").tempdir()?),
    };
    let data = match (&args.dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temporary)) => temporary.path().to_path_buf(),
        (None, None) => anyhow::bail!("no directory for the bench log"),
    };
    if args.scan_only {
        return scan_only(&data, args.cache_mib);
    }
    eprintln!("preparing a log of {} events in {}", args.events, data.display());
    let info = generate::prepare(&data, args.events, args.regenerate)?;
    let results = measure_all(&args, &data)?;
    report::print(&info, &results)?;
    Ok(ExitCode::SUCCESS)
}

/// Everything one run measured.
pub struct Results {
    pub repeat: usize,
    /// Seconds the first `Projector::open` took (catching up from empty views
    /// on a new log; nothing on a reused one).
    pub first_open_seconds: f64,
    pub rebuild: Vec<measure::RebuildSample>,
    pub breakdown: Vec<measure::Alone>,
    pub list: list::ListResults,
    pub restart: restart::RestartResults,
    pub rss: Option<rss::RssResults>,
    /// Bytes on disk of the store: as the bench found it (right after a
    /// generation: the log alone), after the projections caught up, at the end.
    pub disk_bytes: [u64; 3],
    /// sled's page cache of the reading log, MiB.
    pub cache_mib: u64,
}

fn measure_all(args: &ProjectionsArgs, data: &Path) -> anyhow::Result<Results> {
    let disk_found = disk_bytes(data)?;
    let first_open_seconds = first_open(data, args.cache_mib)?;
    let disk_projected = disk_bytes(data)?;
    // Restarts first: the store is then as a server that appended the log and
    // projected it leaves it, not as the rebuilds below leave it.
    let restart = restart::measure(&generate::log_dir(data), args.repeat)?;
    let log = Arc::new(open_log(data, args.cache_mib)?);
    let projector =
        Projector::open(Arc::clone(&log), opledger_projections::all()).context("opening the projections")?;
    let rebuild = match args.no_rebuild {
        true => Vec::new(),
        false => measure::rebuilds(&log, &generate::log_dir(data).join("store"), &projector, args.repeat)?,
    };
    eprintln!("run-list pages");
    let list = list::measure(&projector, args.queries, args.repeat)?;
    // Rebuilding one projection alone promotes a new generation of its view,
    // which leaves the full projector's handle on a dropped tree: drop it first.
    drop(projector);
    let breakdown = match args.no_breakdown || args.no_rebuild {
        true => Vec::new(),
        false => measure::breakdown(&log)?,
    };
    drop(log);
    let rss = match args.no_rss {
        true => None,
        false => Some(rss::measure(data, args.events)?),
    };
    let disk_bytes = [disk_found, disk_projected, disk_bytes(data)?];
    let cache_mib = args.cache_mib;
    Ok(Results {
        repeat: args.repeat,
        first_open_seconds,
        rebuild,
        breakdown,
        list,
        restart,
        rss,
        disk_bytes,
        cache_mib,
    })
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, so a
/// sparse file counts what it really holds).
fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += match metadata.is_dir() {
            true => disk_bytes(&entry.path())?,
            false => metadata.blocks() * 512,
        };
    }
    Ok(total)
}

/// The first `Projector::open` on the log: on a new log it catches every
/// projection up from empty views, as a server following the appends would
/// have. Seconds; everything is closed again before returning.
fn first_open(data: &Path, cache_mib: u64) -> anyhow::Result<f64> {
    let log = Arc::new(open_log(data, cache_mib)?);
    let started = std::time::Instant::now();
    let projector =
        Projector::open(Arc::clone(&log), opledger_projections::all()).context("opening the projections")?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("first Projector::open: {seconds:.1} s");
    drop(projector);
    drop(log);
    Ok(seconds)
}

/// The bench log as the read tools open it (default options but the page
/// cache); nothing is appended.
fn open_log(data: &Path, cache_mib: u64) -> anyhow::Result<Log> {
    let options = LogOptions { cache_capacity_bytes: cache_mib * 1024 * 1024, ..LogOptions::default() };
    restart::open_log(&generate::log_dir(data), options)
}

fn scan_only(data: &Path, cache_mib: u64) -> anyhow::Result<ExitCode> {
    let log = open_log(data, cache_mib)?;
    let (events, seconds) = measure::scan(&log)?;
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{{\"events\": {events}, \"seconds\": {seconds}}}")?;
    Ok(ExitCode::SUCCESS)
}

/// The median of one field over samples.
fn median_of<T>(samples: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(samples.iter().map(field))
}
