//! Reads of the log's tables, and the [`Backend`] over them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::envelope::{Envelope, Hash, StreamId};
use crate::error::Error;
use crate::log::backend::Backend;
use crate::log::postgres::connect::storage;
use crate::log::postgres::PostgresBackend;
use crate::log::Head;

const EVENT_COLUMNS: &str = "position, event_id, stream, stream_version, record";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Decodes a row and checks that the columns the database's constraints
/// use say what the record says: a row whose lookups would find another
/// event than the one it holds is corruption.
pub(crate) fn row_event(row: &Row) -> Result<Envelope, Error> {
    let position = to_u64(row.get(0));
    let event_id: Uuid = row.get(1);
    let stream: &str = row.get(2);
    let stream_version = to_u64(row.get(3));
    let record: &[u8] = row.get(4);
    let event = Envelope::decode(position, record)?;
    if event.id != event_id || event.stream.as_str() != stream || event.stream_version != stream_version {
        return Err(Error::corrupt(position, "the row's event id, stream or version differ from its record"));
    }
    Ok(event)
}

pub(crate) fn row_head(row: &Row) -> Result<Head, Error> {
    let position = to_u64(row.get(0));
    let hash: &[u8] = row.get(1);
    let hash: [u8; 32] =
        hash.try_into().map_err(|_| Error::corrupt(position, "the stored head hash is not 32 bytes"))?;
    Ok(Head { position, hash: Hash(hash) })
}

pub(crate) fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The stored head and the recording time of its event. `query_typed`
/// here and in [`events`]: parsed, bound and run in one round trip, where
/// `query` waits for a Parse first (the decider over a shared log makes
/// both reads every round).
pub(crate) async fn stored_head(client: &Client) -> Result<(Head, DateTime<Utc>), Error> {
    let row = client
        .query_typed_one("SELECT position, hash, recorded_at_micros FROM opledger_log_head", &[])
        .await
        .map_err(storage)?;
    Ok((row_head(&row)?, micros_to_time(row.get(2))))
}

pub(crate) async fn last_position(client: &Client) -> Result<u64, Error> {
    let row = client.query_one("SELECT max(position) FROM opledger_log_events", &[]).await.map_err(storage)?;
    Ok(row.get::<_, Option<i64>>(0).map_or(0, to_u64))
}

pub(crate) async fn events(client: &Client, from: u64, count: usize) -> Result<Vec<Envelope>, Error> {
    let end = from.saturating_add(count as u64);
    let rows = client
        .query_typed(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM opledger_log_events WHERE position >= $1 AND position < $2 ORDER BY position"
            ),
            &[(&to_i64(from), Type::INT8), (&to_i64(end), Type::INT8)],
        )
        .await
        .map_err(storage)?;
    rows.iter().map(row_event).collect()
}

/// A statement parameter owned by the work sent to the backend's runtime.
type Parameter = Box<dyn ToSql + Send + Sync>;

impl PostgresBackend {
    /// One statement that only reads, on a read connection: its rows
    /// (read once more if that connection broke, see `Readers::read`).
    /// Spawned on the backend's runtime and waited for, bounded
    /// (`PostgresBackend::call`).
    fn rows(&self, sql: &'static str, parameters: Vec<Parameter>) -> Result<Vec<Row>, Error> {
        let shared = Arc::clone(&self.shared);
        self.call(async move {
            let parameters = &parameters;
            shared
                .readers
                .read(|client| async move { client.query(sql, &borrowed(parameters)).await.map_err(storage) })
                .await
        })
    }

    /// One statement on a read connection: the rows it changed.
    fn execute(&self, sql: &'static str, parameters: Vec<Parameter>) -> Result<u64, Error> {
        let shared = Arc::clone(&self.shared);
        self.call(async move {
            let client = shared.readers.client().await?;
            client.execute(sql, &borrowed(&parameters)).await.map_err(storage)
        })
    }
}

fn borrowed(parameters: &[Parameter]) -> Vec<&(dyn ToSql + Sync)> {
    parameters.iter().map(|parameter| parameter.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl Backend for PostgresBackend {
    fn events(&self, from: u64, count: usize) -> Result<Vec<Envelope>, Error> {
        let shared = Arc::clone(&self.shared);
        self.call(async move { shared.readers.read(|client| async move { events(&client, from, count).await }).await })
    }

    fn event(&self, position: u64) -> Result<Option<Envelope>, Error> {
        Ok(self.events(position, 1)?.into_iter().next())
    }

    fn stream_positions(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<(u64, u64)>, Error> {
        let rows = self.rows(
            "SELECT stream_version, position FROM opledger_log_events
             WHERE stream = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3",
            vec![Box::new(stream.as_str().to_owned()), Box::new(to_i64(from_version)), Box::new(to_i64(limit as u64))],
        )?;
        Ok(rows.iter().map(|row| (to_u64(row.get(0)), to_u64(row.get(1)))).collect())
    }

    fn stream_version_at_most(&self, stream: &StreamId, head: u64) -> Result<u64, Error> {
        let rows = self.rows(
            "SELECT max(stream_version) FROM opledger_log_events WHERE stream = $1 AND position <= $2",
            vec![Box::new(stream.as_str().to_owned()), Box::new(to_i64(head))],
        )?;
        Ok(rows.first().and_then(|row| row.get::<_, Option<i64>>(0)).map_or(0, to_u64))
    }

    fn position_of_id(&self, id: &Uuid) -> Result<Option<u64>, Error> {
        let rows = self.rows("SELECT position FROM opledger_log_events WHERE event_id = $1", vec![Box::new(*id)])?;
        Ok(rows.first().map(|row| to_u64(row.get(0))))
    }

    fn restart_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let rows = self.rows("SELECT position, bytes FROM opledger_restart_snapshot", Vec::new())?;
        Ok(rows.first().map(|row| (to_u64(row.get(0)), row.get::<_, Vec<u8>>(1))))
    }

    fn store_restart_snapshot(&self, position: u64, bytes: &[u8]) -> Result<(), Error> {
        self.execute(
            "INSERT INTO opledger_restart_snapshot (position, bytes) VALUES ($1, $2)
             ON CONFLICT (singleton) DO UPDATE SET position = EXCLUDED.position, bytes = EXCLUDED.bytes
             WHERE opledger_restart_snapshot.position < EXCLUDED.position",
            vec![Box::new(to_i64(position)), Box::new(bytes.to_vec())],
        )
        .map(|_| ())
    }

    /// Every read compares the row's `event_id`, `stream` and
    /// `stream_version` with its record ([`row_event`]), and the database's
    /// unique constraints on those columns make each lookup find exactly
    /// that row: an event the walk read is found by both lookups.
    fn index_failure(&self, _envelope: &Envelope) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// One statement, one snapshot: the rows counted and the head read
    /// together must agree.
    fn index_count_failure(&self) -> Result<Option<String>, Error> {
        let rows = self.rows(
            "SELECT (SELECT count(*) FROM opledger_log_events), (SELECT position FROM opledger_log_head)",
            Vec::new(),
        )?;
        let Some(row) = rows.first() else { return Ok(Some("the head row is missing".into())) };
        let (rows, head): (i64, i64) = (row.get(0), row.get(1));
        Ok((rows != head).then(|| format!("the table holds {rows} events for a head at position {head}")))
    }

    fn latest_head(&self) -> Result<Head, Error> {
        let shared = Arc::clone(&self.shared);
        self.call_briefly("a read of the head", async move {
            let (head, _) = shared.readers.read(|client| async move { stored_head(&client).await }).await?;
            shared.publish(head);
            Ok(head)
        })
    }

    fn document(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, Error> {
        let rows = self
            .rows("SELECT bytes, version FROM opledger_documents WHERE name = $1", vec![Box::new(name.to_owned())])?;
        Ok(rows.first().map(|row| (row.get::<_, Vec<u8>>(0), to_u64(row.get(1)))))
    }

    fn replace_document(&self, name: &str, bytes: &[u8], expected: Option<u64>) -> Result<bool, Error> {
        let (name, bytes): (Parameter, Parameter) = (Box::new(name.to_owned()), Box::new(bytes.to_vec()));
        let changed = match expected {
            None => self.execute(
                "INSERT INTO opledger_documents (name, bytes, version) VALUES ($1, $2, 1) ON CONFLICT (name) DO NOTHING",
                vec![name, bytes],
            )?,
            Some(version) => self.execute(
                "UPDATE opledger_documents SET bytes = $2, version = version + 1 WHERE name = $1 AND version = $3",
                vec![name, bytes, Box::new(to_i64(version))],
            )?,
        };
        Ok(changed == 1)
    }

    fn directory(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn location(&self) -> String {
        self.shared.location.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn unreachable(&self) -> Option<String> {
        self.shared.unreachable()
    }

    fn writes_refused(&self) -> Option<String> {
        self.shared.writes_refused.lately(std::time::Instant::now())
    }

    fn hold_head(&self) -> Result<Option<crate::log::HeldHead>, Error> {
        self.hold().map(Some)
    }

    fn close(&self) {
        if let Ok(mut holds) = self.holds.lock() {
            holds.take();
        }
        self.shared.close();
    }
}
