//! The ledger's restart checkpoint: which runs the sequencer tracks at an
//! acknowledged position.
//!
//! The domain state at position P is the authority stream folded up to P
//! plus every run tracked at P folded from its own stream up to P; nothing
//! else in the log affects it. So a restart folds the (short) authority
//! stream, the streams of the runs named here, and the events after P,
//! instead of the whole log. The snapshot holds ids and a position only:
//! every fact is still read from the log, and a snapshot that does not fit
//! the log is ignored (the ledger then folds everything).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::events::{authority_stream, run_stream, DomainEvent};
use crate::domain::ledger::fold_run;
use crate::domain::state::DomainState;
use crate::envelope::Envelope;
use crate::limits::READ_PAGE_EVENTS_MAX;
use crate::log::Log;

/// A snapshot is taken each time the head crosses a multiple of this.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub position: u64,
    /// Runs tracked at `position`: live, or ended with follow-ups to admit.
    pub runs: Vec<Uuid>,
}

impl Snapshot {
    pub fn of(state: &DomainState) -> Snapshot {
        let mut runs = state.tracked_run_ids();
        runs.sort();
        Snapshot { position: state.position, runs }
    }
}

/// Stores `snapshot` unless a later one is stored already. The position
/// must be acknowledged, so the snapshot never runs ahead of the log.
pub fn store(log: &Log, snapshot: &Snapshot) -> Result<(), crate::Error> {
    assert!(snapshot.position <= log.head().position, "a snapshot of an acknowledged position only");
    if log.restart_snapshot()?.is_some_and(|(position, _)| position >= snapshot.position) {
        return Ok(());
    }
    let bytes = serde_json::to_vec(snapshot).map_err(|e| crate::Error::Storage(e.to_string()))?;
    log.store_restart_snapshot(snapshot.position, &bytes)
}

/// The stored snapshot, if any.
pub fn load(log: &Log) -> Result<Option<Snapshot>, crate::Error> {
    let Some((_, bytes)) = log.restart_snapshot()? else { return Ok(None) };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The domain state at the snapshot's position, read from the log; `None`
/// when the snapshot does not fit the log.
pub fn restore(log: &Log, snapshot: &Snapshot) -> Result<Option<DomainState>, crate::Error> {
    let Some(at) = log.event(snapshot.position)? else { return Ok(None) };
    let mut state = DomainState::default();
    if fold_authority(log, snapshot.position, &mut state).is_err() {
        return Ok(None);
    }
    let mut runs = Vec::with_capacity(snapshot.runs.len());
    for run_id in &snapshot.runs {
        let events: Vec<Envelope> = read_all(log, &run_stream(*run_id))?
            .into_iter()
            .filter(|event| event.position <= snapshot.position)
            .collect();
        match fold_run(&events) {
            Ok(Some(run)) => runs.push(run),
            _ => return Ok(None),
        }
    }
    Ok(state.restore(runs, snapshot.position, at.recorded_at).ok().map(|()| state))
}

fn fold_authority(log: &Log, position: u64, state: &mut DomainState) -> Result<(), String> {
    let events = read_all(log, &authority_stream()).map_err(|e| e.to_string())?;
    for envelope in events.iter().take_while(|event| event.position <= position) {
        let DomainEvent::Authority(changed) = DomainEvent::from_envelope(envelope)? else {
            return Err("a non-authority event in the authority stream".into());
        };
        std::sync::Arc::make_mut(&mut state.authority).apply(envelope.position, &changed.change)?;
    }
    Ok(())
}

fn read_all(log: &Log, stream: &crate::StreamId) -> Result<Vec<Envelope>, crate::Error> {
    let mut events: Vec<Envelope> = Vec::new();
    loop {
        let page = log.read_stream(stream, events.len() as u64 + 1, READ_PAGE_EVENTS_MAX)?;
        let done = page.len() < READ_PAGE_EVENTS_MAX;
        events.extend(page);
        if done {
            return Ok(events);
        }
    }
}

/// When a command's events cross a snapshot boundary, the snapshot to store
/// once they are acknowledged.
pub fn due(state: &DomainState, first_position: u64) -> Option<Snapshot> {
    let crossed = state.position / SNAPSHOT_EVERY_EVENTS > (first_position - 1) / SNAPSHOT_EVERY_EVENTS;
    crossed.then(|| Snapshot::of(state))
}
