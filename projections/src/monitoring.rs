//! Monitoring (SPEC 5): the run list, the run detail and its timeline,
//! counters by outcome and by reason, and a list's outcomes over time.
//!
//! One row per run, folded with the domain's own [`Run::create`] and
//! [`Run::apply`] (the one fold of a run, never re-implemented here), one
//! row per run event for the timeline (so that tools read it from the file,
//! not from the log the server owns), and counters maintained from deltas.
//! A batch keeps the runs a page of events touched in memory and writes
//! each once when the page ends (`monitoring/batch.rs`).
//!
//! # Tables
//!
//! `runs`: one row per run. A list is newest first: descending
//! `first_position`. Every filter column has an index
//! `(column, first_position)`, so a filtered page reads the page, not the
//! table; each also carries `tenant_id`, so that a list within the tenants
//! a viewer may see passes over the other tenants' runs in the index
//! without reading their rows. The run itself is in `run_documents`: kept out of this table,
//! rows stay small, and a filter that examines many rows to fill a page
//! reads a few pages of the file rather than one per row.
//!
//! | column | holds | |
//! | --- | --- | --- |
//! | `first_position` INTEGER PRIMARY KEY | log position of the run's first event | stable |
//! | `run_id` TEXT UNIQUE | the run id, hyphenated lowercase UUID | stable |
//! | `workspace_id` TEXT | the run's workspace | stable |
//! | `tenant_id` TEXT | the run's tenant | stable |
//! | `operation_type` TEXT | the operation type | stable |
//! | `initiator` TEXT | `system`, or `actor:` and the actor id (an actor named `system` is not the system) | stable |
//! | `status` TEXT | `queued`, `running` or `completed` | stable |
//! | `outcome` TEXT | `pending`, `succeeded`, `partially_succeeded`, `failed`, `blocked` or `cancelled` | stable |
//! | `reason_code` TEXT | the reason code of a blocked run; NULL unless `outcome` is `blocked` | stable |
//! | `created_at` TEXT | `recorded_at` of the first event (queued, or completed for a blocked start), UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`; grows with `first_position` | stable |
//! | `updated_at` TEXT | `recorded_at` of the run's last event, same format | stable |
//! | `last_position` INTEGER | log position of the run's last event | stable |
//!
//! `run_documents`: the run as the API shows it, one row per row of `runs`.
//!
//! | column | holds | |
//! | --- | --- | --- |
//! | `first_position` INTEGER PRIMARY KEY | the run's `runs.first_position` | stable |
//! | `run` BLOB | the domain `Run` as JSON (the API's run object), LZ4-compressed (`monitoring/document.rs`) | internal |
//!
//! `run_events`: the timeline, one row per run event.
//!
//! | column | holds | |
//! | --- | --- | --- |
//! | `position` INTEGER PRIMARY KEY | the event's log position | stable |
//! | `event_id` TEXT | the event id, hyphenated lowercase UUID | stable |
//! | `run_id` TEXT | the run | stable |
//! | `stream_version` INTEGER | the event's version in the run's stream, from 1 | stable |
//! | `event_type` TEXT | the event type (`run_queued`, `run_started` …) | stable |
//! | `recorded_at` TEXT | when the log recorded it, same format as `created_at` | stable |
//! | `attempt` INTEGER | the attempt the event belongs to (0 before the first) | stable |
//! | `summary` TEXT | one operator-readable line (`monitoring/summary.rs`); wording may change | internal |
//!
//! `run_counts`: counters, every run's and each tenant's. A counter at
//! zero has no row, so a file holds the same rows however its history was
//! batched.
//!
//! | column | holds | |
//! | --- | --- | --- |
//! | `scope` TEXT | `all` (every run) or `tenant` | stable |
//! | `tenant_id` TEXT | the tenant of a `tenant` scope; empty for `all` | stable |
//! | `dimension` TEXT | `total`, `status`, `outcome` or `reason` (blocked runs by reason code) | stable |
//! | `name` TEXT | the status, outcome or reason code; empty for `total` | stable |
//! | `count` INTEGER | runs counted, > 0 | stable |
//!
//! Everything one page of events changes (rows, index entries, counters)
//! is in the page's transaction, which also moves the checkpoint: a crash
//! never leaves an index or a counter that disagrees with its run.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projector::{Projection, ProjectionBatch};

mod batch;
mod columns;
mod cursor;
pub(crate) mod document;
mod over_time;
mod query;
mod scan;
mod summary;
mod totals;

pub use columns::initiator_value;
pub use document::RUN_DOCUMENT_BYTES_MAX;
pub use over_time::{
    outcomes_over_time, BucketWidth, OutcomeBucket, OutcomesOverTime, HOURLY_RANGE_HOURS_MAX, OUTCOME_BUCKETS_MAX,
    OVER_TIME_RUNS_EXAMINED_MAX,
};
pub use query::{
    counts, decision_positions, get, list, list_in_tenants, parse_initiator, timeline, timeline_entry, Counts,
    ListError, RunFilter, RunPage, CURSOR_CHARS_MAX, DECISIONS_PER_RUN_MAX, EXAMINED_PER_RUN_MAX, PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
};
pub use totals::{totals_in_tenants, RunTotals, TOTALS_RUNS_EXAMINED_MAX};

/// The projection's name.
pub const NAME: &str = "monitoring";

const TABLES: &str = "
CREATE TABLE runs (
    first_position INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    operation_type TEXT NOT NULL,
    initiator TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason_code TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_position INTEGER NOT NULL
) STRICT;
CREATE TABLE run_documents (
    first_position INTEGER PRIMARY KEY,
    run BLOB NOT NULL
) STRICT;
CREATE TABLE run_events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    summary TEXT NOT NULL
) STRICT;
CREATE TABLE run_counts (
    scope TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    dimension TEXT NOT NULL,
    name TEXT NOT NULL,
    count INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (scope, tenant_id, dimension, name)
) STRICT, WITHOUT ROWID;
";

/// One index per filter column (named `runs_by_` and the column, which the
/// list queries name in `INDEXED BY`), each ending with `tenant_id`: the
/// visible-tenants test comes first in a match, so SQLite answers it from
/// the index and seeks the row only for a visible run. Then the time index
/// that turns a time range into a position range, and the timeline's.
const INDEXES: &str = "
CREATE INDEX runs_by_workspace_id ON runs (workspace_id, first_position, tenant_id);
CREATE INDEX runs_by_tenant_id ON runs (tenant_id, first_position);
CREATE INDEX runs_by_status ON runs (status, first_position, tenant_id);
CREATE INDEX runs_by_outcome ON runs (outcome, first_position, tenant_id);
CREATE INDEX runs_by_operation_type ON runs (operation_type, first_position, tenant_id);
CREATE INDEX runs_by_initiator ON runs (initiator, first_position, tenant_id);
CREATE INDEX runs_by_created_at ON runs (created_at);
CREATE INDEX run_events_by_run ON run_events (run_id, stream_version);
";

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

impl Projection for Monitoring {
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
        Box::new(batch::MonitoringBatch::new(db))
    }
}

#[cfg(test)]
#[path = "monitoring_tests.rs"]
mod tests;
