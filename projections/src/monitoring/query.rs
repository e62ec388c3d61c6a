//! Reads of Monitoring's tables: run detail, timeline, filtered pages and
//! counts. Every read is bounded: a page examines at most
//! [`EXAMINED_PER_RUN_MAX`] × limit candidate rows and hands back a cursor
//! to go on.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use opledger::domain::events::DomainEvent;
use opledger::domain::model::{Principal, RunOutcome, RunStatus};
use opledger::domain::run::Run;
use opledger::Envelope;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::columns::{parse_time, position_value, BY_OUTCOME, BY_REASON, BY_STATUS, SCOPE_ALL, SCOPE_TENANT, TOTAL};
use super::cursor::Cursor;
use super::scan;
use super::TimelineEntry;
use crate::error::ProjectionError;
use crate::store::sqlite;

/// Runs per page when the caller names no limit.
pub const PAGE_SIZE_DEFAULT: usize = 50;
/// Most runs per page; a larger limit is clamped to this.
pub const PAGE_SIZE_MAX: usize = 200;
/// Candidate rows a page may examine per run it may return; past that the
/// page ends early with a cursor, so a sparse filter never reads the table.
pub const EXAMINED_PER_RUN_MAX: usize = 20;
/// Longest cursor accepted (a cursor is far shorter).
pub const CURSOR_CHARS_MAX: usize = 1024;
/// More counter rows than one scope can hold (total, 3 statuses, 6
/// outcomes, 13 reasons).
const COUNTER_ROWS_MAX: i64 = 256;

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
    /// Whether `run` satisfies every field that is set: the definition the
    /// lists' SQL (`scan::MATCHES`) implements, for callers that hold runs.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunPage {
    #[serde(rename = "runs")]
    pub runs: Vec<Run>,
    /// Present when the list may go on with older runs: pass it back as
    /// `cursor` to get the next page.
    #[serde(rename = "next_cursor")]
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Present when newer runs may precede this page (a page reached with
    /// a cursor): pass it back as `cursor` to get the page before.
    #[serde(rename = "prev_cursor", default)]
    #[schema(required = true)]
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

/// The run as Monitoring shows it; `None` if the file has never seen it.
pub fn get(db: &Connection, run_id: Uuid) -> Result<Option<Run>, ProjectionError> {
    let row = db
        .prepare_cached(
            "SELECT runs.first_position, run FROM runs \
             JOIN run_documents ON run_documents.first_position = runs.first_position WHERE run_id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([run_id.to_string()], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))
                .optional()
        })
        .map_err(sqlite)?;
    row.map(|(position, document)| super::document::decode(&document, position)).transpose()
}

/// Up to `limit` events of the run's timeline from stream version
/// `from_version` on, in log order; empty for an unknown run.
pub fn timeline(
    db: &Connection,
    run_id: Uuid,
    from_version: u64,
    limit: usize,
) -> Result<Vec<TimelineEntry>, ProjectionError> {
    const TIMELINE: &str = "SELECT position, event_id, event_type, recorded_at, attempt, summary FROM run_events \
        WHERE run_id = ?1 AND stream_version >= ?2 ORDER BY stream_version LIMIT ?3";
    let mut statement = db.prepare_cached(TIMELINE).map_err(sqlite)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![run_id.to_string(), position_value(from_version), limit]).map_err(sqlite)?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite)? {
        let position: i64 = row.get(0).map_err(sqlite)?;
        let corrupt = |detail: &str| ProjectionError::Corrupt {
            key: format!("run_events at position {position}"),
            detail: detail.to_owned(),
        };
        let id: String = row.get(1).map_err(sqlite)?;
        let recorded_at: String = row.get(3).map_err(sqlite)?;
        entries.push(TimelineEntry {
            position: u64::try_from(position).map_err(|_| corrupt("a negative position"))?,
            id: Uuid::parse_str(&id).map_err(|_| corrupt("event_id is not a UUID"))?,
            event_type: row.get(2).map_err(sqlite)?,
            recorded_at: parse_time(&recorded_at).ok_or_else(|| corrupt("recorded_at is not a time"))?,
            attempt: row.get(4).map_err(sqlite)?,
            summary: row.get(5).map_err(sqlite)?,
        });
    }
    Ok(entries)
}

/// Most decisions one run records: the start gate's and one per attempt.
pub const DECISIONS_PER_RUN_MAX: usize = opledger::domain::model::MAX_ATTEMPTS_LIMIT as usize + 1;

/// The log positions of the events that record a decision about the run
/// (the start gate's, then each attempt's), in stream order; at most
/// [`DECISIONS_PER_RUN_MAX`]. The decisions themselves are in the log
/// (`explain::decisions_at`): the timeline keeps only a line per event.
pub fn decision_positions(db: &Connection, run_id: Uuid) -> Result<Vec<u64>, ProjectionError> {
    const DECISIONS: &str = "SELECT position FROM run_events WHERE run_id = ?1 \
        AND event_type IN ('run_queued', 'run_start_blocked', 'legitimacy_evaluated') ORDER BY stream_version LIMIT ?2";
    let mut statement = db.prepare_cached(DECISIONS).map_err(sqlite)?;
    let limit = i64::try_from(DECISIONS_PER_RUN_MAX).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![run_id.to_string(), limit]).map_err(sqlite)?;
    let mut positions = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite)? {
        let position: i64 = row.get(0).map_err(sqlite)?;
        positions.push(u64::try_from(position).map_err(|_| ProjectionError::Corrupt {
            key: format!("run_events at position {position}"),
            detail: "a negative position".to_owned(),
        })?);
    }
    Ok(positions)
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
pub fn counts(db: &Connection, tenant_id: Option<&str>) -> Result<Counts, ProjectionError> {
    const COUNTERS: &str = "SELECT dimension, name, count FROM run_counts WHERE scope = ?1 AND tenant_id = ?2 LIMIT ?3";
    let scope = match tenant_id {
        None => (SCOPE_ALL, ""),
        Some(tenant) => (SCOPE_TENANT, tenant),
    };
    let by_outcome = RunOutcome::ALL.iter().map(|o| (o.as_str().to_owned(), 0)).collect();
    let mut counts = Counts { by_outcome, ..Counts::default() };
    let mut statement = db.prepare_cached(COUNTERS).map_err(sqlite)?;
    let mut rows = statement.query(params![scope.0, scope.1, COUNTER_ROWS_MAX]).map_err(sqlite)?;
    while let Some(row) = rows.next().map_err(sqlite)? {
        let (dimension, name): (String, String) = (row.get(0).map_err(sqlite)?, row.get(1).map_err(sqlite)?);
        let count = counter_value(row.get(2).map_err(sqlite)?, &dimension, &name)?;
        match (dimension.as_str(), name) {
            (TOTAL, _) => counts.total = count,
            (BY_OUTCOME, name) => {
                counts.by_outcome.insert(name, count);
            }
            (BY_REASON, name) => {
                counts.by_reason.insert(name, count);
            }
            (BY_STATUS, _) => {}
            (_, name) => {
                let key = format!("run_counts {dimension}/{name}");
                return Err(ProjectionError::Corrupt { key, detail: "not a counter dimension".into() });
            }
        }
    }
    Ok(counts)
}

/// A stored count, which is never negative.
pub(super) fn counter_value(count: i64, dimension: &str, name: &str) -> Result<u64, ProjectionError> {
    u64::try_from(count).map_err(|_| ProjectionError::Corrupt {
        key: format!("run_counts {dimension}/{name}"),
        detail: format!("a negative count {count}"),
    })
}

/// One page of runs matching `filter`, newest first, after `cursor`.
/// `limit` is clamped to 1..=[`PAGE_SIZE_MAX`].
pub fn list(db: &Connection, filter: &RunFilter, cursor: Option<&str>, limit: usize) -> Result<RunPage, ListError> {
    list_in_tenants(db, filter, None, cursor, limit)
}

/// [`list`] restricted to the runs of `tenants` (when given): the tenants
/// an actor may see (SPEC 6). Checked inside the query, so pages fill up
/// to `limit` instead of being thinned after the fact; a cursor stays
/// valid only with the same filter (another filter's cursor is refused).
///
/// A `next_cursor` goes on to older runs, a `prev_cursor` back to newer
/// ones; either is passed back as `cursor`.
pub fn list_in_tenants(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RunPage, ListError> {
    let limit = limit.clamp(1, PAGE_SIZE_MAX);
    let cursor = cursor.map(|text| Cursor::parse(text, filter)).transpose()?;
    let Some((low, high)) = scan::position_range(db, filter)? else { return Ok(RunPage::default()) };
    let walk = |range, ascending| scan::walk(db, filter, tenants, range, ascending, limit);
    let text = |cursor: Cursor| cursor.text(filter);
    let page = match cursor {
        None => {
            let scanned = walk((low, high), false)?;
            RunPage { runs: scanned.runs, next_cursor: scanned.more.map(|p| text(Cursor::Older(p))), prev_cursor: None }
        }
        Some(Cursor::Older(before)) => {
            let scanned = walk((low, high.min(position_value(before) - 1)), false)?;
            // Runs at or above `before` are newer than this page.
            RunPage {
                runs: scanned.runs,
                next_cursor: scanned.more.map(|p| text(Cursor::Older(p))),
                prev_cursor: Some(text(Cursor::Newer(before.saturating_sub(1)))),
            }
        }
        Some(Cursor::Newer(after)) => {
            let mut scanned = walk((low.max(position_value(after).saturating_add(1)), high), true)?;
            scanned.runs.reverse();
            // Runs at or below `after` are older than this page.
            RunPage {
                runs: scanned.runs,
                next_cursor: Some(text(Cursor::Older(after.saturating_add(1)))),
                prev_cursor: scanned.more.map(|p| text(Cursor::Newer(p))),
            }
        }
    };
    Ok(page)
}
