//! `opledger bench`: measured figures, each beside a baseline from the same run.

mod append;
mod cycles;
mod http;
mod projections;
mod stats;

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
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
}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    match bench {
        Bench::Append(args) => append::run(args),
        Bench::Cycles(args) => cycles::run(args),
        Bench::Projections(args) => projections::run(args),
        Bench::Http(args) => http::run(args),
    }
}
