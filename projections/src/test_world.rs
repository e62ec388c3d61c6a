//! What the projections' tests share: a ledger world over two tenants, the
//! random histories the rebuild proptests replay (every command the ledger
//! takes, leases and cancels included), and a copy of a log cut at a
//! position.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal, RunStatus, WorkerOutcome};
use opledger::domain::start_gate::StartRequest;
use opledger::log::{Durability, LogOptions};
use opledger::{Expectations, Log, NewEvent};
use proptest::prelude::*;
use uuid::Uuid;

use crate::postgres_cluster::{test_log_on_postgres, Cluster};
use crate::projector::Projector;
use opledger::domain::model::SYSTEM_PRINCIPAL_WORD as SYSTEM_ACTOR;

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

/// Fields drop in order: the ledger before the place its log lives in.
pub(crate) struct World {
    pub ledger: Ledger,
    pub rt: tokio::runtime::Runtime,
    place: Place,
}

/// Where a world's log and read models live; removed when dropped.
pub(crate) enum Place {
    /// The log and the read models in one directory, as one node on sled.
    Directory(tempfile::TempDir),
    /// A database of the shared cluster (dropped with its connections) and
    /// a directory for the read models, as one node over PostgreSQL.
    Database { name: String, read_models: tempfile::TempDir },
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Place::Database { name, .. } = self {
            Cluster::shared().drop_database(name);
        }
    }
}

impl Place {
    /// A ledger over a new log on the backend the run's switch names.
    pub(crate) fn open(options: LogOptions) -> (Ledger, Place) {
        match test_log_on_postgres() {
            true => {
                let cluster = Cluster::shared();
                let name = cluster.fresh_database();
                let clock = Arc::clone(&options.clock);
                let log = Arc::new(Log::open_postgres(&cluster.url(&name), options).unwrap());
                let read_models = tempfile::tempdir().unwrap();
                (Ledger::over(log, clock).unwrap(), Place::Database { name, read_models })
            }
            false => {
                let dir = tempfile::tempdir().unwrap();
                (Ledger::open(dir.path(), options).unwrap(), Place::Directory(dir))
            }
        }
    }

    /// The directory of the read models' file.
    pub(crate) fn read_models(&self) -> &std::path::Path {
        match self {
            Place::Directory(dir) => dir.path(),
            Place::Database { read_models, .. } => read_models.path(),
        }
    }
}

impl World {
    /// A ledger with workspace w1, tenants t1 and t2, actors u1 and u2
    /// (u2 on t2 only), connections c1, c2 (t1) and c3 (t2).
    pub fn new() -> World {
        let (ledger, place) = Place::open(options());
        let world = World { ledger, rt: runtime(), place };
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

    /// The directory of the read models' file.
    pub fn read_models(&self) -> &std::path::Path {
        self.place.read_models()
    }

    pub fn projector(&self) -> Projector {
        let projections: Vec<Arc<dyn crate::projector::Projection>> = crate::all();
        Projector::open_in(self.read_models(), Arc::clone(self.ledger.log()), projections).unwrap()
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
