//! Tests of the audit trail over a real ledger (the world and the random
//! histories are `crate::test_world`'s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::TimeZone;
use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::model::{ConnectionStatus, WorkerOutcome};
use opledger::log::views::View;
use opledger::log::{Durability, LogOptions};
use opledger::{Expectations, Log, NewEvent};
use proptest::prelude::*;

use super::*;
use crate::notifications;
use crate::projector::Projector;
use crate::test_world::{perform, s, step, truncated_copy, World};
use opledger::domain::reason::ReasonCode;

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
