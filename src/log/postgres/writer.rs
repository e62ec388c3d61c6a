//! The node's writer: batches the appends waiting for it into one
//! transaction (a group commit), like the sled writer, but on the head the
//! database holds, which other nodes move too.
//!
//! One group, on one of the writer's [`WRITER_LANES`] connections
//! ([`Lane`]):
//! 1. `BEGIN`, `SELECT … FROM opledger_log_head FOR UPDATE` (which waits
//!    for any other group, of this node or another, to commit), and the
//!    prefetch of what staging needs (which event ids are stored already,
//!    each named stream's version), in one round trip.
//! 2. Stages every append with the shared staging code.
//! 3. Inserts the sealed events, moves the head, notifies listeners
//!    (`pg_notify` is delivered on commit) and commits, in one round trip.
//!
//! A decider that holds the head ([`crate::log::HeldHead`]) gets a lane of
//! its own: step 1 without appends, then the held append's prefetch once
//! the decider sends it, then step 3.
//!
//! Lanes overlap: once a group is staged, the next lane gathers the appends
//! waiting and sends its step 1, which the server holds on the head lock
//! until the group before commits. The head is then locked for one round
//! trip after the previous commit instead of for the whole exchange, and
//! commits follow each other as fast as the database flushes them. Each
//! group still stages on the head it locked, so nothing is decided ahead of
//! the database: a group that failed is simply not seen by the next. A
//! lane whose clients have not come back yet waits for them while the
//! other lane's group holds the head ([`super::cohort`]).
//!
//! While this writer has the head to itself, a group does not lock the
//! head first: it is staged on the head the writer expects, inserted, and
//! moves the head only from that one (see [`super::speculation`]). The
//! lock is then held for the head's move and the flush alone. Such a
//! group is one call, which also takes the advisory lock of the lane's
//! next group; that group, if the writer knows its streams, is then
//! staged without a read, and is its call alone: one round trip.
//!
//! A commit whose answer was lost (the connection broke) is resolved by
//! event id before anyone is answered. A commit PostgreSQL answers with the
//! warning that its wait for a synchronous standby was cancelled is not
//! acknowledged: the standby may not have it.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Mutex, MutexGuard};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::error::Error;
use crate::log::postgres::cohort::Cohorts;
use crate::log::postgres::connect::Heard;
use crate::log::postgres::lane::{Lane, Refused, Speculative};
use crate::log::postgres::speculation::{Chain, StagingBase, Switch};
use crate::log::postgres::Shared;
use crate::log::staging::{gather, Group, Outcome, Reply, Request};
use crate::log::{Clock, Head, StatsCounters};

/// Connections whose groups overlap (one committing, one waiting for the
/// head lock): more would only wait on the same lock.
pub(crate) const WRITER_LANES: usize = 2;

/// Longest a decider may hold the head locked between the lock and its
/// append; past it the hold is rolled back (its append then fails).
pub(crate) const HEAD_HOLD_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Holds queued for the hold lane; past this, deciders wait.
pub(crate) const HOLD_QUEUE_DEPTH_MAX: usize = 16;

/// A decider's request to hold the head locked while it decides.
pub(crate) struct Hold {
    /// Answered with the head once locked.
    pub(crate) locked: oneshot::Sender<Result<Head, Error>>,
    /// The append to commit under the lock; dropped: roll back.
    pub(crate) append: oneshot::Receiver<Request>,
}

/// Times a group is sent when nothing of it was stored and its
/// connection broke: one left open by an earlier group that turns out
/// broken before the group could commit (a database restarted, failed
/// over or went silent while the lane was idle), or one that broke during
/// the commit, which the look by event id then found not stored. Once
/// more, on a new connection, once the server process of the broken one
/// is gone ([`Lane::end_previous_session`]).
pub(crate) const GROUP_ATTEMPTS_MAX: usize = 2;

/// Pause between attempts to reach the database while resolving a commit.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    /// The recording time of the newest event this writer knows of.
    pub(crate) last_recorded_at: std::sync::Mutex<DateTime<Utc>>,
    pub(crate) clock: Clock,
    pub(crate) stats: Arc<StatsCounters>,
    /// `LogOptions::commit_resolve_wait`: see
    /// [`COMMIT_RESOLVE_WAIT_MAX`](crate::log::postgres::COMMIT_RESOLVE_WAIT_MAX).
    pub(crate) resolve_wait: std::time::Duration,
    /// `LogOptions::held_lock_idle_wait`: see
    /// [`HELD_LOCK_IDLE_WAIT_MAX`](crate::log::postgres::HELD_LOCK_IDLE_WAIT_MAX).
    pub(crate) held_lock_idle_wait: std::time::Duration,
    /// The groups staged lately and whether to speculate.
    pub(crate) speculation: std::sync::Mutex<Speculation>,
    /// The high half of this writer's advisory lock keys, random, so that
    /// writers of several nodes do not share keys (a shared key would only
    /// make one group wait for another's end).
    pub(crate) key_prefix: i64,
    /// Speculative groups started: the low half of their keys.
    pub(crate) speculative_groups: std::sync::atomic::AtomicU32,
    /// The lanes' groups in flight: a lane waits for the clients it
    /// answered while another lane's group holds the head.
    pub(crate) cohorts: Cohorts,
}

/// What speculative groups are staged on, and whether they pay.
#[derive(Default)]
pub(crate) struct Speculation {
    chain: Chain,
    switch: Switch,
}

/// The turn to gather the appends waiting: held by one lane from the
/// moment it takes appends until its group is staged.
type Turn<'a> = MutexGuard<'a, mpsc::Receiver<Request>>;

/// How a group's transaction ended.
enum Committing {
    /// Committed (or nothing to commit): the head after it.
    Done(Head),
    /// A speculative group that found the head not as staged; nothing of
    /// it is in the log, and its appends are to be staged again.
    Missed,
    /// Not committed; nothing of the group is in the log.
    Failed(Error),
    /// The connection broke during the commit, and a look on a new one
    /// (after the old session's end) found nothing of the group stored.
    NotStored(Error),
}

/// What is left of a group after one attempt.
enum Attempt {
    /// Every append of it was answered.
    Answered,
    /// Nothing of it is stored and its connection broke: send it again.
    Again(Vec<Request>),
}

impl Writer {
    /// Runs the lanes until every sender of `requests` is gone; `opened`
    /// are the connections the log opened with, one per lane (a lane
    /// without one connects on first use).
    pub(crate) async fn run(
        self,
        requests: mpsc::Receiver<Request>,
        holds: mpsc::Receiver<Hold>,
        opened: impl IntoIterator<Item = (Client, Arc<Heard>)>,
    ) {
        let writer = Arc::new(self);
        let requests = Arc::new(Mutex::new(requests));
        let mut lanes = JoinSet::new();
        let mut opened = opened.into_iter();
        for _ in 0..WRITER_LANES {
            let lane = Lane::new(Arc::clone(&writer.shared), opened.next());
            lanes.spawn(Arc::clone(&writer).drive(lane, Arc::clone(&requests)));
        }
        let hold_lane = Lane::new(Arc::clone(&writer.shared), opened.next());
        let hold_lane = tokio::spawn(Arc::clone(&writer).hold_lane(hold_lane, holds));
        while lanes.join_next().await.is_some() {}
        // The log closed (its appends' sender is gone): a hold still waiting
        // is answered `Closed` by dropping it.
        hold_lane.abort();
    }

    async fn hold_lane(self: Arc<Self>, mut lane: Lane, mut holds: mpsc::Receiver<Hold>) {
        while let Some(hold) = holds.recv().await {
            self.hold(&mut lane, hold).await;
        }
    }

    /// Locks the head, tells the decider, waits (bounded) for its append,
    /// then stages and commits it in the same transaction.
    async fn hold(&self, lane: &mut Lane, hold: Hold) {
        let started = Instant::now();
        // Groups inserted before the lock would wait behind the held head,
        // and deadlock with the held append's rows.
        self.with_speculation(|speculation| speculation.switch.held());
        let mut locked = lane.lock(&[]).await;
        if let Err(error) = &locked {
            if self.may_send_again(lane, error).await {
                locked = lane.lock(&[]).await;
            }
        }
        let mut prefetched = match locked {
            Ok(prefetched) => prefetched,
            Err(error) => {
                let _ = hold.locked.send(Err(error));
                return;
            }
        };
        // Published before the decider folds: reads stop at the published
        // head, and the decider must fold every event up to the held one.
        self.shared.publish(prefetched.head);
        if hold.locked.send(Ok(prefetched.head)).is_err() {
            return lane.release();
        }
        let request = match tokio::time::timeout(HEAD_HOLD_WAIT_MAX, hold.append).await {
            Ok(Ok(request)) => request,
            Ok(Err(_)) => return lane.release(),
            Err(_) => {
                tracing::warn!(
                    seconds = HEAD_HOLD_WAIT_MAX.as_secs(),
                    "a decider held the head lock too long; rolled back"
                );
                return lane.release();
            }
        };
        let batch = vec![request];
        if let Err(error) = lane.prefetch(&mut prefetched, &batch).await {
            return self.fail(batch, &error);
        }
        let (group, outcomes) = self.stage(&prefetched, &batch);
        // Not sent again: the decider decided on the head this session
        // held, which a new one would not hold.
        self.finish(lane, batch, group, outcomes, prefetched.head, started, true).await;
    }

    /// Stages `batch` on `base`: a locked head, or a predicted one.
    fn stage(&self, base: &dyn StagingBase, batch: &[Request]) -> (Group, Vec<Outcome>) {
        let (head, head_recorded_at) = base.head();
        let last_recorded_at = self.last_recorded_at.lock().map_or(head_recorded_at, |at| *at);
        let mut group = Group::new(head, head_recorded_at.max(last_recorded_at));
        let stored = base.stored();
        let outcomes = batch.iter().map(|request| group.stage(stored, request, &self.clock)).collect();
        (group, outcomes)
    }

    /// A new advisory lock key for a speculative group: this writer's
    /// random half, and a count.
    fn group_key(&self) -> i64 {
        let count = self.speculative_groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.key_prefix << 32) | i64::from(count)
    }

    fn with_speculation<T>(&self, change: impl FnOnce(&mut Speculation) -> T) -> Option<T> {
        self.speculation.lock().ok().map(|mut speculation| change(&mut speculation))
    }

    async fn drive(self: Arc<Self>, mut lane: Lane, requests: Arc<Mutex<mpsc::Receiver<Request>>>) {
        // Appends this lane's last group answered: its clients, who come
        // back to it (see `cohort`).
        let mut answered_last = 0;
        loop {
            let mut turn = idle(&mut lane, self.held_lock_idle_wait, requests.lock()).await;
            let Some(first) = idle(&mut lane, self.held_lock_idle_wait, turn.recv()).await else { return };
            let (mut batch, mut fill) = gather(first, &mut turn);
            if !fill.full() {
                let room = |request: &Request| {
                    fill.add(request);
                    !fill.full()
                };
                self.cohorts.await_returning(&mut batch, &mut turn, answered_last, room).await;
            }
            answered_last = batch.len();
            self.cohorts.started();
            if self.with_speculation(|speculation| speculation.switch.on()).unwrap_or(false) {
                self.speculate(&mut lane, batch, turn).await;
            } else {
                self.commit_group(&mut lane, batch, Some(turn), GROUP_ATTEMPTS_MAX).await;
            }
            self.cohorts.answered();
        }
    }

    /// Commits one group on the head it locks first, and answers every
    /// append in it, in at most `attempts` attempts (see
    /// [`GROUP_ATTEMPTS_MAX`]). The turn, if this lane has it, goes to the
    /// next lane as soon as the group is staged.
    async fn commit_group(&self, lane: &mut Lane, batch: Vec<Request>, turn: Option<Turn<'_>>, attempts: usize) {
        let (mut batch, mut turn) = (batch, turn);
        for attempt in 1..=attempts {
            match self.commit_group_once(lane, batch, turn.take(), attempt == attempts).await {
                Attempt::Answered => return,
                Attempt::Again(left) => batch = left,
            }
        }
    }

    /// One attempt of [`Writer::commit_group`]; the `last` one answers
    /// every append whatever happens.
    async fn commit_group_once(
        &self,
        lane: &mut Lane,
        batch: Vec<Request>,
        turn: Option<Turn<'_>>,
        last: bool,
    ) -> Attempt {
        let started = Instant::now();
        let prefetched = match lane.lock(&batch).await {
            Ok(prefetched) => prefetched,
            Err(error) => {
                drop(turn);
                return self.fail_or_again(lane, batch, error, last).await;
            }
        };
        let (group, outcomes) = self.stage(&prefetched, &batch);
        let ticket = self.with_speculation(|speculation| {
            speculation.chain.learn(&prefetched);
            speculation.switch.locked(speculation.chain.left(prefetched.head));
            (group.events() > 0).then(|| speculation.chain.push(&group, None))
        });
        drop(turn);
        let (committed, attempt) = self.finish(lane, batch, group, outcomes, prefetched.head, started, last).await;
        if let Some(Some(ticket)) = ticket {
            self.with_speculation(|speculation| speculation.chain.settle(ticket, committed));
        }
        attempt
    }

    /// Answers every append of a group that failed with `error`, unless
    /// it may be sent again ([`Writer::may_send_again`]) and this was not
    /// its `last` attempt.
    async fn fail_or_again(&self, lane: &mut Lane, batch: Vec<Request>, error: Error, last: bool) -> Attempt {
        if !last && self.may_send_again(lane, &error).await {
            return Attempt::Again(batch);
        }
        self.fail(batch, &error);
        Attempt::Answered
    }

    /// A speculative group that failed with `error`, nothing of it stored:
    /// answered with the error, or, if it may be sent again, committed
    /// once more on the locked head.
    async fn fail_or_commit_locked(&self, lane: &mut Lane, batch: Vec<Request>, error: Error) {
        if let Attempt::Again(batch) = self.fail_or_again(lane, batch, error, false).await {
            self.commit_group(lane, batch, None, 1).await;
        }
    }

    /// Whether a group that failed with `error` on `lane`, with nothing of
    /// it stored, may be sent again: the connection an earlier group left
    /// open broke under this one ([`Lane::on_kept_connection`]), and the
    /// server process behind it was ended, on a new connection, within the
    /// resolve wait.
    async fn may_send_again(&self, lane: &mut Lane, error: &Error) -> bool {
        if !matches!(error, Error::Unavailable(_)) || !lane.on_kept_connection() {
            return false;
        }
        match tokio::time::timeout(self.resolve_wait, lane.end_previous_session()).await {
            Ok(Ok(())) => {
                tracing::info!(%error, "a connection left open broke before its group could commit; sending the group again on a new connection");
                true
            }
            Ok(Err(again)) => {
                tracing::warn!(%error, %again, "a connection left open broke, and a new one could not be made");
                false
            }
            Err(_) => false,
        }
    }

    /// Commits one group staged on the head this writer expects, before
    /// locking it; a group that misses is committed again on the locked
    /// head. A group whose advisory lock the group before took, and whose
    /// streams the writer knows ([`Chain::known_for`]), is staged without
    /// a read: it is one call, one round trip.
    async fn speculate(&self, lane: &mut Lane, batch: Vec<Request>, turn: Turn<'_>) {
        let started = Instant::now();
        let held = lane.take_held_key();
        let key = held.unwrap_or_else(|| self.group_key());
        let known = match held {
            Some(_) => self.with_speculation(|speculation| speculation.chain.known_for(&batch)).flatten(),
            None => None,
        };
        let read = match known {
            Some(known) => {
                self.stats.record_unread();
                known
            }
            None => match lane.read_unlocked(&batch, key, held.is_some()).await {
                Ok(read) => {
                    self.with_speculation(|speculation| speculation.chain.learn(&read));
                    read
                }
                Err(error) => {
                    drop(turn);
                    return self.fail_or_commit_locked(lane, batch, error).await;
                }
            },
        };
        let Some(view) = self.with_speculation(|speculation| speculation.chain.view(&read)) else {
            drop(turn);
            return self.fail(batch, &Error::Storage("the writer's speculation state is poisoned".into()));
        };
        let (group, outcomes) = self.stage(&view, &batch);
        if group.events() == 0 {
            // Its answers (replays, conflicts) rest on the groups still in
            // flight; only a commit would prove them. Staged again on the
            // locked head instead.
            lane.release();
            drop(turn);
            return self.commit_group(lane, batch, None, GROUP_ATTEMPTS_MAX).await;
        }
        let ticket = self.with_speculation(|speculation| speculation.chain.push(&group, Some(key)));
        drop(turn);
        let speculative = Speculative { from: group.base, key, awaits: view.awaits, next_key: self.group_key() };
        let ended = self.settle(lane, &group, Some(speculative)).await;
        // Told before the answers: the group staged on this one waits for
        // it to lock the head.
        self.with_speculation(|speculation| {
            if let Some(ticket) = ticket {
                speculation.chain.settle(ticket, matches!(ended, Committing::Done(_)));
            }
            match ended {
                Committing::Done(_) => speculation.switch.hit(),
                Committing::Missed => speculation.switch.missed(),
                Committing::Failed(_) | Committing::NotStored(_) => {}
            }
        });
        match ended {
            Committing::Done(head) => {
                self.stats.record_speculative(true);
                self.done(batch, &group, outcomes, head, started);
            }
            Committing::Missed => {
                self.stats.record_speculative(false);
                self.commit_group(lane, batch, None, GROUP_ATTEMPTS_MAX).await;
            }
            Committing::Failed(error) => self.fail_or_commit_locked(lane, batch, error).await,
            Committing::NotStored(error) => {
                tracing::info!(%error, "sending the group again on the locked head");
                self.commit_group(lane, batch, None, 1).await;
            }
        }
    }

    /// Commits a staged group (or rolls back an empty one) on the head it
    /// locked, and answers every append in it, unless nothing of it was
    /// stored, its connection broke and this was not its `last` attempt;
    /// whether it committed.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        lane: &mut Lane,
        batch: Vec<Request>,
        group: Group,
        outcomes: Vec<Outcome>,
        locked: Head,
        started: Instant,
        last: bool,
    ) -> (bool, Attempt) {
        if group.events() == 0 {
            // Nothing to write: the rollback is sent, not awaited, so the
            // head lock goes one round trip sooner (a node whose append lost
            // the race to another is not always a round trip behind it).
            lane.release();
            self.shared.publish(locked);
            self.answer_all(batch, outcomes);
            return (true, Attempt::Answered);
        }
        match self.settle(lane, &group, None).await {
            Committing::Done(head) => {
                self.done(batch, &group, outcomes, head, started);
                (true, Attempt::Answered)
            }
            Committing::Failed(error) => (false, self.fail_or_again(lane, batch, error, last).await),
            Committing::NotStored(_) if !last => (false, Attempt::Again(batch)),
            Committing::NotStored(error) => {
                self.fail(batch, &error);
                (false, Attempt::Answered)
            }
            Committing::Missed => {
                // Only a speculative group can miss.
                self.fail(batch, &Error::Storage("a group that locked the head found it moved".into()));
                (false, Attempt::Answered)
            }
        }
    }

    /// Commits a staged group: on the locked head (`speculative` is
    /// `None`), or moving the head only from the head it was staged on.
    async fn settle(&self, lane: &mut Lane, group: &Group, speculative: Option<Speculative>) -> Committing {
        let waits_cancelled = lane.replication_waits_cancelled();
        match lane.commit(group, speculative).await {
            Err(Refused::Missed(why)) => {
                tracing::debug!(%why, "a speculative group missed; staging it again on the locked head");
                Committing::Missed
            }
            Err(Refused::Failed(error)) => Committing::Failed(error),
            Ok(committed) => self.after_commit(lane, committed, group, waits_cancelled).await,
        }
    }

    /// A committed group: published, counted, answered.
    fn done(&self, batch: Vec<Request>, group: &Group, outcomes: Vec<Outcome>, head: Head, started: Instant) {
        if let Ok(mut at) = self.last_recorded_at.lock() {
            *at = (*at).max(group.last_recorded_at);
        }
        self.stats.record_sync(started.elapsed());
        self.stats.record_commit(group.events());
        self.shared.writes_refused.committed();
        self.shared.publish(head);
        self.answer_all(batch, outcomes);
    }

    fn answer_all(&self, batch: Vec<Request>, outcomes: Vec<Outcome>) {
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            answer(&self.stats, request.reply, outcome, request.submitted);
        }
    }

    /// Answers every append of a group that did not commit with `error`.
    fn fail(&self, batch: Vec<Request>, error: &Error) {
        tracing::warn!(%error, "group commit on PostgreSQL failed; its appends are answered with the error");
        if let Error::WritesRefused(why) = error {
            self.shared.writes_refused.refused(why, Instant::now());
        }
        for request in batch {
            answer(&self.stats, request.reply, Err(error.again()), request.submitted);
        }
    }

    /// What a commit's answer means for the group.
    async fn after_commit(
        &self,
        lane: &mut Lane,
        committed: Result<(), tokio_postgres::Error>,
        group: &Group,
        waits_cancelled: u64,
    ) -> Committing {
        match committed {
            Ok(()) if lane.replication_waits_cancelled() != waits_cancelled => Committing::Failed(Error::Storage(
                "PostgreSQL committed on the primary but its wait for the synchronous standby was cancelled: \
                 not acknowledged (the events may be in the log; retrying with the same event ids is safe)"
                    .into(),
            )),
            Ok(()) => Committing::Done(group.head),
            Err(error) if error.as_db_error().is_some() => {
                Committing::Failed(crate::log::postgres::connect::storage(error))
            }
            Err(error) => {
                tracing::warn!(%error, "the answer to a commit was lost; resolving it by event id");
                resolve(lane, group, self.resolve_wait).await
            }
        }
    }
}

/// Learns whether a commit whose answer was lost went through: its first
/// event id is stored at its position, or it is not stored at all. Every
/// attempt, and all of them together, end within `wait`.
async fn resolve(lane: &mut Lane, group: &Group, wait: std::time::Duration) -> Committing {
    let Some((first, _)) = group.sealed.first() else { return Committing::Done(group.head) };
    let deadline = Instant::now() + wait;
    loop {
        // Bounded: a server that accepts but never answers (no
        // `connect_timeout` in the URL) must not hold the answer past the
        // deadline.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let found = match tokio::time::timeout(remaining, lane.position_of(first.id)).await {
            Ok(found) => found,
            Err(_) => Err(Error::Unavailable("no answer before the deadline".into())),
        };
        match found {
            Ok(Some(position)) if position == first.position => return Committing::Done(group.head),
            Ok(Some(position)) => {
                // Rolled back, and the same ids appended since by another
                // writer (a client's retry on another node).
                return Committing::Failed(Error::Storage(format!(
                    "the connection broke during the commit, which did not go through; the same event ids were \
                     appended since at position {position} (a retry answers them as a duplicate)"
                )));
            }
            Ok(None) => {
                return Committing::NotStored(Error::Unavailable(
                    "the connection broke during the commit and the events are not in the log: nothing was appended"
                        .into(),
                ))
            }
            Err(error) if Instant::now() >= deadline => {
                return Committing::Failed(Error::Unavailable(format!(
                    "the connection broke during the commit and the database did not tell within {} s whether it \
                     committed ({error}); retrying with the same event ids is safe",
                    wait.as_secs_f64()
                )))
            }
            Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
        }
    }
}

/// Waits for `ready`. The advisory lock a lane's session holds for its
/// next group is released once the wait passes `held_lock_idle_wait`
/// ([`HELD_LOCK_IDLE_WAIT_MAX`](crate::log::postgres::HELD_LOCK_IDLE_WAIT_MAX)
/// by default): a writer without appends holds no lock.
async fn idle<T>(
    lane: &mut Lane,
    held_lock_idle_wait: std::time::Duration,
    ready: impl std::future::Future<Output = T>,
) -> T {
    if !lane.holds_locks() {
        return ready.await;
    }
    let mut ready = std::pin::pin!(ready);
    match tokio::time::timeout(held_lock_idle_wait, &mut ready).await {
        Ok(value) => value,
        Err(_) => {
            lane.release();
            ready.await
        }
    }
}

fn answer(stats: &StatsCounters, reply: Reply, outcome: Outcome, submitted: Instant) {
    stats.record_outcome(&outcome);
    stats.record_answer(submitted);
    let _ = reply.send(outcome);
}
