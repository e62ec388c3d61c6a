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

/// Opens a speculative group's transaction, after `BEGIN`: bounds how long
/// it waits for a lock (`$1`, see
/// [`crate::log::postgres::speculation::SPECULATIVE_LOCK_WAIT_MAX`]), and
/// takes the group's own advisory lock (`$2`), held until it ends: the
/// group staged on it waits for it with `AWAIT_GROUP_AND_LOCK_HEAD` before it locks the
/// head, so the two lock the head in the order they were staged (see
/// [`crate::log::postgres::speculation::Chain::view`]). The lock is the
/// group's own key, which nothing else holds when it is taken.
const OPEN_GROUP: &str = "SELECT set_config('lock_timeout', $1, true), pg_advisory_xact_lock($2)";

/// Waits until the transaction holding the advisory lock `$1` ended, then
/// locks the head, in one statement: the scan below `FOR UPDATE` computes
/// its output (the wait) before the row is locked, so the head is asked
/// for only once the group before ended. (After a wait for the row lock
/// the output is computed again on the row's new version: the shared lock,
/// held already, is taken once more.)
const AWAIT_GROUP_AND_LOCK_HEAD: &str =
    "SELECT pg_advisory_xact_lock_shared($1), position FROM opledger_log_head FOR UPDATE";

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
/// The notification as in `MOVE_HEAD`.
const MOVE_HEAD_FROM: &str = "UPDATE opledger_log_head
     SET position = CASE WHEN position = $5::bigint AND hash = $6::bytea THEN $1::bigint END,
         hash = $2, recorded_at_micros = $3
     RETURNING pg_notify('opledger_log_appended', $4)";

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
    move_head_from = MOVE_HEAD_FROM,
    backend = BACKEND,
    open_group = OPEN_GROUP,
    await_group_and_lock_head = AWAIT_GROUP_AND_LOCK_HEAD,
}
