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

use chrono::{DateTime, Utc};
use opledger::domain::authority::{AuthorityChange, AuthorityChanged, AuthorityState};
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::Principal;
use opledger::domain::run::{RunEvent, RunSpec};
use opledger::log::views::Pending;
use opledger::Envelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projector::Projection;

mod postings;
mod query;
mod summary;

pub use query::{entry, export_jsonl, list};

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
        // Signs of life, not decisions: the audit keeps what they led to.
        RunEvent::RunProgressed { .. } | RunEvent::LeaseRenewed { .. } => return Ok(None),
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
        RunEvent::AttemptAbandoned { .. } => Principal::System,
        RunEvent::RunCancelled { cancelled_by, .. } => cancelled_by.clone(),
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

#[cfg(test)]
#[path = "audit_tests.rs"]
pub(crate) mod tests;
