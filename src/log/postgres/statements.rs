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

/// Moves the head, and queues the notification other nodes listen for
/// (`$4`, the new head's digest; sent on commit), in one statement.
const MOVE_HEAD: &str = "UPDATE opledger_log_head SET position = $1, hash = $2, recorded_at_micros = $3
     RETURNING pg_notify('opledger_log_appended', $4)";

/// The head as committed, without locking it: a speculative group's start.
const HEAD_UNLOCKED: &str = "SELECT position, hash, recorded_at_micros FROM opledger_log_head";

/// A speculative group, whole: see the function in
/// [`crate::log::postgres::schema`].
const APPEND_SPECULATIVE: &str =
    "SELECT opledger_log_append_speculative_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Takes a speculative group's advisory lock for the session (outside any
/// transaction): a group staged on it waits for it before locking the head.
const HOLD_KEY: &str = "SELECT pg_advisory_lock($1)";

/// The connection's server process, to end it when a commit's answer was
/// lost: `backend_start` tells it from a later process given the same pid.
const BACKEND: &str = "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// The statements, each named once: the struct of prepared statements and
/// the one round trip that prepares them all.
macro_rules! statements {
    ($($(#[$doc:meta])* $field:ident = $sql:ident,)*) => {
        /// Valid on the connection that prepared them only.
        pub(crate) struct Statements {
            $($(#[$doc])* pub(crate) $field: Statement,)*
        }

        impl Statements {
            /// Prepares all of them, pipelined in one round trip.
            pub(crate) async fn prepare(client: &Client) -> Result<Statements, Error> {
                let ($($field,)*) = tokio::try_join!($(client.prepare($sql),)*).map_err(storage)?;
                Ok(Statements { $($field,)* })
            }
        }
    };
}

statements! {
    begin = BEGIN,
    /// Locks the head row and reads it.
    head = HEAD,
    /// Which of the group's event ids are stored, with their records.
    ids = IDS,
    /// Each named stream's stored version.
    versions = VERSIONS,
    insert = INSERT,
    move_head = MOVE_HEAD,
    head_unlocked = HEAD_UNLOCKED,
    backend = BACKEND,
    append_speculative = APPEND_SPECULATIVE,
    hold_key = HOLD_KEY,
}
