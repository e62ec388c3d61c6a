//! A full disk, for real: `opledger serve` on a 24 MiB tmpfs (mounting
//! needs root; elsewhere the test says why it is skipped and returns),
//! filled with starts carrying ~4 KB contexts until the ledger stops.
//! Then no read hangs (503 `projection_unavailable` or 200 within a client
//! bound), `/readyz` and `/healthz` say 503 with a reason while `/livez`
//! says 200; once space is freed the same process takes writes again, and
//! every acknowledged start is still there (listed, and verified after a
//! clean stop).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opledger_tools::tokens::{Grant, TokenStore};
use serde_json::{json, Value};

mod common {
    pub mod raw_http;
    pub mod server_process;
}

use common::server_process::ServerProcess;

#[path = "../../tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");

/// The tmpfs: small enough to fill in seconds.
const TMPFS_SIZE: &str = "24m";
/// Written into the tmpfs before the server starts and removed to free
/// space: "the cause is gone".
const FILLER_BYTES: usize = 8 << 20;
/// Context bytes per start (the issue's ~4 KB).
const CONTEXT_BYTES: usize = 4000;
/// More starts than 24 MiB can hold: the ledger must stop before this.
const STARTS_MAX: usize = 20_000;
/// Any one request: a read that hangs fails the test at this bound.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to take writes again once space is freed
/// (its reopen backoff is capped far below).
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// `opledger serve` on the tmpfs, with a small page cache.
fn start_server(data: &Path, log: PathBuf) -> ServerProcess {
    ServerProcess::start(BINARY, data, &["--cache-mib", "8"], log, CLIENT_TIMEOUT)
}

/// SIGTERM, and a clean exit.
fn stop(server: ServerProcess) {
    let log = server.log_text();
    assert_eq!(server.terminate().code(), Some(0), "a clean stop: {log}");
}

fn authority() -> Value {
    json!({"changed_by": {"kind": "system"}, "changes": [
        {"type": "workspace_registered", "workspace_id": "w1"},
        {"type": "tenant_registered", "tenant_id": "t1", "workspace_id": "w1", "lifecycle": "active"},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "u1"},
        {"type": "tenant_member_added", "tenant_id": "t1", "actor_id": "u1"},
        {"type": "capability_granted", "tenant_id": "t1", "actor_id": "u1", "capability": "operations.view"},
        {"type": "operation_type_registered", "operation_type": "report", "required_capability": "tenant.sync",
         "provider_backed": false, "writes": false, "system_authority_allowed": true, "max_attempts": 3}]})
}

fn start(key: &str) -> Value {
    json!({"operation_type": "report", "tenant_id": "t1", "initiator": {"kind": "system"},
           "dedupe_key": key, "context": {"note": "x".repeat(CONTEXT_BYTES)}})
}

/// Every run id of t1, paging through the list.
fn listed(server: &ServerProcess, token: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut uri = "/v1/runs?tenant_id=t1&limit=500".to_owned();
    loop {
        let page = server.call("GET", &uri, Some(token), None);
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        ids.extend(page["runs"].as_array().unwrap().iter().map(|run| run["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/runs?tenant_id=t1&limit=500&cursor={cursor}"),
            None => return ids,
        }
    }
}

#[test]
fn a_full_disk_stops_writes_without_hanging_reads_and_the_server_recovers_by_itself() {
    let Some(tmpfs) = Tmpfs::with_filler(TMPFS_SIZE, FILLER_BYTES) else { return };
    let data = tmpfs.mount.join("data");
    let logs = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(&data);
    let service = tokens.create(Grant::Service { name: "disk".into() }).unwrap().0;
    let u1 = tokens.create(Grant::Actor { actor_id: "u1".into() }).unwrap().0;
    let server = start_server(&data, logs.path().join("serve.log"));
    let setup = server.call("POST", "/v1/authority", Some(&service), Some(&authority()));
    assert_eq!(setup.status, 200, "{}", setup.text());

    // Fill the disk until the ledger stops.
    let mut acknowledged = Vec::new();
    let stopped = (0..STARTS_MAX).find_map(|i| {
        let answer = server.call("POST", "/v1/runs", Some(&service), Some(&start(&format!("fill-{i}"))));
        match answer.status {
            201 => {
                acknowledged.push(answer.json()["run"]["id"].as_str().unwrap().to_owned());
                None
            }
            _ => Some(answer),
        }
    });
    let stopped = stopped.expect("the disk filled up before STARTS_MAX starts");
    assert_eq!(stopped.status, 503, "{}", stopped.text());
    assert_eq!(stopped.json()["error"]["code"], "ledger_stopped", "{}", stopped.text());
    eprintln!("disk: {} starts acknowledged before the disk filled", acknowledged.len());
    assert!(!acknowledged.is_empty());

    // With the disk still full: no read hangs; health tells the truth.
    let first = &acknowledged[0];
    let reads = [
        ("/v1/runs?tenant_id=t1".to_owned(), &service),
        (format!("/v1/runs/{first}"), &service),
        ("/admin/operations".to_owned(), &u1),
        ("/v1/audit".to_owned(), &service),
        ("/v1/notifications".to_owned(), &u1),
    ];
    for (uri, token) in &reads {
        let answer = server.call("GET", uri, Some(token), None);
        match answer.status {
            200 => {}
            503 if uri.starts_with("/admin/") => {}
            503 => assert_eq!(answer.json()["error"]["code"], "projection_unavailable", "{uri}: {}", answer.text()),
            other => panic!("{uri} answered {other}: {}", answer.text()),
        }
    }
    for path in ["/readyz", "/healthz"] {
        let answer = server.call("GET", path, None, None);
        assert_eq!(answer.status, 503, "{path} on a full disk: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["status"], "unavailable");
        assert!(body["reason"].is_string() && body["detail"].is_string(), "{body}");
    }
    assert_eq!(server.call("GET", "/livez", None, None).status, 200);
    let refused = server.call("POST", "/v1/runs", Some(&service), Some(&start("while-full")));
    assert_eq!(refused.status, 503, "{}", refused.text());

    // Free the space: the same process takes writes again by itself.
    std::fs::remove_file(tmpfs.filler()).unwrap();
    let deadline = Instant::now() + RECOVERY_WAIT;
    let after = loop {
        let answer = server.call("POST", "/v1/runs", Some(&service), Some(&start("after-recovery")));
        if answer.status == 201 || answer.status == 200 {
            break answer.json();
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(Instant::now() < deadline, "no write taken after space was freed: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(after["run"]["id"].is_string(), "{after}");
    let ready = server.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    let metrics = server.call("GET", "/metrics", Some(&service), None).text();
    let reopens = metrics.lines().find_map(|line| line.strip_prefix("opledger_store_reopens_total "));
    assert!(reopens.is_some_and(|count| count.trim() != "0"), "{metrics}");

    // Every acknowledged start is still there.
    let ids = listed(&server, &service);
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged starts missing after recovery: {missing:?}", missing.len());
    let detail = server.call("GET", &format!("/v1/runs/{first}"), Some(&service), None);
    assert_eq!(detail.status, 200, "{}", detail.text());
    stop(server);
    let verify = Command::new(BINARY).args(["verify", "--data"]).arg(&data).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success(), "opledger verify after the recovery: {report}");
}
