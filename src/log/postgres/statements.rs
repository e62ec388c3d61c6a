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

/// A speculative group's own advisory lock, taken when its transaction
/// opens and held until it ends: the group staged on it waits for it with
/// `AWAIT_GROUP` before it locks the head, so the two lock the head in the
/// order they were staged (see
/// [`crate::log::postgres::speculation::Chain::view`]).
const LOCK_GROUP: &str = "SELECT pg_advisory_xact_lock($1)";

/// Waits until the transaction holding the advisory lock `$1` ended.
const AWAIT_GROUP: &str = "SELECT pg_advisory_xact_lock_shared($1)";

/// The head as committed, without locking it: a speculative group's start.
const HEAD_UNLOCKED: &str = "SELECT position, hash, recorded_at_micros FROM opledger_log_head";

/// Moves the head only from the head the group was staged on. Sent after
/// the group's `HEAD` lock, as a statement of its own, so it reads the head
/// as committed once the lock was granted: in one statement, PostgreSQL
/// checks the new row's constraints on the version of its snapshot, before
/// it waits for the lock. Any other head sets `position` to NULL, which the
/// column refuses (`23502` on `opledger_log_head`), so the transaction, and
/// the events it inserted before the lock, roll back. A `WHERE` would only
/// match no row and let the `COMMIT` pipelined behind it store the events.
const MOVE_HEAD_FROM: &str = "UPDATE opledger_log_head
     SET position = CASE WHEN position = $4::bigint AND hash = $5::bytea THEN $1::bigint END,
         hash = $2, recorded_at_micros = $3";

/// Bounds how long a speculative group waits for a lock (see
/// [`crate::log::postgres::speculation::SPECULATIVE_LOCK_WAIT_MAX`]), for
/// its transaction only.
const SPECULATIVE_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', $1, true)";

/// The connection's server process, to end it when a commit's answer was
/// lost: `backend_start` tells it from a later process given the same pid.
const BACKEND: &str = "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()";

const NOTIFY: &str = "SELECT pg_notify('opledger_log_appended', $1)";

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
    /// Queues the notification other nodes listen for (sent on commit).
    notify = NOTIFY,
    head_unlocked = HEAD_UNLOCKED,
    move_head_from = MOVE_HEAD_FROM,
    speculative_lock_timeout = SPECULATIVE_LOCK_TIMEOUT,
    backend = BACKEND,
    lock_group = LOCK_GROUP,
    await_group = AWAIT_GROUP,
}
