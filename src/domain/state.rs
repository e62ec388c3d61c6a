//! The state both gates decide on: the authority state and the live runs,
//! folded from domain events. The sequencer keeps one in memory; `verify`
//! builds its own from the log to replay every decision.
//!
//! Only live runs are kept (and ended runs whose follow-ups are not yet all
//! admitted), so memory follows the work in flight, not the log's length.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::authority::AuthorityState;
use crate::domain::events::DomainEvent;
use crate::domain::model::RunStatus;
use crate::domain::run::{Run, RunEvent};

/// What makes two starts the same start (SPEC 3, step 4), less the dedupe
/// key, which only narrows the match when a request gives one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub operation_type: String,
    pub tenant_id: String,
    pub provider_connection_id: Option<String>,
}

impl IdentityKey {
    pub fn of(run: &Run) -> IdentityKey {
        IdentityKey {
            operation_type: run.operation_type.clone(),
            tenant_id: run.tenant_id.clone(),
            provider_connection_id: run.provider_connection_id.clone(),
        }
    }
}

/// Live runs by status, as the sequencer holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    pub queued: u64,
    pub running: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainState {
    /// Shared between copies until one changes it: the decider over a
    /// shared log copies the state every round as its rollback point, and
    /// the authority world (tenants, members, capabilities) is most of the
    /// state and changes rarely, so a copy costs the live runs only.
    pub authority: Arc<AuthorityState>,
    /// Live runs, plus ended runs that still have follow-ups to admit.
    runs: HashMap<Uuid, Run>,
    identities: HashMap<IdentityKey, BTreeSet<Uuid>>,
    /// Protected scope (pinned connection) → the run holding it.
    scopes: HashMap<String, Uuid>,
    /// Position of the last event applied.
    pub position: u64,
    /// Recording time of the last event applied.
    pub last_at: Option<DateTime<Utc>>,
}

impl DomainState {
    pub fn run(&self, run_id: &Uuid) -> Option<&Run> {
        self.runs.get(run_id)
    }

    /// How many live runs are queued and how many running (ended runs
    /// kept for their follow-ups are not counted).
    pub fn live_counts(&self) -> LiveCounts {
        let mut counts = LiveCounts::default();
        for run in self.runs.values() {
            match run.status {
                RunStatus::Queued => counts.queued += 1,
                RunStatus::Running => counts.running += 1,
                RunStatus::Completed => {}
            }
        }
        counts
    }

    /// A live run with the same identity (and the same dedupe key, when one is given).
    pub fn duplicate_of(&self, key: &IdentityKey, dedupe_key: Option<&str>) -> Option<&Run> {
        let candidates = self.identities.get(key)?;
        candidates
            .iter()
            .filter_map(|id| self.runs.get(id))
            .find(|run| dedupe_key.is_none() || run.dedupe_key.as_deref() == dedupe_key)
    }

    /// The run holding the protected scope of `connection_id`, if any.
    pub fn scope_holder(&self, connection_id: &str) -> Option<&Run> {
        self.scopes.get(connection_id).and_then(|id| self.runs.get(id))
    }

    /// How many runs are live (not terminal).
    pub fn live_runs(&self) -> usize {
        self.runs.values().filter(|run| !run.is_terminal()).count()
    }

    pub fn live_run_ids(&self) -> impl Iterator<Item = &Uuid> {
        self.runs.iter().filter(|(_, run)| !run.is_terminal()).map(|(id, _)| id)
    }

    /// Every run the state tracks: live, or ended with follow-ups to admit.
    pub fn tracked_run_ids(&self) -> Vec<Uuid> {
        self.runs.keys().copied().collect()
    }

    /// Completes a state whose authority is folded up to `position` with the
    /// runs tracked there (each folded from its stream up to `position`).
    pub fn restore(&mut self, runs: Vec<Run>, position: u64, at: DateTime<Utc>) -> Result<(), String> {
        for run in runs {
            if run.is_terminal() {
                if run.follow_ups.is_empty() {
                    return Err(format!("run {} is ended and has nothing left to admit", run.id));
                }
                self.runs.insert(run.id, run);
            } else {
                self.track(run)?;
            }
        }
        self.position = position;
        self.last_at = Some(at);
        Ok(())
    }

    /// Folds one event recorded at `position` and `at`, and returns the run
    /// it ended and dropped from the live set, if it did. An error means the
    /// log holds an event the ledger would never have decided.
    pub fn apply(&mut self, position: u64, at: DateTime<Utc>, event: &DomainEvent) -> Result<Option<Run>, String> {
        assert!(position > self.position, "events are applied in log order");
        let ended = match event {
            DomainEvent::Authority(changed) => {
                Arc::make_mut(&mut self.authority).apply(position, &changed.change)?;
                None
            }
            DomainEvent::Run { run_id, event } => self.apply_run(*run_id, at, event)?,
            // Read marks concern the notifications projection only.
            DomainEvent::NotificationRead(_) => None,
        };
        self.position = position;
        self.last_at = Some(at);
        Ok(ended)
    }

    fn apply_run(&mut self, run_id: Uuid, at: DateTime<Utc>, event: &RunEvent) -> Result<Option<Run>, String> {
        if matches!(event, RunEvent::RunQueued { .. } | RunEvent::RunStartBlocked { .. }) {
            if self.runs.contains_key(&run_id) {
                return Err(format!("run {run_id} is created twice"));
            }
            let run = Run::create(event, at)?;
            if run.id != run_id {
                return Err(format!("run {} recorded in the stream of run {run_id}", run.id));
            }
            return self.track(run).map(|()| None);
        }
        let Some(run) = self.runs.get_mut(&run_id) else {
            return Err(format!("{} for run {run_id}, which is not live", event.event_type()));
        };
        let held_scope = run.holds_scope();
        run.apply(event, at)?;
        if held_scope && !run.holds_scope() {
            if let Some(connection) = &run.provider_connection_id {
                self.scopes.remove(connection);
            }
        }
        if run.is_terminal() {
            let key = IdentityKey::of(run);
            if let Some(ids) = self.identities.get_mut(&key) {
                ids.remove(&run_id);
                if ids.is_empty() {
                    self.identities.remove(&key);
                }
            }
            if run.follow_ups.is_empty() {
                return Ok(self.runs.remove(&run_id));
            }
        }
        Ok(None)
    }

    fn track(&mut self, run: Run) -> Result<(), String> {
        if run.is_terminal() {
            return Ok(());
        }
        if let (true, Some(connection)) = (run.holds_scope(), &run.provider_connection_id) {
            if let Some(holder) = self.scopes.get(connection) {
                return Err(format!("run {} accepted while run {holder} holds scope {connection}", run.id));
            }
            self.scopes.insert(connection.clone(), run.id);
        }
        self.identities.entry(IdentityKey::of(&run)).or_default().insert(run.id);
        self.runs.insert(run.id, run);
        Ok(())
    }
}
