//! Read connections of a live file, kept open between reads.
//!
//! SQLite connections are not shareable between threads at once, so each
//! read takes one from the pool and gives it back when it ends. A read
//! never waits for another: with none idle it opens a new connection; at
//! most [`IDLE_READERS_MAX`] are kept open afterwards.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::ProjectionError;

/// Most idle read connections kept open per file.
pub const IDLE_READERS_MAX: usize = 8;

/// The read connections of one file.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Readers {
        Readers { path, idle: Mutex::new(Vec::new()) }
    }

    /// A read connection: an idle one, or a new one.
    pub fn get(self: &Arc<Self>) -> Result<Reader, ProjectionError> {
        let idle = self.idle.lock().map_err(|_| ProjectionError::Poisoned)?.pop();
        let connection = match idle {
            Some(connection) => connection,
            None => super::open_reader(&self.path)?.ok_or_else(|| {
                ProjectionError::Sqlite(format!("{} disappeared under the server", self.path.display()))
            })?,
        };
        Ok(Reader { connection: Some(connection), pool: Some(Arc::clone(self)) })
    }

    /// Closes every idle connection (before the file is swapped).
    pub(crate) fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn give_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_READERS_MAX {
                idle.push(connection);
            }
        }
    }
}

/// A read connection; derefs to [`rusqlite::Connection`], which every
/// query function of the projections takes.
#[derive(Debug)]
pub struct Reader {
    connection: Option<Connection>,
    pool: Option<Arc<Readers>>,
}

impl Reader {
    /// A connection of no pool (a tool reading a file once).
    pub fn standalone(connection: Connection) -> Reader {
        Reader { connection: Some(connection), pool: None }
    }
}

impl Deref for Reader {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Only `drop` takes the connection out.
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("a reader holds its connection until dropped"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(connection), Some(pool)) = (self.connection.take(), &self.pool) {
            pool.give_back(connection);
        }
    }
}
