//! Replacing the live file with a rebuilt one.
//!
//! SQLite finds a file's write-ahead log and shared memory by name
//! (`projections.db-wal`, `-shm`). Renaming a new file over a WAL-mode file
//! that a connection still has open would let that connection and the new
//! file's connections share those two files: stale frames applied to the
//! wrong database. So the old file leaves WAL mode first, which SQLite
//! allows only when no other connection, in any process, has it open, and
//! which removes both files. Only then is the rebuilt file (synced, in WAL
//! mode, closed) renamed over it, and the directory synced.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{sqlite, Live};
use crate::error::ProjectionError;

/// Longest wait for other connections to the old file to close.
pub const SWAP_WAIT: Duration = Duration::from_secs(10);
const SWAP_RETRY: Duration = Duration::from_millis(20);

/// Takes the old file out of WAL mode; waits (bounded) for other
/// connections to close. `live` is the server's own writer and readers.
pub(crate) fn quiesce(live: &Live) -> Result<(), ProjectionError> {
    let writer = live.writer.lock().map_err(|_| ProjectionError::Poisoned)?;
    let deadline = Instant::now() + SWAP_WAIT;
    loop {
        live.readers.close_idle();
        if leave_wal(&writer)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProjectionError::Sqlite(format!(
                "another connection kept the read models open for {} s; the rebuilt file was not swapped in",
                SWAP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(SWAP_RETRY);
    }
}

/// Whether the file left WAL mode (false: another connection holds it).
fn leave_wal(db: &Connection) -> Result<bool, ProjectionError> {
    // A busy answer is "try again", not a failure.
    let _ = db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    match db.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get::<_, String>(0)) {
        Ok(mode) => Ok(mode.eq_ignore_ascii_case("delete")),
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::DatabaseBusy => Ok(false),
        Err(error) => Err(sqlite(error)),
    }
}

/// Syncs `fresh` and renames it over `live_path`, then syncs the directory.
pub(crate) fn install(fresh: &Path, live_path: &Path) -> Result<(), ProjectionError> {
    let io = |what: &str, error: std::io::Error| ProjectionError::Io(format!("{what}: {error}"));
    std::fs::File::open(fresh).and_then(|file| file.sync_all()).map_err(|e| io("syncing the rebuilt file", e))?;
    std::fs::rename(fresh, live_path).map_err(|e| io("renaming the rebuilt file", e))?;
    if let Some(dir) = live_path.parent() {
        std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|e| io("syncing the data directory", e))?;
    }
    Ok(())
}

/// [`leave_wal`] on `live`'s writer, for the store's tests.
#[cfg(test)]
pub(crate) fn leave_wal_for_tests(live: &Live) -> bool {
    live.writer.lock().map(|writer| leave_wal(&writer).unwrap_or(false)).unwrap_or(false)
}
