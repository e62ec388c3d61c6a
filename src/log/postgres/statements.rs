//! The writer's statements, prepared once per connection. A statement
//! given as text is prepared on every use (tokio-postgres sends Parse and
//! Describe and waits for them before it executes), which doubled the
//! round trips of every group commit.

use tokio_postgres::{Client, Statement};

use crate::error::Error;
use crate::log::postgres::connect::storage;

const BEGIN: &str = "BEGIN";

const HEAD: &str = "SELECT position, hash, recorded_at_micros FROM opledger_log_head FOR UPDATE";

const IDS: &str = "SELECT event_id, position, record FROM opledger_log_events WHERE event_id = ANY($1)";

const VERSIONS: &str =
    "SELECT s.stream, (SELECT max(e.stream_version) FROM opledger_log_events e WHERE e.stream = s.stream)
     FROM unnest($1::text[]) AS s(stream)";

const INSERT: &str = "INSERT INTO opledger_log_events (position, event_id, stream, stream_version, record)
     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::bytea[])";

const MOVE_HEAD: &str = "UPDATE opledger_log_head SET position = $1, hash = $2, recorded_at_micros = $3";

const NOTIFY: &str = "SELECT pg_notify('opledger_log_appended', $1)";

/// Valid on the connection that prepared them only.
pub(crate) struct Statements {
    pub(crate) begin: Statement,
    /// Locks the head row and reads it.
    pub(crate) head: Statement,
    /// Which of the group's event ids are stored, with their records.
    pub(crate) ids: Statement,
    /// Each named stream's stored version.
    pub(crate) versions: Statement,
    pub(crate) insert: Statement,
    pub(crate) move_head: Statement,
    /// Queues the notification other nodes listen for (sent on commit).
    pub(crate) notify: Statement,
}

impl Statements {
    /// Prepares all of them, pipelined in one round trip.
    pub(crate) async fn prepare(client: &Client) -> Result<Statements, Error> {
        let (begin, head, ids, versions, insert, move_head, notify) = tokio::try_join!(
            client.prepare(BEGIN),
            client.prepare(HEAD),
            client.prepare(IDS),
            client.prepare(VERSIONS),
            client.prepare(INSERT),
            client.prepare(MOVE_HEAD),
            client.prepare(NOTIFY),
        )
        .map_err(storage)?;
        Ok(Statements { begin, head, ids, versions, insert, move_head, notify })
    }
}
