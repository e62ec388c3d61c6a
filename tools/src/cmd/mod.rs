//! One module per subcommand.

pub mod audit;
pub mod authority;
pub mod events;
pub mod explain;
pub mod export;
pub mod head;
pub mod import;
pub mod notifications;
pub mod rebuild;
pub mod remote;
pub mod runs;
pub mod runs_cancel;
pub mod serve;
pub mod source;
pub mod token;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use opledger::Log;
use opledger_projections::Projector;

/// The data directory every command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// The data directory (`serve` creates it if missing; the other commands need an existing one).
    #[arg(long = "data", env = "OPLEDGER_DATA", default_value = "./opledger-data")]
    pub path: PathBuf,
}

impl DataDir {
    /// Opens an existing data directory for a tool: its log, and every
    /// projection caught up with it. A directory a running server holds is
    /// refused with the message of [`source::in_use_message`].
    pub fn open_projected(&self, hint: source::Hint) -> anyhow::Result<(Arc<Log>, Projector)> {
        let log = self.open_existing_log(hint)?;
        let spinner = source::catch_up_spinner(log.head().position);
        let projector =
            Projector::open(Arc::clone(&log), opledger_projections::all()).context("opening the projections")?;
        spinner.finish_and_clear();
        Ok((log, projector))
    }
}
