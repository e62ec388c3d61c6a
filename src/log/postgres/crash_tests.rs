//! The database SIGKILLed under load. These tests hold the log to its
//! contract, not to how its writer commits:
//! - an append acknowledged (`Ok(Ok)`) is stored once the database has
//!   restarted, at the position it was acknowledged at;
//! - an event a reader was shown (a subscription, or a read up to the
//!   latest head; on the appending node or on another) is stored after the
//!   restart, at the position it was shown at;
//! - with a synchronous standby, both hold on the standby promoted after
//!   the primary was killed, and the log appends on it.
//!
//! The server dies by SIGKILL to its postmaster alone, or to all its
//! processes at once (which loses WAL not yet written out of shared
//! memory: the harsher test of a commit acknowledged or shown too early).
//! After each check the stored log must verify and be gapless. The kill
//! comes at a moment drawn from a seeded generator; the seed is printed and
//! named in every failure, and `OPLEDGER_CRASH_SEED` replays it (the
//! threads' interleaving, of course, is not replayed).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::envelope::NewEvent;
use crate::log::conformance::{assert_verifies, event, options};
use crate::log::{Appended, Expectations, Log, LogOptions};
use crate::postgres_cluster::Cluster;

/// Threads appending at once.
const APPENDERS: usize = 16;
/// Events of one append: 1 to this many.
const APPEND_EVENTS_MOST: u64 = 3;
/// The kill comes this long after the load started, plus up to
/// [`KILL_AFTER_SPAN_MS`].
const KILL_AFTER_LEAST: Duration = Duration::from_millis(200);
const KILL_AFTER_SPAN_MS: u64 = 600;
/// Kills of the acknowledgement test, each appending on the ones before.
const ROUNDS: usize = 5;
/// Kills of the readers' test.
const READER_ROUNDS: usize = 3;
/// How long a writer tries to learn the outcome of a commit the kill cut:
/// short, so a round ends soon after the kill.
const RESOLVE_WAIT: Duration = Duration::from_secs(2);
/// The same across a failover: long enough to reach the promoted standby,
/// so that some cut commits are resolved there (and acknowledged).
const FAILOVER_RESOLVE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for every appender and reader to stop once told.
const STOP_WAIT_MAX: Duration = Duration::from_secs(60);
/// Longest wait for a log to append again after a restart or failover.
const RESUME_WAIT_MAX: Duration = Duration::from_secs(60);
/// Longest wait for the standby to be synchronous.
const SYNC_WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause after a failed append or read, so a log whose database is down
/// is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(20);
/// How often a reader waiting for new events looks at the stop flag.
const READER_POLL: Duration = Duration::from_millis(50);
/// Pause of a reader of the latest head that found nothing new: short, so
/// that it reads what was just committed before the kill can come.
const READER_IDLE_PAUSE: Duration = Duration::from_millis(1);
/// Events of one read.
const PAGE_EVENTS: usize = 1000;
/// Appends the load must have acknowledged after the promotion, to show
/// that the log appends on the promoted standby (more than the appends in
/// flight at the kill, which a resolution could acknowledge).
const APPENDS_AFTER_FAILOVER: u64 = APPENDERS as u64 + 50;
/// Failures listed in full in a message; the rest are counted.
const FAILURES_LISTED: usize = 10;
/// Replays a seed.
const SEED_VARIABLE: &str = "OPLEDGER_CRASH_SEED";

/// xorshift64*: enough to vary timings and sizes reproducibly (the core
/// crate has no random number dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is xorshift's fixed point.
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The seed of this test: [`SEED_VARIABLE`], or the clock.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VARIABLE) {
        Ok(text) => text.parse().expect("OPLEDGER_CRASH_SEED is a number"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_VARIABLE}={seed})");
    seed
}

/// An event at the position it was acknowledged or shown at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placed {
    position: u64,
    id: Uuid,
}

fn open(url: &str, resolve_wait: Duration) -> Arc<Log> {
    Arc::new(Log::open_postgres(url, LogOptions { commit_resolve_wait: resolve_wait, ..options() }).unwrap())
}

/// How the database dies.
#[derive(Debug, Clone, Copy)]
enum Death {
    /// SIGKILL to the postmaster alone ([`Cluster::kill`]): its backends
    /// end when they notice, finishing what they were doing.
    Postmaster,
    /// SIGKILL to the postmaster and every process it started at once, as
    /// a container's kill or the OOM killer of a cgroup: WAL not yet
    /// written out of shared memory is lost with them.
    EveryProcess,
}

/// The server's data directory, asked while it runs (the cluster does not
/// say it), to find its postmaster's pid at the kill.
fn data_directory(cluster: &Cluster) -> PathBuf {
    PathBuf::from(cluster.psql("SHOW data_directory"))
}

/// Kills the server as `death` says; the cluster then counts as stopped.
fn kill(cluster: &mut Cluster, data: &std::path::Path, death: Death) {
    if let Death::EveryProcess = death {
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        let children = String::from_utf8(children.stdout).unwrap();
        // One command, so the WAL writer gets no time to write out what the
        // others committed. A backend forked since the list ends by itself
        // when it sees the postmaster gone; it holds nothing of the load.
        let killed = Command::new("kill").arg("-9").arg(&pid).args(children.split_whitespace()).status().unwrap();
        assert!(killed.success(), "SIGKILL to {pid} and its children {children:?}");
    }
    cluster.kill();
}

/// Threads that run until told to stop, each answering one result.
struct Workers<T> {
    stop: Arc<AtomicBool>,
    sender: Option<mpsc::Sender<T>>,
    results: mpsc::Receiver<T>,
    started: usize,
}

impl<T: Send + 'static> Workers<T> {
    fn new() -> Workers<T> {
        let (sender, results) = mpsc::channel();
        Workers { stop: Arc::new(AtomicBool::new(false)), sender: Some(sender), results, started: 0 }
    }

    fn spawn(&mut self, work: impl FnOnce(&AtomicBool) -> T + Send + 'static) {
        let (stop, sender) = (Arc::clone(&self.stop), self.sender.clone().unwrap());
        std::thread::spawn(move || {
            let _ = sender.send(work(&stop));
        });
        self.started += 1;
    }

    /// Tells every thread to stop and gathers their results, failing the
    /// test when one does not answer within [`STOP_WAIT_MAX`] (hung, or
    /// panicked: its message is above).
    fn stop(mut self, what: &str) -> Vec<T> {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.sender.take());
        let deadline = Instant::now() + STOP_WAIT_MAX;
        (0..self.started)
            .map(|_| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.results.recv_timeout(left).unwrap_or_else(|error| {
                    panic!("a thread of the {what} did not answer within {STOP_WAIT_MAX:?} (hung, or panicked above): {error}")
                })
            })
            .collect()
    }
}

/// What the appenders saw.
#[derive(Default)]
struct Tally {
    acknowledged: Vec<Placed>,
    errors: u64,
    /// Answers the contract rules out (a conflict without expectations, a
    /// duplicate of fresh ids, positions that do not fit the append).
    anomalies: Vec<String>,
}

impl Tally {
    fn acknowledge(&mut self, events: &[NewEvent], appended: &Appended) {
        let span = appended.last_position.checked_sub(appended.first_position).map(|span| span + 1);
        if appended.duplicate || span != Some(events.len() as u64) {
            self.anomalies.push(format!("{} fresh events answered {appended:?}", events.len()));
            return;
        }
        for (offset, event) in events.iter().enumerate() {
            self.acknowledged.push(Placed { position: appended.first_position + offset as u64, id: event.event_id });
        }
    }

    fn merge(mut self, other: Tally) -> Tally {
        self.acknowledged.extend(other.acknowledged);
        self.errors += other.errors;
        self.anomalies.extend(other.anomalies);
        self
    }
}

/// [`APPENDERS`] threads appending 1 to [`APPEND_EVENTS_MOST`] fresh
/// events at a time, each on a stream of its own, until stopped.
/// `acknowledged` counts the acknowledged appends as they come.
struct Load {
    workers: Workers<Tally>,
    acknowledged: Arc<AtomicU64>,
}

impl Load {
    fn start(log: &Arc<Log>, round: usize, rng: &mut Rng) -> Load {
        let mut workers = Workers::new();
        let acknowledged = Arc::new(AtomicU64::new(0));
        for appender in 0..APPENDERS {
            let (log, counter, rng) = (Arc::clone(log), Arc::clone(&acknowledged), Rng::new(rng.next()));
            let stream = format!("r{round}a{appender}");
            workers.spawn(move |stop| append_until_stopped(&log, &stream, rng, stop, &counter));
        }
        Load { workers, acknowledged }
    }

    /// Waits until `count` appends were acknowledged, failing the test
    /// after `wait`.
    fn wait_for(&self, count: u64, wait: Duration, context: &str) {
        let deadline = Instant::now() + wait;
        while self.acknowledged.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "{context}: fewer than {count} appends acknowledged within {wait:?}");
            std::thread::sleep(READER_POLL);
        }
    }

    fn stop(self) -> Tally {
        self.workers.stop("appenders").into_iter().fold(Tally::default(), Tally::merge)
    }
}

fn append_until_stopped(log: &Log, stream: &str, mut rng: Rng, stop: &AtomicBool, counter: &AtomicU64) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let events: Vec<NewEvent> = (0..=rng.below(APPEND_EVENTS_MOST))
            .map(|_| {
                n += 1;
                event(stream, n)
            })
            .collect();
        match log.append_blocking(events.clone(), Expectations::none()) {
            Ok(Ok(appended)) => {
                tally.acknowledge(&events, &appended);
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(conflict)) => tally.anomalies.push(format!("a conflict without expectations: {conflict:?}")),
            Err(_) => {
                tally.errors += 1;
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
    tally
}

/// The events one reader was shown.
struct Shown {
    reader: &'static str,
    events: Vec<Placed>,
    errors: u64,
}

/// Follows `log`'s subscription from `from` until stopped, recording every
/// event it yields.
fn follow_subscription(reader: &'static str, log: &Log, from: u64, stop: &AtomicBool) -> Shown {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut subscription = log.subscribe(from);
    let mut shown = Shown { reader, events: Vec::new(), errors: 0 };
    while !stop.load(Ordering::SeqCst) {
        match runtime.block_on(async { tokio::time::timeout(READER_POLL, subscription.next()).await }) {
            Ok(Some(Ok(event))) => shown.events.push(Placed { position: event.position, id: event.id }),
            Ok(Some(Err(_))) => {
                shown.errors += 1;
                std::thread::sleep(ERROR_PAUSE);
            }
            Ok(None) => break,
            // Caught up: look at the stop flag again.
            Err(_) => {}
        }
    }
    shown
}

/// Reads `log` from `from` up to its latest head (one read of the
/// database each time) until stopped, recording every event read.
fn read_to_latest_head(reader: &'static str, log: &Log, from: u64, stop: &AtomicBool) -> Shown {
    let mut shown = Shown { reader, events: Vec::new(), errors: 0 };
    let mut next = from;
    while !stop.load(Ordering::SeqCst) {
        let read =
            log.latest_head()
                .and_then(|head| if next > head.position { Ok(Vec::new()) } else { log.read(next, PAGE_EVENTS) });
        match read {
            Ok(events) if events.is_empty() => std::thread::sleep(READER_IDLE_PAUSE),
            Ok(events) => {
                for event in events {
                    shown.events.push(Placed { position: event.position, id: event.id });
                    next = event.position + 1;
                }
            }
            Err(_) => {
                shown.errors += 1;
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
    shown
}

/// One reader of each kind: the appending node's subscription, and on
/// `observer` (another node over the same database) a subscription and
/// reads up to the latest head.
fn start_readers(log: &Arc<Log>, observer: Option<&Arc<Log>>, from: u64) -> Workers<Shown> {
    let mut readers = Workers::new();
    let appending = Arc::clone(log);
    readers.spawn(move |stop| follow_subscription("the appending node's subscription", &appending, from, stop));
    if let Some(observer) = observer {
        let (subscribed, reading) = (Arc::clone(observer), Arc::clone(observer));
        readers.spawn(move |stop| follow_subscription("another node's subscription", &subscribed, from, stop));
        readers.spawn(move |stop| read_to_latest_head("another node's reads to its latest head", &reading, from, stop));
    }
    readers
}

/// Appends one event, retrying until the log answers (it reconnects after
/// a restart or a failover), within [`RESUME_WAIT_MAX`].
fn append_once_resumed(log: &Arc<Log>, context: &str) -> Placed {
    let deadline = Instant::now() + RESUME_WAIT_MAX;
    let appended = event("resumed", 1);
    loop {
        match append_bounded(log, &appended, deadline, context) {
            Ok(Ok(done)) => return Placed { position: done.first_position, id: appended.event_id },
            Ok(Err(conflict)) => panic!("{context}: a conflict without expectations: {conflict:?}"),
            Err(error) => {
                assert!(Instant::now() < deadline, "{context}: the log did not append again: {error}");
                std::thread::sleep(ERROR_PAUSE * 10);
            }
        }
    }
}

/// One append on another thread, its answer awaited until `deadline` (the
/// writer bounds its connects, not every statement: a test must not hang
/// on one that never ends).
fn append_bounded(
    log: &Arc<Log>,
    event: &NewEvent,
    deadline: Instant,
    context: &str,
) -> Result<Result<Appended, crate::log::Conflict>, crate::error::Error> {
    let (log, events) = (Arc::clone(log), vec![event.clone()]);
    let (answer, answered) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = answer.send(log.append_blocking(events, Expectations::none()));
    });
    let left = deadline.saturating_duration_since(Instant::now());
    answered
        .recv_timeout(left)
        .unwrap_or_else(|error| panic!("{context}: an append was not answered within {RESUME_WAIT_MAX:?}: {error}"))
}

/// The log `url` names, opened afresh, and the id at each of its positions
/// (`ids[p - 1]`); it must be gapless from 1 to its head, hold each id
/// once, and verify.
fn stored(url: &str, context: &str) -> (Arc<Log>, Vec<Uuid>) {
    let log = open(url, RESOLVE_WAIT);
    let head = log.head().position;
    let mut ids = Vec::new();
    while (ids.len() as u64) < head {
        let from = ids.len() as u64 + 1;
        let page = log.read(from, PAGE_EVENTS).unwrap();
        assert!(!page.is_empty(), "{context}: nothing stored at {from}, under the head {head}");
        for (offset, event) in page.iter().enumerate() {
            assert_eq!(event.position, from + offset as u64, "{context}: the stored log is not gapless");
            ids.push(event.id);
        }
    }
    let unique: HashSet<&Uuid> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{context}: an event id is stored twice");
    assert_verifies(&log);
    (log, ids)
}

/// Every event of `placed` must be stored at its position.
fn assert_stored(ids: &[Uuid], placed: &[Placed], what: &str, context: &str) {
    let stored_at = |position: u64| usize::try_from(position).ok()?.checked_sub(1).and_then(|index| ids.get(index));
    let lost: Vec<&Placed> = placed.iter().filter(|p| stored_at(p.position) != Some(&p.id)).collect();
    assert!(
        lost.is_empty(),
        "{context}: {} of {} events {what} are not stored where they were (the stored head is {}); the first: {:?}",
        lost.len(),
        placed.len(),
        ids.len(),
        lost.iter().take(FAILURES_LISTED).map(|p| (p.position, p.id, stored_at(p.position))).collect::<Vec<_>>()
    );
}

fn assert_no_anomalies(tally: &Tally, context: &str) {
    assert!(tally.anomalies.is_empty(), "{context}: answers the contract rules out: {:?}", tally.anomalies);
}

/// Rounds of: load (and readers when `observe`) on one log, SIGKILL of the
/// server at a random moment (each [`Death`] in turn), restart, and the checks against the log
/// opened afresh. The same appending node goes on from round to round (it
/// reconnects), so each round appends on the ones before.
fn kill_under_load(test: &str, rounds: usize, observe: bool) {
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::start(&[]);
    let url = cluster.database("crash");
    let data = data_directory(&cluster);
    let log = open(&url, RESOLVE_WAIT);
    let observer = observe.then(|| open(&url, RESOLVE_WAIT));
    let mut acknowledged = Vec::new();
    let mut shown = Vec::new();
    let mut stored_head = 0;
    for round in 1..=rounds {
        let context = format!("{test}, seed {seed}, round {round}");
        let started = Instant::now();
        acknowledged.push(append_once_resumed(&log, &context));
        let load = Load::start(&log, round, &mut rng);
        let readers = observe.then(|| start_readers(&log, observer.as_ref(), stored_head + 1));
        let kill_after = KILL_AFTER_LEAST + Duration::from_millis(rng.below(KILL_AFTER_SPAN_MS));
        // Both deaths, the one that loses the most first.
        let death = if round % 2 == 1 { Death::EveryProcess } else { Death::Postmaster };
        std::thread::sleep(kill_after);
        kill(&mut cluster, &data, death);
        let tally = load.stop();
        let round_shown = readers.map(|readers| readers.stop("readers")).unwrap_or_default();
        cluster.restart();
        assert_no_anomalies(&tally, &context);
        assert!(!tally.acknowledged.is_empty(), "{context}: nothing was acknowledged before the kill");
        acknowledged.extend(&tally.acknowledged);
        let (_, ids) = stored(&url, &context);
        // The readers first: in the readers' test, what they lost is the
        // finding (an event shown too early is usually acknowledged too).
        assert_stored(&ids, &shown, "shown in earlier rounds", &context);
        for reader in &round_shown {
            assert_stored(&ids, &reader.events, &format!("shown by {}", reader.reader), &context);
        }
        shown.extend(round_shown.iter().flat_map(|reader| reader.events.iter().copied()));
        assert_stored(&ids, &acknowledged, "acknowledged", &context);
        eprintln!(
            "{context}: {death:?} killed after {kill_after:?}; {} events acknowledged, {} appends failed, readers shown {:?}; \
             {} stored; round took {:?}",
            tally.acknowledged.len(),
            tally.errors,
            round_shown.iter().map(|r| (r.reader, r.events.len(), r.errors)).collect::<Vec<_>>(),
            ids.len(),
            started.elapsed()
        );
        stored_head = ids.len() as u64;
    }
}

/// 1. Every acknowledged append survives SIGKILLs of PostgreSQL, at the
///    position it was acknowledged at.
#[test]
fn acknowledged_appends_survive_sigkill_of_postgres() {
    kill_under_load("acknowledged_appends_survive_sigkill_of_postgres", ROUNDS, false);
}

/// 2. No reader, on the appending node or on another, is shown an event
///    the killed database then lost.
#[test]
fn readers_are_never_shown_an_event_the_killed_database_loses() {
    kill_under_load("readers_are_never_shown_an_event_the_killed_database_loses", READER_ROUNDS, true);
}

/// Sets `synchronous_standby_names = '*'` on `primary` and waits until
/// `standby` streams as its synchronous standby.
fn make_synchronous(primary: &Cluster, standby: &Cluster) {
    primary.reload_setting("synchronous_standby_names", Some("*"));
    let deadline = Instant::now() + SYNC_WAIT_MAX;
    while primary.psql("SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication") != "sync" {
        assert!(Instant::now() < deadline, "the standby never became synchronous: {}", standby.server_log());
        std::thread::sleep(READER_POLL);
    }
}

/// 3. A primary with a synchronous standby, SIGKILLed under load; the
///    standby promoted. The same log (its URL names both hosts, read-write
///    sessions only) appends on the promoted standby, which holds every
///    acknowledged event and every event the subscription was shown, at
///    their positions, and verifies.
#[test]
fn acknowledged_appends_survive_failover_to_a_promoted_synchronous_standby() {
    let test = "acknowledged_appends_survive_failover_to_a_promoted_synchronous_standby";
    let seed = seed(test);
    let context = format!("{test}, seed {seed}");
    let mut rng = Rng::new(seed);
    let mut primary = Cluster::start(&[]);
    primary.psql("CREATE DATABASE crash");
    let data = data_directory(&primary);
    let standby = Cluster::standby_of(&primary, &[]);
    make_synchronous(&primary, &standby);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/crash?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    );
    let log = open(&url, FAILOVER_RESOLVE_WAIT);
    let started = Instant::now();
    let mut acknowledged = vec![append_once_resumed(&log, &context)];
    let load = Load::start(&log, 1, &mut rng);
    let readers = start_readers(&log, None, 1);
    let kill_after = KILL_AFTER_LEAST + Duration::from_millis(rng.below(KILL_AFTER_SPAN_MS));
    std::thread::sleep(kill_after);
    kill(&mut primary, &data, Death::EveryProcess);
    standby.promote();
    let failed_over = Instant::now();
    let before = load.acknowledged.load(Ordering::SeqCst);
    load.wait_for(before + APPENDS_AFTER_FAILOVER, RESUME_WAIT_MAX, &context);
    let resumed_after = failed_over.elapsed();
    let tally = load.stop();
    let shown = readers.stop("readers");
    assert_no_anomalies(&tally, &context);
    acknowledged.extend(&tally.acknowledged);
    let (stored_log, ids) = stored(&standby.url("crash"), &context);
    for reader in &shown {
        assert_stored(&ids, &reader.events, &format!("shown by {}", reader.reader), &context);
    }
    assert_stored(&ids, &acknowledged, "acknowledged", &context);
    let next = append_once_resumed(&log, &context);
    assert_eq!(next.position, ids.len() as u64 + 1, "{context}: the log appends right after the stored head");
    assert_eq!(stored_log.latest_head().unwrap().position, next.position, "{context}");
    assert_verifies(&stored_log);
    eprintln!(
        "{context}: killed after {kill_after:?}; appending again {resumed_after:?} after the promotion; {} events \
         acknowledged, {} appends failed, {} shown; {} stored; took {:?}",
        tally.acknowledged.len(),
        tally.errors,
        shown.iter().map(|r| r.events.len()).sum::<usize>(),
        ids.len(),
        started.elapsed()
    );
}
