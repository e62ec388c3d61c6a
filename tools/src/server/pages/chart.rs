//! The run list's chart: every run of the filter (not just the page) by
//! outcome, one labelled bar per outcome, blocked apart from failed.

use maud::{html, Markup};
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger_projections::monitoring::{self, RunTotals};

/// The outcomes in the order the charts show them, with their colours
/// (the chart over time stacks them in this order too).
pub(super) const CHART_OUTCOMES: [(RunOutcome, &str); 6] = [
    (RunOutcome::Succeeded, "#10b981"),
    (RunOutcome::PartiallySucceeded, "#f59e0b"),
    (RunOutcome::Failed, "#ef4444"),
    (RunOutcome::Blocked, "#6366f1"),
    (RunOutcome::Pending, "#9ca3af"),
    (RunOutcome::Cancelled, "#4b5563"),
];
/// Width of the longest bar of the chart, in pixels.
const CHART_BAR_WIDTH_MAX: u64 = 300;
/// Height of one bar's row of the chart, in pixels.
const CHART_ROW_HEIGHT: u64 = 24;

/// One labelled bar per outcome with its number, then the totals.
pub(super) fn chart(totals: &RunTotals) -> Markup {
    let count = |outcome: RunOutcome| totals.by_outcome.get(outcome.as_str()).copied().unwrap_or(0);
    let largest = CHART_OUTCOMES.iter().map(|(outcome, _)| count(*outcome)).max().unwrap_or(0).max(1);
    let height = CHART_ROW_HEIGHT * CHART_OUTCOMES.len() as u64;
    let status = |status: RunStatus| totals.by_status.get(status.as_str()).copied().unwrap_or(0);
    html! {
        figure class="chart" {
            svg role="img" aria-label="Operations by outcome" width=(170 + CHART_BAR_WIDTH_MAX + 60) height=(height) {
                title { "Operations by outcome" }
                @for (row, (outcome, color)) in CHART_OUTCOMES.iter().enumerate() {
                    @let y = row as u64 * CHART_ROW_HEIGHT;
                    @let n = count(*outcome);
                    @let width = n * CHART_BAR_WIDTH_MAX / largest;
                    g data-outcome=(outcome.as_str()) data-count=(n) {
                        // An SVG element must be closed: HTML would nest what follows inside it.
                        rect x="0" y=(y + 6) width="12" height="12" fill=(color) {}
                        text x="18" y=(y + 16) font-size="13" { (outcome.operator_word()) }
                        rect x="170" y=(y + 4) width=(width) height=(CHART_ROW_HEIGHT - 8) fill=(color) {}
                        text class="count" x=(176 + width) y=(y + 16) font-size="13" { (n) }
                    }
                }
            }
            figcaption class="totals" data-total=(totals.total) {
                strong { (totals.total) " operations" }
                " match these filters: "
                (status(RunStatus::Queued)) " queued, "
                (status(RunStatus::Running)) " running, "
                (status(RunStatus::Completed)) " completed."
                @if !totals.complete {
                    " Counted over the newest " (monitoring::TOTALS_RUNS_EXAMINED_MAX) " runs only."
                }
            }
        }
    }
}
