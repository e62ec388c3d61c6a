//! The read models' SQLite database, `DIR/projections.db`: every
//! projection's tables and the one checkpoint they share. The only module
//! of the workspace that opens SQLite files (query modules take a
//! [`rusqlite::Connection`] they are given).
//!
//! - **Live** files are in WAL mode: one writer (the projector) and any
//!   number of readers, in this process or in others (`opledger runs list
//!   --data DIR` while the server runs). Every page of events is one
//!   transaction that also moves the checkpoint, so after any crash the
//!   tables are exactly the fold of the log up to the checkpoint.
//! - **Bulk** files are what a rebuild fills: no journal, no syncs, tables
//!   first and secondary indexes after the load. The file is synced and
//!   switched to WAL before it is renamed over the live one.
//! - The schema version is `PRAGMA user_version` and the file is marked
//!   with `PRAGMA application_id`: a file of another version (or not ours)
//!   is rebuilt from the log, never read.
//! - The checkpoint row holds the log's hash at the checkpoint: a file
//!   folded from another log (a data directory whose log was replaced) is
//!   rebuilt, not served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opledger::envelope::Hash;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::ProjectionError;
use crate::projector::Projection;

mod pool;
mod swap;

pub use pool::{Reader, Readers};
pub(crate) use swap::{install, quiesce};

/// The file beside the log.
pub const FILE_NAME: &str = "projections.db";
/// What a rebuild fills before it is renamed over [`FILE_NAME`].
pub const REBUILD_FILE_NAME: &str = "projections.db.rebuild";

/// Locked by the process that projects into the directory when the log is
/// in a database (a log in a directory is locked by its store already).
pub const LOCK_FILE_NAME: &str = "projections.lock";
/// The version of every table of the file. Bump it with any change to a
/// table, a column or what a column holds: files of another version are
/// rebuilt from the log when the projector opens.
pub const SCHEMA_VERSION: i32 = 1;
/// Marks the file as opledger's read models ("oplg").
pub const APPLICATION_ID: i32 = 0x6f70_6c67;
/// How long a statement waits for a lock another connection holds.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);
/// SQLite's page cache per live connection, KiB.
pub const LIVE_CACHE_KIB: i64 = 16 * 1024;
/// SQLite's page cache of a rebuild, KiB.
pub const BULK_CACHE_KIB: i64 = 32 * 1024;
/// The file's page size (set when a file is created; an existing file keeps
/// its own). Rows of the audit details and run documents run to a few KiB:
/// 16 KiB pages hold several each, and a rebuild writes and reads fewer,
/// larger pages (about 20% faster than 4 KiB at a million events).
pub const PAGE_BYTES: u32 = 16 * 1024;
/// Threads SQLite may use to sort while a rebuild creates its indexes.
pub const BULK_SORT_THREADS: u32 = 2;
/// Prepared statements kept per connection (every projection's fit).
const STATEMENT_CACHE_MAX: usize = 64;

const CHECKPOINT_TABLE: &str = "CREATE TABLE projector_checkpoint (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    position INTEGER NOT NULL,
    log_hash TEXT NOT NULL
) STRICT;
CREATE TABLE projector_projections (name TEXT PRIMARY KEY) STRICT;";

pub(crate) fn sqlite(error: rusqlite::Error) -> ProjectionError {
    ProjectionError::Sqlite(error.to_string())
}

/// The read models' file for the log in `log_dir`.
pub fn path_in(log_dir: &Path) -> PathBuf {
    log_dir.join(FILE_NAME)
}

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Live,
    Bulk,
}

/// Where a file's folding stands: the position applied and the log's hash
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub log_hash: Hash,
}

impl Checkpoint {
    pub const START: Checkpoint = Checkpoint { position: 0, log_hash: Hash::GENESIS };
}

/// Opens `path` for writing in `mode` (creating the file if missing).
pub(crate) fn open_writer(path: &Path, mode: Mode) -> Result<Connection, ProjectionError> {
    let db = Connection::open(path).map_err(sqlite)?;
    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
    db.busy_timeout(BUSY_WAIT).map_err(sqlite)?;
    let pragmas = match mode {
        Mode::Live => format!(
            "PRAGMA page_size = {PAGE_BYTES}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -{LIVE_CACHE_KIB};"
        ),
        Mode::Bulk => format!(
            "PRAGMA page_size = {PAGE_BYTES}; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
             PRAGMA cache_size = -{BULK_CACHE_KIB}; PRAGMA threads = {BULK_SORT_THREADS};"
        ),
    };
    db.execute_batch(&pragmas).map_err(sqlite)?;
    Ok(db)
}

/// Opens `path` for reading only; `None` when there is no such file.
pub fn open_reader(path: &Path) -> Result<Option<Connection>, ProjectionError> {
    if !path.exists() {
        return Ok(None);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
    db.busy_timeout(BUSY_WAIT).map_err(sqlite)?;
    db.execute_batch(&format!("PRAGMA query_only = ON; PRAGMA cache_size = -{LIVE_CACHE_KIB};")).map_err(sqlite)?;
    Ok(Some(db))
}

/// Opens the read models of the log in `log_dir` for reading only, as
/// another process (the server that owns the log) keeps them: the rows
/// are those of its last committed page. A missing file or one of another
/// schema version is [`ProjectionError::Unavailable`], never misread.
pub fn open_read_only(log_dir: &Path) -> Result<(Reader, Checkpoint), ProjectionError> {
    let path = path_in(log_dir);
    let Some(db) = open_reader(&path)? else {
        return Err(ProjectionError::Unavailable(format!(
            "{} does not exist yet: the server writes it as it starts",
            path.display()
        )));
    };
    match fitting_checkpoint(&db)? {
        Ok(checkpoint) => Ok((Reader::standalone(db), checkpoint)),
        Err(unfit) => Err(ProjectionError::Unavailable(format!(
            "{}: {unfit}; the server rebuilds it when it starts",
            path.display()
        ))),
    }
}

/// Creates every table of `projections` and the checkpoint in an empty
/// file, with the secondary indexes unless `indexes` is false (a rebuild
/// creates them after the load).
pub(crate) fn create_schema(
    db: &Connection,
    projections: &[Arc<dyn Projection>],
    indexes: bool,
) -> Result<(), ProjectionError> {
    let tx = db.unchecked_transaction().map_err(sqlite)?;
    tx.execute_batch(CHECKPOINT_TABLE).map_err(sqlite)?;
    for projection in projections {
        tx.execute("INSERT INTO projector_projections (name) VALUES (?1)", [projection.name()]).map_err(sqlite)?;
        tx.execute_batch(projection.tables()).map_err(sqlite)?;
        if indexes {
            tx.execute_batch(projection.indexes()).map_err(sqlite)?;
        }
    }
    write_checkpoint(&tx, Checkpoint::START)?;
    tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"))
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

/// Creates the secondary indexes of a bulk-loaded file.
pub(crate) fn create_indexes(db: &Connection, projections: &[Arc<dyn Projection>]) -> Result<(), ProjectionError> {
    for projection in projections {
        db.execute_batch(projection.indexes()).map_err(sqlite)?;
    }
    Ok(())
}

/// Why a file cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    NotOurs { application_id: i32 },
    OtherVersion { found: i32 },
    NoCheckpoint,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::NotOurs { application_id } => {
                write!(f, "the file is not opledger's (application_id {application_id})")
            }
            Unfit::OtherVersion { found } => {
                write!(f, "the file has schema version {found}, this build reads {SCHEMA_VERSION}")
            }
            Unfit::NoCheckpoint => f.write_str("the file has no checkpoint"),
        }
    }
}

/// The file's checkpoint if it is ours and of this schema version.
pub fn fitting_checkpoint(db: &Connection) -> Result<Result<Checkpoint, Unfit>, ProjectionError> {
    let pragma = |name: &str| db.pragma_query_value(None, name, |row| row.get::<_, i32>(0)).map_err(sqlite);
    let application_id = pragma("application_id")?;
    if application_id != APPLICATION_ID {
        return Ok(Err(Unfit::NotOurs { application_id }));
    }
    let found = pragma("user_version")?;
    if found != SCHEMA_VERSION {
        return Ok(Err(Unfit::OtherVersion { found }));
    }
    Ok(read_checkpoint(db)?.ok_or(Unfit::NoCheckpoint))
}

/// The names of the projections whose tables the file holds, sorted: a
/// file made for another set of projections is rebuilt, not written to.
pub fn projections_held(db: &Connection) -> Result<Vec<String>, ProjectionError> {
    let mut statement = db.prepare("SELECT name FROM projector_projections ORDER BY name").map_err(sqlite)?;
    let names = statement.query_map([], |row| row.get::<_, String>(0)).map_err(sqlite)?;
    names.collect::<Result<Vec<_>, _>>().map_err(sqlite)
}

/// The checkpoint row, if there is one.
pub fn read_checkpoint(db: &Connection) -> Result<Option<Checkpoint>, ProjectionError> {
    let row = db
        .query_row("SELECT position, log_hash FROM projector_checkpoint WHERE singleton = 1", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .optional()
        .map_err(sqlite)?;
    let Some((position, log_hash)) = row else { return Ok(None) };
    let corrupt = |detail: &str| ProjectionError::Corrupt { key: "projector_checkpoint".into(), detail: detail.into() };
    let position = u64::try_from(position).map_err(|_| corrupt("a negative position"))?;
    let log_hash = Hash::from_hex(&log_hash).ok_or_else(|| corrupt("the log hash is not 64 hex digits"))?;
    Ok(Some(Checkpoint { position, log_hash }))
}

/// Moves the checkpoint, inside the caller's transaction.
pub(crate) fn write_checkpoint(db: &Connection, checkpoint: Checkpoint) -> Result<(), ProjectionError> {
    let position = i64::try_from(checkpoint.position)
        .map_err(|_| ProjectionError::Sqlite(format!("position {} exceeds SQLite's integers", checkpoint.position)))?;
    db.prepare_cached(
        "INSERT INTO projector_checkpoint (singleton, position, log_hash) VALUES (1, ?1, ?2) \
         ON CONFLICT (singleton) DO UPDATE SET position = excluded.position, log_hash = excluded.log_hash",
    )
    .and_then(|mut statement| statement.execute(rusqlite::params![position, checkpoint.log_hash.to_hex()]))
    .map_err(sqlite)?;
    Ok(())
}

/// Every row of every table of the file, each table in primary-key order
/// (`table: value, value, …`): two files fold the same history exactly
/// when their dumps are equal. Bounded by the file; for tests and checks.
pub fn dump(db: &Connection) -> Result<Vec<String>, ProjectionError> {
    let tables = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut statement| {
            statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite)?;
    let mut rows = Vec::new();
    for table in tables {
        let columns = db.prepare(&format!("SELECT * FROM \"{table}\"")).map_err(sqlite)?.column_count();
        let order: Vec<String> = (1..=columns).map(|i| i.to_string()).collect();
        let query = format!("SELECT * FROM \"{table}\" ORDER BY {}", order.join(", "));
        let mut statement = db.prepare(&query).map_err(sqlite)?;
        let mut found = statement.query([]).map_err(sqlite)?;
        while let Some(row) = found.next().map_err(sqlite)? {
            let values: Vec<String> = (0..columns)
                .map(|i| row.get_ref(i).map(|value| format!("{value:?}")))
                .collect::<Result<_, _>>()
                .map_err(sqlite)?;
            rows.push(format!("{table}: {}", values.join(", ")));
        }
    }
    Ok(rows)
}

/// A live file's writer and readers.
pub(crate) struct Live {
    pub(crate) writer: Mutex<Connection>,
    pub(crate) readers: Arc<Readers>,
}

impl Live {
    pub(crate) fn open(path: &Path) -> Result<Live, ProjectionError> {
        let writer = open_writer(path, Mode::Live)?;
        Ok(Live { writer: Mutex::new(writer), readers: Arc::new(Readers::new(path.to_path_buf())) })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
