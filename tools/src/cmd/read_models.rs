//! Where the local read commands (`runs list|show`, `audit`,
//! `notifications` on `--data DIR`) read from.
//!
//! A directory no server holds is opened whole: its log, and the read
//! models caught up with it. A directory a server holds is read through
//! the server's SQLite file alone, read-only (SQLite in WAL mode lets
//! other processes read while the server writes): the answer is as of the
//! last page the server applied, which the command says on stderr. The
//! log itself stays single-owner.

use std::sync::Arc;

use anyhow::Context;
use opledger::Log;
use opledger_projections::{store, Projector, Reader};

use super::source::{self, is_locked};
use super::DataDir;

/// The read models of a data directory, opened one of two ways.
pub enum ReadModels {
    /// No server holds the directory: the projections caught up with the log
    /// (boxed: a projector is several times the size of a reader).
    Projected { log: Arc<Log>, projector: Box<Projector> },
    /// A server holds the directory: its file, read as of `position`.
    Shared { reader: Reader, position: u64 },
}

impl ReadModels {
    /// Runs `read` on a connection to the read models (every query
    /// function of the projections takes it).
    pub fn read<T>(&self, read: impl FnOnce(&Reader) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            ReadModels::Projected { projector, .. } => read(&projector.reader()?),
            ReadModels::Shared { reader, .. } => read(reader),
        }
    }
}

impl DataDir {
    /// The read models of an existing data directory: projected here when
    /// no server holds it, else the server's file read-only.
    pub fn read_models(&self) -> anyhow::Result<ReadModels> {
        match self.open_log() {
            Ok(log) => {
                let spinner = source::catch_up_spinner(log.head().position);
                let projector =
                    Projector::open_in(&self.read_models_dir(), Arc::clone(&log), opledger_projections::all())
                        .context("opening the projections")?;
                spinner.finish_and_clear();
                Ok(ReadModels::Projected { log, projector: Box::new(projector) })
            }
            Err(error) if is_locked(&error) => self.shared_read_models(),
            Err(error) => Err(error),
        }
    }

    fn shared_read_models(&self) -> anyhow::Result<ReadModels> {
        let (reader, checkpoint) = store::open_read_only(&self.read_models_dir())
            .with_context(|| format!("a server holds {}; reading its read models", self.path.display()))?;
        eprintln!(
            "a server holds {}: read from its read models as of position {}",
            self.path.display(),
            checkpoint.position
        );
        Ok(ReadModels::Shared { reader, position: checkpoint.position })
    }
}
