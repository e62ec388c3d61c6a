//! Reads of the monitoring view: run detail, timeline, filtered pages and
//! counts. Every read is bounded: a page examines at most
//! [`EXAMINED_PER_RUN_MAX`] × limit index entries and hands back a cursor
//! to go on.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use opledger::domain::events::DomainEvent;
use opledger::domain::model::{Principal, RunOutcome, RunStatus};
use opledger::domain::run::Run;
use opledger::log::views::View;
use opledger::{Envelope, Log};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::{self, Index};
use super::{RunRecord, TimelineEntry, BY_OUTCOME, BY_REASON, TOTAL};
use crate::error::ProjectionError;

/// Runs per page when the caller names no limit.
pub const PAGE_SIZE_DEFAULT: usize = 50;
/// Most runs per page; a larger limit is clamped to this.
pub const PAGE_SIZE_MAX: usize = 200;
/// Index entries a page may examine per run it may return; past that the
/// page ends early with a cursor, so a sparse filter never scans the view.
pub const EXAMINED_PER_RUN_MAX: usize = 20;
/// Longest cursor accepted (the longest index key in hex is far shorter).
pub const CURSOR_CHARS_MAX: usize = 1024;
/// Fewest index entries fetched per read of the index while filling a page.
const SCAN_CHUNK_MIN: usize = 32;
/// More counter keys than one scope can hold (total, 5 outcomes, 13 reasons).
const COUNTER_KEYS_MAX: usize = 256;

/// What a run list is filtered on; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub workspace_id: Option<String>,
    pub tenant_id: Option<String>,
    pub status: Option<RunStatus>,
    pub outcome: Option<RunOutcome>,
    pub operation_type: Option<String>,
    pub initiator: Option<Principal>,
    /// Inclusive lower bound on the run's queued time (its completed time
    /// for a blocked start, which was never queued).
    pub from: Option<DateTime<Utc>>,
    /// Inclusive upper bound, on the same time as `from`.
    pub to: Option<DateTime<Utc>>,
}

/// The `initiator` parameter of the API: `system`, or an actor id.
pub fn parse_initiator(text: &str) -> Principal {
    match text {
        opledger::domain::model::SYSTEM_PRINCIPAL_WORD => Principal::System,
        actor => Principal::actor(actor),
    }
}

impl RunFilter {
    /// The most selective index the filter names, and the value to scan.
    pub(super) fn scan_target(&self) -> (Index, String) {
        let value = |index: Index| match index {
            Index::Tenant => self.tenant_id.clone(),
            Index::Workspace => self.workspace_id.clone(),
            Index::OperationType => self.operation_type.clone(),
            Index::Initiator => self.initiator.as_ref().map(keys::initiator_value),
            Index::Outcome => self.outcome.map(|o| o.as_str().to_owned()),
            Index::Status => self.status.map(|s| s.as_str().to_owned()),
            Index::All => Some(String::new()),
        };
        let chosen = Index::BY_SELECTIVITY.into_iter().find_map(|index| value(index).map(|v| (index, v)));
        chosen.unwrap_or((Index::All, String::new()))
    }

    /// Whether `run` satisfies every field that is set. A list enforces the
    /// time range through its scan bounds already; checking it again here
    /// costs nothing and keeps this the one definition of a match.
    pub fn matches(&self, run: &Run) -> bool {
        fn holds<T: PartialEq + ?Sized>(wanted: Option<&T>, actual: &T) -> bool {
            wanted.is_none_or(|w| w == actual)
        }
        let created_at = run.queued_at.or(run.completed_at);
        let after_from = self.from.is_none_or(|from| created_at.is_some_and(|at| at >= from));
        let before_to = self.to.is_none_or(|to| created_at.is_some_and(|at| at <= to));
        after_from
            && before_to
            && holds(self.workspace_id.as_deref(), run.workspace_id.as_str())
            && holds(self.tenant_id.as_deref(), run.tenant_id.as_str())
            && holds(self.status.as_ref(), &run.status)
            && holds(self.outcome.as_ref(), &run.outcome)
            && holds(self.operation_type.as_deref(), run.operation_type.as_str())
            && holds(self.initiator.as_ref(), &run.initiator)
    }
}

/// One page of the run list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPage {
    #[serde(rename = "runs")]
    pub runs: Vec<Run>,
    /// Present when the list may go on with older runs: pass it back as
    /// `cursor` to get the next page.
    #[serde(rename = "next_cursor")]
    pub next_cursor: Option<String>,
    /// Present when newer runs may precede this page (a page reached with
    /// a cursor): pass it back as `cursor` to get the page before.
    #[serde(rename = "prev_cursor", default)]
    pub prev_cursor: Option<String>,
}

/// Runs by outcome (all five outcomes, `pending` being the live runs), blocked
/// runs by reason code, and the total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(rename = "by_outcome")]
    pub by_outcome: BTreeMap<String, u64>,
    #[serde(rename = "by_reason")]
    pub by_reason: BTreeMap<String, u64>,
    #[serde(rename = "total")]
    pub total: u64,
}

/// Why a page could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The cursor is not one this list handed out (caller error).
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

fn corrupt(key: &[u8], detail: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Corrupt { key: key.escape_ascii().to_string(), detail: detail.to_string() }
}

/// An 8-byte big-endian value: a counter, or an `id:` key's first position.
pub(super) fn u64_value(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<RunRecord, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

/// The record at `first_position`; a missing one means the view is corrupt.
fn record_at(view: &View, first_position: u64, named_by: &[u8]) -> Result<RunRecord, ProjectionError> {
    let key = keys::run(first_position);
    match view.get(&key)? {
        Some(bytes) => decode_record(&key, &bytes),
        None => Err(corrupt(named_by, format!("names the run at position {first_position}, which has no record"))),
    }
}

/// The run as Monitoring shows it; `None` if the view has never seen it.
pub fn get(view: &View, run_id: Uuid) -> Result<Option<Run>, ProjectionError> {
    let id_key = keys::id(run_id);
    let Some(bytes) = view.get(&id_key)? else { return Ok(None) };
    let position = u64_value(&bytes).ok_or_else(|| corrupt(&id_key, "a position is 8 bytes"))?;
    Ok(Some(record_at(view, position, &id_key)?.run))
}

/// Up to `limit` events of the run's timeline from stream version
/// `from_version` on, in log order; empty for an unknown run.
///
/// The timeline is the run's stream: the log's stream index already keeps
/// it in order, so Monitoring reads it there rather than keeping a copy
/// (which would be one more view key per event). Each entry's summary is
/// computed from the event, as the projection would have.
pub fn timeline(
    log: &Log,
    run_id: Uuid,
    from_version: u64,
    limit: usize,
) -> Result<Vec<TimelineEntry>, ProjectionError> {
    let stream = opledger::domain::events::run_stream(run_id);
    let mut entries = Vec::new();
    let mut version = from_version.max(1);
    while entries.len() < limit {
        let page = log.read_stream(&stream, version, limit - entries.len())?;
        let Some(last) = page.last().map(|e| e.stream_version) else { break };
        for envelope in &page {
            entries.push(timeline_entry(envelope)?);
        }
        version = last + 1;
    }
    Ok(entries)
}

/// One timeline entry from the event it shows. An event of a run stream
/// that is not a run event means the log is corrupt.
pub fn timeline_entry(envelope: &Envelope) -> Result<TimelineEntry, ProjectionError> {
    let corrupt = |detail: String| opledger::Error::Corrupt { position: envelope.position, detail };
    let DomainEvent::Run { event, .. } = DomainEvent::from_envelope(envelope).map_err(corrupt)? else {
        return Err(corrupt(format!("{} is not a run event", envelope.event_type)).into());
    };
    Ok(TimelineEntry {
        position: envelope.position,
        id: envelope.id,
        event_type: event.event_type().to_owned(),
        recorded_at: envelope.recorded_at,
        attempt: event.attempt(),
        summary: super::summary::summary(&event),
    })
}

/// Counts over every run, or over one tenant's.
pub fn counts(view: &View, tenant_id: Option<&str>) -> Result<Counts, ProjectionError> {
    let prefix = keys::counter_prefix(tenant_id);
    let outcomes = RunOutcome::ALL;
    let by_outcome = outcomes.iter().map(|o| (o.as_str().to_owned(), 0)).collect();
    let mut counts = Counts { by_outcome, ..Counts::default() };
    for (key, value) in view.prefix(&prefix, COUNTER_KEYS_MAX)? {
        let count = u64_value(&value).ok_or_else(|| corrupt(&key, "a counter is 8 bytes"))?;
        match keys::counter_parts(&prefix, &key) {
            Some((TOTAL, "")) => counts.total = count,
            Some((BY_OUTCOME, name)) => {
                counts.by_outcome.insert(name.to_owned(), count);
            }
            Some((BY_REASON, name)) => {
                counts.by_reason.insert(name.to_owned(), count);
            }
            _ => return Err(corrupt(&key, "not a counter key")),
        }
    }
    Ok(counts)
}

/// One page of runs matching `filter`, newest first, after `cursor`.
/// `limit` is clamped to 1..=[`PAGE_SIZE_MAX`].
pub fn list(view: &View, filter: &RunFilter, cursor: Option<&str>, limit: usize) -> Result<RunPage, ListError> {
    list_in_tenants(view, filter, None, cursor, limit)
}

/// [`list`] restricted to the runs of `tenants` (when given): the tenants
/// an actor may see (SPEC 6). Checked inside the scan, so pages fill up to
/// `limit` instead of being thinned after the fact; a cursor stays valid
/// only with the same filter (another filter's cursor is refused).
///
/// A `next_cursor` goes on to older runs, a `prev_cursor` back to newer
/// ones; either is passed back as `cursor`.
pub fn list_in_tenants(
    view: &View,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RunPage, ListError> {
    let limit = limit.clamp(1, PAGE_SIZE_MAX);
    let (index, value) = filter.scan_target();
    let prefix = keys::index_prefix(index, &value);
    let cursor = cursor.map(|text| Cursor::parse(text, &prefix)).transpose()?;
    let Some((low, high)) = position_range(view, filter)? else { return Ok(RunPage::default()) };
    let key_at = |position: u64| keys::index(index, &value, position);
    let (lowest, highest) = (key_at(low), key_at(high));
    let wanted = |run: &Run| filter.matches(run) && tenants.is_none_or(|t| t.contains(&run.tenant_id));
    let page = match cursor {
        None => {
            let scanned = scan(view, &wanted, (Bound::Included(lowest), Bound::Included(highest)), false, limit)?;
            RunPage { runs: scanned.runs, next_cursor: scanned.more.map(Cursor::older), prev_cursor: None }
        }
        Some(Cursor::Older(before)) => {
            let upper = if before <= highest { Bound::Excluded(before.clone()) } else { Bound::Included(highest) };
            let scanned = scan(view, &wanted, (Bound::Included(lowest), upper), false, limit)?;
            // Runs at or above `before` are newer than this page.
            let back = key_at(keys::position_of(&before).unwrap_or(0).saturating_sub(1));
            RunPage {
                runs: scanned.runs,
                next_cursor: scanned.more.map(Cursor::older),
                prev_cursor: Some(Cursor::newer(back)),
            }
        }
        Some(Cursor::Newer(after)) => {
            let lower = if after >= lowest { Bound::Excluded(after.clone()) } else { Bound::Included(lowest) };
            let mut scanned = scan(view, &wanted, (lower, Bound::Included(highest)), true, limit)?;
            scanned.runs.reverse();
            // Runs at or below `after` are older than this page.
            let on = key_at(keys::position_of(&after).unwrap_or(u64::MAX).saturating_add(1));
            RunPage {
                runs: scanned.runs,
                next_cursor: Some(Cursor::older(on)),
                prev_cursor: scanned.more.map(Cursor::newer),
            }
        }
    };
    Ok(page)
}

/// Where a page starts: below an index key (older runs; a `next_cursor`)
/// or above one (newer runs; a `prev_cursor`).
enum Cursor {
    Older(Vec<u8>),
    Newer(Vec<u8>),
}

/// What starts the text of a cursor to newer runs; a cursor to older runs
/// is the bare hex (the form `next_cursor` always had).
const NEWER_CURSOR_PREFIX: &str = "newer-";

impl Cursor {
    fn older(key: Vec<u8>) -> String {
        keys::to_hex(&key)
    }

    fn newer(key: Vec<u8>) -> String {
        format!("{NEWER_CURSOR_PREFIX}{}", keys::to_hex(&key))
    }

    /// A cursor is the hex of an index key a page examined (after the
    /// direction's prefix); it must belong to the index this filter scans.
    fn parse(text: &str, prefix: &[u8]) -> Result<Cursor, ListError> {
        let invalid = |why: &str| Err(ListError::InvalidCursor(why.to_owned()));
        if text.len() > CURSOR_CHARS_MAX {
            return invalid("too long");
        }
        let (newer, hex) = match text.strip_prefix(NEWER_CURSOR_PREFIX) {
            Some(hex) => (true, hex),
            None => (false, text),
        };
        let Some(key) = keys::from_hex(hex) else { return invalid("not hex") };
        if !key.starts_with(prefix) || key.len() != prefix.len() + 8 {
            return invalid("not a cursor of this filter: a cursor is only valid with the filter it was listed with");
        }
        Ok(if newer { Cursor::Newer(key) } else { Cursor::Older(key) })
    }
}

/// The first positions of the runs created within the filter's time range,
/// as an inclusive range, or `None` when no run was. Positions and
/// `recorded_at` grow together, so a time range is a position range.
pub(super) fn position_range(view: &View, filter: &RunFilter) -> Result<Option<(u64, u64)>, ProjectionError> {
    let low = match filter.from {
        None => 0,
        Some(from) => {
            let start = [keys::TIME, &keys::time_bytes(ceil_micros(from))].concat();
            match time_position(view, Bound::Included(start), Bound::Excluded(keys::TIME_END.to_vec()), false)? {
                Some(position) => position,
                None => return Ok(None),
            }
        }
    };
    let high = match filter.to {
        None => u64::MAX,
        Some(to) => {
            let end = [keys::TIME, &keys::time_bytes(to.timestamp_micros()), &[0xff; 8]].concat();
            match time_position(view, Bound::Included(keys::TIME.to_vec()), Bound::Included(end), true)? {
                Some(position) => position,
                None => return Ok(None),
            }
        }
    };
    Ok((low <= high).then_some((low, high)))
}

/// Times are stored in whole microseconds: a bound with a fraction of one
/// starts at the next.
fn ceil_micros(at: DateTime<Utc>) -> i64 {
    let micros = at.timestamp_micros();
    match at.timestamp_subsec_nanos() % 1000 {
        0 => micros,
        _ => micros.saturating_add(1),
    }
}

fn time_position(
    view: &View,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    descending: bool,
) -> Result<Option<u64>, ProjectionError> {
    let found = view.range(start, end, descending, 1)?;
    let Some((key, _)) = found.first() else { return Ok(None) };
    keys::position_of(key).map(Some).ok_or_else(|| corrupt(key, "a time key ends with a position"))
}

/// What one walk of an index found: the matching runs in walk order, and
/// the last key examined when the walk may go on past it.
struct Scanned {
    runs: Vec<Run>,
    more: Option<Vec<u8>>,
}

/// Walks the index over `range` (downwards, or upwards when `ascending`),
/// keeping the runs that match, until the page is full (then peeks once so
/// that a cursor is only handed out when something follows) or the
/// examination budget is spent.
fn scan(
    view: &View,
    wanted: &dyn Fn(&Run) -> bool,
    range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ascending: bool,
    limit: usize,
) -> Result<Scanned, ProjectionError> {
    let (mut lower, mut upper) = range;
    let budget = limit.saturating_mul(EXAMINED_PER_RUN_MAX);
    let (mut runs, mut examined, mut last) = (Vec::new(), 0usize, None::<Vec<u8>>);
    loop {
        let full = runs.len() == limit;
        if !full && examined >= budget {
            return Ok(Scanned { runs, more: last });
        }
        let want = if full { 1 } else { (limit - runs.len()).max(SCAN_CHUNK_MIN).min(budget - examined) };
        let chunk = match is_empty_range(&lower, &upper) {
            true => Vec::new(),
            false => view.range(lower.clone(), upper.clone(), !ascending, want)?,
        };
        if chunk.is_empty() {
            return Ok(Scanned { runs, more: None });
        }
        for (key, value) in chunk {
            if runs.len() == limit {
                return Ok(Scanned { runs, more: last });
            }
            examined += 1;
            let run = indexed_run(view, &key, &value)?;
            if wanted(&run) {
                runs.push(run);
            }
            match ascending {
                true => lower = Bound::Excluded(key.clone()),
                false => upper = Bound::Excluded(key.clone()),
            }
            last = Some(key);
        }
    }
}

pub(super) fn is_empty_range(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(lower), Bound::Included(upper)) => upper < lower,
        (Bound::Included(lower) | Bound::Excluded(lower), Bound::Excluded(upper))
        | (Bound::Excluded(lower), Bound::Included(upper)) => upper <= lower,
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
    }
}

/// The run an index entry points at: the entry itself when the scan is
/// over the records (the `all` index) or a covering index (tenant), else
/// the record at the position the key ends with. An entry without its
/// record means the view is corrupt.
pub(super) fn indexed_run(view: &View, key: &[u8], value: &[u8]) -> Result<Run, ProjectionError> {
    if keys::holds_record(key) {
        return Ok(decode_record(key, value)?.run);
    }
    let position = keys::position_of(key).ok_or_else(|| corrupt(key, "an index key ends with a position"))?;
    Ok(record_at(view, position, key)?.run)
}
