//! Given/when/then tests of issue 10's decisions: lease lapses, late calls
//! after abandonment, heartbeat renewals, cancel in each status and against
//! a batch's follow-up.

use super::*;
use crate::domain::cancel::CancelRequest;
use crate::domain::lease::{Fenced, WORKER_LOST_CODE};
use crate::domain::replay::DecisionReplay;

fn at(seconds: i64) -> DateTime<Utc> {
    now() + chrono::Duration::seconds(seconds)
}

/// Given a run of `operation_type` begun at `now()`.
fn running(sequencer: &mut Sequencer, ids: &mut Ids, operation_type: &str) -> Run {
    let run = accepted(sequencer, ids, operation_type);
    let (decision, run, _) = sequencer.begin(run.id, ids, now()).unwrap();
    assert!(decision.allowed());
    run
}

fn cancel_by(who: &str, reason: Option<&str>) -> CancelRequest {
    CancelRequest { cancelled_by: Principal::actor(who), reason: reason.map(str::to_owned) }
}

#[test]
fn begin_answers_with_a_lease_of_the_catalogs_length() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    assert_eq!(run.lease_expires_at, Some(at(300)), "the default lease is 300 seconds");
    assert_eq!(run.attempt, 1);
}

#[test]
fn a_lapsed_lease_with_attempts_left_requeues_and_the_next_begin_decides_afresh() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    let (reaped, produced) = sequencer.reap(&mut ids, at(299));
    assert!(reaped.is_empty() && produced.events.is_empty(), "a lease is not lapsed before it ends");
    let (reaped, produced) = sequencer.reap(&mut ids, at(300));
    assert_eq!(types(&produced), ["attempt_abandoned", "run_requeued"]);
    let requeued = &reaped[0];
    assert_eq!((requeued.status, requeued.attempt, requeued.lease_expires_at), (RunStatus::Queued, 2, None));
    assert_eq!(requeued.failure.as_ref().and_then(|f| f.code.as_deref()), Some(WORKER_LOST_CODE));
    let (decision, again, produced) = sequencer.begin(run.id, &mut ids, at(301)).unwrap();
    assert_eq!((decision.attempt, again.status), (2, RunStatus::Running));
    assert_eq!(types(&produced), ["legitimacy_evaluated", "run_started"]);
    assert_eq!(again.lease_expires_at, Some(at(601)));
}

#[test]
fn a_lapsed_lease_on_the_last_attempt_fails_the_run_as_worker_lost_and_frees_the_scope() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "provider.connection.check");
    let (reaped, produced) = sequencer.reap(&mut ids, at(400));
    assert_eq!(types(&produced), ["attempt_abandoned", "run_completed"]);
    let ended = &reaped[0];
    assert_eq!((ended.status, ended.outcome), (RunStatus::Completed, RunOutcome::Failed));
    assert_eq!(ended.failure.as_ref().and_then(|f| f.code.as_deref()), Some(WORKER_LOST_CODE));
    assert!(sequencer.state().scope_holder("c1").is_none(), "the scope is free");
    assert!(sequencer.state().run(&run.id).is_none());
    assert_eq!(start(&mut sequencer, &mut ids, &request("inventory_sync")).result(), "accepted");
}

#[test]
fn late_calls_of_an_abandoned_attempt_are_fenced_and_append_nothing() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    sequencer.reap(&mut ids, at(300));
    sequencer.begin(run.id, &mut ids, at(301)).unwrap();
    let position = sequencer.state().position;
    let late = Fenced::LeaseExpired { run_id: run.id, attempt: 1 };
    let counts = serde_json::json!({"processed": 1});
    assert_eq!(sequencer.progress_attempt(run.id, Some(1), &counts, at(302)).unwrap_err(), late.clone().into());
    assert_eq!(sequencer.heartbeat(run.id, Some(1), at(302)).unwrap_err(), late.clone().into());
    let done = completion(WorkerOutcome::Succeeded, false);
    assert_eq!(sequencer.complete_attempt(run.id, Some(1), &done, &mut ids, at(302)).unwrap_err(), late.into());
    assert_eq!(sequencer.state().position, position, "nothing appended");
    let (after, _) = sequencer.complete_attempt(run.id, Some(2), &done, &mut ids, at(303)).unwrap();
    assert_eq!(after.outcome, RunOutcome::Succeeded, "the running attempt still completes");
}

#[test]
fn heartbeats_renew_the_lease_but_append_only_once_it_is_half_used() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    let (early, produced) = sequencer.heartbeat(run.id, Some(1), at(100)).unwrap();
    assert!(produced.events.is_empty(), "a third of the lease used: nothing appended");
    assert_eq!(early.lease_expires_at, Some(at(300)));
    let (renewed, produced) = sequencer.heartbeat(run.id, None, at(160)).unwrap();
    assert_eq!(types(&produced), ["lease_renewed"]);
    assert_eq!(renewed.lease_expires_at, Some(at(460)));
    let (reaped, _) = sequencer.reap(&mut ids, at(400));
    assert!(reaped.is_empty(), "the renewed lease has not lapsed");
    let (progressed, _) = sequencer.progress_attempt(run.id, Some(1), &serde_json::json!({}), at(450)).unwrap();
    assert_eq!(progressed.lease_expires_at, Some(at(750)), "progress renews too");
    let (reaped, _) = sequencer.reap(&mut ids, at(750));
    assert_eq!(reaped.len(), 1);
}

#[test]
fn a_heartbeat_on_a_queued_run_is_refused() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let refused = sequencer.heartbeat(run.id, None, now());
    assert!(matches!(refused, Err(CommandRefused::Transition(TransitionRefused { status: RunStatus::Queued, .. }))));
}

#[test]
fn cancel_ends_a_queued_run_and_frees_its_scope() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let (cancelled, produced) =
        sequencer.cancel(run.id, &cancel_by("ops", Some("token=hunter2 wrong tenant")), &mut ids, now()).unwrap();
    assert_eq!(types(&produced), ["run_cancelled"]);
    assert_eq!((cancelled.status, cancelled.outcome), (RunStatus::Completed, RunOutcome::Cancelled));
    assert!(!cancelled.cancel_reason.as_deref().unwrap_or_default().contains("hunter2"), "the reason is sanitized");
    assert!(sequencer.state().scope_holder("c1").is_none());
    assert_eq!(start(&mut sequencer, &mut ids, &request("inventory_sync")).result(), "accepted");
}

#[test]
fn cancel_ends_a_running_run_and_its_worker_learns_it_as_run_cancelled() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    let (cancelled, _) = sequencer.cancel(run.id, &cancel_by("ops", None), &mut ids, now()).unwrap();
    assert_eq!(cancelled.outcome, RunOutcome::Cancelled);
    assert_eq!(crate::domain::lease::fence(&cancelled, Some(1)), Err(Fenced::RunCancelled { run_id: run.id }));
    assert_eq!(sequencer.heartbeat(run.id, Some(1), now()).unwrap_err(), CommandRefused::NotLive(run.id));
}

#[test]
fn cancel_of_a_completed_run_is_refused() {
    let (mut sequencer, mut ids) = sequencer();
    let run = running(&mut sequencer, &mut ids, "inventory_sync");
    let (done, _) = sequencer.complete(run.id, &completion(WorkerOutcome::Succeeded, false), &mut ids, now()).unwrap();
    assert_eq!(
        crate::domain::cancel::decide_cancel(&done, &cancel_by("ops", None)),
        Err(TransitionRefused { run_id: run.id, status: RunStatus::Completed, action: "cancel" })
    );
    assert_eq!(
        sequencer.cancel(run.id, &cancel_by("ops", None), &mut ids, now()).unwrap_err(),
        CommandRefused::NotLive(run.id)
    );
}

#[test]
fn cancel_admits_the_next_follow_up_of_a_batch() {
    let (mut sequencer, mut ids) = sequencer();
    let batch = [s("inventory_sync"), s("entra_group_sync")];
    let (answer, _, _) = sequencer.start_batch(&batch, &request("inventory_sync"), &mut ids, now()).unwrap();
    let (_, produced) = sequencer.cancel(answer.run().id, &cancel_by("ops", None), &mut ids, now()).unwrap();
    assert_eq!(types(&produced), ["run_cancelled", "follow_up_admitted", "run_queued"]);
    assert_eq!(sequencer.state().scope_holder("c1").unwrap().operation_type, "entra_group_sync");
}

#[test]
fn cancel_by_an_invalid_principal_is_refused() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let refused = sequencer.cancel(run.id, &cancel_by("system", None), &mut ids, now());
    assert!(matches!(refused, Err(CommandRefused::Invalid(_))));
}

/// Replay re-derives abandonments and cancellations from the events alone,
/// and refuses an abandonment whose lease had not lapsed.
#[test]
fn replay_re_derives_abandonments_and_cancellations() {
    let (mut sequencer, mut ids) = sequencer();
    let mut events = Vec::new();
    let mut record = |produced: Produced, when: DateTime<Utc>| {
        events.extend(produced.events.into_iter().map(|event| (event, when)));
    };
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let (_, _, produced) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    record(produced, now());
    let (_, produced) = sequencer.reap(&mut ids, at(300));
    record(produced, at(300));
    let (_, produced) = sequencer.cancel(run.id, &cancel_by("ops", None), &mut ids, at(301)).unwrap();
    record(produced, at(301));
    assert_eq!(events.len(), 5);
    // Replay over a fresh fold of the same history (authority and start first).
    let (mut fresh, mut fresh_ids) = super::sequencer();
    accepted(&mut fresh, &mut fresh_ids, "inventory_sync");
    let base = fresh.state().clone();
    let replay_all = |events: &[(DomainEvent, DateTime<Utc>)]| {
        let mut replay = DecisionReplay::over(base.clone());
        for (offset, (event, when)) in events.iter().enumerate() {
            replay.observe_event(base.position + 1 + offset as u64, *when, event)?;
        }
        Ok::<_, String>((replay.abandonments_checked, replay.cancellations_checked))
    };
    assert_eq!(replay_all(&events), Ok((1, 1)));
    let mut early = events.clone();
    early[2].1 = at(299);
    early[3].1 = at(299);
    assert!(replay_all(&early).is_err(), "an abandonment before the lease lapsed does not replay");
}
