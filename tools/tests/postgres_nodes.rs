//! Nodes over one PostgreSQL log, driven as users run them: the real
//! binary (`opledger serve --log postgres://… --data DIR`), tokens from
//! `opledger token create --log …`, requests over loopback, processes
//! killed with SIGKILL. Each test starts its own throwaway cluster
//! (`tests/support/postgres_cluster.rs`; `scripts/test` installs Debian's
//! `postgresql` when it is missing).
//!
//! - Read-your-write across nodes with `Opledger-Position` and
//!   `min_position`; one token accepted by every node.
//! - Two nodes, 16 clients spread over both, one node SIGKILLed at a random
//!   moment, 20 rounds: every acknowledged write present, the other node
//!   kept serving, `opledger verify --log` passes.
//! - Two nodes, 8 clients each starting on one protected scope, 50 rounds:
//!   exactly one accepted non-terminal run per round.
//! - A primary with a synchronous standby: SIGKILL the primary under load,
//!   promote the standby, the nodes reconnect; nothing acknowledged lost.
//! - A node that cannot read the log for a while (a fault proxy cuts its
//!   reads of events) keeps answering reads, says `log_unreachable` on
//!   `/readyz`, catches up after, and never closes its store to reopen it.
//! - The database's postmaster SIGKILLed and restarted on its port under
//!   load, 3 times: reads on a node never stop answering for long, no
//!   node reopens its store, nothing acknowledged is lost.
//! - `import --log` of a sled export gives the identical head.
//! - Over TLS (`sslmode=verify-full&sslrootcert=…`) to a cluster that
//!   accepts TCP only encrypted: a token, a write and a read, `verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common {
    pub mod raw_http;
    pub mod server_process;
}

#[path = "../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;
#[path = "../../tests/support/tls_certificates.rs"]
mod tls_certificates;

#[path = "../../tests/support/tcp_proxy.rs"]
mod tcp_proxy;

use common::server_process::ServerProcess;
use postgres_cluster::Cluster;

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");
/// A bound on each request the tests send.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Rounds of the kill test.
const KILL_ROUNDS: usize = 20;
/// Rounds of the scope race.
const SCOPE_ROUNDS: usize = 50;

fn opledger(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A service token kept in the database: every node accepts it.
fn service_token(url: &str) -> String {
    let output = opledger(&["token", "create", "--log", url, "--service", "host"]);
    assert!(output.status.success(), "token create: {}", text(&output));
    String::from_utf8(output.stdout).unwrap().lines().last().unwrap().trim().to_owned()
}

fn node(url: &str, data: &Path, name: &str) -> ServerProcess {
    let log = data.parent().unwrap().join(format!("{name}.log"));
    ServerProcess::start(BINARY, data, &["--log", url], log, REQUEST_TIMEOUT)
}

/// A throwaway cluster with the log's database (`opledger`), a directory
/// for the nodes' read models and a service token: what most tests here
/// start from. Taken apart by the test (`let Setup { cluster, url, dir,
/// token } = …`), whose nodes, declared after, are dropped first.
struct Setup {
    cluster: Cluster,
    url: String,
    dir: tempfile::TempDir,
    token: String,
}

impl Setup {
    fn new() -> Setup {
        let cluster = Cluster::start(&[]);
        let url = cluster.database("opledger");
        let token = service_token(&url);
        Setup { cluster, url, dir: tempfile::tempdir().unwrap(), token }
    }
}

fn authority() -> Value {
    json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": [
        {"type": "workspace_registered", "workspace_id": "w1"},
        {"type": "tenant_registered", "tenant_id": "t1", "workspace_id": "w1", "lifecycle": "active"},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "u1"},
        {"type": "tenant_member_added", "tenant_id": "t1", "actor_id": "u1"},
        {"type": "capability_granted", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"},
        {"type": "provider_connection_registered", "connection_id": "c1", "tenant_id": "t1", "status": "ready"},
        {"type": "default_provider_connection_set", "tenant_id": "t1", "connection_id": "c1"},
        {"type": "operation_type_registered", "operation_type": "inventory_sync", "required_capability": "tenant.sync",
         "provider_backed": true, "writes": false, "system_authority_allowed": true, "max_attempts": 3},
        {"type": "operation_type_registered", "operation_type": "report_export", "required_capability": "tenant.sync",
         "provider_backed": false, "writes": false, "system_authority_allowed": false, "max_attempts": 1}
    ]})
}

fn start_body(operation_type: &str, dedupe_key: Option<&str>) -> Value {
    let mut body = json!({"operation_type": operation_type, "tenant_id": "t1",
        "initiator": {"kind": "actor", "id": "u1"}, "context": {}});
    if let Some(key) = dedupe_key {
        body["dedupe_key"] = json!(key);
    }
    body
}

fn position_of(answer: &common::raw_http::Answer) -> u64 {
    answer.header("opledger-position").expect("a write answers with Opledger-Position").parse().unwrap()
}

fn verify(url: &str) {
    let output = opledger(&["verify", "--log", url]);
    assert!(output.status.success(), "verify --log: {}", text(&output));
}

#[test]
fn a_write_on_one_node_is_read_on_the_other_with_min_position() {
    let Setup { cluster: _cluster, url, dir, token } = Setup::new();
    let a = node(&url, &dir.path().join("a"), "a");
    let b = node(&url, &dir.path().join("b"), "b");
    let recorded = a.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    let started = b.post("/v1/runs", &token, &start_body("report_export", None));
    assert_eq!(started.json()["result"], "accepted", "the second node decides on the first node's authority");
    let run = started.json()["run"]["id"].as_str().unwrap().to_owned();
    let position = position_of(&started);
    let read = a.get(&format!("/v1/runs/{run}?min_position={position}"), &token);
    assert_eq!(read.status, 200, "{}", read.text());
    let listed = a.get(&format!("/v1/runs?tenant_id=t1&min_position={position}"), &token).expect(200);
    assert!(listed["runs"].as_array().unwrap().iter().any(|r| r["id"] == run.as_str()), "{listed}");
    let too_far = a.get(&format!("/v1/runs/{run}?min_position={}", position + 1_000_000), &token);
    assert_eq!(too_far.status, 400, "a position no write reached: {}", too_far.text());
    assert_eq!(too_far.json()["error"]["code"], "invalid_request");
    let bad = a.get("/v1/runs?min_position=soon", &token);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let revoked_id = {
        let output = opledger(&["token", "list", "--log", &url, "--json"]);
        let records: Value = serde_json::from_slice(&output.stdout).unwrap();
        records[0]["id"].as_str().unwrap().to_owned()
    };
    let output = opledger(&["token", "revoke", "--log", &url, &revoked_id]);
    assert!(output.status.success(), "{}", text(&output));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.get("/v1/head", &token).status, 401, "a revoke holds on every node");
    assert_eq!(b.get("/v1/head", &token).status, 401, "a revoke holds on every node");
    // Both opened a log the token command had created: PostgreSQL's notices
    // then ("relation … already exists, skipping") are not warnings.
    for (name, server) in [("a", &a), ("b", &b)] {
        let log = server.log_text();
        assert!(!log.contains("WARN"), "node {name} warned on a normal start:\n{log}");
    }
}

/// What the clients of the kill test were told, kept to check afterwards.
#[derive(Default)]
struct Acknowledged {
    started: Vec<String>,
    completed: Vec<String>,
    /// The highest `Opledger-Position` of those answers: a read with it as
    /// `min_position` must see every one of them, on any node.
    position: u64,
}

/// Cycles (start, begin, complete) until `stop`, `cycles` are done, or the
/// server does not answer; records what was acknowledged.
fn client_loop(
    server: &ServerProcess,
    token: &str,
    name: String,
    stop: &AtomicBool,
    seen: &Mutex<Acknowledged>,
    cycles: Option<u64>,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && cycles.is_none_or(|most| n < most) {
        n += 1;
        let key = format!("{name}-{n}");
        let Ok(started) =
            server.try_call("POST", "/v1/runs", Some(token), Some(&start_body("report_export", Some(&key))))
        else {
            return;
        };
        if started.status != 201 {
            return;
        }
        let run = started.json()["run"]["id"].as_str().unwrap().to_owned();
        {
            let mut seen = seen.lock().unwrap();
            seen.started.push(run.clone());
            seen.position = seen.position.max(position_of(&started));
        }
        let Ok(begun) = server.try_call("POST", &format!("/v1/runs/{run}/begin"), Some(token), None) else { return };
        if begun.status != 200 {
            return;
        }
        let body = json!({"outcome": "succeeded"});
        let Ok(done) = server.try_call("POST", &format!("/v1/runs/{run}/complete"), Some(token), Some(&body)) else {
            return;
        };
        if done.status == 200 {
            let mut seen = seen.lock().unwrap();
            seen.completed.push(run);
            seen.position = seen.position.max(position_of(&done));
        }
    }
}

#[test]
fn a_node_killed_under_load_loses_no_acknowledged_write_and_the_other_keeps_serving() {
    let Setup { cluster: _cluster, url, dir, token } = Setup::new();
    let mut nodes = [Some(node(&url, &dir.path().join("a"), "a")), Some(node(&url, &dir.path().join("b"), "b"))];
    nodes[0].as_ref().unwrap().post("/v1/authority", &token, &authority()).expect(200);
    let seen = Mutex::new(Acknowledged::default());
    for round in 0..KILL_ROUNDS {
        let victim = round % 2;
        let survivor = 1 - victim;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for client in 0..16 {
                let server = nodes[client % 2].as_ref().unwrap();
                let (token, stop, seen) = (&token, &stop, &seen);
                scope.spawn(move || client_loop(server, token, format!("r{round}c{client}"), stop, seen, None));
            }
            std::thread::sleep(Duration::from_millis(100 + rand_below(400)));
            let pid = nodes[victim].as_ref().unwrap().pid().to_string();
            assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        });
        drop(nodes[victim].take());
        let alive = nodes[survivor].as_ref().unwrap();
        let before = seen.lock().unwrap().completed.len();
        client_loop(alive, &token, format!("r{round}-after"), &AtomicBool::new(false), &seen, Some(1));
        assert_eq!(seen.lock().unwrap().completed.len(), before + 1, "round {round}: the other node kept serving");
        nodes[victim] = Some(node(&url, &dir.path().join(["a", "b"][victim]), ["a", "b"][victim]));
    }
    let seen = seen.into_inner().unwrap();
    let reader = nodes[0].as_ref().unwrap();
    let position = seen.position;
    for run in &seen.started {
        read_run(reader, &token, run, position);
    }
    for run in &seen.completed {
        let answer = read_run(reader, &token, run, position);
        assert_eq!(answer["run"]["status"], "completed", "an acknowledged completion of {run} is in the log");
    }
    assert!(seen.completed.len() >= KILL_ROUNDS, "load ran: {} completions", seen.completed.len());
    drop(nodes);
    verify(&url);
}

/// `GET /v1/runs/{run}?min_position=…`, retried while the node answers
/// 503 (its read models still catching up after a failover), at most a
/// minute.
fn read_run(server: &ServerProcess, token: &str, run: &str, position: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = server.get(&format!("/v1/runs/{run}?min_position={position}"), token);
        if answer.status != 503 || Instant::now() > deadline {
            assert_eq!(answer.status, 200, "an acknowledged write of run {run} is readable: {}", answer.text());
            return answer.json();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A small random number from the clock (the test needs no seeded
/// randomness: any moment must do).
fn rand_below(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % bound
}

#[test]
fn sixteen_racing_starts_on_one_scope_over_two_nodes_accept_exactly_one_run() {
    let Setup { cluster: _cluster, url, dir, token } = Setup::new();
    let nodes = [node(&url, &dir.path().join("a"), "a"), node(&url, &dir.path().join("b"), "b")];
    nodes[0].post("/v1/authority", &token, &authority()).expect(200);
    for round in 0..SCOPE_ROUNDS {
        let barrier = Barrier::new(16);
        let answers: Vec<Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|client| {
                    let (server, token, barrier) = (&nodes[client % 2], &token, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        server.post("/v1/runs", token, &start_body("inventory_sync", None)).json()
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        let accepted: Vec<&Value> = answers.iter().filter(|a| a["result"] == "accepted").collect();
        assert_eq!(accepted.len(), 1, "round {round}: exactly one accepted run: {answers:?}");
        let run = accepted[0]["run"]["id"].as_str().unwrap();
        assert!(answers.iter().all(|a| a["run"]["id"] == run), "round {round}: the others name it: {answers:?}");
        nodes[round % 2].post(&format!("/v1/runs/{run}/begin"), &token, &json!({})).expect(200);
        nodes[(round + 1) % 2]
            .post(&format!("/v1/runs/{run}/complete"), &token, &json!({"outcome": "succeeded"}))
            .expect(200);
    }
    verify(&url);
}

#[test]
fn nodes_follow_a_failover_to_a_promoted_synchronous_standby_and_lose_nothing_acknowledged() {
    let primary = Cluster::start(&[]);
    primary.psql("CREATE DATABASE opledger");
    let standby = Cluster::standby_of(&primary, &[]);
    primary.reload_setting("synchronous_standby_names", Some("*"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary.psql("SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication") != "sync" {
        assert!(Instant::now() < deadline, "the standby never became synchronous: {}", standby.server_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/opledger?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    );
    let dir = tempfile::tempdir().unwrap();
    let token = service_token(&url);
    let nodes = [node(&url, &dir.path().join("a"), "a"), node(&url, &dir.path().join("b"), "b")];
    nodes[0].post("/v1/authority", &token, &authority()).expect(200);
    let seen = Mutex::new(Acknowledged::default());
    let stop = AtomicBool::new(false);
    let primary = Arc::new(Mutex::new(primary));
    std::thread::scope(|scope| {
        for client in 0..8 {
            let (server, token, stop, seen) = (&nodes[client % 2], &token, &stop, &seen);
            scope.spawn(move || {
                // A client retries after errors while the database fails over.
                while !stop.load(Ordering::SeqCst) {
                    client_loop(server, token, format!("f{client}-{}", rand_below(1 << 30)), stop, seen, None);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(700));
        let failover = Instant::now();
        primary.lock().unwrap().kill();
        standby.promote();
        eprintln!("primary killed and standby promoted in {:?}", failover.elapsed());
        let before = seen.lock().unwrap().completed.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().completed.len() < before + 10 {
            assert!(Instant::now() < deadline, "the nodes did not resume on the promoted standby");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("10 more cycles completed {:?} after the primary was killed", failover.elapsed());
        stop.store(true, Ordering::SeqCst);
    });
    let seen = seen.into_inner().unwrap();
    let position = seen.position;
    for run in &seen.completed {
        let answer = read_run(&nodes[1], &token, run, position);
        assert_eq!(answer["run"]["status"], "completed", "acknowledged before or after the failover: {run}");
    }
    for run in &seen.started {
        read_run(&nodes[0], &token, run, position);
    }
    drop(nodes);
    verify(&format!("postgres://postgres@127.0.0.1:{}/opledger", standby.port));
}

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
    let mut cluster = Cluster::start(&[]);
    let url = cluster.database("opledger");
    let dir = tempfile::tempdir().unwrap();
    let token = service_token(&url);
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
/// (so the database must be asked), and a read of the raw log, are a 503
/// `log_unreachable` within the read's wait, not the log's 30 s, and a
/// command within two of its decider's rounds of 5 s. Once the database
/// answers again, the node takes writes.
#[test]
fn a_node_whose_database_went_silent_answers_reads_and_health_promptly() {
    let Setup { cluster, url, dir, token } = Setup::new();
    let a = node(&url, &dir.path().join("a"), "a");
    let recorded = a.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    let head = position_of(&a.post("/v1/runs", &token, &start_body("report_export", None)));
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
        let asked = Instant::now();
        let past = a.get(&format!("/v1/runs?tenant_id=t1&min_position={}", head + 1), &token);
        let took = asked.elapsed();
        assert_eq!(past.status, 503, "{}", past.text());
        assert_eq!(past.json()["error"]["code"], "log_unreachable", "{}", past.text());
        assert!(
            took < opledger_tools::server::state::READ_PROJECTION_WAIT + SILENT_DATABASE_ANSWER_MAX,
            "asking the head took {took:?}"
        );
        let asked = Instant::now();
        let events = a.get("/v1/events?from=1", &token);
        let took = asked.elapsed();
        assert_eq!(
            events.json()["error"]["code"],
            "log_unreachable",
            "the raw log is in the database: {}",
            events.text()
        );
        assert!(
            took < opledger_tools::server::state::READ_PROJECTION_WAIT + SILENT_DATABASE_ANSWER_MAX,
            "reading the log took {took:?}"
        );
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
    let mut cluster = Cluster::start(&[]);
    let url = cluster.database("opledger");
    let dir = tempfile::tempdir().unwrap();
    let token = service_token(&url);
    let nodes = [node(&url, &dir.path().join("a"), "a"), node(&url, &dir.path().join("b"), "b")];
    nodes[0].post("/v1/authority", &token, &authority()).expect(200);
    let seen = Mutex::new(Acknowledged::default());
    let stop = AtomicBool::new(false);
    let longest_unavailable = Mutex::new(Duration::ZERO);
    let mut longest_outage = Duration::ZERO;
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (server, token, stop, seen) = (&nodes[client % 2], &token, &stop, &seen);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    client_loop(server, token, format!("d{client}-{}", rand_below(1 << 30)), stop, seen, None);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
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

#[test]
fn an_import_of_a_sled_export_into_postgres_gives_the_identical_head() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("imported");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sled");
    let sled_token = {
        let output = opledger(&["token", "create", "--data", data.to_str().unwrap(), "--service", "host"]);
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap().lines().last().unwrap().trim().to_owned()
    };
    let server =
        ServerProcess::start(BINARY, &data, &["--durability", "flush"], dir.path().join("sled.log"), REQUEST_TIMEOUT);
    server.post("/v1/authority", &sled_token, &authority()).expect(200);
    for n in 0..20 {
        server.post("/v1/runs", &sled_token, &start_body("report_export", Some(&format!("k{n}")))).expect(201);
    }
    drop(server);
    let export = dir.path().join("export.jsonl");
    let exported = opledger(&["export", "--data", data.to_str().unwrap(), "--output", export.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported));
    let head = |args: &[&str]| {
        let output = opledger(&[&["head"], args].concat());
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let sled_head = head(&["--data", data.to_str().unwrap()]);
    let imported = opledger(&["import", "--log", &url, "--input", export.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported));
    assert_eq!(head(&["--log", &url]), sled_head, "the same head digest on both backends");
    let again = opledger(&["import", "--log", &url, "--input", export.to_str().unwrap()]);
    assert!(!again.status.success(), "a second import into a log that is not empty is refused");
    verify(&url);
}

#[test]
fn a_node_reaches_the_log_over_tls_with_verify_full() {
    let ca = tls_certificates::Authority::new("opledger test CA");
    let server = ca.issue(&["localhost"]);
    let tls = postgres_cluster::ServerTls { certificate_pem: &server.certificate_pem, key_pem: &server.key_pem };
    let cluster = Cluster::start_with_tls(&[], &tls);
    cluster.psql("CREATE DATABASE opledger");
    let dir = tempfile::tempdir().unwrap();
    let root = ca.write_root(dir.path(), "ca.crt");
    let url = format!(
        "postgres://postgres@localhost:{}/opledger?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        root.display()
    );
    let plain = format!("postgres://postgres@localhost:{}/opledger?sslmode=disable", cluster.port);
    let refused = opledger(&["verify", "--log", &plain]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("no encryption"),
        "the cluster accepts TCP only over TLS: {}",
        text(&refused)
    );
    let token = service_token(&url);
    let a = node(&url, &dir.path().join("a"), "a");
    let recorded = a.post("/v1/authority", &token, &authority());
    assert_eq!(recorded.status, 200, "{}", recorded.text());
    let started = a.post("/v1/runs", &token, &start_body("report_export", None));
    assert_eq!(started.json()["result"], "accepted", "{}", started.text());
    let run = started.json()["run"]["id"].as_str().unwrap().to_owned();
    let read = a.get(&format!("/v1/runs/{run}?min_position={}", position_of(&started)), &token);
    assert_eq!(read.status, 200, "{}", read.text());
    verify(&url);
    let encrypted = cluster.psql(
        "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'opledger'",
    );
    assert_eq!(encrypted, "t", "every connection of the node is encrypted");
}
