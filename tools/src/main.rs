//! The `opledger` binary: the command line and the server.

use opledger_tools::cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sled 0.34 copies a B-tree node on every write and allocates for each of
/// its items; glibc's allocator spends a large part of a rebuild on that
/// churn (see BENCHMARKS.md), mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the Cargo version and the git commit the binary was built
/// from (`unknown` outside a git checkout; see tools/build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OPLEDGER_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(name = "opledger", version = VERSION, about = "An event-sourced, hash-chained ledger for queued operation runs")]
struct Cli {
    /// Log format on stderr: `human` or `json`. Level from RUST_LOG (default info).
    #[arg(long, global = true, env = "OPLEDGER_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and the Monitoring pages on a data directory.
    Serve(cmd::serve::Args),
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(cmd::token::Token),
    /// Walk the whole log: positions, stream versions, hashes and chain, indexes.
    Verify(cmd::verify::Args),
    /// Print the head digest (position and hash) of the log.
    Head(cmd::head::Args),
    /// Explain every decision of a run, down to the authority events behind its facts.
    Explain(cmd::explain::Args),
    /// Monitoring's runs: `list` (filtered pages) and `show RUN` (run and timeline).
    #[command(subcommand)]
    Runs(cmd::runs::Runs),
    /// The audit trail, a page at a time or `--export jsonl`; `--as-of N` cuts it at a position.
    Audit(cmd::audit::Args),
    /// An initiator's notifications.
    Notifications(cmd::notifications::Args),
    /// The authority state as of a position: workspaces, tenants, members, capabilities, connections, catalog.
    Authority(cmd::authority::Args),
    /// The raw log: `tail` prints envelopes as JSON Lines, `--follow` keeps following.
    #[command(subcommand)]
    Events(cmd::events::Events),
    /// Rebuild every projection from the log.
    Rebuild(cmd::rebuild::Args),
    /// Export the whole log as JSON Lines of envelopes.
    Export(cmd::export::Args),
    /// Restore an export into a new, empty data directory, then check it is identical and verifies.
    Import(cmd::import::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Token(token) => cmd::token::run(token),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Head(args) => cmd::head::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Authority(args) => cmd::authority::run(args),
        Command::Runs(runs) => cmd::runs::run(runs),
        Command::Audit(args) => cmd::audit::run(args),
        Command::Notifications(args) => cmd::notifications::run(args),
        Command::Events(events) => cmd::events::run(events),
        Command::Rebuild(args) => cmd::rebuild::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Import(args) => cmd::import::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
