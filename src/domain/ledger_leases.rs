//! The ledger's commands of issue 10: heartbeats, fenced progress and
//! completion, cancel, and the reaper's pass over lapsed leases. The
//! clock is read here and passed into the pure decisions.

use uuid::Uuid;

use super::{Ledger, LedgerError};
use crate::domain::cancel::CancelRequest;
use crate::domain::lease::fence;
use crate::domain::lifecycle::{Completion, TransitionRefused};
use crate::domain::run::Run;
use crate::domain::sequencer::CommandRefused;

impl Ledger {
    /// Progress of the attempt the worker names (`None`: the running one).
    pub async fn progress_attempt(
        &self,
        run_id: Uuid,
        attempt: Option<u32>,
        summary_counts: serde_json::Value,
    ) -> Result<Run, LedgerError> {
        let result =
            self.execute(move |sequencer, now| sequencer.progress_attempt(run_id, attempt, &summary_counts, now)).await;
        self.resolve_fenced(result, attempt, "report progress")
    }

    /// Ends the attempt the worker names (`None`: the running one).
    pub async fn complete_attempt(
        &self,
        run_id: Uuid,
        attempt: Option<u32>,
        completion: Completion,
    ) -> Result<Run, LedgerError> {
        let result = self
            .execute(move |sequencer, now| {
                sequencer.complete_attempt(run_id, attempt, &completion, &mut Uuid::now_v7, now)
            })
            .await;
        self.resolve_fenced(result, attempt, "complete")
    }

    /// A worker's sign of life; answers with the run and its lease.
    pub async fn heartbeat(&self, run_id: Uuid, attempt: Option<u32>) -> Result<Run, LedgerError> {
        let result = self.execute(move |sequencer, now| sequencer.heartbeat(run_id, attempt, now)).await;
        self.resolve_fenced(result, attempt, "heartbeat")
    }

    /// Cancels a queued or running run (completed, outcome cancelled).
    pub async fn cancel(&self, run_id: Uuid, request: CancelRequest) -> Result<Run, LedgerError> {
        let result =
            self.execute(move |sequencer, now| sequencer.cancel(run_id, &request, &mut Uuid::now_v7, now)).await;
        // An ended run (cancelled or not) cannot be cancelled: no fence here.
        self.resolve_not_live(result, "cancel").await
    }

    /// One pass of the reaper: abandons the attempts whose lease lapsed by
    /// now, through the sequencer like any command. Answers with the runs
    /// it abandoned, as they are after.
    pub async fn reap_lapsed_leases(&self) -> Result<Vec<Run>, LedgerError> {
        self.execute(move |sequencer, now| Ok(sequencer.reap(&mut Uuid::now_v7, now))).await
    }

    /// A run the sequencer does not hold live has ended: a late call from
    /// a lost worker or a call on a cancelled run is fenced; anything else
    /// is a transition its state does not allow; or the run is unknown.
    fn resolve_fenced<T>(
        &self,
        result: Result<T, LedgerError>,
        attempt: Option<u32>,
        action: &'static str,
    ) -> Result<T, LedgerError> {
        let Err(LedgerError::Refused(CommandRefused::NotLive(run_id))) = result else { return result };
        let Some(run) = self.run(run_id)? else { return Err(LedgerError::UnknownRun(run_id)) };
        fence(&run, attempt).map_err(CommandRefused::from)?;
        Err(CommandRefused::Transition(TransitionRefused { run_id, status: run.status, action }).into())
    }
}
