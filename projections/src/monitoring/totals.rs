//! Counts of a filtered run list (SPEC 5: counts by outcome): every run the
//! filter matches, by status and by outcome, not just one page of them.
//!
//! A filter that names at most a tenant is answered from the counters
//! (`run_counts`), exactly, at any size. Any other filter is counted over
//! the same candidates a list of it walks, newest first, up to
//! [`TOTALS_RUNS_EXAMINED_MAX`] of them, with the same test of a match:
//! past the bound the answer says it is incomplete instead of reading on.

use std::collections::{BTreeMap, BTreeSet};

use opledger::domain::model::{RunOutcome, RunStatus};
use rusqlite::types::Value;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::columns::{BY_OUTCOME, BY_STATUS, SCOPE_ALL, SCOPE_TENANT, TOTAL};
use super::query::{counter_value, RunFilter};
use super::scan::{self, candidates_sql, scan_target, Parameters, MATCHES};
use crate::error::ProjectionError;
use crate::store::sqlite;

/// Most candidate rows one count examines (matching or not); past it the
/// counts are those of the newest candidates examined, marked incomplete.
pub const TOTALS_RUNS_EXAMINED_MAX: usize = 10_000;
/// Most tenants whose counters one answer sums; a larger set of visible
/// tenants is counted like any other filter.
const TOTALS_TENANT_COUNTERS_MAX: usize = 1024;

/// Runs matching a filter: the total, by status and by outcome (every known
/// status and outcome present, zeros included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunTotals {
    #[serde(rename = "total")]
    pub total: u64,
    #[serde(rename = "by_status")]
    pub by_status: BTreeMap<String, u64>,
    #[serde(rename = "by_outcome")]
    pub by_outcome: BTreeMap<String, u64>,
    /// False when the count stopped at [`TOTALS_RUNS_EXAMINED_MAX`]
    /// candidates: then it covers the newest runs of the filter only.
    #[serde(rename = "complete")]
    pub complete: bool,
}

impl Default for RunTotals {
    fn default() -> RunTotals {
        RunTotals {
            total: 0,
            by_status: RunStatus::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect(),
            by_outcome: RunOutcome::ALL.iter().map(|o| (o.as_str().to_owned(), 0)).collect(),
            complete: true,
        }
    }
}

impl RunTotals {
    /// Adds `count` runs of `status` and `outcome`; names that are not
    /// statuses or outcomes mean the file is corrupt.
    fn add(&mut self, status: &str, outcome: &str, count: u64) -> Result<(), ProjectionError> {
        self.add_to(BY_STATUS, status, count)?;
        self.add_to(BY_OUTCOME, outcome, count)?;
        self.total += count;
        Ok(())
    }

    fn add_to(&mut self, dimension: &str, name: &str, count: u64) -> Result<(), ProjectionError> {
        let counts = if dimension == BY_STATUS { &mut self.by_status } else { &mut self.by_outcome };
        match counts.get_mut(name) {
            Some(counted) => {
                *counted += count;
                Ok(())
            }
            None => Err(ProjectionError::Corrupt {
                key: format!("runs {dimension} {name:?}"),
                detail: format!("not a known {dimension}"),
            }),
        }
    }
}

/// The counts of every run matching `filter` (within `tenants`, when
/// given: the tenants an actor may see).
pub fn totals_in_tenants(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
) -> Result<RunTotals, ProjectionError> {
    match counter_scopes(filter, tenants) {
        Some(scopes) => from_counters(db, &scopes),
        None => totals_bounded(db, filter, tenants, TOTALS_RUNS_EXAMINED_MAX),
    }
}

/// The counter scopes `(scope, tenant_id)` whose sum is the answer, when
/// the filter names nothing but (perhaps) a tenant; `None` otherwise.
fn counter_scopes(filter: &RunFilter, tenants: Option<&BTreeSet<String>>) -> Option<Vec<(&'static str, String)>> {
    let tenant_only = RunFilter { tenant_id: filter.tenant_id.clone(), ..RunFilter::default() };
    if *filter != tenant_only {
        return None;
    }
    let tenant_scope = |tenant: &String| (SCOPE_TENANT, tenant.clone());
    match (&filter.tenant_id, tenants) {
        (None, None) => Some(vec![(SCOPE_ALL, String::new())]),
        (Some(tenant), None) => Some(vec![tenant_scope(tenant)]),
        (Some(tenant), Some(visible)) => Some(visible.get(tenant).map(tenant_scope).into_iter().collect()),
        (None, Some(visible)) if visible.len() <= TOTALS_TENANT_COUNTERS_MAX => {
            Some(visible.iter().map(tenant_scope).collect())
        }
        (None, Some(_)) => None,
    }
}

fn from_counters(db: &Connection, scopes: &[(&'static str, String)]) -> Result<RunTotals, ProjectionError> {
    const COUNTERS: &str = "SELECT dimension, name, count FROM run_counts \
        WHERE scope = ?1 AND tenant_id = ?2 AND dimension IN ('total', 'status', 'outcome')";
    let mut totals = RunTotals::default();
    let mut statement = db.prepare_cached(COUNTERS).map_err(sqlite)?;
    for (scope, tenant) in scopes {
        let mut rows = statement.query(params![scope, tenant]).map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            let (dimension, name): (String, String) = (row.get(0).map_err(sqlite)?, row.get(1).map_err(sqlite)?);
            let count = counter_value(row.get(2).map_err(sqlite)?, &dimension, &name)?;
            match dimension.as_str() {
                TOTAL => totals.total += count,
                _ => totals.add_to(&dimension, &name, count)?,
            }
        }
    }
    Ok(totals)
}

/// The counts of the matches among the newest `examined_max` candidates
/// of the filter (what a list of it walks).
pub(super) fn totals_bounded(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    examined_max: usize,
) -> Result<RunTotals, ProjectionError> {
    let mut totals = RunTotals::default();
    let Some(range) = scan::position_range(db, filter)? else { return Ok(totals) };
    let column = scan_target(filter).map(|(column, _)| column);
    let mut parameters = Parameters::new(filter, tenants, range, examined_max)?;
    let mut statement = db.prepare_cached(&grouped_sql(filter)).map_err(sqlite)?;
    parameters.bind(&mut statement)?;
    let (mut examined, mut oldest) = (0u64, range.1.saturating_add(1));
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(sqlite)? {
        let matched: bool = row.get(0).map_err(sqlite)?;
        let (status, outcome): (String, String) = (row.get(1).map_err(sqlite)?, row.get(2).map_err(sqlite)?);
        let count = counter_value(row.get(3).map_err(sqlite)?, "examined", &status)?;
        examined += count;
        oldest = oldest.min(row.get(4).map_err(sqlite)?);
        if matched {
            totals.add(&status, &outcome, count)?;
        }
    }
    drop(rows);
    if examined >= examined_max as u64 {
        // Any older candidate at all: one is enough to know.
        parameters.set(":high", Value::Integer(oldest - 1));
        parameters.set(":examined_max", Value::Integer(1));
        totals.complete = !any_candidate(db, column, &parameters)?;
    }
    Ok(totals)
}

/// The statement counting the candidates of `filter` by whether they
/// match, status and outcome, with the oldest position of each group.
pub(super) fn grouped_sql(filter: &RunFilter) -> String {
    let column = scan_target(filter).map(|(column, _)| column);
    let candidates = candidates_sql(column, &format!("first_position, status, outcome, ({MATCHES}) AS matched"), false);
    format!(
        "SELECT matched, status, outcome, count(*), min(first_position) FROM ({candidates}) \
         GROUP BY matched, status, outcome"
    )
}

/// Whether the filter has a candidate within the parameters' range.
pub(super) fn any_candidate(
    db: &Connection,
    column: Option<scan::Column>,
    parameters: &Parameters,
) -> Result<bool, ProjectionError> {
    let sql = format!("SELECT EXISTS ({})", candidates_sql(column, "1", false));
    let mut statement = db.prepare_cached(&sql).map_err(sqlite)?;
    parameters.bind(&mut statement)?;
    let mut rows = statement.raw_query();
    match rows.next().map_err(sqlite)? {
        Some(row) => row.get(0).map_err(sqlite),
        None => Ok(false),
    }
}
