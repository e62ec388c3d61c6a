//! opledger — an event-sourced, hash-chained ledger for queued operation runs.
//!
//! The core crate owns the durable log ([`log`]), the event envelope and its
//! canonical encoding ([`envelope`]), integrity checks ([`verify`]) and the
//! named limits every layer respects ([`limits`]).

pub mod domain;
pub mod envelope;
pub mod error;
pub mod limits;
pub mod log;
pub mod verify;

pub use envelope::{Envelope, Hash, NewEvent, StreamId};
pub use error::Error;
pub use log::{
    Appended, Conflict, Durability, Expectations, ExpectedVersion, Head, Log, LogLocation, LogOptions, LogStats,
    PendingAppend, StreamExpectation, Subscription,
};

/// Throwaway PostgreSQL clusters for the tests of the PostgreSQL backend.
#[cfg(test)]
#[path = "../tests/support/postgres_cluster.rs"]
pub(crate) mod postgres_cluster;

/// A throwaway CA for the tests of TLS to PostgreSQL.
#[cfg(test)]
#[path = "../tests/support/tls_certificates.rs"]
pub(crate) mod tls_certificates;

/// A small tmpfs, for the tests of a full disk under the log's database.
#[cfg(test)]
#[path = "../tests/support/tmpfs.rs"]
pub(crate) mod tmpfs;

/// A throwaway PgBouncer in front of a test cluster.
#[cfg(test)]
#[path = "../tests/support/pgbouncer.rs"]
pub(crate) mod pgbouncer;

/// A TCP proxy that cuts a PostgreSQL connection at a chosen `COMMIT`.
#[cfg(test)]
#[path = "../tests/support/tcp_proxy.rs"]
pub(crate) mod tcp_proxy;
