//! The durability barrier: how a group committed without waiting for its
//! flush becomes acknowledged.
//!
//! A group's transaction commits with `synchronous_commit = off`: the
//! server answers once the commit record is in its WAL buffers, and the
//! head lock goes to the next group without waiting for the disk (or a
//! synchronous standby). Nobody is answered yet. The barrier then commits a
//! small transaction of its own **synchronously**: it copies the head it
//! reads into this barrier's row of `opledger_log_durable`. WAL is one
//! sequence and a synchronous commit waits until it is flushed (and, with a
//! synchronous standby, replicated) up to its own commit record, which lies
//! after the commit record of every group it could read. So once a barrier
//! committed, every event up to the head it wrote is durable, and only then
//! are those appends answered and that head published to readers.
//!
//! Each barrier has its own row (a random id), so barriers of different
//! lanes and nodes never wait for each other's row lock: their flushes
//! overlap, and PostgreSQL writes them out together.
//!
//! The barrier is one simple-protocol statement in an implicit transaction:
//! PostgreSQL commits such a statement before it reports it complete, so
//! its answer is the commit's (an extended-protocol statement reports
//! complete before its transaction commits at `Sync`). It also notifies
//! other nodes of the durable head (`pg_notify` is delivered on commit).

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, SimpleQueryMessage};
use uuid::Uuid;

use crate::envelope::Hash;
use crate::error::Error;
use crate::log::postgres::reads::micros_to_time;
use crate::log::Head;

/// Why an append whose barrier's wait for the synchronous standby was
/// cancelled is not acknowledged: PostgreSQL answers success with a warning.
pub(crate) const UNREPLICATED: &str = "PostgreSQL committed on the primary but its wait for the synchronous standby \
     was cancelled: not acknowledged (the events may be in the log; retrying with the same event ids is safe)";

/// Whether `error` is the [`UNREPLICATED`] refusal.
pub(crate) fn is_unreplicated(error: &Error) -> bool {
    matches!(error, Error::Storage(message) if message == UNREPLICATED)
}

/// A head made durable, with the recording time of its event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Durable {
    pub(crate) head: Head,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// One barrier row and the statement that writes it.
#[derive(Debug, Clone)]
pub(crate) struct Barrier {
    sql: String,
}

impl Barrier {
    /// A barrier with a row of its own.
    pub(crate) fn new() -> Barrier {
        Barrier { sql: statement(Uuid::now_v7()) }
    }

    /// Commits the barrier synchronously. The outer error: the server's
    /// refusal or a lost connection (whether it committed is unknown); the
    /// inner one: an answer that does not read as a head.
    pub(crate) async fn run(&self, client: &Client) -> Result<Result<Durable, Error>, tokio_postgres::Error> {
        let messages = client.simple_query(&self.sql).await?;
        Ok(durable_of(&messages))
    }
}

/// The barrier's statement for row `id` (a UUID: nothing to escape).
fn statement(id: Uuid) -> String {
    format!(
        "WITH head AS (SELECT position, hash, recorded_at_micros FROM opledger_log_head),
         made AS (
            INSERT INTO opledger_log_durable (barrier, position, hash, recorded_at_micros, made_at)
            SELECT '{id}', position, hash, recorded_at_micros, now() FROM head
            ON CONFLICT (barrier) DO UPDATE SET position = EXCLUDED.position, hash = EXCLUDED.hash,
                recorded_at_micros = EXCLUDED.recorded_at_micros, made_at = EXCLUDED.made_at
            RETURNING position, hash, recorded_at_micros)
         SELECT position, encode(hash, 'hex'), recorded_at_micros,
                pg_notify('opledger_log_appended', position || ':' || encode(hash, 'hex'))
         FROM made"
    )
}

/// The one row a barrier answers.
fn durable_of(messages: &[SimpleQueryMessage]) -> Result<Durable, Error> {
    let row = messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| Error::Storage("the durability barrier answered no row (is the head row missing?)".into()))?;
    let text = |index: usize| row.get(index).unwrap_or_default();
    let malformed = || Error::Storage("the durability barrier answered a head that does not parse".into());
    let position: u64 = text(0).parse().map_err(|_| malformed())?;
    let hash = Hash::from_hex(text(1)).ok_or_else(malformed)?;
    let recorded_at: i64 = text(2).parse().map_err(|_| malformed())?;
    Ok(Durable { head: Head { position, hash }, recorded_at: micros_to_time(recorded_at) })
}

/// Barrier rows not written for this long are removed when a log opens,
/// except the furthest one: rows of nodes and lanes gone, or idle.
pub(crate) const BARRIER_ROW_IDLE_MAX: &str = "1 hour";

/// Removes barrier rows idle past [`BARRIER_ROW_IDLE_MAX`], never the one
/// with the furthest head.
pub(crate) async fn remove_idle(client: &Client) -> Result<(), Error> {
    client
        .batch_execute(&format!(
            "DELETE FROM opledger_log_durable WHERE made_at < now() - interval '{BARRIER_ROW_IDLE_MAX}'
             AND position < (SELECT max(position) FROM opledger_log_durable)"
        ))
        .await
        .map_err(crate::log::postgres::connect::storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_names_its_row_and_notifies_the_head_digest_format() {
        let id = Uuid::now_v7();
        let sql = statement(id);
        assert!(sql.contains(&format!("'{id}'")));
        // `Head::digest` is `position:hexhash`, which the notification repeats.
        let head = Head { position: 7, hash: Hash([0xab; 32]) };
        assert_eq!(head.digest(), format!("7:{}", "ab".repeat(32)));
        assert!(sql.contains("position || ':' || encode(hash, 'hex')"));
    }
}
