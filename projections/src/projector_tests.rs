//! Tests of the projection mechanism with a projection that counts what it
//! applies: checkpoints, restarts, stopping on a bad event, read-your-writes
//! waits, and rebuild with swap.

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
    applied: AtomicU64,
    layout: u32,
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn layout_version(&self) -> u32 {
        self.layout
    }

    fn apply(
        &self,
        pending: &mut Pending<'_>,
        envelope: &Envelope,
        event: &DomainEvent,
        authority: &AuthorityState,
    ) -> Result<(), String> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        if let DomainEvent::Authority(changed) = event {
            if matches!(&changed.change, C::WorkspaceRegistered { workspace_id } if workspace_id == "poison") {
                return Err("refused on purpose".into());
            }
        }
        assert!(authority.position <= envelope.position, "authority is never ahead of the event");
        let key = envelope.event_type.as_bytes().to_vec();
        let count = pending.get(&key).map_err(|e| e.to_string())?.map_or(0, |v| v.len());
        pending.put(key, vec![b'x'; count + 1]);
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

#[test]
fn a_restart_applies_only_what_the_checkpoint_has_not_seen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b", "c"]);
    let first = Arc::new(Counter::default());
    let projector = Projector::open(Arc::clone(ledger.log()), vec![first.clone()]).unwrap();
    assert_eq!(first.applied.load(Ordering::SeqCst), 3);
    assert_eq!(projector.view("counter").unwrap().checkpoint().unwrap(), 3);
    drop(projector);
    workspaces(&ledger, &rt, &["d", "e"]);
    let second = Arc::new(Counter::default());
    let projector = Projector::open(Arc::clone(ledger.log()), vec![second.clone()]).unwrap();
    assert_eq!(second.applied.load(Ordering::SeqCst), 2, "only the two new events");
    let view = projector.view("counter").unwrap();
    assert_eq!(view.get(b"workspace_registered").unwrap(), Some(vec![b'x'; 5]));
    assert_eq!(projector.progress(), Progress::Applied(5));
}

#[test]
fn an_event_the_projection_cannot_apply_stops_it_at_that_position() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a"]);
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    workspaces(&ledger, &rt, &["b", "poison", "c"]);
    let error = projector.catch_up().unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Stopped { position: 3, detail } if detail.contains("refused on purpose")),
        "{error}"
    );
    assert_eq!(projector.view("counter").unwrap().checkpoint().unwrap(), 1, "nothing of the failing page is kept");
    assert!(matches!(projector.catch_up(), Err(ProjectionError::Stopped { position: 3, .. })), "it stays stopped");
    assert!(rt.block_on(projector.wait_for(4)).is_err());
}

#[test]
fn following_the_log_makes_acknowledged_writes_readable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Arc::new(Ledger::open(dir.path(), options()).unwrap());
    let projector = Arc::new(Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap());
    rt.block_on(async {
        let follower = tokio::spawn(Arc::clone(&projector).follow());
        for name in ["a", "b", "c"] {
            let change = vec![C::WorkspaceRegistered { workspace_id: name.to_owned() }];
            let (_, last) = ledger.record_authority(Principal::System, change).await.unwrap();
            projector.wait_for(last).await.unwrap();
            assert!(projector.view("counter").unwrap().checkpoint().unwrap() >= last);
        }
        follower.abort();
    });
}

#[test]
fn a_rebuild_swaps_in_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b"]);
    let projector = Projector::open(Arc::clone(ledger.log()), vec![Arc::new(Counter::default())]).unwrap();
    let before = projector.view("counter").unwrap();
    let entries = before.entries().unwrap();
    let mut seen = Vec::new();
    assert_eq!(projector.rebuild(&mut |done, total| seen.push((done, total))).unwrap(), 2);
    assert_eq!(seen.last(), Some(&(2, 2)));
    let after = projector.view("counter").unwrap();
    assert_eq!(after.entries().unwrap(), entries);
    assert_eq!(after.checkpoint().unwrap(), 2);
    projector.rebuild(&mut |_, _| {}).unwrap();
    assert_eq!(projector.view("counter").unwrap().entries().unwrap(), entries, "rebuilding twice is identical");
}

#[test]
fn a_view_written_in_another_layout_is_rebuilt_from_the_log_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b", "c"]);
    let old = Arc::new(Counter { layout: 1, ..Counter::default() });
    let projector = Projector::open(Arc::clone(ledger.log()), vec![old.clone()]).unwrap();
    let entries = projector.view("counter").unwrap().entries().unwrap();
    drop(projector);

    let same = Arc::new(Counter { layout: 1, ..Counter::default() });
    drop(Projector::open(Arc::clone(ledger.log()), vec![same.clone()]).unwrap());
    assert_eq!(same.applied.load(Ordering::SeqCst), 0, "the same layout resumes from its checkpoint");

    let new = Arc::new(Counter { layout: 2, ..Counter::default() });
    let projector = Projector::open(Arc::clone(ledger.log()), vec![new.clone()]).unwrap();
    assert_eq!(new.applied.load(Ordering::SeqCst), 3, "another layout is refolded from position 1");
    let view = projector.view("counter").unwrap();
    assert_eq!(view.layout().unwrap(), Some(2));
    assert_eq!(view.entries().unwrap(), entries);
    assert_eq!(ledger.log().views().unwrap().generation("counter").unwrap(), 1, "a fresh generation replaced it");
}

#[test]
fn a_view_without_a_recorded_layout_is_rebuilt_unless_it_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    workspaces(&ledger, &rt, &["a", "b"]);
    // A view as a build that did not record layouts left it: state and a
    // checkpoint, no layout.
    let legacy = ledger.log().views().unwrap().current("counter").unwrap();
    let mut pending = legacy.pending();
    pending.put(b"stale".to_vec(), b"bytes of an unknown layout".to_vec());
    legacy.commit(pending, 2).unwrap();
    let counter = Arc::new(Counter { layout: 1, ..Counter::default() });
    let projector = Projector::open(Arc::clone(ledger.log()), vec![counter.clone()]).unwrap();
    assert_eq!(counter.applied.load(Ordering::SeqCst), 2);
    assert_eq!(projector.view("counter").unwrap().get(b"stale").unwrap(), None);
}
