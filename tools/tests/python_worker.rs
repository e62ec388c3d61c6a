//! The Python worker of the README (`tools/examples/worker.py`, standard
//! library only) against the real binary: `opledger serve` on a fresh data
//! directory, a service token from `opledger token create`, authority and
//! starts over the API, then `python3 worker.py URL TOKEN --once`. The runs
//! it may begin end succeeded with its counts; the run whose authority was
//! revoked is blocked (not failed); a refused token or no server is a clear
//! message and a non-zero exit.
//!
//! `python3` is required, not optional: without it the test fails and says
//! so, since a skipped test would let the example rot unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common {
    pub mod raw_http;
    pub mod server_process;
}

use common::server_process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");
/// A bound on each request the test itself sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Items the example worker reports for every run (its `total`).
const WORKER_TOTAL: u64 = 10;

fn worker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("worker.py")
}

/// `python3 worker.py ARGS…`, to its end; fails the test clearly when
/// there is no `python3` to run it with.
fn run_worker(args: &[&str]) -> Output {
    let output = Command::new("python3").arg(worker_script()).args(args).stdin(Stdio::null()).output();
    match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("python3 is not on PATH: this test runs tools/examples/worker.py with it; install Python 3")
        }
        Err(error) => panic!("python3 could not be started: {error}"),
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `opledger token create --data DATA --service NAME`: the token, alone on
/// the last line of stdout.
fn service_token(data: &Path, name: &str) -> String {
    let output = Command::new(BINARY)
        .args(["token", "create", "--data"])
        .arg(data)
        .args(["--service", name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "token create: {}", text(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().expect("a token on the last line").trim().to_owned()
}

fn start_server(data: &Path, logs: &Path) -> ServerProcess {
    ServerProcess::start(BINARY, data, &["--durability", "flush"], logs.join("server.log"), REQUEST_TIMEOUT)
}

fn url(server: &ServerProcess) -> String {
    format!("http://{}", server.address)
}

/// t1 in w1 with two ready connections; u1 may sync, u2 may export
/// reports. `inventory_sync` is provider-backed (one run per connection at
/// a time), `report_export` is not.
fn authority() -> Value {
    json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": [
        {"type": "workspace_registered", "workspace_id": "w1"},
        {"type": "tenant_registered", "tenant_id": "t1", "workspace_id": "w1", "lifecycle": "active"},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "u1"},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "u2"},
        {"type": "tenant_member_added", "tenant_id": "t1", "actor_id": "u1"},
        {"type": "tenant_member_added", "tenant_id": "t1", "actor_id": "u2"},
        {"type": "capability_granted", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"},
        {"type": "capability_granted", "tenant_id": "t1", "actor_id": "u2", "capability": "reports.export"},
        {"type": "provider_connection_registered", "connection_id": "c1", "tenant_id": "t1", "status": "ready"},
        {"type": "provider_connection_registered", "connection_id": "c2", "tenant_id": "t1", "status": "ready"},
        {"type": "default_provider_connection_set", "tenant_id": "t1", "connection_id": "c1"},
        {"type": "operation_type_registered", "operation_type": "inventory_sync", "required_capability": "tenant.sync",
         "provider_backed": true, "writes": false, "system_authority_allowed": true, "max_attempts": 3},
        {"type": "operation_type_registered", "operation_type": "report_export",
         "required_capability": "reports.export", "provider_backed": false, "writes": false,
         "system_authority_allowed": false, "max_attempts": 1}
    ]})
}

/// A start that the start gate accepts; the new run's id.
fn start(server: &ServerProcess, token: &str, body: Value) -> String {
    let answer = server.post("/v1/runs", token, &body).expect(201);
    assert_eq!(answer["result"], "accepted", "{answer}");
    answer["run"]["id"].as_str().unwrap().to_owned()
}

fn run_detail(server: &ServerProcess, token: &str, id: &str) -> Value {
    server.get(&format!("/v1/runs/{id}"), token).expect(200)
}

#[test]
fn the_python_worker_completes_the_allowed_runs_and_leaves_the_revoked_one_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(&data, dir.path());
    let token = service_token(&data, "python-worker");
    server.post("/v1/authority", &token, &authority()).expect(200);

    // Oldest first, as the worker takes them: u1's sync on the default
    // connection, then a scheduled sync on c2 and u2's report.
    let drifted = start(
        &server,
        &token,
        json!({"operation_type": "inventory_sync", "tenant_id": "t1", "initiator": {"kind": "actor", "id": "u1"}}),
    );
    let scheduled = start(
        &server,
        &token,
        json!({"operation_type": "inventory_sync", "tenant_id": "t1", "initiator": {"kind": "system"},
               "provider_connection_id": "c2"}),
    );
    let report = start(
        &server,
        &token,
        json!({"operation_type": "report_export", "tenant_id": "t1", "initiator": {"kind": "actor", "id": "u2"}}),
    );
    // Authority drifts between the start and the worker's begin.
    let revoke = json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": [
        {"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"}]});
    server.post("/v1/authority", &token, &revoke).expect(200);

    let output = run_worker(&[&url(&server), &token, "--once"]);
    assert!(output.status.success(), "the worker failed: {}\n--- server log\n{}", text(&output), server.log_text());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Its report names each run: worked, or not begun and why.
    assert!(stderr.contains(&format!("inventory_sync {scheduled}: succeeded")), "{}", text(&output));
    assert!(stderr.contains(&format!("report_export {report}: succeeded")), "{}", text(&output));
    assert!(stderr.contains(&format!("inventory_sync {drifted}: not begun (capability_missing)")), "{}", text(&output));

    for id in [&scheduled, &report] {
        let detail = run_detail(&server, &token, id);
        let run = &detail["run"];
        assert_eq!(run["status"], "completed", "{detail}");
        assert_eq!(run["outcome"], "succeeded", "{detail}");
        assert_eq!(run["attempt"], 1, "one attempt, begun by the worker: {detail}");
        assert_eq!(run["summary_counts"]["total"], WORKER_TOTAL, "{detail}");
        assert_eq!(run["summary_counts"]["processed"], WORKER_TOTAL, "{detail}");
        // The worker reported progress twice before completing.
        let types: Vec<&str> =
            detail["timeline"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.iter().filter(|t| **t == "run_progressed").count(), 2, "{types:?}");
        assert_eq!(types.last(), Some(&"run_completed"), "{types:?}");
    }
    let detail = run_detail(&server, &token, &drifted);
    let run = &detail["run"];
    assert_eq!(run["status"], "completed", "{detail}");
    assert_eq!(run["outcome"], "blocked", "a denied begin is blocked, never failed: {detail}");
    assert_eq!(run["reason_code"], "capability_missing", "{detail}");
    let types: Vec<&str> = detail["timeline"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(!types.contains(&"run_started"), "the worker did no work on it: {types:?}");

    let queued = server.get("/v1/runs?status=queued", &token).expect(200);
    assert_eq!(queued["runs"], json!([]), "--once took every queued run: {queued}");

    // A second pass finds nothing queued and ends well, appending nothing.
    let head = server.get("/v1/head", &token).expect(200);
    let again = run_worker(&[&url(&server), &token, "--once"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(server.get("/v1/head", &token).expect(200), head, "an idle pass appends nothing");
}

#[test]
fn the_python_worker_names_the_servers_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(&data, dir.path());

    let refused = run_worker(&[&url(&server), "not-a-token", "--once"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("GET /v1/runs"), "names the call: {}", text(&refused));
    assert!(stderr.contains("401 (unauthorized)"), "names the status and the server's code: {}", text(&refused));
    assert!(!stderr.contains("Traceback"), "a message, not a stack trace: {}", text(&refused));

    // A port nothing listens on (bound, then released).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = run_worker(&[&format!("http://{closed}"), "any-token", "--once"]);
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains(&format!("cannot reach http://{closed}")), "{}", text(&unreachable));
    assert!(!stderr.contains("Traceback"), "{}", text(&unreachable));

    let usage = run_worker(&[&url(&server)]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: worker.py URL SERVICE_TOKEN [--once]"));
}
