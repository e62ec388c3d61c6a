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
//! - `import --log` of a sled export gives the identical head.
//! - Over TLS (`sslmode=verify-full&sslrootcert=…`) to a cluster that
//!   accepts TCP only encrypted: a token, a write and a read, `verify`.
//!
//! A database in trouble (out of reach, silent, restarting) is
//! `postgres_outages.rs`'s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common {
    pub mod postgres_nodes;
    pub mod raw_http;
    pub mod server_process;
}

#[path = "../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;
#[path = "../../tests/support/tls_certificates.rs"]
mod tls_certificates;

use common::postgres_nodes::*;
use common::server_process::ServerProcess;
use postgres_cluster::Cluster;

/// Rounds of the kill test.
const KILL_ROUNDS: usize = 20;
/// Rounds of the scope race.
const SCOPE_ROUNDS: usize = 50;

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
    // A walk over the log reads the database's head first: it sees the
    // other node's write without `min_position`.
    let explained = a.get(&format!("/v1/runs/{run}/explain"), &token).expect(200);
    assert_eq!(explained["decisions"][0]["position"], position, "{explained}");
    let exported = a.get("/v1/export", &token);
    let digest = exported.header("opledger-head").unwrap();
    assert!(digest.starts_with(&format!("{position}:")), "the export ends at the database's head: {digest}");
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
            scope.spawn(move || retrying_client(server, token, &format!("f{client}"), stop, seen));
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
