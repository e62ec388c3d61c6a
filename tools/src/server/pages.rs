//! The Monitoring pages, server-rendered with maud: `/admin/operations`
//! and `/admin/operations/{run}`, under the same 404/403 rule as the JSON
//! API. A browser cannot send a bearer header: it signs in at
//! `/admin/login` (`login.rs`) and sends a session cookie (`session.rs`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger::domain::sanitize::SummaryCounts;
use opledger_projections::monitoring::{self, RunTotals};

use crate::server::auth::{Caller, PageViewer};
use crate::server::body::{PathParam, QueryParams};
use crate::server::error::ApiError;
use crate::server::reads::{list_runs_for, run_for, run_totals_for, RunDetail, RunDetailQuery, RunQuery};
use crate::server::state::AppState;

/// An error shown as a page, with the API's status code.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        PageError(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let ApiError { status, code, message } = self.0;
        let body = layout(
            "Monitoring",
            html! {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p class="error" data-code=(code) { (message) }
                @if status == StatusCode::UNAUTHORIZED { p { a href="/admin/login" { "Sign in with a token" } } }
                p { a href="/admin/operations" { "Back to operations" } }
            },
        );
        (status, body).into_response()
    }
}

/// The caller of a page: an authentication failure renders as a page too.
pub struct PageCaller(Caller);

impl axum::extract::FromRequestParts<AppState> for PageCaller {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<PageCaller, PageError> {
        let PageViewer(caller) =
            <PageViewer as axum::extract::FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        Ok(PageCaller(caller))
    }
}

/// A whole page. The style comes from `/admin/style.css`, not an inline
/// `<style>`, so the Content-Security-Policy (`headers.rs`) needs no
/// exception; the sign-out button is a plain form (no script).
pub(crate) fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · opledger" }
                link rel="stylesheet" href="/admin/style.css";
            }
            body {
                main { (content) }
                footer { form method="post" action="/admin/logout" { button type="submit" { "Sign out" } } }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e4e7eb}
.badge{padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;font-weight:600}
.succeeded{background:#d1fae5;color:#065f46}.partially_succeeded{background:#fef3c7;color:#92400e}
.failed{background:#fee2e2;color:#991b1b}.blocked{background:#e0e7ff;color:#3730a3;border:1px dashed #3730a3}
.pending{background:#f3f4f6;color:#374151}.cancelled{background:#fff;color:#4b5563;border:1px solid #9ca3af}.fail{color:#991b1b}.pass{color:#065f46}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;margin-bottom:1rem}form.filters input[name=limit]{width:6rem}.error{color:#991b1b}
figure.chart{margin:0 0 1rem}figcaption{color:#52606d}nav.pages{display:flex;gap:1.5rem;margin-top:1rem}
table.summary-counts{width:auto}table.summary-counts th,table.summary-counts td{padding:.1rem .6rem .1rem 0;border:0}
section.failure{border-left:4px solid #ef4444;padding-left:1rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dt{font-weight:600}";

/// `GET /admin/style.css`: the pages' one stylesheet (no token: it is the
/// same for everyone, and the sign-in page needs it too).
/// `GET /admin/style.css` (no token): the pages' stylesheet.
#[utoipa::path(get, path = "/admin/style.css", tag = "monitoring",
    responses((status = 200, description = "The stylesheet.", content_type = "text/css", body = String)))]
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn badge(outcome: RunOutcome) -> Markup {
    html! { span class={ "badge " (outcome.as_str()) } data-outcome=(outcome.as_str()) { (outcome.operator_word()) } }
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// `GET /admin/operations`: the run list as an HTML page, with the list's
/// query fields and the chart of the whole filter by outcome.
#[utoipa::path(get, path = "/admin/operations", tag = "monitoring", params(RunQuery),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    QueryParams(query): QueryParams<RunQuery>,
) -> Result<Response, PageError> {
    let page = list_runs_for(&state, &caller.viewer(), &query).await?;
    let totals = run_totals_for(&state, &caller.viewer(), &query).await?;
    let body = layout(
        "Operations",
        html! {
            h1 { "Operations" }
            (filters(&query))
            (chart(&totals))
            table {
                thead { tr { th { "Operation" } th { "Tenant" } th { "Initiator" } th { "Status" } th { "Outcome" } th { "Reason" } th { "Queued" } th {} } }
                tbody {
                    @for run in &page.runs {
                        tr data-run=(run.id) {
                            td { (run.operation_type) }
                            td { (run.tenant_id) }
                            td { (run.initiator) }
                            td { (run.status.as_str()) }
                            td { (badge(run.outcome)) }
                            td { (run.reason_code.map_or("", |r| r.as_str())) }
                            td { (time(run.queued_at.or(run.completed_at))) }
                            td { a href={ "/admin/operations/" (run.id) } { "View run" } }
                        }
                    }
                }
            }
            @if page.runs.is_empty() { p { "No operations match." } }
            nav class="pages" {
                @if let Some(cursor) = &page.prev_cursor {
                    a rel="prev" href=(list_href(&query, cursor)) { "Newer operations" }
                }
                @if let Some(cursor) = &page.next_cursor {
                    a rel="next" href=(list_href(&query, cursor)) { "Older operations" }
                }
            }
        },
    );
    Ok(body.into_response())
}

/// The list page at `cursor` under the same filters and page size as
/// `query`: paging never drops the filter (whose cursors it needs).
fn list_href(query: &RunQuery, cursor: &str) -> String {
    let time = |at: &Option<DateTime<Utc>>| at.map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    let fields = [
        ("workspace_id", query.workspace_id.clone()),
        ("tenant_id", query.tenant_id.clone()),
        ("status", query.status.clone()),
        ("outcome", query.outcome.clone()),
        ("operation_type", query.operation_type.clone()),
        ("initiator", query.initiator.clone()),
        ("from", time(&query.from)),
        ("to", time(&query.to)),
        ("limit", query.limit.map(|limit| limit.to_string())),
        ("cursor", Some(cursor.to_owned())),
    ];
    let set: Vec<(&str, String)> = fields.into_iter().filter_map(|(name, value)| Some((name, value?))).collect();
    // Encoding pairs of strings cannot fail; an empty query would only
    // lose the filter, never show another tenant's runs.
    let encoded = serde_urlencoded::to_string(&set).unwrap_or_default();
    format!("/admin/operations?{encoded}")
}

fn filters(query: &RunQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form class="filters" method="get" action="/admin/operations" {
            input name="workspace_id" placeholder="workspace" value=(value(&query.workspace_id));
            input name="tenant_id" placeholder="tenant" value=(value(&query.tenant_id));
            input name="operation_type" placeholder="operation type" value=(value(&query.operation_type));
            input name="initiator" placeholder="initiator (actor or system)" value=(value(&query.initiator));
            select name="outcome" {
                option value="" { "any outcome" }
                @for outcome in RunOutcome::ALL {
                    option value=(outcome.as_str()) selected[query.outcome.as_deref() == Some(outcome.as_str())] { (outcome.operator_word()) }
                }
            }
            select name="status" {
                option value="" { "any status" }
                @for status in RunStatus::ALL {
                    option value=(status.as_str()) selected[query.status.as_deref() == Some(status.as_str())] { (status.as_str()) }
                }
            }
            input name="limit" type="number" min="1" max=(monitoring::PAGE_SIZE_MAX) placeholder="per page"
                value=(query.limit.map(|limit| limit.to_string()).unwrap_or_default());
            button type="submit" { "Filter" }
        }
    }
}

/// The outcomes in the order the chart shows them, with their colours.
const CHART_OUTCOMES: [(RunOutcome, &str); 6] = [
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

/// Every run of the filter (not just this page) by outcome: one labelled
/// bar per outcome with its number, then the totals.
fn chart(totals: &RunTotals) -> Markup {
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

/// `GET /admin/operations/{run}`: one run as an HTML page.
#[utoipa::path(get, path = "/admin/operations/{run}", tag = "monitoring",
    params(("run" = String, Path, description = "The run id (a UUID)."), RunDetailQuery),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    security(("bearer" = []), ("session" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    PathParam(id): PathParam,
    QueryParams(query): QueryParams<RunDetailQuery>,
) -> Result<Response, PageError> {
    let detail = run_for(&state, &caller.viewer(), &id, query.timeline_from.unwrap_or(1)).await?;
    let body = layout(&format!("Run {}", detail.run.id), run_page(&detail));
    Ok(body.into_response())
}

fn run_page(detail: &RunDetail) -> Markup {
    let (run, events) = (&detail.run, &detail.timeline);
    html! {
        p { a href="/admin/operations" { "← Operations" } }
        h1 { (run.operation_type) " on " (run.tenant_id) " " (badge(run.outcome)) }
        @if run.outcome == RunOutcome::Blocked {
            section class="blocked-reason" {
                h2 { "Blocked" }
                p { strong { (run.reason_code.map_or("", |r| r.as_str())) } ": " (run.reason_code.map_or("", |r| r.operator_message())) }
                p { "Next step: " (run.next_step.as_deref().unwrap_or("")) }
            }
        }
        @if let Some(failure) = &run.failure {
            section class="failure" {
                h2 { "Failure" }
                p {
                    @if let Some(code) = &failure.code { strong data-failure-code=(code) { (code) } ": " }
                    span class="failure-message" { (failure.message) }
                }
            }
        }
        @if let Some(by) = &run.cancelled_by {
            section class="cancelled-reason" {
                h2 { "Cancelled" }
                p { "Cancelled by " (by) @if let Some(reason) = &run.cancel_reason { ": " (reason) } }
            }
        }
        dl {
            dt { "Run" } dd { (run.id) }
            dt { "Workspace" } dd { (run.workspace_id) }
            dt { "Initiator" } dd { (run.initiator) }
            dt { "Authority" } dd { (run.authority_mode.as_str()) }
            dt { "Status" } dd { (run.status.as_str()) }
            dt { "Pinned connection" } dd { (run.provider_connection_id.as_deref().unwrap_or("—")) }
            dt { "Attempts" } dd { (run.attempts) " of " (run.max_attempts) }
            dt { "Queued" } dd { (time(run.queued_at)) }
            dt { "Started" } dd { (time(run.started_at)) }
            @if run.lease_expires_at.is_some() {
                dt { "Lease expires" } dd { (time(run.lease_expires_at)) }
            }
            dt { "Completed" } dd { (time(run.completed_at)) }
            dt { "Summary counts" } dd { (summary_counts(&run.summary_counts)) }
        }
        @if let Some(decision) = &run.latest_decision {
            h2 { "Latest decision (attempt " (decision.attempt) "): " (if decision.allowed() { "allowed" } else { "denied" }) }
            p { "Authority as of log position " (decision.authority_position) }
            table class="checks" {
                thead { tr { th { "Check" } th { "Result" } th { "Fact" } th { "Because of position" } } }
                tbody {
                    @for check in &decision.checks {
                        tr {
                            td { (check.check.operator_word()) }
                            td class=(if check.passed { "pass" } else { "fail" }) { (if check.passed { "passed" } else { "failed" }) }
                            td { (check.fact) }
                            td { (check.source_position.map_or_else(String::new, |p| p.to_string())) }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        table class="timeline" {
            thead { tr { th { "Position" } th { "Event" } th { "Recorded" } } }
            tbody {
                @for event in events {
                    tr { td { (event.position) } td { (event.event_type) } td { (time(Some(event.recorded_at))) } }
                }
            }
        }
        @if let Some(next) = detail.timeline_next {
            p { a href=(format!("/admin/operations/{}?timeline_from={next}", run.id)) { "Later events" } }
        }
    }
}

/// The counts a worker reported, one row per known key; none is a line.
fn summary_counts(counts: &SummaryCounts) -> Markup {
    html! {
        @if counts.is_empty() {
            "none reported"
        } @else {
            table class="summary-counts" {
                @for key in SummaryCounts::KEYS {
                    @if let Some(count) = counts.get(key) {
                        tr { th { (key) } td { (count) } }
                    }
                }
            }
        }
    }
}
