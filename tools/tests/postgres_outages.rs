//! Nodes over one PostgreSQL log whose database is in trouble, driven
//! as in `postgres_nodes.rs` (the real binary, a throwaway cluster per
//! test):
//!
//! - A node that cannot read the log for a while (a fault proxy cuts its
//!   reads of events) keeps answering reads, says `log_unreachable` on
//!   `/readyz`, catches up after, and never closes its store to reopen it.
//! - The database stopped: `/readyz` says so, a write is a 503 and appends
//!   nothing, reads answer from the read models; writes are taken once it
//!   is back.
//! - The database hung (frozen): `/readyz` says so until it answers; reads,
//!   `/healthz` and commands are answered within their bounds meanwhile.
//! - The database's postmaster SIGKILLed and restarted on its port under
//!   load, 3 times: reads on a node never stop answering for long, no
//!   node reopens its store, nothing acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common {
    pub mod postgres_nodes;
    pub mod raw_http;
    pub mod server_process;
}

#[path = "../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;

#[path = "../../tests/support/tcp_proxy.rs"]
mod tcp_proxy;

use common::postgres_nodes::*;
use common::server_process::ServerProcess;
use postgres_cluster::Cluster;

/// The log's read of events (`src/log/postgres/reads.rs`): cutting every
/// connection that sends it keeps a node from reading the log.
const EVENTS_READ: &str = "WHERE position >= $1 AND position < $2";
/// How long the node cannot read the log: under the 5 s a read waits for
/// the projections, so a read that needs the head is answered once the
/// follower's next retry catches up.
const READ_OUTAGE: Duration = Duration::from_millis(1500);

#[test]
fn a_node_that_cannot_read_the_log_keeps_answering_reads_and_catches_up_without_a_reopen() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("opledger");
    let proxy = tcp_proxy::Proxy::start(cluster.port);
    let dir = tempfile::tempdir().unwrap();
    let token = service_token(&url);
    let a = node(&proxy.url("opledger"), &dir.path().join("a"), "a");
    let b = node(&url, &dir.path().join("b"), "b");
    let recorded = b.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    a.get(&format!("/v1/runs?tenant_id=t1&min_position={}", position_of(&recorded)), &token).expect(200);
    proxy.cut_queries(Some(EVENTS_READ));
    let outage = Instant::now();
    let mut last = 0;
    for n in 0..5 {
        let started = b.post("/v1/runs", &token, &start_body("report_export", Some(&format!("k{n}"))));
        assert_eq!(started.status, 201, "{}", started.text());
        last = position_of(&started);
    }
    let unready = wait_for_readyz(&a, |body| body["reason"] == "log_unreachable");
    assert!(unready["detail"].as_str().unwrap().contains("cannot be reached"), "{unready}");
    let refused = a.post("/v1/runs", &token, &start_body("report_export", Some("during")));
    assert_eq!(refused.status, 503, "a command that cannot fold the log fails: {}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "log_unreachable", "{}", refused.text());
    assert!(proxy.cuts() >= 2, "the follower's and the command's reads were cut");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(READ_OUTAGE.saturating_sub(outage.elapsed()));
            proxy.cut_queries(None);
        });
        let listed = a.get("/v1/runs?tenant_id=t1", &token);
        assert_eq!(listed.status, 200, "a read waits for the follower to catch up: {}", listed.text());
        assert_eq!(listed.json()["runs"].as_array().unwrap().len(), 5, "{}", listed.text());
    });
    let caught_up = a.get(&format!("/v1/runs?tenant_id=t1&min_position={last}"), &token).expect(200);
    assert_eq!(caught_up["runs"].as_array().unwrap().len(), 5);
    wait_for_readyz(&a, |body| body["status"] == "ok");
    a.post("/v1/runs", &token, &start_body("report_export", Some("after"))).expect(201);
    let metrics = a.get("/metrics", &token);
    assert!(metrics.text().contains("opledger_store_reopen_attempts_total 0"), "{}", metrics.text());
    assert!(a.log_text().contains("cannot read the log"), "the retries are logged");
    drop((a, b));
    verify(&url);
}

/// The database stopped while nothing is appended: `/readyz` says so, a
/// write answers 503 `log_unreachable` and appends nothing, a read answers
/// from the node's read models; once the database is back the node takes
/// the same write, without a restart.
#[test]
fn a_node_whose_database_is_down_says_so_and_takes_writes_again_once_it_is_back() {
    let Setup { mut cluster, url, dir, token } = Setup::new();
    let a = node(&url, &dir.path().join("a"), "a");
    let recorded = a.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    a.post("/v1/runs", &token, &start_body("report_export", Some("before"))).expect(201);
    cluster.stop();
    let unready = wait_for_readyz(&a, |body| body["reason"] == "log_unreachable");
    assert!(unready["detail"].as_str().unwrap().contains("cannot be reached"), "{unready}");
    let refused = a.post("/v1/runs", &token, &start_body("report_export", Some("during")));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "log_unreachable", "{}", refused.text());
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"), "a client is told when to try again");
    let listed = a.get("/v1/runs?tenant_id=t1", &token).expect(200);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "reads answer what was applied: {listed}");
    cluster.restart();
    wait_for_readyz(&a, |body| body["status"] == "ok");
    let started = a.post("/v1/runs", &token, &start_body("report_export", Some("during")));
    assert_eq!(started.status, 201, "the refused start appended nothing: {}", started.text());
    drop(a);
    verify(&url);
}

/// The database hangs (every process stopped, connections left open, as in
/// a partition without resets): `/readyz` says `log_unreachable` within
/// the follower's read bound, and `ok` once the database answers again.
#[test]
fn a_node_whose_database_hangs_is_not_ready_until_it_answers() {
    let Setup { cluster, url, dir, token } = Setup::new();
    let a = node(&url, &dir.path().join("a"), "a");
    a.post("/v1/authority", &token, &authority()).expect(200);
    wait_for_readyz(&a, |body| body["status"] == "ok");
    cluster.freeze();
    let frozen = Instant::now();
    let unready = {
        let _thaw = Thawing(&cluster);
        wait_for_readyz(&a, |body| body["reason"] == "log_unreachable")
    };
    let noticed = frozen.elapsed();
    assert!(unready["detail"].as_str().unwrap().contains("did not answer"), "{unready}");
    eprintln!("a hung database was noticed after {noticed:?}");
    wait_for_readyz(&a, |body| body["status"] == "ok");
    a.post("/v1/runs", &token, &start_body("report_export", None)).expect(201);
}

/// Longest a read, or the health check, may take on a node whose database
/// went silent: the node's wait for a read of its tokens
/// (`SHARED_TOKENS_READ_WAIT`, 250 ms) and a loaded machine's slack. Before
/// the tokens were read off the request path, each such request waited for
/// the log's own 30 s bound, and the health check behind them 59 s.
const SILENT_DATABASE_ANSWER_MAX: Duration = Duration::from_secs(3);
/// Longest a command may take there: the decider's round in flight and
/// its own, each failing once the database's head is not read within
/// `HEAD_POLL_WAIT_MAX` (5 s), and the slack. Before, each round waited
/// the log's 30 s: a start took 55 s behind the lease reaper's round.
const SILENT_DATABASE_COMMAND_ANSWER_MAX: Duration = Duration::from_secs(14);
/// Concurrent reads sent to that node: more than its runtime's threads.
const SILENT_DATABASE_READS: usize = 6;

/// A database that went silent (frozen: connections open, nothing
/// answers) holds none of a node's reads past a bound. Once the node's
/// copy of the tokens is no longer fresh, several reads at once are
/// answered from its read models and that copy, and `/healthz` beside
/// them, all promptly; a read whose `min_position` is past the node's head
/// (so the database must be asked), a read of the raw log, and the walks
/// over the log (authority, explain, verify, export), are a 503
/// `log_unreachable` within the read's wait, not the log's 30 s, and a
/// command within two of its decider's rounds of 5 s. Once the database
/// answers again, the node takes writes.
#[test]
fn a_node_whose_database_went_silent_answers_reads_and_health_promptly() {
    let Setup { cluster, url, dir, token } = Setup::new();
    let a = node(&url, &dir.path().join("a"), "a");
    let recorded = a.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    let started = a.post("/v1/runs", &token, &start_body("report_export", None));
    let head = position_of(&started);
    let run = started.json()["run"]["id"].as_str().unwrap().to_owned();
    a.get("/v1/runs?tenant_id=t1", &token).expect(200);
    cluster.freeze();
    {
        let _thaw = Thawing(&cluster);
        // The copy of the tokens read by the request above is no longer fresh.
        std::thread::sleep(opledger_tools::tokens::SHARED_TOKENS_REFRESH + Duration::from_millis(100));
        let started = Instant::now();
        std::thread::scope(|scope| {
            let reads: Vec<_> = (0..SILENT_DATABASE_READS)
                .map(|_| scope.spawn(|| (a.get("/v1/runs?tenant_id=t1", &token), started.elapsed())))
                .collect();
            let health = a.try_call("GET", "/healthz", None, None).unwrap();
            let answered = started.elapsed();
            assert!(answered < SILENT_DATABASE_ANSWER_MAX, "/healthz took {answered:?}: {}", health.text());
            for read in reads {
                let (read, took) = read.join().unwrap();
                assert_eq!(read.status, 200, "answered from the read models: {}", read.text());
                assert_eq!(read.json()["runs"].as_array().unwrap().len(), 1, "{}", read.text());
                assert!(took < SILENT_DATABASE_ANSWER_MAX, "a read took {took:?}");
            }
        });
        // Each of these must ask the database: the head past the node's, the
        // raw log, and the walks over the log (whose own reads may rightly
        // take longer than the read wait), which first ask for its head.
        for read in [
            format!("/v1/runs?tenant_id=t1&min_position={}", head + 1),
            "/v1/events?from=1".into(),
            "/v1/authority".into(),
            format!("/v1/runs/{run}/explain"),
            "/v1/verify".into(),
            "/v1/export".into(),
        ] {
            let asked = Instant::now();
            let refused = a.get(&read, &token);
            let took = asked.elapsed();
            assert_eq!(refused.status, 503, "{read}: {}", refused.text());
            assert_eq!(refused.json()["error"]["code"], "log_unreachable", "{read}: {}", refused.text());
            assert!(
                took < opledger_tools::server::state::READ_PROJECTION_WAIT + SILENT_DATABASE_ANSWER_MAX,
                "{read} took {took:?}"
            );
        }
        let unready = wait_for_readyz(&a, |body| body["reason"] == "log_unreachable");
        assert!(unready["detail"].as_str().unwrap().contains("did not answer"), "{unready}");
        // A command waits for the round in flight (the lease reaper's, say)
        // and its own, each failing once the head is not read in time.
        let sent = Instant::now();
        let refused = a.post("/v1/runs", &token, &start_body("report_export", Some("silent")));
        let took = sent.elapsed();
        assert_eq!(refused.json()["error"]["code"], "log_unreachable", "{}", refused.text());
        assert!(took < SILENT_DATABASE_COMMAND_ANSWER_MAX, "a command took {took:?}");
    }
    wait_for_readyz(&a, |body| body["status"] == "ok");
    let started = a.post("/v1/runs", &token, &start_body("report_export", Some("silent")));
    assert_eq!(started.status, 201, "the refused start appended nothing: {}", started.text());
    drop(a);
    verify(&url);
}

/// Thaws a frozen cluster when dropped, also when the test fails while it
/// is frozen (a frozen server would not stop).
struct Thawing<'a>(&'a Cluster);

impl Drop for Thawing<'_> {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

/// Times the database is killed and restarted in the restart test.
const RESTART_ROUNDS: usize = 3;
/// How much longer than the database's own outage (kill to restarted) a
/// node may answer reads with anything but 200, from the first such answer
/// to the next 200: its follower's retry (at most 1 s apart) and a
/// reconnect. A store closed and reopened instead answered 503 for about
/// ten seconds after outages of one or two.
const READS_UNAVAILABLE_PAST_OUTAGE_MAX: Duration = Duration::from_secs(2);

#[test]
fn reads_keep_answering_while_the_database_restarts_and_no_node_reopens_its_store() {
    let Setup { mut cluster, url, dir, token } = Setup::new();
    let nodes = [node(&url, &dir.path().join("a"), "a"), node(&url, &dir.path().join("b"), "b")];
    nodes[0].post("/v1/authority", &token, &authority()).expect(200);
    let seen = Mutex::new(Acknowledged::default());
    let stop = AtomicBool::new(false);
    let longest_unavailable = Mutex::new(Duration::ZERO);
    let mut longest_outage = Duration::ZERO;
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (server, token, stop, seen) = (&nodes[client % 2], &token, &stop, &seen);
            scope.spawn(move || retrying_client(server, token, &format!("d{client}"), stop, seen));
        }
        let (reader, token, stop, longest) = (&nodes[0], &token, &stop, &longest_unavailable);
        scope.spawn(move || reads_until(reader, token, stop, longest));
        for _ in 0..RESTART_ROUNDS {
            std::thread::sleep(Duration::from_millis(300 + rand_below(400)));
            let killed = Instant::now();
            cluster.kill();
            std::thread::sleep(Duration::from_millis(300));
            cluster.restart();
            longest_outage = longest_outage.max(killed.elapsed());
        }
        let before = seen.lock().unwrap().completed.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().completed.len() < before + 10 {
            assert!(Instant::now() < deadline, "the nodes did not resume after the restarts");
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let longest = *longest_unavailable.lock().unwrap();
    eprintln!("the longest stretch of reads answered with errors: {longest:?}; longest outage {longest_outage:?}");
    assert!(
        longest <= longest_outage + READS_UNAVAILABLE_PAST_OUTAGE_MAX,
        "reads were unavailable for {longest:?}, the database for at most {longest_outage:?}"
    );
    let seen = seen.into_inner().unwrap();
    for run in &seen.completed {
        let answer = nodes[0].get(&format!("/v1/runs/{run}?min_position={}", seen.position), &token).expect(200);
        assert_eq!(answer["run"]["status"], "completed", "acknowledged around a restart: {run}");
    }
    for server in &nodes {
        let metrics = server.get("/metrics", &token);
        assert!(metrics.text().contains("opledger_store_reopen_attempts_total 0"), "{}", metrics.text());
    }
    drop(nodes);
    verify(&url);
}

/// Lists runs on `server` until `stop`, keeping in `longest` the longest
/// stretch from an answer other than 200 to the next 200. (A read waits up
/// to 5 s for the node's read models to reach its head, so one answer
/// may come late; what counts is how long the node answers errors.)
fn reads_until(server: &ServerProcess, token: &str, stop: &AtomicBool, longest: &Mutex<Duration>) {
    let mut unavailable_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let answer = server.try_call("GET", "/v1/runs?tenant_id=t1", Some(token), None);
        let answered = Instant::now();
        let ok = match &answer {
            Ok(answer) if answer.status == 200 => true,
            Ok(answer) => {
                eprintln!("read answered {}: {}", answer.status, answer.text());
                false
            }
            Err(error) => {
                eprintln!("read not answered: {error}");
                false
            }
        };
        if let Some(since) = unavailable_since {
            let mut longest = longest.lock().unwrap();
            *longest = (*longest).max(answered - since);
        }
        if ok {
            unavailable_since = None;
        } else {
            unavailable_since.get_or_insert(answered);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/readyz` until its body passes `wanted`, at most 10 s.
fn wait_for_readyz(server: &ServerProcess, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = server.try_call("GET", "/readyz", None, None).unwrap();
        let body = answer.json();
        if wanted(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz never became what the test waits for: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
