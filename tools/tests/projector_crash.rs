//! The read models survive a `kill -9` of the process applying them.
//!
//! A data directory whose read models are behind its log by tens of
//! thousands of events; `opledger runs list --data DIR` catches them up
//! (one SQLite transaction per page of events, checkpoint included) and is
//! SIGKILLed part way. After each kill:
//! - the file is exactly the fold of the log up to its checkpoint: equal,
//!   row for row, to a fresh fold of a copy of the log cut there;
//! - catching up from there gives the same rows as a rebuild.
//!
//! A rebuild killed part way leaves the live file as it was (it fills a
//! file of its own and renames it only when done).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::ledger::Ledger;
use opledger::domain::lifecycle::Completion;
use opledger::domain::model::{Lifecycle, OperationTypeSpec, Principal, WorkerOutcome};
use opledger::domain::start_gate::StartRequest;
use opledger::{Durability, Expectations, Log, LogOptions, NewEvent};
use opledger_projections::{store, Projector};

const KILL_ROUNDS: u64 = 4;
/// Authority events appended after the first projection, so that the
/// catch-up is long enough to be killed in the middle.
const LATER_WORKSPACES: usize = 24_000;
const RUN_CYCLES: usize = 400;
/// Rebuilds started until one is killed while it fills its file.
const REBUILD_KILL_ATTEMPTS_MAX: usize = 10;
const FILLED_BYTES_MIN: u64 = 256 * 1024;

fn s(text: &str) -> String {
    text.to_owned()
}

fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn world() -> Vec<C> {
    vec![
        C::WorkspaceRegistered { workspace_id: s("w1") },
        C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
        C::OperationTypeRegistered(OperationTypeSpec {
            operation_type: s("inventory_sync"),
            required_capability: s("tenant.sync"),
            provider_backed: false,
            writes: false,
            system_authority_allowed: true,
            max_attempts: 1,
            lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
        }),
    ]
}

/// Full run cycles (queued, evaluated, running, completed) by the system.
async fn cycles(ledger: &Ledger, count: usize) {
    for n in 0..count {
        let request = StartRequest {
            operation_type: s("inventory_sync"),
            tenant_id: s("t1"),
            initiator: Principal::System,
            provider_connection_id: None,
            context: serde_json::json!({ "n": n }),
            dedupe_key: None,
        };
        let run = ledger.start(request).await.unwrap().run().id;
        ledger.begin(run).await.unwrap();
        let outcome = if n % 3 == 0 { WorkerOutcome::Failed } else { WorkerOutcome::Succeeded };
        let completion = Completion { outcome, summary_counts: None, failure: None, retryable: Some(false) };
        ledger.complete(run, completion).await.unwrap();
    }
}

/// A data directory: a first stretch projected, then a long one not yet.
fn data_dir_behind(data: &Path) {
    let rt = runtime();
    let ledger = Ledger::open(data.join("log"), options()).unwrap();
    rt.block_on(async {
        ledger.record_authority(Principal::actor("admin"), world()).await.unwrap();
        cycles(&ledger, RUN_CYCLES / 2).await;
    });
    drop(Projector::open(Arc::clone(ledger.log()), opledger_projections::all()).unwrap());
    rt.block_on(async {
        let names: Vec<String> = (0..LATER_WORKSPACES).map(|n| format!("later-{n}")).collect();
        for chunk in names.chunks(opledger::domain::sequencer::AUTHORITY_BATCH_CHANGES_MAX) {
            let changes = chunk.iter().map(|name| C::WorkspaceRegistered { workspace_id: name.clone() }).collect();
            ledger.record_authority(Principal::System, changes).await.unwrap();
        }
        cycles(&ledger, RUN_CYCLES / 2).await;
    });
}

/// `opledger ARGS`, quiet, started.
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_opledger"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts `opledger ARGS` and SIGKILLs it after `after`. True when it was
/// still running at the kill.
fn kill_after(args: &[&str], after: Duration) -> bool {
    let mut child = spawn(args);
    std::thread::sleep(after);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// Starts `opledger ARGS` and SIGKILLs it once `file` holds some rows. True
/// when it was still running then (false: it finished first).
fn kill_once_visible(args: &[&str], file: &Path) -> bool {
    let mut child = spawn(args);
    let caught = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        // Part way into the load, not at the file's creation.
        if std::fs::metadata(file).is_ok_and(|m| m.len() >= FILLED_BYTES_MIN) {
            break child.try_wait().unwrap().is_none();
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    caught
}

fn file_rows(log_dir: &Path) -> (u64, Vec<String>) {
    let (reader, checkpoint) = store::open_read_only(log_dir).unwrap();
    (checkpoint.position, store::dump(&reader).unwrap())
}

/// A copy of the first `n` events of `log` (same ids, times and hashes).
fn cut_copy(log: &Log, n: u64, into: &Path) -> Arc<Log> {
    let copy = Arc::new(Log::open(into, options()).unwrap());
    let rt = runtime();
    let mut next = 1;
    while next <= n {
        let page = log.read(next, 1024).unwrap();
        let page: Vec<_> = page.into_iter().filter(|e| e.position <= n).collect();
        rt.block_on(async {
            let mut pending = Vec::new();
            for envelope in &page {
                let mut event = NewEvent::with_id(
                    envelope.id,
                    envelope.stream.clone(),
                    &envelope.event_type,
                    envelope.schema_version,
                    &envelope.payload,
                )
                .unwrap();
                event.payload = envelope.payload.clone();
                event.causation_id = envelope.causation_id;
                event.correlation_id = envelope.correlation_id;
                pending
                    .push(copy.submit_at(vec![event], Expectations::none(), Some(envelope.recorded_at)).await.unwrap());
            }
            for append in pending {
                append.wait().await.unwrap().unwrap();
            }
        });
        next += page.len() as u64;
    }
    assert_eq!(copy.head(), log.event(n).unwrap().map(|e| opledger::Head { position: n, hash: e.hash }).unwrap());
    copy
}

/// The rows a fresh fold of `log`'s first `n` events gives.
fn fold_of_cut(log: &Log, n: u64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let copy = cut_copy(log, n, dir.path());
    let projector = Projector::open(Arc::clone(&copy), opledger_projections::all()).unwrap();
    let rows = store::dump(&projector.reader().unwrap()).unwrap();
    drop(projector);
    rows
}

fn data(temp: &tempfile::TempDir) -> (PathBuf, String) {
    let data = temp.path().join("data");
    let text = data.to_str().unwrap().to_owned();
    (data, text)
}

#[test]
fn a_catch_up_killed_mid_page_leaves_the_fold_of_the_log_up_to_its_checkpoint() {
    let temp = tempfile::tempdir().unwrap();
    let (data, data_text) = data(&temp);
    data_dir_behind(&data);
    let log_dir = data.join("log");
    let head = Log::open(&log_dir, options()).unwrap().head().position;
    let (mut checkpoint, _) = file_rows(&log_dir);
    assert!(checkpoint > 0 && checkpoint < head, "the file is behind: {checkpoint} of {head}");
    let mut killed_mid_way = 0;
    for round in 0..KILL_ROUNDS {
        let after = Duration::from_millis(150 + 250 * round);
        let running = kill_after(&["runs", "list", "--data", &data_text, "--json"], after);
        let (position, rows) = file_rows(&log_dir);
        assert!(position >= checkpoint, "a checkpoint never goes back: {position} < {checkpoint}");
        checkpoint = position;
        if running && position < head {
            killed_mid_way += 1;
        }
        let log = Log::open(&log_dir, options()).unwrap();
        assert!(rows == fold_of_cut(&log, position), "round {round}: the file is not the fold up to {position}");
    }
    assert!(killed_mid_way > 0, "no kill landed during the catch-up (checkpoint {checkpoint} of {head})");
    let log = Arc::new(Log::open(&log_dir, options()).unwrap());
    let projector = Projector::open(Arc::clone(&log), opledger_projections::all()).unwrap();
    let caught_up = store::dump(&projector.reader().unwrap()).unwrap();
    projector.rebuild(&mut |_, _| {}).unwrap();
    assert!(caught_up == store::dump(&projector.reader().unwrap()).unwrap(), "catching up differs from a rebuild");
}

#[test]
fn a_rebuild_killed_part_way_leaves_the_live_file_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let (data, data_text) = data(&temp);
    data_dir_behind(&data);
    let log_dir = data.join("log");
    let before = file_rows(&log_dir);
    let fresh = log_dir.join(store::REBUILD_FILE_NAME);
    let killed = (0..REBUILD_KILL_ATTEMPTS_MAX).any(|_| kill_once_visible(&["rebuild", "--data", &data_text], &fresh));
    assert!(killed, "no rebuild was caught while filling its file");
    assert_eq!(file_rows(&log_dir), before, "the live file changed under a rebuild that did not finish");
    let log = Arc::new(Log::open(&log_dir, options()).unwrap());
    let projector = Projector::open(Arc::clone(&log), opledger_projections::all()).unwrap();
    assert!(!log_dir.join(store::REBUILD_FILE_NAME).exists(), "the unfinished file was removed");
    assert_eq!(projector.applied(), log.head().position);
}
