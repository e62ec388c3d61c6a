//! The projection mechanism: projections consume envelopes in log order and
//! keep their tables in the read models' SQLite file (`store.rs`), with one
//! checkpoint for all of them.
//!
//! - On open, the file is checked (ours, this schema version, folded from
//!   this log) and caught up from its checkpoint: a restart applies only
//!   what the file has not seen. A file that does not fit is rebuilt.
//! - [`Projector::follow`] (`following.rs`) applies new events as group
//!   commits are acknowledged: each page of events is one transaction that
//!   also moves the checkpoint.
//! - [`Projector::wait_for`] lets a read wait until the projections have
//!   applied a position, so reads see the writes acknowledged before them.
//! - [`Projector::rebuild`] folds the log from position 1 into a fresh file
//!   (bulk mode, indexes after the load, decoding and applying on two
//!   threads) and renames it over the live file once caught up; reads use
//!   the old file until the swap.
//! - An event a projection cannot apply stops the projector with an error
//!   naming the position. Nothing is skipped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use opledger::domain::authority::AuthorityState;
use opledger::domain::events::DomainEvent;
use opledger::{Envelope, Log};
use rusqlite::Connection;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::store::{self, sqlite, Checkpoint, Live, Mode, Reader};

/// Events applied per transaction. Larger pages coalesce more writes (a
/// run's row) into one during a catch-up or a rebuild; a live follow
/// commits whatever arrived, usually far fewer.
pub const APPLY_BATCH_EVENTS_MAX: usize = 4096;
/// Pages a rebuild applies per transaction (and per projection batch): a
/// run whose events span several pages is decoded and written once.
pub const BULK_PAGES_PER_TRANSACTION: usize = 8;
/// Decoded pages a rebuild's reading thread may run ahead of applying.
pub const DECODED_PAGES_IN_FLIGHT_MAX: usize = 2;
/// An empty file behind a log longer than this is rebuilt in bulk on open
/// rather than caught up one live transaction per page.
pub const BULK_LOAD_EVENTS_MIN: u64 = 50_000;

/// A fold of the log into tables of the read models' file.
pub trait Projection: Send + Sync {
    /// Stable name, for messages.
    fn name(&self) -> &'static str;

    /// `CREATE TABLE` statements of the projection's tables.
    fn tables(&self) -> &'static str;

    /// `CREATE INDEX` statements; a rebuild runs them after the load.
    fn indexes(&self) -> &'static str;

    /// A batch writing into `db`, inside the transaction of one page.
    fn batch<'c>(&self, db: &'c Connection) -> Box<dyn ProjectionBatch + 'c>;
}

/// The writes of one projection for one page of events.
pub trait ProjectionBatch {
    /// Applies one event. `authority` is the authority state as of the
    /// event's position (the event itself already folded in).
    fn apply(&mut self, envelope: &Envelope, event: &DomainEvent, authority: &AuthorityState) -> Result<(), String>;

    /// Writes what the batch kept in memory; the page's transaction
    /// commits right after.
    fn finish(&mut self) -> Result<(), String>;
}

/// Where the projector stands: applied up to `position`, or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Applied(u64),
    Stopped { position: u64, detail: String },
}

pub struct Projector {
    log: Arc<Log>,
    projections: Vec<Arc<dyn Projection>>,
    path: PathBuf,
    live: RwLock<Arc<Live>>,
    /// The authority state as of the applied position, for access checks.
    authority: RwLock<AuthorityState>,
    /// Serializes applying (the follower, catch-up and the end of a rebuild).
    apply_lock: Mutex<()>,
    progress: watch::Sender<Progress>,
    /// See [`Projector::log_unreachable`].
    log_unreachable: watch::Sender<Option<String>>,
    /// Over a shared log, the lock that keeps a second process of this
    /// node (a CLI beside the server) from writing the same file: a log in
    /// a directory is locked by its store, a log in a database is not.
    _directory_lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("progress", &*self.progress.borrow()).finish_non_exhaustive()
    }
}

impl Projector {
    /// Opens the read models and catches up (in bulk when the file is
    /// empty and the log long).
    pub fn open(log: Arc<Log>, projections: Vec<Arc<dyn Projection>>) -> Result<Projector, ProjectionError> {
        let dir = log_directory(&log)?;
        Projector::open_in(&dir, log, projections)
    }

    /// [`Projector::open`] with the read models in `dir`: a log kept in a
    /// database has no directory of its own, and each node keeps its read
    /// models in its data directory.
    pub fn open_in(
        dir: &Path,
        log: Arc<Log>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Projector, ProjectionError> {
        let projector = Projector::open_without_catch_up_in(dir, log, projections)?;
        let applied = projector.applied();
        if applied == 0 && projector.log.head().position >= BULK_LOAD_EVENTS_MIN {
            projector.rebuild(&mut |_, _| {})?;
        } else {
            projector.catch_up()?;
        }
        Ok(projector)
    }

    /// Opens the read models as they are, without applying what they have
    /// not seen: for a rebuild, which replaces the file anyway. A file
    /// that is missing, of another schema version or folded from another
    /// log is replaced by an empty one first, never read.
    pub fn open_without_catch_up(
        log: Arc<Log>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Projector, ProjectionError> {
        let dir = log_directory(&log)?;
        Projector::open_without_catch_up_in(&dir, log, projections)
    }

    /// [`Projector::open_without_catch_up`] with the read models in `dir`.
    pub fn open_without_catch_up_in(
        dir: &Path,
        log: Arc<Log>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Projector, ProjectionError> {
        std::fs::create_dir_all(dir).map_err(|error| ProjectionError::Io(format!("{}: {error}", dir.display())))?;
        let directory_lock = match log.shared() {
            true => Some(lock_read_models(dir)?),
            false => None,
        };
        let path = store::path_in(dir);
        let checkpoint = prepare_file(&log, &projections, &path)?;
        let authority = authority_as_of(&log, checkpoint.position)?;
        let live = Live::open(&path)?;
        Ok(Projector {
            log,
            projections,
            path,
            live: RwLock::new(Arc::new(live)),
            authority: RwLock::new(authority),
            apply_lock: Mutex::new(()),
            progress: watch::channel(Progress::Applied(checkpoint.position)).0,
            log_unreachable: watch::channel(None).0,
            _directory_lock: directory_lock,
        })
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The read models' file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read connection to the current file.
    pub fn reader(&self) -> Result<Reader, ProjectionError> {
        let live = Arc::clone(&*self.live.read().map_err(|_| ProjectionError::Poisoned)?);
        live.readers.get()
    }

    /// Runs `read` on the authority state as of the applied position.
    pub fn with_authority<T>(&self, read: impl FnOnce(&AuthorityState) -> T) -> Result<T, ProjectionError> {
        let authority = self.authority.read().map_err(|_| ProjectionError::Poisoned)?;
        Ok(read(&authority))
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// The position applied (where a stopped projector stopped, less one).
    pub fn applied(&self) -> u64 {
        match self.progress() {
            Progress::Applied(position) => position,
            Progress::Stopped { position, .. } => position.saturating_sub(1),
        }
    }

    /// Applies every acknowledged event the projections have not seen.
    /// Returns the position applied.
    pub fn catch_up(&self) -> Result<u64, ProjectionError> {
        let _guard = self.apply_lock.lock().map_err(|_| ProjectionError::Poisoned)?;
        if let Progress::Stopped { position, detail } = self.progress() {
            return Err(ProjectionError::Stopped { position, detail });
        }
        let result = self.apply_until(self.log.head().position);
        if let Err(ProjectionError::Stopped { position, detail }) = &result {
            tracing::error!(position, %detail, "a projection cannot apply an event; projections stopped");
            self.progress.send_replace(Progress::Stopped { position: *position, detail: detail.clone() });
        }
        result
    }

    fn apply_until(&self, head: u64) -> Result<u64, ProjectionError> {
        let live = Arc::clone(&*self.live.read().map_err(|_| ProjectionError::Poisoned)?);
        let writer = live.writer.lock().map_err(|_| ProjectionError::Poisoned)?;
        let mut authority = self.authority.write().map_err(|_| ProjectionError::Poisoned)?;
        let mut applied = self.applied();
        while applied < head {
            let page = self.log.read(applied + 1, APPLY_BATCH_EVENTS_MAX)?;
            let decoded = decode(&page).map(|events| (page, events));
            let mut one = std::iter::once(decoded);
            let Some(at) = apply_pages(&writer, &self.projections, &mut authority, &mut one, 1)? else { break };
            applied = at.position;
            self.progress.send_replace(Progress::Applied(applied));
        }
        Ok(applied)
    }

    /// Waits until the projections have applied `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), ProjectionError> {
        let mut progress = self.progress.subscribe();
        let reached = progress
            .wait_for(|p| {
                matches!(p, Progress::Applied(at) if *at >= position) || matches!(p, Progress::Stopped { .. })
            })
            .await
            .map_err(|_| ProjectionError::Poisoned)?
            .clone();
        match reached {
            Progress::Applied(_) => Ok(()),
            Progress::Stopped { position, detail } => Err(ProjectionError::Stopped { position, detail }),
        }
    }

    /// Why the follower cannot read the log now, while it retries (over a
    /// shared log: `following.rs`); `None` once it caught up again.
    pub fn log_unreachable(&self) -> Option<String> {
        self.log_unreachable.borrow().clone()
    }

    pub(crate) fn set_log_unreachable(&self, why: Option<String>) {
        self.log_unreachable.send_replace(why);
    }

    /// Folds the log from position 1 into a fresh file, then renames it
    /// over the live one. Reads use the old file until the swap.
    /// `progress` is told the position applied and the head aimed at.
    pub fn rebuild(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, ProjectionError> {
        let fresh = self.path.with_file_name(store::REBUILD_FILE_NAME);
        let result = self.rebuild_into(&fresh, progress);
        if result.is_err() {
            remove_if_present(&fresh)?;
        }
        result
    }

    fn rebuild_into(&self, fresh: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, ProjectionError> {
        remove_if_present(fresh)?;
        let db = store::open_writer(fresh, Mode::Bulk)?;
        store::create_schema(&db, &self.projections, false)?;
        let mut authority = AuthorityState::default();
        let mut applied = bulk_load(&self.log, &db, &self.projections, &mut authority, 0, progress)?;
        store::create_indexes(&db, &self.projections)?;
        let _guard = self.apply_lock.lock().map_err(|_| ProjectionError::Poisoned)?;
        applied = bulk_load(&self.log, &db, &self.projections, &mut authority, applied, progress)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        db.close().map_err(|(_, error)| sqlite(error))?;
        let mut live = self.live.write().map_err(|_| ProjectionError::Poisoned)?;
        store::quiesce(&live)?;
        store::install(fresh, &self.path)?;
        *live = Arc::new(Live::open(&self.path)?);
        *self.authority.write().map_err(|_| ProjectionError::Poisoned)? = authority;
        self.progress.send_replace(Progress::Applied(applied));
        Ok(applied)
    }
}

/// Makes sure a fitting live file is at `path` and returns its checkpoint:
/// a missing file, one of another schema version, or one folded from
/// another log is replaced by an empty file.
fn prepare_file(log: &Log, projections: &[Arc<dyn Projection>], path: &Path) -> Result<Checkpoint, ProjectionError> {
    // A rebuild this process or an earlier one did not finish: only the
    // owner of the log rebuilds, and that is us now.
    remove_if_present(&path.with_file_name(store::REBUILD_FILE_NAME))?;
    if path.exists() {
        let reason = match Live::open(path) {
            Ok(live) => match unfit_reason(log, projections, &live)? {
                Ok(checkpoint) => return Ok(checkpoint),
                Err(reason) => {
                    store::quiesce(&live)?;
                    reason
                }
            },
            // Not a database at all: nothing can hold it open as one.
            Err(error) => error.to_string(),
        };
        tracing::warn!(path = %path.display(), %reason, "the read models do not fit; rebuilding them from the log");
        for leftover in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(leftover);
            remove_if_present(Path::new(&name))?;
        }
    }
    let fresh = path.with_file_name(store::REBUILD_FILE_NAME);
    let db = store::open_writer(&fresh, Mode::Live)?;
    store::create_schema(&db, projections, true)?;
    db.close().map_err(|(_, error)| sqlite(error))?;
    store::install(&fresh, path)?;
    Ok(Checkpoint::START)
}

/// The live file's checkpoint if the file fits (this schema version, these
/// projections, folded from this log); else why it does not.
fn unfit_reason(
    log: &Log,
    projections: &[Arc<dyn Projection>],
    live: &Live,
) -> Result<Result<Checkpoint, String>, ProjectionError> {
    let fit = {
        let writer = live.writer.lock().map_err(|_| ProjectionError::Poisoned)?;
        store::fitting_checkpoint(&writer).and_then(|fit| Ok((fit, store::projections_held(&writer)?)))
    };
    let mut wanted: Vec<String> = projections.iter().map(|p| p.name().to_owned()).collect();
    wanted.sort();
    Ok(Err(match fit {
        Ok((Ok(_), held)) if held != wanted => format!("it holds the projections {held:?}, not {wanted:?}"),
        Ok((Ok(checkpoint), _)) if checkpoint_in_log(log, checkpoint)? => return Ok(Ok(checkpoint)),
        Ok((Ok(checkpoint), _)) => format!("it was folded from another log (position {})", checkpoint.position),
        Ok((Err(unfit), _)) => unfit.to_string(),
        Err(error) => error.to_string(),
    }))
}

/// Whether the log holds the checkpoint's position with the same hash.
fn checkpoint_in_log(log: &Log, checkpoint: Checkpoint) -> Result<bool, ProjectionError> {
    if checkpoint.position == 0 {
        return Ok(true);
    }
    Ok(log.event(checkpoint.position)?.is_some_and(|event| event.hash == checkpoint.log_hash))
}

fn remove_if_present(path: &Path) -> Result<(), ProjectionError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(ProjectionError::Io(format!("removing {}: {error}", path.display())))
        }
        _ => Ok(()),
    }
}

fn decode(page: &[Envelope]) -> Result<Vec<DomainEvent>, ProjectionError> {
    let stopped =
        |envelope: &Envelope, detail: String| ProjectionError::Stopped { position: envelope.position, detail };
    page.iter().map(|envelope| DomainEvent::from_envelope(envelope).map_err(|e| stopped(envelope, e))).collect()
}

/// A page read and decoded by a rebuild's reading thread.
type Decoded = Result<(Vec<Envelope>, Vec<DomainEvent>), ProjectionError>;

/// Applies every event after `from` up to the head into a bulk file, the
/// reading and decoding on a second thread. Returns the position applied.
fn bulk_load(
    log: &Log,
    db: &Connection,
    projections: &[Arc<dyn Projection>],
    authority: &mut AuthorityState,
    from: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    let head = log.head().position;
    std::thread::scope(|scope| {
        let (sender, pages) = std::sync::mpsc::sync_channel::<Decoded>(DECODED_PAGES_IN_FLIGHT_MAX);
        scope.spawn(move || {
            let mut next = from + 1;
            while next <= head {
                let page = match log.read(next, APPLY_BATCH_EVENTS_MAX) {
                    Ok(page) if page.is_empty() => return,
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(error.into()));
                        return;
                    }
                };
                next = page.last().map_or(head + 1, |e| e.position + 1);
                let decoded = decode(&page).map(|events| (page, events));
                if sender.send(decoded).is_err() {
                    return;
                }
            }
        });
        let mut applied = from;
        let mut pages = pages.into_iter();
        while let Some(at) = apply_pages(db, projections, authority, &mut pages, BULK_PAGES_PER_TRANSACTION)? {
            applied = at.position;
            progress(applied, head);
        }
        Ok(applied)
    })
}

/// Applies up to `pages_max` pages from `pages` to every projection in one
/// transaction that also moves the checkpoint, with one batch per
/// projection for all of them (a run several pages touch is written once).
/// Returns where the transaction left the checkpoint; `None` when `pages`
/// was empty.
fn apply_pages(
    db: &Connection,
    projections: &[Arc<dyn Projection>],
    authority: &mut AuthorityState,
    pages: &mut dyn Iterator<Item = Decoded>,
    pages_max: usize,
) -> Result<Option<Checkpoint>, ProjectionError> {
    let tx = db.unchecked_transaction().map_err(sqlite)?;
    let at = {
        let mut batches: Vec<Box<dyn ProjectionBatch + '_>> = projections.iter().map(|p| p.batch(&tx)).collect();
        let mut last = None;
        for decoded in pages.take(pages_max) {
            let (page, events) = decoded?;
            apply_events(projections, &mut batches, authority, &page, &events)?;
            last = page.last().map(|e| Checkpoint { position: e.position, log_hash: e.hash }).or(last);
        }
        let Some(at) = last else { return Ok(None) };
        for (projection, batch) in projections.iter().zip(batches.iter_mut()) {
            let name = projection.name();
            batch.finish().map_err(|detail| ProjectionError::Stopped {
                position: at.position,
                detail: format!("projection {name}: {detail}"),
            })?;
        }
        at
    };
    store::write_checkpoint(&tx, at)?;
    tx.commit().map_err(sqlite)?;
    Ok(Some(at))
}

/// Folds each event into the authority state, then into every batch.
fn apply_events(
    projections: &[Arc<dyn Projection>],
    batches: &mut [Box<dyn ProjectionBatch + '_>],
    authority: &mut AuthorityState,
    page: &[Envelope],
    events: &[DomainEvent],
) -> Result<(), ProjectionError> {
    for (envelope, event) in page.iter().zip(events) {
        let stopped = |detail: String| ProjectionError::Stopped { position: envelope.position, detail };
        if let DomainEvent::Authority(changed) = event {
            if envelope.position > authority.position {
                authority.apply(envelope.position, &changed.change).map_err(stopped)?;
            }
        }
        for (projection, batch) in projections.iter().zip(batches.iter_mut()) {
            let name = projection.name();
            batch
                .apply(envelope, event, authority)
                .map_err(|detail| stopped(format!("projection {name}: {detail}")))?;
        }
    }
    Ok(())
}

/// The authority state folded from the authority stream up to `position`.
pub(crate) fn authority_as_of(log: &Log, position: u64) -> Result<AuthorityState, ProjectionError> {
    let mut state = AuthorityState::default();
    let stream = opledger::domain::events::authority_stream();
    let mut version = 1;
    loop {
        let page = log.read_stream(&stream, version, APPLY_BATCH_EVENTS_MAX)?;
        for envelope in &page {
            if envelope.position > position {
                return Ok(state);
            }
            let stopped = |detail: String| ProjectionError::Stopped { position: envelope.position, detail };
            let DomainEvent::Authority(changed) = DomainEvent::from_envelope(envelope).map_err(stopped)? else {
                return Err(stopped("a non-authority event in the authority stream".into()));
            };
            state.apply(envelope.position, &changed.change).map_err(stopped)?;
        }
        if page.len() < APPLY_BATCH_EVENTS_MAX {
            return Ok(state);
        }
        version += page.len() as u64;
    }
}

/// The directory of a log kept in one: its read models go beside it.
fn log_directory(log: &Log) -> Result<PathBuf, ProjectionError> {
    log.directory().ok_or_else(|| {
        ProjectionError::Unavailable(format!(
            "the log in {} has no directory: name one for the read models (Projector::open_in)",
            log.location()
        ))
    })
}

/// Takes the read models' lock file in `dir`, or says another process
/// holds it (as the log's own lock does for a directory).
fn lock_read_models(dir: &Path) -> Result<std::fs::File, ProjectionError> {
    let path = dir.join(store::LOCK_FILE_NAME);
    let io = |error: std::io::Error| ProjectionError::Io(format!("{}: {error}", path.display()));
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(ProjectionError::Log(opledger::Error::Locked { path: dir.to_path_buf() }))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(io(error)),
    }
}

#[cfg(test)]
#[path = "projector_tests.rs"]
mod tests;
