//! The `opledger` binary: the command line and (later) the server.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "opledger", version, about = "An event-sourced, hash-chained ledger for queued operation runs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk the whole log: positions, stream versions, hashes and chain, indexes.
    Verify(cmd::verify::Args),
    /// Print the head digest (position and hash) of the log.
    Head(cmd::head::Args),
    /// Explain every decision of a run, down to the authority events behind its facts.
    Explain(cmd::explain::Args),
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify(args) => cmd::verify::run(args),
        Command::Head(args) => cmd::head::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Bench(bench) => cmd::bench::run(bench),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
