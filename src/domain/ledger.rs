//! The ledger facade: the Rust API workers and the server use in-process.
//!
//! Adds what the pure parts leave out: the clock, fresh ids, and the log.
//! Each command takes the sequencer lock, decides and applies in memory,
//! hands the events to the log as one append that must follow the predicted
//! head, releases the lock and only then waits for the group commit. The
//! caller is answered once the append is durable. If an append fails after
//! the state took its events, memory and log disagree: the ledger stops
//! taking commands until it is reopened (fail-stop, never a silent divergence).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

use crate::domain::authority::AuthorityChange;
use crate::domain::events::{run_stream, DomainEvent};
use crate::domain::legitimacy::Decision;
use crate::domain::lifecycle::{Completion, TransitionRefused};
use crate::domain::model::{Principal, RunStatus};
use crate::domain::run::{Run, RunEvent};
use crate::domain::sequencer::{CommandRefused, Produced, Sequencer, StartAnswer};
use crate::domain::snapshot;
use crate::domain::start_gate::StartRequest;
use crate::domain::state::DomainState;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::limits::READ_PAGE_EVENTS_MAX;
use crate::log::{Clock, Expectations, Log, LogOptions};

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Bad input or a transition the run's state does not allow; nothing appended.
    #[error(transparent)]
    Refused(#[from] CommandRefused),
    #[error("unknown run {0}")]
    UnknownRun(Uuid),
    #[error(transparent)]
    Log(#[from] Error),
    /// An append failed after its events were decided; reopen the ledger.
    #[error("the ledger stopped after a failed append and must be reopened: {0}")]
    Stopped(String),
    /// The log holds an event the domain cannot apply.
    #[error("the log holds an event the domain cannot apply at position {position}: {detail}")]
    Inconsistent { position: u64, detail: String },
    /// Over a shared log: other nodes won the race to append this many
    /// times in a row; nothing was appended, the command may be retried.
    #[error("other nodes appended first {attempts} times in a row; nothing was appended, retry")]
    Contended { attempts: u32 },
}

/// The answer of a batch start.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStartAnswer {
    pub first: StartAnswer,
    /// Operation types retained as follow-ups of the accepted first run.
    pub follow_ups: Vec<String>,
}

struct Cell {
    sequencer: Sequencer,
}

pub struct Ledger {
    log: Arc<Log>,
    cell: Arc<Mutex<Cell>>,
    /// Why the ledger stopped (fail-stop), once it has. A watch so that a
    /// supervisor can wait for it and reopen the store.
    stopped: Arc<watch::Sender<Option<String>>>,
    /// Over a shared log, the decider thread's queue (see `ledger_rounds.rs`).
    rounds: Option<tokio::sync::mpsc::Sender<Box<dyn rounds::Queued>>>,
    clock: Clock,
    /// Serializes snapshot writes so an older one never replaces a newer one.
    snapshots: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("log", &self.log).finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the log in `dir` and folds it into the domain state.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Ledger, LedgerError> {
        let clock = Arc::clone(&options.clock);
        let log = Arc::new(Log::open(dir, options)?);
        Ledger::over(log, clock)
    }

    /// A ledger over an open log (which nothing else may append to). It
    /// starts from the latest snapshot when one fits the log, and folds the
    /// whole log otherwise.
    pub fn over(log: Arc<Log>, clock: Clock) -> Result<Ledger, LedgerError> {
        let restored = match snapshot::load(&log)? {
            Some(snapshot) => snapshot::restore(&log, &snapshot)?,
            None => None,
        };
        let state = match restored {
            Some(state) => fold_from(&log, state)?,
            None => fold_from(&log, DomainState::default())?,
        };
        let cell = Arc::new(Mutex::new(Cell { sequencer: Sequencer::new(state) }));
        let stopped = Arc::new(watch::channel(None).0);
        let rounds = match log.shared() {
            true => Some(rounds::start(rounds::Decider {
                log: Arc::clone(&log),
                cell: Arc::clone(&cell),
                clock: Arc::clone(&clock),
                stopped: Arc::clone(&stopped),
                contended: std::sync::atomic::AtomicBool::new(false),
            })?),
            false => None,
        };
        Ok(Ledger { log, cell, stopped, rounds, clock, snapshots: std::sync::Mutex::new(()) })
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Why the ledger stopped taking commands, if it has (a failed append:
    /// only a reopen of the store clears it).
    pub fn stopped(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// A receiver that changes when the ledger stops.
    pub fn stopped_watch(&self) -> watch::Receiver<Option<String>> {
        self.stopped.subscribe()
    }

    /// Records the first reason the ledger stopped; later ones add nothing.
    fn stop(&self, why: String) {
        self.stopped.send_if_modified(|stopped| match stopped {
            Some(_) => false,
            None => {
                *stopped = Some(why);
                true
            }
        });
    }

    /// Decides under the lock, appends, and answers once durable. Over a
    /// shared log the command goes to the decider's next round instead.
    async fn execute<T: Send + 'static>(
        &self,
        mut decide: impl FnMut(&mut Sequencer, DateTime<Utc>) -> Result<(T, Produced), CommandRefused> + Send + 'static,
    ) -> Result<T, LedgerError> {
        if let Some(rounds) = &self.rounds {
            let (command, answer) = rounds::Command::new(Box::new(decide));
            rounds.send(Box::new(command)).await.map_err(|_| LedgerError::Log(Error::Closed))?;
            return self.stop_if_closed(answer.await.unwrap_or(Err(LedgerError::Log(Error::Closed))));
        }
        let (value, pending, snapshot) = {
            let mut cell = self.cell.lock().await;
            if let Some(why) = self.stopped() {
                return Err(LedgerError::Stopped(why));
            }
            let head = cell.sequencer.state().position;
            let (value, produced) = decide(&mut cell.sequencer, (self.clock)())?;
            if produced.events.is_empty() {
                return Ok(value);
            }
            assert_eq!(produced.first_position, head + 1, "a command's events follow the head it was decided on");
            let at = cell.sequencer.state().last_at;
            let snapshot = snapshot::due(cell.sequencer.state(), produced.first_position);
            match self.submit(&produced, head, at).await {
                Ok(pending) => (value, pending, snapshot),
                Err(error) => {
                    let why = error.to_string();
                    self.stop(why.clone());
                    return Err(LedgerError::Stopped(why));
                }
            }
        };
        let failure = match pending.wait().await {
            Ok(Ok(_)) => {
                if let Some(snapshot) = snapshot {
                    self.store_snapshot(&snapshot);
                }
                return Ok(value);
            }
            Ok(Err(conflict)) => format!("the log refused a decided append: {conflict:?}"),
            Err(error) => error.to_string(),
        };
        // Under the lock, so no command decided after the failure slips in.
        let _cell = self.cell.lock().await;
        self.stop(failure.clone());
        Err(LedgerError::Stopped(failure))
    }

    /// Over a shared log a round whose log call failed is thrown away and
    /// the ledger goes on: the next round folds what the database holds.
    /// A closed log never answers again, though, so the ledger stops as it
    /// does after a failed append on one node, and a supervisor reopens
    /// the store (without this, every command would fail until a restart).
    fn stop_if_closed<T>(&self, answered: Result<T, LedgerError>) -> Result<T, LedgerError> {
        match answered {
            Err(LedgerError::Log(error)) if self.log.is_closed() => {
                let why = error.to_string();
                self.stop(why.clone());
                Err(LedgerError::Stopped(why))
            }
            answered => answered,
        }
    }

    /// A snapshot only shortens the next open; failing to store one is
    /// logged, never an error of the command.
    fn store_snapshot(&self, snapshot: &snapshot::Snapshot) {
        let Ok(_guard) = self.snapshots.lock() else { return };
        if let Err(error) = snapshot::store(&self.log, snapshot) {
            tracing::warn!(%error, position = snapshot.position, "ledger snapshot not stored");
        }
    }

    async fn submit(
        &self,
        produced: &Produced,
        head: u64,
        at: Option<DateTime<Utc>>,
    ) -> Result<crate::log::PendingAppend, Error> {
        let events =
            produced.events.iter().map(|event| event.to_new_event(Uuid::now_v7())).collect::<Result<Vec<_>, _>>()?;
        let expectations = Expectations { streams: Vec::new(), head: Some(head) };
        self.log.submit_at(events, expectations, at).await
    }

    /// Records authority changes atomically: all of them or, on any bad
    /// change, none. Returns the first and last positions.
    pub async fn record_authority(
        &self,
        changed_by: Principal,
        changes: Vec<AuthorityChange>,
    ) -> Result<(u64, u64), LedgerError> {
        self.execute(move |sequencer, now| {
            let produced = sequencer.record_authority(&changed_by, &changes, now)?;
            let last = produced.first_position + produced.events.len() as u64 - 1;
            Ok(((produced.first_position, last), produced))
        })
        .await
    }

    pub async fn start(&self, request: StartRequest) -> Result<StartAnswer, LedgerError> {
        self.execute(move |sequencer, now| sequencer.start(&request, &mut Uuid::now_v7, now)).await
    }

    pub async fn start_batch(
        &self,
        operation_types: Vec<String>,
        request: StartRequest,
    ) -> Result<BatchStartAnswer, LedgerError> {
        self.execute(move |sequencer, now| {
            let (first, follow_ups, produced) =
                sequencer.start_batch(&operation_types, &request, &mut Uuid::now_v7, now)?;
            Ok((BatchStartAnswer { first, follow_ups }, produced))
        })
        .await
    }

    /// The legitimacy gate decides the run's current attempt now.
    pub async fn begin(&self, run_id: Uuid) -> Result<(Decision, Run), LedgerError> {
        let result = self
            .execute(move |sequencer, now| {
                let (decision, run, produced) = sequencer.begin(run_id, &mut Uuid::now_v7, now)?;
                Ok(((decision, run), produced))
            })
            .await;
        self.resolve_not_live(result, "begin").await
    }

    pub async fn progress(&self, run_id: Uuid, summary_counts: serde_json::Value) -> Result<Run, LedgerError> {
        let result = self.execute(move |sequencer, now| sequencer.progress(run_id, &summary_counts, now)).await;
        self.resolve_not_live(result, "report progress").await
    }

    pub async fn complete(&self, run_id: Uuid, completion: Completion) -> Result<Run, LedgerError> {
        let result =
            self.execute(move |sequencer, now| sequencer.complete(run_id, &completion, &mut Uuid::now_v7, now)).await;
        self.resolve_not_live(result, "complete").await
    }

    /// Marks the terminal notification of `run_id` read by its initiator.
    /// Refused for a run that is unknown, not ended, or not initiated by
    /// `actor_id` (there is no such notification).
    pub async fn mark_notification_read(&self, actor_id: &str, run_id: Uuid) -> Result<u64, LedgerError> {
        let run = self.run(run_id)?.ok_or(LedgerError::UnknownRun(run_id))?;
        if !run.is_terminal() || run.initiator.actor_id() != Some(actor_id) {
            let why = format!("actor {actor_id} has no notification for run {run_id}");
            return Err(CommandRefused::Invalid(why).into());
        }
        let actor_id = actor_id.to_owned();
        self.execute(move |sequencer, now| {
            let produced = sequencer.notification_read(&actor_id, run_id, now)?;
            Ok((produced.first_position, produced))
        })
        .await
    }

    /// A run the sequencer does not hold live is either ended (a transition
    /// it does not allow) or unknown.
    async fn resolve_not_live<T>(
        &self,
        result: Result<T, LedgerError>,
        action: &'static str,
    ) -> Result<T, LedgerError> {
        match result {
            Err(LedgerError::Refused(CommandRefused::NotLive(run_id))) => match self.run(run_id)? {
                Some(run) => {
                    Err(CommandRefused::Transition(TransitionRefused { run_id, status: run.status, action }).into())
                }
                None => Err(LedgerError::UnknownRun(run_id)),
            },
            other => other,
        }
    }

    /// The events of a run's stream, in order.
    pub fn run_events(&self, run_id: Uuid) -> Result<Vec<Envelope>, LedgerError> {
        let stream = run_stream(run_id);
        let mut events: Vec<Envelope> = Vec::new();
        loop {
            let from = events.len() as u64 + 1;
            let page = self.log.read_stream(&stream, from, READ_PAGE_EVENTS_MAX)?;
            let done = page.len() < READ_PAGE_EVENTS_MAX;
            events.extend(page);
            if done {
                return Ok(events);
            }
        }
    }

    /// A run as its stream in the log makes it (acknowledged events only).
    pub fn run(&self, run_id: Uuid) -> Result<Option<Run>, LedgerError> {
        fold_run(&self.run_events(run_id)?)
    }

    /// A copy of the domain state as the sequencer holds it now.
    pub async fn state(&self) -> DomainState {
        self.cell.lock().await.sequencer.state().clone()
    }

    /// Live runs by status, counted under the sequencer's lock (one pass
    /// over the live runs, no copy of the state).
    pub async fn live_counts(&self) -> crate::domain::state::LiveCounts {
        self.cell.lock().await.sequencer.state().live_counts()
    }

    /// Whether a run is live (queued or running) in the sequencer.
    pub async fn run_status(&self, run_id: Uuid) -> Option<RunStatus> {
        self.cell.lock().await.sequencer.state().run(&run_id).map(|run| run.status)
    }
}

/// Folds a run's events; `None` for an empty stream.
pub fn fold_run(events: &[Envelope]) -> Result<Option<Run>, LedgerError> {
    let mut run: Option<Run> = None;
    for envelope in events {
        let inconsistent = |detail: String| LedgerError::Inconsistent { position: envelope.position, detail };
        let event: RunEvent = match DomainEvent::from_envelope(envelope).map_err(inconsistent)? {
            DomainEvent::Run { event, .. } => event,
            _ => return Err(inconsistent("a non-run event in a run stream".into())),
        };
        match &mut run {
            None => run = Some(Run::create(&event, envelope.recorded_at).map_err(inconsistent)?),
            Some(run) => run.apply(&event, envelope.recorded_at).map_err(inconsistent)?,
        }
    }
    Ok(run)
}

/// Folds the log after the state's position into the state.
fn fold_from(log: &Log, mut state: DomainState) -> Result<DomainState, LedgerError> {
    let head = log.head().position;
    fold_into(log, &mut state, head)?;
    Ok(state)
}

/// Folds the log's events after the state's position up to `head`.
fn fold_into(log: &Log, state: &mut DomainState, head: u64) -> Result<(), LedgerError> {
    let mut from = state.position + 1;
    while from <= head {
        let want = usize::try_from(head - from + 1).unwrap_or(usize::MAX).min(READ_PAGE_EVENTS_MAX);
        let page = log.read(from, want)?;
        for envelope in &page {
            let inconsistent = |detail: String| LedgerError::Inconsistent { position: envelope.position, detail };
            let event = DomainEvent::from_envelope(envelope).map_err(inconsistent)?;
            state.apply(envelope.position, envelope.recorded_at, &event).map_err(inconsistent)?;
        }
        from += page.len() as u64;
        if page.is_empty() {
            break;
        }
    }
    Ok(())
}

#[path = "ledger_leases.rs"]
mod leases;

#[path = "ledger_rounds.rs"]
mod rounds;

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ledger_shared_tests.rs"]
mod shared_tests;
