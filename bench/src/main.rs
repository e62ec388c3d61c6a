//! `opledger-bench`: measured figures, each beside a baseline from the same
//! run. Its own crate and binary, so the shipped `opledger` carries no
//! benchmark code; it links the same libraries and the same allocator, so
//! both sides of every ratio run the code users run.

mod append;
mod cycles;
mod http;
mod postgres;
mod projections;
mod stats;

use std::process::ExitCode;

use clap::Parser;

/// sled 0.34 allocates for every item it writes; the `opledger` binary runs
/// on mimalloc for that reason (see its `main.rs`), so the benchmarks do too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "opledger-bench", about = "opledger's benchmarks, each against a baseline measured in the same run")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Append throughput and latency of the log, per durability mode and number
    /// of concurrent appenders, against raw sled writing the same batches.
    Append(append::AppendArgs),
    /// The domain: legitimacy decisions (ns each) against reading the same
    /// facts from raw sled, and full durable run cycles (start → begin →
    /// complete) per second against raw sled committing the same records.
    Cycles(cycles::CyclesArgs),
    /// The read side on a log of a million events: full rebuild against a raw
    /// scan, run-list pages against sled gets, restart-to-ready against a raw
    /// sled open, and the rebuild's peak RSS.
    Projections(projections::ProjectionsArgs),
    /// The HTTP API under 64 keep-alive clients running full cycles, against
    /// the same cycles through the Ledger API in-process.
    Http(http::HttpArgs),
    /// The log on PostgreSQL at 1, 16 and 64 clients, one node and two:
    /// durable appends against raw inserts of the same rows in the same
    /// group sizes, and full run cycles against a plain SQL cycle.
    Postgres(postgres::PostgresArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().bench {
        Bench::Append(args) => append::run(args),
        Bench::Cycles(args) => cycles::run(args),
        Bench::Projections(args) => projections::run(args),
        Bench::Http(args) => http::run(args),
        Bench::Postgres(args) => postgres::run(args),
    }
}
