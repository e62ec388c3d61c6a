//! The ledger over a shared log (PostgreSQL, many nodes): commands are
//! decided in rounds.
//!
//! Another node may append at any moment, so the single-node path (decide
//! in memory, predict the head, pipeline the append) would decide on a
//! stale state. Here one thread per ledger, the decider, takes every
//! command waiting (up to [`ROUND_COMMANDS_MAX`]) and:
//! 1. reads the database's head, and folds whatever other nodes appended
//!    up to it: every command is decided on a state at least as fresh as
//!    the head the database had when its round began, which is after the
//!    command arrived;
//! 2. keeps a copy of the sequencer (the round's rollback point) and
//!    decides each command on it in turn, later ones seeing earlier ones;
//! 3. appends every event of the round as one append that must follow the
//!    head it folded to: the database serializes it with every other
//!    node's appends;
//! 4. answers every command of the round once that append committed. If
//!    another node appended first, the round's decisions are thrown away
//!    (back to the copy) and the round starts again from 1, now holding the
//!    database's head lock ([`crate::log::HeldHead`]) from before it folds
//!    until its append commits: a round loses the race at most once, and
//!    nodes that keep colliding take turns in the lock's queue instead of
//!    one node losing round after round. A refusal or an answer that
//!    appends nothing is given only with the round, so it was decided on a
//!    state the log then confirmed.
//! 5. While the nodes keep colliding (a held round found another node's
//!    events under the lock), the next round holds the head from its first
//!    attempt: an optimistic attempt would only lose again, after a read of
//!    the head, a fold, a decision and an append spent for nothing. The
//!    first held round that finds no other node's events goes back to
//!    optimistic rounds.
//!
//! Batching commands into rounds is what makes a commit carry many
//! commands, like the group commit of the single-node path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use super::{fold_into, Cell, LedgerError};
use crate::domain::sequencer::{CommandRefused, Produced, Sequencer};
use crate::domain::snapshot;
use crate::error::Error;
use crate::limits::GROUP_COMMIT_EVENTS_MAX;
use crate::log::{Appended, Clock, Conflict, Expectations, HeldHead, Log};

/// Most commands decided in one round (one append).
pub const ROUND_COMMANDS_MAX: usize = 256;

/// Events past which a round takes no further command (the rest wait for
/// the next round), so one append stays within a group commit.
pub const ROUND_EVENTS_TARGET: usize = GROUP_COMMIT_EVENTS_MAX / 4;

/// Times a round is decided before its commands are answered with
/// [`LedgerError::Contended`]. A round that lost once decides again holding
/// the head, so only a log that cannot hold its head (or an appender that
/// does not take the lock) ever uses more than two.
pub const ROUND_ATTEMPTS_MAX: u32 = 16;

/// Commands waiting for the decider; past this, callers wait.
pub const ROUND_QUEUE_DEPTH_MAX: usize = 4096;

/// A command waiting for its round, with its own answer channel.
pub(super) trait Queued: Send {
    /// Decides on the sequencer (applying its events there) and keeps the
    /// answer until the round ends.
    fn decide(&mut self, sequencer: &mut Sequencer, now: DateTime<Utc>) -> Produced;
    /// Answers with the kept answer, or with `failure`.
    fn answer(self: Box<Self>, failure: Option<LedgerError>);
}

type Decide<T> = dyn FnMut(&mut Sequencer, DateTime<Utc>) -> Result<(T, Produced), CommandRefused> + Send;

pub(super) struct Command<T> {
    decide: Box<Decide<T>>,
    kept: Option<Result<T, CommandRefused>>,
    reply: oneshot::Sender<Result<T, LedgerError>>,
}

impl<T: Send + 'static> Command<T> {
    pub(super) fn new(decide: Box<Decide<T>>) -> (Command<T>, oneshot::Receiver<Result<T, LedgerError>>) {
        let (reply, answer) = oneshot::channel();
        (Command { decide, kept: None, reply }, answer)
    }
}

impl<T: Send> Queued for Command<T> {
    fn decide(&mut self, sequencer: &mut Sequencer, now: DateTime<Utc>) -> Produced {
        match (self.decide)(sequencer, now) {
            Ok((value, produced)) => {
                self.kept = Some(Ok(value));
                produced
            }
            Err(refused) => {
                self.kept = Some(Err(refused));
                Produced::default()
            }
        }
    }

    fn answer(self: Box<Self>, failure: Option<LedgerError>) {
        let answer = match (failure, self.kept) {
            (Some(failure), _) => Err(failure),
            (None, Some(kept)) => kept.map_err(LedgerError::from),
            (None, None) => Err(LedgerError::Stopped("the command was never decided".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// The decider's side: the state it decides on and what it appends to.
pub(super) struct Decider {
    pub(super) log: Arc<Log>,
    pub(super) cell: Arc<Mutex<Cell>>,
    pub(super) clock: Clock,
    pub(super) stopped: Arc<watch::Sender<Option<String>>>,
    /// Whether the next round holds the head from its first attempt (step
    /// 5 above); only the decider thread reads and writes it.
    pub(super) contended: AtomicBool,
}

/// Starts the decider thread; commands go in through the returned sender.
/// The thread ends when every sender is gone.
pub(super) fn start(decider: Decider) -> Result<mpsc::Sender<Box<dyn Queued>>, Error> {
    let (commands, waiting) = mpsc::channel(ROUND_QUEUE_DEPTH_MAX);
    std::thread::Builder::new()
        .name("opledger-decider".into())
        .spawn(move || decider.run(waiting))
        .map_err(|error| Error::Storage(format!("cannot start the decider thread: {error}")))?;
    Ok(commands)
}

impl Decider {
    fn run(self, mut waiting: mpsc::Receiver<Box<dyn Queued>>) {
        let mut deferred: Vec<Box<dyn Queued>> = Vec::new();
        loop {
            if deferred.is_empty() {
                match waiting.blocking_recv() {
                    Some(command) => deferred.push(command),
                    None => return,
                }
            }
            while deferred.len() < ROUND_COMMANDS_MAX {
                match waiting.try_recv() {
                    Ok(command) => deferred.push(command),
                    Err(_) => break,
                }
            }
            let round = std::mem::take(&mut deferred);
            deferred = self.round(round);
        }
    }

    /// Decides, appends and answers one round; returns the commands it left
    /// for the next round (past [`ROUND_EVENTS_TARGET`]).
    fn round(&self, mut commands: Vec<Box<dyn Queued>>) -> Vec<Box<dyn Queued>> {
        let mut cell = self.cell.blocking_lock();
        if let Some(why) = self.stopped.borrow().clone() {
            answer_all(commands, || LedgerError::Stopped(why.clone()));
            return Vec::new();
        }
        // The head to fold to: read from the database on a round's first
        // attempt; after losing the race (or while the nodes keep
        // colliding), the head held locked (or, where the log cannot hold
        // it, the head the writer saw).
        let mut lost_to: Option<u64> = self.contended.load(Ordering::Relaxed).then(|| self.log.head().position);
        for _attempt in 0..ROUND_ATTEMPTS_MAX {
            let mut held = None;
            if lost_to.is_some() {
                match self.log.hold_head_blocking() {
                    Ok(hold) => {
                        lost_to = hold.as_ref().map(|hold| hold.head().position).or(lost_to);
                        held = hold;
                    }
                    Err(error) => {
                        answer_all(commands, || LedgerError::Log(error.again()));
                        return Vec::new();
                    }
                }
            }
            let folded_from = cell.sequencer.state().position;
            if let Err(failure) = self.catch_up(&mut cell.sequencer, lost_to) {
                match failure {
                    LedgerError::Stopped(why) => answer_all(commands, || LedgerError::Stopped(why.clone())),
                    LedgerError::Log(error) => answer_all(commands, || LedgerError::Log(error.again())),
                    other => {
                        let why = other.to_string();
                        answer_all(commands, || LedgerError::Log(Error::Storage(why.clone())));
                    }
                }
                return Vec::new();
            }
            if held.is_some() {
                // Another node's events under the lock: the nodes are still
                // colliding, and the next round holds from the start.
                self.contended.store(cell.sequencer.state().position > folded_from, Ordering::Relaxed);
            }
            let base = cell.sequencer.clone();
            let (events, taken) = decide_all(&mut cell.sequencer, &mut commands, (self.clock)());
            let rest = commands.split_off(taken);
            if events.events.is_empty() {
                // Dropping `held` rolls its transaction back.
                for command in commands {
                    command.answer(None);
                }
                return rest;
            }
            match self.append(&cell.sequencer, &events, base.state().position, held) {
                Ok(Ok(())) => {
                    for command in commands {
                        command.answer(None);
                    }
                    return rest;
                }
                Ok(Err(Conflict::Head { .. })) => {
                    self.contended.store(true, Ordering::Relaxed);
                    cell.sequencer = base;
                    lost_to = Some(self.log.head().position);
                    commands.extend(rest);
                }
                Ok(Err(conflict)) => {
                    cell.sequencer = base;
                    let why = format!("the log refused a decided append: {conflict:?}");
                    answer_all(commands, || LedgerError::Stopped(why.clone()));
                    return rest;
                }
                Err(error) => {
                    // The database has the truth; the next round folds it.
                    cell.sequencer = base;
                    answer_all(commands, || LedgerError::Log(error.again()));
                    return rest;
                }
            }
        }
        answer_all(commands, || LedgerError::Contended { attempts: ROUND_ATTEMPTS_MAX });
        Vec::new()
    }

    /// Folds what the log holds past the sequencer's state, up to the head
    /// the database has now, or up to `lost_to`: after an append lost the
    /// race, the head the writer published when it answered the conflict.
    /// That head is committed and was read from the database after every
    /// command of the round arrived, so it is as fresh as the round needs,
    /// and skipping the read gives the node that lost the same number of
    /// round trips before its next append as the node that won (without
    /// it, the node that keeps winning keeps winning).
    fn catch_up(&self, sequencer: &mut Sequencer, lost_to: Option<u64>) -> Result<(), LedgerError> {
        let head = match lost_to {
            Some(head) => head,
            None => self.log.latest_head()?.position,
        };
        if head < sequencer.state().position {
            // Events this node folded are no longer in the log: the
            // database failed over to a copy that never had them (they
            // were committed on the old primary only). Deciding on them
            // would build on events nobody else can read.
            let why = format!(
                "the log's head ({head}) is behind what this node decided on ({}): the database lost events it had \
                 committed (a failover to a standby that did not have them); the ledger must be reloaded from the log",
                sequencer.state().position
            );
            self.stopped.send_replace(Some(why.clone()));
            return Err(LedgerError::Stopped(why));
        }
        if head > sequencer.state().position {
            let mut state = std::mem::take(sequencer).into_state();
            let folded = fold_into(&self.log, &mut state, head);
            *sequencer = Sequencer::new(state);
            if let Err(failure) = folded {
                // A read that failed (the database restarting or failing
                // over) left the state at the last page folded, which the
                // next round folds on from: only an event that does not
                // fold stops the ledger.
                if !matches!(
                    failure,
                    LedgerError::Log(Error::Storage(_) | Error::Unavailable(_) | Error::WritesRefused(_))
                ) {
                    self.stopped.send_replace(Some(failure.to_string()));
                }
                return Err(failure);
            }
        }
        Ok(())
    }

    /// One append of the round's events, following `head` (under `held`
    /// when the round holds it); answered once committed. Stores a snapshot
    /// when the round crossed a boundary.
    fn append(
        &self,
        sequencer: &Sequencer,
        produced: &Produced,
        head: u64,
        held: Option<HeldHead>,
    ) -> Result<Result<(), Conflict>, Error> {
        let events = produced
            .events
            .iter()
            .map(|event| event.to_new_event(uuid::Uuid::now_v7()))
            .collect::<Result<Vec<_>, _>>()?;
        let at = sequencer.state().last_at;
        let expectations = Expectations { streams: Vec::new(), head: Some(head) };
        let appended: Result<Appended, Conflict> = match held {
            Some(held) => held.append_blocking(events, expectations, at)?,
            None => self.log.append_internal_blocking(events, expectations, at)?,
        };
        if appended.is_ok() {
            if let Some(snapshot) = snapshot::due(sequencer.state(), produced.first_position) {
                if let Err(error) = snapshot::store(&self.log, &snapshot) {
                    tracing::warn!(%error, position = snapshot.position, "ledger snapshot not stored");
                }
            }
        }
        Ok(appended.map(|_| ()))
    }
}

/// Decides commands in order until the round holds [`ROUND_EVENTS_TARGET`]
/// events; returns their events and how many commands it took.
fn decide_all(sequencer: &mut Sequencer, commands: &mut [Box<dyn Queued>], now: DateTime<Utc>) -> (Produced, usize) {
    let mut all = Produced { events: Vec::new(), first_position: sequencer.state().position + 1 };
    let mut taken = 0;
    for command in commands.iter_mut() {
        if all.events.len() >= ROUND_EVENTS_TARGET {
            break;
        }
        let produced = command.decide(sequencer, now);
        all.events.extend(produced.events);
        taken += 1;
    }
    (all, taken)
}

fn answer_all(commands: Vec<Box<dyn Queued>>, failure: impl Fn() -> LedgerError) {
    for command in commands {
        command.answer(Some(failure()));
    }
}
