//! Decision replay: a [`verify::Observer`](crate::verify::Observer) that
//! folds the log into the domain state and, at every recorded decision,
//! re-evaluates it against the authority state rebuilt up to its recorded
//! position. A decision that does not come out identical fails the walk.
//!
//! It also checks the lifecycle invariant the ledger promises: a run is
//! never `running` unless the event just before is an `allowed` decision
//! for the same run and attempt.
//!
//! Abandonments and cancellations are re-derived too: an
//! `attempt_abandoned` must be what the lease decision gives for the run at
//! its recording time, followed at once by the consequence that decision
//! gives; a `run_cancelled` must find the run cancellable.

use uuid::Uuid;

use crate::domain::cancel::check_cancellable;
use crate::domain::events::DomainEvent;
use crate::domain::lease::decide_abandon;
use crate::domain::legitimacy::evaluate;
use crate::domain::run::RunEvent;
use crate::domain::start_gate::{replay_start, start_decision_of};
use crate::domain::state::DomainState;
use crate::envelope::Envelope;
use crate::verify::Observer;

#[derive(Debug, Default)]
pub struct DecisionReplay {
    state: DomainState,
    /// Legitimacy decisions made at begin, re-evaluated.
    pub decisions_checked: u64,
    /// Start-gate decisions (queued and blocked starts), re-evaluated.
    pub start_decisions_checked: u64,
    /// The run and attempt of an allowed decision at the previous position.
    allowed_just_before: Option<(Uuid, u32)>,
    /// Abandonments of lapsed leases, re-derived.
    pub abandonments_checked: u64,
    /// Cancellations, re-checked against the run's state.
    pub cancellations_checked: u64,
    /// The consequence an abandonment at the previous position requires next.
    expected_next: Option<(Uuid, RunEvent)>,
}

impl DecisionReplay {
    pub fn new() -> DecisionReplay {
        DecisionReplay::default()
    }

    pub fn state(&self) -> &DomainState {
        &self.state
    }

    fn check(&mut self, run_id: Uuid, event: &RunEvent, at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        if let Some((expected_run, expected)) = self.expected_next.take() {
            if (expected_run, &expected) != (run_id, event) {
                return Err(format!("attempt_abandoned of run {expected_run} is not followed by its consequence"));
            }
        }
        if let Some((spec, recorded)) = start_decision_of(event) {
            let replayed = replay_start(spec, &self.state);
            self.start_decisions_checked += 1;
            return same(recorded, &replayed, "start decision");
        }
        match event {
            RunEvent::LegitimacyEvaluated { decision, .. } => {
                let run =
                    self.state.run(&run_id).ok_or_else(|| format!("decision for run {run_id}, which is not live"))?;
                let spec = run.spec().ok_or("a live run has its spec")?;
                let replayed = evaluate(&spec.facts(), run.attempt, &self.state.authority);
                self.decisions_checked += 1;
                same(decision, &replayed, "legitimacy decision")
            }
            RunEvent::RunStarted { attempt } if self.allowed_just_before != Some((run_id, *attempt)) => {
                Err(format!("run {run_id} started attempt {attempt} without an allowed decision just before"))
            }
            RunEvent::AttemptAbandoned { .. } => {
                let run = self.state.run(&run_id).ok_or_else(|| format!("abandonment of run {run_id}, not live"))?;
                let Some([abandoned, consequence]) = decide_abandon(run, at) else {
                    return Err(format!("run {run_id} abandoned at {at} while its lease had not lapsed"));
                };
                same(event, &abandoned, "abandonment")?;
                self.abandonments_checked += 1;
                self.expected_next = Some((run_id, consequence));
                Ok(())
            }
            RunEvent::RunCancelled { .. } => {
                let run = self.state.run(&run_id).ok_or_else(|| format!("cancel of run {run_id}, not live"))?;
                check_cancellable(run).map_err(|refused| refused.to_string())?;
                self.cancellations_checked += 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn same<T: PartialEq + serde::Serialize>(recorded: &T, replayed: &T, what: &str) -> Result<(), String> {
    if recorded == replayed {
        return Ok(());
    }
    let show = |value: &T| serde_json::to_string(value).unwrap_or_else(|e| e.to_string());
    Err(format!(
        "{what} does not replay identically: recorded {} but re-evaluation gives {}",
        show(recorded),
        show(replayed)
    ))
}

impl Observer for DecisionReplay {
    fn observe(&mut self, envelope: &Envelope) -> Result<(), String> {
        let event = DomainEvent::from_envelope(envelope)?;
        self.observe_event(envelope.position, envelope.recorded_at, &event)
    }
}

impl DecisionReplay {
    /// A replay that starts from a state already folded (tests).
    #[cfg(test)]
    pub(crate) fn over(state: DomainState) -> DecisionReplay {
        DecisionReplay { state, ..DecisionReplay::default() }
    }

    /// Checks and folds one decoded event recorded at `position` and `at`.
    pub(crate) fn observe_event(
        &mut self,
        position: u64,
        at: chrono::DateTime<chrono::Utc>,
        event: &DomainEvent,
    ) -> Result<(), String> {
        let mut allowed_now = None;
        if let (Some((expected_run, _)), false) = (&self.expected_next, matches!(event, DomainEvent::Run { .. })) {
            return Err(format!("attempt_abandoned of run {expected_run} is not followed by its consequence"));
        }
        if let DomainEvent::Run { run_id, event } = &event {
            self.check(*run_id, event, at)?;
            if let RunEvent::LegitimacyEvaluated { decision, attempt } = event {
                allowed_now = decision.allowed().then_some((*run_id, *attempt));
            }
        }
        self.state.apply(position, at, event)?;
        self.allowed_just_before = allowed_now;
        Ok(())
    }
}
