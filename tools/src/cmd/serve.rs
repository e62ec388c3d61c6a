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
    #[arg(long, env = "OPLEDGER_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// What an acknowledgement guarantees: `fsync` (survives power loss) or
    /// `flush` (survives a process crash only).
    #[arg(long, env = "OPLEDGER_DURABILITY", default_value = "fsync", value_parser = ["fsync", "flush"])]
    durability: String,
    /// The log's page cache (sled), in MiB. The log alone lives in sled now
    /// (read models are in projections.db, with SQLite's own cache); reads
    /// of old events past the cache page them in from the file.
    #[arg(long, env = "OPLEDGER_CACHE_MIB", default_value_t = CACHE_MIB_DEFAULT, value_parser = clap::value_parser!(u64).range(8..=65536))]
    cache_mib: u64,
}

/// The default of `--cache-mib`: the log's own default page cache.
const CACHE_MIB_DEFAULT: u64 = 64;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let durability = if args.durability == "flush" { Durability::Flush } else { Durability::Fsync };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let cache_capacity_bytes = args.cache_mib * 1024 * 1024;
        let options = LogOptions { durability, cache_capacity_bytes, ..LogOptions::default() };
        let state = crate::server::open_state_with_log(&args.data.path, args.data.log.as_deref(), options)?;
        crate::server::serve(state, args.listen).await
    })?;
    Ok(ExitCode::SUCCESS)
}
