//! The durable, hash-chained event log on sled.
//!
//! One writer thread serializes appends and batches concurrent callers into
//! group commits; readers read the store directly. Only this module (and in
//! it only [`store`]) touches sled.

mod observations;
mod store;
mod subscription;
mod syncer;
mod witness;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::envelope::{Envelope, Hash, NewEvent, StreamId};
use crate::error::Error;
use crate::limits::{
    APPEND_EVENTS_MAX, APPEND_QUEUE_DEPTH_MAX, GROUPS_IN_FLIGHT_MAX, OPEN_TAIL_CHECK_EVENTS, READ_PAGE_EVENTS_MAX,
};

use observations::AtomicHistogram;
pub use observations::{HistogramSnapshot, LogObservations, COMMIT_EVENTS_BUCKETS, LATENCY_BUCKETS_SECONDS};
use store::FileSync;
pub(crate) use store::Store;
pub use subscription::Subscription;
use witness::Witness;
use writer::{Request, Writer};

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
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { durability: Durability::Fsync, cache_capacity_bytes: 64 * 1024 * 1024, clock: Arc::new(Utc::now) }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("durability", &self.durability)
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .finish_non_exhaustive()
    }
}

/// Counters and histograms of the writer, for metrics.
#[derive(Debug)]
pub(crate) struct StatsCounters {
    commits: AtomicU64,
    events: AtomicU64,
    appends: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    largest_commit_events: AtomicU64,
    append_latency: AtomicHistogram,
    sync_latency: AtomicHistogram,
    commit_events: AtomicHistogram,
}

impl Default for StatsCounters {
    fn default() -> StatsCounters {
        StatsCounters {
            commits: AtomicU64::default(),
            events: AtomicU64::default(),
            appends: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            conflicts: AtomicU64::default(),
            largest_commit_events: AtomicU64::default(),
            append_latency: AtomicHistogram::latency(),
            sync_latency: AtomicHistogram::latency(),
            commit_events: AtomicHistogram::commit_events(),
        }
    }
}

impl StatsCounters {
    fn record_sync(&self, elapsed: std::time::Duration) {
        self.sync_latency.observe_duration(elapsed);
    }

    fn record_answer(&self, submitted: std::time::Instant) {
        self.append_latency.observe_duration(submitted.elapsed());
    }

    fn record_commit(&self, events: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.largest_commit_events.fetch_max(events, Ordering::Relaxed);
        self.commit_events.observe_count(events);
    }

    fn record_outcome(&self, outcome: &Result<Result<Appended, Conflict>, Error>) {
        let counter = match outcome {
            Ok(Ok(appended)) if appended.duplicate => &self.duplicates,
            Ok(Ok(_)) => &self.appends,
            Ok(Err(_)) => &self.conflicts,
            Err(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogStats {
    pub commits: u64,
    pub events_appended: u64,
    pub appends_acknowledged: u64,
    pub appends_duplicate: u64,
    pub appends_conflicted: u64,
    pub largest_commit_events: u64,
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
    store: Arc<Store>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    head: watch::Receiver<Head>,
    stats: Arc<StatsCounters>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.dir).field("head", &self.head()).finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`. Fails closed when the stored
    /// head, the tail of the chain or the head witness do not agree.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log, Error> {
        let dir = dir.as_ref().to_path_buf();
        let store = Arc::new(Store::open(&dir.join("store"), options.cache_capacity_bytes)?);
        let head = check_head(&store)?;
        let (witness, witnessed) = Witness::open(&dir.join("head.witness"))?;
        check_witness(&store, head, witnessed)?;
        let last_recorded_at = match store.event(head.position)? {
            Some(event) => event.recorded_at,
            None => DateTime::<Utc>::MIN_UTC,
        };
        let (head_tx, head_rx) = watch::channel(head);
        let (requests_tx, requests_rx) = mpsc::channel(APPEND_QUEUE_DEPTH_MAX);
        let (applied_tx, applied_rx) = std::sync::mpsc::sync_channel(GROUPS_IN_FLIGHT_MAX);
        let stats = Arc::new(StatsCounters::default());
        let failed = syncer::Failed::default();
        let syncer = syncer::Syncer {
            store: Arc::clone(&store),
            file_sync: FileSync::for_mode(&dir.join("store"), options.durability)?,
            witness,
            head_tx,
            stats: Arc::clone(&stats),
            failed: failed.clone(),
        };
        let writer = Writer {
            store: Arc::clone(&store),
            head,
            last_recorded_at,
            clock: options.clock,
            applied: applied_tx,
            failed,
        };
        let syncer = std::thread::Builder::new()
            .name("opledger-syncer".into())
            .spawn(move || syncer.run(applied_rx))
            .map_err(|e| Error::io(&dir, e))?;
        // Joining the writer joins the syncer too: the writer's end drops the
        // channel, the syncer drains it, acknowledges and ends.
        let handle = std::thread::Builder::new()
            .name("opledger-writer".into())
            .spawn(move || {
                writer.run(requests_rx);
                if syncer.join().is_err() {
                    tracing::error!("the log syncer thread panicked");
                }
            })
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Log {
            store,
            requests: Mutex::new(Some(requests_tx)),
            head: head_rx,
            stats,
            writer: Mutex::new(Some(handle)),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let mut out: Vec<Envelope> = Vec::with_capacity(count);
        for event in self.store.events_from(from).take(count) {
            let event = event?;
            let expected = from + out.len() as u64;
            if event.position != expected {
                return Err(Error::corrupt(expected, "event missing from the store"));
            }
            if let Some(previous) = out.last() {
                if event.previous_hash != previous.hash {
                    return Err(Error::corrupt(event.position, "does not chain to the event before it"));
                }
            }
            out.push(event);
        }
        if out.len() < count {
            return Err(Error::corrupt(from + out.len() as u64, "event missing from the store"));
        }
        Ok(out)
    }

    /// The event at `position`, if acknowledged.
    pub fn event(&self, position: u64) -> Result<Option<Envelope>, Error> {
        if position == 0 || position > self.head().position {
            return Ok(None);
        }
        match self.store.event(position)? {
            Some(event) => Ok(Some(event)),
            None => Err(Error::corrupt(position, "event missing from the store")),
        }
    }

    /// Up to `limit` events of `stream` from `from_version` on.
    pub fn read_stream(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        let head = self.head().position;
        let mut out = Vec::new();
        for (version, position) in
            self.store.stream_positions(stream, from_version.max(1), limit.min(READ_PAGE_EVENTS_MAX))?
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
        self.store.stream_version_at_most(stream, self.head().position)
    }

    /// The position of the event with `id`, if it is in the log.
    pub fn position_of(&self, id: &Uuid) -> Result<Option<u64>, Error> {
        Ok(self.store.position_of_id(id)?.filter(|p| *p <= self.head().position))
    }

    /// Every event from `from` on: catches up from the store, then follows
    /// new appends, without gaps or duplicates.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription::new(Arc::clone(&self.store), self.head.clone(), from.max(1))
    }

    pub fn stats(&self) -> LogStats {
        let s = &self.stats;
        LogStats {
            commits: s.commits.load(Ordering::Relaxed),
            events_appended: s.events.load(Ordering::Relaxed),
            appends_acknowledged: s.appends.load(Ordering::Relaxed),
            appends_duplicate: s.duplicates.load(Ordering::Relaxed),
            appends_conflicted: s.conflicts.load(Ordering::Relaxed),
            largest_commit_events: s.largest_commit_events.load(Ordering::Relaxed),
        }
    }

    /// The write pipeline's latency and size histograms, read now.
    pub fn observations(&self) -> LogObservations {
        let s = &self.stats;
        LogObservations {
            append_latency: s.append_latency.snapshot(),
            sync_latency: s.sync_latency.snapshot(),
            commit_events: s.commit_events.snapshot(),
        }
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
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The ledger's restart snapshot, if one was stored: its position and
    /// bytes (see `domain/snapshot.rs`).
    pub fn restart_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.store.snapshot()
    }

    /// Stores the restart snapshot of an acknowledged `position`.
    pub fn store_restart_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error> {
        self.store.store_snapshot(position, bytes)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

fn check_append(events: &[NewEvent]) -> Result<(), Error> {
    if events.is_empty() || events.len() > APPEND_EVENTS_MAX {
        return Err(Error::InvalidEvent(format!(
            "an append holds 1 to {APPEND_EVENTS_MAX} events, got {}",
            events.len()
        )));
    }
    let mut ids: Vec<&Uuid> = events.iter().map(|e| &e.event_id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(Error::InvalidEvent(format!("event id {} appears twice in one append", pair[0])));
    }
    Ok(())
}

/// The stored head must name the last event, and the last
/// [`OPEN_TAIL_CHECK_EVENTS`] events must decode and chain.
fn check_head(store: &Store) -> Result<Head, Error> {
    let recorded = store.head_record()?;
    let last = store.last_position()?;
    let head = match (recorded, last) {
        (None, None) => return Ok(Head::EMPTY),
        (Some(head), Some(last)) if head.position == last => head,
        (recorded, last) => {
            return Err(Error::corrupt(
                last.unwrap_or(0),
                format!(
                    "the stored head ({}) does not name the last stored event ({})",
                    recorded.map_or("none".into(), |h| h.position.to_string()),
                    last.map_or("none".into(), |p| p.to_string())
                ),
            ))
        }
    };
    let from = head.position.saturating_sub(OPEN_TAIL_CHECK_EVENTS).max(1);
    let mut previous: Option<Envelope> = None;
    for position in from..=head.position {
        let event = store.event(position)?.ok_or_else(|| Error::corrupt(position, "event missing from the store"))?;
        if let Some(previous) = &previous {
            if event.previous_hash != previous.hash {
                return Err(Error::corrupt(position, "does not chain to the event before it"));
            }
        }
        previous = Some(event);
    }
    if previous.map(|e| e.hash) != Some(head.hash) {
        return Err(Error::corrupt(head.position, "the stored head hash does not match the last event"));
    }
    Ok(head)
}

fn check_witness(store: &Store, head: Head, witnessed: Option<Head>) -> Result<(), Error> {
    let Some(witnessed) = witnessed else { return Ok(()) };
    if witnessed.position > head.position {
        return Err(Error::corrupt(
            head.position + 1,
            format!(
                "the store ends at position {} but position {} was acknowledged: acknowledged events are missing",
                head.position, witnessed.position
            ),
        ));
    }
    if witnessed.position == 0 {
        return Ok(());
    }
    let event = store.event(witnessed.position)?;
    if event.map(|e| e.hash) != Some(witnessed.hash) {
        return Err(Error::corrupt(witnessed.position, "the event differs from the one acknowledged (head witness)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
