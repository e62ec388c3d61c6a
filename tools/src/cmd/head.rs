//! `opledger head`: the head digest, to keep somewhere the log cannot reach
//! and pass back to `opledger verify --expect-head`.

use std::io::Write;
use std::process::ExitCode;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Print JSON instead of `POSITION:HASH`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let log = args.data.open_existing_log(super::source::Hint::Query)?;
    let head = log.head();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"position": head.position, "hash": head.hash, "digest": head.digest()})
        )?;
    } else {
        writeln!(out, "{}", head.digest())?;
    }
    Ok(ExitCode::SUCCESS)
}
