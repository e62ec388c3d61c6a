//! The read commands for tools and auditors, run as the real binary on a
//! data directory made with the ledger API (then closed), and against a
//! server started on it: runs, audit (as of a position, JSON Lines export),
//! notifications, events, rebuild, export and import into a new directory
//! (an identical log that verifies), and reads of a directory a running
//! server holds and writes (its read models, read-only). And `serve` whose
//! log's database is out of reach at start: an exit naming the cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal, WorkerOutcome};
use opledger::domain::sequencer::StartAnswer;
use opledger::domain::start_gate::StartRequest;
use opledger::{Durability, LogOptions};
use serde_json::{json, Value};
use uuid::Uuid;

fn s(text: &str) -> String {
    text.to_owned()
}

/// A data directory holding a small history, and what the tests look for in it.
struct Fixture {
    _temp: tempfile::TempDir,
    data: PathBuf,
    /// u1's inventory_sync on t1: succeeded; its notification is read.
    succeeded: Uuid,
    /// u1's inventory_sync on t2: failed; its notification is unread.
    failed: Uuid,
    /// A scheduled entra_group_sync on t1: blocked at start (no notification).
    blocked: Uuid,
    /// The last position of the authority changes.
    authority_last: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let temp = tempfile::tempdir().unwrap();
        let built = temp.path().join("built");
        let options = LogOptions { durability: Durability::Flush, ..LogOptions::default() };
        let ledger = Ledger::open(built.join("log"), options).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (succeeded, failed, blocked, authority_last) = runtime.block_on(async {
            let (_, authority_last) = ledger.record_authority(Principal::actor("admin"), authority()).await.unwrap();
            let succeeded = started(&ledger, "t1", "inventory_sync", Principal::actor("u1")).await;
            ledger.begin(succeeded).await.unwrap();
            ledger.progress(succeeded, json!({"total": 10, "processed": 10})).await.unwrap();
            ledger.complete(succeeded, completion(WorkerOutcome::Succeeded)).await.unwrap();
            let failed = started(&ledger, "t2", "inventory_sync", Principal::actor("u1")).await;
            ledger.begin(failed).await.unwrap();
            ledger.complete(failed, completion(WorkerOutcome::Failed)).await.unwrap();
            let answer = ledger.start(request("t1", "entra_group_sync", Principal::System)).await.unwrap();
            assert!(matches!(answer, StartAnswer::Blocked(_)), "{answer:?}");
            ledger.mark_notification_read("u1", succeeded).await.unwrap();
            (succeeded, failed, answer.run().id, authority_last)
        });
        ledger.log().close();
        drop(ledger);
        // sled may release its directory lock only once deferred garbage is
        // collected, which other test threads can delay; a copy of the
        // closed directory has no lock at all.
        let data = temp.path().join("data");
        copy_dir(&built, &data);
        Fixture { _temp: temp, data, succeeded, failed, blocked, authority_last }
    }

    fn dir(&self) -> &str {
        self.data.to_str().unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), &target).unwrap()),
        }
    }
}

fn authority() -> Vec<C> {
    let mut changes = vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
    ];
    for (tenant, connection) in [("t1", "c1"), ("t2", "c2")] {
        changes.extend([
            C::TenantRegistered { tenant_id: s(tenant), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::TenantMemberAdded { tenant_id: s(tenant), actor_id: s("u1") },
            C::CapabilityGranted { tenant_id: s(tenant), actor_id: s("u1"), capability: s("tenant.sync") },
            C::ProviderConnectionRegistered {
                connection_id: s(connection),
                tenant_id: s(tenant),
                status: ConnectionStatus::Ready,
            },
            C::DefaultProviderConnectionSet { tenant_id: s(tenant), connection_id: s(connection) },
        ]);
    }
    for (operation_type, system) in [("inventory_sync", true), ("entra_group_sync", false)] {
        changes.push(C::OperationTypeRegistered(OperationTypeSpec {
            operation_type: s(operation_type),
            required_capability: s("tenant.sync"),
            provider_backed: true,
            writes: false,
            system_authority_allowed: system,
            max_attempts: 1,
            lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
        }));
    }
    changes
}

fn request(tenant: &str, operation_type: &str, initiator: Principal) -> StartRequest {
    StartRequest {
        operation_type: s(operation_type),
        tenant_id: s(tenant),
        initiator,
        provider_connection_id: None,
        context: json!({"note": "ünïcödé \"quoted\" </script>"}),
        dedupe_key: None,
    }
}

async fn started(ledger: &Ledger, tenant: &str, operation_type: &str, initiator: Principal) -> Uuid {
    let answer = ledger.start(request(tenant, operation_type, initiator)).await.unwrap();
    assert!(matches!(answer, StartAnswer::Accepted(_)), "{answer:?}");
    answer.run().id
}

fn completion(outcome: WorkerOutcome) -> Completion {
    let failure = (outcome == WorkerOutcome::Failed)
        .then(|| FailureReport { code: Some(s("provider_error")), message: s("upstream broke") });
    Completion { outcome, summary_counts: None, failure, retryable: Some(false) }
}

/// Runs the binary; logs at warn so stderr holds only what matters.
fn opledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opledger"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("OPLEDGER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary and expects success; returns stdout.
#[track_caller]
fn ok(args: &[&str]) -> String {
    let output = opledger(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "opledger {args:?} failed ({}):\n{stderr}\n{stdout}", output.status);
    stdout.into_owned()
}

#[track_caller]
fn ok_json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("opledger {args:?}: not JSON ({e}):\n{stdout}"))
}

#[track_caller]
fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line ({e}): {line}"))).collect()
}

fn run_ids(page: &Value) -> Vec<String> {
    page["runs"].as_array().unwrap().iter().map(|run| run["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn reads_on_a_data_directory() {
    let fixture = Fixture::new();
    let dir = fixture.dir();

    let page = ok_json(&["runs", "list", "--data", dir, "--json"]);
    let ids = [fixture.blocked, fixture.failed, fixture.succeeded].map(|id| id.to_string());
    assert_eq!(run_ids(&page), ids, "newest first");
    assert_eq!(page["next_cursor"], Value::Null);
    let blocked = ok_json(&["runs", "list", "--data", dir, "--outcome", "blocked", "--json"]);
    assert_eq!(run_ids(&blocked), [fixture.blocked.to_string()]);
    let first = ok_json(&["runs", "list", "--data", dir, "--tenant", "t1", "--limit", "1", "--json"]);
    assert_eq!(run_ids(&first), [fixture.blocked.to_string()]);
    let cursor = first["next_cursor"].as_str().expect("a cursor to the second page");
    let second =
        ok_json(&["runs", "list", "--data", dir, "--tenant", "t1", "--limit", "1", "--cursor", cursor, "--json"]);
    assert_eq!(run_ids(&second), [fixture.succeeded.to_string()]);
    let summary = ok_json(&["runs", "list", "--data", dir, "--summary", "--json"]);
    assert_eq!((summary["total"].as_u64(), summary["by_outcome"]["blocked"].as_u64()), (Some(3), Some(1)), "{summary}");
    let text = ok(&["runs", "list", "--data", dir, "--initiator", "u1"]);
    assert!(text.starts_with("RUN ") && text.contains("failed") && text.ends_with("2 runs\n"), "{text}");
    let bad = opledger(&["runs", "list", "--data", dir, "--status", "sleeping"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("sleeping"));

    let succeeded = fixture.succeeded.to_string();
    let detail = ok_json(&["runs", "show", &succeeded, "--data", dir, "--json"]);
    assert_eq!(
        (detail["run"]["id"].as_str(), detail["run"]["outcome"].as_str()),
        (Some(&*succeeded), Some("succeeded"))
    );
    let types: Vec<&str> = detail["timeline"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"run_queued"));
    assert_eq!(types.last(), Some(&"run_completed"));
    let text = ok(&["runs", "show", &succeeded, "--data", dir]);
    assert!(text.contains("inventory_sync on tenant t1 (workspace w1)") && text.contains("run_completed"), "{text}");
    let unknown = opledger(&["runs", "show", &Uuid::nil().to_string(), "--data", dir]);
    assert_eq!(unknown.status.code(), Some(3));

    let as_of = fixture.authority_last.to_string();
    let cut = ok_json(&["audit", "--data", dir, "--as-of", &as_of, "--limit", "1000", "--json"]);
    let positions: Vec<u64> =
        cut["entries"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, (1..=fixture.authority_last).rev().collect::<Vec<_>>(), "the authority changes only");
    let all = ok_json(&["audit", "--data", dir, "--limit", "1000", "--json"]);
    let all = all["entries"].as_array().unwrap().clone();
    assert!(all.len() > positions.len());
    let text = ok(&["audit", "--data", dir, "--run", &fixture.failed.to_string()]);
    assert!(text.contains("run_completed") && text.contains("actor u1"), "{text}");

    let export = json_lines(&ok(&["audit", "--data", dir, "--export", "jsonl"]));
    let mut newest_first = export.clone();
    newest_first.reverse();
    assert_eq!(newest_first, all, "the export holds every entry, oldest first");
    let run_export = json_lines(&ok(&["audit", "--data", dir, "--export", "jsonl", "--run", &succeeded]));
    assert!(!run_export.is_empty() && run_export.iter().all(|e| e["run_id"] == json!(succeeded)));

    let inbox = ok_json(&["notifications", "--data", dir, "--actor", "u1", "--json"]);
    let runs: Vec<&str> =
        inbox["notifications"].as_array().unwrap().iter().map(|n| n["run_id"].as_str().unwrap()).collect();
    assert_eq!(runs, [fixture.failed.to_string(), succeeded.clone()]);
    assert_eq!(inbox["unread"], 1);
    let unread = ok_json(&["notifications", "--data", dir, "--actor", "u1", "--unread", "--json"]);
    assert_eq!(unread["notifications"].as_array().unwrap().len(), 1);
    let text = ok(&["notifications", "--data", dir, "--actor", "u1"]);
    assert!(text.starts_with("2 notifications for u1, 1 unread in all"), "{text}");
    let newest = ok(&["notifications", "--data", dir, "--actor", "u1", "--limit", "1"]);
    let cursor = newest.split("Older notifications: --cursor ").nth(1).expect("an older page follows").trim();
    let older = ok_json(&["notifications", "--data", dir, "--actor", "u1", "--cursor", cursor, "--json"]);
    assert_eq!(older["notifications"][0]["run_id"], json!(succeeded), "the older page: {older}");
    assert_eq!(older["next_cursor"], Value::Null, "the last page");

    let events = json_lines(&ok(&["events", "tail", "--from", "1", "--data", dir]));
    let head: u64 = ok(&["head", "--data", dir]).trim().split(':').next().unwrap().parse().unwrap();
    let positions: Vec<u64> = events.iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e["hash"].is_string() && e["schema_version"].is_u64() && e["data"].is_object()));
    let tail = json_lines(&ok(&["events", "tail", "--from", &head.to_string(), "--data", dir]));
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["type"], "notification_read");
}

#[test]
fn rebuild_recomputes_every_projection_to_the_same_answers() {
    let fixture = Fixture::new();
    let dir = fixture.dir();
    let before = ok(&["runs", "list", "--data", dir, "--json"]);
    let audit_before = ok(&["audit", "--data", dir, "--export", "jsonl"]);
    let text = ok(&["rebuild", "--data", dir]);
    assert!(text.starts_with("rebuilt 3 projections (monitoring, audit, notifications) from "), "{text}");
    let report = ok_json(&["rebuild", "--data", dir, "--json"]);
    assert_eq!(report["projections"], json!(["monitoring", "audit", "notifications"]));
    assert_eq!(ok(&["runs", "list", "--data", dir, "--json"]), before);
    assert_eq!(ok(&["audit", "--data", dir, "--export", "jsonl"]), audit_before);
}

#[test]
fn export_then_import_restores_an_identical_log() {
    let fixture = Fixture::new();
    let dir = fixture.dir();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("ledger.jsonl");
    let file_arg = file.to_str().unwrap();
    let summary = ok(&["export", "--data", dir, "--output", file_arg]);
    let head = ok(&["head", "--data", dir]);
    assert!(summary.contains(head.trim()), "{summary}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported, ok(&["export", "--data", dir]), "the same bytes to a file and to stdout");
    assert_eq!(exported, ok(&["events", "tail", "--data", dir]), "an export is the whole tail");

    let restored = work.path().join("restored");
    let restored_arg = restored.to_str().unwrap();
    let text = ok(&["import", "--data", restored_arg, "--input", file_arg]);
    assert!(text.contains(&format!("head {}", head.trim())), "{text}");
    assert_eq!(ok(&["head", "--data", restored_arg]), head, "the same head digest");
    let verified = opledger(&["verify", "--data", restored_arg]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    // The text report names the re-evaluated decisions, as --json does.
    let report = ok_json(&["verify", "--data", restored_arg, "--json"]);
    let decisions = report["decisions_checked"].as_u64().unwrap();
    assert!(decisions >= 2, "both begins were decided: {report}");
    let text = String::from_utf8_lossy(&verified.stdout);
    let expected = format!(
        "re-evaluated {decisions} legitimacy decisions and {} start decisions",
        report["start_decisions_checked"]
    );
    assert!(text.contains(&expected), "{expected:?} missing from {text}");
    assert_eq!(ok(&["export", "--data", restored_arg]), exported, "the restored log exports the same bytes");
    assert_eq!(ok(&["runs", "list", "--data", restored_arg, "--json"]), ok(&["runs", "list", "--data", dir, "--json"]));

    let again = opledger(&["import", "--data", restored_arg, "--input", file_arg]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("is not empty"), "{stderr}");

    // A tampered payload no longer hashes to the exported hash: named by position.
    let tampered = exported.replacen("upstream broke", "upstream fine", 1);
    assert_ne!(tampered, exported);
    let bad_file = work.path().join("tampered.jsonl");
    std::fs::write(&bad_file, tampered).unwrap();
    let bad = opledger(&[
        "import",
        "--data",
        work.path().join("bad").to_str().unwrap(),
        "--input",
        bad_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("position ") && stderr.contains("differs from the exported hash"));
}

/// The fixture served by a running server, a service token, and a run
/// u1 started on t1 over the API (queued).
fn served_with_a_queued_run() -> (Fixture, Server, String, String) {
    let fixture = Fixture::new();
    let created = ok(&["token", "create", "--data", fixture.dir(), "--service", "operator"]);
    let token = created.lines().last().unwrap().trim().to_owned();
    let server = Server::start(&fixture.data);
    let client = opledger_tools::cmd::remote::Remote::new(&server.url, &token).unwrap();
    let start =
        json!({"operation_type": "inventory_sync", "tenant_id": "t1", "initiator": {"kind": "actor", "id": "u1"}});
    let answer: Value = client.post("/v1/runs", &start).unwrap();
    let run = answer["run"]["id"].as_str().unwrap().to_owned();
    (fixture, server, token, run)
}

/// While a server holds the directory and writes to it, the read models'
/// commands read its SQLite file (read-only); the commands that need the
/// log itself say how to reach it instead.
#[test]
fn reads_on_a_directory_a_running_server_holds_and_writes() {
    let (fixture, server, _token, written) = served_with_a_queued_run();
    let data = ["--data", fixture.dir()];

    // The server applies its write to the read models right after
    // acknowledging it; the tool sees it once that page is committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = ok_json(&[&["runs", "list", "--json"][..], &data].concat());
        let ids: Vec<&str> = listed["runs"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
        if ids.contains(&written.as_str()) {
            break listed;
        }
        assert!(Instant::now() < deadline, "the server's write never reached its read models: {ids:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["runs"].as_array().unwrap().len(), 4, "the three of the fixture and the new one");
    let shown = ok_json(&[&["runs", "show", &written, "--json"][..], &data].concat());
    assert_eq!(shown["run"]["status"], json!("queued"));
    let types: Vec<&str> = shown["timeline"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"run_queued"), "{types:?}");
    let audit = ok_json(&[&["audit", "--run", &written, "--json"][..], &data].concat());
    assert!(!audit["entries"].as_array().unwrap().is_empty(), "{audit}");
    let export = ok(&[&["audit", "--export", "jsonl"][..], &data].concat());
    assert!(export.lines().count() > 10 && export.contains(&written));
    let inbox = ok_json(&[&["notifications", "--actor", "u1", "--json"][..], &data].concat());
    assert_eq!(inbox["unread"], json!(1));

    let tail = opledger(&[&["events", "tail"][..], &data].concat());
    let expected = format!(
        "the data directory {} is in use by a running server; pass --url and --token to query it",
        fixture.dir()
    );
    assert!(!tail.status.success() && String::from_utf8_lossy(&tail.stderr).contains(&expected));
    let rebuild = opledger(&["rebuild", "--data", fixture.dir()]);
    assert!(!rebuild.status.success() && String::from_utf8_lossy(&rebuild.stderr).contains("stop the server"));
    drop(server);
}

/// A server on the fixture, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_opledger"))
            .args(["serve", "--data", data.to_str().unwrap(), "--listen", &listen, "--durability", "flush"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, url: format!("http://{listen}") };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn with_url_and_token_the_server_gives_the_same_answers() {
    let fixture = Fixture::new();
    let dir = fixture.dir();
    let failed = fixture.failed.to_string();
    let reads: Vec<Vec<&str>> = vec![
        vec!["runs", "list", "--json"],
        vec!["runs", "list", "--tenant", "t1", "--outcome", "blocked", "--json"],
        vec!["runs", "list", "--summary", "--json"],
        vec!["runs", "list", "--tenant", "t1", "--status", "completed", "--summary"],
        vec!["runs", "show", &failed, "--json"],
        vec!["runs", "show", &failed],
        vec!["audit", "--as-of", "5", "--json"],
        vec!["audit", "--export", "jsonl"],
        vec!["notifications", "--actor", "u1", "--json"],
        vec!["events", "tail", "--from", "2"],
        vec!["export"],
        vec!["verify"],
        vec!["verify", "--json"],
        vec!["head"],
        vec!["head", "--json"],
        vec!["explain", &failed],
        vec!["explain", &failed, "--json"],
        vec!["authority"],
        vec!["authority", "--json"],
        vec!["authority", "--as-of", "5", "--tenant", "t1", "--actor", "u1", "--json"],
    ];
    let local: Vec<String> = reads.iter().map(|args| ok(&[&args[..], &["--data", dir]].concat())).collect();
    let created = ok(&["token", "create", "--data", dir, "--service", "auditor"]);
    let token = created.lines().last().unwrap().trim().to_owned();

    let server = Server::start(&fixture.data);
    let remote = |args: &[&str]| ok(&[args, &["--url", &server.url, "--token", &token]].concat());
    for (args, local) in reads.iter().zip(&local) {
        assert_eq!(&remote(args), local, "opledger {args:?} differs between --data and --url");
    }
    let unknown = opledger(&["runs", "show", &Uuid::nil().to_string(), "--url", &server.url, "--token", &token]);
    assert_eq!(unknown.status.code(), Some(3));
    let refused = opledger(&["runs", "list", "--url", &server.url, "--token", "not-a-token"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("401"), "{stderr}");
    let text = remote(&["runs", "show", &failed]);
    assert!(text.contains("failure     provider_error: upstream broke"), "{text}");
    let authority = remote(&["authority"]);
    assert!(authority.starts_with("authority as of position "), "{authority}");
    assert!(authority.contains("tenant t1     u1     tenant.sync"), "{authority}");
    let explained = remote(&["explain", &failed]);
    assert!(explained.contains("begin decision, attempt 1") && explained.contains("ok   capability:"), "{explained}");
    let unknown = opledger(&["explain", &Uuid::nil().to_string(), "--url", &server.url, "--token", &token]);
    assert_eq!(unknown.status.code(), Some(3));
    // The timeline's summary column is filled over --url too.
    for summary in ["  queued\n", "  legitimacy evaluated: allowed\n", "  started attempt 1\n", "  completed: failed"] {
        assert!(text.contains(summary), "{summary:?} missing from\n{text}");
    }
}

/// `opledger runs cancel RUN --url … --token …` cancels a queued run on the
/// running server; a second cancel is refused; without --url it says why.
#[test]
fn runs_cancel_over_url_cancels_a_queued_run() {
    let (fixture, server, token, run) = served_with_a_queued_run();
    let url = ["--url", server.url.as_str(), "--token", token.as_str()];

    let text = ok(&[&["runs", "cancel", &run, "--by", "ops", "--reason", "not needed"][..], &url].concat());
    assert_eq!(text, format!("run {run} is completed: cancelled\n"));
    let shown = ok_json(&[&["runs", "show", &run, "--json"][..], &url].concat());
    assert_eq!((&shown["run"]["outcome"], &shown["run"]["cancel_reason"]), (&json!("cancelled"), &json!("not needed")));
    assert_eq!(shown["run"]["cancelled_by"], json!({"kind": "actor", "id": "ops"}));

    let again = opledger(&[&["runs", "cancel", &run][..], &url].concat());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("409"), "{stderr}");
    let local = opledger(&["runs", "cancel", &run, "--data", fixture.dir()]);
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success() && stderr.contains("needs --url and --token"), "{stderr}");
}

/// A node started while its log's database is out of reach does not wait
/// unready: it exits at once with status 2 naming the cause, for its
/// supervisor to start it again (the systemd unit's `Restart=on-failure`).
#[test]
fn serve_with_its_log_database_out_of_reach_exits_with_status_2_naming_the_cause() {
    let data = tempfile::tempdir().unwrap();
    let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = format!("postgres://postgres@127.0.0.1:{nobody}/opledger?connect_timeout=5");
    let started = Instant::now();
    let output = opledger(&[
        "serve",
        "--data",
        data.path().to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--log",
        &log,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the log's database cannot be reached") && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "at once, not after waiting: {:?}", started.elapsed());
}
