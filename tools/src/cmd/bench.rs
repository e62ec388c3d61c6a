//! `opledger bench`: measured figures, each beside a baseline from the same run.

mod append;
mod stats;

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Append throughput and latency of the log, per durability mode and number
    /// of concurrent appenders, against raw sled writing the same batches.
    Append(append::AppendArgs),
}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    match bench {
        Bench::Append(args) => append::run(args),
    }
}
