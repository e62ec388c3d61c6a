//! The durable, hash-chained event log: one contract ([`Log`]), two
//! backends. [`sled`] keeps it in a local directory (the embedded default);
//! [`postgres`] keeps it in a PostgreSQL database that many nodes share.
//! Staging (replays, expectations, sealing onto the chain) is the same code
//! for both ([`staging`]); reads go through [`backend::Backend`] and are
//! bounded and chain-checked here, so both answer alike.

mod backend;
#[cfg(test)]
pub(crate) mod conformance;
mod held;
mod observations;
pub mod postgres;
mod sled;
mod staging;
mod stats;
mod subscription;
#[cfg(test)]
pub(crate) mod test_log;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::envelope::{Envelope, Hash, NewEvent, StreamId};
use crate::error::Error;
use crate::limits::{APPEND_EVENTS_MAX, GROUP_COMMIT_EVENTS_MAX, READ_PAGE_EVENTS_MAX};

pub(crate) use backend::Backend;
pub use held::HeldHead;
pub use observations::{HistogramSnapshot, LogObservations, COMMIT_EVENTS_BUCKETS, LATENCY_BUCKETS_SECONDS};
use staging::Request;
pub use stats::LogStats;
pub(crate) use stats::StatsCounters;
pub use subscription::Subscription;

/// What an acknowledgement guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After sled's flush, `fdatasync` the store's files: an acknowledged
    /// append survives a process crash and a power loss.
    #[default]
    Fsync,
    /// sled's flush only (`sync_file_range`): an acknowledged append survives
    /// a process crash (`kill -9`), not a power loss or kernel crash.
    Flush,
}

/// Where the log ends: the last position (0 for an empty log) and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub position: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head { position: 0, hash: Hash::GENESIS };

    /// `POSITION:HASH`, the exported head digest.
    pub fn digest(&self) -> String {
        format!("{}:{}", self.position, self.hash)
    }

    pub fn parse_digest(text: &str) -> Option<Head> {
        let (position, hash) = text.trim().split_once(':')?;
        Some(Head { position: position.parse().ok()?, hash: Hash::from_hex(hash)? })
    }
}

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    Any,
    NoStream,
    Exact(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamExpectation {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
}

/// Preconditions of one append, all checked against the log as it is when
/// the writer reaches the append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub streams: Vec<StreamExpectation>,
    /// The head position the append must follow directly, for a caller that
    /// sequences its own appends and predicts their positions.
    pub head: Option<u64>,
}

impl Expectations {
    pub fn none() -> Expectations {
        Expectations::default()
    }

    pub fn stream(stream: StreamId, expected: ExpectedVersion) -> Expectations {
        Expectations { streams: vec![StreamExpectation { stream, expected }], head: None }
    }
}

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_position: u64,
    pub last_position: u64,
    pub recorded_at: DateTime<Utc>,
    /// Every event id was in the log already: nothing was appended and the
    /// positions are the original ones.
    pub duplicate: bool,
}

/// An append refused because a precondition did not hold. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    StreamVersion { stream: StreamId, expected: ExpectedVersion, actual: u64 },
    Head { expected: u64, actual: u64 },
}

/// The recording clock. The log stamps `recorded_at`, never earlier than the
/// event before it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Clone)]
pub struct LogOptions {
    pub durability: Durability,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    pub clock: Clock,
    /// The log on PostgreSQL only: how long a writer keeps trying to reach
    /// the database after a commit whose answer was lost, to learn whether
    /// it committed (default [`postgres::COMMIT_RESOLVE_WAIT_MAX`]).
    pub commit_resolve_wait: std::time::Duration,
    /// The log on PostgreSQL only: how long a lane's session keeps the
    /// advisory lock it took for a next group that has not come (default
    /// [`postgres::HELD_LOCK_IDLE_WAIT_MAX`]).
    pub held_lock_idle_wait: std::time::Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fsync,
            cache_capacity_bytes: 64 * 1024 * 1024,
            clock: Arc::new(Utc::now),
            commit_resolve_wait: postgres::COMMIT_RESOLVE_WAIT_MAX,
            held_lock_idle_wait: postgres::HELD_LOCK_IDLE_WAIT_MAX,
        }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("durability", &self.durability)
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .field("commit_resolve_wait", &self.commit_resolve_wait)
            .field("held_lock_idle_wait", &self.held_lock_idle_wait)
            .finish_non_exhaustive()
    }
}

/// An append handed to the writer; await it for the answer.
#[derive(Debug)]
pub struct PendingAppend {
    reply: oneshot::Receiver<Result<Result<Appended, Conflict>, Error>>,
}

impl PendingAppend {
    pub async fn wait(self) -> Result<Result<Appended, Conflict>, Error> {
        self.reply.await.unwrap_or(Err(Error::Closed))
    }

    /// Blocks the calling thread; not for use inside an async task.
    pub fn wait_blocking(self) -> Result<Result<Appended, Conflict>, Error> {
        self.reply.blocking_recv().unwrap_or(Err(Error::Closed))
    }
}

/// The log. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Log {
    backend: Arc<dyn Backend>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    head: watch::Receiver<Head>,
    stats: Arc<StatsCounters>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("location", &self.backend.location())
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in the directory `dir` (the sled backend).
    /// Fails closed when the stored head, the tail of the chain or the head
    /// witness do not agree.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log, Error> {
        let stats = Arc::new(StatsCounters::default());
        let opened = sled::open(dir.as_ref(), &options, &stats)?;
        Ok(Log::from_opened(opened, stats))
    }

    /// Opens (or creates) the log in the PostgreSQL database `url` names
    /// (a `postgres://` URL or a `key=value` connection string). Fails
    /// closed like [`Log::open`] when the stored head and the tail of the
    /// chain do not agree.
    pub fn open_postgres(url: &str, options: LogOptions) -> Result<Log, Error> {
        let stats = Arc::new(StatsCounters::default());
        let opened = postgres::open(url, &options, &stats)?;
        Ok(Log::from_opened(opened, stats))
    }

    /// [`Log::open_postgres`] for a `postgres://` or `postgresql://` URL,
    /// [`Log::open`] for anything else (a directory).
    pub fn open_at(location: &LogLocation, options: LogOptions) -> Result<Log, Error> {
        match location {
            LogLocation::Directory(dir) => Log::open(dir, options),
            LogLocation::Postgres(url) => Log::open_postgres(url, options),
        }
    }

    fn from_opened(opened: backend::Opened, stats: Arc<StatsCounters>) -> Log {
        Log {
            backend: opened.backend,
            requests: Mutex::new(Some(opened.requests)),
            head: opened.head,
            stats,
            writer: Mutex::new(Some(opened.writer)),
        }
    }

    /// Where the log is: its directory, or its database (without password).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// A small named document every node of a shared log reads (the API
    /// tokens' hashes: data that must change, so never in the log), with
    /// its version. A log kept in a directory has none: its process owns
    /// the directory, and such documents are files beside it.
    pub fn document(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, Error> {
        self.backend.document(name)
    }

    /// Replaces the document `name` if its version is still `expected`
    /// (`None`: it does not exist yet). `Ok(false)`: another writer came
    /// first; read it again and retry.
    pub fn replace_document(&self, name: &str, bytes: &[u8], expected: Option<u64>) -> Result<bool, Error> {
        self.backend.replace_document(name, bytes, expected)
    }

    /// The directory the log is kept in (`None` for a log in a database).
    pub fn directory(&self) -> Option<std::path::PathBuf> {
        self.backend.directory()
    }

    /// Whether other processes may append to this log (a shared database).
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// Why the log's database cannot be reached, while it cannot: the
    /// node's follower finds out within
    /// [`HEAD_POLL_INTERVAL`](crate::log::postgres::HEAD_POLL_INTERVAL)
    /// (`None` for a local log).
    pub fn unreachable(&self) -> Option<String> {
        self.backend.unreachable()
    }

    /// Why the log's database refuses this node's writes now: it refused
    /// the node's latest group commit while up (read-only, a full disk)
    /// within [`WRITES_REFUSED_READY_WAIT`](crate::log::postgres::WRITES_REFUSED_READY_WAIT),
    /// and nothing committed since (`None` for a local log).
    pub fn writes_refused(&self) -> Option<String> {
        self.backend.writes_refused()
    }

    /// The newest head the store holds now. For a shared log this is one
    /// read of the database, and [`Log::head`] moves to it; for a local log
    /// it is [`Log::head`].
    pub fn latest_head(&self) -> Result<Head, Error> {
        self.backend.latest_head()
    }

    /// The last acknowledged position and its hash.
    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    /// A receiver that changes whenever a group commit is acknowledged.
    pub fn head_watch(&self) -> watch::Receiver<Head> {
        self.head.clone()
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, Error> {
        let guard = self.requests.lock().map_err(|_| Error::Closed)?;
        guard.clone().ok_or(Error::Closed)
    }

    fn request(
        events: Vec<NewEvent>,
        expectations: Expectations,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<(Request, PendingAppend), Error> {
        check_append(&events)?;
        let (reply, answer) = oneshot::channel();
        let submitted = std::time::Instant::now();
        Ok((Request { events, expectations, recorded_at, reply, submitted }, PendingAppend { reply: answer }))
    }

    /// Hands an append to the writer, waiting while the queue is full, and
    /// returns the handle to await its answer. Appends submitted in order
    /// are applied in that order.
    pub async fn submit(&self, events: Vec<NewEvent>, expectations: Expectations) -> Result<PendingAppend, Error> {
        self.submit_at(events, expectations, None).await
    }

    /// [`Log::submit`] with the recording time chosen by the caller (a
    /// sequencer that already applied the events at that time). The log
    /// still never records a time earlier than the event before.
    pub async fn submit_at(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<PendingAppend, Error> {
        let (request, pending) = Self::request(events, expectations, recorded_at)?;
        self.sender()?.send(request).await.map_err(|_| Error::Closed)?;
        Ok(pending)
    }

    /// Appends atomically: every event or none, acknowledged once durable.
    pub async fn append(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
    ) -> Result<Result<Appended, Conflict>, Error> {
        self.submit(events, expectations).await?.wait().await
    }

    /// [`Log::submit`] for threads outside an async runtime.
    pub fn submit_blocking(&self, events: Vec<NewEvent>, expectations: Expectations) -> Result<PendingAppend, Error> {
        let (request, pending) = Self::request(events, expectations, None)?;
        self.sender()?.blocking_send(request).map_err(|_| Error::Closed)?;
        Ok(pending)
    }

    /// An append of the ledger's own decided events, for the decider thread
    /// of a shared log: up to [`GROUP_COMMIT_EVENTS_MAX`] events (a round
    /// of many commands), waited for on the calling thread.
    pub(crate) fn append_internal_blocking(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<Result<Appended, Conflict>, Error> {
        let (request, pending) = internal_request(events, expectations, recorded_at)?;
        self.sender()?.blocking_send(request).map_err(|_| Error::Closed)?;
        pending.wait_blocking()
    }

    /// Locks the head for one decision (see [`HeldHead`]): on logs other
    /// nodes append to, waits for the database's head lock and answers the
    /// head it locked; `None` on a log only this process appends to, where
    /// nothing can move the head between a decision and its append.
    pub fn hold_head_blocking(&self) -> Result<Option<HeldHead>, Error> {
        let held = self.backend.hold_head()?;
        if held.is_some() {
            self.stats.record_head_held();
        }
        Ok(held)
    }

    /// [`Log::append`] for threads outside an async runtime.
    pub fn append_blocking(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
    ) -> Result<Result<Appended, Conflict>, Error> {
        self.submit_blocking(events, expectations)?.wait_blocking()
    }

    /// Up to `limit` acknowledged events from position `from` on, each
    /// checked against its hash and chained to the one before it.
    pub fn read(&self, from: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        let head = self.head().position;
        let from = from.max(1);
        if from > head {
            return Ok(Vec::new());
        }
        let count = usize::try_from(head - from + 1).unwrap_or(usize::MAX).min(limit.min(READ_PAGE_EVENTS_MAX));
        let events = self.backend.events(from, count)?;
        check_run(from, &events, count)?;
        Ok(events)
    }

    /// The event at `position`, if acknowledged.
    pub fn event(&self, position: u64) -> Result<Option<Envelope>, Error> {
        if position == 0 || position > self.head().position {
            return Ok(None);
        }
        match self.backend.event(position)? {
            Some(event) => Ok(Some(event)),
            None => Err(Error::corrupt(position, "event missing from the store")),
        }
    }

    /// Up to `limit` events of `stream` from `from_version` on.
    pub fn read_stream(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        let head = self.head().position;
        let mut out = Vec::new();
        for (version, position) in
            self.backend.stream_positions(stream, from_version.max(1), limit.min(READ_PAGE_EVENTS_MAX))?
        {
            if position > head {
                break;
            }
            let event = self.event(position)?.ok_or_else(|| Error::corrupt(position, "indexed event missing"))?;
            if &event.stream != stream || event.stream_version != version {
                return Err(Error::corrupt(position, format!("index says {stream} version {version}")));
            }
            out.push(event);
        }
        Ok(out)
    }

    /// The version of `stream` as acknowledged (0 when it has no event).
    pub fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        self.backend.stream_version_at_most(stream, self.head().position)
    }

    /// The position of the event with `id`, if it is in the log.
    pub fn position_of(&self, id: &Uuid) -> Result<Option<u64>, Error> {
        Ok(self.backend.position_of_id(id)?.filter(|p| *p <= self.head().position))
    }

    /// Every event from `from` on: catches up from the store, then follows
    /// new appends, without gaps or duplicates.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription::new(Arc::clone(&self.backend), self.head.clone(), from.max(1))
    }

    pub fn stats(&self) -> LogStats {
        self.stats.snapshot()
    }

    /// The write pipeline's latency and size histograms, read now.
    pub fn observations(&self) -> LogObservations {
        self.stats.observations()
    }

    /// Whether no append can succeed any more: the log was closed, or its
    /// writer ended. Only opening the log again helps then.
    pub fn is_closed(&self) -> bool {
        self.sender().map_or(true, |sender| sender.is_closed())
    }

    /// Stops taking appends, lets the writer finish what it has, and waits for it.
    pub fn close(&self) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the log writer thread panicked");
            }
        }
        self.backend.close();
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The ledger's restart snapshot, if one was stored: its position and
    /// bytes (see `domain/snapshot.rs`).
    pub fn restart_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.backend.restart_snapshot()
    }

    /// Stores the restart snapshot of an acknowledged `position`.
    pub fn store_restart_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error> {
        self.backend.store_restart_snapshot(position, bytes)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

fn check_append(events: &[NewEvent]) -> Result<(), Error> {
    check_events(events, APPEND_EVENTS_MAX)
}

/// An append of the ledger's own decided events (up to a group commit's
/// [`GROUP_COMMIT_EVENTS_MAX`]), and where its answer comes.
pub(crate) fn internal_request(
    events: Vec<NewEvent>,
    expectations: Expectations,
    recorded_at: Option<DateTime<Utc>>,
) -> Result<(Request, PendingAppend), Error> {
    check_events(&events, GROUP_COMMIT_EVENTS_MAX)?;
    let (reply, answer) = oneshot::channel();
    let submitted = std::time::Instant::now();
    Ok((Request { events, expectations, recorded_at, reply, submitted }, PendingAppend { reply: answer }))
}

fn check_events(events: &[NewEvent], most: usize) -> Result<(), Error> {
    if events.is_empty() || events.len() > most {
        return Err(Error::InvalidEvent(format!("an append holds 1 to {most} events, got {}", events.len())));
    }
    let mut ids: Vec<&Uuid> = events.iter().map(|e| &e.event_id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(Error::InvalidEvent(format!("event id {} appears twice in one append", pair[0])));
    }
    Ok(())
}

/// `events` must be the `count` events from position `from` on, each
/// chained to the one before it.
fn check_run(from: u64, events: &[Envelope], count: usize) -> Result<(), Error> {
    for (offset, event) in events.iter().enumerate() {
        let expected = from + offset as u64;
        if event.position != expected {
            return Err(Error::corrupt(expected, "event missing from the store"));
        }
        if offset > 0 && event.previous_hash != events[offset - 1].hash {
            return Err(Error::corrupt(event.position, "does not chain to the event before it"));
        }
    }
    if events.len() < count {
        return Err(Error::corrupt(from + events.len() as u64, "event missing from the store"));
    }
    Ok(())
}

/// The tail a backend read at open (`from` up to the stored head) must be
/// complete, chain, and end in the stored head's hash.
pub(crate) fn check_tail(from: u64, tail: &[Envelope], head: Head) -> Result<(), Error> {
    let count = usize::try_from(head.position + 1 - from).unwrap_or(usize::MAX);
    check_run(from, tail, count)?;
    if tail.last().map(|e| e.hash) != Some(head.hash) {
        return Err(Error::corrupt(head.position, "the stored head hash does not match the last event"));
    }
    Ok(())
}

/// Where a log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// A local directory (sled).
    Directory(std::path::PathBuf),
    /// A PostgreSQL database: the connection string.
    Postgres(String),
}

impl LogLocation {
    /// A `postgres://`/`postgresql://` URL names a database; anything else
    /// is a directory.
    pub fn parse(text: &str) -> LogLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            LogLocation::Postgres(text.to_owned())
        } else {
            LogLocation::Directory(text.into())
        }
    }
}

#[cfg(test)]
mod tests;
