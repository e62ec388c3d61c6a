//! The single serialized step: check, decide, evolve.
//!
//! The ledger holds the sequencer behind one lock. A command is decided on
//! the in-memory state, every resulting event is applied to that state at
//! the position it will get in the log, and the whole list is handed to the
//! log as one atomic append that must follow the predicted head. Commands
//! therefore see every earlier command's events even while their group
//! commit is still in flight, and the start gate's check-and-append cannot
//! race: at most one accepted non-terminal run per protected scope.
//!
//! No I/O and no clock here: time and ids are passed in.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::authority::{AuthorityChange, AuthorityChanged};
use crate::domain::cancel::{decide_cancel, CancelRequest};
use crate::domain::events::DomainEvent;
use crate::domain::lease::{decide_abandon, decide_heartbeat, fence, lapsed, Fenced};
use crate::domain::legitimacy::Decision;
use crate::domain::lifecycle::{decide_begin, decide_complete, decide_progress, Completion, TransitionRefused};
use crate::domain::model::{check_id, Principal};
use crate::domain::run::{Run, RunEvent};
use crate::domain::start_gate::{decide_start, StartDecision, StartRejected, StartRequest};
use crate::domain::state::DomainState;
use crate::envelope::truncate_to_micros;

/// Most authority changes in one atomic batch.
pub const AUTHORITY_BATCH_CHANGES_MAX: usize = 256;

/// Most operation types in one batch start (the first plus follow-ups).
pub const BATCH_START_TYPES_MAX: usize = 16;

/// Mints ids for new runs (UUID v7 in production, a counter in tests).
pub trait RunIds {
    fn next_run_id(&mut self) -> Uuid;
}

impl<F: FnMut() -> Uuid> RunIds for F {
    fn next_run_id(&mut self) -> Uuid {
        self()
    }
}

/// Why a command was refused without appending anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefused {
    #[error("invalid authority change #{index}: {reason}")]
    InvalidAuthorityChange { index: usize, reason: String },
    #[error(transparent)]
    Start(#[from] StartRejected),
    #[error(transparent)]
    Transition(#[from] TransitionRefused),
    /// The run is not live here: the caller looks it up in the log.
    #[error("run {0} is not live")]
    NotLive(Uuid),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A worker's late call (abandoned attempt) or a call on a cancelled run.
    #[error(transparent)]
    Fenced(#[from] Fenced),
}

/// Most lapsed leases the reaper abandons in one command (one append), so
/// one pass holds the sequencer lock for a bounded time; the rest wait for
/// the next pass.
pub const LEASE_REAPS_PER_PASS_MAX: usize = 256;

/// Summary counts are an object (unknown keys inside it are dropped by
/// normalization); anything else is bad input, not an empty report.
fn counts_are_an_object(counts: Option<&serde_json::Value>) -> Result<(), CommandRefused> {
    match counts {
        Some(value) if !value.is_object() => {
            Err(CommandRefused::Invalid(format!("summary_counts must be a JSON object, got {value}")))
        }
        _ => Ok(()),
    }
}

/// The answer of the start gate, with the run it names.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAnswer {
    Accepted(Run),
    Deduped(Run),
    ScopeBusy(Run),
    Blocked(Run),
}

impl StartAnswer {
    pub fn run(&self) -> &Run {
        match self {
            StartAnswer::Accepted(run)
            | StartAnswer::Deduped(run)
            | StartAnswer::ScopeBusy(run)
            | StartAnswer::Blocked(run) => run,
        }
    }

    /// The result word of the API.
    pub fn result(&self) -> &'static str {
        match self {
            StartAnswer::Accepted(_) => "accepted",
            StartAnswer::Deduped(_) => "deduped",
            StartAnswer::ScopeBusy(_) => "scope_busy",
            StartAnswer::Blocked(_) => "blocked",
        }
    }
}

/// The events a command produced, in append order, already applied.
#[derive(Debug, Default)]
pub struct Produced {
    pub events: Vec<DomainEvent>,
    pub first_position: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Sequencer {
    state: DomainState,
}

impl Sequencer {
    pub fn new(state: DomainState) -> Sequencer {
        Sequencer { state }
    }

    pub fn state(&self) -> &DomainState {
        &self.state
    }

    pub fn into_state(self) -> DomainState {
        self.state
    }

    /// Applies an event and records it for the append. A decided event that
    /// the state refuses is a bug in a decide function.
    /// Returns the run the event ended, if the state dropped it.
    fn push(&mut self, produced: &mut Produced, at: DateTime<Utc>, event: DomainEvent) -> Option<Run> {
        let position = self.state.position + 1;
        if produced.events.is_empty() {
            produced.first_position = position;
        }
        let applied = self.state.apply(position, at, &event);
        assert!(applied.is_ok(), "a decided event must apply: {applied:?}");
        produced.events.push(event);
        applied.ok().flatten()
    }

    fn begin_command(&self, now: DateTime<Utc>) -> (Produced, DateTime<Utc>) {
        let now = truncate_to_micros(now);
        let at = self.state.last_at.map_or(now, |last| now.max(last));
        (Produced::default(), at)
    }

    fn live(&self, run_id: Uuid) -> Result<&Run, CommandRefused> {
        self.state.run(&run_id).filter(|run| !run.is_terminal()).ok_or(CommandRefused::NotLive(run_id))
    }

    /// Records authority changes, all or none.
    pub fn record_authority(
        &mut self,
        changed_by: &Principal,
        changes: &[AuthorityChange],
        now: DateTime<Utc>,
    ) -> Result<Produced, CommandRefused> {
        if changes.is_empty() || changes.len() > AUTHORITY_BATCH_CHANGES_MAX {
            let why =
                format!("an authority batch holds 1 to {AUTHORITY_BATCH_CHANGES_MAX} changes, got {}", changes.len());
            return Err(CommandRefused::Invalid(why));
        }
        changed_by.check("changed_by").map_err(CommandRefused::Invalid)?;
        let mut scratch = (*self.state.authority).clone();
        for (index, change) in changes.iter().enumerate() {
            let refused = |reason| CommandRefused::InvalidAuthorityChange { index, reason };
            // Validate (ids included), then apply: later changes of the batch see this one.
            scratch.validate(change).map_err(refused)?;
            scratch.apply(scratch.position.max(self.state.position) + 1, change).map_err(refused)?;
        }
        let (mut produced, at) = self.begin_command(now);
        for change in changes {
            let event = AuthorityChanged { changed_by: changed_by.clone(), change: change.clone() };
            self.push(&mut produced, at, DomainEvent::Authority(event));
        }
        Ok(produced)
    }

    /// Records that `actor_id` read the notification of `run_id`. The
    /// caller checks that the notification exists (it is a projection).
    pub fn notification_read(
        &mut self,
        actor_id: &str,
        run_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Produced, CommandRefused> {
        check_id("actor id", actor_id).map_err(CommandRefused::Invalid)?;
        let (mut produced, at) = self.begin_command(now);
        let event = crate::domain::events::NotificationRead { actor_id: actor_id.to_owned(), run_id };
        self.push(&mut produced, at, DomainEvent::NotificationRead(event));
        Ok(produced)
    }

    /// A start through the start gate.
    pub fn start(
        &mut self,
        request: &StartRequest,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(StartAnswer, Produced), CommandRefused> {
        let decision = decide_start(&self.state, request, ids.next_run_id(), None)?;
        let (mut produced, at) = self.begin_command(now);
        let answer = self.record_start(&mut produced, at, decision);
        Ok((answer, produced))
    }

    /// Sequential admission: the first type goes through the start gate; if
    /// it is accepted the rest are retained on it, to be started one by one
    /// as each run frees the scope.
    pub fn start_batch(
        &mut self,
        operation_types: &[String],
        request: &StartRequest,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(StartAnswer, Vec<String>, Produced), CommandRefused> {
        let Some((first, rest)) = operation_types.split_first() else {
            return Err(CommandRefused::Invalid("a batch start names at least one operation type".into()));
        };
        if operation_types.len() > BATCH_START_TYPES_MAX {
            let why = format!("a batch start names at most {BATCH_START_TYPES_MAX} operation types");
            return Err(CommandRefused::Invalid(why));
        }
        for operation_type in rest {
            check_id("operation_types", operation_type).map_err(CommandRefused::Invalid)?;
            if self.state.authority.operation_type(operation_type).is_none() {
                return Err(StartRejected::UnknownOperationType(operation_type.clone()).into());
            }
        }
        let first_request = StartRequest { operation_type: first.clone(), ..request.clone() };
        let decision = decide_start(&self.state, &first_request, ids.next_run_id(), None)?;
        let (mut produced, at) = self.begin_command(now);
        let answer = self.record_start(&mut produced, at, decision);
        let retained = match (&answer, rest.is_empty()) {
            (StartAnswer::Accepted(run), false) => {
                let event = RunEvent::FollowUpsRetained {
                    attempt: run.attempt,
                    operation_types: rest.to_vec(),
                    provider_connection_id: run
                        .provider_connection_id
                        .clone()
                        .or(request.provider_connection_id.clone()),
                };
                self.push(&mut produced, at, DomainEvent::Run { run_id: run.id, event });
                rest.to_vec()
            }
            _ => Vec::new(),
        };
        let answer = self.refresh(answer);
        Ok((answer, retained, produced))
    }

    /// The legitimacy gate decides the run's current attempt now.
    pub fn begin(
        &mut self,
        run_id: Uuid,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(Decision, Run, Produced), CommandRefused> {
        let run = self.live(run_id)?;
        let (decision, events) = decide_begin(run, &self.state.authority)?;
        let (mut produced, at) = self.begin_command(now);
        let mut ended = None;
        for event in events {
            ended = self.push(&mut produced, at, DomainEvent::Run { run_id, event }).or(ended);
        }
        let run = self.after_run_events(&mut produced, at, run_id, ended, ids);
        Ok((decision, run, produced))
    }

    pub fn progress(
        &mut self,
        run_id: Uuid,
        summary_counts: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        self.progress_attempt(run_id, None, summary_counts, now)
    }

    /// Progress of the attempt the worker names (`None`: the running one).
    pub fn progress_attempt(
        &mut self,
        run_id: Uuid,
        attempt: Option<u32>,
        summary_counts: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        counts_are_an_object(Some(summary_counts))?;
        let event = decide_progress(self.fenced(run_id, attempt)?, summary_counts)?;
        let (mut produced, at) = self.begin_command(now);
        self.push(&mut produced, at, DomainEvent::Run { run_id, event });
        let run = self.live(run_id)?.clone();
        Ok((run, produced))
    }

    pub fn complete(
        &mut self,
        run_id: Uuid,
        completion: &Completion,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        self.complete_attempt(run_id, None, completion, ids, now)
    }

    /// Ends the attempt the worker names (`None`: the running one).
    pub fn complete_attempt(
        &mut self,
        run_id: Uuid,
        attempt: Option<u32>,
        completion: &Completion,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        counts_are_an_object(completion.summary_counts.as_ref())?;
        let event = decide_complete(self.fenced(run_id, attempt)?, completion)?;
        let (mut produced, at) = self.begin_command(now);
        let ended = self.push(&mut produced, at, DomainEvent::Run { run_id, event });
        let run = self.after_run_events(&mut produced, at, run_id, ended, ids);
        Ok((run, produced))
    }

    /// The live run, once the worker's call passed the fence.
    fn fenced(&self, run_id: Uuid, attempt: Option<u32>) -> Result<&Run, CommandRefused> {
        let run = self.live(run_id)?;
        fence(run, attempt)?;
        Ok(run)
    }

    /// A worker's sign of life: renews the lease, appending `lease_renewed`
    /// only once more than half of it is used (see [`crate::domain::lease`]).
    pub fn heartbeat(
        &mut self,
        run_id: Uuid,
        attempt: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        let (mut produced, at) = self.begin_command(now);
        if let Some(event) = decide_heartbeat(self.fenced(run_id, attempt)?, at)? {
            self.push(&mut produced, at, DomainEvent::Run { run_id, event });
        }
        let run = self.live(run_id)?.clone();
        Ok((run, produced))
    }

    /// Cancels a queued or running run; a batch's next follow-up is then
    /// admitted like after any terminal outcome.
    pub fn cancel(
        &mut self,
        run_id: Uuid,
        request: &CancelRequest,
        ids: &mut dyn RunIds,
        now: DateTime<Utc>,
    ) -> Result<(Run, Produced), CommandRefused> {
        request.cancelled_by.check("cancelled_by").map_err(CommandRefused::Invalid)?;
        let event = decide_cancel(self.live(run_id)?, request)?;
        let (mut produced, at) = self.begin_command(now);
        let ended = self.push(&mut produced, at, DomainEvent::Run { run_id, event });
        let run = self.after_run_events(&mut produced, at, run_id, ended, ids);
        Ok((run, produced))
    }

    /// The reaper's step: abandons every running attempt whose lease lapsed
    /// by `now` (at most [`LEASE_REAPS_PER_PASS_MAX`], oldest lease first),
    /// each with its consequence. Answers with the runs as they are after.
    pub fn reap(&mut self, ids: &mut dyn RunIds, now: DateTime<Utc>) -> (Vec<Run>, Produced) {
        let (mut produced, at) = self.begin_command(now);
        let mut due: Vec<(DateTime<Utc>, Uuid)> = self
            .state
            .live_run_ids()
            .filter_map(|id| self.state.run(id))
            .filter(|run| lapsed(run, at))
            .filter_map(|run| run.lease_expires_at.map(|expires| (expires, run.id)))
            .collect();
        due.sort_unstable();
        due.truncate(LEASE_REAPS_PER_PASS_MAX);
        let mut reaped = Vec::with_capacity(due.len());
        for (_, run_id) in due {
            let Some(events) = self.state.run(&run_id).and_then(|run| decide_abandon(run, at)) else { continue };
            let mut ended = None;
            for event in events {
                ended = self.push(&mut produced, at, DomainEvent::Run { run_id, event }).or(ended);
            }
            reaped.push(self.after_run_events(&mut produced, at, run_id, ended, ids));
        }
        (reaped, produced)
    }

    /// The run as it is now, and, when it just ended with follow-ups
    /// retained, the next follow-ups admitted through the start gate.
    fn after_run_events(
        &mut self,
        produced: &mut Produced,
        at: DateTime<Utc>,
        run_id: Uuid,
        ended: Option<Run>,
        ids: &mut dyn RunIds,
    ) -> Run {
        let Some(run) = self.state.run(&run_id).cloned().or(ended) else {
            unreachable!("run {run_id} just changed: it is live, or it ended and the state handed it back")
        };
        if run.is_terminal() && !run.follow_ups.is_empty() {
            self.admit_follow_ups(produced, at, &run, ids);
        }
        run
    }

    /// Starts follow-ups in order until one is accepted (which then carries
    /// the rest) or none is left. Each admission is recorded on the ended run.
    fn admit_follow_ups(&mut self, produced: &mut Produced, at: DateTime<Utc>, ended: &Run, ids: &mut dyn RunIds) {
        let mut remaining = ended.follow_ups.clone();
        while !remaining.is_empty() {
            let operation_type = remaining.remove(0);
            let provider_backed =
                self.state.authority.operation_type(&operation_type).is_some_and(|s| s.provider_backed);
            let request = StartRequest {
                operation_type: operation_type.clone(),
                tenant_id: ended.tenant_id.clone(),
                initiator: ended.initiator.clone(),
                provider_connection_id: if provider_backed { ended.follow_up_connection.clone() } else { None },
                context: ended.context.clone(),
                dedupe_key: None,
            };
            let new_run_id = ids.next_run_id();
            let decision = decide_start(&self.state, &request, new_run_id, Some(ended.id));
            let (result, admitted) = match &decision {
                Ok(StartDecision::Accepted { .. }) => ("accepted", Some(new_run_id)),
                Ok(StartDecision::Blocked { .. }) => ("blocked", Some(new_run_id)),
                Ok(StartDecision::Deduped { existing_run_id, .. }) => ("deduped", Some(*existing_run_id)),
                Ok(StartDecision::ScopeBusy { blocking_run_id, .. }) => ("scope_busy", Some(*blocking_run_id)),
                Err(_) => ("rejected", None),
            };
            let note = RunEvent::FollowUpAdmitted {
                attempt: ended.attempt,
                operation_type,
                admitted_run_id: admitted,
                result: result.to_owned(),
            };
            let _ = self.push(produced, at, DomainEvent::Run { run_id: ended.id, event: note });
            let Ok(decision) = decision else { continue };
            if let StartAnswer::Accepted(run) = self.record_start(produced, at, decision) {
                if !remaining.is_empty() {
                    let event = RunEvent::FollowUpsRetained {
                        attempt: run.attempt,
                        operation_types: remaining,
                        provider_connection_id: ended.follow_up_connection.clone(),
                    };
                    self.push(produced, at, DomainEvent::Run { run_id: run.id, event });
                }
                return;
            }
        }
    }

    /// Appends the events of a start decision and answers with the run it names.
    fn record_start(&mut self, produced: &mut Produced, at: DateTime<Utc>, decision: StartDecision) -> StartAnswer {
        let (run_id, event, wrap): (Uuid, RunEvent, fn(Run) -> StartAnswer) = match decision {
            StartDecision::Accepted { run_id, event } => (run_id, event, StartAnswer::Accepted),
            StartDecision::Blocked { run_id, event, .. } => (run_id, event, StartAnswer::Blocked),
            StartDecision::Deduped { existing_run_id, event } => (existing_run_id, event, StartAnswer::Deduped),
            StartDecision::ScopeBusy { blocking_run_id, event } => (blocking_run_id, event, StartAnswer::ScopeBusy),
        };
        // A blocked start is terminal at once, so the state does not keep it.
        let blocked = match &event {
            RunEvent::RunStartBlocked { .. } => Run::create(&event, at).ok(),
            _ => None,
        };
        self.push(produced, at, DomainEvent::Run { run_id, event });
        let Some(run) = blocked.or_else(|| self.state.run(&run_id).cloned()) else {
            unreachable!("run {run_id} was just created or is live: the state holds it")
        };
        wrap(run)
    }

    /// The answer with its run as the state holds it now.
    fn refresh(&self, answer: StartAnswer) -> StartAnswer {
        match answer {
            StartAnswer::Accepted(run) => StartAnswer::Accepted(self.state.run(&run.id).cloned().unwrap_or(run)),
            other => other,
        }
    }
}

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
