//! Operating failures of the core. Domain answers (a version conflict, a
//! duplicate) are values, not errors: see [`crate::log::Conflict`].

use std::path::PathBuf;

/// Why an operation on the log could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying store failed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A file operation failed.
    #[error("i/o failure on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is locked by another process (is a server running on it?)")]
    Locked { path: PathBuf },
    /// The stored log does not verify. Nothing from it is served.
    #[error("log corrupt at position {position}: {detail}")]
    Corrupt { position: u64, detail: String },
    /// The caller's event was refused before anything was appended.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Some, but not all, event ids of an append are already in the log.
    #[error("append reuses event id {event_id} already at position {position} but is not the same append")]
    EventIdReused { event_id: uuid::Uuid, position: u64 },
    /// An earlier group commit failed; the writer stopped to keep memory and
    /// disk from disagreeing. Reopen the log.
    #[error("log writer stopped after an earlier failure: {0}")]
    WriterStopped(String),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(position: u64, detail: impl Into<String>) -> Self {
        Error::Corrupt { position, detail: detail.into() }
    }
}
