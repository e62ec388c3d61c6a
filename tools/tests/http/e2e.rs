//! The real binary: `opledger serve` on a loopback port, driven over HTTP/1.1
//! by a small blocking client; killed with SIGKILL under load and restarted;
//! stopped with SIGTERM; then `opledger verify` on its data directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opledger_tools::tokens::{Grant, TokenStore};
use serde_json::{json, Value};

use crate::support::{actor, fixture_changes, start_body, system};

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");

/// How long the server may take to answer `/healthz` after it starts.
const STARTUP_WAIT: Duration = Duration::from_secs(60);
/// A bound on any one request (a hung server fails the test instead of hanging it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_CLIENTS: usize = 8;
const LOAD_REQUESTS_PER_CLIENT_MAX: usize = 150;
/// Acknowledged starts to wait for before the SIGKILL.
const LOAD_ACKS_BEFORE_KILL: usize = 200;
const LOAD_WAIT_MAX: Duration = Duration::from_secs(30);

/// One answer: status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {} body not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    #[track_caller]
    pub(crate) fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.body));
        self.json()
    }
}

fn decode_chunked(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
    let mut body = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| bad())?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err(bad());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| broken("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| broken("no status line"))?;
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        decode_chunked(rest)?
    } else {
        let length = lower
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok());
        match length {
            Some(length) if rest.len() < length => return Err(broken("body cut short")),
            Some(length) => rest[..length].to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Answer { status, body })
}

fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}

/// `opledger serve` on `data`, answering on a free loopback port.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: SocketAddr,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(data: &Path, log_dir: &Path, name: &str) -> Server {
        let address = free_loopback_port();
        let log = log_dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(BINARY)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &address.to_string(), "--durability", "flush"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut server = Server { child, address, log };
        server.wait_healthy();
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Ok(answer) = call(self.address, "GET", "/healthz", None, None) {
                assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                assert_eq!(answer.json()["status"], "ok");
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited before answering ({status}): {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "the server did not answer /healthz: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        call(self.address, method, path, token, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; server log: {}", self.log_text()))
    }

    pub(crate) fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None)
    }

    pub(crate) fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(token), Some(body))
    }

    /// SIGKILL: no chance to flush or close anything.
    fn kill(mut self) -> ExitStatus {
        // `Child::kill` sends SIGKILL on unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {}", self.child.id());
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn verify(data: &Path) -> (ExitStatus, String) {
    let output = Command::new(BINARY).args(["verify", "--data"]).arg(data).stdin(Stdio::null()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}

/// The seed scenario, then acknowledged starts under load survive a SIGKILL.
#[test]
fn the_binary_survives_a_kill_under_load_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(&data);
    let service = tokens.create(Grant::Service { name: "e2e".into() }).unwrap().0;
    let u1 = tokens.create(Grant::Actor { actor_id: "u1".into() }).unwrap().0;

    let server = Server::start(&data, logs.path(), "first");
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
    let server = Server::start(&data, logs.path(), "second");
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
    let (status, report) = verify(&data);
    assert!(status.success(), "opledger verify after the restart: {status}: {report}");
}

/// SIGTERM: in-flight work finishes, the process exits 0, the log verifies.
#[test]
fn sigterm_stops_the_binary_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let service = TokenStore::new(&data).create(Grant::Service { name: "e2e".into() }).unwrap().0;
    let server = Server::start(&data, logs.path(), "graceful");
    let setup = json!({"changed_by": {"kind": "system"}, "changes": fixture_changes()});
    server.post("/v1/authority", &service, &setup).expect(200);
    let run = server.post("/v1/runs", &service, &start_body("report", "t1", actor("u1"))).expect(201);
    let run_id = run["run"]["id"].as_str().unwrap().to_owned();
    let health = server.call("GET", "/healthz", None, None).expect(200);
    let head: u64 = health["head"].as_str().unwrap().split(':').next().unwrap().parse().unwrap();

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let (verified, report) = verify(&data);
    assert!(verified.success(), "{report}");
    assert!(report.contains(&format!("checked {head} events")), "{report}");

    // The run is there after a restart.
    let server = Server::start(&data, logs.path(), "after");
    let detail = server.get(&format!("/v1/runs/{run_id}"), &service).expect(200);
    assert_eq!(detail["run"]["status"], "queued");
    assert_eq!(server.terminate().code(), Some(0));
}
