//! One module per subcommand.

pub mod bench;
pub mod explain;
pub mod head;
pub mod serve;
pub mod token;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context;
use opledger::{Log, LogOptions};

/// The data directory every command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// The data directory (created if missing).
    #[arg(long = "data", default_value = "./opledger-data")]
    pub path: PathBuf,
}

impl DataDir {
    /// Opens the log of this data directory.
    pub fn open_log(&self) -> anyhow::Result<Log> {
        Log::open(self.path.join("log"), LogOptions::default())
            .with_context(|| format!("opening the log in {}", self.path.display()))
    }
}
