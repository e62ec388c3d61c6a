//! The node's writer: batches the appends waiting for it into one
//! transaction (a group commit), like the sled writer, but on the head the
//! database holds, which other nodes move too.
//!
//! One group:
//! 1. `SELECT … FROM opledger_log_head FOR UPDATE`: waits for any other
//!    node's group to commit, then sees its head.
//! 2. Prefetches what staging needs: which event ids are stored already and
//!    each named stream's version.
//! 3. Stages every append with the shared staging code.
//! 4. Inserts the sealed events, moves the head, notifies listeners
//!    (`pg_notify` is delivered on commit), commits.
//!
//! A commit whose answer was lost (the connection broke) is resolved by
//! event id before anyone is answered. A commit PostgreSQL answers with the
//! warning that its wait for a synchronous standby was cancelled is not
//! acknowledged: the standby may not have it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::envelope::StreamId;
use crate::error::Error;
use crate::log::postgres::connect::{self, storage, Heard};
use crate::log::postgres::reads::{micros_to_time, row_head};
use crate::log::postgres::statements::Statements;
use crate::log::postgres::Shared;
use crate::log::staging::{gather, Committed, Group, Outcome, Reply, Request};
use crate::log::{Clock, Head, StatsCounters};

/// Pause between attempts to reach the database while resolving a commit.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: Option<Client>,
    /// Prepared on `client`; dropped with it.
    pub(crate) statements: Option<Statements>,
    pub(crate) heard: Arc<Heard>,
    /// The recording time of the newest event this writer knows of.
    pub(crate) last_recorded_at: DateTime<Utc>,
    pub(crate) clock: Clock,
    pub(crate) stats: Arc<StatsCounters>,
    /// `LogOptions::commit_resolve_wait`: see
    /// [`COMMIT_RESOLVE_WAIT_MAX`](crate::log::postgres::COMMIT_RESOLVE_WAIT_MAX).
    pub(crate) resolve_wait: std::time::Duration,
}

/// What a group's transaction found stored before it staged.
struct Prefetched {
    versions: HashMap<StreamId, u64>,
    ids: HashMap<Uuid, (u64, DateTime<Utc>)>,
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

/// How a group's transaction ended.
enum Committing {
    /// Committed (or nothing to commit): the head after it.
    Done(Head),
    /// Not committed; nothing of the group is in the log.
    Failed(Error),
}

impl Writer {
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.recv().await {
            let batch = gather(first, &mut requests);
            self.commit_group(batch).await;
        }
    }

    async fn client(&mut self) -> Result<&mut Client, Error> {
        if self.client.as_ref().is_none_or(|client| client.is_closed()) {
            self.client = None;
            self.statements = None;
            let client = connect::connect(&self.shared.config, Arc::clone(&self.heard), None).await?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or(Error::Closed)
    }

    /// The connection and its prepared statements, reconnecting and
    /// preparing when needed.
    async fn connection(&mut self) -> Result<(&mut Client, &Statements), Error> {
        self.client().await?;
        if self.statements.is_none() {
            let client = self.client.as_ref().ok_or(Error::Closed)?;
            self.statements = Some(Statements::prepare(client).await?);
        }
        match (self.client.as_mut(), self.statements.as_ref()) {
            (Some(client), Some(statements)) => Ok((client, statements)),
            _ => Err(Error::Closed),
        }
    }

    /// Commits one group and answers every append in it.
    async fn commit_group(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let (group, outcomes, ended) = match self.transact(&batch).await {
            Ok((group, outcomes, ended)) => (Some(group), outcomes, ended),
            Err(error) => (None, Vec::new(), Committing::Failed(error)),
        };
        let answers: Vec<Outcome> = match (ended, group) {
            (Committing::Done(head), Some(group)) => {
                if group.events() > 0 {
                    self.last_recorded_at = group.last_recorded_at;
                    self.stats.record_sync(started.elapsed());
                    self.stats.record_commit(group.events());
                }
                self.shared.publish(head);
                outcomes
            }
            (Committing::Done(_), None) => batch.iter().map(|_| Err(Error::Closed)).collect(),
            (Committing::Failed(error), _) => {
                tracing::warn!(%error, "group commit on PostgreSQL failed; its appends are answered with the error");
                let why = error.to_string();
                batch.iter().map(|_| Err(Error::Storage(why.clone()))).collect()
            }
        };
        for (request, outcome) in batch.into_iter().zip(answers) {
            answer(&self.stats, request.reply, outcome, request.submitted);
        }
    }

    /// The group's transaction: stage on the locked head, insert, commit.
    async fn transact(&mut self, batch: &[Request]) -> Result<(Group, Vec<Outcome>, Committing), Error> {
        let clock = Arc::clone(&self.clock);
        let heard = Arc::clone(&self.heard);
        let last_recorded_at = self.last_recorded_at;
        let (client, statements) = self.connection().await?;
        let tx = client.transaction().await.map_err(storage)?;
        let (head, stored_recorded_at, prefetched) = prefetch(&tx, statements, batch).await?;
        let mut group = Group::new(head, stored_recorded_at.max(last_recorded_at));
        let outcomes: Vec<Outcome> = batch.iter().map(|request| group.stage(&prefetched, request, &clock)).collect();
        if group.events() == 0 {
            // Nothing was written, so nobody waits for the rollback: dropping
            // the transaction queues it on the connection, ahead of the next
            // group's statements, and the head lock goes as soon as the
            // server reads it. A node whose append lost the race to another
            // node is answered one round trip sooner, and so is not always
            // a round trip behind the node that won (which kept winning).
            drop(tx);
            return Ok((group, outcomes, Committing::Done(head)));
        }
        insert(&tx, statements, &group).await?;
        let waits_cancelled = heard.replication_waits_cancelled.load(Ordering::SeqCst);
        let committed = tx.commit().await;
        let ended = self.after_commit(committed, &group, waits_cancelled).await;
        Ok((group, outcomes, ended))
    }

    /// What a commit's answer means for the group.
    async fn after_commit(
        &mut self,
        committed: Result<(), tokio_postgres::Error>,
        group: &Group,
        waits_cancelled: u64,
    ) -> Committing {
        match committed {
            Ok(()) if self.heard.replication_waits_cancelled.load(Ordering::SeqCst) != waits_cancelled => {
                Committing::Failed(Error::Storage(
                    "PostgreSQL committed on the primary but its wait for the synchronous standby was cancelled: \
                     not acknowledged (the events may be in the log; retrying with the same event ids is safe)"
                        .into(),
                ))
            }
            Ok(()) => Committing::Done(group.head),
            Err(error) if error.as_db_error().is_some() => Committing::Failed(storage(error)),
            Err(error) => {
                tracing::warn!(%error, "the answer to a commit was lost; resolving it by event id");
                self.resolve(group).await
            }
        }
    }

    /// Learns whether a commit whose answer was lost went through: its first
    /// event id is stored at its position, or it is not stored at all.
    async fn resolve(&mut self, group: &Group) -> Committing {
        let Some((first, _)) = group.sealed.first() else { return Committing::Done(group.head) };
        let deadline = Instant::now() + self.resolve_wait;
        loop {
            self.client = None;
            self.statements = None;
            // Bounded: a server that accepts but never answers (no
            // `connect_timeout` in the URL) must not hold the answer past
            // the deadline.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let found = match tokio::time::timeout(remaining, self.find_position(first.id)).await {
                Ok(found) => found,
                Err(_) => Err(Error::Storage("no answer before the deadline".into())),
            };
            match found {
                Ok(Some(position)) if position == first.position as i64 => return Committing::Done(group.head),
                Ok(_) => return Committing::Failed(Error::Storage(
                    "the connection broke during the commit and the events are not in the log: nothing was appended"
                        .into(),
                )),
                Err(error) if Instant::now() >= deadline => {
                    return Committing::Failed(Error::Storage(format!(
                        "the connection broke during the commit and the database did not tell within {} s whether it \
                         committed ({error}); retrying with the same event ids is safe",
                        self.resolve_wait.as_secs_f64()
                    )))
                }
                Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
        }
    }

    /// The position at which `id` is stored, on a fresh connection, once
    /// no transaction holds the head row: a commit the server is still
    /// carrying out (its WAL flush, its wait for a synchronous standby)
    /// holds the lock its group took, and would become visible after a
    /// look that did not wait for it.
    async fn find_position(&mut self, id: Uuid) -> Result<Option<i64>, Error> {
        let client = self.client().await?;
        client.execute("SELECT 1 FROM opledger_log_head FOR SHARE", &[]).await.map_err(storage)?;
        let row = client
            .query_opt("SELECT position FROM opledger_log_events WHERE event_id = $1", &[&id])
            .await
            .map_err(storage)?;
        Ok(row.map(|row| row.get::<_, i64>(0)))
    }
}

fn answer(stats: &StatsCounters, reply: Reply, outcome: Outcome, submitted: Instant) {
    stats.record_outcome(&outcome);
    stats.record_answer(submitted);
    let _ = reply.send(outcome);
}

/// Locks the head, then reads what staging needs, in one round trip after
/// the lock (the statements run in order on the server).
async fn prefetch(
    tx: &Transaction<'_>,
    statements: &Statements,
    batch: &[Request],
) -> Result<(Head, DateTime<Utc>, Prefetched), Error> {
    let ids: Vec<Uuid> = batch.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    let streams: HashSet<&str> = batch
        .iter()
        .flat_map(|r| {
            r.events.iter().map(|e| e.stream.as_str()).chain(r.expectations.streams.iter().map(|s| s.stream.as_str()))
        })
        .collect();
    let streams: Vec<&str> = streams.into_iter().collect();
    let id_parameters: [&(dyn ToSql + Sync); 1] = [&ids];
    let stream_parameters: [&(dyn ToSql + Sync); 1] = [&streams];
    let head_query = tx.query_one(&statements.head, &[]);
    let ids_query = tx.query(&statements.ids, &id_parameters);
    let versions_query = tx.query(&statements.versions, &stream_parameters);
    let (head_row, id_rows, version_rows) = tokio::try_join!(head_query, ids_query, versions_query).map_err(storage)?;
    let head = row_head(&head_row)?;
    let mut prefetched = Prefetched { versions: HashMap::new(), ids: HashMap::new() };
    for row in &version_rows {
        let stream = StreamId::new(row.get::<_, String>(0))?;
        let version = row.get::<_, Option<i64>>(1).map_or(0, |v| u64::try_from(v).unwrap_or(0));
        prefetched.versions.insert(stream, version);
    }
    for row in &id_rows {
        let position = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        let event = crate::envelope::Envelope::decode(position, row.get(2))?;
        prefetched.ids.insert(row.get(0), (position, event.recorded_at));
    }
    Ok((head, micros_to_time(head_row.get(2)), prefetched))
}

/// Inserts the group's events, moves the head and queues the notification,
/// pipelined in one round trip.
async fn insert(tx: &Transaction<'_>, statements: &Statements, group: &Group) -> Result<(), Error> {
    let mut positions = Vec::with_capacity(group.sealed.len());
    let mut ids = Vec::with_capacity(group.sealed.len());
    let mut streams = Vec::with_capacity(group.sealed.len());
    let mut versions = Vec::with_capacity(group.sealed.len());
    let mut records: Vec<&[u8]> = Vec::with_capacity(group.sealed.len());
    for (envelope, record) in &group.sealed {
        positions.push(envelope.position as i64);
        ids.push(envelope.id);
        streams.push(envelope.stream.as_str());
        versions.push(envelope.stream_version as i64);
        records.push(record.as_slice());
    }
    let digest = group.head.digest();
    let position = group.head.position as i64;
    let hash = group.head.hash.0.as_slice();
    let recorded_at = group.last_recorded_at.timestamp_micros();
    let rows: [&(dyn ToSql + Sync); 5] = [&positions, &ids, &streams, &versions, &records];
    let head: [&(dyn ToSql + Sync); 3] = [&position, &hash, &recorded_at];
    let notification: [&(dyn ToSql + Sync); 1] = [&digest];
    let insert = tx.execute(&statements.insert, &rows);
    let move_head = tx.execute(&statements.move_head, &head);
    let notify = tx.execute(&statements.notify, &notification);
    tokio::try_join!(insert, move_head, notify).map_err(storage)?;
    Ok(())
}
