//! Projections of the opledger log: Monitoring (run list and detail), the
//! audit trail and initiator notifications. Every projection is a fold of
//! the log into tables of one SQLite file beside the log
//! (`projections.db`, see `store.rs`) with one checkpoint, and disposable:
//! delete and rebuild gives identical tables. Only this crate imports
//! rusqlite.

pub mod access;
pub mod audit;
pub mod authority;
pub mod error;
pub mod explain;
pub mod following;
pub mod monitoring;
pub mod notifications;
#[cfg(test)]
#[path = "../../tests/support/postgres_cluster.rs"]
pub(crate) mod postgres_cluster;
pub mod projector;
#[cfg(test)]
mod schema_doc_tests;
pub mod sql_time;
pub mod store;
#[cfg(test)]
pub(crate) mod test_world;

pub use error::ProjectionError;
pub use projector::{Projection, ProjectionBatch, Projector};
pub use store::Reader;

/// Every projection the ledger maintains, in the order they are applied.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(monitoring::Monitoring),
        std::sync::Arc::new(audit::Audit),
        std::sync::Arc::new(notifications::Notifications),
    ]
}
