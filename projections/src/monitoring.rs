//! Monitoring (SPEC 5): the run list and the run detail.
//!
//! One record per run, folded with the domain's own [`Run::create`] and
//! [`Run::apply`] (the one fold of a run, never re-implemented here),
//! secondary indexes so that a filtered page costs the page rather than a
//! scan, and counters by outcome and by reason maintained incrementally.
//! The run's timeline is its stream in the log, read through the log's
//! stream index ([`timeline`]). The key layout is described in
//! `monitoring/keys.rs`.
//!
//! Everything a run event changes (record, index entries, counters) goes
//! into the same [`Pending`], which the projector commits together with the
//! checkpoint: a crash never leaves an index that disagrees with its record.
//! The record is staged: an event decodes it only when an earlier event of
//! the same batch has not already, and the batch encodes it once.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use opledger::domain::authority::AuthorityState;
use opledger::domain::events::DomainEvent;
use opledger::domain::model::RunOutcome;
use opledger::domain::run::{Run, RunEvent};
use opledger::log::views::{Pending, Staged};
use opledger::Envelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projector::Projection;

mod keys;
mod query;
mod summary;
mod totals;

use keys::Index;
pub use query::{
    counts, get, list, list_in_tenants, parse_initiator, timeline, timeline_entry, Counts, ListError, RunFilter,
    RunPage, CURSOR_CHARS_MAX, EXAMINED_PER_RUN_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
};
pub use totals::{totals_in_tenants, RunTotals, TOTALS_RUNS_EXAMINED_MAX};

/// The projection's name, which names its view.
pub const NAME: &str = "monitoring";
/// The version of this view's layout (see [`crate::Projection::layout_version`]).
/// 2: records keyed by first position, `id:` keys, empty index values, no
/// timeline copy (the timeline is the run's stream in the log).
/// 3: the tenant index covers the record.
pub const LAYOUT_VERSION: u32 = 3;

/// Counter dimensions (the middle part of a counter key).
const TOTAL: &str = "total";
const BY_OUTCOME: &str = "outcome";
const BY_REASON: &str = "reason";

/// The Monitoring projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monitoring;

/// One event of a run's timeline, as the run detail shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    #[serde(rename = "position")]
    pub position: u64,
    #[serde(rename = "id")]
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(rename = "recorded_at")]
    pub recorded_at: DateTime<Utc>,
    #[serde(rename = "attempt")]
    pub attempt: u32,
    /// One operator-readable line in the words of SPEC 8.
    #[serde(rename = "summary")]
    pub summary: String,
}

/// What the view stores per run: the run and where it sits in the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRecord {
    /// Position of the run's first event: its place in every index.
    #[serde(rename = "first_position")]
    first_position: u64,
    /// `recorded_at` of the first event: queued, or completed for a blocked
    /// start. The time range of a list is on this.
    #[serde(rename = "created_at")]
    created_at: DateTime<Utc>,
    #[serde(rename = "run")]
    run: Run,
}

impl Projection for Monitoring {
    fn name(&self) -> &'static str {
        NAME
    }

    fn layout_version(&self) -> u32 {
        LAYOUT_VERSION
    }

    fn apply(
        &self,
        pending: &mut Pending<'_>,
        envelope: &Envelope,
        event: &DomainEvent,
        _authority: &AuthorityState,
    ) -> Result<(), String> {
        match event {
            DomainEvent::Run { run_id, event } => apply_run_event(pending, envelope, *run_id, event),
            // Authority changes and notification reads change no run; the
            // gates' decisions that they lead to are run events.
            DomainEvent::Authority(_) | DomainEvent::NotificationRead(_) => Ok(()),
        }
    }
}

fn apply_run_event(
    pending: &mut Pending<'_>,
    envelope: &Envelope,
    run_id: Uuid,
    event: &RunEvent,
) -> Result<(), String> {
    let before = load(pending, run_id)?;
    let old_indexes = before.as_ref().map(index_keys).unwrap_or_default();
    let old_counters = before.as_ref().map(|r| counter_keys(&r.run)).unwrap_or_default();
    let is_new = before.is_none();
    let after = next_record(before, run_id, envelope, event)?;
    update_indexes(pending, &old_indexes, &after);
    update_counters(pending, &old_counters, &after.run)?;
    if is_new {
        pending.put(keys::id(run_id), after.first_position.to_be_bytes().to_vec());
    }
    pending.stage(keys::run(after.first_position), after);
    Ok(())
}

/// The record of `run_id`, found through its `id:` key: as staged by an
/// earlier event of the batch, or decoded from the view.
fn load(pending: &mut Pending<'_>, run_id: Uuid) -> Result<Option<RunRecord>, String> {
    let id_key = keys::id(run_id);
    let Some(position) = pending.get(&id_key).map_err(|e| e.to_string())? else { return Ok(None) };
    let position = query::u64_value(&position).ok_or_else(|| format!("the position of run {run_id} is not 8 bytes"))?;
    let key = keys::run(position);
    if let Some(record) = pending.take_staged::<RunRecord>(&key) {
        return Ok(Some(record));
    }
    let Some(bytes) = pending.get(&key).map_err(|e| e.to_string())? else {
        return Err(format!("run {run_id} has an id key but no record at position {position}"));
    };
    let record = serde_json::from_slice(&bytes);
    record.map(Some).map_err(|e| format!("record of run {run_id} does not decode: {e}"))
}

impl Staged for RunRecord {
    fn encode(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| format!("a monitoring record does not encode: {e}"))
    }

    /// The tenant index covers the record (holds a copy of it): a tenant's
    /// runs are spread over the whole log, so a page of them is read
    /// through the index alone instead of fifty scattered records.
    fn copies(&self) -> Vec<Vec<u8>> {
        vec![keys::index(Index::Tenant, &self.run.tenant_id, self.first_position)]
    }
}

/// The record after `event`: the domain's fold decides, and refuses an
/// event the lifecycle does not allow (so does an event for an unknown run,
/// which cannot begin a stream). The stream version cross-checks that no
/// event of the stream was missed.
fn next_record(
    before: Option<RunRecord>,
    run_id: Uuid,
    envelope: &Envelope,
    event: &RunEvent,
) -> Result<RunRecord, String> {
    let record = match before {
        Some(mut record) => {
            record.run.apply(event, envelope.recorded_at).map_err(|e| format!("run {run_id}: {e}"))?;
            record
        }
        None => {
            let run = Run::create(event, envelope.recorded_at).map_err(|e| format!("unknown run {run_id}: {e}"))?;
            if run.id != run_id {
                return Err(format!("the first event of stream run-{run_id} is for run {}", run.id));
            }
            RunRecord { first_position: envelope.position, created_at: envelope.recorded_at, run }
        }
    };
    if record.run.version != envelope.stream_version {
        let (folded, version) = (record.run.version, envelope.stream_version);
        return Err(format!("run {run_id} folded {folded} events but this event is version {version} of its stream"));
    }
    Ok(record)
}

/// The value of `index` for `run`.
fn index_value(index: Index, run: &Run) -> String {
    match index {
        Index::All => String::new(),
        Index::Workspace => run.workspace_id.clone(),
        Index::Tenant => run.tenant_id.clone(),
        Index::Status => run.status.as_str().to_owned(),
        Index::Outcome => run.outcome.as_str().to_owned(),
        Index::OperationType => run.operation_type.clone(),
        Index::Initiator => keys::initiator_value(&run.initiator),
    }
}

/// Every index and time key of a record (the `all` index is the record
/// key itself, written with the record).
fn index_keys(record: &RunRecord) -> BTreeSet<Vec<u8>> {
    let position = record.first_position;
    let mut found: BTreeSet<Vec<u8>> = Index::BY_SELECTIVITY
        .iter()
        .filter(|index| **index != Index::All)
        .map(|i| keys::index(*i, &index_value(*i, &record.run), position))
        .collect();
    found.insert(keys::time(record.created_at, position));
    found
}

/// Moves the entries whose value changed (status, outcome): the old key is
/// deleted and the new one written in the same batch.
fn update_indexes(pending: &mut Pending<'_>, old: &BTreeSet<Vec<u8>>, after: &RunRecord) {
    let new = index_keys(after);
    for key in old.difference(&new) {
        pending.delete(key.clone());
    }
    // Entries of a covering index are the record's copies, written with it.
    for key in new.difference(old).filter(|key| !keys::holds_record(key)) {
        pending.put(key.clone(), Vec::new());
    }
}

/// The counters a run counts towards: the total, its outcome and, for a
/// blocked run, its reason; globally and for its tenant. `blocked` is an
/// outcome of its own, so a blocked run never counts as `failed`.
fn counter_keys(run: &Run) -> BTreeSet<Vec<u8>> {
    let mut found = BTreeSet::new();
    for scope in [None, Some(run.tenant_id.as_str())] {
        found.insert(keys::counter(scope, TOTAL, ""));
        found.insert(keys::counter(scope, BY_OUTCOME, run.outcome.as_str()));
        if let (RunOutcome::Blocked, Some(code)) = (run.outcome, run.reason_code) {
            found.insert(keys::counter(scope, BY_REASON, code.as_str()));
        }
    }
    found
}

fn update_counters(pending: &mut Pending<'_>, old: &BTreeSet<Vec<u8>>, after: &Run) -> Result<(), String> {
    let new = counter_keys(after);
    for key in old.difference(&new) {
        add(pending, key, false)?;
    }
    for key in new.difference(old) {
        add(pending, key, true)?;
    }
    Ok(())
}

/// Adds or removes one from a counter; a counter at zero has no key, so a
/// view holds the same keys however its history was batched.
fn add(pending: &mut Pending<'_>, key: &[u8], up: bool) -> Result<(), String> {
    let current = match pending.get(key).map_err(|e| e.to_string())? {
        None => 0,
        Some(bytes) => {
            query::u64_value(&bytes).ok_or_else(|| format!("counter {} is not a u64", key.escape_ascii()))?
        }
    };
    let next = match up {
        true => current.checked_add(1),
        false => current.checked_sub(1),
    };
    match next {
        None => Err(format!("counter {} would leave 0..=u64::MAX", key.escape_ascii())),
        Some(0) => {
            pending.delete(key.to_vec());
            Ok(())
        }
        Some(value) => {
            pending.put(key.to_vec(), value.to_be_bytes().to_vec());
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "monitoring_tests.rs"]
mod tests;
