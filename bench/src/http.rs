//! `opledger-bench http`: full run cycles over the HTTP API against the
//! same cycles through the `Ledger` API in-process.
//!
//! Three variants, run round-robin per repeat, each on a fresh data dir in
//! flush mode with the world of `bench projections` (1,000 tenants):
//!
//! - **ledger**: `Ledger::open` and N tasks calling it (what `bench cycles` does);
//! - **ledger + projector**: `open_state` (ledger, projector following the
//!   log, token store) and the same N tasks calling `state.ledger()`: the
//!   server's work without HTTP, the baseline of the ratio;
//! - **http**: `open_state` + `serve` on 127.0.0.1 in a runtime of its own,
//!   the world seeded through `POST /v1/authority`, a service token from
//!   `state.tokens`, and N clients on one thread, each on its own keep-alive
//!   connection, running POST /v1/runs → …/begin → …/complete.
//!
//! Loopback only; every window is bounded and the server is stopped by
//! shutting its runtime down. (`serve` installs its SIGINT handler, so after
//! the first http variant Ctrl-C no longer interrupts the bench; it ends by
//! itself within `repeat × 3 × (warm-up + seconds)` plus seeding.)

mod client;
mod cpu;
mod load;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opledger::domain::ledger::Ledger;
use opledger::domain::model::Principal;
use opledger::domain::sequencer::AUTHORITY_BATCH_CHANGES_MAX;
use opledger::{Durability, LogOptions};
use opledger_projections::projector::Progress;
use opledger_projections::Projector;
use tempfile::TempDir;
use tokio::runtime::Runtime;

use super::projections::world;
use load::Latencies;
use opledger_tools::server::{open_state, serve};
use opledger_tools::tokens::Grant;

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// Measured seconds per variant and repeat.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured seconds before each measured window (same data dir).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Runs of every variant; the tables show medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Concurrent clients, each running whole cycles on its own tenant.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Variants to run (the ratio needs ledger-projector).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ledger,ledger-projector,http")]
    variants: Vec<Variant>,
    /// Where the temporary data dirs go (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Ledger,
    LedgerProjector,
    Http,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Ledger, Variant::LedgerProjector, Variant::Http];

    fn label(self) -> &'static str {
        match self {
            Variant::Ledger => "ledger",
            Variant::LedgerProjector => "ledger + projector",
            Variant::Http => "http",
        }
    }
}

/// One measured window of one variant.
pub struct Sample {
    pub variant: Variant,
    pub seconds: f64,
    pub latencies: Latencies,
    pub events_per_commit: f64,
    /// Events the projector had not applied when the window ended.
    pub projector_lag: Option<u64>,
    /// CPU seconds by thread name over the window.
    pub cpu: BTreeMap<String, f64>,
}

struct Plan {
    length: Duration,
    warmup: Duration,
    clients: usize,
    dir: PathBuf,
}

impl Plan {
    fn tempdir(&self) -> anyhow::Result<TempDir> {
        let made = tempfile::Builder::new().prefix("opledger-bench-http-").tempdir_in(&self.dir);
        made.with_context(|| format!("creating a temp dir in {}", self.dir.display()))
    }
}

pub fn run(args: HttpArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.repeat > 0 && args.clients > 0, "--repeat and --clients must be at least 1");
    // The server's per-request lines are DEBUG events of its module (server/request_log.rs).
    if tracing::enabled!(target: "opledger_tools::server", tracing::Level::DEBUG) {
        eprintln!("note: debug logs are on, so the server logs a line per request; RUST_LOG=info measures without");
    }
    let plan = Plan {
        length: Duration::try_from_secs_f64(args.seconds).context("--seconds")?,
        warmup: Duration::try_from_secs_f64(args.warmup_seconds).context("--warmup-seconds")?,
        clients: args.clients,
        dir: args.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let mut samples = Vec::new();
    for repeat in 1..=args.repeat {
        for &variant in &args.variants {
            let sample = match variant {
                Variant::Http => measure_http(&plan)?,
                _ => measure_in_process(&plan, variant)?,
            };
            report::progress(repeat, args.repeat, &sample);
            samples.push(sample);
        }
    }
    report::print(&args_summary(&args), &samples)?;
    Ok(ExitCode::SUCCESS)
}

fn args_summary(args: &HttpArgs) -> String {
    format!(
        "{} clients, {} s measured after {} s of warm-up, {} repeats",
        args.clients, args.seconds, args.warmup_seconds, args.repeat
    )
}

fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

/// What every variant reads around its measured window.
struct Window {
    started: Instant,
    cpu: cpu::Snapshot,
    stats: opledger::LogStats,
}

impl Window {
    fn open(ledger: &Ledger) -> Window {
        Window { started: Instant::now(), cpu: cpu::snapshot(), stats: ledger.log().stats() }
    }

    fn close(self, variant: Variant, ledger: &Ledger, projector: Option<&Projector>, latencies: Latencies) -> Sample {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = cpu::seconds_by_name(&self.cpu, &cpu::snapshot());
        let after = ledger.log().stats();
        let events = after.events_appended - self.stats.events_appended;
        let commits = after.commits - self.stats.commits;
        let events_per_commit = super::stats::ratio(events as f64, commits as f64);
        let head = ledger.log().head().position;
        let projector_lag = projector.map(|p| match p.progress() {
            Progress::Applied(at) => head.saturating_sub(at),
            Progress::Stopped { .. } => head,
        });
        Sample { variant, seconds, latencies, events_per_commit, projector_lag, cpu }
    }
}

fn measure_in_process(plan: &Plan, variant: Variant) -> anyhow::Result<Sample> {
    let dir = plan.tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().thread_name("bench-ledger").enable_all().build()?;
    let (ledger, projector) = match variant {
        Variant::LedgerProjector => {
            let state = open_state(dir.path(), options())?;
            runtime.spawn(state.projector()?.follow());
            (state.ledger()?, Some(state.projector()?))
        }
        _ => (Arc::new(Ledger::open(dir.path().join("log"), options())?), None),
    };
    for chunk in world::changes().chunks(AUTHORITY_BATCH_CHANGES_MAX) {
        runtime.block_on(ledger.record_authority(Principal::System, chunk.to_vec()))?;
    }
    runtime.block_on(load::drive_ledger(&ledger, plan.clients, plan.warmup))?;
    let window = Window::open(&ledger);
    let latencies = runtime.block_on(load::drive_ledger(&ledger, plan.clients, plan.length))?;
    let sample = window.close(variant, &ledger, projector.as_deref(), latencies);
    drop((ledger, projector));
    runtime.shutdown_timeout(Duration::from_secs(10));
    Ok(sample)
}

fn measure_http(plan: &Plan) -> anyhow::Result<Sample> {
    let dir = plan.tempdir()?;
    let state = open_state(dir.path(), options())?;
    let (token, _) = state.tokens.create(Grant::Service { name: "bench".to_owned() })?;
    let (ledger, projector) = (state.ledger()?, state.projector()?);
    let address = free_address()?;
    let server = tokio::runtime::Builder::new_multi_thread().thread_name("http-server").enable_all().build()?;
    server.spawn(serve(state, address));
    // The clients share one thread (this one), so the server keeps the
    // runtime's workers to itself as it would in production.
    let clients = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = clients.block_on(load_http(plan, address, &token, &ledger, &projector));
    drop((ledger, projector));
    stop(server);
    result
}

async fn load_http(
    plan: &Plan,
    address: SocketAddr,
    token: &str,
    ledger: &Ledger,
    projector: &Projector,
) -> anyhow::Result<Sample> {
    wait_until_listening(address).await?;
    let mut connection = client::Connection::open(address, token).await?;
    for chunk in world::changes().chunks(AUTHORITY_BATCH_CHANGES_MAX) {
        let body = serde_json::to_vec(&serde_json::json!({"changed_by": Principal::System, "changes": chunk}))?;
        load::post_authority(&mut connection, &body).await?;
    }
    drop(connection);
    load::drive_http(address, token, plan.clients, plan.warmup).await?;
    let window = Window::open(ledger);
    let latencies = load::drive_http(address, token, plan.clients, plan.length).await?;
    Ok(window.close(Variant::Http, ledger, Some(projector), latencies))
}

/// Dropping the runtime drops `serve` and the projector's follower with it,
/// and with them the last handles on the log, which closes it.
fn stop(server: Runtime) {
    server.shutdown_timeout(Duration::from_secs(10));
}

/// A port the kernel just handed out and took back: free unless something
/// grabs it in the instant before `serve` binds it.
fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

async fn wait_until_listening(address: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                return Err(error).with_context(|| format!("the server never listened on {address}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
