//! schemathesis (PyPI) against the real binary: `opledger serve` on a
//! fresh data directory, a service token from `opledger token create`,
//! authority and runs in every state seeded over the API, then
//! `schemathesis run URL/openapi.json` over every operation of the
//! document with three checks: `not_a_server_error` (no 5xx),
//! `response_schema_conformance` (each answer valid against the documented
//! schema) and `status_code_conformance` (each status documented). Any
//! failure fails the test; schemathesis' summary (the number of cases it
//! ran) is printed either way.
//!
//! All four phases run: `examples`, `coverage` and `fuzzing` per operation,
//! then `stateful`, which follows the document's links (a start's run is
//! begun, a begin's attempt is reported on and completed:
//! `tools/src/server/openapi/links.rs`) with the values of real answers.
//! The stateful phase generates positive data only, so its chains are made
//! of requests the server takes; the other phases cover invalid data. A
//! configuration file binds the body fields naming a tenant, an operation
//! type, an actor or a connection to the seeded ones part of the time, so
//! starts are accepted and the chains reach `begin` and `complete`.
//!
//! Reproducible: a fixed `--seed` and no example database (nothing carried
//! over from an earlier run). schemathesis 4's `--generation-deterministic`
//! is not used: it ignores `--seed` ("Seed: not used in the deterministic
//! mode") and, in this version, finds the same cases with a fixed seed.
//! The stateful phase still picks some link values at random, so two runs
//! may differ in a few steps, never in the checks.
//!
//! schemathesis is required, not optional: without it the test fails and
//! says how to install it (`bash scripts/test` does, pinned), since a
//! skipped test would let the document and the server drift apart unseen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common {
    pub mod raw_http;
    pub mod server_process;
}

use common::server_process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");
/// The version `scripts/test` installs; another may generate other cases.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// The seed of every run: the same cases each time.
const SEED: &str = "20240613";
/// Cases per operation in the examples, coverage and fuzzing phases.
const MAX_EXAMPLES: &str = "20";
/// Scenarios of the stateful phase (each a chain of linked calls).
const STATEFUL_SCENARIOS: u32 = 60;
/// The whole schemathesis run (about 1 minute on 2 cores against a debug
/// binary); past it the run is killed and the test fails.
const RUN_BUDGET: Duration = Duration::from_secs(180);
/// A bound on each request schemathesis sends (the event stream never
/// ends on its own: schemathesis reads it until this bound).
const SCHEMATHESIS_REQUEST_TIMEOUT: &str = "5";
/// A bound on each request the test itself sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The checks of every answer.
const CHECKS: &str = "not_a_server_error,response_schema_conformance,status_code_conformance";

/// The seeded ids the generated bodies are bound to, part of the time.
const TENANT: &str = "t1";
const OPERATION_TYPE: &str = "report_export";
const ACTOR: &str = "u1";
const CONNECTION: &str = "c1";

/// w1/t1 with u1 and u2 as members; `report_export` (any number at a time,
/// system authority allowed) and the provider-backed `inventory_sync`.
fn authority() -> Value {
    json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": [
        {"type": "workspace_registered", "workspace_id": "w1"},
        {"type": "tenant_registered", "tenant_id": TENANT, "workspace_id": "w1", "lifecycle": "active"},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": ACTOR},
        {"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "u2"},
        {"type": "tenant_member_added", "tenant_id": TENANT, "actor_id": ACTOR},
        {"type": "tenant_member_added", "tenant_id": TENANT, "actor_id": "u2"},
        {"type": "capability_granted", "tenant_id": TENANT, "actor_id": ACTOR, "capability": "reports.export"},
        {"type": "capability_granted", "tenant_id": TENANT, "actor_id": ACTOR, "capability": "tenant.sync"},
        {"type": "capability_granted", "tenant_id": TENANT, "actor_id": ACTOR, "capability": "operations.view"},
        {"type": "provider_connection_registered", "connection_id": CONNECTION, "tenant_id": TENANT, "status": "ready"},
        {"type": "default_provider_connection_set", "tenant_id": TENANT, "connection_id": CONNECTION},
        {"type": "operation_type_registered", "operation_type": OPERATION_TYPE,
         "required_capability": "reports.export", "provider_backed": false, "writes": false,
         "system_authority_allowed": true, "max_attempts": 3},
        {"type": "operation_type_registered", "operation_type": "inventory_sync", "required_capability": "tenant.sync",
         "provider_backed": true, "writes": false, "system_authority_allowed": true, "max_attempts": 3}
    ]})
}

/// `schemathesis.toml`: the body and query fields naming seeded things
/// take a seeded value half of the time, and the stateful phase's budget.
fn config_file() -> String {
    format!(
        r#"[dictionaries]
tenants = {{ values = ["{TENANT}"] }}
operation_types = {{ values = ["{OPERATION_TYPE}"] }}
actors = {{ values = ["{ACTOR}"] }}
connections = {{ values = ["{CONNECTION}"] }}

[parameters]
"body.tenant_id" = {{ dictionary = "tenants", probability = 0.5 }}
"body.operation_type" = {{ dictionary = "operation_types", probability = 0.5 }}
"body.initiator.id" = {{ dictionary = "actors", probability = 0.5 }}
"body.provider_connection_id" = {{ dictionary = "connections", probability = 0.5 }}
"query.tenant_id" = {{ dictionary = "tenants", probability = 0.5 }}
"query.actor_id" = {{ dictionary = "actors", probability = 0.5 }}

[phases.stateful.generation]
mode = "positive"
max-examples = {STATEFUL_SCENARIOS}
"#
    )
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `schemathesis ARGS…` started; fails the test clearly when there is none.
fn spawn_schemathesis(args: &[&str], cwd: &Path) -> Child {
    let spawned = Command::new("schemathesis")
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "schemathesis is not on PATH: this test runs it against the server; install it with \
             `pip install schemathesis=={SCHEMATHESIS_VERSION}` (bash scripts/test does)"
        ),
        Err(error) => panic!("schemathesis could not be started: {error}"),
    }
}

/// Waits for `child` until `budget` is spent, then kills it; its output
/// either way, and whether it ended in time.
fn wait_within(mut child: Child, budget: Duration) -> (Output, bool) {
    // Read both pipes on threads so a full pipe never stalls the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + budget;
    let (status, in_time): (ExitStatus, bool) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, true);
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            break (child.wait().unwrap(), false);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }, in_time)
}

/// schemathesis' closing summary: from its `SUMMARY` rule to the end.
fn summary(stdout: &str) -> &str {
    stdout.find("SUMMARY").and_then(|at| stdout[..at].rfind('\n')).map_or(stdout, |line| &stdout[line + 1..])
}

/// The number after `label` on its line of the summary (`Tested: 31`,
/// `2208 generated`).
fn count_after(summary: &str, label: &str) -> Option<u64> {
    summary.lines().find_map(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(label) {
            return rest.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
        }
        let (number, rest) = line.split_once(' ')?;
        rest.starts_with(label).then(|| number.parse().ok()).flatten()
    })
}

/// The document's own route, which schemathesis loads and does not test.
const DOCUMENT_PATH: &str = "/openapi.json";

/// The operations of the served document that schemathesis tests.
fn operation_count(server: &ServerProcess) -> u64 {
    let document = server.call("GET", DOCUMENT_PATH, None, None).expect(200);
    let methods = ["get", "post", "put", "patch", "delete"];
    let paths = document["paths"].as_object().unwrap();
    let tested = paths.iter().filter(|(path, _)| *path != DOCUMENT_PATH);
    tested.map(|(_, item)| methods.iter().filter(|m| item.get(**m).is_some()).count() as u64).sum()
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

fn start(server: &ServerProcess, token: &str, body: Value) -> Value {
    server.post("/v1/runs", token, &body).json()
}

/// Runs in every state, so reads, explanations, audit entries and
/// notifications have real rows: queued, running, succeeded, failed and
/// requeued, cancelled, and blocked (a start by a non-member).
fn seed(server: &ServerProcess, token: &str) {
    server.post("/v1/authority", token, &authority()).expect(200);
    let report = |key: &str| {
        json!({"operation_type": OPERATION_TYPE, "tenant_id": TENANT,
               "initiator": {"kind": "actor", "id": ACTOR}, "dedupe_key": key})
    };
    let id = |answer: &Value| answer["run"]["id"].as_str().unwrap().to_owned();
    let mut runs = Vec::new();
    for key in ["queued", "running", "succeeded", "requeued", "cancelled"] {
        let answer = start(server, token, report(key));
        assert_eq!(answer["result"], "accepted", "{answer}");
        runs.push(id(&answer));
    }
    for run in &runs[1..4] {
        server.post(&format!("/v1/runs/{run}/begin"), token, &json!({})).expect(200);
    }
    let complete = |run: &str, body: Value| server.post(&format!("/v1/runs/{run}/complete"), token, &body).expect(200);
    complete(&runs[2], json!({"outcome": "succeeded", "summary_counts": {"total": 2, "processed": 2}, "attempt": 1}));
    complete(
        &runs[3],
        json!({"outcome": "failed", "retryable": true, "failure": {"message": "timeout"}, "attempt": 1}),
    );
    let cancel = json!({"cancelled_by": {"kind": "actor", "id": "u-admin"}, "reason": "not needed"});
    server.post(&format!("/v1/runs/{}/cancel", runs[4]), token, &cancel).expect(200);
    let stranger = json!({"operation_type": OPERATION_TYPE, "tenant_id": TENANT,
                          "initiator": {"kind": "actor", "id": "u-stranger"}});
    assert_eq!(start(server, token, stranger)["result"], "blocked");
    let scheduled = json!({"operation_type": "inventory_sync", "tenant_id": TENANT, "initiator": {"kind": "system"}});
    assert_eq!(start(server, token, scheduled)["result"], "accepted");
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        ServerProcess::start(BINARY, &data, &["--durability", "flush"], dir.path().join("server.log"), REQUEST_TIMEOUT);
    let token = service_token(&data, "schemathesis");
    seed(&server, &token);
    let operations = operation_count(&server);

    let version = wait_within(spawn_schemathesis(&["--version"], dir.path()), REQUEST_TIMEOUT).0;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert!(
        version.ends_with(&format!("version {SCHEMATHESIS_VERSION}")),
        "schemathesis {SCHEMATHESIS_VERSION} is the pinned version (scripts/test installs it); found `{version}`"
    );

    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, config_file()).unwrap();
    let url = format!("http://{}{DOCUMENT_PATH}", server.address);
    let header = format!("Authorization: Bearer {token}");
    let config = config.to_str().unwrap();
    let args = [
        "--config-file",
        config,
        "run",
        &url,
        "--header",
        &header,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        SCHEMATHESIS_REQUEST_TIMEOUT,
        "--no-color",
    ];
    let started = Instant::now();
    let (output, in_time) = wait_within(spawn_schemathesis(&args, dir.path()), RUN_BUDGET);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = summary(&stdout);
    assert!(
        in_time,
        "schemathesis did not finish within {RUN_BUDGET:?}: {}\n--- server log\n{}",
        text(&output),
        server.log_text()
    );
    assert!(output.status.success(), "schemathesis failed: {}\n--- server log\n{}", text(&output), server.log_text());

    // Not vacuous: every operation was tested, with many cases, and
    // the stateful phase followed links.
    assert_eq!(count_after(report, "Tested:"), Some(operations), "every operation tested: {report}");
    let cases = count_after(report, "generated").unwrap_or(0);
    assert!(cases >= operations * 10, "{cases} cases for {operations} operations: {report}");
    let covered = stdout.lines().find(|line| line.contains("API Links:")).unwrap_or_default();
    eprintln!("schemathesis, {:.0} s; stateful {}\n{report}", elapsed.as_secs_f64(), covered.trim());
    let links: u64 =
        covered.split("API Links:").nth(1).and_then(|rest| rest.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    assert!(links > 0, "the stateful phase followed links: `{covered}`\n{stdout}");
}
