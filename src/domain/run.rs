//! A run: the events of its stream and the state folded from them.
//!
//! `Run::apply` is the only way a run's state changes (evolve); the gates
//! and the sequencer decide which events to append (decide).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::legitimacy::{Decision, RunFacts};
use crate::domain::model::{lease_seconds_default, AuthorityMode, Principal, RunOutcome, RunStatus, WorkerOutcome};
use crate::domain::reason::{DenialClass, ReasonCode};
use crate::domain::sanitize::SummaryCounts;

/// What a run is: fixed when it is queued (or blocked at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub run_id: Uuid,
    pub operation_type: String,
    pub tenant_id: String,
    pub workspace_id: String,
    pub initiator: Principal,
    pub authority_mode: AuthorityMode,
    pub required_capability: String,
    pub provider_backed: bool,
    pub writes: bool,
    /// Pinned at dispatch; never follows a later change of the tenant default.
    pub provider_connection_id: Option<String>,
    pub max_attempts: u32,
    pub dedupe_key: Option<String>,
    /// Sanitized before it reaches the log.
    pub context: serde_json::Value,
    /// The run whose completion admitted this one (sequential admission).
    pub admitted_from: Option<Uuid>,
    /// The lease of each attempt, pinned at dispatch like `max_attempts`.
    /// Absent in logs older than leases: the catalog's default.
    #[serde(default = "lease_seconds_default")]
    pub lease_seconds: u32,
}

impl RunSpec {
    pub fn facts(&self) -> RunFacts<'_> {
        RunFacts {
            run_id: self.run_id,
            operation_type: &self.operation_type,
            tenant_id: &self.tenant_id,
            workspace_id: &self.workspace_id,
            initiator: &self.initiator,
            provider_connection_id: self.provider_connection_id.as_deref(),
        }
    }
}

/// A failure a worker reports, sanitized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    #[schema(required = true)]
    pub code: Option<String>,
    pub message: String,
}

/// Why a run went back to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueCause {
    /// The legitimacy gate denied with a retryable reason.
    RetryableDenial,
    /// The worker reported a retryable failure.
    RetryableFailure,
    /// The attempt's lease lapsed (`attempt_abandoned` just before).
    LeaseExpired,
}

/// Every event of a run stream. Each carries the attempt it belongs to
/// (0: before any attempt, i.e. at the start gate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunEvent {
    /// Accepted by the start gate.
    RunQueued {
        attempt: u32,
        spec: RunSpec,
        start_decision: Decision,
    },
    /// Refused by the start gate: terminal, never queued.
    RunStartBlocked {
        attempt: u32,
        spec: RunSpec,
        start_decision: Decision,
        next_step: String,
    },
    /// A start with the same identity was answered with this run.
    RunStartDeduped {
        attempt: u32,
        requested_by: Principal,
        dedupe_key: Option<String>,
    },
    /// A start for this run's protected scope was refused while this run holds it.
    RunStartRejectedScopeBusy {
        attempt: u32,
        requested_by: Principal,
        operation_type: String,
    },
    /// Operation types to start, in order, once this run frees its scope.
    FollowUpsRetained {
        attempt: u32,
        operation_types: Vec<String>,
        provider_connection_id: Option<String>,
    },
    /// The next follow-up went through the start gate when this run ended.
    /// `result` is the start answer (`accepted`, `blocked`, `deduped`,
    /// `scope_busy`) or `rejected` when the request was not a valid start.
    FollowUpAdmitted {
        attempt: u32,
        operation_type: String,
        admitted_run_id: Option<Uuid>,
        result: String,
    },
    LegitimacyEvaluated {
        attempt: u32,
        decision: Decision,
    },
    RunStarted {
        attempt: u32,
    },
    RunProgressed {
        attempt: u32,
        summary_counts: SummaryCounts,
    },
    RunRequeued {
        attempt: u32,
        next_attempt: u32,
        cause: RequeueCause,
        reason_code: Option<ReasonCode>,
        failure: Option<Failure>,
    },
    /// The legitimacy gate refused for good: completed, outcome blocked.
    RunBlocked {
        attempt: u32,
        reason_code: ReasonCode,
        denial_class: DenialClass,
        next_step: String,
    },
    RunCompleted {
        attempt: u32,
        outcome: WorkerOutcome,
        summary_counts: SummaryCounts,
        failure: Option<Failure>,
    },
    /// A heartbeat found the lease more than half used: it runs again from
    /// the time of this event. Heartbeats that find it less used append nothing.
    LeaseRenewed {
        attempt: u32,
    },
    /// The running attempt's lease lapsed: its worker is taken as lost. The
    /// next event says what follows (requeued, or completed `worker_lost`).
    AttemptAbandoned {
        attempt: u32,
        lease_expired_at: DateTime<Utc>,
    },
    /// A service ended a queued or running run: completed, outcome cancelled.
    RunCancelled {
        attempt: u32,
        cancelled_by: Principal,
        /// Sanitized before it reaches the log.
        reason: Option<String>,
    },
}

impl RunEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            RunEvent::RunQueued { .. } => "run_queued",
            RunEvent::RunStartBlocked { .. } => "run_start_blocked",
            RunEvent::RunStartDeduped { .. } => "run_start_deduped",
            RunEvent::RunStartRejectedScopeBusy { .. } => "run_start_rejected_scope_busy",
            RunEvent::FollowUpsRetained { .. } => "follow_ups_retained",
            RunEvent::FollowUpAdmitted { .. } => "follow_up_admitted",
            RunEvent::LegitimacyEvaluated { .. } => "legitimacy_evaluated",
            RunEvent::RunStarted { .. } => "run_started",
            RunEvent::RunProgressed { .. } => "run_progressed",
            RunEvent::RunRequeued { .. } => "run_requeued",
            RunEvent::RunBlocked { .. } => "run_blocked",
            RunEvent::RunCompleted { .. } => "run_completed",
            RunEvent::LeaseRenewed { .. } => "lease_renewed",
            RunEvent::AttemptAbandoned { .. } => "attempt_abandoned",
            RunEvent::RunCancelled { .. } => "run_cancelled",
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            RunEvent::RunQueued { attempt, .. }
            | RunEvent::RunStartBlocked { attempt, .. }
            | RunEvent::RunStartDeduped { attempt, .. }
            | RunEvent::RunStartRejectedScopeBusy { attempt, .. }
            | RunEvent::FollowUpsRetained { attempt, .. }
            | RunEvent::FollowUpAdmitted { attempt, .. }
            | RunEvent::LegitimacyEvaluated { attempt, .. }
            | RunEvent::RunStarted { attempt }
            | RunEvent::RunProgressed { attempt, .. }
            | RunEvent::RunRequeued { attempt, .. }
            | RunEvent::RunBlocked { attempt, .. }
            | RunEvent::RunCompleted { attempt, .. }
            | RunEvent::LeaseRenewed { attempt }
            | RunEvent::AttemptAbandoned { attempt, .. }
            | RunEvent::RunCancelled { attempt, .. } => *attempt,
        }
    }

    /// Whether this event ends the run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEvent::RunStartBlocked { .. }
                | RunEvent::RunBlocked { .. }
                | RunEvent::RunCompleted { .. }
                | RunEvent::RunCancelled { .. }
        )
    }
}

/// A run as its events made it. Serializes to the API's Run shape (plus a
/// few fields beyond it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub operation_type: String,
    pub tenant_id: String,
    pub workspace_id: String,
    pub initiator: Principal,
    pub authority_mode: AuthorityMode,
    pub status: RunStatus,
    pub outcome: RunOutcome,
    #[schema(required = true)]
    pub provider_connection_id: Option<String>,
    /// Attempts begun (legitimacy decisions made at begin).
    pub attempts: u32,
    #[schema(required = true)]
    pub latest_decision: Option<Decision>,
    #[schema(required = true)]
    pub reason_code: Option<ReasonCode>,
    #[schema(required = true)]
    pub denial_class: Option<DenialClass>,
    #[schema(required = true)]
    pub next_step: Option<String>,
    pub summary_counts: SummaryCounts,
    #[schema(required = true)]
    pub queued_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// The attempt the next begin (or the running attempt) belongs to.
    pub attempt: u32,
    pub required_capability: String,
    pub max_attempts: u32,
    #[schema(required = true)]
    pub dedupe_key: Option<String>,
    pub context: serde_json::Value,
    #[schema(required = true)]
    pub failure: Option<Failure>,
    pub follow_ups: Vec<String>,
    /// The connection follow-ups are started on.
    #[schema(required = true)]
    pub follow_up_connection: Option<String>,
    #[schema(required = true)]
    pub admitted_from: Option<Uuid>,
    pub start_decision: Decision,
    /// When the running attempt's lease lapses unless renewed (heartbeat,
    /// progress); `None` unless running.
    #[serde(default)]
    #[schema(required = true)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The last attempt abandoned because its lease lapsed.
    #[serde(default)]
    #[schema(required = true)]
    pub abandoned_attempt: Option<u32>,
    /// The lease of each attempt, in seconds (from the spec; kept here
    /// because read models store runs without their spec).
    #[serde(default = "lease_seconds_default")]
    #[schema(required = true)]
    pub lease_seconds: u32,
    /// Who cancelled the run, and why (sanitized), when it was cancelled.
    #[serde(default)]
    #[schema(required = true)]
    pub cancelled_by: Option<Principal>,
    #[serde(default)]
    #[schema(required = true)]
    pub cancel_reason: Option<String>,
    #[serde(skip)]
    #[schema(required = true)]
    pub spec: Option<Box<RunSpec>>,
    /// Events applied (the run stream's version).
    pub version: u64,
}

impl Run {
    /// The state after the first event of a run stream.
    pub fn create(event: &RunEvent, at: DateTime<Utc>) -> Result<Run, String> {
        let (spec, decision, blocked) = match event {
            RunEvent::RunQueued { spec, start_decision, .. } => (spec, start_decision, None),
            RunEvent::RunStartBlocked { spec, start_decision, next_step, .. } => {
                (spec, start_decision, Some(next_step))
            }
            other => return Err(format!("a run stream cannot begin with {}", other.event_type())),
        };
        let mut run = Run {
            id: spec.run_id,
            operation_type: spec.operation_type.clone(),
            tenant_id: spec.tenant_id.clone(),
            workspace_id: spec.workspace_id.clone(),
            initiator: spec.initiator.clone(),
            authority_mode: spec.authority_mode,
            status: RunStatus::Queued,
            outcome: RunOutcome::Pending,
            provider_connection_id: spec.provider_connection_id.clone(),
            attempts: 0,
            latest_decision: None,
            reason_code: None,
            denial_class: None,
            next_step: None,
            summary_counts: SummaryCounts::default(),
            queued_at: Some(at),
            started_at: None,
            completed_at: None,
            attempt: 1,
            required_capability: spec.required_capability.clone(),
            max_attempts: spec.max_attempts,
            dedupe_key: spec.dedupe_key.clone(),
            context: spec.context.clone(),
            failure: None,
            follow_ups: Vec::new(),
            follow_up_connection: None,
            admitted_from: spec.admitted_from,
            start_decision: decision.clone(),
            lease_expires_at: None,
            lease_seconds: spec.lease_seconds,
            abandoned_attempt: None,
            cancelled_by: None,
            cancel_reason: None,
            spec: Some(Box::new(spec.clone())),
            version: 1,
        };
        if let Some(next_step) = blocked {
            run.queued_at = None;
            run.complete_blocked(decision.reason_code, decision.denial_class, next_step, at);
        }
        Ok(run)
    }

    pub fn is_terminal(&self) -> bool {
        self.status == RunStatus::Completed
    }

    pub fn spec(&self) -> Option<&RunSpec> {
        self.spec.as_deref()
    }

    /// Whether this run holds its protected scope (provider-backed, accepted, not terminal).
    pub fn holds_scope(&self) -> bool {
        !self.is_terminal() && self.spec().is_some_and(|s| s.provider_backed) && self.provider_connection_id.is_some()
    }

    fn complete_blocked(
        &mut self,
        reason: Option<ReasonCode>,
        class: Option<DenialClass>,
        next_step: &str,
        at: DateTime<Utc>,
    ) {
        self.status = RunStatus::Completed;
        self.outcome = RunOutcome::Blocked;
        self.reason_code = reason;
        self.denial_class = class;
        self.next_step = Some(next_step.to_owned());
        self.completed_at = Some(at);
    }

    /// Applies the next event of the stream; refuses one the lifecycle does
    /// not allow (which would mean the log holds what the ledger never decided).
    pub fn apply(&mut self, event: &RunEvent, at: DateTime<Utc>) -> Result<(), String> {
        self.check_attempt(event)?;
        match event {
            RunEvent::RunQueued { .. } | RunEvent::RunStartBlocked { .. } => {
                return Err(format!("{} can only begin a run stream", event.event_type()))
            }
            RunEvent::RunStartDeduped { .. } | RunEvent::RunStartRejectedScopeBusy { .. } => {
                self.require_live(event)?
            }
            RunEvent::FollowUpsRetained { operation_types, provider_connection_id, .. } => {
                self.require_live(event)?;
                self.follow_ups = operation_types.clone();
                self.follow_up_connection = provider_connection_id.clone();
            }
            RunEvent::FollowUpAdmitted { operation_type, result, .. } => {
                self.admit_follow_up(operation_type, result)?
            }
            RunEvent::LegitimacyEvaluated { decision, .. } => self.evaluated(event, decision)?,
            RunEvent::RunStarted { .. } => {
                self.started(at)?;
                self.renew_lease(at);
            }
            RunEvent::RunProgressed { summary_counts, .. } => {
                self.require_leased(event)?;
                self.summary_counts = self.summary_counts.merge(*summary_counts);
                self.renew_lease(at);
            }
            RunEvent::LeaseRenewed { .. } => {
                self.require_leased(event)?;
                self.renew_lease(at);
            }
            RunEvent::AttemptAbandoned { attempt, lease_expired_at } => {
                self.abandoned(event, *attempt, *lease_expired_at, at)?
            }
            RunEvent::RunCancelled { cancelled_by, reason, .. } => {
                self.require_live(event)?;
                self.status = RunStatus::Completed;
                self.outcome = RunOutcome::Cancelled;
                self.cancelled_by = Some(cancelled_by.clone());
                self.cancel_reason = reason.clone();
                self.lease_expires_at = None;
                self.completed_at = Some(at);
            }
            RunEvent::RunRequeued { next_attempt, failure, .. } => self.requeued(event, *next_attempt, failure)?,
            RunEvent::RunBlocked { reason_code, denial_class, next_step, .. } => {
                self.require(RunStatus::Queued, event)?;
                if !self.latest_decision.as_ref().is_some_and(|d| !d.allowed() && d.attempt == self.attempt) {
                    return Err("run_blocked without a denied decision for the attempt".into());
                }
                self.complete_blocked(Some(*reason_code), Some(*denial_class), next_step, at);
            }
            RunEvent::RunCompleted { outcome, summary_counts, failure, .. } => {
                self.require(RunStatus::Running, event)?;
                self.status = RunStatus::Completed;
                self.outcome = outcome.outcome();
                self.summary_counts = self.summary_counts.merge(*summary_counts);
                self.failure = failure.clone();
                self.lease_expires_at = None;
                self.completed_at = Some(at);
            }
        }
        self.version += 1;
        Ok(())
    }

    fn check_attempt(&self, event: &RunEvent) -> Result<(), String> {
        let expected = match event {
            RunEvent::RunStartDeduped { .. }
            | RunEvent::RunStartRejectedScopeBusy { .. }
            | RunEvent::FollowUpsRetained { .. }
            | RunEvent::FollowUpAdmitted { .. } => return Ok(()),
            _ => self.attempt,
        };
        match event.attempt() == expected {
            true => Ok(()),
            false => Err(format!(
                "{} for attempt {} while the run is at attempt {expected}",
                event.event_type(),
                event.attempt()
            )),
        }
    }

    fn require(&self, status: RunStatus, event: &RunEvent) -> Result<(), String> {
        match self.status == status {
            true => Ok(()),
            false => Err(format!("{} on a run that is {}", event.event_type(), self.status.as_str())),
        }
    }

    fn require_live(&self, event: &RunEvent) -> Result<(), String> {
        match self.is_terminal() {
            false => Ok(()),
            true => Err(format!("{} on a completed run", event.event_type())),
        }
    }

    /// An accepted follow-up takes the rest of the list with it; any other
    /// answer leaves the rest here for the next admission.
    fn admit_follow_up(&mut self, operation_type: &str, result: &str) -> Result<(), String> {
        if !self.is_terminal() {
            return Err("a follow-up is admitted only once its run has ended".into());
        }
        match self.follow_ups.first() {
            Some(next) if next == operation_type && result == "accepted" => self.follow_ups.clear(),
            Some(next) if next == operation_type => {
                self.follow_ups.remove(0);
            }
            _ => return Err(format!("{operation_type} is not the next follow-up")),
        }
        Ok(())
    }

    fn evaluated(&mut self, event: &RunEvent, decision: &Decision) -> Result<(), String> {
        self.require(RunStatus::Queued, event)?;
        if decision.attempt != self.attempt || decision.run_id != self.id {
            return Err("decision for another run or attempt".into());
        }
        if self.latest_decision.as_ref().is_some_and(|d| d.attempt == self.attempt) {
            return Err("a second decision for the same attempt".into());
        }
        self.attempts = self.attempt;
        self.latest_decision = Some(decision.clone());
        if let Some(reason) = decision.reason_code {
            self.reason_code = Some(reason);
            self.denial_class = decision.denial_class;
        }
        Ok(())
    }

    fn started(&mut self, at: DateTime<Utc>) -> Result<(), String> {
        if self.status != RunStatus::Queued {
            return Err(format!("run_started on a run that is {}", self.status.as_str()));
        }
        let allowed = self.latest_decision.as_ref().is_some_and(|d| d.allowed() && d.attempt == self.attempt);
        if !allowed {
            return Err("run_started without an allowed decision for the attempt".into());
        }
        self.status = RunStatus::Running;
        self.reason_code = None;
        self.denial_class = None;
        self.started_at = Some(at);
        Ok(())
    }

    fn requeued(&mut self, event: &RunEvent, next_attempt: u32, failure: &Option<Failure>) -> Result<(), String> {
        if self.is_terminal() {
            return Err("run_requeued on a completed run".into());
        }
        if next_attempt != self.attempt + 1 || next_attempt > self.max_attempts {
            return Err(format!("{} to attempt {next_attempt} of {}", event.event_type(), self.max_attempts));
        }
        self.status = RunStatus::Queued;
        self.attempt = next_attempt;
        self.failure = failure.clone();
        self.lease_expires_at = None;
        Ok(())
    }

    /// The lease of one attempt, pinned on the run's spec.
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.lease_seconds))
    }

    /// The lease runs for its full length from `at`.
    fn renew_lease(&mut self, at: DateTime<Utc>) {
        self.lease_expires_at = Some(at + self.lease());
    }

    /// Progress and renewals need a running attempt that was not abandoned.
    fn require_leased(&self, event: &RunEvent) -> Result<(), String> {
        self.require(RunStatus::Running, event)?;
        match self.abandoned_attempt == Some(self.attempt) {
            false => Ok(()),
            true => Err(format!("{} for an abandoned attempt", event.event_type())),
        }
    }

    /// The lease must have lapsed, as recorded, by the time of the event.
    fn abandoned(
        &mut self,
        event: &RunEvent,
        attempt: u32,
        lease_expired_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        self.require_leased(event)?;
        if self.lease_expires_at != Some(lease_expired_at) || lease_expired_at > at {
            return Err(format!("attempt {attempt} abandoned while its lease ran until {:?}", self.lease_expires_at));
        }
        self.abandoned_attempt = Some(attempt);
        self.lease_expires_at = None;
        Ok(())
    }
}
