//! Tests of the Monitoring projection over histories made by a real ledger:
//! incremental equals rebuild (random histories), restart from the
//! checkpoint, the lifecycle as Monitoring shows it (never running without
//! an allowed decision, blocked never failed) and refusal of events the
//! fold does not allow. The queries are tested in `monitoring_query_tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::events::{run_id_of, DomainEvent};
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Lifecycle, Principal, RunOutcome, RunStatus, WorkerOutcome};
use opledger::domain::reason::{DenialClass, ReasonCode};
use opledger::domain::run::{Run, RunEvent};
use opledger::domain::sequencer::StartAnswer;
use opledger::domain::start_gate::StartRequest;
use opledger::{Durability, Expectations, Log, LogOptions};
use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::error::ProjectionError;
use crate::projector::Projector;
use crate::store;
use crate::test_world::{operation, s, Place};

const TENANTS: [&str; 3] = ["t1", "t2", "t3"];
const KINDS: [&str; 3] = ["inventory_sync", "entra_group_sync", "restore.execute"];
/// First second of the test clock.
const T0: i64 = 1_800_000_000;

/// The initiating actor of each tenant.
fn actor_of(tenant: &str) -> &'static str {
    match tenant {
        "t3" => "u2",
        _ => "u1",
    }
}

/// w1 holds t1 (connections c1 default, c2) and t2 (c3); w2 holds t3 (c4).
/// u1 may sync t1 and t2, u2 may sync t3; write gates are open.
fn authority() -> Vec<C> {
    let mut changes = vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::WorkspaceRegistered { workspace_id: s("w2") },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
        C::WorkspaceMemberAdded { workspace_id: s("w2"), actor_id: s("u2") },
    ];
    for (tenant, workspace, connections) in
        [("t1", "w1", &["c1", "c2"][..]), ("t2", "w1", &["c3"]), ("t3", "w2", &["c4"])]
    {
        let actor = actor_of(tenant);
        changes.extend([
            C::TenantRegistered { tenant_id: s(tenant), workspace_id: s(workspace), lifecycle: Lifecycle::Active },
            C::TenantMemberAdded { tenant_id: s(tenant), actor_id: s(actor) },
            C::CapabilityGranted { tenant_id: s(tenant), actor_id: s(actor), capability: s("tenant.sync") },
            C::WriteGateChanged { tenant_id: s(tenant), open: true },
        ]);
        for connection in connections {
            changes.push(C::ProviderConnectionRegistered {
                connection_id: s(connection),
                tenant_id: s(tenant),
                status: ConnectionStatus::Ready,
            });
        }
        changes.push(C::DefaultProviderConnectionSet { tenant_id: s(tenant), connection_id: s(connections[0]) });
    }
    changes.extend([
        operation("inventory_sync", true, false, true),
        operation("entra_group_sync", true, false, false),
        operation("restore.execute", false, true, false),
    ]);
    changes
}

/// A ledger with the world above, a clock that ticks one second per read,
/// and a runtime to drive it.
/// Fields drop in order: the ledger before the place its log lives in.
struct World {
    ledger: Ledger,
    rt: tokio::runtime::Runtime,
    /// The next second the clock reads.
    ticks: Arc<AtomicI64>,
    place: Place,
}

impl World {
    fn new() -> World {
        let ticks = Arc::new(AtomicI64::new(T0));
        let reading = Arc::clone(&ticks);
        let clock = move || DateTime::from_timestamp(reading.fetch_add(1, Ordering::SeqCst), 0).unwrap();
        let options = LogOptions { durability: Durability::Flush, clock: Arc::new(clock), ..LogOptions::default() };
        let (ledger, place) = Place::open(options);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(ledger.record_authority(Principal::System, authority())).unwrap();
        World { ledger, rt, ticks, place }
    }

    fn read_models(&self) -> &std::path::Path {
        self.place.read_models()
    }

    /// Moves the clock on to `second` (never back: the log's times only grow).
    fn jump_to(&self, second: i64) {
        self.ticks.fetch_max(second, Ordering::SeqCst);
    }

    fn projector(&self) -> Projector {
        Projector::open_in(self.read_models(), Arc::clone(self.ledger.log()), vec![Arc::new(Monitoring)]).unwrap()
    }

    fn head(&self) -> u64 {
        self.ledger.log().head().position
    }

    fn authority(&self, change: C) {
        self.rt.block_on(self.ledger.record_authority(Principal::actor("admin"), vec![change])).unwrap();
    }

    fn start(&self, tenant: &str, kind: &str, connection: Option<&str>, system: bool) -> StartAnswer {
        self.start_keyed(tenant, kind, connection, system, None)
    }

    fn start_keyed(
        &self,
        tenant: &str,
        kind: &str,
        connection: Option<&str>,
        system: bool,
        dedupe_key: Option<String>,
    ) -> StartAnswer {
        let initiator = if system { Principal::System } else { Principal::actor(actor_of(tenant)) };
        let request = StartRequest {
            operation_type: s(kind),
            tenant_id: s(tenant),
            initiator,
            provider_connection_id: connection.map(s),
            context: serde_json::json!({}),
            dedupe_key,
        };
        self.rt.block_on(self.ledger.start(request)).unwrap()
    }

    fn started(&self, tenant: &str, kind: &str, connection: Option<&str>) -> Uuid {
        let answer = self.start(tenant, kind, connection, false);
        assert!(matches!(answer, StartAnswer::Accepted(_)), "{answer:?}");
        answer.run().id
    }

    fn begin(&self, run_id: Uuid) -> Run {
        self.rt.block_on(self.ledger.begin(run_id)).unwrap().1
    }

    fn complete(&self, run_id: Uuid, outcome: WorkerOutcome, retryable: bool) -> Run {
        let failure = (outcome == WorkerOutcome::Failed)
            .then(|| FailureReport { code: Some(s("provider_error")), message: s("upstream broke") });
        let completion = Completion { outcome, summary_counts: None, failure, retryable: Some(retryable) };
        self.rt.block_on(self.ledger.complete(run_id, completion)).unwrap()
    }

    fn live(&self) -> Vec<Uuid> {
        let state = self.rt.block_on(self.ledger.state());
        let mut ids: Vec<Uuid> = state.live_run_ids().copied().collect();
        ids.sort();
        ids
    }

    /// Every run id with a stream in the log.
    fn logged_runs(&self) -> BTreeSet<Uuid> {
        let events = self.ledger.log().read(1, usize::MAX).unwrap();
        events.iter().filter_map(|e| run_id_of(&e.stream)).collect()
    }
}

fn rebuilt_rows(projector: &Projector) -> Vec<String> {
    projector.rebuild(&mut |_, _| {}).unwrap();
    store::dump(&projector.reader().unwrap()).unwrap()
}

/// Every page of `filter` at `limit`, checking the page bounds on the way.
fn all_pages(db: &Connection, filter: &RunFilter, limit: usize) -> Vec<Run> {
    all_pages_in(db, filter, None, limit)
}

fn all_pages_in(db: &Connection, filter: &RunFilter, tenants: Option<&BTreeSet<String>>, limit: usize) -> Vec<Run> {
    let (mut runs, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = list_in_tenants(db, filter, tenants, cursor.as_deref(), limit).unwrap();
        assert!(page.runs.len() <= limit.clamp(1, PAGE_SIZE_MAX));
        runs.extend(page.runs);
        pages += 1;
        assert!(pages < 10_000, "the cursor always moves on");
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return runs,
        }
    }
}

fn first_position(db: &Connection, run_id: Uuid) -> u64 {
    timeline(db, run_id, 1, usize::MAX).unwrap()[0].position
}

fn summaries(db: &Connection, run_id: Uuid) -> Vec<String> {
    timeline(db, run_id, 1, usize::MAX).unwrap().into_iter().map(|e| e.summary).collect()
}

/// Everything Monitoring shows must agree with the log and with SPEC 2.
fn check_invariants(world: &World, db: &Connection) {
    let runs = all_pages(db, &RunFilter::default(), PAGE_SIZE_MAX);
    let ids: BTreeSet<Uuid> = runs.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), runs.len(), "each run once");
    assert_eq!(ids, world.logged_runs(), "one row per run stream");
    for run in &runs {
        let folded = world.ledger.run(run.id).unwrap().unwrap();
        assert_eq!(serde_json::to_value(run).unwrap(), serde_json::to_value(&folded).unwrap());
        check_run(world, db, run);
    }
    check_columns(db, runs.len());
    for tenant in [None, Some("t1"), Some("t2"), Some("t3")] {
        let scoped: Vec<&Run> = runs.iter().filter(|r| tenant.is_none_or(|t| r.tenant_id == t)).collect();
        check_counts(&counts(db, tenant).unwrap(), &scoped);
    }
}

/// The columns of every row are those of its run (the indexes are over
/// them, and SQLite checks that every index agrees with its table), and
/// the counters are exactly those of the rows.
fn check_columns(db: &Connection, runs: usize) {
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let mut statement = db
        .prepare(
            "SELECT runs.first_position, run_id, workspace_id, tenant_id, operation_type, initiator, status, outcome, \
             reason_code, created_at, updated_at, last_position, run FROM runs \
             JOIN run_documents ON run_documents.first_position = runs.first_position",
        )
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut expected_counters: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    let mut seen = 0;
    while let Some(row) = rows.next().unwrap() {
        seen += 1;
        let run: Run =
            crate::monitoring::document::decode(&row.get::<_, Vec<u8>>(12).unwrap(), row.get(0).unwrap()).unwrap();
        let text = |i: usize| row.get::<_, Option<String>>(i).unwrap();
        assert_eq!(text(1), Some(run.id.to_string()));
        assert_eq!(text(2), Some(run.workspace_id.clone()));
        assert_eq!(text(3), Some(run.tenant_id.clone()));
        assert_eq!(text(4), Some(run.operation_type.clone()));
        assert_eq!(text(5), Some(initiator_value(&run.initiator)));
        assert_eq!(text(6).as_deref(), Some(run.status.as_str()));
        assert_eq!(text(7).as_deref(), Some(run.outcome.as_str()));
        let blocked_reason = (run.outcome == RunOutcome::Blocked).then(|| run.reason_code.unwrap().as_str());
        assert_eq!(text(8).as_deref(), blocked_reason);
        let created = run.queued_at.or(run.completed_at).unwrap();
        assert_eq!(text(9), Some(created.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        let entries = timeline(db, run.id, 1, usize::MAX).unwrap();
        let (first, last) = (entries.first().unwrap(), entries.last().unwrap());
        assert_eq!(row.get::<_, i64>(0).unwrap(), first.position as i64, "keyed by the first event's position");
        assert_eq!(row.get::<_, i64>(11).unwrap(), last.position as i64);
        assert_eq!(text(10), Some(last.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        for (scope, tenant) in [("all", ""), ("tenant", run.tenant_id.as_str())] {
            let mut count = |dimension: &str, name: &str| {
                *expected_counters.entry((s(scope), s(tenant), s(dimension), s(name))).or_default() += 1;
            };
            count("total", "");
            count("status", run.status.as_str());
            count("outcome", run.outcome.as_str());
            if let Some(reason) = blocked_reason {
                count("reason", reason);
            }
        }
    }
    assert_eq!(seen, runs);
    let documents: usize = db.query_row("SELECT count(*) FROM run_documents", [], |row| row.get(0)).unwrap();
    assert_eq!(documents, runs, "one document per run");
    let stored: BTreeMap<(String, String, String, String), i64> = db
        .prepare("SELECT scope, tenant_id, dimension, name, count FROM run_counts")
        .unwrap()
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?), r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, expected_counters, "counters at zero have no row");
}

fn check_run(world: &World, db: &Connection, run: &Run) {
    if run.status == RunStatus::Running {
        let decision = run.latest_decision.as_ref().expect("a running run has a decision");
        assert!(decision.allowed() && decision.attempt == run.attempt, "{run:?}");
    }
    if run.outcome == RunOutcome::Blocked {
        assert_eq!(run.status, RunStatus::Completed);
        assert!(run.reason_code.is_some() && run.next_step.is_some() && run.denial_class.is_some(), "{run:?}");
    }
    let entries = timeline(db, run.id, 1, usize::MAX).unwrap();
    assert_eq!(entries.len() as u64, run.version, "one timeline entry per event");
    let stream = world.ledger.log().read_stream(&opledger::domain::events::run_stream(run.id), 1, usize::MAX).unwrap();
    let from_log: Vec<TimelineEntry> = stream.iter().map(|envelope| timeline_entry(envelope).unwrap()).collect();
    assert_eq!(entries, from_log, "the stored timeline is the log's");
    assert!(entries.windows(2).all(|w| w[0].position < w[1].position));
    for (before, entry) in entries.iter().zip(entries.iter().skip(1)) {
        if entry.event_type == "run_started" {
            assert_eq!(before.event_type, "legitimacy_evaluated", "a start follows its decision");
            assert_eq!((before.attempt, before.summary.as_str()), (entry.attempt, "legitimacy evaluated: allowed"));
        }
    }
}

fn check_counts(counts: &Counts, runs: &[&Run]) {
    assert_eq!(counts.total, runs.len() as u64);
    let mut by_outcome: BTreeMap<String, u64> =
        ["pending", "succeeded", "partially_succeeded", "failed", "blocked", "cancelled"]
            .iter()
            .map(|o| (s(o), 0))
            .collect();
    let mut by_reason = BTreeMap::new();
    for run in runs {
        *by_outcome.entry(s(run.outcome.as_str())).or_default() += 1;
        if let (RunOutcome::Blocked, Some(code)) = (run.outcome, run.reason_code) {
            *by_reason.entry(s(code.as_str())).or_default() += 1;
        }
    }
    assert_eq!(counts.by_outcome, by_outcome);
    assert_eq!(counts.by_reason, by_reason);
}

/// One command of a random history.
#[derive(Debug, Clone)]
enum Step {
    Start {
        tenant: u8,
        kind: u8,
        connection: u8,
        system: bool,
    },
    Batch {
        tenant: u8,
    },
    Begin(u8),
    Progress(u8),
    Complete {
        pick: u8,
        outcome: u8,
        retryable: bool,
    },
    Revoke(u8),
    Grant(u8),
    Connection {
        connection: u8,
        status: ConnectionStatus,
    },
    Heartbeat(u8),
    Cancel(u8),
    /// The reaper's pass (leases are 5 s, the clock ticks 1 s per command).
    Reap,
}

fn step() -> impl Strategy<Value = Step> {
    let status = prop_oneof![
        Just(ConnectionStatus::Ready),
        Just(ConnectionStatus::Unreachable),
        Just(ConnectionStatus::Disabled),
    ];
    prop_oneof![
        5 => (0u8..3, 0u8..3, 0u8..3, any::<bool>())
            .prop_map(|(tenant, kind, connection, system)| Step::Start { tenant, kind, connection, system }),
        1 => (0u8..3).prop_map(|tenant| Step::Batch { tenant }),
        5 => any::<u8>().prop_map(Step::Begin),
        1 => any::<u8>().prop_map(Step::Progress),
        4 => (any::<u8>(), 0u8..3, any::<bool>())
            .prop_map(|(pick, outcome, retryable)| Step::Complete { pick, outcome, retryable }),
        1 => (0u8..3).prop_map(Step::Revoke),
        1 => (0u8..3).prop_map(Step::Grant),
        2 => (0u8..4, status).prop_map(|(connection, status)| Step::Connection { connection, status }),
        1 => any::<u8>().prop_map(Step::Heartbeat),
        1 => any::<u8>().prop_map(Step::Cancel),
        2 => Just(Step::Reap),
    ]
}

fn capability(tenant: &str, grant: bool) -> C {
    let (tenant_id, actor_id, capability) = (s(tenant), s(actor_of(tenant)), s("tenant.sync"));
    match grant {
        true => C::CapabilityGranted { tenant_id, actor_id, capability },
        false => C::CapabilityRevoked { tenant_id, actor_id, capability },
    }
}

/// Performs one step; refusals (a begin of a running run …) are part of
/// the game and append nothing.
fn perform(world: &World, step: &Step) {
    let live = world.live();
    let pick = |index: u8| live.get(usize::from(index) % live.len().max(1)).copied();
    let rt = &world.rt;
    match step {
        Step::Start { tenant, kind, connection, system } => {
            let tenant = TENANTS[usize::from(*tenant)];
            let kind = KINDS[usize::from(*kind)];
            let pinned = tenant == "t1" && kind != "restore.execute" && *connection < 2;
            let connection = pinned.then(|| ["c1", "c2"][usize::from(*connection)]);
            world.start(tenant, kind, connection, *system);
        }
        Step::Batch { tenant } => {
            let tenant = TENANTS[usize::from(*tenant)];
            let types = vec![s("inventory_sync"), s("entra_group_sync")];
            let request = StartRequest {
                operation_type: s("inventory_sync"),
                tenant_id: s(tenant),
                initiator: Principal::actor(actor_of(tenant)),
                provider_connection_id: None,
                context: serde_json::json!({}),
                dedupe_key: None,
            };
            rt.block_on(world.ledger.start_batch(types, request)).unwrap();
        }
        Step::Begin(index) => {
            if let Some(id) = pick(*index) {
                let _ = rt.block_on(world.ledger.begin(id));
            }
        }
        Step::Progress(index) => {
            if let Some(id) = pick(*index) {
                let _ = rt.block_on(world.ledger.progress(id, serde_json::json!({"total": 9, "processed": index % 9})));
            }
        }
        Step::Complete { pick: index, outcome, retryable } => {
            if let Some(id) = pick(*index) {
                let outcome = [WorkerOutcome::Succeeded, WorkerOutcome::PartiallySucceeded, WorkerOutcome::Failed]
                    [usize::from(*outcome)];
                let completion =
                    Completion { outcome, summary_counts: None, failure: None, retryable: Some(*retryable) };
                let _ = rt.block_on(world.ledger.complete(id, completion));
            }
        }
        Step::Revoke(tenant) => world.authority(capability(TENANTS[usize::from(*tenant)], false)),
        Step::Grant(tenant) => world.authority(capability(TENANTS[usize::from(*tenant)], true)),
        Step::Connection { connection, status } => {
            let connection_id = s(["c1", "c2", "c3", "c4"][usize::from(*connection)]);
            world.authority(C::ProviderConnectionStatusChanged { connection_id, status: *status });
        }
        Step::Heartbeat(index) => {
            if let Some(id) = pick(*index) {
                let _ = rt.block_on(world.ledger.heartbeat(id, None));
            }
        }
        Step::Cancel(index) => {
            if let Some(id) = pick(*index) {
                let request = opledger::domain::cancel::CancelRequest { cancelled_by: Principal::System, reason: None };
                let _ = rt.block_on(world.ledger.cancel(id, request));
            }
        }
        Step::Reap => {
            rt.block_on(world.ledger.reap_lapsed_leases()).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Caught up every few commands or rebuilt from scratch, the tables
    /// hold the same rows; a second rebuild too; and what they show is the
    /// log's.
    #[test]
    fn the_incremental_tables_equal_a_rebuild(steps in prop::collection::vec(step(), 1..60), every in 1usize..5) {
        let world = World::new();
        let projector = world.projector();
        for (done, step) in steps.iter().enumerate() {
            perform(&world, step);
            if done % every == 0 {
                projector.catch_up().unwrap();
            }
        }
        projector.catch_up().unwrap();
        let incremental = store::dump(&projector.reader().unwrap()).unwrap();
        let rebuilt = rebuilt_rows(&projector);
        prop_assert!(incremental == rebuilt, "incremental and rebuilt tables differ");
        prop_assert!(rebuilt_rows(&projector) == rebuilt, "two rebuilds differ");
        check_invariants(&world, &projector.reader().unwrap());
    }
}

#[test]
fn a_restart_catches_up_from_the_checkpoint() {
    let world = World::new();
    let projector = world.projector();
    let first = world.started("t1", "inventory_sync", Some("c1"));
    world.begin(first);
    projector.catch_up().unwrap();
    let checkpoint = |db: &Connection| store::read_checkpoint(db).unwrap().unwrap().position;
    let seen = checkpoint(&projector.reader().unwrap());
    assert_eq!(seen, world.head());
    drop(projector);

    world.complete(first, WorkerOutcome::Succeeded, false);
    let second = world.started("t2", "restore.execute", None);
    world.authority(capability("t2", false));
    world.begin(second);
    let file = store::open_reader(&store::path_in(world.read_models())).unwrap().unwrap();
    let stale = checkpoint(&file);
    drop(file);
    assert_eq!(stale, seen, "nothing applied while no projector ran");
    assert!(stale < world.head());

    let projector = world.projector();
    let db = projector.reader().unwrap();
    assert_eq!(checkpoint(&db), world.head(), "open catches up");
    assert_eq!(get(&db, first).unwrap().unwrap().outcome, RunOutcome::Succeeded);
    assert_eq!(get(&db, second).unwrap().unwrap().outcome, RunOutcome::Blocked);
    let incremental = store::dump(&db).unwrap();
    drop(db);
    assert_eq!(incremental, rebuilt_rows(&projector));
    check_invariants(&world, &projector.reader().unwrap());
}

#[test]
fn a_revoked_capability_blocks_and_is_never_counted_as_failed() {
    let world = World::new();
    let projector = world.projector();
    let run = world.started("t1", "inventory_sync", Some("c1"));
    world.authority(capability("t1", false));
    world.begin(run);
    projector.catch_up().unwrap();
    let db = projector.reader().unwrap();
    let shown = get(&db, run).unwrap().unwrap();
    assert_eq!((shown.status, shown.outcome), (RunStatus::Completed, RunOutcome::Blocked));
    assert_eq!(shown.reason_code, Some(ReasonCode::CapabilityMissing));
    assert_eq!(shown.denial_class, Some(DenialClass::Capability));
    assert_eq!(shown.next_step.as_deref(), Some(ReasonCode::CapabilityMissing.next_step()));
    assert_eq!(
        summaries(&db, run),
        ["queued", "legitimacy evaluated: denied (capability_missing)", "blocked: capability_missing"]
    );
    let counted = counts(&db, Some("t1")).unwrap();
    assert_eq!((counted.by_outcome["blocked"], counted.by_outcome["failed"], counted.total), (1, 0, 1));
    assert_eq!(counted.by_reason, BTreeMap::from([(s("capability_missing"), 1)]));
    let filter = RunFilter { outcome: Some(RunOutcome::Failed), ..RunFilter::default() };
    assert!(list(&db, &filter, None, 10).unwrap().runs.is_empty(), "blocked is not listed as failed");
    check_invariants(&world, &db);
}

#[test]
fn retries_show_a_fresh_allowed_decision_before_every_start() {
    let world = World::new();
    let projector = world.projector();
    let run = world.started("t1", "inventory_sync", Some("c2"));
    let status = |status| C::ProviderConnectionStatusChanged { connection_id: s("c2"), status };
    world.authority(status(ConnectionStatus::Unreachable));
    world.begin(run);
    projector.catch_up().unwrap();
    let waiting = get(&projector.reader().unwrap(), run).unwrap().unwrap();
    assert_eq!((waiting.status, waiting.attempt), (RunStatus::Queued, 2), "a retryable denial requeues");
    assert_eq!(waiting.reason_code, Some(ReasonCode::ProviderConnectionUnreachable), "the denial stays visible");

    world.authority(status(ConnectionStatus::Ready));
    world.begin(run);
    projector.catch_up().unwrap();
    let running = get(&projector.reader().unwrap(), run).unwrap().unwrap();
    let decision = running.latest_decision.as_ref().unwrap();
    assert_eq!((running.status, decision.attempt, decision.allowed()), (RunStatus::Running, 2, true));

    world.complete(run, WorkerOutcome::Failed, true);
    world.begin(run);
    world.rt.block_on(world.ledger.progress(run, serde_json::json!({"total": 10, "processed": 4}))).unwrap();
    world.complete(run, WorkerOutcome::PartiallySucceeded, false);
    let system_blocked = world.start("t2", "entra_group_sync", None, true);
    assert!(matches!(system_blocked, StartAnswer::Blocked(_)));
    projector.catch_up().unwrap();
    let db = projector.reader().unwrap();
    assert_eq!(
        summaries(&db, run),
        [
            "queued",
            "legitimacy evaluated: denied (provider_connection_unreachable, retryable)",
            "queued for attempt 2: provider_connection_unreachable",
            "legitimacy evaluated: allowed",
            "started attempt 2",
            "queued for attempt 3: retryable failure (provider_error)",
            "legitimacy evaluated: allowed",
            "started attempt 3",
            "progress: total 10, processed 4",
            "completed: partially succeeded",
        ]
    );
    let attempts: Vec<u32> = timeline(&db, run, 1, usize::MAX).unwrap().iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]);
    let done = get(&db, run).unwrap().unwrap();
    assert_eq!((done.outcome, done.attempts), (RunOutcome::PartiallySucceeded, 3));

    let blocked = get(&db, system_blocked.run().id).unwrap().unwrap();
    assert_eq!((blocked.outcome, blocked.queued_at), (RunOutcome::Blocked, None), "a blocked start never queued");
    assert!(blocked.completed_at.is_some() && blocked.next_step.is_some());
    assert_eq!(summaries(&db, blocked.id), ["blocked at start: system_authority_not_allowed"]);
    let global = counts(&db, None).unwrap();
    assert_eq!((global.by_outcome["blocked"], global.by_outcome["partially_succeeded"], global.total), (1, 1, 2));
    assert_eq!(global.by_reason, BTreeMap::from([(s("system_authority_not_allowed"), 1)]));
    check_invariants(&world, &db);
}

#[test]
fn an_event_the_fold_refuses_stops_the_projector_at_its_position() {
    let world = World::new();
    let run = world.started("t1", "inventory_sync", Some("c1"));
    let append = |run_id: Uuid, event: RunEvent| {
        let new = DomainEvent::Run { run_id, event }.to_new_event(Uuid::now_v7()).unwrap();
        world.ledger.log().append_blocking(vec![new], Expectations::none()).unwrap().unwrap().first_position
    };
    let refused = append(run, RunEvent::RunStarted { attempt: 1 });
    let projector = Projector::open_in(world.read_models(), Arc::clone(world.ledger.log()), vec![Arc::new(Monitoring)]);
    let Err(ProjectionError::Stopped { position, detail }) = projector else { panic!("{projector:?}") };
    assert_eq!(position, refused);
    assert!(detail.contains("without an allowed decision"), "{detail}");

    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::open(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap());
    let new = DomainEvent::Run { run_id: Uuid::now_v7(), event: RunEvent::RunStarted { attempt: 1 } };
    log.append_blocking(vec![new.to_new_event(Uuid::now_v7()).unwrap()], Expectations::none()).unwrap().unwrap();
    let unknown = Projector::open(log, vec![Arc::new(Monitoring)]);
    let Err(ProjectionError::Stopped { position: 1, detail }) = unknown else { panic!("{unknown:?}") };
    assert!(detail.contains("unknown run"), "{detail}");
}

#[test]
fn a_row_that_does_not_decode_is_corrupt() {
    let world = World::new();
    let run = world.started("t3", "inventory_sync", None);
    let projector = world.projector();
    let writer = Connection::open(projector.path()).unwrap();
    writer.busy_timeout(store::BUSY_WAIT).unwrap();
    let changed = writer
        .execute(
            "UPDATE run_documents SET run = X'0a000000ffff' \
             WHERE first_position = (SELECT first_position FROM runs WHERE run_id = ?1)",
            [run.to_string()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(writer);
    let db = projector.reader().unwrap();
    assert!(matches!(get(&db, run), Err(ProjectionError::Corrupt { .. })));
    let all = list(&db, &RunFilter::default(), None, 10);
    assert!(matches!(all, Err(ListError::Projection(ProjectionError::Corrupt { .. }))));
}

#[test]
fn a_timeline_reads_in_pages_from_a_stream_version() {
    let world = World::new();
    let projector = world.projector();
    let run = world.started("t1", "inventory_sync", Some("c1"));
    world.begin(run);
    world.complete(run, WorkerOutcome::Succeeded, false);
    projector.catch_up().unwrap();
    let db = projector.reader().unwrap();
    let all = timeline(&db, run, 1, usize::MAX).unwrap();
    assert_eq!(all.len(), 4, "queued, evaluated, started, completed");
    let positions = |entries: &[TimelineEntry]| entries.iter().map(|e| e.position).collect::<Vec<_>>();
    let page = timeline(&db, run, 2, 2).unwrap();
    assert_eq!(positions(&page), positions(&all[1..3]));
    let rest = timeline(&db, run, 4, 2).unwrap();
    assert_eq!(positions(&rest), positions(&all[3..]));
    assert!(timeline(&db, run, 5, 2).unwrap().is_empty(), "past the end");
    assert_eq!(timeline(&db, run, 0, 1).unwrap(), all[..1], "version 0 reads from the first");
}

#[test]
fn unknown_runs_and_empty_files_read_as_nothing() {
    let world = World::new();
    let projector = world.projector();
    let db = projector.reader().unwrap();
    assert_eq!(get(&db, Uuid::now_v7()).unwrap(), None);
    assert!(timeline(&db, Uuid::now_v7(), 1, usize::MAX).unwrap().is_empty());
    assert_eq!(list(&db, &RunFilter::default(), None, PAGE_SIZE_DEFAULT).unwrap(), RunPage::default());
    let empty = counts(&db, Some("t1")).unwrap();
    assert_eq!((empty.total, empty.by_outcome.len(), empty.by_reason.len()), (0, 6, 0));
    assert_eq!(totals_in_tenants(&db, &RunFilter::default(), None).unwrap(), RunTotals::default());
    assert_eq!(parse_initiator("system"), Principal::System);
    assert_eq!(parse_initiator("u1"), Principal::actor("u1"));
}

#[test]
fn an_actor_named_system_is_not_the_system() {
    assert_ne!(initiator_value(&Principal::actor("system")), initiator_value(&Principal::System));
    assert_eq!(initiator_value(&Principal::actor("u1")), "actor:u1");
}

#[path = "monitoring_query_tests.rs"]
mod query;

#[path = "monitoring_over_time_tests.rs"]
mod over_time;
