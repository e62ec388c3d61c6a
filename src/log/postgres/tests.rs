//! The log's conformance suite on PostgreSQL (one throwaway cluster, each
//! case in a database of its own), and what only a shared database has:
//! two nodes appending to one log.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::log::conformance::{self, assert_verifies, event, options, stream, Place};
use crate::log::{Conflict, Expectations, ExpectedVersion, Head, Log, LogOptions};

use crate::postgres_cluster::Cluster;

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A log in a fresh database of the cluster.
struct PostgresPlace {
    cluster: Arc<Cluster>,
    url: String,
}

impl PostgresPlace {
    fn new(cluster: &Arc<Cluster>) -> PostgresPlace {
        let name = format!("log_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        PostgresPlace { cluster: Arc::clone(cluster), url: cluster.database(&name) }
    }
}

impl Place for PostgresPlace {
    fn open(&self, options: LogOptions) -> Log {
        Log::open_postgres(&self.url, options).unwrap()
    }

    fn another(&self) -> Box<dyn Place> {
        Box::new(PostgresPlace::new(&self.cluster))
    }
}

#[test]
fn the_log_contract_holds_on_postgres() {
    let cluster = Arc::new(Cluster::start(&[]));
    for (name, case) in conformance::CASES {
        eprintln!("conformance case on PostgreSQL: {name}");
        case(&PostgresPlace::new(&cluster));
    }
    two_nodes_append_to_one_gapless_chain(&PostgresPlace::new(&cluster));
    a_head_expectation_holds_across_nodes(&PostgresPlace::new(&cluster));
    an_event_id_appended_on_one_node_is_a_duplicate_on_the_other(&PostgresPlace::new(&cluster));
    a_database_with_synchronous_commit_off_is_refused(&cluster);
}

/// 2 nodes × 8 appenders × 25 appends: every append acknowledged once, the
/// positions gapless, one chain that verifies on both nodes, and each node
/// follows the other's appends (its head, and a subscription).
fn two_nodes_append_to_one_gapless_chain(place: &PostgresPlace) {
    let nodes = [Arc::new(place.open(options())), Arc::new(place.open(options()))];
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let positions = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            for task in 0..8u64 {
                let node = Arc::clone(node);
                tasks.push(tokio::spawn(async move {
                    let mut positions = Vec::new();
                    for n in 0..25 {
                        let appended = node
                            .append(vec![event(&format!("n{index}t{task}"), n)], Expectations::none())
                            .await
                            .unwrap()
                            .unwrap();
                        positions.push(appended.first_position);
                    }
                    positions
                }));
            }
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let unique: BTreeSet<u64> = positions.iter().copied().collect();
    assert_eq!(unique.len(), 400, "every acknowledged append got a position of its own");
    assert_eq!(unique, (1..=400).collect::<BTreeSet<u64>>(), "positions are gapless");
    for node in &nodes {
        assert_eq!(node.latest_head().unwrap().position, 400);
        assert_verifies(node);
    }
    let followed = runtime.block_on(async {
        let mut subscription = nodes[0].subscribe(1);
        let mut last = 0;
        for _ in 0..400 {
            last = subscription.next().await.unwrap().unwrap().position;
        }
        last
    });
    assert_eq!(followed, 400);
}

/// A node that decided on head 0 loses to the node that appended first.
fn a_head_expectation_holds_across_nodes(place: &PostgresPlace) {
    let first = place.open(options());
    let second = place.open(options());
    let at = |head| Expectations { streams: vec![], head: Some(head) };
    first.append_blocking(vec![event("a", 1)], at(0)).unwrap().unwrap();
    let lost = second.append_blocking(vec![event("a", 2)], at(0)).unwrap();
    assert_eq!(lost, Err(Conflict::Head { expected: 0, actual: 1 }));
    assert_eq!(second.latest_head().unwrap().position, 1);
    assert!(second.append_blocking(vec![event("a", 3)], at(1)).unwrap().is_ok());
    assert_eq!(first.latest_head().unwrap().position, 2);
}

fn an_event_id_appended_on_one_node_is_a_duplicate_on_the_other(place: &PostgresPlace) {
    let first = place.open(options());
    let second = place.open(options());
    let events = vec![event("a", 1), event("b", 1)];
    let appended = first.append_blocking(events.clone(), Expectations::none()).unwrap().unwrap();
    let again = second.append_blocking(events, Expectations::none()).unwrap().unwrap();
    assert!(again.duplicate);
    assert_eq!((again.first_position, again.last_position), (appended.first_position, appended.last_position));
    assert_eq!(second.latest_head().unwrap(), first.head());
    assert_ne!(first.head(), Head::EMPTY);
}

/// An acknowledgement must mean a durable commit.
fn a_database_with_synchronous_commit_off_is_refused(cluster: &Cluster) {
    let url = cluster.database("asynchronous");
    cluster.psql("ALTER DATABASE asynchronous SET synchronous_commit = off");
    let refused = Log::open_postgres(&url, options()).unwrap_err();
    assert!(refused.to_string().contains("synchronous_commit is off"), "{refused}");
}

#[test]
fn documents_are_replaced_only_from_the_version_read() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("documents");
    let first = Log::open_postgres(&url, options()).unwrap();
    let second = Log::open_postgres(&url, options()).unwrap();
    assert_eq!(first.document("tokens").unwrap(), None);
    assert!(first.replace_document("tokens", b"[1]", None).unwrap());
    assert!(!second.replace_document("tokens", b"[2]", None).unwrap(), "it exists now");
    let (bytes, version) = second.document("tokens").unwrap().unwrap();
    assert_eq!(bytes, b"[1]");
    assert!(second.replace_document("tokens", b"[1,2]", Some(version)).unwrap());
    assert!(!first.replace_document("tokens", b"[1,3]", Some(version)).unwrap(), "a stale version loses");
    assert_eq!(first.document("tokens").unwrap().unwrap().0, b"[1,2]");
}

/// PostgreSQL answers a commit whose wait for the synchronous standby was
/// cancelled with success and a warning: the events are on the primary
/// only. The log does not acknowledge it; a retry with the same event ids
/// is answered with the original positions.
#[test]
fn a_commit_whose_wait_for_the_standby_is_cancelled_is_not_acknowledged() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("unreplicated");
    let log = Arc::new(Log::open_postgres(&url, options()).unwrap());
    cluster.reload_setting("synchronous_standby_names", Some("no_such_standby"));
    let events = vec![event("a", 1)];
    let appending = {
        let (log, events) = (Arc::clone(&log), events.clone());
        std::thread::spawn(move || log.append_blocking(events, Expectations::none()))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let cancelled =
            cluster.psql("SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'");
        if cancelled != "0" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the commit never waited for the standby");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let answer = appending.join().unwrap();
    let error = answer.expect_err("a commit without its standby is not acknowledged");
    assert!(error.to_string().contains("synchronous standby"), "{error}");
    cluster.reload_setting("synchronous_standby_names", None);
    let again = log.append_blocking(events, Expectations::none()).unwrap().unwrap();
    assert!(again.duplicate, "the retry finds the events the primary kept");
    assert_eq!((again.first_position, log.latest_head().unwrap().position), (1, 1));
}

/// A held head: another node's append waits until the hold commits, the
/// held append lands right after the held head, and a hold dropped without
/// an append rolls back (the other node then goes on).
#[test]
fn a_held_head_makes_other_appends_wait_and_rolls_back_when_dropped() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("held");
    let holder = Log::open_postgres(&url, LogOptions::default()).unwrap();
    let other = Arc::new(Log::open_postgres(&url, LogOptions::default()).unwrap());
    holder.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let held = holder.hold_head_blocking().unwrap().expect("a shared log holds its head");
    assert_eq!(held.head().position, 1);
    let waiting = {
        let other = Arc::clone(&other);
        std::thread::spawn(move || other.append_blocking(vec![event("b", 1)], Expectations::none()))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiting.is_finished(), "the other node's append waits for the held head");
    let appended = held.append_blocking(vec![event("a", 2)], Expectations::none(), None).unwrap().unwrap();
    assert_eq!(appended.first_position, 2, "the held append follows the held head");
    let after = waiting.join().unwrap().unwrap().unwrap();
    assert_eq!(after.first_position, 3);
    let stale = holder.hold_head_blocking().unwrap().unwrap();
    assert_eq!(stale.head().position, 3);
    let expecting_two = Expectations { streams: Vec::new(), head: Some(2) };
    let refused = stale.append_blocking(vec![event("a", 3)], expecting_two, None).unwrap();
    assert!(matches!(refused, Err(Conflict::Head { .. })), "a held append still checks its expectations: {refused:?}");
    let dropped = holder.hold_head_blocking().unwrap().unwrap();
    assert_eq!(dropped.head().position, 3);
    drop(dropped);
    let next = other.append_blocking(vec![event("b", 2)], Expectations::none()).unwrap().unwrap();
    assert_eq!(next.first_position, 4, "a dropped hold appended nothing");
}

/// Holds the head row locked from another session for `seconds`, and
/// returns once the lock is held.
pub(super) fn lock_head_for(cluster: &Arc<Cluster>, url: &str, seconds: f64) -> std::thread::JoinHandle<()> {
    let (cluster_for_thread, url_for_thread) = (Arc::clone(cluster), url.to_owned());
    let holder = std::thread::spawn(move || {
        let sleep = format!("SELECT pg_sleep({seconds}) /* head lock holder */");
        let sql = ["BEGIN", "SELECT position FROM opledger_log_head FOR UPDATE", sleep.as_str(), "COMMIT"];
        // Ends with an error when the test cancels the sleep instead.
        let _ = cluster_for_thread.psql_result(&url_for_thread, &sql);
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let holding = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%head lock holder%' AND state = 'active' \
                   AND pid <> pg_backend_pid()";
    while cluster.psql(holding) != "1" {
        assert!(std::time::Instant::now() < deadline, "the head lock holder never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    holder
}

/// A speculative group whose wait for the head lock passes
/// `SPECULATIVE_LOCK_WAIT_MAX` misses: rolled back and committed again on
/// the locked head, acknowledged once, at the next position. The writer
/// then locks first, and speculates again after enough locked groups that
/// found only its own groups before them.
#[test]
fn a_speculative_group_that_misses_is_committed_again_on_the_locked_head() {
    let cluster = Arc::new(Cluster::start(&[]));
    let url = cluster.database("missed");
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!((log.stats().speculative_groups_committed, log.stats().speculative_groups_missed), (1, 0));

    let holder = lock_head_for(&cluster, &url, 0.5);
    let appended = log.append_blocking(vec![event("a", 2), event("b", 1)], Expectations::none()).unwrap().unwrap();
    holder.join().unwrap();

    assert_eq!((appended.first_position, appended.last_position), (2, 3));
    assert_eq!(log.stats().speculative_groups_missed, 1, "{:?}", log.stats());
    let stored = log.read(1, 10).unwrap();
    assert_eq!(stored.len(), 3, "stored once, with no gap");
    assert_verifies(&log);

    // Locked groups until enough found only this writer's groups (the
    // missed group's own retry is the first of them).
    for n in 0..15 {
        log.append_blocking(vec![event("c", n)], Expectations::none()).unwrap().unwrap();
    }
    assert_eq!(log.stats().speculative_groups_committed, 1, "locked while returning");
    log.append_blocking(vec![event("c", 15)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.stats().speculative_groups_committed, 2, "speculating again");
    assert_eq!(log.head().position, 19);
    assert_verifies(&log);
}

/// A speculative group staged before another node's append moved the head
/// misses (a row at its positions is another group's), and is committed
/// after that append: both acknowledged, gapless.
#[test]
fn a_speculative_group_behind_another_nodes_append_misses_and_lands_after_it() {
    let cluster = Arc::new(Cluster::start(&[]));
    let url = cluster.database("overtaken");
    let first = Arc::new(Log::open_postgres(&url, options()).unwrap());
    let second = Arc::new(Log::open_postgres(&url, options()).unwrap());
    first.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();

    // Both nodes read head 1 and stage on it while the head is locked: one
    // inserts at position 2 and waits for the head, the other waits for
    // that row. The lock then goes (well within the speculative lock
    // wait): the one waiting for the head moves it, the other misses.
    let holder = lock_head_for(&cluster, &url, 5.0);
    let appending: Vec<_> = [(Arc::clone(&first), "b"), (Arc::clone(&second), "c")]
        .into_iter()
        .map(|(log, stream)| {
            std::thread::spawn(move || log.append_blocking(vec![event(stream, 1)], Expectations::none()))
        })
        .collect();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query NOT LIKE '%head lock holder%'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cluster.psql_at(&url, &[waiting]) != b"2\n" {
        assert!(std::time::Instant::now() < deadline, "the two appends never waited");
    }
    cluster.psql_at(
        &url,
        &["SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%head lock holder%' \
                             AND pid <> pg_backend_pid()"],
    );
    let _ = holder.join();
    let mut positions: Vec<u64> =
        appending.into_iter().map(|thread| thread.join().unwrap().unwrap().unwrap().first_position).collect();
    positions.sort_unstable();

    assert_eq!(positions, vec![2, 3]);
    let missed = (first.stats().speculative_groups_missed, second.stats().speculative_groups_missed);
    assert!(matches!(missed, (1, 0) | (0, 1)), "exactly one of the two could not move the head: {missed:?}");
    // Reads stop at the head the node knows; the other node's commit may be
    // the later one, and its notification still on its way.
    assert_eq!(first.latest_head().unwrap().position, 3);
    assert_eq!(first.read(1, 10).unwrap().len(), 3);
    assert_verifies(&first);
}

/// Appends one event on stream `a` from a node of its own, which then
/// closes: another writer moving the head and the stream.
fn append_from_another_node(url: &str, n: u64) -> u64 {
    let other = Log::open_postgres(url, options()).unwrap();
    let appended = other.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
    other.close();
    appended.first_position
}

/// A log whose writer stages groups on stream `a` without a read: each
/// lane's first group reads, and its call takes the lock of the lane's
/// next group.
fn staging_without_reads(url: &str) -> Log {
    staging_without_reads_with(url, options())
}

fn staging_without_reads_with(url: &str, options: LogOptions) -> Log {
    let log = Log::open_postgres(url, options).unwrap();
    let mut n = 0;
    while log.stats().speculative_groups_staged_without_read == 0 {
        n += 1;
        assert!(n <= 4, "no group was staged without a read: {:?}", log.stats());
        log.append_blocking(vec![event("a", n)], Expectations::none()).unwrap().unwrap();
    }
    log
}

/// A group staged without a read (on the stream versions its writer knew)
/// after another node moved the head and its stream: an expectation it
/// would refuse is not answered from what the writer knew but checked again
/// on the locked head, and a group it would insert misses (its position is
/// taken) and lands after the other node's event. Either way the stream
/// stays gapless and the log verifies.
#[test]
fn a_group_staged_without_a_read_behind_another_nodes_append_is_decided_again_on_the_locked_head() {
    let cluster = Cluster::start(&[]);
    for (database, expecting) in [("unread_expecting", true), ("unread_inserting", false)] {
        let url = cluster.database(database);
        let log = staging_without_reads(&url);
        let before = log.stats();
        let moved_to = append_from_another_node(&url, 100);

        let expectations = match expecting {
            true => Expectations::stream(stream("a"), ExpectedVersion::Exact(moved_to)),
            false => Expectations::none(),
        };
        let appended = log.append_blocking(vec![event("a", 101)], expectations).unwrap().unwrap();

        assert_eq!(appended.first_position, moved_to + 1, "{database}: after the other node's event");
        let after = log.stats();
        assert_eq!(after.speculative_groups_staged_without_read, before.speculative_groups_staged_without_read + 1);
        // An expectation refused on what the writer knew leaves the group
        // empty: nothing is sent, it is staged again on the locked head.
        let missed = if expecting { 0 } else { 1 };
        assert_eq!(after.speculative_groups_missed, missed, "{database}: {after:?}");
        let versions: Vec<u64> =
            log.read_stream(&stream("a"), 1, 10).unwrap().iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=moved_to + 1).collect::<Vec<u64>>(), "{database}");
        assert_verifies(&log);
    }
}

/// A lane's session takes its next group's advisory lock in the call of
/// the group before; once no append came for `held_lock_idle_wait` it is
/// released: a writer without appends holds no lock, and no transaction
/// is left open. The next group reads first again.
#[test]
fn a_lock_held_for_a_next_group_is_released_once_no_append_comes() {
    // Longer than the default: the first lane's lock must still be held
    // when the test looks, however slowly a loaded machine gets there.
    let held_lock_idle_wait = std::time::Duration::from_secs(5);
    let cluster = Cluster::start(&[]);
    let url = cluster.database("idle");
    let log = staging_without_reads_with(&url, LogOptions { held_lock_idle_wait, ..options() });
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND l.granted AND d.datname = 'idle'";
    let open = "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND datname = 'idle'";
    assert_eq!(cluster.psql_at(&url, &[held]), b"2\n", "both lanes hold their next group's lock");
    assert_eq!(cluster.psql_at(&url, &[open]), b"0\n", "a speculative group leaves no transaction open");

    std::thread::sleep(held_lock_idle_wait + std::time::Duration::from_millis(500));

    assert_eq!(cluster.psql_at(&url, &[held]), b"0\n");
    let before = log.stats().speculative_groups_staged_without_read;
    let appended = log.append_blocking(vec![event("a", 9)], Expectations::none()).unwrap().unwrap();
    assert_eq!(appended.first_position, log.head().position);
    assert_eq!(log.stats().speculative_groups_staged_without_read, before, "read first: no lock was held");
    assert_verifies(&log);
}

/// The function a speculative group is: created by the first open, left as
/// it is by an open that finds it the same (replacing a function takes its
/// ownership, which another node's role may not have), and replaced by an
/// open that finds it different.
#[test]
fn the_speculative_groups_function_is_replaced_only_when_it_differs() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("function");
    let row = "SELECT xmin::text FROM pg_proc WHERE proname = 'opledger_log_append_speculative_v1'";
    drop(Log::open_postgres(&url, options()).unwrap());
    let created = cluster.psql_at(&url, &[row]);
    assert_eq!(created.iter().filter(|byte| **byte == b'\n').count(), 1, "one function");

    drop(Log::open_postgres(&url, options()).unwrap());
    assert_eq!(cluster.psql_at(&url, &[row]), created, "an open that finds it the same leaves it");

    let changed = "UPDATE pg_proc SET prosrc = 'BEGIN END' WHERE proname = 'opledger_log_append_speculative_v1'";
    cluster.psql_at(&url, &[changed]);
    let log = staging_without_reads(&url);
    let body = "SELECT prosrc FROM pg_proc WHERE proname = 'opledger_log_append_speculative_v1'";
    let body = String::from_utf8(cluster.psql_at(&url, &[body])).unwrap();
    assert!(body.contains("pg_advisory_unlock(p_own_key)"), "replaced: {body}");
    assert!(log.stats().speculative_groups_staged_without_read > 0);
    assert_verifies(&log);
}

/// A node opens while another appends without pause: the head, the last
/// stored position and the tail it checks are read in one snapshot, so an
/// append committed between two of its reads is not taken for corruption.
#[test]
fn a_node_opens_while_another_appends() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("busy");
    let busy = Arc::new(Log::open_postgres(&url, options()).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appending: Vec<_> = (0..4)
        .map(|writer| {
            let (busy, stop) = (Arc::clone(&busy), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut appended = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let events = vec![event(&format!("busy-{writer}"), appended + 1)];
                    busy.append_blocking(events, Expectations::none()).unwrap().unwrap();
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    for _ in 0..OPENS_UNDER_LOAD {
        let opened = Log::open_postgres(&url, options());
        assert!(opened.is_ok(), "an open under load failed: {:?}", opened.err());
    }
    stop.store(true, Ordering::SeqCst);
    let appended: u64 = appending.into_iter().map(|thread| thread.join().unwrap()).sum();
    assert!(appended > 0, "the other node appended meanwhile");
    assert_eq!(busy.latest_head().unwrap().position, appended);
    assert_verifies(&busy);
}

/// Opens of the test above: each reads the tail while groups commit.
const OPENS_UNDER_LOAD: usize = 30;

/// A database nobody listens for: the open fails as unreachable (worth a
/// retry, `503 log_unreachable` over HTTP) and names the cause under the
/// driver's "error connecting to server".
#[test]
fn a_database_out_of_reach_is_unavailable_and_says_why() {
    let port = crate::postgres_cluster::free_port();
    let refused = Log::open_postgres(&format!("postgres://nobody@127.0.0.1:{port}/none"), options());
    let Err(error) = refused else { panic!("nothing listens on a free port") };
    assert!(matches!(error, crate::error::Error::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("error connecting to server: "), "the cause follows: {error}");
}

/// A server that ends idle sessions (`idle_session_timeout`, which some
/// operators set) ends the writer's lanes, its reads and its listener
/// between appends, the lanes while their session holds the advisory lock
/// of their next group: every later append still commits, at the next
/// position, and the chain verifies.
#[test]
fn appends_go_on_when_the_server_ends_idle_sessions_between_them() {
    let cluster = Cluster::start(&["idle_session_timeout = '200ms'"]);
    let log = Log::open_postgres(&cluster.database("idling"), options()).unwrap();
    for n in 1..=IDLE_ROUNDS {
        let appended = log.append_blocking(vec![event("idle", n)], Expectations::none()).unwrap().unwrap();
        assert_eq!(appended.first_position, n, "append {n} after an idle pause");
        std::thread::sleep(IDLE_PAUSE);
    }
    assert!(
        cluster.server_log().contains("terminating connection due to idle-session timeout"),
        "the server ended idle sessions"
    );
    assert_eq!(log.latest_head().unwrap().position, IDLE_ROUNDS);
    assert_verifies(&log);
}

/// Appends of the test above, each after a pause past the server's idle
/// timeout.
const IDLE_ROUNDS: u64 = 4;
const IDLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(600);
