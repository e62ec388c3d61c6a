//! The log contract below [`crate::log::Log`]: what a storage backend must
//! provide. Writes go through a writer of the backend's own (fed with
//! [`crate::log::staging::Request`]s, staging each with the shared
//! [`crate::log::staging::Group`]); everything else is this trait.
//!
//! Reads here are raw: the [`Log`](crate::log::Log) above bounds them by the
//! acknowledged head and checks the chain, so both backends serve exactly
//! the same answers. The conformance suite (`log/conformance.rs`) runs the
//! same tests against both.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

use crate::envelope::{Envelope, StreamId};
use crate::error::Error;
use crate::log::staging::Request;
use crate::log::Head;

/// A log a backend opened: its reads, its writer's queue and thread, and
/// the head the writer publishes once an append is durable.
pub(crate) struct Opened {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) head: watch::Receiver<Head>,
    pub(crate) writer: JoinHandle<()>,
}

pub(crate) trait Backend: Send + Sync {
    /// The stored events at positions `from..from + count`, in order; fewer
    /// when the store ends (or misses one: the caller checks positions).
    fn events(&self, from: u64, count: usize) -> Result<Vec<Envelope>, Error>;

    fn event(&self, position: u64) -> Result<Option<Envelope>, Error>;

    /// (version, position) of the events of `stream` from `from_version` on.
    fn stream_positions(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<(u64, u64)>, Error>;

    /// The version of the last event of `stream` at or below `head`.
    fn stream_version_at_most(&self, stream: &StreamId, head: u64) -> Result<u64, Error>;

    fn position_of_id(&self, id: &uuid::Uuid) -> Result<Option<u64>, Error>;

    /// The ledger's restart snapshot: its position and bytes.
    fn restart_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error>;

    /// Replaces the restart snapshot unless a newer one is stored.
    fn store_restart_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error>;

    /// Why the store's lookups by stream version and by event id would not
    /// find `envelope`, if they would not (a `verify` check).
    fn index_failure(&self, envelope: &Envelope) -> Result<Option<String>, Error>;

    /// Why the store's lookup structures do not hold exactly one entry of
    /// each kind per event, if they do not (checked once, at the end of a
    /// `verify` walk).
    fn index_count_failure(&self) -> Result<Option<String>, Error>;

    /// The newest head the store holds now: for a backend that other nodes
    /// append to, one read of the database (and the log's head watch moves
    /// to it). A node decides on a state at least this fresh.
    fn latest_head(&self) -> Result<Head, Error>;

    /// A small named document every node of a shared log reads, with its
    /// version (see [`crate::log::Log::document`]).
    fn document(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, Error>;

    /// Replaces a document if its version is still `expected` (`None`: it
    /// does not exist yet); `false` when another writer came first.
    fn replace_document(&self, name: &str, bytes: &[u8], expected: Option<u64>) -> Result<bool, Error>;

    /// The log's directory, for a log kept in one.
    fn directory(&self) -> Option<std::path::PathBuf>;

    /// Where the log is, for messages: a directory, or a database without
    /// its password.
    fn location(&self) -> String;

    /// Whether other processes may append to the same log (a shared
    /// database): the ledger then checks freshness before deciding.
    fn shared(&self) -> bool;

    /// Why the log's database cannot be reached now, as its last attempt
    /// found (`None` while it answers, and always for a local log).
    fn unreachable(&self) -> Option<String> {
        None
    }

    /// Why the log's database refuses this node's writes now: its latest
    /// group commit was refused while the database is up (read-only, a
    /// full disk), lately
    /// (`None` otherwise, and always for a local log, whose writer stops
    /// instead).
    fn writes_refused(&self) -> Option<String> {
        None
    }

    /// Locks the head for one decision ([`crate::log::HeldHead`]); `None`
    /// where the log is not shared.
    fn hold_head(&self) -> Result<Option<crate::log::HeldHead>, Error> {
        Ok(None)
    }

    /// Called once the writer has ended: stops following the head, so that
    /// subscriptions end like the log.
    fn close(&self);
}
