//! Outcomes over time: runs created at known times, bucketed by hour or
//! by day, counted per bucket and outcome (blocked apart from failed)
//! exactly as the list of the same filter holds them, never counting a
//! run the viewer may not see; a long range keeps its newest buckets, and
//! a count past its bound says from when it counted.

use super::*;
use crate::monitoring::over_time::{grouped_sql, outcomes_over_time_bounded};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(second, 0).unwrap()
}

/// A run of `tenant` that ends with `outcome` (`Pending`: left queued),
/// started at `second` on the test clock.
fn run_at(world: &World, second: i64, tenant: &str, outcome: RunOutcome) -> Uuid {
    world.jump_to(second);
    let connection = match tenant {
        "t1" => Some("c1"),
        _ => None,
    };
    let run = world.started(tenant, "inventory_sync", connection);
    match outcome {
        RunOutcome::Pending => {}
        RunOutcome::Blocked => {
            world.authority(capability(tenant, false));
            world.begin(run);
            world.authority(capability(tenant, true));
        }
        RunOutcome::Succeeded | RunOutcome::Failed => {
            world.begin(run);
            let reported = if outcome == RunOutcome::Failed { WorkerOutcome::Failed } else { WorkerOutcome::Succeeded };
            world.complete(run, reported, false);
        }
        other => panic!("no such run in these tests: {other:?}"),
    }
    run
}

/// 08:00 a succeeded and a failed run of t1, 09:10 a blocked run of t1,
/// nothing at 10:00, 11:05 a queued run of t3 and a succeeded run of t1.
fn hours() -> (World, Projector) {
    let world = World::new();
    run_at(&world, T0, "t1", RunOutcome::Succeeded);
    run_at(&world, T0 + 60, "t1", RunOutcome::Failed);
    run_at(&world, T0 + HOUR + 600, "t1", RunOutcome::Blocked);
    run_at(&world, T0 + 3 * HOUR + 300, "t3", RunOutcome::Pending);
    run_at(&world, T0 + 3 * HOUR + 400, "t1", RunOutcome::Succeeded);
    let projector = world.projector();
    projector.catch_up().unwrap();
    (world, projector)
}

/// A bucket's start and its non-zero counts by outcome.
type Row<'a> = (DateTime<Utc>, Vec<(&'a str, u64)>);

/// Every bucket's start and its non-zero counts.
fn table(answer: &OutcomesOverTime) -> Vec<Row<'static>> {
    let counts = |bucket: &OutcomeBucket| {
        RunOutcome::ALL.iter().map(|o| (o.as_str(), bucket.count(*o))).filter(|(_, count)| *count > 0).collect()
    };
    answer.buckets.iter().map(|bucket| (bucket.start, counts(bucket))).collect()
}

#[test]
fn runs_at_known_times_are_counted_per_hour_and_outcome_blocked_apart_from_failed() {
    let (_world, projector) = hours();
    let db = projector.reader().unwrap();
    let now = at(T0 + 3 * HOUR + 1800);
    let answer = outcomes_over_time(&db, &RunFilter::default(), None, now).unwrap();
    assert_eq!(answer.width, BucketWidth::Hour);
    assert!(!answer.clamped && answer.counted_from.is_none());
    assert_eq!(
        table(&answer),
        vec![
            (at(T0), vec![("succeeded", 1), ("failed", 1)]),
            (at(T0 + HOUR), vec![("blocked", 1)]),
            (at(T0 + 2 * HOUR), vec![]),
            (at(T0 + 3 * HOUR), vec![("pending", 1), ("succeeded", 1)]),
        ]
    );

    let blocked = RunFilter { outcome: Some(RunOutcome::Blocked), ..RunFilter::default() };
    let answer = outcomes_over_time(&db, &blocked, None, now).unwrap();
    assert_eq!(
        table(&answer),
        vec![(at(T0 + HOUR), vec![("blocked", 1)]), (at(T0 + 2 * HOUR), vec![]), (at(T0 + 3 * HOUR), vec![])],
        "from the first blocked run on"
    );
}

#[test]
fn a_viewer_never_counts_runs_of_tenants_it_may_not_see() {
    let (_world, projector) = hours();
    let db = projector.reader().unwrap();
    let now = at(T0 + 3 * HOUR + 1800);
    let t1 = BTreeSet::from([s("t1")]);
    let answer = outcomes_over_time(&db, &RunFilter::default(), Some(&t1), now).unwrap();
    assert_eq!(answer.buckets.last().unwrap().by_outcome["pending"], 0, "t3's queued run is not t1's");
    assert_eq!(answer.buckets.last().unwrap().by_outcome["succeeded"], 1);
    let t3 = RunFilter { tenant_id: Some(s("t3")), ..RunFilter::default() };
    for tenants in [Some(&t1), Some(&BTreeSet::new())] {
        let hidden = outcomes_over_time(&db, &t3, tenants, now).unwrap();
        assert!(hidden.buckets.is_empty(), "no bucket, not even a range, from runs it may not see: {hidden:?}");
    }
    let seen = outcomes_over_time(&db, &t3, Some(&BTreeSet::from([s("t3")])), now).unwrap();
    assert_eq!(table(&seen), vec![(at(T0 + 3 * HOUR), vec![("pending", 1)])]);
}

#[test]
fn every_bucket_holds_what_the_list_of_its_filter_lists() {
    let (_world, projector) = hours();
    let db = projector.reader().unwrap();
    let now = at(T0 + 4 * HOUR);
    let filters = [
        RunFilter::default(),
        RunFilter { tenant_id: Some(s("t1")), ..RunFilter::default() },
        RunFilter { workspace_id: Some(s("w2")), ..RunFilter::default() },
        RunFilter { outcome: Some(RunOutcome::Failed), ..RunFilter::default() },
        RunFilter { status: Some(RunStatus::Queued), ..RunFilter::default() },
        RunFilter { initiator: Some(Principal::actor("u1")), ..RunFilter::default() },
        RunFilter { from: Some(at(T0 + 30)), to: Some(at(T0 + 3 * HOUR + 350)), ..RunFilter::default() },
        RunFilter { from: Some(at(T0 + HOUR)), ..RunFilter::default() },
    ];
    let visible = [None, Some(BTreeSet::from([s("t1")])), Some(BTreeSet::from([s("t1"), s("t3")]))];
    for filter in &filters {
        for tenants in &visible {
            let answer = outcomes_over_time(&db, filter, tenants.as_ref(), now).unwrap();
            let listed = all_pages_in(&db, filter, tenants.as_ref(), PAGE_SIZE_MAX);
            for bucket in &answer.buckets {
                let end = bucket.start + answer.width.duration();
                for outcome in RunOutcome::ALL {
                    let expected = listed
                        .iter()
                        .filter(|run| run.outcome == outcome)
                        .filter(|run| (bucket.start..end).contains(&run.queued_at.or(run.completed_at).unwrap()))
                        .count() as u64;
                    assert_eq!(bucket.count(outcome), expected, "{filter:?} in {tenants:?} at {}", bucket.start);
                }
            }
            let charted: u64 = answer.buckets.iter().map(OutcomeBucket::total).sum();
            assert_eq!(charted, listed.len() as u64, "every listed run is in a bucket: {filter:?} in {tenants:?}");
        }
    }
}

#[test]
fn a_range_longer_than_two_days_is_counted_by_the_day_and_keeps_its_newest_buckets() {
    let world = World::new();
    run_at(&world, T0, "t1", RunOutcome::Succeeded);
    run_at(&world, T0 + 3 * DAY, "t1", RunOutcome::Failed);
    run_at(&world, T0 + 3 * DAY + HOUR, "t1", RunOutcome::Blocked);
    run_at(&world, T0 + 100 * DAY, "t1", RunOutcome::Succeeded);
    let projector = world.projector();
    projector.catch_up().unwrap();
    let db = projector.reader().unwrap();
    let day = |days: i64| BucketWidth::Day.start_of(at(T0 + days * DAY));

    let now = at(T0 + 100 * DAY + HOUR);
    let all = outcomes_over_time(&db, &RunFilter::default(), None, now).unwrap();
    assert_eq!(all.width, BucketWidth::Day);
    assert!(all.clamped, "100 days are more than {OUTCOME_BUCKETS_MAX} buckets");
    assert_eq!(all.buckets.len(), OUTCOME_BUCKETS_MAX);
    assert_eq!(all.buckets.first().unwrap().start, day(100 - 59), "the newest buckets");
    assert_eq!(table(&all).last().unwrap(), &(day(100), vec![("succeeded", 1)]));
    let charted: u64 = all.buckets.iter().map(OutcomeBucket::total).sum();
    assert_eq!(charted, 1, "the runs of older buckets are not counted");

    let week = RunFilter { from: Some(at(T0 + 2 * DAY)), to: Some(at(T0 + 10 * DAY)), ..RunFilter::default() };
    let answer = outcomes_over_time(&db, &week, None, now).unwrap();
    assert_eq!((answer.width, answer.clamped, answer.buckets.len()), (BucketWidth::Day, false, 9));
    assert_eq!(answer.buckets[0].start, day(2));
    assert_eq!(table(&answer)[1], (day(3), vec![("failed", 1), ("blocked", 1)]));

    let two_days = RunFilter { from: Some(at(T0 + 99 * DAY)), ..RunFilter::default() };
    let answer = outcomes_over_time(&db, &two_days, None, now).unwrap();
    assert_eq!((answer.width, answer.buckets.len()), (BucketWidth::Hour, 26), "at most 48 hours are hours");
}

#[test]
fn a_count_past_its_bound_says_from_when_it_counted() {
    let (_world, projector) = hours();
    let db = projector.reader().unwrap();
    let now = at(T0 + 3 * HOUR + 1800);
    let bounded = outcomes_over_time_bounded(&db, &RunFilter::default(), None, now, 3).unwrap();
    let newest = all_pages(&db, &RunFilter::default(), PAGE_SIZE_MAX);
    let third = newest[2].queued_at.unwrap();
    assert_eq!(bounded.counted_from, Some(third), "the oldest run counted");
    assert_eq!(
        table(&bounded),
        vec![
            (at(T0 + HOUR), vec![("blocked", 1)]),
            (at(T0 + 2 * HOUR), vec![]),
            (at(T0 + 3 * HOUR), vec![("pending", 1), ("succeeded", 1)]),
        ],
        "older buckets are left out, not shown empty"
    );
    let exact = outcomes_over_time_bounded(&db, &RunFilter::default(), None, now, newest.len()).unwrap();
    assert_eq!(exact.counted_from, None, "a bound that reaches the oldest run counts everything");
    assert_eq!(exact, outcomes_over_time(&db, &RunFilter::default(), None, now).unwrap());
}

#[test]
fn the_count_reads_through_an_index_and_a_filter_without_runs_has_no_buckets() {
    let (_world, projector) = hours();
    let db = projector.reader().unwrap();
    for filter in [
        RunFilter::default(),
        RunFilter { tenant_id: Some(s("t1")), ..RunFilter::default() },
        RunFilter { outcome: Some(RunOutcome::Blocked), from: Some(at(T0)), ..RunFilter::default() },
    ] {
        for width in [BucketWidth::Hour, BucketWidth::Day] {
            let steps = query::plan(&db, &grouped_sql(&filter, width));
            assert!(steps.iter().any(|step| step.starts_with("SEARCH runs")), "{filter:?}: {steps:?}");
            assert!(!steps.iter().any(|step| step.starts_with("SCAN runs")), "{filter:?}: {steps:?}");
        }
    }
    let now = at(T0 + 4 * HOUR);
    let future = RunFilter { from: Some(at(T0 + 10 * HOUR)), ..RunFilter::default() };
    assert!(outcomes_over_time(&db, &future, None, now).unwrap().buckets.is_empty());
    let nobody = RunFilter { tenant_id: Some(s("nobody")), ..RunFilter::default() };
    assert!(outcomes_over_time(&db, &nobody, None, now).unwrap().buckets.is_empty());
}
