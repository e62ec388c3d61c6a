//! `opledger head`: the head digest, to keep somewhere the log cannot reach
//! and pass back to `opledger verify --expect-head`. On a data directory,
//! or over `--url` from a running server (`GET /v1/head`).

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::source::{Hint, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Print JSON instead of `POSITION:HASH`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let head: Value = match args.source.target()? {
        Target::Local(data) => {
            let head = data.open_existing_log(Hint::Query)?.head();
            serde_json::json!({"position": head.position, "hash": head.hash, "digest": head.digest()})
        }
        Target::Remote(remote) => remote.get("/v1/head", &[])?,
    };
    let mut out = std::io::stdout().lock();
    match args.json {
        true => writeln!(out, "{head}")?,
        false => writeln!(out, "{}", super::source::field(&head, "digest"))?,
    }
    Ok(ExitCode::SUCCESS)
}
