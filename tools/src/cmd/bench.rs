//! `opledger bench`: measured figures, each beside a baseline from the same run.

mod append;
mod cycles;
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
}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    match bench {
        Bench::Append(args) => append::run(args),
        Bench::Cycles(args) => cycles::run(args),
    }
}
