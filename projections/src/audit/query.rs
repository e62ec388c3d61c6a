//! Queries of the audit trail: filtered pages newest first, the JSON Lines
//! export, one entry by position.
//!
//! A query walks one index (the most selective the filter names) over a
//! position range, in chunks, and checks the other filter fields on each
//! row it examines. Pages are keyset pages on position: a cursor is "go on
//! below this position".

use std::io::Write;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

use super::{
    principal_of, AuditEntry, AuditError, AuditFilter, AuditPage, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
    RECORDS_EXAMINED_MAX,
};
use crate::error::ProjectionError;
use crate::sql_time;
use crate::store::sqlite;

/// Rows read per statement while walking an index.
const SCAN_CHUNK: usize = 256;
const CURSOR_PREFIX: &str = "au1.";

/// A statement selecting whole rows, in [`decode`]'s column order.
macro_rules! select_entries {
    ($rest:literal) => {
        concat!(
            "SELECT position, event_id, recorded_at, action, caused_by, tenant_id, workspace_id, run_id, summary, \
             (SELECT details FROM audit_details WHERE audit_details.position = audit_entries.position) \
             FROM audit_entries ",
            $rest
        )
    };
}

/// Column numbers in [`select_entries`]' order.
const ACTION: usize = 3;
const CAUSED_BY: usize = 4;
const TENANT_ID: usize = 5;
const WORKSPACE_ID: usize = 6;
const RUN_ID: usize = 7;
const SUMMARY: usize = 8;
const DETAILS: usize = 9;

/// The position of the last entry recorded before `?1`.
pub(super) const LAST_BEFORE: &str =
    "SELECT position FROM audit_entries WHERE recorded_at < ?1 ORDER BY recorded_at DESC, position DESC LIMIT 1";
/// The position of the first entry recorded at or after `?1`.
pub(super) const FIRST_FROM: &str =
    "SELECT position FROM audit_entries WHERE recorded_at >= ?1 ORDER BY recorded_at, position LIMIT 1";
/// One entry by position.
pub(super) const AT_POSITION: &str = select_entries!("WHERE position = ?1");

/// The inclusive position range a query may return.
#[derive(Debug, Clone, Copy)]
struct Span {
    low: u64,
    high: u64,
}

/// The index a query walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    Run,
    Actor,
    Tenant,
    Action,
    /// No indexed field: the entries themselves, by position.
    Positions,
}

/// The filter's fields in their stored form.
struct Wanted<'f> {
    tenant_id: Option<&'f str>,
    actor_id: Option<&'f str>,
    run_id: Option<String>,
    action: Option<&'f str>,
}

impl<'f> Wanted<'f> {
    fn of(filter: &'f AuditFilter) -> Wanted<'f> {
        Wanted {
            tenant_id: filter.tenant_id.as_deref(),
            actor_id: filter.actor_id.as_deref(),
            run_id: filter.run_id.map(|id| id.to_string()),
            action: filter.action.as_deref(),
        }
    }

    /// The most selective index the filter names.
    fn walk(&self) -> (Walk, Option<&str>) {
        match self {
            Wanted { run_id: Some(run_id), .. } => (Walk::Run, Some(run_id)),
            Wanted { actor_id: Some(actor_id), .. } => (Walk::Actor, Some(actor_id)),
            Wanted { tenant_id: Some(tenant_id), .. } => (Walk::Tenant, Some(tenant_id)),
            Wanted { action: Some(action), .. } => (Walk::Action, Some(action)),
            _ => (Walk::Positions, None),
        }
    }

    /// Whether a row matches every given field (the position range aside).
    fn matches(&self, row: &Row<'_>) -> rusqlite::Result<bool> {
        let fields = [
            (self.tenant_id, TENANT_ID),
            (self.actor_id, CAUSED_BY),
            (self.run_id.as_deref(), RUN_ID),
            (self.action, ACTION),
        ];
        for (wanted, column) in fields {
            if let Some(wanted) = wanted {
                let stored = match row.get_ref(column)? {
                    ValueRef::Text(text) => text,
                    _ => return Ok(false),
                };
                if stored != wanted.as_bytes() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The statement walking `walk`'s index: `?1` the walked value (none for
/// [`Walk::Positions`]), then the lowest and highest position and the limit.
pub(super) fn statement(walk: Walk, descending: bool) -> &'static str {
    match (walk, descending) {
        (Walk::Run, true) => {
            select_entries!("WHERE run_id = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position DESC LIMIT ?4")
        }
        (Walk::Run, false) => {
            select_entries!("WHERE run_id = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position LIMIT ?4")
        }
        (Walk::Actor, true) => {
            select_entries!("WHERE caused_by = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position DESC LIMIT ?4")
        }
        (Walk::Actor, false) => {
            select_entries!("WHERE caused_by = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position LIMIT ?4")
        }
        (Walk::Tenant, true) => {
            select_entries!("WHERE tenant_id = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position DESC LIMIT ?4")
        }
        (Walk::Tenant, false) => {
            select_entries!("WHERE tenant_id = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position LIMIT ?4")
        }
        (Walk::Action, true) => {
            select_entries!("WHERE action = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position DESC LIMIT ?4")
        }
        (Walk::Action, false) => {
            select_entries!("WHERE action = ?1 AND position BETWEEN ?2 AND ?3 ORDER BY position LIMIT ?4")
        }
        (Walk::Positions, true) => select_entries!("WHERE position BETWEEN ?1 AND ?2 ORDER BY position DESC LIMIT ?3"),
        (Walk::Positions, false) => select_entries!("WHERE position BETWEEN ?1 AND ?2 ORDER BY position LIMIT ?3"),
    }
}

/// One page of entries matching `filter`, newest first, continuing below
/// `cursor` when given. `limit` defaults to [`PAGE_SIZE_DEFAULT`] and is
/// held to 1 ..= [`PAGE_SIZE_MAX`]. At most [`RECORDS_EXAMINED_MAX`] rows
/// are examined: a page may then be short and still carry a cursor.
pub fn list(
    db: &Connection,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<AuditPage, AuditError> {
    let limit = limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX);
    let before = cursor.map(decode_cursor).transpose()?;
    let Some(span) = span(db, filter, before)? else { return Ok(AuditPage::default()) };
    let wanted = Wanted::of(filter);
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
        let mut full = false;
        let fetched = walk(db, &wanted, Span { low: span.low, high }, true, chunk, &mut |position, row| {
            examined += 1;
            high = position.saturating_sub(1);
            if !wanted.matches(row).map_err(sqlite)? {
                return Ok(true);
            }
            // A match past a full page: more follow, so hand out a cursor.
            if page.entries.len() == limit {
                full = true;
                return Ok(false);
            }
            page.entries.push(decode(row)?);
            Ok(true)
        })?;
        if full {
            page.next_cursor = page.entries.last().map(|entry| encode_cursor(entry.position));
            return Ok(page);
        }
        if fetched < chunk {
            break;
        }
    }
    Ok(page)
}

/// Writes every entry matching `filter`, oldest first, one JSON object per
/// line, reading [`SCAN_CHUNK`] rows at a time. Returns how many lines it
/// wrote.
pub fn export_jsonl(db: &Connection, filter: &AuditFilter, writer: &mut impl Write) -> Result<u64, AuditError> {
    let Some(span) = span(db, filter, None)? else { return Ok(0) };
    let wanted = Wanted::of(filter);
    let mut low = span.low;
    let mut written = 0;
    let mut failed: Option<std::io::Error> = None;
    loop {
        let fetched = walk(db, &wanted, Span { low, high: span.high }, false, SCAN_CHUNK, &mut |position, row| {
            low = position.saturating_add(1);
            if !wanted.matches(row).map_err(sqlite)? {
                return Ok(true);
            }
            let entry = decode(row)?;
            let line = serde_json::to_writer(&mut *writer, &entry)
                .map_err(std::io::Error::from)
                .and_then(|()| writer.write_all(b"\n"));
            match line {
                Ok(()) => written += 1,
                Err(error) => failed = Some(error),
            }
            Ok(failed.is_none())
        })?;
        if let Some(error) = failed {
            return Err(error.into());
        }
        if fetched < SCAN_CHUNK || low > span.high {
            return Ok(written);
        }
    }
}

/// The entry at `position`, if the audit holds one.
pub fn entry(db: &Connection, position: u64) -> Result<Option<AuditEntry>, AuditError> {
    let Ok(position) = i64::try_from(position) else { return Ok(None) };
    let mut statement = db.prepare_cached(AT_POSITION).map_err(sqlite)?;
    let found = statement.query_row([position], |row| Ok(decode(row))).optional().map_err(sqlite)?;
    Ok(found.transpose()?)
}

/// Reads up to `limit` rows of the walked index within `span` and hands
/// each to `visit` (with its position) until `visit` says stop. Returns
/// how many rows were read.
fn walk(
    db: &Connection,
    wanted: &Wanted<'_>,
    span: Span,
    descending: bool,
    limit: usize,
    visit: &mut dyn FnMut(u64, &Row<'_>) -> Result<bool, ProjectionError>,
) -> Result<usize, ProjectionError> {
    let (walk, value) = wanted.walk();
    let mut statement = db.prepare_cached(statement(walk, descending)).map_err(sqlite)?;
    let bound = |position: u64| i64::try_from(position).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (low, high) = (bound(span.low), bound(span.high));
    let found = match value {
        Some(value) => statement.query(rusqlite::params![value, low, high, limit]),
        None => statement.query(rusqlite::params![low, high, limit]),
    };
    let mut rows = found.map_err(sqlite)?;
    let mut read = 0;
    while let Some(row) = rows.next().map_err(sqlite)? {
        read += 1;
        let position = row.get::<_, i64>(0).map_err(sqlite)?;
        let position = u64::try_from(position).map_err(|_| corrupt(position, "a negative position".into()))?;
        if !visit(position, row)? {
            break;
        }
    }
    Ok(read)
}

/// The positions a query may return, from the cursor, `as_of` and the time
/// range; `None` when nothing can match.
fn span(db: &Connection, filter: &AuditFilter, before: Option<u64>) -> Result<Option<Span>, ProjectionError> {
    let mut span = Span { low: 1, high: filter.as_of.unwrap_or(u64::MAX) };
    if let Some(before) = before {
        span.high = span.high.min(before.saturating_sub(1));
    }
    if let Some(to) = filter.to {
        match sql_time::bound(to) {
            sql_time::Bound::BeforeAll => return Ok(None),
            sql_time::Bound::AfterAll => {}
            sql_time::Bound::Text(to) => {
                let Some(last) = position_at(db, LAST_BEFORE, &to)? else { return Ok(None) };
                span.high = span.high.min(last);
            }
        }
    }
    if let Some(from) = filter.from {
        match sql_time::bound(from) {
            sql_time::Bound::BeforeAll => {}
            sql_time::Bound::AfterAll => return Ok(None),
            sql_time::Bound::Text(from) => {
                let Some(first) = position_at(db, FIRST_FROM, &from)? else { return Ok(None) };
                span.low = first;
            }
        }
    }
    Ok((span.low <= span.high).then_some(span))
}

/// The position one of [`span`]'s statements finds on the time index.
fn position_at(db: &Connection, query: &str, time: &str) -> Result<Option<u64>, ProjectionError> {
    let mut statement = db.prepare_cached(query).map_err(sqlite)?;
    let found = statement.query_row([time], |row| row.get::<_, i64>(0)).optional().map_err(sqlite)?;
    found
        .map(|position| u64::try_from(position).map_err(|_| corrupt(position, "a negative position".into())))
        .transpose()
}

/// A row of `audit_entries` as the entry it stores.
fn decode(row: &Row<'_>) -> Result<AuditEntry, ProjectionError> {
    let position: i64 = row.get(0).map_err(sqlite)?;
    let bad = |detail: String| corrupt(position, detail);
    let text = |column: usize| text_at(row, column).map_err(bad);
    let optional = |column: usize| row.get::<_, Option<String>>(column).map_err(|e| bad(e.to_string()));
    let uuid = |text: &str| uuid::Uuid::parse_str(text).map_err(|e| bad(format!("{text:?} is not a UUID: {e}")));
    Ok(AuditEntry {
        position: u64::try_from(position).map_err(|_| bad("a negative position".into()))?,
        event_id: uuid(text(1)?)?,
        recorded_at: sql_time::from_text(text(2)?).map_err(bad)?,
        action: text(ACTION)?.to_owned(),
        caused_by: principal_of(text(CAUSED_BY)?),
        tenant_id: optional(TENANT_ID)?,
        workspace_id: optional(WORKSPACE_ID)?,
        run_id: optional(RUN_ID)?.as_deref().map(uuid).transpose()?,
        summary: text(SUMMARY)?.to_owned(),
        details: serde_json::from_str(text(DETAILS)?).map_err(|e| bad(format!("the details are not JSON: {e}")))?,
    })
}

fn text_at<'r>(row: &'r Row<'_>, column: usize) -> Result<&'r str, String> {
    row.get_ref(column).map_err(|e| e.to_string())?.as_str().map_err(|e| format!("column {column}: {e}"))
}

fn corrupt(position: i64, detail: String) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("audit_entries:{position}"), detail }
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
