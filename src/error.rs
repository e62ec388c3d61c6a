//! Operating failures of the core. Domain answers (a version conflict, a
//! duplicate) are values, not errors: see [`crate::log::Conflict`].

use std::path::PathBuf;

/// Why an operation on the log could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying store failed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The log's database (PostgreSQL) cannot be reached, or stopped
    /// answering: a connection that could not be made or broke, a server
    /// shutting down or starting up, out of connections (53300), or, for a
    /// read, out of another resource it needs (SQLSTATE class 53, the
    /// message says which). Nothing was appended, unless the message says
    /// the outcome is unknown; worth retrying.
    #[error("the log's database cannot be reached: {0}")]
    Unavailable(String),
    /// The log's database (PostgreSQL) is up but refuses writes: read-only
    /// (25006: a standby, or `default_transaction_read_only`), or out of a
    /// resource (SQLSTATE class 53, a full disk is 53100, but out of
    /// connections, 53300, which is [`Error::Unavailable`]). Nothing was
    /// appended; worth retrying once the cause is gone.
    #[error("the log's database refuses writes: {0}")]
    WritesRefused(String),
    /// The log's database (PostgreSQL) is up, but a lock the log needs (its
    /// head, most likely) stayed held by another session past the node's
    /// lock wait (`lock_timeout`, 55P03: see
    /// [`crate::log::postgres::LOCK_WAIT_MAX`]). Nothing was appended;
    /// worth retrying.
    #[error("the log's head stayed locked: {0}")]
    LockWaitPassed(String),
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

    /// The same failure again, for another caller who must be told (an
    /// error is not `Clone`: it may hold an `io::Error`). A storage,
    /// unavailability or refusal failure keeps its kind and message; any other kind
    /// becomes a storage failure that names it.
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::Storage(message) => Error::Storage(message.clone()),
            Error::Unavailable(message) => Error::Unavailable(message.clone()),
            Error::WritesRefused(message) => Error::WritesRefused(message.clone()),
            Error::LockWaitPassed(message) => Error::LockWaitPassed(message.clone()),
            other => Error::Storage(other.to_string()),
        }
    }
}
