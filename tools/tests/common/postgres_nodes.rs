//! What the tests of nodes over one PostgreSQL log share
//! (`postgres_nodes.rs`, `postgres_outages.rs`): the real binary, tokens
//! kept in the database, a throwaway cluster per test, the authority and
//! the runs the nodes are driven with.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::raw_http::Answer;
use super::server_process::ServerProcess;
use crate::postgres_cluster::Cluster;

pub const BINARY: &str = env!("CARGO_BIN_EXE_opledger");
/// A bound on each request the tests send.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn opledger(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A service token kept in the database: every node accepts it.
pub fn service_token(url: &str) -> String {
    let output = opledger(&["token", "create", "--log", url, "--service", "host"]);
    assert!(output.status.success(), "token create: {}", text(&output));
    String::from_utf8(output.stdout).unwrap().lines().last().unwrap().trim().to_owned()
}

pub fn node(url: &str, data: &Path, name: &str) -> ServerProcess {
    let log = data.parent().unwrap().join(format!("{name}.log"));
    ServerProcess::start(BINARY, data, &["--log", url], log, REQUEST_TIMEOUT)
}

/// A throwaway cluster with the log's database (`opledger`), a directory
/// for the nodes' read models and a service token: what most tests here
/// start from. Taken apart by the test (`let Setup { cluster, url, dir,
/// token } = …`), whose nodes, declared after, are dropped first.
pub struct Setup {
    pub cluster: Cluster,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub token: String,
}

impl Setup {
    pub fn new() -> Setup {
        let cluster = Cluster::start(&[]);
        let url = cluster.database("opledger");
        let token = service_token(&url);
        Setup { cluster, url, dir: tempfile::tempdir().unwrap(), token }
    }
}

pub fn authority() -> Value {
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

pub fn start_body(operation_type: &str, dedupe_key: Option<&str>) -> Value {
    let mut body = json!({"operation_type": operation_type, "tenant_id": "t1",
        "initiator": {"kind": "actor", "id": "u1"}, "context": {}});
    if let Some(key) = dedupe_key {
        body["dedupe_key"] = json!(key);
    }
    body
}

pub fn position_of(answer: &Answer) -> u64 {
    answer.header("opledger-position").expect("a write answers with Opledger-Position").parse().unwrap()
}

pub fn verify(url: &str) {
    let output = opledger(&["verify", "--log", url]);
    assert!(output.status.success(), "verify --log: {}", text(&output));
}

/// What the clients of the kill test were told, kept to check afterwards.
#[derive(Default)]
pub struct Acknowledged {
    pub started: Vec<String>,
    pub completed: Vec<String>,
    /// The highest `Opledger-Position` of those answers: a read with it as
    /// `min_position` must see every one of them, on any node.
    pub position: u64,
}

/// Cycles (start, begin, complete) until `stop`, `cycles` are done, or the
/// server does not answer; records what was acknowledged.
pub fn client_loop(
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

/// [`client_loop`] again and again until `stop`, each time under a new
/// name from `prefix`: a client that retries after errors (while the
/// database fails over or restarts).
pub fn retrying_client(
    server: &ServerProcess,
    token: &str,
    prefix: &str,
    stop: &AtomicBool,
    seen: &Mutex<Acknowledged>,
) {
    while !stop.load(Ordering::SeqCst) {
        client_loop(server, token, format!("{prefix}-{}", rand_below(1 << 30)), stop, seen, None);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small random number from the clock (the test needs no seeded
/// randomness: any moment must do).
pub fn rand_below(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % bound
}
