//! Cancel (issue 10, part 2): a service ends a queued or running run.
//! Pure: the run and the request in, the event or a refusal out.

use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::TransitionRefused;
use crate::domain::model::{Principal, RunStatus};
use crate::domain::run::{Run, RunEvent};
use crate::domain::sanitize::sanitize_text;

/// A cancel, as a service asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub cancelled_by: Principal,
    /// Free text for people; sanitized (secrets redacted, bounded) before
    /// it reaches the log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A run can be cancelled while it is queued or running; a completed run
/// (whatever its outcome) cannot.
pub fn check_cancellable(run: &Run) -> Result<(), TransitionRefused> {
    match run.status {
        RunStatus::Queued | RunStatus::Running => Ok(()),
        RunStatus::Completed => Err(TransitionRefused { run_id: run.id, status: run.status, action: "cancel" }),
    }
}

/// The `run_cancelled` event for `run`: completed, outcome cancelled.
pub fn decide_cancel(run: &Run, request: &CancelRequest) -> Result<RunEvent, TransitionRefused> {
    check_cancellable(run)?;
    Ok(RunEvent::RunCancelled {
        attempt: run.attempt,
        cancelled_by: request.cancelled_by.clone(),
        reason: request.reason.as_deref().map(sanitize_text),
    })
}
