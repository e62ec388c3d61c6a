//! Monitoring queries over populated tables: every filter pages through
//! its matches newest first exactly once, lists within visible tenants,
//! inclusive time ranges, cursors bound to their filter, clamped limits.

use super::*;

/// Some fifty runs over three tenants, two workspaces, three types, two
/// kinds of initiator and every status and outcome. Runs stay live only
/// near the end, so that few starts find their scope busy.
fn populated() -> (World, Projector) {
    let world = World::new();
    let projector = world.projector();
    for i in 0..60usize {
        let tenant = TENANTS[i % 3];
        let kind = KINDS[(i / 3) % 3];
        let connection = (tenant == "t1" && kind != "restore.execute").then(|| ["c1", "c2"][i % 2]);
        let answer = world.start_keyed(tenant, kind, connection, i % 4 == 0, Some(format!("k{i}")));
        let StartAnswer::Accepted(run) = answer else { continue };
        match (i % 5, i >= 45) {
            (0, true) => {}
            (1, true) => {
                world.begin(run.id);
            }
            (0..=2, _) => {
                world.begin(run.id);
                world.complete(run.id, WorkerOutcome::Succeeded, false);
            }
            (3, _) => {
                world.begin(run.id);
                world.complete(run.id, WorkerOutcome::Failed, false);
            }
            _ => {
                world.authority(capability(tenant, false));
                world.begin(run.id);
                world.authority(capability(tenant, true));
            }
        }
    }
    projector.catch_up().unwrap();
    (world, projector)
}

fn filters(times: &[DateTime<Utc>]) -> Vec<RunFilter> {
    let (early, late) = (times[times.len() / 4], times[times.len() * 3 / 4]);
    let mut all = Vec::new();
    for tenant in [None, Some("t1"), Some("t3")] {
        for workspace in [None, Some("w1")] {
            for status in [None, Some(RunStatus::Queued), Some(RunStatus::Completed)] {
                for outcome in [None, Some(RunOutcome::Blocked), Some(RunOutcome::Succeeded)] {
                    for initiator in [None, Some(Principal::actor("u1")), Some(Principal::System)] {
                        for operation_type in [None, Some("inventory_sync")] {
                            for (from, to) in [(None, None), (Some(early), Some(late)), (Some(late), None)] {
                                all.push(RunFilter {
                                    workspace_id: workspace.map(s),
                                    tenant_id: tenant.map(s),
                                    status,
                                    outcome,
                                    operation_type: operation_type.map(s),
                                    initiator: initiator.clone(),
                                    from,
                                    to,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    all
}

fn created_at(run: &Run) -> DateTime<Utc> {
    run.queued_at.or(run.completed_at).unwrap()
}

#[test]
fn every_filter_pages_through_its_matches_newest_first_exactly_once() {
    let (world, projector) = populated();
    let db = projector.reader().unwrap();
    let mut everything: Vec<(u64, Run)> =
        world.logged_runs().into_iter().map(|id| (first_position(&db, id), get(&db, id).unwrap().unwrap())).collect();
    everything.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
    assert!(everything.len() > 40, "{}", everything.len());
    let times: Vec<DateTime<Utc>> = everything.iter().rev().map(|(_, r)| created_at(r)).collect();
    let (mut checked, mut nonempty) = (0, 0);
    for (n, filter) in filters(&times).iter().enumerate() {
        let expected: Vec<Uuid> = everything.iter().filter(|(_, r)| filter.matches(r)).map(|(_, r)| r.id).collect();
        let limit = [1, 3, 7, 50][n % 4];
        let listed: Vec<Uuid> = all_pages(&db, filter, limit).iter().map(|r| r.id).collect();
        assert_eq!(listed, expected, "{filter:?} at limit {limit}");
        checked += 1;
        nonempty += usize::from(!expected.is_empty());
    }
    assert!(nonempty > checked / 4, "the filters are not all empty: {nonempty} of {checked}");
    check_invariants(&world, &db);
}

#[test]
fn a_list_within_visible_tenants_fills_its_pages_from_those_tenants_only() {
    let (world, projector) = populated();
    let db = projector.reader().unwrap();
    let everything = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let times: Vec<DateTime<Utc>> = everything.iter().rev().map(created_at).collect();
    let sets: [BTreeSet<String>; 3] = [BTreeSet::new(), BTreeSet::from([s("t1")]), BTreeSet::from([s("t1"), s("t3")])];
    for (n, filter) in filters(&times).iter().enumerate().filter(|(n, _)| n % 5 == 0) {
        for tenants in &sets {
            let expected: Vec<Uuid> = everything
                .iter()
                .filter(|r| filter.matches(r) && tenants.contains(&r.tenant_id))
                .map(|r| r.id)
                .collect();
            let limit = [2, 5][n % 2];
            let listed: Vec<Uuid> = all_pages_in(&db, filter, Some(tenants), limit).iter().map(|r| r.id).collect();
            assert_eq!(listed, expected, "{filter:?} in {tenants:?}");
        }
    }
    let first = list_in_tenants(&db, &RunFilter::default(), Some(&sets[2]), None, 5).unwrap();
    assert_eq!(first.runs.len(), 5, "a page fills from the visible tenants");
    check_invariants(&world, &db);
}

#[test]
fn a_time_range_is_inclusive_to_the_microsecond() {
    let (world, projector) = populated();
    let db = projector.reader().unwrap();
    let runs = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let pick = &runs[runs.len() / 2];
    let at = created_at(pick);
    let ids = |from, to| {
        let filter = RunFilter { from, to, ..RunFilter::default() };
        all_pages(&db, &filter, 5).into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(Some(at), Some(at)), [pick.id], "the clock ticks a second per read: one run per second");
    assert!(!ids(Some(at + Duration::nanoseconds(1)), None).contains(&pick.id));
    assert!(!ids(None, Some(at - Duration::nanoseconds(1))).contains(&pick.id));
    assert!(ids(Some(at + Duration::seconds(1)), Some(at - Duration::seconds(1))).is_empty());
    assert!(ids(None, Some(DateTime::from_timestamp(T0 - 1, 0).unwrap())).is_empty());
    assert!(ids(Some(world.rt.block_on(world.ledger.state()).last_at.unwrap() + Duration::seconds(1)), None).is_empty());
    assert_eq!(ids(Some(DateTime::from_timestamp(0, 0).unwrap()), None).len(), runs.len());
}

#[test]
fn a_cursor_is_validated_and_bound_to_its_filter() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let t1 = RunFilter { tenant_id: Some(s("t1")), ..RunFilter::default() };
    let cursor = list(&db, &t1, None, 2).unwrap().next_cursor.unwrap();
    assert!(list(&db, &t1, Some(&cursor), 2).is_ok());
    let t3 = RunFilter { tenant_id: Some(s("t3")), ..RunFilter::default() };
    let long = "0".repeat(CURSOR_CHARS_MAX + 2);
    let truncated = &cursor[..cursor.len() - 2];
    for bad in ["", "zz", "abc", "+1", "00", truncated, long.as_str(), &format!("{cursor}00")] {
        let refused = list(&db, &t1, Some(bad), 2);
        assert!(matches!(refused, Err(ListError::InvalidCursor(_))), "{bad:?}: {refused:?}");
    }
    assert!(matches!(list(&db, &t3, Some(&cursor), 2), Err(ListError::InvalidCursor(_))), "another filter's cursor");
    let narrower = RunFilter { status: Some(RunStatus::Completed), ..t1.clone() };
    let refused = list(&db, &narrower, Some(&cursor), 2);
    assert!(matches!(refused, Err(ListError::InvalidCursor(_))), "a filter that differs in any field: {refused:?}");
}

#[test]
fn the_limit_is_clamped_and_a_sparse_filter_is_bounded() {
    let world = World::new();
    let projector = world.projector();
    let oldest = world.started("t1", "restore.execute", None);
    for _ in 0..PAGE_SIZE_MAX + 5 {
        let answer = world.start("t1", "restore.execute", None, true);
        assert!(matches!(answer, StartAnswer::Blocked(_)), "system may not restore");
    }
    projector.catch_up().unwrap();
    let db = projector.reader().unwrap();
    let page = list(&db, &RunFilter::default(), None, 10_000).unwrap();
    assert_eq!(page.runs.len(), PAGE_SIZE_MAX);
    assert!(page.next_cursor.is_some());
    assert_eq!(list(&db, &RunFilter::default(), None, 0).unwrap().runs.len(), 1);

    // Scanning the tenant index for the one queued run examines at most
    // EXAMINED_PER_RUN_MAX entries per call, handing back a cursor.
    let sparse = RunFilter { tenant_id: Some(s("t1")), status: Some(RunStatus::Queued), ..RunFilter::default() };
    let first = list(&db, &sparse, None, 1).unwrap();
    assert!(first.runs.is_empty() && first.next_cursor.is_some(), "{first:?}");
    let (mut cursor, mut calls, mut found) = (first.next_cursor, 1, Vec::new());
    while let Some(next) = cursor {
        let page = list(&db, &sparse, Some(&next), 1).unwrap();
        found.extend(page.runs.iter().map(|r| r.id));
        cursor = page.next_cursor;
        calls += 1;
    }
    assert_eq!(found, [oldest]);
    assert!(calls >= (PAGE_SIZE_MAX + 6) / EXAMINED_PER_RUN_MAX, "{calls} calls");
    let direct = RunFilter { status: Some(RunStatus::Queued), ..RunFilter::default() };
    let page = list(&db, &direct, None, 1).unwrap();
    assert_eq!((page.runs.len(), page.next_cursor), (1, None), "the status index finds it at once");
}

/// Every page of `filter` going older from the first page, then every page
/// going back newer from the last one, by `prev_cursor`.
fn pages_both_ways(db: &Connection, filter: &RunFilter, limit: usize) -> (Vec<Vec<Uuid>>, Vec<Vec<Uuid>>) {
    let ids = |page: &RunPage| page.runs.iter().map(|r| r.id).collect::<Vec<_>>();
    let first = list(db, filter, None, limit).unwrap();
    assert_eq!(first.prev_cursor, None, "nothing is newer than the first page");
    let (mut older, mut page) = (vec![ids(&first)], first);
    while let Some(next) = page.next_cursor.clone() {
        page = list(db, filter, Some(&next), limit).unwrap();
        assert!(page.prev_cursor.is_some(), "a page reached by a cursor has a way back");
        older.push(ids(&page));
        assert!(older.len() < 10_000, "the cursor always moves on");
    }
    let mut newer = Vec::new();
    while let Some(prev) = page.prev_cursor.clone() {
        page = list(db, filter, Some(&prev), limit).unwrap();
        assert!(page.next_cursor.is_some(), "a page reached going newer has a way on");
        newer.push(ids(&page));
        assert!(newer.len() < 10_000, "the cursor always moves on");
    }
    (older, newer)
}

#[test]
fn prev_cursors_walk_back_through_every_match_newest_first_exactly_once() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let everything = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let times: Vec<DateTime<Utc>> = everything.iter().rev().map(created_at).collect();
    for (n, filter) in filters(&times).iter().enumerate().filter(|(n, _)| n % 7 == 0) {
        let limit = [1, 3, 7][n % 3];
        let (older, newer) = pages_both_ways(&db, filter, limit);
        let forward: Vec<Uuid> = older.iter().take(older.len() - 1).flatten().copied().collect();
        let back: Vec<Uuid> = newer.iter().rev().flatten().copied().collect();
        assert_eq!(back, forward, "{filter:?} at limit {limit}: back from the last page, every newer match once");
    }
    // Without a filter every page is full, so going back meets the same pages.
    let (older, newer) = pages_both_ways(&db, &RunFilter::default(), 7);
    let mut expected = older[..older.len() - 1].to_vec();
    expected.reverse();
    assert_eq!(newer, expected);
}

#[test]
fn a_newer_cursor_is_bound_to_its_filter_and_returns_to_the_page_before() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let t1 = RunFilter { tenant_id: Some(s("t1")), ..RunFilter::default() };
    let first = list(&db, &t1, None, 2).unwrap();
    let second = list(&db, &t1, first.next_cursor.as_deref(), 2).unwrap();
    let back = second.prev_cursor.clone().unwrap();
    assert!(back.starts_with("newer-"), "{back}");
    let again = list(&db, &t1, Some(&back), 2).unwrap();
    assert_eq!(again.runs, first.runs, "newer from page 2 is page 1");
    assert_eq!(again.prev_cursor, None, "and page 1 has nothing newer");
    assert_eq!(list(&db, &t1, again.next_cursor.as_deref(), 2).unwrap().runs, second.runs);
    let t3 = RunFilter { tenant_id: Some(s("t3")), ..RunFilter::default() };
    for bad in ["newer-", "newer-zz", &back[..back.len() - 2]] {
        assert!(matches!(list(&db, &t1, Some(bad), 2), Err(ListError::InvalidCursor(_))), "{bad:?}");
    }
    assert!(matches!(list(&db, &t3, Some(&back), 2), Err(ListError::InvalidCursor(_))), "another filter's cursor");
    assert!(matches!(list(&db, &RunFilter::default(), Some(&back), 2), Err(ListError::InvalidCursor(_))));
}

#[test]
fn totals_count_every_match_of_the_filter_within_the_visible_tenants() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let everything = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let times: Vec<DateTime<Utc>> = everything.iter().rev().map(created_at).collect();
    let sets: [Option<BTreeSet<String>>; 3] = [None, Some(BTreeSet::new()), Some(BTreeSet::from([s("t1"), s("t3")]))];
    let mut nonempty = 0;
    for (n, filter) in filters(&times).iter().enumerate().filter(|(n, _)| n % 3 == 0) {
        let tenants = sets[n % 3].as_ref();
        let matching: Vec<&Run> = everything
            .iter()
            .filter(|r| filter.matches(r) && tenants.is_none_or(|t| t.contains(&r.tenant_id)))
            .collect();
        let totals = totals_in_tenants(&db, filter, tenants).unwrap();
        assert!(totals.complete);
        assert_eq!(totals.total, matching.len() as u64, "{filter:?} in {tenants:?}");
        for status in RunStatus::ALL {
            let expected = matching.iter().filter(|r| r.status == status).count() as u64;
            assert_eq!(totals.by_status[status.as_str()], expected, "{filter:?}: {status:?}");
        }
        for outcome in RunOutcome::ALL {
            let expected = matching.iter().filter(|r| r.outcome == outcome).count() as u64;
            assert_eq!(totals.by_outcome[outcome.as_str()], expected, "{filter:?}: {outcome:?}");
        }
        nonempty += usize::from(totals.total > 0);
    }
    assert!(nonempty > 10, "{nonempty}");
    let all = totals_in_tenants(&db, &RunFilter::default(), None).unwrap();
    let counted = counts(&db, None).unwrap();
    assert_eq!((all.total, all.by_outcome.clone()), (counted.total, counted.by_outcome), "the counters agree");
}

#[test]
fn totals_past_the_bound_count_the_newest_runs_and_say_they_are_incomplete() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let everything = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let bounded = crate::monitoring::totals::totals_bounded(&db, &RunFilter::default(), None, 5).unwrap();
    assert!(!bounded.complete);
    assert_eq!(bounded.total, 5);
    for outcome in RunOutcome::ALL {
        let newest = everything[..5].iter().filter(|r| r.outcome == outcome).count() as u64;
        assert_eq!(bounded.by_outcome[outcome.as_str()], newest, "{outcome:?}");
    }
    let exact = crate::monitoring::totals::totals_bounded(&db, &RunFilter::default(), None, everything.len()).unwrap();
    assert!(exact.complete, "a bound that reaches the last run counts everything");
    assert_eq!(exact.total, everything.len() as u64);
}

/// The plan of `sql`, one line per step.
pub(super) fn plan(db: &Connection, sql: &str) -> Vec<String> {
    let mut statement = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let mut rows = statement.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        steps.push(row.get::<_, String>(3).unwrap());
    }
    steps
}

/// A plan that reads an index or the table by key, and needs no sort of
/// its rows (the totals group their bounded candidates, which is no sort
/// of the table).
fn assert_searches(db: &Connection, what: &str, sql: &str) {
    let steps = plan(db, sql);
    assert!(
        steps.iter().any(|step| step.starts_with("SEARCH runs") || step.starts_with("SEARCH run_")),
        "{what}: {steps:?}"
    );
    for step in &steps {
        assert!(
            !step.starts_with("SCAN runs") && !step.starts_with("SCAN run_"),
            "{what} reads a whole table: {steps:?}"
        );
        assert!(!step.contains("TEMP B-TREE FOR ORDER BY"), "{what} sorts: {steps:?}");
    }
}

#[test]
fn every_filter_reads_through_an_index_without_sorting() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let at = DateTime::from_timestamp(T0, 0).unwrap();
    let single = [
        RunFilter::default(),
        RunFilter { workspace_id: Some(s("w1")), ..RunFilter::default() },
        RunFilter { tenant_id: Some(s("t1")), ..RunFilter::default() },
        RunFilter { status: Some(RunStatus::Queued), ..RunFilter::default() },
        RunFilter { outcome: Some(RunOutcome::Blocked), ..RunFilter::default() },
        RunFilter { operation_type: Some(s("inventory_sync")), ..RunFilter::default() },
        RunFilter { initiator: Some(Principal::System), ..RunFilter::default() },
        RunFilter { from: Some(at), to: Some(at), ..RunFilter::default() },
        RunFilter { tenant_id: Some(s("t1")), status: Some(RunStatus::Queued), from: Some(at), ..RunFilter::default() },
    ];
    for filter in &single {
        for ascending in [false, true] {
            assert_searches(&db, &format!("{filter:?} page"), &crate::monitoring::scan::page_sql(filter, ascending));
        }
        assert_searches(&db, &format!("{filter:?} totals"), &crate::monitoring::totals::grouped_sql(filter));
    }
    assert_searches(&db, "from", crate::monitoring::scan::FIRST_FROM);
    assert_searches(&db, "to", crate::monitoring::scan::LAST_TO);
    assert_searches(
        &db,
        "a run",
        "SELECT run FROM runs JOIN run_documents ON run_documents.first_position = runs.first_position \
         WHERE run_id = ?1",
    );
    assert_searches(
        &db,
        "a timeline",
        "SELECT position FROM run_events WHERE run_id = ?1 AND stream_version >= ?2 ORDER BY stream_version LIMIT ?3",
    );
}

#[test]
fn counters_answer_what_counting_would() {
    let (_world, projector) = populated();
    let db = projector.reader().unwrap();
    let all = usize::MAX;
    for tenant in [None, Some(s("t1")), Some(s("t2")), Some(s("nobody"))] {
        let filter = RunFilter { tenant_id: tenant, ..RunFilter::default() };
        for tenants in [None, Some(BTreeSet::new()), Some(BTreeSet::from([s("t1"), s("t3")]))] {
            let counted = crate::monitoring::totals::totals_bounded(&db, &filter, tenants.as_ref(), all).unwrap();
            assert_eq!(
                totals_in_tenants(&db, &filter, tenants.as_ref()).unwrap(),
                counted,
                "{filter:?} in {tenants:?}"
            );
        }
    }
}
