//! The real binary: `opledger serve` on a loopback port, driven over HTTP/1.1
//! by a small blocking client; killed with SIGKILL under load and restarted;
//! stopped with SIGTERM; then `opledger verify` on its data directory (or,
//! on PostgreSQL, its log's database: `backend.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opledger_tools::tokens::Grant;
use serde_json::{json, Value};

use crate::backend::TestLog;
use crate::raw_http::{Answer, Call};
use crate::server_process::{ServerProcess, SERVER_WAIT};
use crate::support::{actor, fixture_changes, start_body, system};

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");

/// A bound on any one request (a hung server fails the test instead of hanging it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_CLIENTS: usize = 8;
const LOAD_REQUESTS_PER_CLIENT_MAX: usize = 150;
/// Acknowledged starts to wait for before the SIGKILL.
const LOAD_ACKS_BEFORE_KILL: usize = 200;
const LOAD_WAIT_MAX: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request on its own connection, bounded by [`REQUEST_TIMEOUT`].
fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    crate::raw_http::call(address, Call { method, path, token, body }, REQUEST_TIMEOUT)
}

/// `opledger serve` on `data` (flush durability), its log in
/// `log_dir/NAME.log`, once it is ready (`/healthz` answers ok).
pub(crate) fn start_server(data: &Path, store: &TestLog, log_dir: &Path, name: &str) -> ServerProcess {
    let log = log_dir.join(format!("{name}.log"));
    let mut args = vec!["--durability", "flush"];
    args.extend(store.args());
    let server = ServerProcess::start(BINARY, data, &args, log, REQUEST_TIMEOUT);
    let deadline = Instant::now() + SERVER_WAIT;
    loop {
        let health = server.call("GET", "/healthz", None, None);
        if health.status == 200 {
            assert_eq!(health.json()["status"], "ok");
            return server;
        }
        assert!(Instant::now() < deadline, "the server never became ready: {}", health.text());
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn verify(data: &Path, store: &TestLog) -> (ExitStatus, String) {
    let output = Command::new(BINARY)
        .args(["verify", "--data"])
        .arg(data)
        .args(store.args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}

/// The seed scenario, then acknowledged starts under load survive a SIGKILL.
#[test]
fn the_binary_survives_a_kill_under_load_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let store = TestLog::fresh();
    let service = store.token(&data, Grant::Service { name: "e2e".into() });
    let u1 = store.token(&data, Grant::Actor { actor_id: "u1".into() });

    let server = start_server(&data, &store, logs.path(), "first");
    let unauthorized = server.call("GET", "/v1/runs", None, None);
    assert_eq!(unauthorized.status, 401);
    assert!(unauthorized.json()["error"]["code"].is_string());

    // The seed scenario: authority, a start, a revocation, begin → blocked.
    let setup = json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": fixture_changes()});
    let positions = server.post("/v1/authority", &service, &setup).expect(200);
    assert_eq!(positions["first_position"], 1);
    let started = server.post("/v1/runs", &service, &start_body("inventory_sync", "t1", actor("u1"))).expect(201);
    assert_eq!(started["result"], "accepted");
    let run_id = started["run"]["id"].as_str().unwrap().to_owned();
    let revoke = json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": [
        {"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"}]});
    server.post("/v1/authority", &service, &revoke).expect(200);
    let begun = server.post(&format!("/v1/runs/{run_id}/begin"), &service, &json!({})).expect(200);
    assert_eq!(begun["decision"]["outcome"], "denied");
    assert_eq!(begun["decision"]["reason_code"], "capability_missing");
    assert_eq!(begun["run"]["outcome"], "blocked");
    assert_eq!(begun["run"]["status"], "completed");

    let listed = server.get("/v1/runs?tenant_id=t1&outcome=blocked", &service).expect(200);
    assert_eq!(listed["runs"][0]["id"], run_id.as_str(), "{listed}");
    assert_eq!(listed["runs"][0]["reason_code"], "capability_missing");
    let trail = server.get(&format!("/v1/audit?run_id={run_id}"), &service).expect(200);
    let actions: Vec<&str> = trail["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"run_blocked") && actions.contains(&"run_queued"), "{actions:?}");
    let revocations = server.get("/v1/audit?action=capability_revoked", &service).expect(200);
    assert_eq!(revocations["entries"].as_array().unwrap().len(), 1, "{revocations}");
    let inbox = server.get("/v1/notifications", &u1).expect(200);
    let notes = inbox["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{inbox}");
    assert_eq!(notes[0]["run_id"], run_id.as_str());
    assert_eq!(notes[0]["outcome"], "blocked");
    let page = server.get(&format!("/admin/operations/{run_id}"), &u1);
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("capability_missing"));

    // Load: concurrent starts, each acknowledged run id recorded; SIGKILL mid-load.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let address = server.address;
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|client| {
            let (acked, stop, service) = (Arc::clone(&acked), Arc::clone(&stop), service.clone());
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..LOAD_REQUESTS_PER_CLIENT_MAX {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut body = start_body("report", "t2", system());
                    body["dedupe_key"] = json!(format!("load-{client}-{i}"));
                    match call(address, "POST", "/v1/runs", Some(&service), Some(&body)) {
                        Ok(answer) if answer.status == 201 => {
                            let id = answer.json()["run"]["id"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push(id);
                        }
                        Ok(answer) => panic!("a load start answered {}: {}", answer.status, answer.json()),
                        // The server was killed: not acknowledged.
                        Err(_) => {
                            refused += 1;
                            break;
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let deadline = Instant::now() + LOAD_WAIT_MAX;
    while acked.lock().unwrap().len() < LOAD_ACKS_BEFORE_KILL
        && Instant::now() < deadline
        && clients.iter().any(|c| !c.is_finished())
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = server.kill();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed), Some(9), "SIGKILL: {killed}");
    stop.store(true, Ordering::Relaxed);
    let cut_off: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let acked = acked.lock().unwrap().clone();
    eprintln!("e2e: {} starts acknowledged before the SIGKILL, {cut_off} clients cut off", acked.len());
    assert!(!acked.is_empty(), "some starts were acknowledged before the kill");

    // Restart on the same data directory: every acknowledged run is there.
    let server = start_server(&data, &store, logs.path(), "second");
    for id in &acked {
        let answer = server.get(&format!("/v1/runs/{id}"), &service);
        let detail = answer.expect(200);
        assert_eq!(detail["run"]["id"], id.as_str());
        assert_eq!(detail["run"]["status"], "queued");
    }
    let blocked = server.get(&format!("/v1/runs/{run_id}"), &service).expect(200);
    assert_eq!(blocked["run"]["outcome"], "blocked");
    let mut listed = 0;
    let mut uri = "/v1/runs?tenant_id=t2&limit=200".to_owned();
    for _ in 0..100 {
        let page = server.get(&uri, &service).expect(200);
        listed += page["runs"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/runs?tenant_id=t2&limit=200&cursor={cursor}"),
            None => break,
        }
    }
    assert!(listed >= acked.len(), "the list holds every acknowledged run: {listed} < {}", acked.len());
    // The restarted server takes writes.
    let after = server.post("/v1/runs", &service, &start_body("report", "t3", actor("u3"))).expect(201);
    assert_eq!(after["result"], "accepted");

    let stopped = server.terminate();
    assert_eq!(stopped.code(), Some(0), "SIGTERM is a clean stop");
    let (status, report) = verify(&data, &store);
    assert!(status.success(), "opledger verify after the restart: {status}: {report}");
}

/// SIGTERM: in-flight work finishes, the process exits 0, the log verifies.
#[test]
fn sigterm_stops_the_binary_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let store = TestLog::fresh();
    let service = store.token(&data, Grant::Service { name: "e2e".into() });
    let server = start_server(&data, &store, logs.path(), "graceful");
    let setup = json!({"changed_by": {"kind": "system"}, "changes": fixture_changes()});
    server.post("/v1/authority", &service, &setup).expect(200);
    let run = server.post("/v1/runs", &service, &start_body("report", "t1", actor("u1"))).expect(201);
    let run_id = run["run"]["id"].as_str().unwrap().to_owned();
    let health = server.call("GET", "/healthz", None, None).expect(200);
    let head: u64 = health["head"].as_str().unwrap().split(':').next().unwrap().parse().unwrap();

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let (verified, report) = verify(&data, &store);
    assert!(verified.success(), "{report}");
    assert!(report.contains(&format!("checked {head} events")), "{report}");

    // The run is there after a restart.
    let server = start_server(&data, &store, logs.path(), "after");
    let detail = server.get(&format!("/v1/runs/{run_id}"), &service).expect(200);
    assert_eq!(detail["run"]["status"], "queued");
    assert_eq!(server.terminate().code(), Some(0));
}
