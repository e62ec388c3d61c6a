//! The rows a filter examines: its candidates, newest first, from the index
//! of the most selective column it names (or the table itself when it names
//! none), within the position range of its time range, at most a bounded
//! number of them. The other fields of the filter and the visible tenants
//! decide which candidates match, in the same statement.
//!
//! The list and its totals walk the same candidates with the same test of
//! a match, so a page and the counts of its filter never disagree.

use std::collections::BTreeSet;

use opledger::domain::run::Run;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Statement};

use super::columns::{from_bound, initiator_value, to_bound};
use super::query::{RunFilter, EXAMINED_PER_RUN_MAX};
use crate::error::ProjectionError;
use crate::store::sqlite;

/// Whether a candidate row matches every field of the filter and is of a
/// visible tenant (`:tenants`, a JSON array, NULL for every tenant). A
/// field the filter leaves open is bound to NULL. The tenants come first:
/// every index holds `tenant_id`, so a run of another tenant is passed
/// over without reading its row. The time range is also
/// the candidates' position range; testing it again keeps this the whole
/// definition of a match.
pub(super) const MATCHES: &str = "(:tenants IS NULL OR tenant_id IN (SELECT value FROM json_each(:tenants))) \
    AND (:workspace_id IS NULL OR workspace_id = :workspace_id) \
    AND (:tenant_id IS NULL OR tenant_id = :tenant_id) \
    AND (:status IS NULL OR status = :status) \
    AND (:outcome IS NULL OR outcome = :outcome) \
    AND (:operation_type IS NULL OR operation_type = :operation_type) \
    AND (:initiator IS NULL OR initiator = :initiator) \
    AND (:from IS NULL OR created_at >= :from) \
    AND (:to IS NULL OR created_at <= :to)";

/// The filter columns, the most selective first: the order in which a
/// filter picks the index its candidates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Column {
    Tenant,
    Workspace,
    OperationType,
    Initiator,
    Outcome,
    Status,
}

impl Column {
    pub(super) const BY_SELECTIVITY: [Column; 6] =
        [Column::Tenant, Column::Workspace, Column::OperationType, Column::Initiator, Column::Outcome, Column::Status];

    pub(super) fn name(self) -> &'static str {
        match self {
            Column::Tenant => "tenant_id",
            Column::Workspace => "workspace_id",
            Column::OperationType => "operation_type",
            Column::Initiator => "initiator",
            Column::Outcome => "outcome",
            Column::Status => "status",
        }
    }

    /// The filter's value of this column, if it names one.
    fn value(self, filter: &RunFilter) -> Option<String> {
        match self {
            Column::Tenant => filter.tenant_id.clone(),
            Column::Workspace => filter.workspace_id.clone(),
            Column::OperationType => filter.operation_type.clone(),
            Column::Initiator => filter.initiator.as_ref().map(initiator_value),
            Column::Outcome => filter.outcome.map(|o| o.as_str().to_owned()),
            Column::Status => filter.status.map(|s| s.as_str().to_owned()),
        }
    }
}

/// The column (and its value) whose index a filter's candidates come from;
/// `None`: the table itself, by position.
pub(super) fn scan_target(filter: &RunFilter) -> Option<(Column, String)> {
    Column::BY_SELECTIVITY.into_iter().find_map(|column| column.value(filter).map(|value| (column, value)))
}

/// A statement selecting `what` from at most `:examined_max` candidates
/// within `:low ..= :high`, newest first unless `ascending`. The index is
/// named: without statistics the planner might walk the table by position
/// to save the sort, which for a sparse value reads the whole table.
pub(super) fn candidates_sql(column: Option<Column>, what: &str, ascending: bool) -> String {
    let order = if ascending { "ASC" } else { "DESC" };
    let (indexed, equal) = match column {
        Some(column) => {
            let name = column.name();
            (format!("INDEXED BY runs_by_{name}"), format!("{name} = :scan_value AND"))
        }
        None => (String::new(), String::new()),
    };
    format!(
        "SELECT {what} FROM runs {indexed} WHERE {equal} first_position BETWEEN :low AND :high \
         ORDER BY first_position {order} LIMIT :examined_max"
    )
}

/// The statement of a page of `filter`: each candidate's position, and its
/// run when it matches (the document is read for matches only).
pub(super) fn page_sql(filter: &RunFilter, ascending: bool) -> String {
    let document = "SELECT run FROM run_documents WHERE run_documents.first_position = runs.first_position";
    let what = format!("first_position, CASE WHEN {MATCHES} THEN ({document}) END");
    candidates_sql(scan_target(filter).map(|(column, _)| column), &what, ascending)
}

/// The parameters of a candidates statement with [`MATCHES`].
pub(super) struct Parameters(Vec<(&'static str, Value)>);

impl Parameters {
    pub(super) fn new(
        filter: &RunFilter,
        tenants: Option<&BTreeSet<String>>,
        range: (i64, i64),
        examined_max: usize,
    ) -> Result<Parameters, ProjectionError> {
        let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
        let tenants = match tenants {
            None => Value::Null,
            Some(tenants) => Value::Text(
                serde_json::to_string(tenants).map_err(|e| ProjectionError::Sqlite(format!("tenants: {e}")))?,
            ),
        };
        let scan_value = scan_target(filter).map(|(_, value)| value);
        Ok(Parameters(vec![
            (":scan_value", text(scan_value)),
            (":low", Value::Integer(range.0)),
            (":high", Value::Integer(range.1)),
            (":examined_max", Value::Integer(i64::try_from(examined_max).unwrap_or(i64::MAX))),
            (":workspace_id", text(Column::Workspace.value(filter))),
            (":tenant_id", text(Column::Tenant.value(filter))),
            (":status", text(Column::Status.value(filter))),
            (":outcome", text(Column::Outcome.value(filter))),
            (":operation_type", text(Column::OperationType.value(filter))),
            (":initiator", text(Column::Initiator.value(filter))),
            (":from", text(filter.from.map(from_bound))),
            (":to", text(filter.to.map(to_bound))),
            (":tenants", tenants),
        ]))
    }

    /// Replaces the value of parameter `name` (`:low`, `:examined_max` …).
    pub(super) fn set(&mut self, name: &str, value: Value) {
        for (parameter, bound) in &mut self.0 {
            if *parameter == name {
                *bound = value.clone();
            }
        }
    }

    /// Binds every parameter `statement` has (a statement need not use all).
    pub(super) fn bind(&self, statement: &mut Statement<'_>) -> Result<(), ProjectionError> {
        for (name, value) in &self.0 {
            if let Some(index) = statement.parameter_index(name).map_err(sqlite)? {
                statement.raw_bind_parameter(index, value).map_err(sqlite)?;
            }
        }
        Ok(())
    }
}

/// The first run created at or after a time.
pub(super) const FIRST_FROM: &str = "SELECT first_position FROM runs INDEXED BY runs_by_created_at \
    WHERE created_at >= ?1 ORDER BY created_at ASC, first_position ASC LIMIT 1";
/// The last run created at or before a time.
pub(super) const LAST_TO: &str = "SELECT first_position FROM runs INDEXED BY runs_by_created_at \
    WHERE created_at <= ?1 ORDER BY created_at DESC, first_position DESC LIMIT 1";

/// The first positions of the runs created within the filter's time range,
/// as an inclusive range, or `None` when no run was. Positions and
/// `created_at` grow together, so a time range is a position range.
pub(super) fn position_range(db: &Connection, filter: &RunFilter) -> Result<Option<(i64, i64)>, ProjectionError> {
    let first = |sql: &str, bound: String| {
        db.prepare_cached(sql)
            .and_then(|mut statement| statement.query_row([bound], |row| row.get::<_, i64>(0)).optional())
            .map_err(sqlite)
    };
    let low = match filter.from {
        None => 0,
        Some(from) => match first(FIRST_FROM, from_bound(from))? {
            Some(position) => position,
            None => return Ok(None),
        },
    };
    let high = match filter.to {
        None => i64::MAX,
        Some(to) => match first(LAST_TO, to_bound(to))? {
            Some(position) => position,
            None => return Ok(None),
        },
    };
    Ok((low <= high).then_some((low, high)))
}

/// What one walk of the candidates found: the matching runs in walk order,
/// and the position of the last candidate examined when the walk may go on
/// past it.
pub(super) struct Scanned {
    pub(super) runs: Vec<Run>,
    pub(super) more: Option<u64>,
}

/// Walks the candidates within `range` (newest first, or oldest first when
/// `ascending`), keeping the runs that match, until the page is full (then
/// one more candidate tells whether a cursor is worth handing out) or
/// [`EXAMINED_PER_RUN_MAX`] × `limit` candidates were examined.
pub(super) fn walk(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    range: (i64, i64),
    ascending: bool,
    limit: usize,
) -> Result<Scanned, ProjectionError> {
    let mut scanned = Scanned { runs: Vec::new(), more: None };
    if range.0 > range.1 {
        return Ok(scanned);
    }
    let budget = limit.saturating_mul(EXAMINED_PER_RUN_MAX);
    let mut statement = db.prepare_cached(&page_sql(filter, ascending)).map_err(sqlite)?;
    Parameters::new(filter, tenants, range, budget.saturating_add(1))?.bind(&mut statement)?;
    let mut rows = statement.raw_query();
    let mut examined = 0usize;
    let mut last = None;
    while let Some(row) = rows.next().map_err(sqlite)? {
        if scanned.runs.len() == limit || examined == budget {
            scanned.more = last;
            break;
        }
        examined += 1;
        let position: i64 = row.get(0).map_err(sqlite)?;
        if let Some(document) = row.get_ref(1).map_err(sqlite)?.as_blob_or_null().map_err(sqlite_type)? {
            scanned.runs.push(super::document::decode(document, position)?);
        }
        last = u64::try_from(position).ok();
    }
    Ok(scanned)
}

fn sqlite_type(error: rusqlite::types::FromSqlError) -> ProjectionError {
    ProjectionError::Corrupt { key: "run_documents.run".into(), detail: error.to_string() }
}
