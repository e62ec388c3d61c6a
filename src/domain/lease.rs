//! Leases (issue 10, part 1): how long a running attempt may go without a
//! sign of life, what a heartbeat records, when an attempt is abandoned,
//! and the fence that refuses a lost worker's late calls. Pure: the run and
//! "now" in, events or a refusal out. The clock is read by the ledger and
//! passed in, by commands and by the server's reaper alike.
//!
//! Renewals: `run_started`, `run_progressed` and `lease_renewed` each start
//! the lease again from their own recording time, so the lease is a fold of
//! the log and a restart or `verify` sees exactly what the reaper saw. A
//! heartbeat appends `lease_renewed` only once more than half of the lease
//! is used, so a worker heartbeating every few seconds adds at most about
//! two events per lease, and a durable expiry is never less than half a
//! lease ahead of the worker's last heartbeat.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::domain::lifecycle::TransitionRefused;
use crate::domain::model::{RunOutcome, RunStatus, WorkerOutcome};
use crate::domain::run::{Failure, RequeueCause, Run, RunEvent};
use crate::domain::sanitize::SummaryCounts;

/// The failure code of an attempt whose worker was lost (lease lapsed).
pub const WORKER_LOST_CODE: &str = "worker_lost";

/// A worker's call refused because of the attempt it names or because the
/// run was cancelled. Nothing is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("attempt {attempt} of run {run_id} is not the running attempt: its lease expired")]
    LeaseExpired { run_id: Uuid, attempt: u32 },
    #[error("run {run_id} was cancelled")]
    RunCancelled { run_id: Uuid },
}

/// Checks a worker's call (`progress`, `heartbeat`, `complete`) against
/// the run: a cancelled run refuses every call; a call naming an attempt
/// that is not the run's current one, or one that was abandoned, is late.
/// A call naming no attempt acts on the current one.
pub fn fence(run: &Run, attempt: Option<u32>) -> Result<(), Fenced> {
    if run.outcome == RunOutcome::Cancelled {
        return Err(Fenced::RunCancelled { run_id: run.id });
    }
    match attempt {
        Some(named) if named != run.attempt || run.abandoned_attempt == Some(named) => {
            Err(Fenced::LeaseExpired { run_id: run.id, attempt: named })
        }
        _ => Ok(()),
    }
}

/// A heartbeat on the running attempt: `Some(lease_renewed)` once more
/// than half of the lease is used at `now`, `None` (nothing to append)
/// before that.
pub fn decide_heartbeat(run: &Run, now: DateTime<Utc>) -> Result<Option<RunEvent>, TransitionRefused> {
    if run.status != RunStatus::Running {
        return Err(TransitionRefused { run_id: run.id, status: run.status, action: "heartbeat" });
    }
    let half = run.lease() / 2;
    let renew = run.lease_expires_at.is_none_or(|expires| expires - now < half);
    Ok(renew.then_some(RunEvent::LeaseRenewed { attempt: run.attempt }))
}

/// Whether the run's attempt lease has lapsed at `now`.
pub fn lapsed(run: &Run, now: DateTime<Utc>) -> bool {
    run.status == RunStatus::Running
        && run.abandoned_attempt != Some(run.attempt)
        && run.lease_expires_at.is_some_and(|expires| expires <= now)
}

/// Abandons a running attempt whose lease lapsed by `now`: the abandonment
/// and its consequence, appended together. Attempts left: back to queued
/// (the next begin decides afresh). None left: completed, failed,
/// `worker_lost`. `None` when the lease has not lapsed.
pub fn decide_abandon(run: &Run, now: DateTime<Utc>) -> Option<[RunEvent; 2]> {
    if !lapsed(run, now) {
        return None;
    }
    let expired = run.lease_expires_at?;
    let attempt = run.attempt;
    let abandoned = RunEvent::AttemptAbandoned { attempt, lease_expired_at: expired };
    let when = expired.to_rfc3339_opts(SecondsFormat::Secs, true);
    let failure = Failure {
        code: Some(WORKER_LOST_CODE.to_owned()),
        message: format!("the worker of attempt {attempt} stopped reporting; its lease expired at {when}"),
    };
    let consequence = match attempt < run.max_attempts {
        true => RunEvent::RunRequeued {
            attempt,
            next_attempt: attempt + 1,
            cause: RequeueCause::LeaseExpired,
            reason_code: None,
            failure: Some(failure),
        },
        false => RunEvent::RunCompleted {
            attempt,
            outcome: WorkerOutcome::Failed,
            summary_counts: SummaryCounts::default(),
            failure: Some(failure),
        },
    };
    Some([abandoned, consequence])
}
