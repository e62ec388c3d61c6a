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

/// Creates what is missing, under a transaction-scoped advisory lock so
/// that nodes opening an empty database at once do not race.
pub(crate) async fn create(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(storage)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('opledger_log_schema'))", &[]).await.map_err(storage)?;
    tx.batch_execute(CREATE).await.map_err(storage)?;
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
