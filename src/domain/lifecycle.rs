//! Decisions on a run once it is queued: begin (through the legitimacy
//! gate), progress, complete. Pure: a run and the authority state in,
//! events or a refusal out.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::authority::AuthorityState;
use crate::domain::legitimacy::{evaluate, Decision};
use crate::domain::model::{check_id, RunStatus, WorkerOutcome};
use crate::domain::run::{Failure, RequeueCause, Run, RunEvent};
use crate::domain::sanitize::{sanitize_text, SummaryCounts};

/// A transition the run's state does not allow. Nothing is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run {run_id} is {}: cannot {action}", status.as_str())]
pub struct TransitionRefused {
    pub run_id: Uuid,
    pub status: RunStatus,
    pub action: &'static str,
}

/// What a worker reports when an attempt ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub outcome: WorkerOutcome,
    #[serde(default)]
    pub summary_counts: Option<serde_json::Value>,
    #[serde(default)]
    pub failure: Option<FailureReport>,
    #[serde(default)]
    pub retryable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    #[serde(default)]
    pub code: Option<String>,
    pub message: String,
}

fn require(run: &Run, status: RunStatus, action: &'static str) -> Result<(), TransitionRefused> {
    match run.status == status {
        true => Ok(()),
        false => Err(TransitionRefused { run_id: run.id, status: run.status, action }),
    }
}

/// Begin the run's current attempt: a fresh decision, appended together
/// with its consequence.
pub fn decide_begin(run: &Run, authority: &AuthorityState) -> Result<(Decision, Vec<RunEvent>), TransitionRefused> {
    require(run, RunStatus::Queued, "begin")?;
    let Some(spec) = run.spec() else {
        return Err(TransitionRefused { run_id: run.id, status: run.status, action: "begin" });
    };
    let attempt = run.attempt;
    let decision = evaluate(&spec.facts(), attempt, authority);
    let mut events = vec![RunEvent::LegitimacyEvaluated { attempt, decision: decision.clone() }];
    let consequence = match (decision.reason_code, decision.denial_class) {
        (None, _) => RunEvent::RunStarted { attempt },
        (Some(reason_code), _) if decision.retryable && attempt < run.max_attempts => RunEvent::RunRequeued {
            attempt,
            next_attempt: attempt + 1,
            cause: RequeueCause::RetryableDenial,
            reason_code: Some(reason_code),
            failure: None,
        },
        (Some(reason_code), Some(denial_class)) => {
            RunEvent::RunBlocked { attempt, reason_code, denial_class, next_step: reason_code.next_step().to_owned() }
        }
        (Some(reason_code), None) => RunEvent::RunBlocked {
            attempt,
            reason_code,
            denial_class: reason_code.denial_class(),
            next_step: reason_code.next_step().to_owned(),
        },
    };
    events.push(consequence);
    Ok((decision, events))
}

/// Record progress of the running attempt. Counts are normalized: only the
/// known keys with non-negative integer values are kept.
pub fn decide_progress(run: &Run, summary_counts: &serde_json::Value) -> Result<RunEvent, TransitionRefused> {
    require(run, RunStatus::Running, "report progress")?;
    Ok(RunEvent::RunProgressed { attempt: run.attempt, summary_counts: SummaryCounts::normalize(summary_counts) })
}

/// End the running attempt: completed, or back to queued when the worker
/// says the failure is retryable and attempts are left.
pub fn decide_complete(run: &Run, completion: &Completion) -> Result<RunEvent, TransitionRefused> {
    require(run, RunStatus::Running, "complete")?;
    let failure = completion.failure.as_ref().map(sanitize_failure);
    let counts = completion.summary_counts.as_ref().map(SummaryCounts::normalize).unwrap_or_default();
    let retry = completion.outcome == WorkerOutcome::Failed
        && completion.retryable.unwrap_or(false)
        && run.attempt < run.max_attempts;
    if retry {
        return Ok(RunEvent::RunRequeued {
            attempt: run.attempt,
            next_attempt: run.attempt + 1,
            cause: RequeueCause::RetryableFailure,
            reason_code: None,
            failure,
        });
    }
    Ok(RunEvent::RunCompleted { attempt: run.attempt, outcome: completion.outcome, summary_counts: counts, failure })
}

fn sanitize_failure(report: &FailureReport) -> Failure {
    let code = report.code.as_deref().map(|code| match check_id("failure code", code) {
        Ok(()) => sanitize_text(code),
        Err(_) => "invalid_code".to_owned(),
    });
    Failure { code, message: sanitize_text(&report.message) }
}
