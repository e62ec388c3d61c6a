//! Unit and property tests of the log.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::verify::verify;

fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn event(stream_name: &str, n: u64) -> NewEvent {
    NewEvent::new(stream(stream_name), "thing_happened", 1, &serde_json::json!({ "n": n })).unwrap()
}

fn assert_verifies(log: &Log) {
    let report = verify(log, None, &mut |_: &Envelope| Ok(()), &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
}

#[test]
fn append_then_read_returns_the_same_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let events = vec![event("a", 1), event("b", 2), event("a", 3)];
    let appended = log.append_blocking(events.clone(), Expectations::none()).unwrap().unwrap();
    assert_eq!((appended.first_position, appended.last_position), (1, 3));
    let read = log.read(1, 10).unwrap();
    assert_eq!(read.len(), 3);
    for (stored, proposed) in read.iter().zip(&events) {
        assert_eq!(stored.id, proposed.event_id);
        assert_eq!(stored.payload.get(), proposed.payload.get());
    }
    assert_eq!(read.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1, 1, 2]);
    assert_eq!(read[0].previous_hash, Hash::GENESIS);
    assert_eq!(read[1].previous_hash, read[0].hash);
    assert_eq!(log.head(), Head { position: 3, hash: read[2].hash });
    assert_eq!(log.read_stream(&stream("a"), 1, 10).unwrap().len(), 2);
    assert_eq!(log.read_stream(&stream("a"), 2, 10).unwrap()[0].position, 3);
    assert_verifies(&log);
}

#[test]
fn stream_version_conflicts_are_values_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let first = Expectations::stream(stream("a"), ExpectedVersion::NoStream);
    log.append_blocking(vec![event("a", 1)], first.clone()).unwrap().unwrap();
    let again = log.append_blocking(vec![event("a", 2)], first).unwrap();
    assert_eq!(
        again,
        Err(Conflict::StreamVersion { stream: stream("a"), expected: ExpectedVersion::NoStream, actual: 1 })
    );
    let stale = Expectations::stream(stream("a"), ExpectedVersion::Exact(0));
    assert!(matches!(log.append_blocking(vec![event("a", 3)], stale).unwrap(), Err(Conflict::StreamVersion { .. })));
    let exact = Expectations::stream(stream("a"), ExpectedVersion::Exact(1));
    assert!(log.append_blocking(vec![event("a", 4)], exact).unwrap().is_ok());
    assert_eq!(log.head().position, 2);
}

#[test]
fn head_expectation_refuses_an_append_that_does_not_follow() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let at = |head| Expectations { streams: vec![], head: Some(head) };
    assert!(log.append_blocking(vec![event("a", 1)], at(0)).unwrap().is_ok());
    assert_eq!(
        log.append_blocking(vec![event("a", 2)], at(0)).unwrap(),
        Err(Conflict::Head { expected: 0, actual: 1 })
    );
    assert!(log.append_blocking(vec![event("a", 3)], at(1)).unwrap().is_ok());
}

#[test]
fn re_appending_the_same_event_ids_returns_the_original_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let batch = vec![event("a", 1), event("b", 2)];
    let first = log.append_blocking(batch.clone(), Expectations::none()).unwrap().unwrap();
    log.append_blocking(vec![event("c", 3)], Expectations::none()).unwrap().unwrap();
    let again = log.append_blocking(batch.clone(), Expectations::none()).unwrap().unwrap();
    assert!(again.duplicate);
    assert_eq!((again.first_position, again.last_position), (first.first_position, first.last_position));
    assert_eq!(again.recorded_at, first.recorded_at);
    assert_eq!(log.head().position, 3);
    let mixed = vec![batch[0].clone(), event("d", 4)];
    assert!(matches!(log.append_blocking(mixed, Expectations::none()), Err(Error::EventIdReused { .. })));
    assert_eq!(log.head().position, 3);
}

#[test]
fn an_append_with_one_bad_event_appends_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let huge = serde_json::json!({ "blob": "x".repeat(crate::limits::EVENT_BYTES_MAX) });
    let bad = NewEvent::new(stream("a"), "thing_happened", 1, &huge).unwrap();
    let result = log.append_blocking(vec![event("a", 1), bad], Expectations::none());
    assert!(matches!(result, Err(Error::InvalidEvent(_))));
    assert_eq!(log.head(), Head::EMPTY);
    assert!(matches!(log.append_blocking(vec![], Expectations::none()), Err(Error::InvalidEvent(_))));
    let twice = event("a", 1);
    assert!(matches!(
        log.append_blocking(vec![twice.clone(), twice], Expectations::none()),
        Err(Error::InvalidEvent(_))
    ));
    log.append_blocking(vec![event("a", 2)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read_stream(&stream("a"), 1, 10).unwrap().len(), 1);
}

#[test]
fn reopening_keeps_every_event_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let log = Log::open(dir.path(), options()).unwrap();
        for n in 0..20 {
            log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
        }
        log.head()
    };
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.stream_version(&stream("a")).unwrap(), 20);
    log.append_blocking(vec![event("a", 21)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read(21, 1).unwrap()[0].previous_hash, head.hash);
    assert_verifies(&log);
}

#[test]
fn recorded_at_never_goes_backwards_even_if_the_clock_does() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000_000));
    let clock_ticks = Arc::clone(&ticks);
    let clock: Clock = Arc::new(move || {
        let micros = clock_ticks.fetch_sub(1000, std::sync::atomic::Ordering::SeqCst);
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    });
    let log = Log::open(dir.path(), LogOptions { clock, ..options() }).unwrap();
    for n in 0..5 {
        log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
    }
    let times: Vec<_> = log.read(1, 10).unwrap().iter().map(|e| e.recorded_at).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

#[test]
fn concurrent_appenders_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), options()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..32u64 {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                for n in 0..20 {
                    let name = format!("t{task}");
                    log.append(vec![event(&name, n)], Expectations::none()).await.unwrap().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let stats = log.stats();
    assert_eq!(stats.events_appended, 640);
    assert!(stats.commits < 640, "concurrent appends should share commits: {stats:?}");
    assert_verifies(&log);
}

#[test]
fn the_write_pipeline_observes_every_answer_commit_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let first = vec![event("observed", 0)];
    log.append_blocking(first.clone(), Expectations::none()).unwrap().unwrap();
    log.append_blocking(vec![event("observed", 1), event("observed", 2)], Expectations::none()).unwrap().unwrap();
    // The same events again: answered as a duplicate, still an answer.
    log.append_blocking(first, Expectations::none()).unwrap().unwrap();
    let stats = log.stats();
    let observed = log.observations();
    let answered = stats.appends_acknowledged + stats.appends_duplicate + stats.appends_conflicted;
    assert_eq!(observed.append_latency.count, answered);
    assert_eq!(observed.append_latency.count, 3);
    assert!(observed.append_latency.sum > 0.0, "{observed:?}");
    assert_eq!(observed.commit_events.count, stats.commits);
    assert_eq!(observed.commit_events.sum, stats.events_appended as f64);
    assert!(observed.sync_latency.count >= 1 && observed.sync_latency.count <= stats.commits, "{observed:?}");
}

#[test]
fn subscription_catches_up_then_follows_live_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), options()).unwrap());
    for n in 0..700 {
        log.append_blocking(vec![event("before", n)], Expectations::none()).unwrap().unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let positions = runtime.block_on(async {
        let mut subscription = log.subscribe(1);
        let writer = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for n in 0..300 {
                    log.append(vec![event("live", n), event("live", n)], Expectations::none()).await.unwrap().unwrap();
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 1300 {
            seen.push(subscription.next().await.unwrap().unwrap().position);
        }
        writer.await.unwrap();
        seen
    });
    assert_eq!(positions, (1..=1300).collect::<Vec<_>>());
}

#[test]
fn a_subscription_ends_when_the_log_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let mut subscription = log.subscribe(1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(subscription.next().await.unwrap().unwrap().position, 1);
        drop(log);
        assert!(subscription.next().await.is_none());
    });
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), options()).unwrap();
    // A snapshot the live owner is writing must survive the refused open.
    let generating = dir.path().join("store/snap.0000000000000001.generating");
    std::fs::write(&generating, b"").unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(Log::open(dir.path(), options()), Err(Error::Locked { .. })));
    assert!(started.elapsed() < crate::limits::STORE_LOCK_RELEASE_WAIT, "another owner is refused at once");
    assert!(generating.exists());
}

#[test]
fn a_closed_log_reopens_at_once_many_times() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20u64 {
        let log = Log::open(dir.path(), options()).unwrap();
        assert_eq!(log.head().position, round);
        log.append_blocking(vec![event("reopen", round)], Expectations::none()).unwrap().unwrap();
        drop(log);
    }
}

#[test]
fn head_digest_round_trips() {
    let head = Head { position: 42, hash: Hash::of(b"x") };
    assert_eq!(Head::parse_digest(&head.digest()), Some(head));
    assert_eq!(Head::parse_digest("42"), None);
    assert_eq!(Head::parse_digest("x:00"), None);
}

/// One step of a random history: an append of `events` (stream indexes) with
/// an optional expectation on the first event's stream.
#[derive(Debug, Clone)]
struct Step {
    streams: Vec<u8>,
    expect_exact: Option<u64>,
    replay_previous: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (prop::collection::vec(0u8..4, 1..4), prop::option::of(0u64..4), prop::bool::weighted(0.1))
        .prop_map(|(streams, expect_exact, replay_previous)| Step { streams, expect_exact, replay_previous })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Against a model: positions gapless, stream versions gapless, conflicts
    /// exactly when the expectation is wrong, replays append nothing.
    #[test]
    fn random_histories_match_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        let mut versions: HashMap<u8, u64> = HashMap::new();
        let mut head = 0u64;
        let mut previous: Option<Vec<NewEvent>> = None;
        let mut ids = HashSet::new();
        for step in steps {
            if step.replay_previous {
                if let Some(events) = &previous {
                    let answer = log.append_blocking(events.clone(), Expectations::none()).unwrap().unwrap();
                    prop_assert!(answer.duplicate);
                    prop_assert_eq!(log.head().position, head);
                    continue;
                }
            }
            let events: Vec<NewEvent> = step.streams.iter().map(|s| event(&format!("s{s}"), u64::from(*s))).collect();
            let first = step.streams[0];
            let expectations = match step.expect_exact {
                Some(v) => Expectations::stream(stream(&format!("s{first}")), ExpectedVersion::Exact(v)),
                None => Expectations::none(),
            };
            let answer = log.append_blocking(events.clone(), expectations).unwrap();
            let actual = versions.get(&first).copied().unwrap_or(0);
            if step.expect_exact.is_some_and(|v| v != actual) {
                prop_assert!(answer.is_err());
                continue;
            }
            let appended = answer.unwrap();
            prop_assert_eq!(appended.first_position, head + 1);
            head += events.len() as u64;
            prop_assert_eq!(appended.last_position, head);
            for s in &step.streams {
                *versions.entry(*s).or_insert(0) += 1;
            }
            ids.extend(events.iter().map(|e| e.event_id));
            previous = Some(events);
        }
        prop_assert_eq!(log.head().position, head);
        let all = log.read(1, 10_000).unwrap();
        prop_assert_eq!(all.len() as u64, head);
        prop_assert_eq!(all.iter().map(|e| e.id).collect::<HashSet<Uuid>>(), ids);
        for (s, version) in versions {
            prop_assert_eq!(log.stream_version(&stream(&format!("s{s}"))).unwrap(), version);
        }
        assert_verifies(&log);
    }
}

#[test]
fn projection_trees_of_an_earlier_version_are_dropped_and_the_log_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    drop(log);
    {
        let db = sled::Config::new().path(dir.path().join("store")).open().unwrap();
        db.open_tree("view.monitoring.3").unwrap().insert(b"run:", b"old".to_vec()).unwrap();
        db.open_tree("views.meta").unwrap().insert(b"monitoring", b"3".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.head().position, 1);
    let names: Vec<String> =
        log.store().db_for_tests().tree_names().iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    assert!(names.iter().all(|name| !name.starts_with("view")), "{names:?}");
    assert_verifies(&log);
}

#[test]
fn the_restart_snapshot_is_kept_beside_the_log_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.restart_snapshot().unwrap(), None);
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    log.store_restart_snapshot(1, b"runs").unwrap();
    assert_eq!(log.restart_snapshot().unwrap(), Some((1, b"runs".to_vec())));
    assert_eq!(log.read(1, 10).unwrap().len(), 1, "the snapshot is no event");
    assert_verifies(&log);
}
