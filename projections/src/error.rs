//! Operating failures of the projections.

/// Why a projection could not be read or maintained.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Log(#[from] opledger::Error),
    /// A projection met an event it cannot apply; nothing after it is applied.
    #[error("projections stopped at position {position}: {detail}")]
    Stopped { position: u64, detail: String },
    #[error("no projection is named {0}")]
    UnknownProjection(String),
    /// A stored projection record does not decode.
    #[error("projection record {key} does not decode: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("a projection lock was poisoned by a panic")]
    Poisoned,
}
