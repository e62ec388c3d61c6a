//! Tests of the ledger facade over a real log: races, random interleavings
//! replayed by `verify`, redaction down to the stored bytes, reopening.
//! Each runs on the log the test run's switch names (`log/test_log.rs`):
//! sled, or PostgreSQL with `OPLEDGER_TEST_LOG=postgres`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::domain::authority::AuthorityChange as C;
use crate::domain::lifecycle::FailureReport;
use crate::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, RunOutcome, WorkerOutcome};
use crate::domain::replay::DecisionReplay;
use crate::domain::sequencer::StartAnswer;
use crate::log::test_log::TestLog;
use crate::log::Durability;
use crate::verify::verify;
use chrono::Utc;

fn s(v: &str) -> String {
    v.to_owned()
}

pub(super) fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

/// A ledger over the log at `place`, as a node opens it.
pub(super) fn ledger_at(place: &TestLog, options: LogOptions) -> Ledger {
    let clock = Arc::clone(&options.clock);
    Ledger::over(Arc::new(place.open(options)), clock).unwrap()
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn op(name: &str, provider_backed: bool, writes: bool, system: bool) -> C {
    C::OperationTypeRegistered(OperationTypeSpec {
        operation_type: s(name),
        required_capability: s("tenant.sync"),
        provider_backed,
        writes,
        system_authority_allowed: system,
        max_attempts: 3,
        lease_seconds: crate::domain::model::LEASE_SECONDS_DEFAULT,
    })
}

pub(super) fn world(connections: &[&str]) -> Vec<C> {
    let mut changes = vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
        C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
        C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
        C::WriteGateChanged { tenant_id: s("t1"), open: true },
        op("inventory_sync", true, false, true),
        op("entra_group_sync", true, false, false),
        op("restore.execute", false, true, false),
    ];
    for connection in connections {
        changes.push(C::ProviderConnectionRegistered {
            connection_id: s(connection),
            tenant_id: s("t1"),
            status: ConnectionStatus::Ready,
        });
    }
    changes.push(C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s(connections[0]) });
    changes
}

pub(super) fn request(operation_type: &str, connection: Option<&str>) -> StartRequest {
    StartRequest {
        operation_type: s(operation_type),
        tenant_id: s("t1"),
        initiator: Principal::actor("u1"),
        provider_connection_id: connection.map(s),
        context: serde_json::json!({}),
        dedupe_key: None,
    }
}

pub(super) fn succeeded() -> Completion {
    Completion { outcome: WorkerOutcome::Succeeded, summary_counts: None, failure: None, retryable: None }
}

fn replay(log: &Log) -> DecisionReplay {
    let mut replay = DecisionReplay::new();
    let report = verify(log, None, &mut replay, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
    replay
}

#[test]
fn eight_racing_tasks_never_get_two_accepted_runs_on_one_scope() {
    let place = TestLog::fresh();
    let ledger = Arc::new(ledger_at(&place, options()));
    let scopes = ["c1", "c2", "c3", "c4"];
    let rt = runtime();
    let tally: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    rt.block_on(async {
        ledger.record_authority(Principal::System, world(&scopes)).await.unwrap();
        let mut tasks = Vec::new();
        for task in 0..8usize {
            let ledger = Arc::clone(&ledger);
            let tally = Arc::clone(&tally);
            tasks.push(tokio::spawn(async move {
                for round in 0..1000usize {
                    let scope = scopes[(task + round) % scopes.len()];
                    let kind = if round % 3 == 0 { "entra_group_sync" } else { "inventory_sync" };
                    let answer = ledger.start(request(kind, Some(scope))).await.unwrap();
                    let index = match &answer {
                        StartAnswer::Accepted(_) => 0,
                        StartAnswer::Deduped(_) => 1,
                        StartAnswer::ScopeBusy(_) => 2,
                        StartAnswer::Blocked(_) => 3,
                    };
                    tally[index].fetch_add(1, Ordering::Relaxed);
                    if let StartAnswer::Accepted(run) = answer {
                        if round % 2 == 0 {
                            tokio::task::yield_now().await;
                        }
                        ledger.begin(run.id).await.unwrap();
                        ledger.complete(run.id, succeeded()).await.unwrap();
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let counts: Vec<u64> = tally.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(counts.iter().sum::<u64>(), 8000);
    assert_eq!(counts[3], 0, "nothing here is illegitimate");
    assert!(counts[0] > 0 && counts[2] > 0, "the race produced both answers: {counts:?}");
    // The replay refuses a second accepted run on a held scope, so a clean
    // replay proves at most one accepted live run per scope at every position.
    let replayed = replay(ledger.log());
    assert_eq!(replayed.decisions_checked, counts[0]);
    eprintln!("race: accepted={} deduped={} scope_busy={}", counts[0], counts[1], counts[2]);
}

#[test]
fn canary_secrets_never_reach_the_stored_bytes() {
    let place = TestLog::fresh();
    let ledger = ledger_at(&place, options());
    let rt = runtime();
    rt.block_on(async {
        ledger.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        let context = serde_json::json!({
            "password": "CANARY-1",
            "nested": {"Client-Secret": "CANARY-2", "list": [{"apiKey": "CANARY-3"}]},
            "note": "called with Authorization: Bearer CANARY-4abcdef and token=CANARY-5",
            "url": "https://admin:CANARY-6@db.example.com/x?api_key=CANARY-7",
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlktOCJ9.c2lnbmF0dXJlLUNBTkFSWQ",
            "tenant_id": "t1"
        });
        let start = StartRequest { context, ..request("inventory_sync", None) };
        let run = ledger.start(start).await.unwrap().run().clone();
        ledger.begin(run.id).await.unwrap();
        let failure = FailureReport {
            code: Some(s("provider_error")),
            message: s("upstream said password=CANARY-9 and secret: CANARY-10"),
        };
        let completion = Completion {
            outcome: WorkerOutcome::Failed,
            summary_counts: Some(serde_json::json!({"total": 1, "CANARY-11": 5})),
            failure: Some(failure),
            retryable: Some(false),
        };
        let done = ledger.complete(run.id, completion).await.unwrap();
        assert_eq!(done.outcome, RunOutcome::Failed);
        assert_eq!(done.context["tenant_id"], "t1", "what is not secret is kept");
    });
    ledger.log().close();
    drop(ledger);
    let mut scanned = 0;
    let mut readable = false;
    for (location, bytes) in place.stored() {
        scanned += bytes.len();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("CANARY"), "a canary reached {location}");
        assert!(!text.contains("Q0FOQVJZ"), "a base64 canary reached {location}");
        readable |= text.contains("inventory_sync");
    }
    assert!(scanned > 0);
    assert!(readable, "the scan reads the stored events' text, so a canary there would be found");
}

#[test]
fn reopening_folds_the_log_back_into_the_same_state() {
    let place = TestLog::fresh();
    let rt = runtime();
    let (before, run_id) = {
        let ledger = ledger_at(&place, options());
        rt.block_on(async {
            ledger.record_authority(Principal::System, world(&["c1", "c2"])).await.unwrap();
            let done = ledger.start(request("inventory_sync", Some("c1"))).await.unwrap().run().id;
            ledger.begin(done).await.unwrap();
            ledger.complete(done, succeeded()).await.unwrap();
            let live = ledger.start(request("inventory_sync", Some("c2"))).await.unwrap().run().id;
            ledger.begin(live).await.unwrap();
            (ledger.state().await, live)
        })
    };
    let ledger = ledger_at(&place, options());
    let after = rt.block_on(ledger.state());
    assert_eq!(after, before);
    let from_log = ledger.run(run_id).unwrap().unwrap();
    assert_eq!(Some(&from_log), after.run(&run_id));
}

#[test]
fn illegal_transitions_and_unknown_runs_are_errors_that_append_nothing() {
    let place = TestLog::fresh();
    let ledger = ledger_at(&place, options());
    let rt = runtime();
    rt.block_on(async {
        ledger.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        let run = ledger.start(request("inventory_sync", None)).await.unwrap().run().id;
        ledger.begin(run).await.unwrap();
        ledger.complete(run, succeeded()).await.unwrap();
        let head = ledger.log().head();
        let again = ledger.begin(run).await.unwrap_err();
        assert!(again.to_string().contains("is completed: cannot begin"), "{again}");
        let unknown = Uuid::now_v7();
        assert!(
            matches!(ledger.complete(unknown, succeeded()).await, Err(LedgerError::UnknownRun(id)) if id == unknown)
        );
        let bad = ledger.record_authority(Principal::System, vec![C::WorkspaceRegistered { workspace_id: s("w1") }]);
        assert!(bad.await.is_err());
        assert_eq!(ledger.log().head(), head);
    });
}

#[test]
fn the_answer_equals_the_run_folded_from_the_log() {
    let place = TestLog::fresh();
    let ledger = ledger_at(&place, options());
    let rt = runtime();
    rt.block_on(async {
        ledger.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        let queued = ledger.start(request("inventory_sync", None)).await.unwrap().run().clone();
        assert_eq!(ledger.run(queued.id).unwrap(), Some(queued.clone()));
        let (_, running) = ledger.begin(queued.id).await.unwrap();
        assert_eq!(ledger.run(queued.id).unwrap(), Some(running));
        let done = ledger.complete(queued.id, succeeded()).await.unwrap();
        assert_eq!(ledger.run(queued.id).unwrap(), Some(done));
    });
}

#[test]
fn a_reopen_from_the_snapshot_equals_a_full_fold() {
    let place = TestLog::fresh();
    let rt = runtime();
    let before = {
        let ledger = Arc::new(ledger_at(&place, options()));
        rt.block_on(async {
            ledger.record_authority(Principal::System, world(&["c1", "c2", "c3"])).await.unwrap();
            let mut tasks = Vec::new();
            for task in 0..8 {
                let ledger = Arc::clone(&ledger);
                tasks.push(tokio::spawn(async move {
                    for round in 0..160 {
                        let key = format!("{task}-{round}");
                        let request = StartRequest { dedupe_key: Some(key), ..request("restore.execute", None) };
                        let run = ledger.start(request).await.unwrap().run().id;
                        ledger.begin(run).await.unwrap();
                        ledger.complete(run, succeeded()).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            // Still tracked at the snapshot: a live run, and an ended run with a follow-up.
            ledger.start(request("inventory_sync", Some("c1"))).await.unwrap();
            let batch = vec![s("inventory_sync"), s("entra_group_sync")];
            let first = ledger.start_batch(batch, request("inventory_sync", Some("c2"))).await.unwrap();
            let first = first.first.run().id;
            ledger.begin(first).await.unwrap();
            let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") };
            ledger.record_authority(Principal::System, vec![revoke]).await.unwrap();
            ledger.complete(first, succeeded()).await.unwrap();
            ledger.state().await
        })
    };
    assert!(before.position > crate::domain::snapshot::SNAPSHOT_EVERY_EVENTS);
    let log = Arc::new(place.open(options()));
    let stored = crate::domain::snapshot::load(&log).unwrap().expect("a snapshot was stored");
    assert!(stored.position >= crate::domain::snapshot::SNAPSHOT_EVERY_EVENTS && stored.position <= before.position);
    let restored = crate::domain::snapshot::restore(&log, &stored).unwrap().expect("the snapshot fits the log");
    let full = fold_from(&log, DomainState::default()).unwrap();
    assert_eq!(fold_from(&log, restored).unwrap(), full, "snapshot + tail equals a full fold");
    assert_eq!(full, before);
    let ledger = Ledger::over(Arc::clone(&log), Arc::new(Utc::now)).unwrap();
    assert_eq!(rt.block_on(ledger.state()), before);
}

#[test]
fn a_snapshot_that_does_not_fit_the_log_is_ignored() {
    let place = TestLog::fresh();
    let rt = runtime();
    let log = Arc::new(place.open(options()));
    let ledger = Ledger::over(Arc::clone(&log), Arc::new(Utc::now)).unwrap();
    rt.block_on(ledger.record_authority(Principal::System, world(&["c1"]))).unwrap();
    let wrong = crate::domain::snapshot::Snapshot { position: 3, runs: vec![Uuid::now_v7()] };
    crate::domain::snapshot::store(&log, &wrong).unwrap();
    assert_eq!(crate::domain::snapshot::restore(&log, &wrong).unwrap(), None);
    let reopened = Ledger::over(Arc::clone(&log), Arc::new(Utc::now)).unwrap();
    assert_eq!(rt.block_on(reopened.state()), rt.block_on(ledger.state()));
}

/// One step of a random interleaving.
#[derive(Debug, Clone)]
enum Step {
    Revoke,
    Grant,
    Connection(ConnectionStatus),
    Lifecycle(Lifecycle),
    WriteGate(bool),
    Start { kind: u8, connection: u8, system: bool },
    Begin(u8),
    Complete { pick: u8, outcome: u8, retryable: bool },
}

fn step() -> impl Strategy<Value = Step> {
    let status = prop_oneof![
        Just(ConnectionStatus::Ready),
        Just(ConnectionStatus::Unreachable),
        Just(ConnectionStatus::Disabled),
        Just(ConnectionStatus::ConsentRequired),
    ];
    let lifecycle = prop_oneof![Just(Lifecycle::Active), Just(Lifecycle::Archived), Just(Lifecycle::Onboarding)];
    prop_oneof![
        1 => Just(Step::Revoke),
        1 => Just(Step::Grant),
        2 => status.prop_map(Step::Connection),
        1 => lifecycle.prop_map(Step::Lifecycle),
        1 => any::<bool>().prop_map(Step::WriteGate),
        5 => (0u8..3, 0u8..2, any::<bool>()).prop_map(|(kind, connection, system)| Step::Start { kind, connection, system }),
        5 => any::<u8>().prop_map(Step::Begin),
        4 => (any::<u8>(), 0u8..3, any::<bool>()).prop_map(|(pick, outcome, retryable)| Step::Complete { pick, outcome, retryable }),
    ]
}

async fn perform(ledger: &Ledger, step: &Step) {
    let change = |change: C| vec![change];
    let authority = match step {
        Step::Revoke => {
            Some(change(C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }))
        }
        Step::Grant => {
            Some(change(C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }))
        }
        Step::Connection(status) => {
            Some(change(C::ProviderConnectionStatusChanged { connection_id: s("c1"), status: *status }))
        }
        Step::Lifecycle(lifecycle) => {
            Some(change(C::TenantLifecycleChanged { tenant_id: s("t1"), lifecycle: *lifecycle }))
        }
        Step::WriteGate(open) => Some(change(C::WriteGateChanged { tenant_id: s("t1"), open: *open })),
        _ => None,
    };
    if let Some(changes) = authority {
        ledger.record_authority(Principal::actor("admin"), changes).await.unwrap();
        return;
    }
    let live: Vec<Uuid> = {
        let state = ledger.state().await;
        let mut ids: Vec<Uuid> = state.live_run_ids().copied().collect();
        ids.sort();
        ids
    };
    let pick = |index: &u8| live.get(usize::from(*index) % live.len().max(1)).copied();
    match step {
        Step::Start { kind, connection, system } => {
            let kind = ["inventory_sync", "entra_group_sync", "restore.execute"][usize::from(*kind)];
            let connection = (kind != "restore.execute").then(|| ["c1", "c2"][usize::from(*connection)]);
            let initiator = if *system { Principal::System } else { Principal::actor("u1") };
            ledger.start(StartRequest { initiator, ..request(kind, connection) }).await.unwrap();
        }
        Step::Begin(index) => {
            if let Some(id) = pick(index) {
                let _ = ledger.begin(id).await;
            }
        }
        Step::Complete { pick: index, outcome, retryable } => {
            if let Some(id) = pick(index) {
                let outcome = [WorkerOutcome::Succeeded, WorkerOutcome::PartiallySucceeded, WorkerOutcome::Failed]
                    [usize::from(*outcome)];
                let completion =
                    Completion { outcome, summary_counts: None, failure: None, retryable: Some(*retryable) };
                let _ = ledger.complete(id, completion).await;
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever the interleaving: every decision replays identically, no
    /// run starts without an allowed decision just before it, one live run
    /// per scope at most, blocked never counted as failed.
    #[test]
    fn random_interleavings_keep_every_invariant(steps in prop::collection::vec(step(), 1..60)) {
        let place = TestLog::fresh();
        let ledger = ledger_at(&place, options());
        let rt = runtime();
        rt.block_on(async {
            ledger.record_authority(Principal::System, world(&["c1", "c2"])).await.unwrap();
            for step in &steps {
                perform(&ledger, step).await;
            }
        });
        let replayed = replay(ledger.log());
        let state = rt.block_on(ledger.state());
        prop_assert_eq!(replayed.state(), &state);
        let holders = ["c1", "c2"].iter().filter(|c| state.scope_holder(c).is_some()).count();
        prop_assert!(holders <= 2);
        for envelope in ledger.log().read(1, 10_000).unwrap() {
            if envelope.event_type == "run_completed" {
                let payload: serde_json::Value = envelope.payload_as().unwrap();
                prop_assert_ne!(&payload["outcome"], "blocked");
            }
        }
    }
}

/// A supervisor learns that the ledger stopped (and why) without sending a
/// command: `stopped()` and the watch say so once an append fails.
#[test]
fn a_failed_append_is_observable_as_stopped() {
    let place = TestLog::fresh();
    let rt = runtime();
    let ledger = ledger_at(&place, options());
    let mut watch = ledger.stopped_watch();
    assert_eq!(ledger.stopped(), None);
    rt.block_on(async {
        ledger.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        ledger.log().close();
        let failed = ledger.start(request("inventory_sync", Some("c1"))).await;
        assert!(matches!(failed, Err(LedgerError::Stopped(_))), "{failed:?}");
        watch.changed().await.unwrap();
        let refused = ledger.start(request("inventory_sync", Some("c1"))).await;
        assert!(matches!(refused, Err(LedgerError::Stopped(_))), "{refused:?}");
    });
    let why = ledger.stopped().expect("the ledger says it stopped");
    assert!(why.contains("closed"), "{why}");
    assert_eq!(watch.borrow().as_deref(), Some(why.as_str()));
}

#[path = "ledger_lease_tests.rs"]
mod leases;
