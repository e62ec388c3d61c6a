//! Operating failures of the projections.

/// Why a projection could not be read or maintained.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Log(#[from] opledger::Error),
    /// A projection met an event it cannot apply; nothing after it is applied.
    #[error("projections stopped at position {position}: {detail}")]
    Stopped { position: u64, detail: String },
    /// A stored projection row does not decode.
    #[error("projection record {key} does not decode: {detail}")]
    Corrupt { key: String, detail: String },
    /// SQLite refused a statement or a file.
    #[error("read models: {0}")]
    Sqlite(String),
    /// A file operation on the read models failed.
    #[error("read models: {0}")]
    Io(String),
    /// There is no read-model file, or one this build cannot read.
    #[error("read models: {0}")]
    Unavailable(String),
    #[error("a projection lock was poisoned by a panic")]
    Poisoned,
}
