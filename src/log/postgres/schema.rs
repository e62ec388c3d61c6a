//! The log's tables, created on first open, and the checks every open makes.
//!
//! - `opledger_log_events`: one row per event. `record` is the canonical
//!   record ([`crate::envelope::Envelope::encode`]), the same bytes the
//!   sled backend stores; `event_id`, `stream` and `stream_version` repeat
//!   what the record holds so that the database's unique constraints
//!   enforce idempotency and stream versions, and every read compares them
//!   with the record.
//! - `opledger_log_head`: one row, the head. Every append locks it (`FOR
//!   UPDATE`) in the transaction that inserts the events, so appends from
//!   every node are serialized by the database and commit order is
//!   position order.
//! - `opledger_restart_snapshot`: one row, a hint of where the ledger may
//!   start folding (never a fact).
//! - `opledger_documents`: small named documents every node shares (the
//!   API tokens' hashes).
//! - `opledger_log_append_speculative_v1(…)`: a speculative group, whole,
//!   in one call ([`APPEND_SPECULATIVE`]). Created, or replaced when its
//!   body differs, on every open, so a database a build before it created
//!   gets it too; the version in its name is the arguments' and the
//!   steps', so builds that differ in them can share a database.

use tokio_postgres::Client;

use crate::envelope::Hash;
use crate::error::Error;
use crate::log::postgres::connect::storage;

/// The layout this code reads and writes; another one is refused.
pub(crate) const SCHEMA_VERSION: i32 = 1;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS opledger_log_events (
    position BIGINT PRIMARY KEY CHECK (position > 0),
    event_id UUID NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    stream_version BIGINT NOT NULL CHECK (stream_version > 0),
    record BYTEA NOT NULL,
    UNIQUE (stream, stream_version)
);
CREATE TABLE IF NOT EXISTS opledger_log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    schema_version INTEGER NOT NULL,
    position BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    recorded_at_micros BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS opledger_restart_snapshot (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS opledger_documents (
    name TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL,
    version BIGINT NOT NULL
);
";

/// A speculative group (see `speculation.rs`) in one statement. Sent
/// outside `BEGIN`, it is a transaction of its own, committed when it
/// ends: the group costs one message and one answer. In order:
///
/// 1. bounds every lock wait of the call to `p_lock_wait_ms`
///    (`SPECULATIVE_LOCK_WAIT_MAX`): a wait that long means the group
///    missed;
/// 2. inserts the events, while the group it was staged on may still be
///    committing (the events table's unique constraints refuse an id or a
///    stream version already stored: the group missed);
/// 3. waits until the session of the speculative group it was staged on
///    (`p_awaited_key`, if any) released that group's advisory lock, which
///    it does once it moved the head: the two lock the head in the order
///    they were staged;
/// 4. locks the head (waiting for that group's commit), then moves it,
///    only from the head the group was staged on: a statement of its own,
///    so it reads the head as committed once the lock was granted. Any
///    other head sets `position` to NULL, which the column refuses (`23502`
///    on `opledger_log_head`): the call fails, the events roll back;
/// 5. queues the notification other nodes listen for (sent on commit);
/// 6. takes, for the session, the advisory lock of the lane's next group
///    (`p_next_key`), before it releases its own (`p_own_key`): a session
///    lock outlives the call's transaction, and the next group is staged
///    on this one only once this call answered.
///
/// Session locks are not released by a rollback: after a refused call the
/// lane releases them itself.
const APPEND_SPECULATIVE: &str = "
CREATE OR REPLACE FUNCTION opledger_log_append_speculative_v1(
    p_positions BIGINT[], p_ids UUID[], p_streams TEXT[], p_versions BIGINT[], p_records BYTEA[],
    p_lock_wait_ms BIGINT, p_own_key BIGINT, p_awaited_key BIGINT,
    p_from_position BIGINT, p_from_hash BYTEA,
    p_position BIGINT, p_hash BYTEA, p_recorded_at_micros BIGINT, p_digest TEXT, p_next_key BIGINT
) RETURNS VOID LANGUAGE plpgsql AS $$";

/// The function's signature, as `to_regprocedure` takes it.
const APPEND_SPECULATIVE_SIGNATURE: &str = "opledger_log_append_speculative_v1(bigint[], uuid[], text[], bigint[], \
     bytea[], bigint, bigint, bigint, bigint, bytea, bigint, bytea, bigint, text, bigint)";

/// The function's body, as `pg_proc.prosrc` holds it.
const APPEND_SPECULATIVE_BODY: &str = "
BEGIN
    PERFORM set_config('lock_timeout', p_lock_wait_ms || 'ms', true);
    INSERT INTO opledger_log_events (position, event_id, stream, stream_version, record)
        SELECT * FROM unnest(p_positions, p_ids, p_streams, p_versions, p_records);
    IF p_awaited_key IS NOT NULL THEN
        PERFORM pg_advisory_lock_shared(p_awaited_key);
        PERFORM pg_advisory_unlock_shared(p_awaited_key);
    END IF;
    PERFORM 1 FROM opledger_log_head FOR UPDATE;
    UPDATE opledger_log_head
        SET position = CASE WHEN position = p_from_position AND hash = p_from_hash THEN p_position END,
            hash = p_hash, recorded_at_micros = p_recorded_at_micros;
    PERFORM pg_notify('opledger_log_appended', p_digest);
    PERFORM pg_advisory_lock(p_next_key);
    PERFORM pg_advisory_unlock(p_own_key);
END
";

/// Creates what is missing, under a transaction-scoped advisory lock so
/// that nodes opening an empty database at once do not race.
pub(crate) async fn create(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(storage)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('opledger_log_schema'))", &[]).await.map_err(storage)?;
    tx.batch_execute(CREATE).await.map_err(storage)?;
    // Replaced only when it differs: replacing a function takes its
    // ownership, which a node's role may not have once another role made it.
    let stored: Option<String> = tx
        .query_opt("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)", &[&APPEND_SPECULATIVE_SIGNATURE])
        .await
        .map_err(storage)?
        .map(|row| row.get(0));
    if stored.as_deref() != Some(APPEND_SPECULATIVE_BODY) {
        tx.batch_execute(&format!("{APPEND_SPECULATIVE}{APPEND_SPECULATIVE_BODY}$$")).await.map_err(storage)?;
    }
    tx.execute(
        "INSERT INTO opledger_log_head (schema_version, position, hash, recorded_at_micros)
         VALUES ($1, 0, $2, $3) ON CONFLICT (singleton) DO NOTHING",
        &[&SCHEMA_VERSION, &Hash::GENESIS.0.as_slice(), &i64::MIN],
    )
    .await
    .map_err(storage)?;
    let version: i32 = tx.query_one("SELECT schema_version FROM opledger_log_head", &[]).await.map_err(storage)?.get(0);
    if version != SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "the database holds an opledger log of schema version {version}; this build reads version {SCHEMA_VERSION}"
        )));
    }
    tx.commit().await.map_err(storage)
}

/// An acknowledgement means the transaction committed; with
/// `synchronous_commit = off` PostgreSQL answers a commit before its WAL
/// is flushed, so an acknowledged event could be lost. Refused.
pub(crate) async fn check_durability(client: &Client) -> Result<(), Error> {
    let setting: String = client.query_one("SHOW synchronous_commit", &[]).await.map_err(storage)?.get(0);
    if setting == "off" {
        return Err(Error::Storage(
            "synchronous_commit is off for this connection: PostgreSQL would acknowledge a commit before it is \
             durable. Set it to on (or remote_apply/remote_write with a synchronous standby)"
                .into(),
        ));
    }
    Ok(())
}
