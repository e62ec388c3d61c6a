//! Tests of the audit trail over a real ledger (the world and the random
//! histories are `crate::test_world`'s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::TimeZone;
use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::model::{ConnectionStatus, WorkerOutcome};
use opledger::domain::reason::ReasonCode;
use opledger::Log;
use proptest::prelude::*;

use super::query::{statement, Walk, AT_POSITION, FIRST_FROM, LAST_BEFORE};
use super::*;
use crate::error::ProjectionError;
use crate::projector::Projector;
use crate::store;
use crate::test_world::{perform, s, step, truncated_copy, World};

/// Every audit entry matching `filter`, paged `page` at a time, newest
/// first; asserts no entry is served twice.
pub(crate) fn collect(db: &Connection, filter: &AuditFilter, page: usize) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let got = list(db, filter, cursor.as_deref(), Some(page)).unwrap();
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

fn everything(db: &Connection) -> Vec<AuditEntry> {
    collect(db, &AuditFilter::default(), PAGE_SIZE_MAX)
}

fn audit_of(log: &Arc<Log>) -> Vec<AuditEntry> {
    let projector = Projector::open(Arc::clone(log), vec![Arc::new(Audit)]).unwrap();
    everything(&projector.reader().unwrap())
}

fn dump(projector: &Projector) -> Vec<String> {
    store::dump(&projector.reader().unwrap()).unwrap()
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
        let incremental = dump(&projector);
        projector.rebuild(&mut |_, _| {}).unwrap();
        let rebuilt = dump(&projector);
        prop_assert!(incremental == rebuilt, "a rebuild differs from the incremental state");
        projector.rebuild(&mut |_, _| {}).unwrap();
        prop_assert!(rebuilt == dump(&projector), "two rebuilds differ");

        let log = world.ledger.log();
        let head = log.head().position;
        let reader = projector.reader().unwrap();
        let audit = everything(&reader);
        let events = log.read(1, usize::MAX).unwrap();
        let meaningful: Vec<u64> =
            events.iter().filter(|e| !["run_progressed", "lease_renewed"].contains(&e.event_type.as_str())).map(|e| e.position).rev().collect();
        prop_assert_eq!(audit.iter().map(|e| e.position).collect::<Vec<_>>(), meaningful);

        let n = cut.index(usize::try_from(head).unwrap()) as u64 + 1;
        let as_of = collect(&reader, &AuditFilter { as_of: Some(n), ..Default::default() }, 13);
        let (_copy_dir, copy) = truncated_copy(&world.rt, log, n);
        prop_assert_eq!(as_of, audit_of(&copy));

        crate::notifications::tests::check_against_log(&reader, &events);

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
    let audit = everything(&projector.reader().unwrap());
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
    let db = projector.reader().unwrap();
    let reads = collect(&db, &AuditFilter { action: Some(s("notification_read")), ..Default::default() }, 10);
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
    let db = projector.reader().unwrap();
    let audit = everything(&db);
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
            assert_eq!(collect(&db, filter, page), expected, "{filter:?}, pages of {page}");
        }
        let mut lines = Vec::new();
        let written = export_jsonl(&db, filter, &mut lines).unwrap();
        let exported: Vec<AuditEntry> =
            String::from_utf8(lines).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(written, exported.len() as u64);
        assert_eq!(exported, expected.iter().rev().cloned().collect::<Vec<_>>(), "export is oldest first");
    }
    let time_bound = &filters[8];
    assert!(!collect(&db, time_bound, 5).is_empty(), "the time filter test selects something");
}

#[test]
fn time_ranges_cut_exactly_at_every_recorded_time() {
    let (_world, projector, _) = busy_world();
    let db = projector.reader().unwrap();
    let audit = everything(&db);
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
            assert_eq!(collect(&db, &filter, PAGE_SIZE_MAX), expected, "{filter:?}");
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
    let db = projector.reader().unwrap();
    let total = everything(&db).len();
    let exact = list(&db, &AuditFilter::default(), None, Some(total)).unwrap();
    assert_eq!((exact.entries.len(), exact.next_cursor), (total, None));
    let first = list(&db, &AuditFilter::default(), None, None).unwrap();
    assert_eq!(first.entries.len(), total.min(PAGE_SIZE_DEFAULT));
    let capped = list(&db, &AuditFilter::default(), None, Some(PAGE_SIZE_MAX * 10)).unwrap();
    assert_eq!(capped.entries.len(), total.min(PAGE_SIZE_MAX));
}

#[test]
fn malformed_cursors_are_refused() {
    let (_world, projector, _) = busy_world();
    let db = projector.reader().unwrap();
    let valid = list(&db, &AuditFilter::default(), None, Some(2)).unwrap().next_cursor.unwrap();
    assert!(list(&db, &AuditFilter::default(), Some(&valid), Some(2)).is_ok());
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
        let refused = list(&db, &AuditFilter::default(), Some(cursor), None);
        assert!(matches!(refused, Err(AuditError::InvalidCursor(_))), "{cursor:?}: {refused:?}");
    }
}

/// An empty file holding the audit's tables, for entries written by hand.
fn audit_file() -> Connection {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(Audit.tables()).unwrap();
    db.execute_batch(Audit.indexes()).unwrap();
    db
}

/// Writes an entry of tenant t1 by actor u1 at `position`, one
/// millisecond after the one before.
fn insert_synthetic(db: &Connection, position: u64, action: &str) {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let recorded_at = start + chrono::Duration::milliseconds(i64::try_from(position).unwrap());
    let position = i64::try_from(position).unwrap();
    db.prepare_cached(
        "INSERT INTO audit_entries (position, event_id, recorded_at, action, caused_by, tenant_id, workspace_id, \
         run_id, summary) VALUES (?1, ?2, ?3, ?4, 'u1', 't1', 'w1', NULL, 'synthetic')",
    )
    .unwrap()
    .execute(rusqlite::params![
        position,
        Uuid::from_u128(u128::try_from(position).unwrap()).to_string(),
        crate::sql_time::to_text(recorded_at),
        action,
    ])
    .unwrap();
    db.prepare_cached("INSERT INTO audit_details (position, details) VALUES (?1, ?2)")
        .unwrap()
        .execute(rusqlite::params![position, serde_json::json!({"synthetic": position}).to_string()])
        .unwrap();
}

#[test]
fn a_selective_filter_examines_a_bounded_number_of_records_per_page() {
    let db = audit_file();
    let total = RECORDS_EXAMINED_MAX as u64 + 500;
    let tx = db.unchecked_transaction().unwrap();
    for position in 1..=total {
        insert_synthetic(&tx, position, if position == 1 { "run_completed" } else { "run_started" });
    }
    tx.commit().unwrap();
    let filter = AuditFilter { tenant_id: Some(s("t1")), action: Some(s("run_completed")), ..Default::default() };
    let first = list(&db, &filter, None, None).unwrap();
    assert!(first.entries.is_empty(), "the only match lies beyond the examination bound");
    let cursor = first.next_cursor.expect("a short page carries a cursor");
    let second = list(&db, &filter, Some(&cursor), None).unwrap();
    assert_eq!(second.entries.iter().map(|e| e.position).collect::<Vec<_>>(), [1]);
    assert_eq!(second.entries[0].details, serde_json::json!({"synthetic": 1}), "the details are the file's");
    assert_eq!(second.next_cursor, None);
    assert_eq!(collect(&db, &AuditFilter { action: Some(s("run_completed")), ..Default::default() }, 10).len(), 1);
}

#[test]
fn a_stored_entry_that_does_not_decode_is_reported_as_corrupt() {
    let corruptions = [
        "UPDATE audit_details SET details = '{not json'",
        "UPDATE audit_entries SET event_id = 'not a uuid'",
        "UPDATE audit_entries SET run_id = 'not a uuid'",
        "UPDATE audit_entries SET recorded_at = 'yesterday'",
    ];
    for corruption in corruptions {
        let db = audit_file();
        insert_synthetic(&db, 1, "run_started");
        db.execute(corruption, []).unwrap();
        let error = list(&db, &AuditFilter::default(), None, None).unwrap_err();
        assert!(matches!(error, AuditError::Projection(ProjectionError::Corrupt { .. })), "{corruption}: {error:?}");
        let error = entry(&db, 1).unwrap_err();
        assert!(matches!(error, AuditError::Projection(ProjectionError::Corrupt { .. })), "{corruption}: {error:?}");
    }
}

#[test]
fn counts_per_action_follow_the_log() {
    let (world, projector, _) = busy_world();
    let audit = everything(&projector.reader().unwrap());
    let mut from_log: HashMap<String, usize> = HashMap::new();
    for envelope in world.ledger.log().read(1, usize::MAX).unwrap() {
        if !["run_progressed", "lease_renewed"].contains(&envelope.event_type.as_str()) {
            *from_log.entry(envelope.event_type.clone()).or_default() += 1;
        }
    }
    let mut from_audit: HashMap<String, usize> = HashMap::new();
    for entry in &audit {
        *from_audit.entry(entry.action.clone()).or_default() += 1;
    }
    assert_eq!(from_audit, from_log);
    let by_position: BTreeMap<u64, &AuditEntry> = audit.iter().map(|e| (e.position, e)).collect();
    assert_eq!(entry(&projector.reader().unwrap(), 1).unwrap().as_ref(), by_position.get(&1).copied());
}

#[test]
fn a_tool_reads_entries_with_their_details_from_the_file_alone() {
    let (world, projector, _) = busy_world();
    // A second process's read-only connection, while the server holds the log.
    let tool = store::open_reader(projector.path()).unwrap().unwrap();
    let audit = everything(&tool);
    assert_eq!(audit, everything(&projector.reader().unwrap()));
    let events = world.ledger.log().read(1, usize::MAX).unwrap();
    for entry in &audit {
        let event = &events[usize::try_from(entry.position - 1).unwrap()];
        assert_eq!(entry.event_id, event.id);
        assert_eq!(entry.recorded_at, event.recorded_at);
        let payload: serde_json::Value = serde_json::from_str(event.payload.get()).unwrap();
        assert_eq!(entry.details, payload, "the details are the event's payload");
    }
    assert_eq!(entry(&tool, 0).unwrap(), None);
    assert_eq!(entry(&tool, u64::MAX).unwrap(), None);
}

/// The query plan of `sql`, one line per step.
pub(crate) fn plan(db: &Connection, sql: &str) -> String {
    let mut statement = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
    let steps: Vec<String> = statement
        .query_map(rusqlite::params_from_iter(nulls), |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    steps.join("\n")
}

#[test]
fn every_filter_walks_an_index_never_the_whole_table() {
    let (_world, projector, _) = busy_world();
    let db = projector.reader().unwrap();
    let cases = [
        (Walk::Run, "USING INDEX audit_entries_by_run (run_id=? AND position>? AND position<?)"),
        (Walk::Actor, "USING INDEX audit_entries_by_actor (caused_by=? AND position>? AND position<?)"),
        (Walk::Tenant, "USING INDEX audit_entries_by_tenant (tenant_id=? AND position>? AND position<?)"),
        (Walk::Action, "USING INDEX audit_entries_by_action (action=? AND position>? AND position<?)"),
        (Walk::Positions, "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
    ];
    for (walk, expected) in cases {
        for descending in [true, false] {
            let plan = plan(&db, statement(walk, descending));
            assert!(plan.contains(expected), "{walk:?}: {plan}");
            assert!(!plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{walk:?}: {plan}");
        }
    }
    for (sql, expected) in [
        (FIRST_FROM, "USING COVERING INDEX audit_entries_by_recorded_at (recorded_at>?)"),
        (LAST_BEFORE, "USING COVERING INDEX audit_entries_by_recorded_at (recorded_at<?)"),
        (AT_POSITION, "USING INTEGER PRIMARY KEY (rowid=?)"),
    ] {
        let plan = plan(&db, sql);
        assert!(plan.contains(expected), "{sql}: {plan}");
        assert!(!plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{sql}: {plan}");
    }
}
