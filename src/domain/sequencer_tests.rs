//! Lifecycle tests of the sequencer: given history, when command, then
//! answer and events.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::domain::authority::AuthorityChange as C;
use crate::domain::lifecycle::FailureReport;
use crate::domain::model::{
    AuthorityMode, ConnectionStatus, Lifecycle, OperationTypeSpec, RunOutcome, RunStatus, WorkerOutcome,
};
use crate::domain::reason::ReasonCode;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

struct Ids(u128);

impl RunIds for Ids {
    fn next_run_id(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u128(self.0)
    }
}

fn op(name: &str, capability: &str, provider_backed: bool, writes: bool, max_attempts: u32) -> C {
    C::OperationTypeRegistered(OperationTypeSpec {
        operation_type: name.into(),
        required_capability: capability.into(),
        provider_backed,
        writes,
        system_authority_allowed: name != "restore.execute",
        max_attempts,
        lease_seconds: crate::domain::model::LEASE_SECONDS_DEFAULT,
    })
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The seed world: w1 / t1 active / u1 with tenant.sync and tenant.restore /
/// c1 ready (default) and c1b ready / write gate open / four operation types.
fn sequencer() -> (Sequencer, Ids) {
    let mut sequencer = Sequencer::default();
    let changes = vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
        C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
        C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
        C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.restore") },
        C::ProviderConnectionRegistered { connection_id: s("c1"), tenant_id: s("t1"), status: ConnectionStatus::Ready },
        C::ProviderConnectionRegistered {
            connection_id: s("c1b"),
            tenant_id: s("t1"),
            status: ConnectionStatus::Ready,
        },
        C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1") },
        C::WriteGateChanged { tenant_id: s("t1"), open: true },
        op("inventory_sync", "tenant.sync", true, false, 3),
        op("entra_group_sync", "tenant.sync", true, false, 3),
        op("provider.connection.check", "tenant.sync", true, false, 1),
        op("restore.execute", "tenant.restore", false, true, 2),
    ];
    authority(&mut sequencer, changes);
    (sequencer, Ids(0))
}

fn authority(sequencer: &mut Sequencer, changes: Vec<C>) {
    sequencer.record_authority(&Principal::actor("admin"), &changes, now()).unwrap();
}

fn request(operation_type: &str) -> StartRequest {
    StartRequest {
        operation_type: s(operation_type),
        tenant_id: s("t1"),
        initiator: Principal::actor("u1"),
        provider_connection_id: None,
        context: serde_json::json!({}),
        dedupe_key: None,
    }
}

fn start(sequencer: &mut Sequencer, ids: &mut Ids, request: &StartRequest) -> StartAnswer {
    sequencer.start(request, ids, now()).unwrap().0
}

fn accepted(sequencer: &mut Sequencer, ids: &mut Ids, operation_type: &str) -> Run {
    match start(sequencer, ids, &request(operation_type)) {
        StartAnswer::Accepted(run) => run,
        other => panic!("expected accepted, got {other:?}"),
    }
}

fn types(produced: &Produced) -> Vec<&'static str> {
    produced.events.iter().map(DomainEvent::event_type).collect()
}

fn completion(outcome: WorkerOutcome, retryable: bool) -> Completion {
    Completion {
        outcome,
        summary_counts: Some(serde_json::json!({"total": 10, "processed": 10, "bogus": 3})),
        failure: (outcome == WorkerOutcome::Failed)
            .then(|| FailureReport { code: Some(s("provider_timeout")), message: s("timed out") }),
        retryable: Some(retryable),
    }
}

#[test]
fn an_accepted_start_pins_the_default_connection_and_records_authority() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.outcome, RunOutcome::Pending);
    assert_eq!(run.provider_connection_id.as_deref(), Some("c1"));
    assert_eq!(run.authority_mode, AuthorityMode::ActorBound);
    assert_eq!(run.required_capability, "tenant.sync");
    assert_eq!(run.workspace_id, "w1");
    assert!(run.start_decision.allowed());
}

#[test]
fn the_pinned_connection_survives_a_change_of_the_default() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    authority(&mut sequencer, vec![C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1b") }]);
    let (decision, run, _) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert!(decision.allowed());
    assert_eq!(run.provider_connection_id.as_deref(), Some("c1"));
}

#[test]
fn a_blocked_start_is_recorded_terminal_and_can_never_begin() {
    let (mut sequencer, mut ids) = sequencer();
    authority(
        &mut sequencer,
        vec![C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }],
    );
    let (answer, produced) = sequencer.start(&request("inventory_sync"), &mut ids, now()).unwrap();
    let StartAnswer::Blocked(run) = answer else { panic!("expected blocked") };
    assert_eq!(types(&produced), ["run_start_blocked"]);
    assert_eq!((run.status, run.outcome), (RunStatus::Completed, RunOutcome::Blocked));
    assert_eq!(run.reason_code, Some(ReasonCode::CapabilityMissing));
    assert_eq!(run.next_step.as_deref(), Some(ReasonCode::CapabilityMissing.next_step()));
    assert_eq!(run.queued_at, None, "a blocked start was never queued");
    assert_eq!(sequencer.begin(run.id, &mut ids, now()).unwrap_err(), CommandRefused::NotLive(run.id));
}

#[test]
fn a_missing_or_not_ready_connection_blocks_the_start() {
    let (mut sequencer, mut ids) = sequencer();
    authority(
        &mut sequencer,
        vec![C::ProviderConnectionStatusChanged { connection_id: s("c1"), status: ConnectionStatus::ConsentRequired }],
    );
    let answer = start(&mut sequencer, &mut ids, &request("inventory_sync"));
    assert_eq!(answer.result(), "blocked");
    assert_eq!(answer.run().reason_code, Some(ReasonCode::ProviderConsentRequired));
    let missing = StartRequest { provider_connection_id: Some(s("c-unknown")), ..request("inventory_sync") };
    assert_eq!(
        start(&mut sequencer, &mut ids, &missing).run().reason_code,
        Some(ReasonCode::ProviderConnectionMissing)
    );
}

#[test]
fn a_system_start_off_the_allowlist_is_blocked() {
    let (mut sequencer, mut ids) = sequencer();
    let system = StartRequest { initiator: Principal::System, ..request("restore.execute") };
    let answer = start(&mut sequencer, &mut ids, &system);
    assert_eq!(answer.run().reason_code, Some(ReasonCode::SystemAuthorityNotAllowed));
    assert_eq!(answer.run().authority_mode, AuthorityMode::SystemAuthority);
}

#[test]
fn the_same_identity_is_deduped_onto_the_live_run() {
    let (mut sequencer, mut ids) = sequencer();
    let first = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let (answer, produced) = sequencer.start(&request("inventory_sync"), &mut ids, now()).unwrap();
    assert_eq!(answer, StartAnswer::Deduped(sequencer.state().run(&first.id).unwrap().clone()));
    assert_eq!(types(&produced), ["run_start_deduped"]);
    assert_eq!(sequencer.state().live_runs(), 1);
}

#[test]
fn a_dedupe_key_narrows_the_identity() {
    let (mut sequencer, mut ids) = sequencer();
    let keyed = |key: &str| StartRequest { dedupe_key: Some(s(key)), ..request("restore.execute") };
    assert_eq!(start(&mut sequencer, &mut ids, &keyed("a")).result(), "accepted");
    assert_eq!(start(&mut sequencer, &mut ids, &keyed("b")).result(), "accepted");
    assert_eq!(start(&mut sequencer, &mut ids, &keyed("a")).result(), "deduped");
    assert_eq!(start(&mut sequencer, &mut ids, &request("restore.execute")).result(), "deduped");
}

#[test]
fn another_run_on_the_same_scope_is_refused_as_scope_busy() {
    let (mut sequencer, mut ids) = sequencer();
    let holder = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let (answer, produced) = sequencer.start(&request("entra_group_sync"), &mut ids, now()).unwrap();
    let StartAnswer::ScopeBusy(blocking) = answer else { panic!("expected scope busy") };
    assert_eq!(blocking.id, holder.id);
    assert_eq!(types(&produced), ["run_start_rejected_scope_busy"]);
    let other_scope = StartRequest { provider_connection_id: Some(s("c1b")), ..request("entra_group_sync") };
    assert_eq!(start(&mut sequencer, &mut ids, &other_scope).result(), "accepted");
}

#[test]
fn begin_appends_the_decision_and_the_start_together() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let (decision, run, produced) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert!(decision.allowed());
    assert_eq!(types(&produced), ["legitimacy_evaluated", "run_started"]);
    assert_eq!((run.status, run.attempts, run.attempt), (RunStatus::Running, 1, 1));
    assert_eq!(decision.authority_position, sequencer.state().authority.position);
    assert_eq!(
        sequencer.begin(run.id, &mut ids, now()).unwrap_err().to_string(),
        format!("run {} is running: cannot begin", run.id)
    );
}

#[test]
fn a_revocation_between_queue_and_begin_blocks_the_run_and_frees_the_scope() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    authority(
        &mut sequencer,
        vec![C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }],
    );
    let (decision, run, produced) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert_eq!(types(&produced), ["legitimacy_evaluated", "run_blocked"]);
    assert_eq!(decision.reason_code, Some(ReasonCode::CapabilityMissing));
    assert_eq!((run.status, run.outcome), (RunStatus::Completed, RunOutcome::Blocked));
    assert_eq!(run.denial_class, Some(crate::domain::reason::DenialClass::Capability));
    assert!(sequencer.state().scope_holder("c1").is_none());
    assert_eq!(sequencer.state().live_runs(), 0);
}

#[test]
fn a_retryable_denial_requeues_with_a_fresh_decision_each_attempt_until_attempts_run_out() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    authority(
        &mut sequencer,
        vec![C::ProviderConnectionStatusChanged { connection_id: s("c1"), status: ConnectionStatus::Unreachable }],
    );
    for attempt in 1..=2 {
        let (decision, after, produced) = sequencer.begin(run.id, &mut ids, now()).unwrap();
        assert_eq!(decision.attempt, attempt);
        assert!(decision.retryable);
        assert_eq!(types(&produced), ["legitimacy_evaluated", "run_requeued"]);
        assert_eq!((after.status, after.attempt, after.attempts), (RunStatus::Queued, attempt + 1, attempt));
        assert_eq!(after.reason_code, Some(ReasonCode::ProviderConnectionUnreachable), "the denial stays visible");
    }
    let (decision, after, produced) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert_eq!(decision.attempt, 3);
    assert_eq!(types(&produced), ["legitimacy_evaluated", "run_blocked"]);
    assert_eq!(after.outcome, RunOutcome::Blocked);
}

#[test]
fn a_retryable_worker_failure_requeues_and_the_next_begin_decides_afresh() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    sequencer.begin(run.id, &mut ids, now()).unwrap();
    let (after, produced) =
        sequencer.complete(run.id, &completion(WorkerOutcome::Failed, true), &mut ids, now()).unwrap();
    assert_eq!(types(&produced), ["run_requeued"]);
    assert_eq!((after.status, after.attempt), (RunStatus::Queued, 2));
    let (decision, _, _) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert_eq!(decision.attempt, 2);
    let (done, _) = sequencer.complete(run.id, &completion(WorkerOutcome::Failed, false), &mut ids, now()).unwrap();
    assert_eq!((done.status, done.outcome), (RunStatus::Completed, RunOutcome::Failed));
    assert_eq!(done.failure.as_ref().and_then(|f| f.code.as_deref()), Some("provider_timeout"));
}

#[test]
fn a_retryable_failure_on_the_last_attempt_fails_the_run() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "provider.connection.check");
    sequencer.begin(run.id, &mut ids, now()).unwrap();
    let (done, _) = sequencer.complete(run.id, &completion(WorkerOutcome::Failed, true), &mut ids, now()).unwrap();
    assert_eq!(done.outcome, RunOutcome::Failed);
}

#[test]
fn completion_normalizes_summary_counts() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    sequencer.begin(run.id, &mut ids, now()).unwrap();
    sequencer.progress(run.id, &serde_json::json!({"total": 10, "processed": 4, "failed": -1}), now()).unwrap();
    let (done, _) = sequencer.complete(run.id, &completion(WorkerOutcome::Succeeded, false), &mut ids, now()).unwrap();
    assert_eq!(done.outcome, RunOutcome::Succeeded);
    assert_eq!(done.summary_counts.total, Some(10));
    assert_eq!(done.summary_counts.processed, Some(10));
    assert_eq!(done.summary_counts.failed, None);
}

#[test]
fn transitions_the_state_does_not_allow_are_refused_and_produce_nothing() {
    let (mut sequencer, mut ids) = sequencer();
    let run = accepted(&mut sequencer, &mut ids, "inventory_sync");
    let position = sequencer.state().position;
    let refused = sequencer.complete(run.id, &completion(WorkerOutcome::Succeeded, false), &mut ids, now());
    assert!(matches!(refused, Err(CommandRefused::Transition(TransitionRefused { status: RunStatus::Queued, .. }))));
    assert!(sequencer.progress(run.id, &serde_json::json!({}), now()).is_err());
    assert_eq!(
        sequencer.begin(Uuid::from_u128(999), &mut ids, now()).unwrap_err(),
        CommandRefused::NotLive(Uuid::from_u128(999))
    );
    assert_eq!(sequencer.state().position, position);
}

#[test]
fn bad_start_requests_are_errors_that_produce_nothing() {
    let (mut sequencer, mut ids) = sequencer();
    let position = sequencer.state().position;
    let cases = [
        (request("no_such_type"), "unknown operation type no_such_type"),
        (StartRequest { tenant_id: s("t9"), ..request("inventory_sync") }, "unknown tenant t9"),
        (
            StartRequest { context: serde_json::json!([1]), ..request("inventory_sync") },
            "context must be a JSON object",
        ),
        (
            StartRequest { provider_connection_id: Some(s("c1")), ..request("restore.execute") },
            "restore.execute is not provider-backed and takes no provider connection",
        ),
        (StartRequest { dedupe_key: Some(s("")), ..request("inventory_sync") }, "dedupe_key must be 1 to 128 bytes"),
        (
            StartRequest {
                context: serde_json::json!({ "a": "x".repeat(2000), "c": vec!["x".repeat(2000); 10] }),
                ..request("inventory_sync")
            },
            "the limit is 16384",
        ),
    ];
    for (bad, message) in cases {
        let error = sequencer.start(&bad, &mut ids, now()).unwrap_err();
        assert!(error.to_string().contains(message), "{error} should say {message}");
    }
    assert_eq!(sequencer.state().position, position);
}

#[test]
fn an_authority_batch_with_one_bad_change_records_none_of_it() {
    let (mut sequencer, _) = sequencer();
    let before = sequencer.state().clone();
    let batch = vec![
        C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u2") },
        C::TenantMemberAdded { tenant_id: s("t-unknown"), actor_id: s("u2") },
    ];
    let error = sequencer.record_authority(&Principal::System, &batch, now()).unwrap_err();
    assert_eq!(error, CommandRefused::InvalidAuthorityChange { index: 1, reason: s("unknown tenant t-unknown") });
    assert_eq!(sequencer.state(), &before);
}

#[test]
fn a_batch_start_admits_follow_ups_one_by_one_as_the_scope_frees() {
    let (mut sequencer, mut ids) = sequencer();
    let batch = [s("inventory_sync"), s("entra_group_sync"), s("provider.connection.check")];
    let (answer, retained, produced) =
        sequencer.start_batch(&batch, &request("inventory_sync"), &mut ids, now()).unwrap();
    assert_eq!(answer.result(), "accepted");
    assert_eq!(retained, [s("entra_group_sync"), s("provider.connection.check")]);
    assert_eq!(types(&produced), ["run_queued", "follow_ups_retained"]);
    let first = answer.run().id;
    sequencer.begin(first, &mut ids, now()).unwrap();
    let (_, produced) =
        sequencer.complete(first, &completion(WorkerOutcome::Succeeded, false), &mut ids, now()).unwrap();
    assert_eq!(types(&produced), ["run_completed", "follow_up_admitted", "run_queued", "follow_ups_retained"]);
    let second = sequencer.state().scope_holder("c1").unwrap().clone();
    assert_eq!(second.operation_type, "entra_group_sync");
    assert_eq!(second.admitted_from, Some(first));
    assert_eq!(second.follow_ups, [s("provider.connection.check")]);
    assert!(sequencer.state().run(&first).is_none(), "the first run is done once its follow-ups moved on");
}

#[test]
fn a_blocked_follow_up_is_recorded_and_the_next_one_is_admitted() {
    let (mut sequencer, mut ids) = sequencer();
    let batch = [s("inventory_sync"), s("restore.execute"), s("entra_group_sync")];
    let (answer, _, _) = sequencer.start_batch(&batch, &request("inventory_sync"), &mut ids, now()).unwrap();
    authority(&mut sequencer, vec![C::WriteGateChanged { tenant_id: s("t1"), open: false }]);
    let first = answer.run().id;
    sequencer.begin(first, &mut ids, now()).unwrap();
    let (_, produced) =
        sequencer.complete(first, &completion(WorkerOutcome::Succeeded, false), &mut ids, now()).unwrap();
    assert_eq!(
        types(&produced),
        ["run_completed", "follow_up_admitted", "run_start_blocked", "follow_up_admitted", "run_queued"]
    );
    assert_eq!(sequencer.state().scope_holder("c1").unwrap().operation_type, "entra_group_sync");
}

#[test]
fn a_batch_whose_first_start_is_refused_retains_nothing() {
    let (mut sequencer, mut ids) = sequencer();
    accepted(&mut sequencer, &mut ids, "inventory_sync");
    let batch = [s("entra_group_sync"), s("provider.connection.check")];
    let (answer, retained, _) = sequencer.start_batch(&batch, &request("entra_group_sync"), &mut ids, now()).unwrap();
    assert_eq!(answer.result(), "scope_busy");
    assert!(retained.is_empty());
}

#[test]
fn times_never_go_backwards() {
    let (mut sequencer, mut ids) = sequencer();
    let later = now() + chrono::Duration::seconds(10);
    let run = sequencer.start(&request("inventory_sync"), &mut ids, later).unwrap().0.run().clone();
    let (_, after, _) = sequencer.begin(run.id, &mut ids, now()).unwrap();
    assert_eq!(after.started_at, Some(later));
}

/// Issue 9: every id of a start, a batch start and an authority change goes
/// through one check; a refused command produces nothing.
#[test]
fn ids_that_are_invisible_not_nfc_or_credentials_are_refused_everywhere() {
    let (mut sequencer, mut ids) = sequencer();
    let position = sequencer.state().position;
    let starts = [
        (StartRequest { tenant_id: s("t1\u{200B}"), ..request("inventory_sync") }, "tenant_id contains U+200B"),
        (
            StartRequest { operation_type: s("inventory_sync\u{202E}"), ..request("x") },
            "operation_type contains U+202E",
        ),
        (
            StartRequest { initiator: Principal::actor("u\t1"), ..request("inventory_sync") },
            "initiator.id contains U+0009",
        ),
        (StartRequest { initiator: Principal::actor("e\u{301}"), ..request("inventory_sync") }, "not in Unicode NFC"),
        (
            StartRequest { dedupe_key: Some(s("password=hunter2")), ..request("inventory_sync") },
            "dedupe_key looks like a credential",
        ),
        (
            StartRequest { provider_connection_id: Some(s("conn-token=abc")), ..request("inventory_sync") },
            "provider_connection_id looks like a credential",
        ),
    ];
    for (bad, message) in starts {
        let error = sequencer.start(&bad, &mut ids, now()).unwrap_err();
        assert!(matches!(error, CommandRefused::Start(StartRejected::Invalid(_))), "{error:?}");
        assert!(error.to_string().contains(message), "{error} should say {message}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
    let batch = [s("inventory_sync"), s("entra_group_sync\u{200B}")];
    let error = sequencer.start_batch(&batch, &request("inventory_sync"), &mut ids, now()).unwrap_err();
    assert!(error.to_string().contains("operation_types contains U+200B"), "{error}");

    let changes = [
        (C::WorkspaceRegistered { workspace_id: s("w\u{200B}") }, "workspace_id contains U+200B"),
        (C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1\u{202E}") }, "actor_id contains U+202E"),
        (
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync\t") },
            "capability contains U+0009",
        ),
        (
            C::ProviderConnectionRegistered {
                connection_id: s("conn-token=abc"),
                tenant_id: s("t1"),
                status: ConnectionStatus::Ready,
            },
            "connection_id looks like a credential",
        ),
        (op("caf\u{65}\u{301}", "tenant.sync", false, false, 1), "is not in Unicode NFC"),
    ];
    for (change, message) in changes {
        let error = sequencer.record_authority(&Principal::System, &[change], now()).unwrap_err();
        let CommandRefused::InvalidAuthorityChange { index: 0, reason } = &error else {
            panic!("{error:?} is not an invalid authority change");
        };
        assert!(reason.contains(message), "{reason} should say {message}");
    }
    let change = [C::WorkspaceRegistered { workspace_id: s("w9") }];
    let error = sequencer.record_authority(&Principal::actor("admin\u{200B}"), &change, now()).unwrap_err();
    assert!(error.to_string().contains("changed_by.id contains U+200B"), "{error}");
    assert_eq!(sequencer.state().position, position);
}

#[path = "sequencer_lease_tests.rs"]
mod leases;
