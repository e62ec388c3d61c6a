//! One connection of the writer, with its prepared statements, and the
//! pipelined steps of a group on it. A group staged on the locked head:
//!
//! 1. [`Lane::lock`]: `BEGIN`, the head `FOR UPDATE`, and the prefetch of
//!    what staging needs, sent together. The server runs them in order, so
//!    the prefetch reads what was committed before the lock was granted.
//! 2. [`Lane::commit`]: the insert, the head's move with its notification,
//!    and `COMMIT`, sent together: the head stays locked for one round
//!    trip (plus the commit's flush) after staging, not three.
//!
//! A speculative group (staged on the head its writer expects) is one
//! statement, a call of the schema's `opledger_log_append_speculative_v1`
//! ([`crate::log::postgres::schema`]) outside any `BEGIN`: the server runs
//! it as a transaction of its own, committed when the statement ends, so
//! the whole group costs one message and one answer. Before it is sent,
//! the lane's session holds the group's advisory lock ([`Speculative::key`]): taken
//! by the call of the lane's group before (its last step), or pipelined
//! with the group's reads ([`Lane::read_unlocked`]).
//!
//! tokio-postgres sends a request when its future is first polled and
//! answers requests in order, so futures joined together are one round
//! trip (its documented pipelining). An error in one statement aborts the
//! transaction; the `COMMIT` behind it then ends it as a rollback.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::envelope::{Envelope, StreamId};
use crate::error::Error;
use crate::log::postgres::connect::{self, storage, Heard};
use crate::log::postgres::reads::{micros_to_time, row_head};
use crate::log::postgres::speculation::{self, SPECULATIVE_LOCK_WAIT_MAX};
use crate::log::postgres::statements::Statements;
use crate::log::postgres::{Shared, QUERY_WAIT_MAX};
use crate::log::staging::{Committed, Group, Request};
use crate::log::Head;

/// One writer connection and what was prepared on it.
pub(crate) struct Lane {
    shared: Arc<Shared>,
    client: Option<Client>,
    /// Prepared on `client`; dropped with it.
    statements: Option<Statements>,
    /// The server process of `client` (its pid and start time), read once
    /// it connected: the process to end when a commit's answer was lost.
    backend: Option<(i32, String)>,
    /// A process [`Lane::position_of`] has yet to see ended (kept across
    /// its attempts, which reconnect).
    ended: Option<(i32, String)>,
    /// The advisory lock this lane's session holds for its next
    /// speculative group (taken by the group before it), if any.
    held_key: Option<i64>,
    /// The session may hold advisory locks: released before the lane next
    /// waits for appends a while, or locks the head.
    holds_locks: bool,
    /// A `BEGIN` was sent and no `COMMIT` or `ROLLBACK` after it.
    transaction_open: bool,
    /// The current step connected anew rather than using a connection
    /// an earlier step left open (see [`Lane::on_kept_connection`]).
    connected_in_step: bool,
    /// Notices of this connection only: a cancelled wait for the standby
    /// is charged to the commit it ended.
    pub(crate) heard: Arc<Heard>,
}

/// What a group's transaction found stored when it locked the head.
pub(crate) struct Prefetched {
    pub(crate) head: Head,
    pub(crate) head_recorded_at: DateTime<Utc>,
    pub(crate) versions: HashMap<StreamId, u64>,
    ids: HashMap<Uuid, (u64, DateTime<Utc>)>,
}

impl Prefetched {
    /// From the rows of the head, ids and versions statements.
    fn read(
        head_row: &tokio_postgres::Row,
        id_rows: &[tokio_postgres::Row],
        version_rows: &[tokio_postgres::Row],
    ) -> Result<Prefetched, Error> {
        let mut prefetched = Prefetched {
            head: row_head(head_row)?,
            head_recorded_at: micros_to_time(head_row.get(2)),
            versions: HashMap::new(),
            ids: HashMap::new(),
        };
        prefetched.add(id_rows, version_rows)?;
        Ok(prefetched)
    }

    /// What a read found (or what a writer knows without one): the head,
    /// and stored stream versions and event ids (with where and when they
    /// were recorded).
    pub(crate) fn found(
        head: Head,
        head_recorded_at: DateTime<Utc>,
        versions: HashMap<StreamId, u64>,
        ids: HashMap<Uuid, (u64, DateTime<Utc>)>,
    ) -> Prefetched {
        Prefetched { head, head_recorded_at, versions, ids }
    }

    /// Adds the rows of the ids and versions statements.
    fn add(&mut self, id_rows: &[tokio_postgres::Row], version_rows: &[tokio_postgres::Row]) -> Result<(), Error> {
        for row in version_rows {
            let stream = StreamId::new(row.get::<_, String>(0))?;
            let version = row.get::<_, Option<i64>>(1).map_or(0, |v| u64::try_from(v).unwrap_or(0));
            self.versions.insert(stream, version);
        }
        for row in id_rows {
            let position = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
            let event = Envelope::decode(position, row.get(2))?;
            self.ids.insert(row.get(0), (position, event.recorded_at));
        }
        Ok(())
    }
}

impl Committed for Prefetched {
    fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        self.versions.get(stream).copied().ok_or_else(|| Error::Storage(format!("stream {stream} was not prefetched")))
    }

    fn position_of_id(&self, id: &Uuid) -> Result<Option<u64>, Error> {
        Ok(self.ids.get(id).map(|(position, _)| *position))
    }

    fn recorded_at(&self, position: u64) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.ids.values().find(|(p, _)| *p == position).map(|(_, at)| *at))
    }
}

impl Lane {
    /// A lane that connects on first use, or starts on `opened` (a
    /// connection and the notices its driver hears).
    pub(crate) fn new(shared: Arc<Shared>, opened: Option<(Client, Arc<Heard>)>) -> Lane {
        let (client, heard) = match opened {
            Some((client, heard)) => (Some(client), heard),
            None => (None, Arc::new(Heard::default())),
        };
        Lane {
            shared,
            client,
            statements: None,
            backend: None,
            ended: None,
            held_key: None,
            holds_locks: false,
            transaction_open: false,
            connected_in_step: false,
            heard,
        }
    }

    /// Forgets the connection: the next step connects anew.
    pub(crate) fn disconnect(&mut self) {
        self.client = None;
        self.statements = None;
        self.backend = None;
        self.held_key = None;
        self.holds_locks = false;
        self.transaction_open = false;
    }

    /// The advisory lock the session holds for the next speculative
    /// group, if it does on a live connection; the group takes it over.
    pub(crate) fn take_held_key(&mut self) -> Option<i64> {
        let key = self.held_key.take()?;
        match self.client.as_ref() {
            Some(client) if !client.is_closed() => Some(key),
            _ => None,
        }
    }

    /// Whether the last step ran on a connection an earlier step had left
    /// open: one that fails as unavailable then broke while the lane was
    /// idle (a database restarted, failed over, or went silent), unnoticed
    /// until now. Not whether the client already sees it closed: the
    /// failed statement's answer can come before the connection's driver
    /// has ended. Nothing the step sent can commit (see
    /// [`Lane::end_previous_session`]), so the group may be sent again on
    /// a new connection.
    pub(crate) fn on_kept_connection(&self) -> bool {
        !self.connected_in_step
    }

    /// Whether the session may hold advisory locks (see
    /// [`Lane::release`]).
    pub(crate) fn holds_locks(&self) -> bool {
        self.holds_locks
    }

    /// The connection and its prepared statements, reconnecting and
    /// preparing when needed.
    async fn connection(&mut self) -> Result<(&Client, &Statements), Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.disconnect();
            self.connected_in_step = true;
            // Bounded: a server that accepts and never answers (and a
            // connection string without `connect_timeout`) must not hold
            // the group's appends forever.
            let connecting = connect::connect(&self.shared.config, Arc::clone(&self.heard), None);
            let client = tokio::time::timeout(QUERY_WAIT_MAX, connecting).await.map_err(|_| {
                Error::Unavailable(format!(
                    "PostgreSQL did not accept a connection within {} s",
                    QUERY_WAIT_MAX.as_secs()
                ))
            })??;
            self.client = Some(client);
        }
        if self.statements.is_none() {
            let client = self.client.as_ref().ok_or(Error::Closed)?;
            let statements = Statements::prepare(client).await?;
            let backend = client.query_opt(&statements.backend, &[]).await.map_err(storage)?;
            self.backend = backend.map(|row| (row.get(0), row.get(1)));
            self.statements = Some(statements);
        }
        match (self.client.as_ref(), self.statements.as_ref()) {
            (Some(client), Some(statements)) => Ok((client, statements)),
            _ => Err(Error::Closed),
        }
    }

    /// The connection a step before used: the one whose transaction it
    /// opened, or whose session holds the group's advisory lock. Never a
    /// new one: statements sent on a new connection would run outside that
    /// transaction, each committed on its own, and a new session holds no
    /// lock. A transaction whose connection broke ended without storing
    /// anything.
    fn same_connection(&self) -> Result<(&Client, &Statements), Error> {
        match (self.client.as_ref(), self.statements.as_ref()) {
            (Some(client), Some(statements)) if !client.is_closed() => Ok((client, statements)),
            _ => Err(Error::Unavailable(
                "the connection to PostgreSQL broke before the commit was sent: nothing was appended".into(),
            )),
        }
    }

    /// Opens the group's transaction, locks the head (waiting for any other
    /// holder to commit) and reads what staging needs, in one round trip.
    /// On an error the transaction is rolled back.
    pub(crate) async fn lock(&mut self, batch: &[Request]) -> Result<Prefetched, Error> {
        let locked = self.lock_and_prefetch(batch).await;
        if locked.is_err() {
            self.release();
        }
        locked
    }

    async fn lock_and_prefetch(&mut self, batch: &[Request]) -> Result<Prefetched, Error> {
        self.connected_in_step = false;
        if self.holds_locks {
            // Sent ahead of the `BEGIN`, in order: one round trip still.
            self.release();
        }
        // Connected first: a reconnection forgets what the session held.
        self.connection().await?;
        self.transaction_open = true;
        let (client, statements) = self.same_connection()?;
        let begin = async { client.execute(&statements.begin, &[]).await.map_err(storage) };
        let head_query = async { client.query_one(&statements.head, &[]).await.map_err(storage) };
        // Each awaited whole, and the first error in the order sent is
        // the one told: the statements behind a refused one fail only with
        // "current transaction is aborted" (25P02).
        let (began, head_row, stored) = tokio::join!(begin, head_query, stored(client, statements, batch));
        began?;
        let head_row = head_row?;
        let (id_rows, version_rows) = stored?;
        Prefetched::read(&head_row, &id_rows, &version_rows)
    }

    /// Takes a speculative group's advisory lock `key`, unless `held` (the
    /// group before took it, see [`Lane::take_held_key`]), and reads the
    /// head as committed, without locking it, and what staging needs, in
    /// one round trip. On an error the lock is released.
    pub(crate) async fn read_unlocked(&mut self, batch: &[Request], key: i64, held: bool) -> Result<Prefetched, Error> {
        let read = self.hold_and_read(batch, key, held).await;
        if read.is_err() {
            self.release();
        }
        read
    }

    async fn hold_and_read(&mut self, batch: &[Request], key: i64, held: bool) -> Result<Prefetched, Error> {
        self.connected_in_step = false;
        // A held key is this connection's: never a new one. Connected
        // first: a reconnection forgets what the session held.
        if !held {
            self.connection().await?;
        }
        self.holds_locks = true;
        let (client, statements) = self.same_connection()?;
        let open = async {
            if !held {
                client.execute(&statements.hold_key, &[&key]).await.map_err(storage)?;
            }
            Ok::<(), Error>(())
        };
        let head_query = async { client.query_one(&statements.head_unlocked, &[]).await.map_err(storage) };
        // The first error in the order sent is the one told (see `lock_and_prefetch`).
        let (opened, head_row, stored) = tokio::join!(open, head_query, stored(client, statements, batch));
        opened?;
        let head_row = head_row?;
        let (id_rows, version_rows) = stored?;
        Prefetched::read(&head_row, &id_rows, &version_rows)
    }

    /// Reads, in the transaction [`Lane::lock`] opened, what staging needs
    /// for `batch` besides what `prefetched` holds (a held head's append,
    /// known only once the lock was held). On an error the transaction is
    /// rolled back.
    pub(crate) async fn prefetch(&mut self, prefetched: &mut Prefetched, batch: &[Request]) -> Result<(), Error> {
        let read = self.prefetch_more(prefetched, batch).await;
        if read.is_err() {
            self.release();
        }
        read
    }

    async fn prefetch_more(&mut self, prefetched: &mut Prefetched, batch: &[Request]) -> Result<(), Error> {
        let (client, statements) = self.same_connection()?;
        let (id_rows, version_rows) = stored(client, statements, batch).await?;
        prefetched.add(&id_rows, &version_rows)
    }

    /// Ends the open transaction, if any, and releases the session's
    /// advisory locks, if it may hold some, without waiting for the answer:
    /// the head lock goes as soon as the server reads it, a group staged on
    /// this lane's stops waiting for it, and this connection's next
    /// statements queue behind.
    pub(crate) fn release(&mut self) {
        let text = match (self.transaction_open, self.holds_locks) {
            (true, true) => "ROLLBACK; SELECT pg_advisory_unlock_all()",
            (true, false) => "ROLLBACK",
            (false, true) => "SELECT pg_advisory_unlock_all()",
            (false, false) => return,
        };
        self.held_key = None;
        self.holds_locks = false;
        self.transaction_open = false;
        let Some(client) = self.client.as_ref() else { return };
        if client.is_closed() {
            return;
        }
        let release = std::pin::pin!(client.batch_execute(text));
        send_now(release);
    }

    /// Inserts the group's events, moves the head, queues the notification
    /// and commits, in one round trip. `Err` of the outer result: the
    /// statements failed before `COMMIT` (nothing stored, the transaction
    /// ended). `Ok(Err)`: the commit's own answer, which may have been lost.
    ///
    /// A [`Speculative`] group, whose head was not locked when it was
    /// staged, inserts first; then waits for the speculative group it was
    /// staged on to move the head, locks the head, and moves it only from
    /// the head it was staged on, else nothing is stored and the answer is
    /// [`Refused::Missed`].
    pub(crate) async fn commit(
        &mut self,
        group: &Group,
        speculative: Option<Speculative>,
    ) -> Result<Result<(), tokio_postgres::Error>, Refused> {
        match speculative {
            Some(speculative) => self.commit_speculative(group, speculative).await,
            None => self.commit_locked(group).await,
        }
    }

    /// A group on the head [`Lane::lock`] locked, in its transaction.
    async fn commit_locked(&mut self, group: &Group) -> Result<Result<(), tokio_postgres::Error>, Refused> {
        self.transaction_open = false;
        self.connected_in_step = false;
        let (client, statements) = self.same_connection().map_err(Refused::Failed)?;
        let rows = Rows::of(group);
        let digest = group.head.digest();
        let position = group.head.position as i64;
        let hash = group.head.hash.0.as_slice();
        let recorded_at = group.last_recorded_at.timestamp_micros();
        let head: [&(dyn ToSql + Sync); 4] = [&position, &hash, &recorded_at, &digest];
        let row_parameters = rows.parameters();
        // Every statement's future is created here and joined below, so
        // all are sent on the first poll, in this order: a statement
        // awaited before the next is built would reach the server after
        // the `COMMIT`.
        let insert = client.execute(&statements.insert, &row_parameters);
        let move_head = client.execute(&statements.move_head, &head);
        // A simple query, as `Transaction::commit` sends it (and as the
        // tests' fault proxy recognises it).
        let commit = client.batch_execute("COMMIT");
        let (inserted, moved, committed) = tokio::join!(insert, move_head, commit);
        if let Err(error) = inserted.and(moved) {
            if error.as_db_error().is_some() {
                // The server refused a statement, so the `COMMIT` behind it
                // rolled the transaction back.
                return Err(refusal(error, false));
            }
            // The connection broke: the `COMMIT` may have gone through.
            return Ok(Err(error));
        }
        Ok(committed)
    }

    /// A speculative group: one call, committed when it ends. The
    /// session holds `speculative.key` (see [`Lane::read_unlocked`]); the
    /// call takes `speculative.next_key` for the lane's next group and
    /// releases its own.
    async fn commit_speculative(
        &mut self,
        group: &Group,
        speculative: Speculative,
    ) -> Result<Result<(), tokio_postgres::Error>, Refused> {
        self.connected_in_step = false;
        let (client, statements) = self.same_connection().map_err(Refused::Failed)?;
        let rows = Rows::of(group);
        let [positions, ids, streams, versions, records] = rows.parameters();
        let from_position = speculative.from.position as i64;
        let from_hash = speculative.from.hash.0.as_slice();
        let position = group.head.position as i64;
        let hash = group.head.hash.0.as_slice();
        let recorded_at = group.last_recorded_at.timestamp_micros();
        let digest = group.head.digest();
        let parameters: [&(dyn ToSql + Sync); 15] = [
            positions,
            ids,
            streams,
            versions,
            records,
            &SPECULATIVE_LOCK_WAIT_MS,
            &speculative.key,
            &speculative.awaits,
            &from_position,
            &from_hash,
            &position,
            &hash,
            &recorded_at,
            &digest,
            &speculative.next_key,
        ];
        match client.execute(&statements.append_speculative, &parameters).await {
            Ok(_) => {
                self.held_key = Some(speculative.next_key);
                Ok(Ok(()))
            }
            Err(error) if error.as_db_error().is_some() => {
                // Refused: the call's transaction rolled back, but the
                // session's locks stay until released.
                self.release();
                Err(refusal(error, true))
            }
            // The connection broke: the call may have committed.
            Err(error) => Ok(Err(error)),
        }
    }

    /// Where the group's first event is stored, on a fresh connection,
    /// once no transaction holds the head row: how a commit whose answer
    /// was lost is resolved. A commit the server is still carrying out (its
    /// WAL flush, its wait for a synchronous standby) holds the lock its
    /// group took, and would become visible after a look that did not wait.
    pub(crate) async fn position_of(&mut self, id: Uuid) -> Result<Option<u64>, Error> {
        self.end_previous_session().await?;
        let (client, _) = self.connection().await?;
        client.execute("SELECT 1 FROM opledger_log_head FOR SHARE", &[]).await.map_err(storage)?;
        let row = client
            .query_opt("SELECT position FROM opledger_log_events WHERE event_id = $1", &[&id])
            .await
            .map_err(storage)?;
        Ok(row.map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
    }

    /// Connects anew and ends the server process of the connection before
    /// (if it still runs), waiting until it is gone: what its session held
    /// (the head's lock, advisory locks, an open transaction) is released,
    /// and nothing it was sent can still commit. A connection that broke
    /// on the client's side may still be alive on the server: a group
    /// waiting there for the head's lock would commit later. The process
    /// to end is kept across attempts, which reconnect. The caller bounds
    /// the wait.
    pub(crate) async fn end_previous_session(&mut self) -> Result<(), Error> {
        if self.ended.is_none() {
            self.ended = self.backend.take();
        }
        self.disconnect();
        let ended = self.ended.clone();
        let (client, _) = self.connection().await?;
        if let Some((pid, started)) = &ended {
            end_backend(client, *pid, started).await?;
        }
        self.ended = None;
        Ok(())
    }

    /// Warnings that a wait for the synchronous standby was cancelled, so
    /// far on this lane's connections.
    pub(crate) fn replication_waits_cancelled(&self) -> u64 {
        self.heard.replication_waits_cancelled.load(Ordering::SeqCst)
    }
}

/// How long a speculative call's lock waits may last, as the call takes it.
const SPECULATIVE_LOCK_WAIT_MS: i64 = SPECULATIVE_LOCK_WAIT_MAX.as_millis() as i64;

/// A group staged on the head its writer expects, not on a locked one.
pub(crate) struct Speculative {
    /// The head it was staged on: the only one it may move the head from.
    pub(crate) from: Head,
    /// Its advisory lock, which the session holds: a group staged on this
    /// one waits for it before it locks the head.
    pub(crate) key: i64,
    /// The advisory lock of the speculative group in flight it was staged
    /// on, if any ([`speculation::Chain::view`]).
    pub(crate) awaits: Option<i64>,
    /// The advisory lock of the lane's next group, taken by this one's call.
    pub(crate) next_key: i64,
}

/// What a refused statement means for the group; the transaction ended
/// (or the connection broke) without storing anything.
fn refusal(error: tokio_postgres::Error, speculative: bool) -> Refused {
    match error.as_db_error() {
        Some(refused) if speculative && speculation::missed(refused) => Refused::Missed(storage(error)),
        _ => Refused::Failed(storage(error)),
    }
}

/// How a group's statements were refused; either way nothing is stored.
pub(crate) enum Refused {
    /// A speculative group found the head moved, or waited too long for it:
    /// stage the appends again on the locked head.
    Missed(Error),
    Failed(Error),
}

/// Pause between looks at whether an ended server process is gone.
const BACKEND_GONE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Ends the server process `pid` started at `started` (if it still runs)
/// and waits until it is gone, so nothing it was sent can still commit.
/// The caller bounds the wait.
async fn end_backend(client: &Client, pid: i32, started: &str) -> Result<(), Error> {
    const SAME: &str = "FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2";
    let parameters: [&(dyn ToSql + Sync); 2] = [&pid, &started];
    client.query(&format!("SELECT pg_terminate_backend(pid) {SAME}"), &parameters).await.map_err(storage)?;
    while client.query_opt(&format!("SELECT 1 {SAME}"), &parameters).await.map_err(storage)?.is_some() {
        tokio::time::sleep(BACKEND_GONE_POLL).await;
    }
    Ok(())
}

/// Polls a request's future once: tokio-postgres sends the request on the
/// first poll; its answer is then read and dropped by the connection.
fn send_now<F: Future>(future: std::pin::Pin<&mut F>) {
    let mut context = Context::from_waker(Waker::noop());
    // Ready already (answered, or refused at once on a closed connection)
    // or pending with the request sent: either way nothing is left to do.
    let _ = future.poll(&mut context);
}

/// Which of the batch's event ids are stored (with their records), and each
/// stream it names with its stored version: two statements, pipelined (both
/// are sent on the first poll, in order, behind whatever was sent before).
async fn stored(
    client: &Client,
    statements: &Statements,
    batch: &[Request],
) -> Result<(Vec<tokio_postgres::Row>, Vec<tokio_postgres::Row>), Error> {
    let (ids, streams) = named(batch);
    let id_parameters: [&(dyn ToSql + Sync); 1] = [&ids];
    let stream_parameters: [&(dyn ToSql + Sync); 1] = [&streams];
    let ids_query = client.query(&statements.ids, &id_parameters);
    let versions_query = client.query(&statements.versions, &stream_parameters);
    // The first error in the order sent is the one told (see `lock_and_prefetch`).
    let (ids, versions) = tokio::join!(ids_query, versions_query);
    Ok((ids.map_err(storage)?, versions.map_err(storage)?))
}

/// The event ids and streams a batch names: what the prefetch reads.
fn named(batch: &[Request]) -> (Vec<Uuid>, Vec<&str>) {
    let ids: Vec<Uuid> = batch.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    let streams: HashSet<&str> = batch
        .iter()
        .flat_map(|r| {
            r.events.iter().map(|e| e.stream.as_str()).chain(r.expectations.streams.iter().map(|s| s.stream.as_str()))
        })
        .collect();
    (ids, streams.into_iter().collect())
}

/// The insert's five arrays, one element per sealed event.
struct Rows<'a> {
    positions: Vec<i64>,
    ids: Vec<Uuid>,
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    records: Vec<&'a [u8]>,
}

impl<'a> Rows<'a> {
    fn of(group: &'a Group) -> Rows<'a> {
        let capacity = group.sealed.len();
        let mut rows = Rows {
            positions: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity),
            streams: Vec::with_capacity(capacity),
            versions: Vec::with_capacity(capacity),
            records: Vec::with_capacity(capacity),
        };
        for (envelope, record) in &group.sealed {
            rows.positions.push(envelope.position as i64);
            rows.ids.push(envelope.id);
            rows.streams.push(envelope.stream.as_str());
            rows.versions.push(envelope.stream_version as i64);
            rows.records.push(record.as_slice());
        }
        rows
    }

    fn parameters(&self) -> [&(dyn ToSql + Sync); 5] {
        [&self.positions, &self.ids, &self.streams, &self.versions, &self.records]
    }
}
