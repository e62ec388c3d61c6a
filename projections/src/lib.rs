//! Projections of the opledger log: Monitoring (run list and detail), the
//! audit trail and initiator notifications. Every projection is a fold of
//! the log kept in its own view with a checkpoint, and disposable: delete
//! and rebuild gives identical state.

pub mod access;
pub mod audit;
pub mod authority;
pub mod error;
pub mod explain;
pub mod monitoring;
pub mod notifications;
pub mod projector;
#[cfg(test)]
pub(crate) mod test_world;

pub use error::ProjectionError;
pub use projector::{Projection, Projector};

/// Every projection the ledger maintains, in the order they are applied.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(monitoring::Monitoring),
        std::sync::Arc::new(audit::Audit),
        std::sync::Arc::new(notifications::Notifications),
    ]
}
