//! `opledger serve`: the HTTP server on an embedded data directory.

use std::net::SocketAddr;
use std::process::ExitCode;

use opledger::{Durability, LogOptions};

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// What an acknowledgement guarantees: `fsync` (survives power loss) or
    /// `flush` (survives a process crash only).
    #[arg(long, default_value = "fsync", value_parser = ["fsync", "flush"])]
    durability: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let durability = if args.durability == "flush" { Durability::Flush } else { Durability::Fsync };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let state = crate::server::open_state(&args.data.path, LogOptions { durability, ..LogOptions::default() })?;
        crate::server::serve(state, args.listen).await
    })?;
    Ok(ExitCode::SUCCESS)
}
