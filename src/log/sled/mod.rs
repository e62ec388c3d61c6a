//! The embedded backend: the log in a sled store in one directory. The only
//! module of the workspace's libraries that imports sled (in [`store`]).
//!
//! One writer thread serializes appends and batches concurrent callers into
//! group commits; a syncer thread makes them durable and acknowledges them;
//! readers read the store directly.

pub(crate) mod store;
mod syncer;
mod witness;
mod writer;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::envelope::{Envelope, StreamId};
use crate::error::Error;
use crate::limits::{APPEND_QUEUE_DEPTH_MAX, GROUPS_IN_FLIGHT_MAX, OPEN_TAIL_CHECK_EVENTS};
use crate::log::backend::{Backend, Opened};
use crate::log::staging::Committed;
use crate::log::{Head, LogOptions, StatsCounters};
use store::{FileSync, Store};
use witness::Witness;
use writer::Writer;

/// Opens (or creates) the log in `dir`. Fails closed when the stored head,
/// the tail of the chain or the head witness do not agree.
pub(crate) fn open(dir: &Path, options: &LogOptions, stats: &Arc<StatsCounters>) -> Result<Opened, Error> {
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
    let failed = syncer::Failed::default();
    let syncer = syncer::Syncer {
        store: Arc::clone(&store),
        file_sync: FileSync::for_mode(&dir.join("store"), options.durability)?,
        witness,
        head_tx,
        stats: Arc::clone(stats),
        failed: failed.clone(),
    };
    let writer = Writer {
        store: Arc::clone(&store),
        head,
        last_recorded_at,
        clock: Arc::clone(&options.clock),
        applied: applied_tx,
        failed,
    };
    let syncer = std::thread::Builder::new()
        .name("opledger-syncer".into())
        .spawn(move || syncer.run(applied_rx))
        .map_err(|e| Error::io(dir, e))?;
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
        .map_err(|e| Error::io(dir, e))?;
    let backend = Arc::new(SledBackend { store, dir: dir.to_path_buf(), head: head_rx.clone() });
    Ok(Opened { backend, requests: requests_tx, head: head_rx, writer: handle })
}

/// Only one process opens a sled log, so what other processes must change
/// while it runs (the token file) lives in files beside it.
const NO_DOCUMENTS: &str = "a log kept in a directory keeps its documents in files beside it";

pub(crate) struct SledBackend {
    store: Arc<Store>,
    dir: std::path::PathBuf,
    head: watch::Receiver<Head>,
}

impl Backend for SledBackend {
    fn events(&self, from: u64, count: usize) -> Result<Vec<Envelope>, Error> {
        self.store.events_from(from).take(count).collect()
    }

    fn event(&self, position: u64) -> Result<Option<Envelope>, Error> {
        self.store.event(position)
    }

    fn stream_positions(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<(u64, u64)>, Error> {
        self.store.stream_positions(stream, from_version, limit)
    }

    fn stream_version_at_most(&self, stream: &StreamId, head: u64) -> Result<u64, Error> {
        self.store.stream_version_at_most(stream, head)
    }

    fn position_of_id(&self, id: &uuid::Uuid) -> Result<Option<u64>, Error> {
        self.store.position_of_id(id)
    }

    fn restart_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.store.snapshot()
    }

    fn store_restart_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error> {
        self.store.store_snapshot(position, bytes)
    }

    fn index_failure(&self, envelope: &Envelope) -> Result<Option<String>, Error> {
        Ok((!self.store.indexes_point_at(envelope)?)
            .then(|| "the stream or event-id index does not point at this event".to_owned()))
    }

    /// The index counts are compared with the stored head (which may be
    /// past the acknowledged one while appends go on), read before and
    /// after counting: one tree holds both, and every group commit changes
    /// them in one atomic batch, so an unchanged stored head means no commit
    /// landed while counting. If one did, the counts cannot be exact; each
    /// event's own entries were checked on the walk.
    fn index_count_failure(&self) -> Result<Option<String>, Error> {
        let stored_head = || self.store.head_record().ok().flatten().map(|head| head.position);
        let before = stored_head();
        let (by_stream, by_id) = self.store.index_entry_counts();
        let Some(stored) = before.filter(|position| stored_head() == Some(*position)) else { return Ok(None) };
        if by_stream as u64 != stored || by_id as u64 != stored {
            return Ok(Some(format!("indexes hold {by_stream} stream and {by_id} id entries for {stored} events")));
        }
        Ok(None)
    }

    fn latest_head(&self) -> Result<Head, Error> {
        Ok(*self.head.borrow())
    }

    fn document(&self, _name: &str) -> Result<Option<(Vec<u8>, u64)>, Error> {
        Err(Error::Storage(NO_DOCUMENTS.into()))
    }

    fn replace_document(&self, _name: &str, _bytes: &[u8], _expected: Option<u64>) -> Result<bool, Error> {
        Err(Error::Storage(NO_DOCUMENTS.into()))
    }

    fn directory(&self) -> Option<std::path::PathBuf> {
        Some(self.dir.clone())
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn shared(&self) -> bool {
        false
    }

    /// The syncer owned the head's sender and dropped it as it ended.
    fn close(&self) {}
}

impl Committed for Store {
    fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        Store::stream_version(self, stream)
    }

    fn position_of_id(&self, id: &uuid::Uuid) -> Result<Option<u64>, Error> {
        Store::position_of_id(self, id)
    }

    fn recorded_at(&self, position: u64) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.event(position)?.map(|event| event.recorded_at))
    }
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
    let tail = store.events_from(from).take((head.position - from + 1) as usize).collect::<Result<Vec<_>, _>>()?;
    crate::log::check_tail(from, &tail, head)?;
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
