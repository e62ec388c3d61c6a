//! The log's conformance suite: the same cases against both backends.
//! Each case takes a [`Place`], where a log can be opened (and opened again
//! after a close). sled runs each case as a test of its own; PostgreSQL
//! runs them all in one test over one throwaway cluster, each case in a
//! database of its own, plus the cases only a shared database has (two
//! nodes appending to one log).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::DateTime;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::envelope::{NewEvent, StreamId};
use crate::verify::verify;

/// One case of the suite.
pub(crate) type Case = fn(&dyn Place);

/// Where a case opens its log.
pub(crate) trait Place {
    /// Opens this place's log (again after a close: the same log).
    fn open(&self, options: LogOptions) -> Log;
    /// A new, empty place of the same backend.
    fn another(&self) -> Box<dyn Place>;
}

pub(crate) fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

pub(crate) fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

pub(crate) fn event(stream_name: &str, n: u64) -> NewEvent {
    NewEvent::new(stream(stream_name), "thing_happened", 1, &serde_json::json!({ "n": n })).unwrap()
}

pub(crate) fn assert_verifies(log: &Log) {
    let report = verify(log, None, &mut |_: &Envelope| Ok(()), &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
}

pub(crate) fn append_then_read_returns_the_same_events_in_order(place: &dyn Place) {
    let log = place.open(options());
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

pub(crate) fn stream_version_conflicts_are_values_and_append_nothing(place: &dyn Place) {
    let log = place.open(options());
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

pub(crate) fn head_expectation_refuses_an_append_that_does_not_follow(place: &dyn Place) {
    let log = place.open(options());
    let at = |head| Expectations { streams: vec![], head: Some(head) };
    assert!(log.append_blocking(vec![event("a", 1)], at(0)).unwrap().is_ok());
    assert_eq!(
        log.append_blocking(vec![event("a", 2)], at(0)).unwrap(),
        Err(Conflict::Head { expected: 0, actual: 1 })
    );
    assert!(log.append_blocking(vec![event("a", 3)], at(1)).unwrap().is_ok());
}

pub(crate) fn re_appending_the_same_event_ids_returns_the_original_positions(place: &dyn Place) {
    let log = place.open(options());
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

pub(crate) fn an_append_with_one_bad_event_appends_none_of_it(place: &dyn Place) {
    let log = place.open(options());
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

pub(crate) fn reopening_keeps_every_event_and_continues_the_chain(place: &dyn Place) {
    let head = {
        let log = place.open(options());
        for n in 0..20 {
            log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
        }
        log.head()
    };
    let log = place.open(options());
    assert_eq!(log.head(), head);
    assert_eq!(log.stream_version(&stream("a")).unwrap(), 20);
    log.append_blocking(vec![event("a", 21)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read(21, 1).unwrap()[0].previous_hash, head.hash);
    assert_verifies(&log);
}

pub(crate) fn recorded_at_never_goes_backwards_even_if_the_clock_does(place: &dyn Place) {
    let ticks = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000_000));
    let clock_ticks = Arc::clone(&ticks);
    let clock: Clock = Arc::new(move || {
        let micros = clock_ticks.fetch_sub(1000, std::sync::atomic::Ordering::SeqCst);
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    });
    let log = place.open(LogOptions { clock, ..options() });
    for n in 0..5 {
        log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
    }
    let times: Vec<_> = log.read(1, 10).unwrap().iter().map(|e| e.recorded_at).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

pub(crate) fn concurrent_appenders_are_group_committed(place: &dyn Place) {
    let log = Arc::new(place.open(options()));
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

pub(crate) fn the_write_pipeline_observes_every_answer_commit_and_sync(place: &dyn Place) {
    let log = place.open(options());
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

pub(crate) fn subscription_catches_up_then_follows_live_exactly_once(place: &dyn Place) {
    let log = Arc::new(place.open(options()));
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

pub(crate) fn a_subscription_ends_when_the_log_closes(place: &dyn Place) {
    let log = place.open(options());
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let mut subscription = log.subscribe(1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(subscription.next().await.unwrap().unwrap().position, 1);
        drop(log);
        assert!(subscription.next().await.is_none());
    });
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

/// Against a model: positions gapless, stream versions gapless, conflicts
/// exactly when the expectation is wrong, replays append nothing.
pub(crate) fn random_histories_match_the_model(place: &dyn Place) {
    let config = ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(step(), 1..40), |steps| {
        let place = place.another();
        let log = place.open(options());
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
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Every case, by name, for a backend that runs them in one test.
pub(crate) const CASES: &[(&str, Case)] = &[
    ("append_then_read_returns_the_same_events_in_order", append_then_read_returns_the_same_events_in_order),
    ("stream_version_conflicts_are_values_and_append_nothing", stream_version_conflicts_are_values_and_append_nothing),
    (
        "head_expectation_refuses_an_append_that_does_not_follow",
        head_expectation_refuses_an_append_that_does_not_follow,
    ),
    (
        "re_appending_the_same_event_ids_returns_the_original_positions",
        re_appending_the_same_event_ids_returns_the_original_positions,
    ),
    ("an_append_with_one_bad_event_appends_none_of_it", an_append_with_one_bad_event_appends_none_of_it),
    ("reopening_keeps_every_event_and_continues_the_chain", reopening_keeps_every_event_and_continues_the_chain),
    (
        "recorded_at_never_goes_backwards_even_if_the_clock_does",
        recorded_at_never_goes_backwards_even_if_the_clock_does,
    ),
    ("concurrent_appenders_are_group_committed", concurrent_appenders_are_group_committed),
    (
        "the_write_pipeline_observes_every_answer_commit_and_sync",
        the_write_pipeline_observes_every_answer_commit_and_sync,
    ),
    ("subscription_catches_up_then_follows_live_exactly_once", subscription_catches_up_then_follows_live_exactly_once),
    ("a_subscription_ends_when_the_log_closes", a_subscription_ends_when_the_log_closes),
    ("random_histories_match_the_model", random_histories_match_the_model),
];
