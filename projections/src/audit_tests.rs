//! Tests of the audit trail over a real ledger, and the world and random
//! histories the notification tests share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::TimeZone;
use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, RunStatus, WorkerOutcome};
use opledger::domain::start_gate::StartRequest;
use opledger::log::views::View;
use opledger::log::{Durability, LogOptions};
use opledger::{Expectations, Log, NewEvent};
use proptest::prelude::*;

use super::*;
use crate::notifications::{self, Notifications};
use crate::projector::Projector;
use opledger::domain::reason::ReasonCode;

pub(crate) fn s(v: &str) -> String {
    v.to_owned()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A clock one second further on at every reading, so every command gets
/// its own recording time and time filters have something to cut.
pub(crate) fn options() -> LogOptions {
    let ticks = Arc::new(AtomicI64::new(0));
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let clock = move || start + chrono::Duration::seconds(ticks.fetch_add(1, Ordering::SeqCst));
    LogOptions { durability: Durability::Flush, clock: Arc::new(clock), ..LogOptions::default() }
}

/// Fields drop in order: the ledger before the directory it lives in.
pub(crate) struct World {
    pub ledger: Ledger,
    pub rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl World {
    /// A ledger with workspace w1, tenants t1 and t2, actors u1 and u2
    /// (u2 on t2 only), connections c1, c2 (t1) and c3 (t2).
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), options()).unwrap();
        let world = World { ledger, rt: runtime(), _dir: dir };
        world.authority("admin", authority_world());
        world
    }

    pub fn authority(&self, by: &str, changes: Vec<C>) {
        let by = if by == SYSTEM_ACTOR { Principal::System } else { Principal::actor(by) };
        self.rt.block_on(self.ledger.record_authority(by, changes)).unwrap();
    }

    pub fn start(&self, operation_type: &str, tenant: &str, initiator: Principal, connection: Option<&str>) -> Uuid {
        let request = StartRequest {
            operation_type: s(operation_type),
            tenant_id: s(tenant),
            initiator,
            provider_connection_id: connection.map(s),
            context: serde_json::json!({"note": "audit test"}),
            dedupe_key: None,
        };
        self.rt.block_on(self.ledger.start(request)).unwrap().run().id
    }

    pub fn begin(&self, run: Uuid) {
        self.rt.block_on(self.ledger.begin(run)).unwrap();
    }

    pub fn complete(&self, run: Uuid, outcome: WorkerOutcome, retryable: bool) {
        let failure = (outcome == WorkerOutcome::Failed)
            .then(|| FailureReport { code: Some(s("provider_error")), message: s("upstream timed out") });
        let completion = Completion { outcome, summary_counts: None, failure, retryable: Some(retryable) };
        self.rt.block_on(self.ledger.complete(run, completion)).unwrap();
    }

    pub fn projector(&self) -> Projector {
        let projections: Vec<Arc<dyn crate::projector::Projection>> = vec![Arc::new(Audit), Arc::new(Notifications)];
        Projector::open(Arc::clone(self.ledger.log()), projections).unwrap()
    }
}

pub(crate) fn operation(name: &str, provider_backed: bool, writes: bool, system: bool) -> C {
    C::OperationTypeRegistered(OperationTypeSpec {
        operation_type: s(name),
        required_capability: s("tenant.sync"),
        provider_backed,
        writes,
        system_authority_allowed: system,
        max_attempts: 3,
        // The shortest lease: the test clock ticks a second per command, so
        // random histories abandon attempts (`Step::Reap`) every few steps.
        lease_seconds: opledger::domain::model::LEASE_SECONDS_MIN,
    })
}

fn authority_world() -> Vec<C> {
    let mut changes = vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
        C::TenantRegistered { tenant_id: s("t2"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u2") },
        C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
        C::TenantMemberAdded { tenant_id: s("t2"), actor_id: s("u2") },
        C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
        C::CapabilityGranted { tenant_id: s("t2"), actor_id: s("u2"), capability: s("tenant.sync") },
        C::WriteGateChanged { tenant_id: s("t1"), open: true },
        operation("inventory_sync", true, false, true),
        operation("entra_group_sync", true, false, false),
        operation("restore.execute", false, true, false),
    ];
    for (connection, tenant) in [("c1", "t1"), ("c2", "t1"), ("c3", "t2")] {
        changes.push(C::ProviderConnectionRegistered {
            connection_id: s(connection),
            tenant_id: s(tenant),
            status: ConnectionStatus::Ready,
        });
    }
    changes.push(C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1") });
    changes.push(C::DefaultProviderConnectionSet { tenant_id: s("t2"), connection_id: s("c3") });
    changes
}

// ---------------------------------------------------------------- random histories

/// One step of a random history.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Revoke,
    Grant,
    Connection(ConnectionStatus),
    Lifecycle(Lifecycle),
    Start {
        kind: u8,
        connection: u8,
        system: bool,
    },
    Batch,
    /// Moves a live run on: a queued one begins, a running one completes.
    Advance {
        pick: u8,
        outcome: u8,
        retryable: bool,
    },
    Progress(u8),
    Read(u8),
    /// A heartbeat on a live run (refused unless it is running).
    Heartbeat(u8),
    /// A service cancels a live run.
    Cancel(u8),
    /// The reaper's pass: attempts whose lease lapsed are abandoned.
    Reap,
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    let status = prop_oneof![
        3 => Just(ConnectionStatus::Ready),
        1 => Just(ConnectionStatus::Unreachable),
        1 => Just(ConnectionStatus::Disabled),
    ];
    let lifecycle = prop_oneof![2 => Just(Lifecycle::Active), 1 => Just(Lifecycle::Archived)];
    prop_oneof![
        1 => Just(Step::Revoke),
        2 => Just(Step::Grant),
        2 => status.prop_map(Step::Connection),
        1 => lifecycle.prop_map(Step::Lifecycle),
        4 => (0u8..3, 0u8..2, any::<bool>()).prop_map(|(kind, connection, system)| Step::Start { kind, connection, system }),
        1 => Just(Step::Batch),
        10 => (any::<u8>(), 0u8..3, any::<bool>()).prop_map(|(pick, outcome, retryable)| Step::Advance { pick, outcome, retryable }),
        1 => any::<u8>().prop_map(Step::Progress),
        2 => any::<u8>().prop_map(Step::Read),
        2 => any::<u8>().prop_map(Step::Heartbeat),
        1 => any::<u8>().prop_map(Step::Cancel),
        4 => Just(Step::Reap),
    ]
}

fn authority_step(step: &Step) -> Option<C> {
    match step {
        Step::Revoke => {
            Some(C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") })
        }
        Step::Grant => {
            Some(C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") })
        }
        Step::Connection(status) => {
            Some(C::ProviderConnectionStatusChanged { connection_id: s("c1"), status: *status })
        }
        Step::Lifecycle(lifecycle) => Some(C::TenantLifecycleChanged { tenant_id: s("t1"), lifecycle: *lifecycle }),
        _ => None,
    }
}

fn start_request(operation_type: &str, initiator: Principal, connection: Option<&str>) -> StartRequest {
    StartRequest {
        operation_type: s(operation_type),
        tenant_id: s("t1"),
        initiator,
        provider_connection_id: connection.map(s),
        context: serde_json::json!({}),
        dedupe_key: None,
    }
}

/// Performs one step; refusals (a run that is not live …) are part of the game.
pub(crate) async fn perform(ledger: &Ledger, step: &Step, runs: &mut Vec<Uuid>) {
    if let Some(change) = authority_step(step) {
        ledger.record_authority(Principal::actor("admin"), vec![change]).await.unwrap();
        return;
    }
    let mut live: Vec<Uuid> = ledger.state().await.live_run_ids().copied().collect();
    live.sort();
    let pick = |index: &u8| live.get(usize::from(*index) % live.len().max(1)).copied();
    match step {
        Step::Start { kind, connection, system } => {
            let kind = ["inventory_sync", "entra_group_sync", "restore.execute"][usize::from(*kind)];
            let connection = (kind != "restore.execute").then(|| ["c1", "c2"][usize::from(*connection)]);
            let initiator = if *system { Principal::System } else { Principal::actor("u1") };
            runs.push(ledger.start(start_request(kind, initiator, connection)).await.unwrap().run().id);
        }
        Step::Batch => {
            let request = start_request("inventory_sync", Principal::actor("u1"), Some("c2"));
            let types = vec![s("inventory_sync"), s("entra_group_sync"), s("inventory_sync")];
            runs.push(ledger.start_batch(types, request).await.unwrap().first.run().id);
        }
        Step::Advance { pick: index, outcome, retryable } => {
            let Some(id) = pick(index) else { return };
            if ledger.run_status(id).await == Some(RunStatus::Queued) {
                let _ = ledger.begin(id).await;
                return;
            }
            let outcome = [WorkerOutcome::Succeeded, WorkerOutcome::PartiallySucceeded, WorkerOutcome::Failed]
                [usize::from(*outcome)];
            let completion = Completion { outcome, summary_counts: None, failure: None, retryable: Some(*retryable) };
            let _ = ledger.complete(id, completion).await;
        }
        Step::Progress(index) => {
            if let Some(id) = pick(index) {
                let _ = ledger.progress(id, serde_json::json!({"total": 3, "processed": 1})).await;
            }
        }
        Step::Read(index) => {
            if let Some(id) = runs.get(usize::from(*index) % runs.len().max(1)) {
                let _ = ledger.mark_notification_read("u1", *id).await;
            }
        }
        Step::Heartbeat(index) => {
            if let Some(id) = pick(index) {
                let _ = ledger.heartbeat(id, None).await;
            }
        }
        Step::Cancel(index) => {
            if let Some(id) = pick(index) {
                let request = opledger::domain::cancel::CancelRequest {
                    cancelled_by: Principal::actor("ops"),
                    reason: Some(s("not needed")),
                };
                let _ = ledger.cancel(id, request).await;
            }
        }
        Step::Reap => {
            ledger.reap_lapsed_leases().await.unwrap();
        }
        _ => {}
    }
}

/// Every audit entry matching `filter`, paged `page` at a time, newest
/// first; asserts no entry is served twice.
pub(crate) fn collect(log: &Log, view: &View, filter: &AuditFilter, page: usize) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let got = list(log, view, filter, cursor.as_deref(), Some(page)).unwrap();
        assert!(got.entries.len() <= page);
        entries.extend(got.entries);
        match got.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let positions: BTreeSet<u64> = entries.iter().map(|e| e.position).collect();
    assert_eq!(positions.len(), entries.len(), "an entry was served twice");
    assert!(entries.windows(2).all(|w| w[0].position > w[1].position), "newest first");
    entries
}

fn everything(log: &Log, view: &View) -> Vec<AuditEntry> {
    collect(log, view, &AuditFilter::default(), PAGE_SIZE_MAX)
}

/// A second log holding the first `n` events of `log`, with the same ids,
/// streams, payloads and recording times.
pub(crate) fn truncated_copy(rt: &tokio::runtime::Runtime, log: &Log, n: u64) -> (tempfile::TempDir, Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let copy =
        Arc::new(Log::open(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap());
    let envelopes = log.read(1, usize::try_from(n).unwrap()).unwrap();
    assert_eq!(envelopes.len() as u64, n);
    rt.block_on(async {
        let mut pending = Vec::new();
        for envelope in &envelopes {
            let mut event = NewEvent::with_id(
                envelope.id,
                envelope.stream.clone(),
                &envelope.event_type,
                envelope.schema_version,
                &envelope.payload,
            )
            .unwrap();
            event.payload = envelope.payload.clone();
            event.causation_id = envelope.causation_id;
            event.correlation_id = envelope.correlation_id;
            let submitted = copy.submit_at(vec![event], Expectations::none(), Some(envelope.recorded_at));
            pending.push(submitted.await.unwrap());
        }
        for append in pending {
            append.wait().await.unwrap().unwrap();
        }
    });
    assert_eq!(copy.head().position, n);
    (dir, copy)
}

fn audit_of(log: &Arc<Log>) -> Vec<AuditEntry> {
    let projector = Projector::open(Arc::clone(log), vec![Arc::new(Audit)]).unwrap();
    everything(projector.log(), &projector.view(NAME).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Whatever the history: a rebuild equals the incremental state for
    /// both projections, rebuilding twice is identical, the audit holds one
    /// entry per event but progress, `as_of` is the audit of the cut log,
    /// and the notifications are exactly the actor-bound terminal runs.
    #[test]
    fn random_histories_rebuild_identically(steps in prop::collection::vec(step(), 1..60), cut in any::<prop::sample::Index>()) {
        let world = World::new();
        let projector = world.projector();
        let mut runs = Vec::new();
        for step in &steps {
            world.rt.block_on(perform(&world.ledger, step, &mut runs));
            projector.catch_up().unwrap();
        }
        let names = [NAME, notifications::NAME];
        let incremental: Vec<_> = names.iter().map(|n| projector.view(n).unwrap().entries().unwrap()).collect();
        projector.rebuild(&mut |_, _| {}).unwrap();
        let rebuilt: Vec<_> = names.iter().map(|n| projector.view(n).unwrap().entries().unwrap()).collect();
        prop_assert!(incremental == rebuilt, "a rebuild differs from the incremental state");
        projector.rebuild(&mut |_, _| {}).unwrap();
        let again: Vec<_> = names.iter().map(|n| projector.view(n).unwrap().entries().unwrap()).collect();
        prop_assert!(rebuilt == again, "two rebuilds differ");

        let log = world.ledger.log();
        let head = log.head().position;
        let audit = everything(projector.log(), &projector.view(NAME).unwrap());
        let events = log.read(1, usize::MAX).unwrap();
        let meaningful: Vec<u64> =
            events.iter().filter(|e| !["run_progressed", "lease_renewed"].contains(&e.event_type.as_str())).map(|e| e.position).rev().collect();
        prop_assert_eq!(audit.iter().map(|e| e.position).collect::<Vec<_>>(), meaningful);

        let n = cut.index(usize::try_from(head).unwrap()) as u64 + 1;
        let as_of = collect(projector.log(), &projector.view(NAME).unwrap(), &AuditFilter { as_of: Some(n), ..Default::default() }, 13);
        let (_copy_dir, copy) = truncated_copy(&world.rt, log, n);
        prop_assert_eq!(as_of, audit_of(&copy));

        crate::notifications::tests::check_against_log(&projector.view(notifications::NAME).unwrap(), &events);

        let mut replay = opledger::domain::replay::DecisionReplay::new();
        let report = opledger::verify::verify(log, None, &mut replay, &mut |_| {}).unwrap();
        prop_assert!(report.is_ok(), "verify re-derives every decision, abandonment and cancel: {report:?}");
        let count = |kind: &str| events.iter().filter(|e| e.event_type == kind).count() as u64;
        prop_assert_eq!(replay.abandonments_checked, count("attempt_abandoned"));
        prop_assert_eq!(replay.cancellations_checked, count("run_cancelled"));
    }
}

// ---------------------------------------------------------------- fixed histories

/// A small history over two tenants and three principals; returns the
/// first run (u1's, completed).
fn busy_world() -> (World, Projector, Uuid) {
    let world = World::new();
    let first = world.start("inventory_sync", "t1", Principal::actor("u1"), None);
    world.begin(first);
    world.rt.block_on(world.ledger.progress(first, serde_json::json!({"total": 2}))).unwrap();
    world.complete(first, WorkerOutcome::PartiallySucceeded, false);
    let second = world.start("inventory_sync", "t2", Principal::actor("u2"), None);
    world.start("inventory_sync", "t2", Principal::actor("u2"), None); // deduped onto `second`
    world.start("entra_group_sync", "t2", Principal::actor("u2"), None); // scope busy
    world.begin(second);
    world.complete(second, WorkerOutcome::Failed, false);
    let scheduled = world.start("inventory_sync", "t1", Principal::System, Some("c2"));
    world.authority(
        "admin",
        vec![C::ProviderConnectionStatusChanged { connection_id: s("c2"), status: ConnectionStatus::Disabled }],
    );
    world.begin(scheduled); // blocked by the legitimacy gate
    world.authority(
        "admin",
        vec![C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }],
    );
    world.start("restore.execute", "t1", Principal::actor("u1"), None); // blocked at start
    let projector = world.projector();
    (world, projector, first)
}

#[test]
fn entries_say_who_did_what_where() {
    let (_world, projector, _) = busy_world();
    let audit = everything(projector.log(), &projector.view(NAME).unwrap());
    let find = |action: &str| audit.iter().find(|e| e.action == action).unwrap().clone();
    let revoked = find("capability_revoked");
    assert_eq!(revoked.summary, "Capability tenant.sync revoked from actor u1 on tenant t1");
    assert_eq!(revoked.caused_by, Principal::actor("admin"));
    assert_eq!((revoked.tenant_id.as_deref(), revoked.workspace_id.as_deref()), (Some("t1"), Some("w1")));
    assert_eq!(revoked.details["change"]["capability"], "tenant.sync");
    let status = find("provider_connection_status_changed");
    assert_eq!(status.tenant_id.as_deref(), Some("t1"), "a connection's tenant comes from the authority state");
    assert_eq!(status.summary, "Provider connection c2 is now disabled");
    let workspace = find("workspace_registered");
    assert_eq!((workspace.tenant_id, workspace.workspace_id.as_deref()), (None, Some("w1")));

    let start_blocked = find("run_start_blocked");
    assert_eq!(
        start_blocked.summary,
        format!(
            "Run of restore.execute on tenant t1 blocked at start: {}",
            ReasonCode::CapabilityMissing.operator_message()
        )
    );
    assert_eq!(start_blocked.caused_by, Principal::actor("u1"));
    let deduped = find("run_start_deduped");
    assert_eq!((deduped.caused_by, deduped.tenant_id.as_deref()), (Principal::actor("u2"), Some("t2")));
    assert!(deduped.summary.contains("deduped"), "{}", deduped.summary);
    let busy = find("run_start_rejected_scope_busy");
    assert!(busy.summary.contains("entra_group_sync") && busy.summary.contains("scope busy"), "{}", busy.summary);
    assert!(audit.iter().filter(|e| e.action == "legitimacy_evaluated").all(|e| e.caused_by == Principal::System));
    let blocked = find("run_blocked");
    assert_eq!(blocked.caused_by, Principal::System, "the scheduled run's initiator is the system");
    assert_eq!(
        blocked.summary,
        format!(
            "Run of inventory_sync on tenant t1 blocked: {}",
            ReasonCode::ProviderConnectionDisabled.operator_message()
        )
    );
    let completed: Vec<&AuditEntry> = audit.iter().filter(|e| e.action == "run_completed").collect();
    assert!(completed.iter().any(|e| e.summary == "Run of inventory_sync on tenant t1 completed: partially succeeded"));
    assert!(audit.iter().all(|e| e.action != "run_progressed"));
    assert!(audit.iter().filter(|e| e.run_id.is_some()).all(|e| e.workspace_id.as_deref() == Some("w1")));
}

#[test]
fn a_read_is_audited_as_the_readers_act_on_the_runs_tenant() {
    let (world, projector, first) = busy_world();
    world.rt.block_on(world.ledger.mark_notification_read("u1", first)).unwrap();
    projector.catch_up().unwrap();
    let view = projector.view(NAME).unwrap();
    let reads = collect(
        projector.log(),
        &view,
        &AuditFilter { action: Some(s("notification_read")), ..Default::default() },
        10,
    );
    let [read] = reads.as_slice() else { panic!("one read entry, got {reads:?}") };
    assert_eq!(read.caused_by, Principal::actor("u1"));
    assert_eq!(
        (read.tenant_id.as_deref(), read.workspace_id.as_deref(), read.run_id),
        (Some("t1"), Some("w1"), Some(first))
    );
    assert_eq!(read.summary, "Actor u1 read the notification of the run of inventory_sync on tenant t1");
    assert_eq!(read.details, serde_json::json!({"type": "notification_read", "actor_id": "u1", "run_id": first}));
}

#[test]
fn filters_select_exactly_the_matching_entries() {
    let (_world, projector, _) = busy_world();
    let view = projector.view(NAME).unwrap();
    let audit = everything(projector.log(), &view);
    let some_run = audit.iter().find(|e| e.action == "run_start_deduped").unwrap().run_id.unwrap();
    let middle = audit[audit.len() / 2].recorded_at;
    let late = audit[audit.len() / 4].recorded_at;
    let filters = [
        AuditFilter { tenant_id: Some(s("t2")), ..Default::default() },
        AuditFilter { tenant_id: Some(s("t3")), ..Default::default() },
        AuditFilter { actor_id: Some(s("u2")), ..Default::default() },
        AuditFilter { actor_id: Some(s(SYSTEM_ACTOR)), ..Default::default() },
        AuditFilter { run_id: Some(some_run), ..Default::default() },
        AuditFilter { action: Some(s("legitimacy_evaluated")), ..Default::default() },
        AuditFilter { from: Some(middle), ..Default::default() },
        AuditFilter { to: Some(middle), ..Default::default() },
        AuditFilter { from: Some(middle), to: Some(late), tenant_id: Some(s("t1")), ..Default::default() },
        AuditFilter {
            actor_id: Some(s("u1")),
            action: Some(s("run_completed")),
            as_of: Some(40),
            ..Default::default()
        },
        AuditFilter { run_id: Some(some_run), actor_id: Some(s(SYSTEM_ACTOR)), ..Default::default() },
    ];
    for filter in &filters {
        let expected: Vec<AuditEntry> = audit.iter().filter(|e| expected_match(filter, e)).cloned().collect();
        for page in [1, 3, PAGE_SIZE_MAX] {
            assert_eq!(collect(projector.log(), &view, filter, page), expected, "{filter:?}, pages of {page}");
        }
        let mut lines = Vec::new();
        let written = export_jsonl(projector.log(), &view, filter, &mut lines).unwrap();
        let exported: Vec<AuditEntry> =
            String::from_utf8(lines).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(written, exported.len() as u64);
        assert_eq!(exported, expected.iter().rev().cloned().collect::<Vec<_>>(), "export is oldest first");
    }
    let time_bound = &filters[8];
    assert!(!collect(projector.log(), &view, time_bound, 5).is_empty(), "the time filter test selects something");
}

#[test]
fn time_ranges_cut_exactly_at_every_recorded_time() {
    let (_world, projector, _) = busy_world();
    let view = projector.view(NAME).unwrap();
    let audit = everything(projector.log(), &view);
    let micro = chrono::Duration::microseconds(1);
    let mut times: Vec<DateTime<Utc>> = audit.iter().map(|e| e.recorded_at).collect();
    times.sort();
    times.dedup();
    let (first, last) = (times[0], times[times.len() - 1]);
    let mut cuts: Vec<DateTime<Utc>> = times.iter().flat_map(|t| [*t - micro, *t, *t + micro]).collect();
    cuts.extend([first - chrono::Duration::days(1), last + chrono::Duration::days(1)]);
    for cut in cuts {
        for filter in [
            AuditFilter { from: Some(cut), ..Default::default() },
            AuditFilter { to: Some(cut), ..Default::default() },
            AuditFilter { from: Some(first), to: Some(cut), ..Default::default() },
        ] {
            let expected: Vec<AuditEntry> = audit.iter().filter(|e| expected_match(&filter, e)).cloned().collect();
            assert_eq!(collect(projector.log(), &view, &filter, PAGE_SIZE_MAX), expected, "{filter:?}");
        }
    }
}

/// The filter's meaning, written independently of the indexes.
fn expected_match(filter: &AuditFilter, entry: &AuditEntry) -> bool {
    let actor = match &entry.caused_by {
        Principal::Actor { id } => id.as_str(),
        Principal::System => "system",
    };
    filter.tenant_id.as_ref().is_none_or(|t| entry.tenant_id.as_ref() == Some(t))
        && filter.actor_id.as_deref().is_none_or(|a| a == actor)
        && filter.run_id.is_none_or(|r| entry.run_id == Some(r))
        && filter.action.as_ref().is_none_or(|a| a == &entry.action)
        && filter.from.is_none_or(|from| entry.recorded_at >= from)
        && filter.to.is_none_or(|to| entry.recorded_at < to)
        && filter.as_of.is_none_or(|n| entry.position <= n)
}

#[test]
fn a_page_ends_with_a_cursor_only_when_more_follow() {
    let (_world, projector, _) = busy_world();
    let view = projector.view(NAME).unwrap();
    let total = everything(projector.log(), &view).len();
    let exact = list(projector.log(), &view, &AuditFilter::default(), None, Some(total)).unwrap();
    assert_eq!((exact.entries.len(), exact.next_cursor), (total, None));
    let first = list(projector.log(), &view, &AuditFilter::default(), None, None).unwrap();
    assert_eq!(first.entries.len(), total.min(PAGE_SIZE_DEFAULT));
    let capped = list(projector.log(), &view, &AuditFilter::default(), None, Some(PAGE_SIZE_MAX * 10)).unwrap();
    assert_eq!(capped.entries.len(), total.min(PAGE_SIZE_MAX));
}

#[test]
fn malformed_cursors_are_refused() {
    let (_world, projector, _) = busy_world();
    let view = projector.view(NAME).unwrap();
    let valid = list(projector.log(), &view, &AuditFilter::default(), None, Some(2)).unwrap().next_cursor.unwrap();
    assert!(list(projector.log(), &view, &AuditFilter::default(), Some(&valid), Some(2)).is_ok());
    let bad = [
        "",
        "12",
        "au1.",
        "au1.zz00000000000000",
        "au1.0000000000000000",
        "au1.00000000000000001",
        "AU1.0000000000000001",
    ];
    for cursor in bad {
        let refused = list(projector.log(), &view, &AuditFilter::default(), Some(cursor), None);
        assert!(matches!(refused, Err(AuditError::InvalidCursor(_))), "{cursor:?}: {refused:?}");
    }
}

#[test]
fn a_selective_filter_examines_a_bounded_number_of_records_per_page() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap();
    let view = log.views().unwrap().current("audit-bound").unwrap();
    log_synthetic_first(&log);
    let total = RECORDS_EXAMINED_MAX as u64 + 500;
    let mut pending = view.pending();
    for position in 1..=total {
        let action = if position == 1 { "run_completed" } else { "run_started" };
        write_entry(&mut pending, &synthetic(position, action)).unwrap();
    }
    view.commit(pending, total).unwrap();
    let filter = AuditFilter { tenant_id: Some(s("t1")), action: Some(s("run_completed")), ..Default::default() };
    let first = list(&log, &view, &filter, None, None).unwrap();
    assert!(first.entries.is_empty(), "the only match lies beyond the examination bound");
    let cursor = first.next_cursor.expect("a short page carries a cursor");
    let second = list(&log, &view, &filter, Some(&cursor), None).unwrap();
    assert_eq!(second.entries.iter().map(|e| e.position).collect::<Vec<_>>(), [1]);
    assert_eq!(second.entries[0].details, serde_json::json!({"synthetic": true}), "the details come from the log");
    assert_eq!(second.next_cursor, None);
    assert_eq!(
        collect(&log, &view, &AuditFilter { action: Some(s("run_completed")), ..Default::default() }, 10).len(),
        1
    );
}

fn synthetic(position: u64, action: &str) -> Stored {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Stored {
        position,
        event_id: Uuid::from_u128(u128::from(position)),
        recorded_at: start + chrono::Duration::milliseconds(i64::try_from(position).unwrap()),
        action: s(action),
        caused_by: Principal::actor("u1"),
        tenant_id: Some(s("t1")),
        workspace_id: Some(s("w1")),
        run_id: None,
        summary: s("synthetic"),
    }
}

/// Appends the event a synthetic entry at position 1 stands for, so that
/// serving the entry finds its details in the log.
fn log_synthetic_first(log: &Log) {
    let id = synthetic(1, "run_completed").event_id;
    let stream = opledger::StreamId::new("synthetic").unwrap();
    let event = NewEvent::with_id(id, stream, "run_completed", 1, &serde_json::json!({"synthetic": true})).unwrap();
    log.append_blocking(vec![event], Expectations::none()).unwrap().unwrap();
}

#[test]
fn a_stored_entry_that_does_not_decode_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap();
    let view = log.views().unwrap().current("audit-corrupt").unwrap();
    let mut pending = view.pending();
    write_entry(&mut pending, &synthetic(1, "run_started")).unwrap();
    pending.put(entry_key(1), b"{not json".to_vec());
    view.commit(pending, 1).unwrap();
    let error = list(&log, &view, &AuditFilter::default(), None, None).unwrap_err();
    assert!(matches!(error, AuditError::Projection(ProjectionError::Corrupt { .. })), "{error:?}");
}

#[test]
fn counts_per_action_follow_the_log() {
    let (world, projector, _) = busy_world();
    let audit = everything(projector.log(), &projector.view(NAME).unwrap());
    let mut from_log: HashMap<String, usize> = HashMap::new();
    for envelope in world.ledger.log().read(1, usize::MAX).unwrap() {
        if envelope.event_type != "run_progressed" {
            *from_log.entry(envelope.event_type.clone()).or_default() += 1;
        }
    }
    let mut from_audit: HashMap<String, usize> = HashMap::new();
    for entry in &audit {
        *from_audit.entry(entry.action.clone()).or_default() += 1;
    }
    assert_eq!(from_audit, from_log);
    let by_position: BTreeMap<u64, &AuditEntry> = audit.iter().map(|e| (e.position, e)).collect();
    assert_eq!(
        entry(projector.log(), &projector.view(NAME).unwrap(), 1).unwrap().as_ref(),
        by_position.get(&1).copied()
    );
}

#[test]
fn an_entry_is_served_only_with_the_event_it_was_made_from() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap();
    log_synthetic_first(&log);
    let view = log.views().unwrap().current("audit-details").unwrap();
    let mut pending = view.pending();
    write_entry(&mut pending, &synthetic(1, "run_completed")).unwrap();
    view.commit(pending, 1).unwrap();
    assert_eq!(entry(&log, &view, 1).unwrap().unwrap().details, serde_json::json!({"synthetic": true}));
    let cases = [(1, Uuid::from_u128(77), "another event at the position"), (2, Uuid::from_u128(2), "no event")];
    for (position, event_id, why) in cases {
        let mut pending = view.pending();
        let stored = Stored { event_id, ..synthetic(position, "run_completed") };
        pending.put(entry_key(position), serde_json::to_vec(&stored).unwrap());
        view.commit(pending, 2).unwrap();
        let served = entry(&log, &view, position);
        assert!(matches!(served, Err(AuditError::Projection(ProjectionError::Corrupt { .. }))), "{why}: {served:?}");
    }
}
