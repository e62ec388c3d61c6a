//! The audit trail (SPEC 5): one entry per meaningful event, with who
//! caused it, on which tenant, when, at which log position, an operator
//! summary and the event's payload as details.
//!
//! Entries are keyed by log position and never change once written, so
//! "as of position N" is exact: the entries with position ≤ N are the audit
//! of the log cut at N. The details are stored with the entry: tools read
//! the file while the server owns the log, so a query never needs the log.
//!
//! Left out: `run_progressed` and `lease_renewed`. They are signs of life,
//! frequent, change no decision and no outcome, and stay visible in the
//! run's timeline in Monitoring; an entry for each would drown the
//! decisions auditors look for.
//!
//! Who caused an entry (`caused_by`):
//! - authority changes: `changed_by`;
//! - `run_queued`, `run_start_blocked`, `follow_ups_retained`, `run_started`,
//!   `run_requeued`, `run_blocked`, `run_completed`: the run's initiator (the
//!   run acts on their authority, or on the system's);
//! - `run_start_deduped`, `run_start_rejected_scope_busy`: `requested_by`,
//!   who asked for the start that was answered with this run;
//! - `legitimacy_evaluated`, `follow_up_admitted`, `attempt_abandoned`: the
//!   system, which decides, admits and reaps on its own;
//! - `run_cancelled`: `cancelled_by`;
//! - `notification_read`: the actor who read it.
//!
//! # Tables
//!
//! `audit_entries`, one row per entry:
//!
//! | column         | holds                                                                 | tools  |
//! |----------------|-----------------------------------------------------------------------|--------|
//! | `position`     | log position of the event (INTEGER PRIMARY KEY)                        | stable |
//! | `event_id`     | the event's id (TEXT, hyphenated UUID)                                 | stable |
//! | `recorded_at`  | when the log recorded it (TEXT, `2024-01-01T00:00:00.000000Z`)         | stable |
//! | `action`       | the event type, verbatim (`run_blocked`, `capability_revoked`, …)     | stable |
//! | `caused_by`    | the actor id who caused it, or `system`                               | stable |
//! | `tenant_id`    | the tenant it concerns; NULL when none                                | stable |
//! | `workspace_id` | the workspace it concerns; NULL when none                             | stable |
//! | `run_id`       | the run it concerns (TEXT, hyphenated UUID); NULL when none           | stable |
//! | `summary`      | one operator-readable sentence (SPEC 8 vocabulary)                    | stable |
//!
//! `audit_details`, one row per entry: `position` (the entry's) and
//! `details`, the event's payload (JSON text) as sanitized at the append
//! boundary. Stable. Kept apart so that `audit_entries` rows stay small: a
//! filtered page examines entries without reading their payloads, and a
//! rebuild's index builds scan a table a fifth of the size.
//!
//! Indexes: `(tenant_id, position)`, `(caused_by, position)`,
//! `(run_id, position)`, `(action, position)`, `(recorded_at)`. A filtered
//! page is a range of one index. The log never records an event earlier
//! than the one before it, so `recorded_at` is non-decreasing along
//! `position`: a time range is a position range, found on the time index.
//!
//! `audit_runs`, internal: one row per run, written by its first event
//! (`run_queued` or `run_start_blocked`), with what later events of the run
//! need for their entries: `run_id`, `operation_type`, `tenant_id`,
//! `workspace_id`, `initiator` (actor id or `system`).

use chrono::{DateTime, Utc};
use opledger::domain::model::Principal;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projector::{Projection, ProjectionBatch};

mod batch;
mod query;
mod runs;
mod summary;

pub use query::{entry, export_jsonl, list};

/// The projection's name.
pub const NAME: &str = "audit";
/// Entries per page when the caller names no limit.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Most entries per page.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Most rows one `list` call examines. A selective filter over a long
/// history may end a page short, with a cursor to go on from.
pub const RECORDS_EXAMINED_MAX: usize = 10_000;
/// The `actor_id` value that selects entries the system caused.
pub const SYSTEM_ACTOR: &str = opledger::domain::model::SYSTEM_PRINCIPAL_WORD;

const TABLES: &str = "
CREATE TABLE audit_entries (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    action TEXT NOT NULL,
    caused_by TEXT NOT NULL,
    tenant_id TEXT,
    workspace_id TEXT,
    run_id TEXT,
    summary TEXT NOT NULL
) STRICT;
CREATE TABLE audit_details (
    position INTEGER PRIMARY KEY,
    details TEXT NOT NULL
) STRICT;
CREATE TABLE audit_runs (
    run_id TEXT PRIMARY KEY,
    operation_type TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    initiator TEXT NOT NULL
) STRICT, WITHOUT ROWID;
";

const INDEXES: &str = "
CREATE INDEX audit_entries_by_tenant ON audit_entries (tenant_id, position);
CREATE INDEX audit_entries_by_actor ON audit_entries (caused_by, position);
CREATE INDEX audit_entries_by_run ON audit_entries (run_id, position);
CREATE INDEX audit_entries_by_action ON audit_entries (action, position);
CREATE INDEX audit_entries_by_recorded_at ON audit_entries (recorded_at);
";

/// The audit trail projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audit;

impl Projection for Audit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static str {
        TABLES
    }

    fn indexes(&self) -> &'static str {
        INDEXES
    }

    fn batch<'c>(&self, db: &'c Connection) -> Box<dyn ProjectionBatch + 'c> {
        Box::new(batch::AuditBatch::new(db))
    }
}

/// One audit entry. Serialized names are the API's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[schema(required = true)]
    pub tenant_id: Option<String>,
    #[serde(rename = "workspace_id")]
    #[schema(required = true)]
    pub workspace_id: Option<String>,
    #[serde(rename = "run_id")]
    #[schema(required = true)]
    pub run_id: Option<Uuid>,
    /// One operator-readable sentence (SPEC 8 vocabulary).
    #[serde(rename = "summary")]
    pub summary: String,
    /// The event's payload, as sanitized at the append boundary.
    #[serde(rename = "details")]
    pub details: serde_json::Value,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    #[serde(rename = "entries")]
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts; `None` once every match was served.
    #[serde(rename = "next_cursor")]
    #[schema(required = true)]
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

/// The stored form of a principal: the actor id, or [`SYSTEM_ACTOR`]
/// (which no actor id may be).
fn principal_text(principal: &Principal) -> &str {
    principal.actor_id().unwrap_or(SYSTEM_ACTOR)
}

fn principal_of(text: &str) -> Principal {
    match text {
        SYSTEM_ACTOR => Principal::System,
        actor_id => Principal::actor(actor_id),
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
pub(crate) mod tests;
