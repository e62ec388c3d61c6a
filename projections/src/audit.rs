//! The audit trail (SPEC 5): one entry per meaningful event, with who
//! caused it, on which tenant, when, at which log position, an operator
//! summary and the event's payload as details.
//!
//! Entries are keyed by log position and never change once written, so
//! "as of position N" is exact: the entries with position ≤ N are the audit
//! of the log cut at N.
//!
//! Left out: `run_progressed`. Progress reports are frequent, change no
//! decision and no outcome, and stay visible in the run's timeline in
//! Monitoring; an entry for each would drown the decisions auditors look for.
//!
//! Who caused an entry (`caused_by`):
//! - authority changes: `changed_by`;
//! - `run_queued`, `run_start_blocked`, `follow_ups_retained`, `run_started`,
//!   `run_requeued`, `run_blocked`, `run_completed`: the run's initiator (the
//!   run acts on their authority, or on the system's);
//! - `run_start_deduped`, `run_start_rejected_scope_busy`: `requested_by`,
//!   who asked for the start that was answered with this run;
//! - `legitimacy_evaluated`, `follow_up_admitted`: the system, which decides
//!   and admits on its own;
//! - `notification_read`: the actor who read it.
//!
//! Key layout (positions are 8 bytes big-endian, so keys sort by position):
//! - `e:` position → the entry (JSON) without its details: they are the
//!   event's payload, read from the log when the entry is served;
//! - `t:` tenant, `a:` actor (the caused_by actor id, or `system`), `r:` run
//!   id, `x:` action, each followed by `0x00` and a block number → the
//!   positions of that value's entries within the block, packed (see
//!   `audit/postings.rs`): a filtered page is a range scan of one index.
//!   Ids never hold `0x00` (control characters are refused at the append
//!   boundary).
//! - no time index: the log never records an event earlier than the one
//!   before it (the writer holds `recorded_at` non-decreasing), so a time
//!   range is a position range, found by binary search over the entries;
//! - `k:` run id (16 bytes) → what later events of the run need (type,
//!   tenant, workspace, initiator), taken from the run's first event.

use std::io::Write;
use std::ops::Bound;

use chrono::{DateTime, Utc};
use opledger::domain::authority::{AuthorityChange, AuthorityChanged, AuthorityState};
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::Principal;
use opledger::domain::run::{RunEvent, RunSpec};
use opledger::log::views::{Pending, View};
use opledger::{Envelope, Log};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projector::Projection;

mod postings;
mod summary;

use summary::{authority_summary, lowercase_first, run_summary};

/// The projection's name, and so its view's.
pub const NAME: &str = "audit";
/// The version of this view's layout (see [`crate::Projection::layout_version`]).
/// 2: no time index (time ranges by binary search over the entries).
/// 3: index entries packed in blocks (`audit/postings.rs`).
/// 4: entries kept without their details (read from the log when served).
pub const LAYOUT_VERSION: u32 = 4;
/// Entries per page when the caller names no limit.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Most entries per page.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Most index records one `list` call examines. A selective filter over a
/// long history may end a page short, with a cursor to go on from.
pub const RECORDS_EXAMINED_MAX: usize = 10_000;
/// The `actor_id` value that selects entries the system caused.
pub const SYSTEM_ACTOR: &str = opledger::domain::model::SYSTEM_PRINCIPAL_WORD;

/// Records read from the view per range call.
const SCAN_CHUNK: usize = 256;
const CURSOR_PREFIX: &str = "au1.";

const ENTRY: &[u8] = b"e:";
const BY_TENANT: &[u8] = b"t:";
const BY_ACTOR: &[u8] = b"a:";
const BY_RUN: &[u8] = b"r:";
const BY_ACTION: &[u8] = b"x:";
const RUN_RECORD: &[u8] = b"k:";

/// The audit trail projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audit;

/// One audit entry. Serialized names are the API's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    #[serde(rename = "position")]
    pub position: u64,
    #[serde(rename = "event_id")]
    pub event_id: Uuid,
    #[serde(rename = "recorded_at")]
    pub recorded_at: DateTime<Utc>,
    /// The event type, verbatim (`run_blocked`, `capability_revoked`, …).
    #[serde(rename = "action")]
    pub action: String,
    #[serde(rename = "caused_by")]
    pub caused_by: Principal,
    #[serde(rename = "tenant_id")]
    pub tenant_id: Option<String>,
    #[serde(rename = "workspace_id")]
    pub workspace_id: Option<String>,
    #[serde(rename = "run_id")]
    pub run_id: Option<Uuid>,
    /// One operator-readable sentence (SPEC 8 vocabulary).
    #[serde(rename = "summary")]
    pub summary: String,
    /// The event's payload, as sanitized at the append boundary.
    #[serde(rename = "details")]
    pub details: serde_json::Value,
}

/// What the view keeps of an entry: everything but the details. The
/// details are the event's payload, which the log already holds; they are
/// read from it (hash-checked) when the entry is served, so the view does
/// not keep a second copy of every payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(rename = "position")]
    position: u64,
    #[serde(rename = "event_id")]
    event_id: Uuid,
    #[serde(rename = "recorded_at")]
    recorded_at: DateTime<Utc>,
    #[serde(rename = "action")]
    action: String,
    #[serde(rename = "caused_by")]
    caused_by: Principal,
    #[serde(rename = "tenant_id")]
    tenant_id: Option<String>,
    #[serde(rename = "workspace_id")]
    workspace_id: Option<String>,
    #[serde(rename = "run_id")]
    run_id: Option<Uuid>,
    #[serde(rename = "summary")]
    summary: String,
}

impl Stored {
    fn with_details(self, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            position: self.position,
            event_id: self.event_id,
            recorded_at: self.recorded_at,
            action: self.action,
            caused_by: self.caused_by,
            tenant_id: self.tenant_id,
            workspace_id: self.workspace_id,
            run_id: self.run_id,
            summary: self.summary,
            details,
        }
    }
}

/// What a query selects; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    /// The actor who caused the entry, or [`SYSTEM_ACTOR`].
    pub actor_id: Option<String>,
    pub run_id: Option<Uuid>,
    pub action: Option<String>,
    /// Recorded at or after (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Recorded before (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Only entries at or below this log position.
    pub as_of: Option<u64>,
}

/// One page of entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditPage {
    #[serde(rename = "entries")]
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts; `None` once every match was served.
    #[serde(rename = "next_cursor")]
    pub next_cursor: Option<String>,
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A cursor this module did not hand out.
    #[error("invalid audit cursor: {0}")]
    InvalidCursor(String),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("writing the audit export failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<opledger::Error> for AuditError {
    fn from(error: opledger::Error) -> Self {
        AuditError::Projection(error.into())
    }
}

/// What later events of a run need to know about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRecord {
    #[serde(rename = "operation_type")]
    operation_type: String,
    #[serde(rename = "tenant_id")]
    tenant_id: String,
    #[serde(rename = "workspace_id")]
    workspace_id: String,
    #[serde(rename = "initiator")]
    initiator: Principal,
}

impl RunRecord {
    fn of(spec: &RunSpec) -> RunRecord {
        RunRecord {
            operation_type: spec.operation_type.clone(),
            tenant_id: spec.tenant_id.clone(),
            workspace_id: spec.workspace_id.clone(),
            initiator: spec.initiator.clone(),
        }
    }

    /// "Run of inventory_sync on tenant t1".
    fn subject(&self) -> String {
        format!("Run of {} on tenant {}", self.operation_type, self.tenant_id)
    }
}

/// The entry fields an event determines beyond the envelope's.
struct Subject {
    caused_by: Principal,
    tenant_id: Option<String>,
    workspace_id: Option<String>,
    run_id: Option<Uuid>,
    summary: String,
}

impl Projection for Audit {
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
        authority: &AuthorityState,
    ) -> Result<(), String> {
        let subject = match event {
            DomainEvent::Authority(changed) => authority_subject(changed, authority),
            DomainEvent::Run { run_id, event } => match run_subject(pending, *run_id, event)? {
                Some(subject) => subject,
                None => return Ok(()),
            },
            DomainEvent::NotificationRead(read) => read_subject(pending, read)?,
        };
        let entry = entry_of(envelope, event, subject)?;
        write_entry(pending, &entry)
    }
}

fn entry_of(envelope: &Envelope, event: &DomainEvent, subject: Subject) -> Result<Stored, String> {
    Ok(Stored {
        position: envelope.position,
        event_id: envelope.id,
        recorded_at: envelope.recorded_at,
        action: event.event_type().to_owned(),
        caused_by: subject.caused_by,
        tenant_id: subject.tenant_id,
        workspace_id: subject.workspace_id,
        run_id: subject.run_id,
        summary: subject.summary,
    })
}

// ---------------------------------------------------------------- authority

fn authority_subject(changed: &AuthorityChanged, authority: &AuthorityState) -> Subject {
    let change = &changed.change;
    let tenant_id = change.tenant_id().map(str::to_owned).or_else(|| connection_tenant(change, authority));
    let workspace_id = change_workspace(change).or_else(|| {
        let tenant = authority.tenants.get(tenant_id.as_deref()?)?;
        Some(tenant.workspace_id.clone())
    });
    Subject {
        caused_by: changed.changed_by.clone(),
        tenant_id,
        workspace_id,
        run_id: None,
        summary: authority_summary(change),
    }
}

/// A connection status change names no tenant; the connection belongs to one.
fn connection_tenant(change: &AuthorityChange, authority: &AuthorityState) -> Option<String> {
    match change {
        AuthorityChange::ProviderConnectionStatusChanged { connection_id, .. } => {
            authority.connections.get(connection_id).map(|c| c.tenant_id.clone())
        }
        _ => None,
    }
}

fn change_workspace(change: &AuthorityChange) -> Option<String> {
    match change {
        AuthorityChange::WorkspaceRegistered { workspace_id }
        | AuthorityChange::TenantRegistered { workspace_id, .. }
        | AuthorityChange::WorkspaceMemberAdded { workspace_id, .. }
        | AuthorityChange::WorkspaceMemberRemoved { workspace_id, .. } => Some(workspace_id.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------- runs

/// The subject of a run event; `None` for events the audit leaves out.
fn run_subject(pending: &mut Pending<'_>, run_id: Uuid, event: &RunEvent) -> Result<Option<Subject>, String> {
    let record = match event {
        RunEvent::RunProgressed { .. } => return Ok(None),
        RunEvent::RunQueued { spec, .. } | RunEvent::RunStartBlocked { spec, .. } => {
            let record = RunRecord::of(spec);
            pending.put(run_record_key(run_id), encode(&record)?);
            record
        }
        _ => load_record(pending, run_id)?,
    };
    Ok(Some(Subject {
        caused_by: run_caused_by(&record, event),
        tenant_id: Some(record.tenant_id.clone()),
        workspace_id: Some(record.workspace_id.clone()),
        run_id: Some(run_id),
        summary: run_summary(&record, event),
    }))
}

fn run_caused_by(record: &RunRecord, event: &RunEvent) -> Principal {
    match event {
        RunEvent::RunStartDeduped { requested_by, .. } | RunEvent::RunStartRejectedScopeBusy { requested_by, .. } => {
            requested_by.clone()
        }
        RunEvent::LegitimacyEvaluated { .. } | RunEvent::FollowUpAdmitted { .. } => Principal::System,
        _ => record.initiator.clone(),
    }
}

fn read_subject(pending: &Pending<'_>, read: &NotificationRead) -> Result<Subject, String> {
    let record = load_record(pending, read.run_id)?;
    Ok(Subject {
        caused_by: Principal::actor(read.actor_id.clone()),
        tenant_id: Some(record.tenant_id.clone()),
        workspace_id: Some(record.workspace_id.clone()),
        run_id: Some(read.run_id),
        summary: format!("Actor {} read the notification of the {}", read.actor_id, lowercase_first(&record.subject())),
    })
}

fn load_record(pending: &Pending<'_>, run_id: Uuid) -> Result<RunRecord, String> {
    let bytes = pending.get(&run_record_key(run_id)).map_err(|e| e.to_string())?;
    let bytes =
        bytes.ok_or_else(|| format!("run {run_id} has no run_queued or run_start_blocked before this event"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the audit record of run {run_id} does not decode: {e}"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- keys

fn run_record_key(run_id: Uuid) -> Vec<u8> {
    [RUN_RECORD, run_id.as_bytes().as_slice()].concat()
}

fn entry_key(position: u64) -> Vec<u8> {
    [ENTRY, &position.to_be_bytes()].concat()
}

/// `prefix value 0x00`: what every key of one index value starts with.
fn index_base(prefix: &[u8], value: &str) -> Vec<u8> {
    [prefix, value.as_bytes(), &[0]].concat()
}

fn at_position(base: &[u8], position: u64) -> Vec<u8> {
    [base, &position.to_be_bytes()].concat()
}

/// The index value of a principal: the actor id, or [`SYSTEM_ACTOR`].
fn actor_value(principal: &Principal) -> &str {
    principal.actor_id().unwrap_or(SYSTEM_ACTOR)
}

fn write_entry(pending: &mut Pending<'_>, entry: &Stored) -> Result<(), String> {
    let position = entry.position;
    pending.put(entry_key(position), encode(entry)?);
    let run_id = entry.run_id.map(|id| id.to_string());
    let indexes = [
        (BY_TENANT, entry.tenant_id.as_deref()),
        (BY_ACTOR, Some(actor_value(&entry.caused_by))),
        (BY_RUN, run_id.as_deref()),
        (BY_ACTION, Some(entry.action.as_str())),
    ];
    for (prefix, value) in indexes {
        if let Some(value) = value {
            postings::add(pending, &index_base(prefix, value), position)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- queries

/// The inclusive position range a query may return.
#[derive(Debug, Clone, Copy)]
struct Span {
    low: u64,
    high: u64,
}

/// One page of entries matching `filter`, newest first, continuing below
/// `cursor` when given. `limit` defaults to [`PAGE_SIZE_DEFAULT`] and is
/// held to 1 ..= [`PAGE_SIZE_MAX`]. At most [`RECORDS_EXAMINED_MAX`]
/// records are examined: a page may then be short and still carry a cursor.
pub fn list(
    log: &Log,
    view: &View,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<AuditPage, AuditError> {
    let limit = limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX);
    let before = cursor.map(decode_cursor).transpose()?;
    let Some(span) = span(view, filter, before)? else { return Ok(AuditPage::default()) };
    let base = scan_base(filter);
    let mut page = AuditPage::default();
    let mut high = span.high;
    let mut examined = 0;
    while high >= span.low {
        let budget = RECORDS_EXAMINED_MAX - examined;
        if budget == 0 {
            page.next_cursor = Some(encode_cursor(high.saturating_add(1)));
            return Ok(page);
        }
        let chunk = SCAN_CHUNK.min(budget);
        let records = scan(view, &base, Span { low: span.low, high }, true, chunk)?;
        let fetched = records.len();
        let last = records.last().map(|(position, _)| *position);
        for (position, entry) in records {
            examined += 1;
            high = position.saturating_sub(1);
            if matches(filter, &entry) {
                page.entries.push(with_details(log, entry)?);
            }
            if page.entries.len() > limit {
                page.entries.truncate(limit);
                page.next_cursor = page.entries.last().map(|entry| encode_cursor(entry.position));
                return Ok(page);
            }
        }
        if fetched < chunk || last.is_some_and(|position| position <= span.low) {
            break;
        }
    }
    Ok(page)
}

/// Writes every entry matching `filter` (the cursor aside), oldest first,
/// one JSON object per line. Returns how many lines it wrote.
pub fn export_jsonl(log: &Log, view: &View, filter: &AuditFilter, writer: &mut impl Write) -> Result<u64, AuditError> {
    let Some(span) = span(view, filter, None)? else { return Ok(0) };
    let base = scan_base(filter);
    let mut low = span.low;
    let mut written = 0;
    loop {
        let records = scan(view, &base, Span { low, high: span.high }, false, SCAN_CHUNK)?;
        for (_, entry) in records.iter().filter(|(_, entry)| matches(filter, entry)) {
            let entry = with_details(log, entry.clone())?;
            serde_json::to_writer(&mut *writer, &entry).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
            written += 1;
        }
        match records.last() {
            Some((position, _)) if records.len() == SCAN_CHUNK && *position < span.high => low = position + 1,
            _ => return Ok(written),
        }
    }
}

/// The entry at `position`, if the audit holds one.
pub fn entry(log: &Log, view: &View, position: u64) -> Result<Option<AuditEntry>, AuditError> {
    let key = entry_key(position);
    let Some(bytes) = view.get(&key)? else { return Ok(None) };
    Ok(Some(with_details(log, decode_entry(&key, &bytes)?)?))
}

/// The entry with its details: the payload of the event at its position,
/// read from the log (which checks the event's hash). The event must be
/// the one the entry was made from.
fn with_details(log: &Log, stored: Stored) -> Result<AuditEntry, AuditError> {
    let key = entry_key(stored.position);
    let Some(envelope) = log.event(stored.position)? else {
        return Err(corrupt(&key, "the log has no event at the entry's position").into());
    };
    if envelope.id != stored.event_id {
        return Err(corrupt(&key, &format!("the log's event here is {}, not {}", envelope.id, stored.event_id)).into());
    }
    let details = serde_json::from_str(envelope.payload.get())
        .map_err(|e| corrupt(&key, &format!("the event's payload is not JSON: {e}")))?;
    Ok(stored.with_details(details))
}

/// The positions a query may return, from the cursor, `as_of` and the time
/// range; `None` when nothing can match.
fn span(view: &View, filter: &AuditFilter, before: Option<u64>) -> Result<Option<Span>, AuditError> {
    let mut span = Span { low: 1, high: filter.as_of.unwrap_or(u64::MAX) };
    if let Some(before) = before {
        span.high = span.high.min(before.saturating_sub(1));
    }
    if let Some(to) = filter.to {
        let Some(last) = last_position_before(view, to)? else { return Ok(None) };
        span.high = span.high.min(last);
    }
    if let Some(from) = filter.from {
        let Some(first) = first_position_from(view, from)? else { return Ok(None) };
        span.low = first;
    }
    Ok((span.low <= span.high).then_some(span))
}

/// The position of the first entry recorded at or after `from`.
fn first_position_from(view: &View, from: DateTime<Utc>) -> Result<Option<u64>, AuditError> {
    // Entries are in position order and so in time order: the first entry
    // at or after position p is recorded at or after `from` for every p
    // past some point; find the least such p.
    let Some((mut low, mut high)) = entry_positions(view)? else { return Ok(None) };
    if entry_at_or_after(view, high)?.is_none_or(|entry| entry.recorded_at < from) {
        return Ok(None);
    }
    while low < high {
        let middle = low + (high - low) / 2;
        match entry_at_or_after(view, middle)? {
            Some(entry) if entry.recorded_at >= from => high = middle,
            _ => low = middle + 1,
        }
    }
    Ok(entry_at_or_after(view, low)?.map(|entry| entry.position))
}

/// The position of the last entry recorded before `to`.
fn last_position_before(view: &View, to: DateTime<Utc>) -> Result<Option<u64>, AuditError> {
    let Some((mut low, mut high)) = entry_positions(view)? else { return Ok(None) };
    if entry_at_or_before(view, low)?.is_none_or(|entry| entry.recorded_at >= to) {
        return Ok(None);
    }
    while low < high {
        let middle = high - (high - low) / 2;
        match entry_at_or_before(view, middle)? {
            Some(entry) if entry.recorded_at < to => low = middle,
            _ => high = middle - 1,
        }
    }
    Ok(entry_at_or_before(view, low)?.map(|entry| entry.position))
}

/// The positions of the first and the last entry.
fn entry_positions(view: &View) -> Result<Option<(u64, u64)>, AuditError> {
    let (Some(first), Some(last)) = (entry_at_or_after(view, 0)?, entry_at_or_before(view, u64::MAX)?) else {
        return Ok(None);
    };
    Ok(Some((first.position, last.position)))
}

fn entry_at_or_after(view: &View, position: u64) -> Result<Option<Stored>, AuditError> {
    let start = Bound::Included(entry_key(position));
    let end = Bound::Included(entry_key(u64::MAX));
    nearest_entry(view.range(start, end, false, 1)?)
}

fn entry_at_or_before(view: &View, position: u64) -> Result<Option<Stored>, AuditError> {
    let start = Bound::Included(entry_key(0));
    let end = Bound::Included(entry_key(position));
    nearest_entry(view.range(start, end, true, 1)?)
}

fn nearest_entry(found: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Option<Stored>, AuditError> {
    found.first().map(|(key, value)| decode_entry(key, value).map_err(AuditError::from)).transpose()
}

/// The key prefix to scan: the most selective index the filter names, or
/// the entries themselves.
fn scan_base(filter: &AuditFilter) -> Vec<u8> {
    if let Some(run_id) = filter.run_id {
        return index_base(BY_RUN, &run_id.to_string());
    }
    if let Some(actor_id) = &filter.actor_id {
        return index_base(BY_ACTOR, actor_id);
    }
    if let Some(tenant_id) = &filter.tenant_id {
        return index_base(BY_TENANT, tenant_id);
    }
    if let Some(action) = &filter.action {
        return index_base(BY_ACTION, action);
    }
    ENTRY.to_vec()
}

/// Up to `limit` entries under `base` with positions in `span`: a range of
/// the entries themselves, or an index's positions and their entries.
fn scan(
    view: &View,
    base: &[u8],
    span: Span,
    descending: bool,
    limit: usize,
) -> Result<Vec<(u64, Stored)>, AuditError> {
    if base != ENTRY {
        let positions = postings::positions(view, base, span.low, span.high, descending, limit)?;
        let entries: Result<Vec<_>, _> =
            positions.into_iter().map(|position| Ok((position, load_entry(view, position)?))).collect();
        return entries;
    }
    let start = Bound::Included(at_position(base, span.low));
    let end = Bound::Included(at_position(base, span.high));
    let records = view.range(start, end, descending, limit)?;
    let mut entries = Vec::with_capacity(records.len());
    for (key, value) in records {
        entries.push((key_position(&key)?, decode_entry(&key, &value)?));
    }
    Ok(entries)
}

fn load_entry(view: &View, position: u64) -> Result<Stored, AuditError> {
    let key = entry_key(position);
    let bytes = view.get(&key)?.ok_or_else(|| corrupt(&key, "an index names an entry that is not there"))?;
    Ok(decode_entry(&key, &bytes)?)
}

fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Stored, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, &e.to_string()))
}

fn key_position(key: &[u8]) -> Result<u64, AuditError> {
    let tail = key.len().checked_sub(8).and_then(|at| key.get(at..));
    let bytes: Option<[u8; 8]> = tail.and_then(|tail| tail.try_into().ok());
    bytes.map(u64::from_be_bytes).ok_or_else(|| corrupt(key, "the key ends without a position").into())
}

fn corrupt(key: &[u8], detail: &str) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("{}:{}", NAME, String::from_utf8_lossy(key)), detail: detail.to_owned() }
}

fn matches(filter: &AuditFilter, entry: &Stored) -> bool {
    let tenant = filter.tenant_id.as_ref().is_none_or(|t| entry.tenant_id.as_ref() == Some(t));
    let actor = filter.actor_id.as_deref().is_none_or(|a| actor_value(&entry.caused_by) == a);
    let run = filter.run_id.is_none_or(|r| entry.run_id == Some(r));
    let action = filter.action.as_ref().is_none_or(|a| &entry.action == a);
    tenant && actor && run && action
}

/// Cursors are opaque to callers: "continue below this position".
fn encode_cursor(position: u64) -> String {
    format!("{CURSOR_PREFIX}{position:016x}")
}

fn decode_cursor(cursor: &str) -> Result<u64, AuditError> {
    let invalid = || AuditError::InvalidCursor(format!("{cursor:?} is not a cursor of the audit trail"));
    let digits = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
    let well_formed = digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(invalid());
    }
    match u64::from_str_radix(digits, 16) {
        Ok(position) if position > 0 => Ok(position),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
pub(crate) mod tests;
