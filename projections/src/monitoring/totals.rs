//! Counts of a filtered run list (SPEC 5: counts by outcome): every run the
//! filter matches, by status and by outcome, not just one page of them.
//!
//! Counted by walking the same index a list of the filter walks, newest
//! first, up to [`TOTALS_RUNS_EXAMINED_MAX`] entries: one rule of what
//! matches (`RunFilter::matches` and the visible tenants) for the list and
//! its counts, and a bounded read. Past the bound the answer says it is
//! incomplete instead of reading on.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use opledger::domain::model::{RunOutcome, RunStatus};
use opledger::domain::run::Run;
use opledger::log::views::View;
use serde::{Deserialize, Serialize};

use super::keys;
use super::query::{indexed_run, is_empty_range, position_range, RunFilter};
use crate::error::ProjectionError;

/// Most index entries one count examines (matching or not); past it the
/// counts are those of the newest entries examined, marked incomplete.
pub const TOTALS_RUNS_EXAMINED_MAX: usize = 10_000;
/// Index entries read from the view at a time while counting.
const TOTALS_CHUNK_ENTRIES: usize = 512;

/// Runs matching a filter: the total, by status and by outcome (every known
/// status and outcome present, zeros included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    #[serde(rename = "total")]
    pub total: u64,
    #[serde(rename = "by_status")]
    pub by_status: BTreeMap<String, u64>,
    #[serde(rename = "by_outcome")]
    pub by_outcome: BTreeMap<String, u64>,
    /// False when the count stopped at [`TOTALS_RUNS_EXAMINED_MAX`]
    /// entries: then it covers the newest runs of the filter only.
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
    fn count(&mut self, run: &Run) {
        self.total += 1;
        *self.by_status.entry(run.status.as_str().to_owned()).or_default() += 1;
        *self.by_outcome.entry(run.outcome.as_str().to_owned()).or_default() += 1;
    }
}

/// The counts of every run matching `filter` (within `tenants`, when
/// given: the tenants an actor may see).
pub fn totals_in_tenants(
    view: &View,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
) -> Result<RunTotals, ProjectionError> {
    totals_bounded(view, filter, tenants, TOTALS_RUNS_EXAMINED_MAX)
}

/// [`totals_in_tenants`] examining at most `examined_max` index entries.
pub(super) fn totals_bounded(
    view: &View,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    examined_max: usize,
) -> Result<RunTotals, ProjectionError> {
    let mut totals = RunTotals::default();
    let Some((low, high)) = position_range(view, filter)? else { return Ok(totals) };
    let (index, value) = filter.scan_target();
    let lower = Bound::Included(keys::index(index, &value, low));
    let mut upper = Bound::Included(keys::index(index, &value, high));
    let mut examined = 0usize;
    while !is_empty_range(&lower, &upper) {
        let want = TOTALS_CHUNK_ENTRIES.min(examined_max - examined);
        if want == 0 {
            totals.complete = view.range(lower, upper, true, 1)?.is_empty();
            break;
        }
        let chunk = view.range(lower.clone(), upper.clone(), true, want)?;
        if chunk.is_empty() {
            break;
        }
        for (key, entry) in chunk {
            examined += 1;
            let run = indexed_run(view, &key, &entry)?;
            if filter.matches(&run) && tenants.is_none_or(|t| t.contains(&run.tenant_id)) {
                totals.count(&run);
            }
            upper = Bound::Excluded(key);
        }
    }
    Ok(totals)
}
