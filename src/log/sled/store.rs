//! The sled store under the log. The only file of the workspace's libraries
//! that imports sled.
//!
//! Everything lives in one sled tree so that one `apply_batch` makes a whole
//! group commit atomic, indexes included. Keys:
//! - `e` + position (u64 BE) → the event record ([`Envelope::encode`])
//! - `s` + stream id + `0x00` + stream version (u64 BE) → position
//! - `i` + event id (16 bytes) → position
//! - `h` → head position (u64 BE) + head hash (32 bytes)
//!
//! and, in a tree of its own, the ledger's restart snapshot (a position
//! and the ids of the runs tracked there, see `domain/snapshot.rs`): never
//! a fact, only a hint of where to start folding.
//!
//! Stream ids are printable ASCII, so `0x00` cannot occur inside one and the
//! prefix scan of a stream never runs into a longer stream id.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::envelope::{Envelope, Hash, StreamId};
use crate::error::Error;
use crate::limits::STORE_LOCK_RELEASE_WAIT;
use crate::log::{Durability, Head};

const EVENT: u8 = b'e';
const STREAM: u8 = b's';
const EVENT_ID: u8 = b'i';
const HEAD: &[u8] = b"h";
const SNAPSHOT_TREE: &str = "ledger.snapshot";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// Trees earlier versions kept projections in (now in SQLite beside the
/// log): dropped on open to give their space back.
const LEGACY_VIEW_TREE_PREFIXES: [&str; 2] = ["view.", "views.meta"];

fn event_key(position: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.as_str().len() + 10);
    key.push(STREAM);
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key
}

fn stream_key(stream: &StreamId, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn id_key(id: &uuid::Uuid) -> [u8; 17] {
    let mut key = [EVENT_ID; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn storage(error: sled::Error) -> Error {
    Error::Storage(error.to_string())
}

/// The writes of one group commit, applied as one sled batch.
#[derive(Default)]
pub(crate) struct StagedBatch {
    batch: sled::Batch,
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl StagedBatch {
    pub(crate) fn put_event(&mut self, envelope: &Envelope, record: Vec<u8>) {
        let position = envelope.position.to_be_bytes();
        self.bytes += record.len();
        self.events += 1;
        self.batch.insert(&event_key(envelope.position), record);
        self.batch.insert(stream_key(&envelope.stream, envelope.stream_version), &position);
        self.batch.insert(&id_key(&envelope.id), &position);
    }

    fn set_head(&mut self, head: Head) {
        let mut value = head.position.to_be_bytes().to_vec();
        value.extend_from_slice(&head.hash.0);
        self.batch.insert(HEAD, value);
    }
}

pub(crate) struct Store {
    // Declared before the lock: fields drop in order, so sled closes its
    // files before another opener can take the directory.
    db: sled::Db,
    _lock: File,
    dir: PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut opened) = OPENED.lock() {
            opened.insert(self.dir.clone(), false);
        }
    }
}

impl Store {
    pub(crate) fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Store, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Our lock first: only the one owner of the directory may remove
        // sled's leftovers, and a sled lock still seen after it is ours is
        // one a dropped store of this process has not released yet.
        let lock = lock_directory(dir)?;
        remove_unfinished_snapshots(dir)?;
        let db = open_sled(dir, cache_capacity_bytes)?;
        drop_legacy_view_trees(&db)?;
        Ok(Store { db, _lock: lock, dir: dir.to_path_buf() })
    }

    /// The stored restart snapshot: its position and bytes.
    pub(crate) fn snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let tree = self.db.open_tree(SNAPSHOT_TREE).map_err(storage)?;
        let Some(value) = tree.get(SNAPSHOT_KEY).map_err(storage)? else { return Ok(None) };
        let position = value.get(..8).and_then(be_u64);
        Ok(position.map(|position| (position, value[8..].to_vec())))
    }

    /// Replaces the restart snapshot (not flushed: a lost snapshot only
    /// means a longer fold at the next start).
    pub(crate) fn store_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error> {
        let tree = self.db.open_tree(SNAPSHOT_TREE).map_err(storage)?;
        let mut value = position.to_be_bytes().to_vec();
        value.extend_from_slice(bytes);
        tree.insert(SNAPSHOT_KEY, value).map(|_| ()).map_err(storage)
    }

    pub(crate) fn record(&self, position: u64) -> Result<Option<sled::IVec>, Error> {
        self.db.get(event_key(position)).map_err(storage)
    }

    pub(crate) fn event(&self, position: u64) -> Result<Option<Envelope>, Error> {
        self.record(position)?.map(|record| Envelope::decode(position, &record)).transpose()
    }

    /// Decoded events from `from` on, in position order, with the position
    /// each was stored under.
    pub(crate) fn events_from(&self, from: u64) -> impl Iterator<Item = Result<Envelope, Error>> + '_ {
        self.db.range(event_key(from)..event_key(u64::MAX)).map(|item| {
            let (key, record) = item.map_err(storage)?;
            let position = be_u64(&key[1..]).ok_or_else(|| Error::corrupt(0, "malformed event key"))?;
            Envelope::decode(position, &record)
        })
    }

    pub(crate) fn last_position(&self) -> Result<Option<u64>, Error> {
        let last = self.db.scan_prefix([EVENT]).keys().next_back().transpose().map_err(storage)?;
        Ok(last.and_then(|key| be_u64(&key[1..])))
    }

    pub(crate) fn head_record(&self) -> Result<Option<Head>, Error> {
        let Some(value) = self.db.get(HEAD).map_err(storage)? else { return Ok(None) };
        let corrupt = || Error::corrupt(0, "the stored head record is malformed");
        let position = value.get(..8).and_then(be_u64).ok_or_else(corrupt)?;
        let hash: [u8; 32] = value.get(8..).and_then(|h| h.try_into().ok()).ok_or_else(corrupt)?;
        Ok(Some(Head { position, hash: Hash(hash) }))
    }

    /// The version of the last event of `stream`; 0 when it has none.
    pub(crate) fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        let prefix = stream_prefix(stream);
        let last = self.db.scan_prefix(&prefix).keys().next_back().transpose().map_err(storage)?;
        Ok(last.and_then(|key| be_u64(&key[prefix.len()..])).unwrap_or(0))
    }

    /// The version of the last event of `stream` at or below `head` (the
    /// writer applies groups before they are acknowledged).
    pub(crate) fn stream_version_at_most(&self, stream: &StreamId, head: u64) -> Result<u64, Error> {
        let prefix = stream_prefix(stream);
        for item in self.db.scan_prefix(&prefix).rev() {
            let (key, value) = item.map_err(storage)?;
            if be_u64(&value).is_some_and(|position| position <= head) {
                return Ok(be_u64(&key[prefix.len()..]).unwrap_or(0));
            }
        }
        Ok(0)
    }

    /// (version, position) of the events of `stream` from `from_version` on.
    pub(crate) fn stream_positions(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let prefix = stream_prefix(stream);
        let start = stream_key(stream, from_version);
        let end = stream_key(stream, u64::MAX);
        let mut out = Vec::new();
        for item in self.db.range(start..=end).take(limit) {
            let (key, value) = item.map_err(storage)?;
            let version = be_u64(&key[prefix.len()..]);
            let position = be_u64(&value);
            match (version, position) {
                (Some(version), Some(position)) => out.push((version, position)),
                _ => return Err(Error::corrupt(0, format!("malformed index entry of stream {stream}"))),
            }
        }
        Ok(out)
    }

    pub(crate) fn position_of_id(&self, id: &uuid::Uuid) -> Result<Option<u64>, Error> {
        let value = self.db.get(id_key(id)).map_err(storage)?;
        Ok(value.and_then(|v| be_u64(&v)))
    }

    /// Whether both index entries of `envelope` point back at it.
    pub(crate) fn indexes_point_at(&self, envelope: &Envelope) -> Result<bool, Error> {
        let position = Some(envelope.position);
        let by_stream = self.db.get(stream_key(&envelope.stream, envelope.stream_version)).map_err(storage)?;
        let by_id = self.position_of_id(&envelope.id)?;
        Ok(by_stream.and_then(|v| be_u64(&v)) == position && by_id == position)
    }

    /// How many index entries the store holds (each event has one of each kind).
    pub(crate) fn index_entry_counts(&self) -> (usize, usize) {
        (self.db.scan_prefix([STREAM]).count(), self.db.scan_prefix([EVENT_ID]).count())
    }

    /// Applies the batch and the new head atomically (not yet durable).
    pub(crate) fn apply(&self, mut staged: StagedBatch, head: Head) -> Result<(), Error> {
        staged.set_head(head);
        self.db.apply_batch(staged.batch).map_err(storage)
    }

    /// Makes everything applied so far durable against a process crash:
    /// sled's flush ends in `sync_file_range`.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(storage)
    }
}

fn drop_legacy_view_trees(db: &sled::Db) -> Result<(), Error> {
    for name in db.tree_names() {
        let text = String::from_utf8_lossy(&name);
        if LEGACY_VIEW_TREE_PREFIXES.iter().any(|prefix| text.starts_with(prefix)) {
            tracing::info!(tree = %text, "dropping a projection tree of an earlier version (read models are in projections.db now)");
            db.drop_tree(&name).map_err(storage)?;
        }
    }
    Ok(())
}

/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating` and renames it
/// once written and synced, but on open it does not skip such a leftover:
/// a process killed mid-snapshot leaves a store that no longer opens
/// (sled issue 1527). A `.generating` file is by construction unfinished
/// and never the source of truth (the segments are), so it is removed.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing an unfinished sled snapshot left by a crash");
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// The name of the file whose exclusive lock says who owns the directory.
const LOCK_FILE: &str = "opledger.lock";

/// The directories of the stores this process opened, and whether each is
/// open now. The directory's lock of a store this process closed can still
/// be held a moment after: a child process being spawned meanwhile (by any
/// thread) got a copy of every open file, the lock's among them, and holds
/// it until its `exec` closes the copy (seen under load: a reopen refused
/// 23 µs after the close). A reopen waits for that, as for sled's own lock.
static OPENED: Mutex<BTreeMap<PathBuf, bool>> = Mutex::new(BTreeMap::new());

/// Takes the directory for this process, or says who holds it: a second
/// process (or a second open in this one) gets [`Error::Locked`] at once.
/// A directory whose store this process closed is waited for, at most
/// [`STORE_LOCK_RELEASE_WAIT`] (see [`OPENED`]).
fn lock_directory(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                if let Ok(mut opened) = OPENED.lock() {
                    opened.insert(dir.to_path_buf(), true);
                }
                return Ok(file);
            }
            Err(std::fs::TryLockError::WouldBlock)
                if closed_here(dir) && started.elapsed() < STORE_LOCK_RELEASE_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir.to_path_buf() }),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
}

/// Whether a store of this process had `dir` open and closed it.
fn closed_here(dir: &Path) -> bool {
    OPENED.lock().is_ok_and(|opened| opened.get(dir) == Some(&false))
}

/// Opens sled, waiting a bounded time for sled's own lock. With our lock
/// held, that lock can only belong to a store of this process that was just
/// dropped: sled's background threads release its files a moment after the
/// last handle goes (a reopen right after a close would otherwise fail).
fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, Error> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(dir, e));
        match opened {
            Err(Error::Locked { .. }) if started.elapsed() < STORE_LOCK_RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn open_error(dir: &Path, error: sled::Error) -> Error {
    if let sled::Error::Io(io) = &error {
        let text = io.to_string();
        if io.kind() == std::io::ErrorKind::WouldBlock || text.contains("lock") {
            return Error::Locked { path: dir.to_path_buf() };
        }
    }
    storage(error)
}

/// `fdatasync` of the store's files after sled's own flush (which ends in
/// `sync_file_range` and so does not survive a power loss).
pub(crate) struct FileSync {
    db_file: File,
    db_path: PathBuf,
    blobs_dir: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl FileSync {
    /// `None` in [`Durability::Flush`] mode.
    pub(crate) fn for_mode(dir: &Path, durability: Durability) -> Result<Option<FileSync>, Error> {
        match durability {
            Durability::Fsync => FileSync::new(dir).map(Some),
            Durability::Flush => Ok(None),
        }
    }

    fn new(dir: &Path) -> Result<FileSync, Error> {
        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(|e| Error::io(&db_path, e))?;
        // sled writes `conf` without syncing it, and a fresh log's directory
        // entries (store/, head.witness) live in the parent: make both
        // durable once, so a new log survives a power loss too.
        let conf = dir.join("conf");
        File::open(&conf).and_then(|f| f.sync_all()).map_err(|e| Error::io(&conf, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
        if let Some(parent) = dir.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(|e| Error::io(parent, e))?;
        }
        Ok(FileSync { db_file, db_path, blobs_dir: dir.join("blobs"), synced_blobs: HashSet::new() })
    }

    pub(crate) fn sync(&mut self) -> Result<(), Error> {
        self.db_file.sync_data().map_err(|e| Error::io(&self.db_path, e))?;
        self.sync_new_blobs()
    }

    /// sled spills nodes larger than its blob threshold into `blobs/`; the
    /// event size limit keeps that rare, but a blob that holds log state must
    /// be durable too. Blob files are written once, so each is synced once.
    fn sync_new_blobs(&mut self) -> Result<(), Error> {
        let Ok(entries) = std::fs::read_dir(&self.blobs_dir) else { return Ok(()) };
        let mut any_new = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if self.synced_blobs.contains(&name) {
                continue;
            }
            let path = entry.path();
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
            self.synced_blobs.insert(name);
            any_new = true;
        }
        if any_new {
            File::open(&self.blobs_dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&self.blobs_dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock a child process being spawned holds a moment after the
    /// store closed (a copy of its file), here a clone of the lock's file
    /// dropped 200 ms after the close: the reopen waits for it. A second
    /// open while the store is open is refused at once.
    #[test]
    fn a_reopen_waits_for_a_copy_of_the_lock_a_closed_store_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(Store::open(dir.path(), 1 << 20), Err(Error::Locked { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "an open store is refused at once");
        let copy = store._lock.try_clone().unwrap();
        drop(store);
        let releasing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(copy);
        });
        let started = std::time::Instant::now();
        let reopened = Store::open(dir.path(), 1 << 20);
        assert!(reopened.is_ok(), "{:?}", reopened.err());
        assert!(started.elapsed() >= std::time::Duration::from_millis(150), "it waited for the copy");
        releasing.join().unwrap();
    }
}
