//! Tests of the projection mechanism with a projection that counts what it
//! applies: checkpoints, restarts, stopping on a bad event, read-your-writes
//! waits, rebuild with swap, and files that do not fit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::ledger::Ledger;
use opledger::domain::model::Principal;
use opledger::{Durability, LogOptions};

use super::*;

/// Counts events per type; refuses the workspace named "poison".
#[derive(Default)]
struct Counter {
    applied: Arc<AtomicU64>,
}

struct CounterBatch<'c> {
    db: &'c Connection,
    applied: Arc<AtomicU64>,
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn tables(&self) -> &'static str {
        "CREATE TABLE counts (event_type TEXT PRIMARY KEY, count INTEGER NOT NULL) STRICT;"
    }

    fn indexes(&self) -> &'static str {
        "CREATE INDEX counts_by_count ON counts (count);"
    }

    fn batch<'c>(&self, db: &'c Connection) -> Box<dyn ProjectionBatch + 'c> {
        Box::new(CounterBatch { db, applied: Arc::clone(&self.applied) })
    }
}

impl ProjectionBatch for CounterBatch<'_> {
    fn apply(&mut self, envelope: &Envelope, event: &DomainEvent, authority: &AuthorityState) -> Result<(), String> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        if let DomainEvent::Authority(changed) = event {
            if matches!(&changed.change, C::WorkspaceRegistered { workspace_id } if workspace_id == "poison") {
                return Err("refused on purpose".into());
            }
        }
        assert!(authority.position <= envelope.position, "authority is never ahead of the event");
        self.db
            .execute(
                "INSERT INTO counts (event_type, count) VALUES (?1, 1) \
                 ON CONFLICT (event_type) DO UPDATE SET count = count + 1",
                [&envelope.event_type],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, ..LogOptions::default() }
}

fn workspaces(ledger: &Ledger, runtime: &tokio::runtime::Runtime, names: &[&str]) {
    let changes = names.iter().map(|name| C::WorkspaceRegistered { workspace_id: (*name).to_owned() }).collect();
    runtime.block_on(ledger.record_authority(Principal::System, changes)).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn count(projector: &Projector) -> i64 {
    let reader = projector.reader().unwrap();
    reader.query_row("SELECT count FROM counts WHERE event_type = 'workspace_registered'", [], |r| r.get(0)).unwrap()
}

fn checkpoint(projector: &Projector) -> u64 {
    store::read_checkpoint(&projector.reader().unwrap()).unwrap().unwrap().position
}

#[test]
fn a_restart_applies_only_what_the_checkpoint_has_not_seen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b", "c"]);
    let first = Arc::new(Counter::default());
    let projector = Projector::open(Arc::clone(ledger.log()), vec![first.clone()]).unwrap();
    assert_eq!(first.applied.load(Ordering::SeqCst), 3);
    assert_eq!(checkpoint(&projector), 3);
    drop(projector);
    workspaces(&ledger, &rt, &["d", "e"]);
    let second = Arc::new(Counter::default());
    let projector = Projector::open(Arc::clone(ledger.log()), vec![second.clone()]).unwrap();
    assert_eq!(second.applied.load(Ordering::SeqCst), 2, "only the two new events");
    assert_eq!(count(&projector), 5);
    assert_eq!(checkpoint(&projector), 5);
}

#[test]
fn an_event_a_projection_refuses_stops_it_at_that_position_with_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a"]);
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    workspaces(&ledger, &rt, &["b", "poison", "c"]);
    let error = projector.catch_up().unwrap_err();
    assert!(matches!(error, ProjectionError::Stopped { position: 3, .. }), "{error}");
    assert_eq!(count(&projector), 1, "the page holding the refused event is not applied at all");
    assert_eq!(checkpoint(&projector), 1);
    assert!(matches!(projector.progress(), Progress::Stopped { position: 3, .. }));
    let waiting = rt.block_on(projector.wait_for(2)).unwrap_err();
    assert!(matches!(waiting, ProjectionError::Stopped { .. }), "a wait ends with the stop: {waiting}");
}

#[test]
fn a_read_after_wait_for_sees_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    let projector = Arc::new(Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap());
    let follower = rt.spawn(Arc::clone(&projector).follow());
    workspaces(&ledger, &rt, &["a", "b"]);
    rt.block_on(projector.wait_for(ledger.log().head().position)).unwrap();
    assert_eq!(count(&projector), 2);
    follower.abort();
}

#[test]
fn a_rebuild_swaps_in_an_identical_file_and_readers_of_the_old_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b", "c"]);
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    let before = store::dump(&projector.reader().unwrap()).unwrap();
    let mut seen = Vec::new();
    let applied = projector.rebuild(&mut |at, head| seen.push((at, head))).unwrap();
    assert_eq!(applied, 3);
    assert_eq!(seen.last(), Some(&(3, 3)));
    assert_eq!(store::dump(&projector.reader().unwrap()).unwrap(), before);
    assert!(!dir.path().join(store::REBUILD_FILE_NAME).exists(), "the rebuilt file was renamed");
    workspaces(&ledger, &rt, &["d"]);
    projector.catch_up().unwrap();
    assert_eq!(count(&projector), 4, "the follower writes the new file");
}

#[test]
fn a_file_of_another_schema_version_is_rebuilt_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b"]);
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    drop(projector);
    let path = store::path_in(&ledger.log().directory().unwrap());
    let db = Connection::open(&path).unwrap();
    db.execute("UPDATE counts SET count = 1000", []).unwrap();
    db.pragma_update(None, "user_version", store::SCHEMA_VERSION - 1).unwrap();
    drop(db);
    let counter = Arc::new(Counter::default());
    let projector = Projector::open(Arc::clone(ledger.log()), vec![counter.clone()]).unwrap();
    assert_eq!(count(&projector), 2, "folded again from the log");
    assert_eq!(counter.applied.load(Ordering::SeqCst), 2);
}

#[test]
fn a_file_folded_from_another_log_is_rebuilt() {
    let rt = runtime();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Ledger::open(one.path(), options()).unwrap();
    workspaces(&first, &rt, &["a", "b"]);
    drop(Projector::open(Arc::clone(first.log()), vec![Arc::new(Counter::default())]).unwrap());
    let second = Ledger::open(two.path(), options()).unwrap();
    workspaces(&second, &rt, &["x", "y", "z"]);
    std::fs::copy(
        store::path_in(&first.log().directory().unwrap()),
        store::path_in(&second.log().directory().unwrap()),
    )
    .unwrap();
    let projector = Projector::open(Arc::clone(second.log()), vec![Arc::new(Counter::default())]).unwrap();
    assert_eq!(count(&projector), 3, "the copied file's two rows are not the second log's");
}

#[test]
fn a_file_that_is_not_a_database_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a"]);
    std::fs::write(
        store::path_in(&ledger.log().directory().unwrap()),
        b"not sqlite at all, and long enough to look like a header......",
    )
    .unwrap();
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    assert_eq!(count(&projector), 1);
}
