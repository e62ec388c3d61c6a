//! Projections of the opledger log: Monitoring (run list and detail), the
//! audit trail and initiator notifications. Every projection is a fold of
//! the log kept in its own view with a checkpoint, and disposable: delete
//! and rebuild gives identical state.

pub mod access;
pub mod error;
pub mod explain;
pub mod projector;

pub use error::ProjectionError;
pub use projector::{Projection, Projector};
