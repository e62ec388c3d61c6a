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
    /// Internal: rebuild the read models in --dir as `opledger rebuild` does, then exit.
    #[arg(long, hide = true)]
    rebuild_only: bool,
    /// Internal: open the ledger and the read models as `opledger serve` does, read one page, then exit.
    #[arg(long, hide = true)]
    open_only: bool,
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
    if args.rebuild_only {
        return rebuild_only(&data, args.cache_mib);
    }
    if args.open_only {
        return open_only(&data, args.cache_mib);
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
    /// Seconds the first `Projector::open` took (loading an empty read-model file
    /// on a new log; nothing on a reused one).
    pub first_open_seconds: f64,
    pub rebuild: Vec<measure::RebuildSample>,
    pub breakdown: Vec<measure::Alone>,
    pub list: list::ListResults,
    pub restart: restart::RestartResults,
    pub rss: Option<rss::RssResults>,
    /// Bytes on disk of the log's sled store: as the bench found it, after
    /// the projections caught up, at the end.
    pub log_bytes: [u64; 3],
    /// Bytes on disk of the read models' file (with its WAL): the same three.
    pub projections_bytes: [u64; 3],
    /// sled's page cache of the reading log, MiB.
    pub cache_mib: u64,
}

fn measure_all(args: &ProjectionsArgs, data: &Path) -> anyhow::Result<Results> {
    let found = (log_bytes(data)?, projections_bytes(data)?);
    let first_open_seconds = first_open(data, args.cache_mib)?;
    let projected = (log_bytes(data)?, projections_bytes(data)?);
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
    // Rebuilding one projection alone swaps in a file of that projection
    // only, which the full projector must not go on writing: drop it first.
    drop(projector);
    let breakdown = match args.no_breakdown || args.no_rebuild {
        true => Vec::new(),
        false => measure::breakdown(&log)?,
    };
    drop(log);
    let rss = match args.no_rss {
        true => None,
        false => Some(rss::measure(data, args.events, args.cache_mib)?),
    };
    let end = (log_bytes(data)?, projections_bytes(data)?);
    let log_bytes = [found.0, projected.0, end.0];
    let projections_bytes = [found.1, projected.1, end.1];
    let cache_mib = args.cache_mib;
    Ok(Results {
        repeat: args.repeat,
        first_open_seconds,
        rebuild,
        breakdown,
        list,
        restart,
        rss,
        log_bytes,
        projections_bytes,
        cache_mib,
    })
}

/// Bytes of the log's sled store on disk.
fn log_bytes(data: &Path) -> anyhow::Result<u64> {
    disk_bytes(&generate::log_dir(data).join("store"))
}

/// Bytes of the read models' file and its WAL and shared memory, if any.
fn projections_bytes(data: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let file = opledger_projections::store::path_in(&generate::log_dir(data));
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        if let Ok(metadata) = std::fs::metadata(&name) {
            total += metadata.blocks() * 512;
        }
    }
    Ok(total)
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
/// projection up from an empty read-model file, as a server opening the log would
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

/// What `opledger rebuild --data DIR` runs: the projector opened without a
/// catch-up, then a rebuild into a fresh file.
fn rebuild_only(data: &Path, cache_mib: u64) -> anyhow::Result<ExitCode> {
    let log = Arc::new(open_log(data, cache_mib)?);
    let projector = Projector::open_without_catch_up(Arc::clone(&log), opledger_projections::all())?;
    let applied = projector.rebuild(&mut |_, _| {})?;
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{{\"events_applied\": {applied}}}")?;
    Ok(ExitCode::SUCCESS)
}

/// What a server's start holds once caught up: `open_state` (the ledger
/// and the read models), then one run-list page.
fn open_only(data: &Path, cache_mib: u64) -> anyhow::Result<ExitCode> {
    let options = LogOptions {
        durability: opledger::Durability::Flush,
        cache_capacity_bytes: cache_mib * 1024 * 1024,
        ..LogOptions::default()
    };
    let state = opledger_tools::server::open_state(data, options)?;
    let projector = state.projector().map_err(|error| anyhow::anyhow!("{}", error.message))?;
    let reader = projector.reader()?;
    let page = opledger_projections::monitoring::list(
        &reader,
        &opledger_projections::monitoring::RunFilter::default(),
        None,
        list::PAGE_SIZE,
    )?;
    std::hint::black_box(page);
    Ok(ExitCode::SUCCESS)
}

/// The median of one field over samples.
fn median_of<T>(samples: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(samples.iter().map(field))
}
