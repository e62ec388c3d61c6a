//! `opledger bench`: measured figures, each beside a baseline from the same run.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    match bench {}
}
