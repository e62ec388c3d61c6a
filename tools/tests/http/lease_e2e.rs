//! A real worker process (a shell with curl: begin, then a heartbeat every
//! second) killed with SIGKILL after `begin`, against the real binary: the
//! server's reaper abandons the attempt once the lease lapses, the run is
//! queued again with the scope still its own (no other run takes it, none
//! is running), a new worker begins it with a fresh decision, the dead
//! worker's late call is fenced, and `verify` re-derives the abandonment.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opledger_tools::server::leases::LEASE_REAPER_INTERVAL;
use opledger_tools::tokens::Grant;
use serde_json::{json, Value};

use crate::backend::TestLog;
use crate::e2e::{start_server, verify};
use crate::server_process::ServerProcess;
use crate::support::{actor, fixture_changes, start_body};

/// The lease of the test's operation type: the catalog's shortest.
const LEASE_SECONDS: i64 = opledger::domain::model::LEASE_SECONDS_MIN as i64;
/// A bound on waiting for the reaper, so a broken reaper fails the test
/// instead of hanging it (the bound checked is on the log's own times).
const REQUEUE_WAIT_MAX: Duration = Duration::from_secs(60);
/// What an append may add to the reaper's lateness on a loaded machine.
const APPEND_SLACK: chrono::Duration = chrono::Duration::seconds(2);

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|text| text.parse().ok()).unwrap_or_else(|| panic!("not a time: {value}"))
}

/// The worker: begins the run, prints the answer, heartbeats every second.
fn spawn_worker(server: &ServerProcess, token: &str, run_id: &str) -> std::process::Child {
    let url = format!("http://{}/v1/runs/{run_id}", server.address);
    let script = r#"
        post() { curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$2" "$URL/$1"; }
        post begin '{}'; echo
        while :; do sleep 1; post heartbeat '{"attempt": 1}' > /dev/null; done
    "#;
    Command::new("sh")
        .args(["-c", script])
        .env("TOKEN", token)
        .env("URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// SIGKILL to the worker's whole process group (the shell, curl, sleep).
fn kill_group(worker: &mut std::process::Child) {
    let group = format!("-{}", worker.id());
    let status = Command::new("kill").args(["-KILL", "--", &group]).status().unwrap();
    assert!(status.success(), "kill -KILL {group}");
    worker.wait().unwrap();
}

#[test]
fn a_worker_killed_after_begin_loses_its_lease_and_the_run_is_begun_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let store = TestLog::fresh();
    let service = store.token(&data, Grant::Service { name: "e2e".into() });
    let server = start_server(&data, &store, logs.path(), "leases");
    let mut changes = fixture_changes().as_array().cloned().unwrap();
    changes.push(json!({"type": "operation_type_registered", "operation_type": "leased_sync",
        "required_capability": "tenant.sync", "provider_backed": true, "writes": false,
        "system_authority_allowed": true, "max_attempts": 2, "lease_seconds": LEASE_SECONDS}));
    server.post("/v1/authority", &service, &json!({"changed_by": actor("u-admin"), "changes": changes})).expect(200);
    let run = server.post("/v1/runs", &service, &start_body("leased_sync", "t1", actor("u1"))).expect(201);
    let id = run["run"]["id"].as_str().unwrap().to_owned();

    let mut worker = spawn_worker(&server, &service, &id);
    let mut begun = String::new();
    BufReader::new(worker.stdout.take().unwrap()).read_line(&mut begun).unwrap();
    let begun: Value = serde_json::from_str(&begun).unwrap_or_else(|e| panic!("begin answer ({e}): {begun}"));
    assert_eq!((&begun["run"]["status"], &begun["run"]["attempt"]), (&json!("running"), &json!(1)), "{begun}");
    std::thread::sleep(Duration::from_secs(3));
    kill_group(&mut worker);
    let killed_at = Utc::now();

    let deadline = Instant::now() + REQUEUE_WAIT_MAX;
    let requeued = loop {
        let detail = server.get(&format!("/v1/runs/{id}"), &service).expect(200);
        if detail["run"]["status"] == "queued" {
            break detail;
        }
        assert!(Instant::now() < deadline, "the run never came back to queued: {detail}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(requeued["run"]["attempt"], 2);
    let events = requeued["timeline"].as_array().unwrap();
    let abandoned = events.iter().find(|e| e["type"] == "attempt_abandoned").expect("an attempt_abandoned event");
    let expired_at = time(&abandoned["data"]["lease_expired_at"]);
    let noticed_at = time(&abandoned["recorded_at"]);
    assert!(
        expired_at <= killed_at + chrono::Duration::seconds(LEASE_SECONDS),
        "the lease ends a lease after the last sign of life"
    );
    let reaper_bound = chrono::Duration::from_std(LEASE_REAPER_INTERVAL).unwrap() + APPEND_SLACK;
    assert!(noticed_at - expired_at <= reaper_bound, "noticed {noticed_at}, lapsed {expired_at}");

    // In between, nothing runs on the scope and no other run can take it from the requeued run.
    let running = server.get("/v1/runs?status=running", &service).expect(200);
    assert_eq!(running["runs"], json!([]), "nothing is running on the scope in between");
    let other = server.post("/v1/runs", &service, &start_body("inventory_sync", "t1", actor("u1"))).expect(409);
    assert_eq!(other["blocking_run"]["id"], id.as_str(), "the scope belongs to the requeued run, not a dead attempt");

    let again = server.post(&format!("/v1/runs/{id}/begin"), &service, &json!({})).expect(200);
    assert_eq!((&again["decision"]["attempt"], &again["decision"]["outcome"]), (&json!(2), &json!("allowed")));
    let late =
        server.post(&format!("/v1/runs/{id}/complete"), &service, &json!({"outcome": "succeeded", "attempt": 1}));
    assert_eq!((late.status, &late.json()["error"]["code"]), (409, &json!("lease_expired")));
    let done =
        server.post(&format!("/v1/runs/{id}/complete"), &service, &json!({"outcome": "succeeded", "attempt": 2}));
    assert_eq!(done.expect(200)["run"]["outcome"], "succeeded");
    server.post("/v1/runs", &service, &start_body("inventory_sync", "t1", actor("u1"))).expect(201);

    assert!(server.terminate().success());
    let (status, report) = verify(&data, &store);
    assert!(status.success(), "verify: {report}");
}
