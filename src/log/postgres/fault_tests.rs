//! A connection cut during `COMMIT`, made deterministic with the fault
//! proxy (`tests/support/tcp_proxy.rs`): the log is opened through the
//! proxy, which cuts the writer's connection at the next `COMMIT`, after
//! the server committed or before it could. Whatever happened, the writer
//! must learn it by event id before it answers, and a retry with the same
//! event ids must be safe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::envelope::NewEvent;
use crate::error::Error;
use crate::log::conformance::{assert_verifies, event, options};
use crate::log::{Appended, Conflict, Expectations, Log, LogOptions};
use crate::postgres_cluster::Cluster;
use crate::tcp_proxy::{Admission, Cut, Proxy};

/// The resolve wait of the tests that keep the database out of reach: long
/// enough for a reconnect attempt or two, short for a test.
const SHORT_RESOLVE_WAIT: Duration = Duration::from_secs(2);
/// Longest a test waits for an answer before it fails instead of hanging.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(60);

/// A cluster, a database in it, and a proxy in front of it.
struct Setup {
    cluster: Cluster,
    proxy: Proxy,
    database: String,
}

impl Setup {
    fn new(database: &str) -> Setup {
        let cluster = Cluster::start(&[]);
        cluster.database(database);
        let proxy = Proxy::start(cluster.port);
        Setup { cluster, proxy, database: database.to_owned() }
    }

    /// The log as a node opens it, through the proxy.
    fn open(&self, options: LogOptions) -> Arc<Log> {
        Arc::new(Log::open_postgres(&self.proxy.url(&self.database), options).unwrap())
    }

    /// The log opened afresh, straight on the server: what is stored.
    fn stored(&self) -> Log {
        Log::open_postgres(&self.cluster.url(&self.database), options()).unwrap()
    }
}

type Answer = Result<Result<Appended, Conflict>, Error>;

/// Appends on another thread and waits at most [`ANSWER_WAIT_MAX`] (a
/// writer that hangs fails the test rather than hanging it).
fn append(log: &Arc<Log>, events: &[NewEvent]) -> (Answer, Duration) {
    let (log, events) = (Arc::clone(log), events.to_vec());
    let (answer, answered) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = answer.send(log.append_blocking(events, Expectations::none()));
    });
    let answer = answered.recv_timeout(ANSWER_WAIT_MAX).expect("the append was never answered");
    (answer, started.elapsed())
}

/// The ids stored, in position order, read on a fresh connection.
fn stored_ids(setup: &Setup) -> Vec<uuid::Uuid> {
    let stored = setup.stored();
    let events = stored.read(1, 1000).unwrap();
    assert!(events.iter().enumerate().all(|(n, e)| e.position == n as u64 + 1), "gapless from 1");
    events.iter().map(|e| e.id).collect()
}

fn ids(events: &[NewEvent]) -> Vec<uuid::Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

#[test]
fn a_commit_whose_answer_is_lost_is_acknowledged_once_resolved() {
    let setup = Setup::new("answer_lost");
    let log = setup.open(options());
    let first = vec![event("a", 1)];
    log.append_blocking(first.clone(), Expectations::none()).unwrap().unwrap();
    let cut = vec![event("a", 2), event("b", 1)];
    setup.proxy.arm(Cut::AfterCommit);
    let (answer, _) = append(&log, &cut);
    assert_eq!(setup.proxy.cuts(), 1, "the proxy cut the commit's connection");
    let appended = answer.unwrap().unwrap();
    assert_eq!((appended.first_position, appended.last_position, appended.duplicate), (2, 3, false));
    assert_eq!(log.head().position, 3, "the node's head moved with the acknowledgement");
    assert_eq!(stored_ids(&setup), [ids(&first), ids(&cut)].concat(), "in the log once, where acknowledged");
    assert_verifies(&setup.stored());
    let next = log.append_blocking(vec![event("c", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(next.first_position, 4, "the writer goes on after the resolution");
    let again = log.append_blocking(cut, Expectations::none()).unwrap().unwrap();
    assert_eq!((again.first_position, again.last_position, again.duplicate), (2, 3, true));
    assert_verifies(&log);
}

/// What an append whose commits the proxy cut `cuts` times before the
/// server got them left: the setup, the log, the append before it (`a` 1,
/// stored) and the cut one (`a` 2 and `b` 1), and its answer.
struct CutCommits {
    setup: Setup,
    log: Arc<Log>,
    first: Vec<NewEvent>,
    cut: Vec<NewEvent>,
    answer: Answer,
}

fn cut_commits(database: &str, cuts: usize) -> CutCommits {
    let setup = Setup::new(database);
    let log = setup.open(options());
    let first = vec![event("a", 1)];
    log.append_blocking(first.clone(), Expectations::none()).unwrap().unwrap();
    let cut = vec![event("a", 2), event("b", 1)];
    for _ in 0..cuts {
        setup.proxy.arm(Cut::BeforeCommit);
    }
    let (answer, _) = append(&log, &cut);
    assert_eq!(setup.proxy.cuts(), cuts, "the proxy cut the commits' connections");
    CutCommits { setup, log, first, cut, answer }
}

/// A commit cut before the server got it is found not stored once the
/// old session is gone, and the group is sent once more, on a new
/// connection: the append is acknowledged, stored once.
#[test]
fn a_commit_cut_before_the_server_got_it_is_sent_again_and_appended_once() {
    let CutCommits { setup, log, first, cut, answer } = cut_commits("commit_lost", 1);
    let appended = answer.unwrap().unwrap();
    assert_eq!((appended.first_position, appended.last_position, appended.duplicate), (2, 3, false));
    let again = log.append_blocking(cut.clone(), Expectations::none()).unwrap().unwrap();
    assert!(again.duplicate, "once appended, the same ids are a duplicate");
    assert_eq!(stored_ids(&setup), [ids(&first), ids(&cut)].concat(), "appended once");
    assert_verifies(&setup.stored());
}

/// Sent once more only: when the second commit is cut too, the append is
/// answered with the error, nothing appended, and a retry appends it.
#[test]
fn a_group_whose_commit_is_cut_twice_is_an_error_and_appends_nothing() {
    let CutCommits { setup, log, first, cut, answer } = cut_commits("commit_lost_twice", 2);
    let error = answer.expect_err("a commit the server never got is not acknowledged");
    assert!(error.to_string().contains("not in the log: nothing was appended"), "{error}");
    assert_eq!(setup.stored().latest_head().unwrap().position, 1, "the stored head did not move");
    assert_eq!(stored_ids(&setup), ids(&first));
    let retried = log.append_blocking(cut.clone(), Expectations::none()).unwrap().unwrap();
    assert_eq!((retried.first_position, retried.last_position, retried.duplicate), (2, 3, false));
    assert_eq!(stored_ids(&setup), [ids(&first), ids(&cut)].concat(), "appended once");
    assert_verifies(&setup.stored());
}

/// The follower's listening connection dies while idle (cut at its next
/// poll of the head): the follower listens anew, and the node never says
/// the database is out of reach, which it is not.
#[test]
fn a_listening_connection_that_died_while_idle_is_not_reported_unreachable() {
    let setup = Setup::new("listener_died");
    let log = setup.open(options());
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    // Past the follower's first poll on its connection: a connection cut
    // at its first poll is reported, as it should be (nothing tells it
    // from a database that drops every new connection).
    std::thread::sleep(3 * crate::log::postgres::HEAD_POLL_INTERVAL);
    assert_eq!(log.unreachable(), None);
    for round in 0..2 {
        setup.proxy.break_open_connections();
        let cuts = setup.proxy.cuts();
        let until = Instant::now() + 3 * crate::log::postgres::HEAD_POLL_INTERVAL;
        while Instant::now() < until {
            assert_eq!(log.unreachable(), None, "round {round}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(setup.proxy.cuts() > cuts, "round {round}: the listening connection was cut at its poll");
    }
    let next = log.append_blocking(vec![event("a", 2)], Expectations::none()).unwrap().unwrap();
    assert_eq!(next.first_position, 2);
}

/// Every connection the node keeps open dies while it is idle (the
/// database restarted or failed over; here the proxy cuts each at its
/// next message), unnoticed until it is used. The writer's lanes and the
/// read connections each learn it on their next statement, and send it
/// again on a new connection: every append and read after it succeeds,
/// none is answered with the dead connection's error.
#[test]
fn connections_that_died_while_idle_are_replaced_without_failing_an_append_or_a_read() {
    let setup = Setup::new("died_idle");
    let log = setup.open(options());
    for n in 1..=4 {
        log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
        assert_eq!(log.read(1, 100).unwrap().len(), n as usize);
    }
    for round in 0..3 {
        setup.proxy.break_open_connections();
        let cuts = setup.proxy.cuts();
        for n in 1..=4 {
            let next = event(&format!("r{round}"), n);
            let answer = append(&log, std::slice::from_ref(&next)).0;
            assert!(matches!(answer, Ok(Ok(_))), "round {round}, append {n}: {answer:?}");
        }
        let read = log.read(1, 100);
        assert!(read.is_ok(), "round {round}: {read:?}");
        assert!(setup.proxy.cuts() > cuts, "round {round}: the connections the node kept were cut");
    }
    assert_eq!(stored_ids(&setup).len(), 16);
    assert_verifies(&log);
}

/// The database out of reach for longer than the resolve wait, refusing
/// connections: the answer says the outcome is unknown, in about the wait.
#[test]
fn a_lost_commit_answer_that_cannot_be_resolved_says_so_and_a_retry_is_idempotent() {
    let setup = Setup::new("unresolved");
    let log = setup.open(LogOptions { commit_resolve_wait: SHORT_RESOLVE_WAIT, ..options() });
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let cut = vec![event("a", 2)];
    setup.proxy.admit(Admission::Refuse);
    setup.proxy.arm(Cut::AfterCommit);
    let (answer, took) = append(&log, &cut);
    assert_unknown_outcome(answer, took);
    setup.proxy.admit(Admission::Forward);
    let retried = log.append_blocking(cut.clone(), Expectations::none()).unwrap().unwrap();
    assert_eq!((retried.first_position, retried.duplicate), (2, true), "it had committed: the retry finds it");
    let next = log.append_blocking(vec![event("a", 3)], Expectations::none()).unwrap().unwrap();
    assert_eq!(next.first_position, 3);
    assert_eq!(stored_ids(&setup).len(), 3);
    assert_verifies(&setup.stored());
}

/// The same with a database that accepts connections and never answers
/// (and no `connect_timeout` in the URL): the wait still bounds the answer.
#[test]
fn a_lost_commit_answer_is_resolved_within_the_wait_even_when_the_database_stalls() {
    let setup = Setup::new("stalled");
    let log = setup.open(LogOptions { commit_resolve_wait: SHORT_RESOLVE_WAIT, ..options() });
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let cut = vec![event("a", 2)];
    setup.proxy.admit(Admission::Stall);
    setup.proxy.arm(Cut::BeforeCommit);
    let (answer, took) = append(&log, &cut);
    assert_unknown_outcome(answer, took);
    setup.proxy.admit(Admission::Forward);
    let retried = log.append_blocking(cut, Expectations::none()).unwrap().unwrap();
    assert_eq!((retried.first_position, retried.duplicate), (2, false), "it had not committed: the retry appends");
    assert_eq!(stored_ids(&setup).len(), 2);
}

fn assert_unknown_outcome(answer: Answer, took: Duration) {
    let error = answer.expect_err("an outcome the writer could not learn is not acknowledged");
    let text = error.to_string();
    assert!(text.contains("did not tell") && text.contains("retrying with the same event ids is safe"), "{text}");
    assert!(took >= SHORT_RESOLVE_WAIT, "it tried for the whole wait: {took:?}");
    assert!(took < SHORT_RESOLVE_WAIT + Duration::from_secs(5), "and not much longer: {took:?}");
}

/// The answer lost while the server is still committing: here the commit
/// waits for a synchronous standby that never comes, holding the head row.
/// A look by event id that did not wait for that transaction would not
/// find the events and answer "nothing was appended", though they appear
/// once the wait ends. The writer waits for the head row instead, so the
/// outcome is unknown within the wait, and a retry after the commit went
/// through is a duplicate.
#[test]
fn a_commit_still_in_progress_when_its_answer_is_lost_is_not_declared_absent() {
    let setup = Setup::new("in_progress");
    let log = setup.open(LogOptions { commit_resolve_wait: SHORT_RESOLVE_WAIT, ..options() });
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    setup.cluster.reload_setting("synchronous_standby_names", Some("no_such_standby"));
    let cut = vec![event("a", 2)];
    setup.proxy.arm(Cut::WhileCommitting);
    // The writer's look ends the server process that got the `COMMIT`. On
    // a loaded machine it could end it before that process read the
    // `COMMIT` (then it rolls back, and no commit was in progress): the
    // look's connection is held off until the commit waits for the standby.
    setup.proxy.admit(Admission::Stall);
    let (answer, took) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'";
            let deadline = Instant::now() + ANSWER_WAIT_MAX;
            while setup.cluster.psql(waiting) == "0" {
                assert!(Instant::now() < deadline, "the commit never waited for the standby");
                std::thread::sleep(Duration::from_millis(10));
            }
            setup.proxy.admit(Admission::Forward);
        });
        append(&log, &cut)
    });
    assert_eq!(setup.proxy.cuts(), 1, "the proxy cut the commit's connection");
    // The look's own `FOR SHARE` commits a row lock, which waits for the
    // standby too: the outcome stays unknown within the wait.
    assert_unknown_outcome(answer, took);
    setup.cluster.reload_setting("synchronous_standby_names", None);
    let retried = log.append_blocking(cut, Expectations::none()).unwrap().unwrap();
    assert_eq!((retried.first_position, retried.duplicate), (2, true), "the commit went through after all");
    assert_eq!(stored_ids(&setup).len(), 2);
}
