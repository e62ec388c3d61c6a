//! `/admin/operations`, the run list: the list's filters (a time range
//! included), the charts of the whole filter (over time and in total),
//! "Newer" / "Older" paging that keeps the filter, and an optional
//! auto-refresh; `/admin/search`, which goes from a run id to its page.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::{html, Markup};
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger_projections::monitoring;
use serde::Deserialize;
use utoipa::IntoParams;

use super::form::{href, link_time, local_value, PageTime};
use super::{badge, chart::chart, console, over_time::outcomes_over_time, time, PageCaller, PageError};
use crate::server::body::QueryParams;
use crate::server::error::ApiError;
use crate::server::reads::{list_runs_for, run_outcomes_over_time_for, run_totals_for, visible_run, RunQuery};
use crate::server::state::AppState;

/// The refresh period the page offers, in seconds.
pub const AUTO_REFRESH_SECONDS: u32 = 30;
/// Shortest refresh period a page takes: a shorter one is raised to it, so
/// an open tab never reloads the list more often than this.
pub const REFRESH_SECONDS_MIN: u32 = 5;
/// Longest refresh period a page takes; a longer one is lowered to it.
pub const REFRESH_SECONDS_MAX: u32 = 3600;
/// The quick time ranges the page links, as (label, hours back from now).
const RECENT_RANGES: [(&str, i64); 3] = [("last hour", 1), ("last day", 24), ("last week", 24 * 7)];

/// The list page's query: the JSON list's fields (`RunQuery`), its times
/// also as a browser's `datetime-local` field sends them, and `refresh`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPageQuery {
    pub workspace_id: Option<String>,
    pub tenant_id: Option<String>,
    #[param(value_type = Option<RunStatus>)]
    pub status: Option<String>,
    #[param(value_type = Option<RunOutcome>)]
    pub outcome: Option<String>,
    pub operation_type: Option<String>,
    /// An actor id, or `system` for the system principal.
    pub initiator: Option<String>,
    /// Runs queued at or after this time: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]`
    /// in UTC (what a browser's `datetime-local` field sends).
    #[param(value_type = Option<String>)]
    pub from: Option<PageTime>,
    /// Runs queued at or before this time, in the same forms as `from`.
    #[param(value_type = Option<String>)]
    pub to: Option<PageTime>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// A cursor of the page's "Newer" or "Older" link.
    pub cursor: Option<String>,
    /// Reload the page every this many seconds (5 to 3600; outside, the
    /// nearest bound): the answer carries a `Refresh` header.
    pub refresh: Option<u32>,
}

impl ListPageQuery {
    fn run_query(&self) -> RunQuery {
        RunQuery {
            workspace_id: self.workspace_id.clone(),
            tenant_id: self.tenant_id.clone(),
            status: self.status.clone(),
            outcome: self.outcome.clone(),
            operation_type: self.operation_type.clone(),
            initiator: self.initiator.clone(),
            from: self.from.map(|PageTime(at)| at),
            to: self.to.map(|PageTime(at)| at),
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }

    fn refresh_seconds(&self) -> Option<u32> {
        self.refresh.map(|seconds| seconds.clamp(REFRESH_SECONDS_MIN, REFRESH_SECONDS_MAX))
    }

    /// The list page with this query's fields, `cursor` and `refresh`
    /// as given: paging never drops the filter (whose cursors it needs).
    fn href(&self, cursor: Option<&str>, refresh: Option<u32>) -> String {
        let fields = [
            ("workspace_id", self.workspace_id.clone()),
            ("tenant_id", self.tenant_id.clone()),
            ("status", self.status.clone()),
            ("outcome", self.outcome.clone()),
            ("operation_type", self.operation_type.clone()),
            ("initiator", self.initiator.clone()),
            ("from", link_time(self.from)),
            ("to", link_time(self.to)),
            ("limit", self.limit.map(|limit| limit.to_string())),
            ("cursor", cursor.map(str::to_owned)),
            ("refresh", refresh.map(|seconds| seconds.to_string())),
        ];
        href("/admin/operations", &fields)
    }

    /// This filter over another time range, from its first page.
    fn with_range(&self, from: Option<PageTime>, to: Option<PageTime>) -> String {
        ListPageQuery { from, to, ..self.clone() }.href(None, self.refresh_seconds())
    }
}

/// `GET /admin/operations`: the run list as an HTML page, with the list's
/// query fields and the charts of the whole filter by outcome: over time
/// and in total.
#[utoipa::path(get, path = "/admin/operations", tag = "monitoring", params(ListPageQuery),
    responses((status = 200, description = "The page; with `refresh`, a `Refresh` header.", content_type = "text/html", body = String,
        headers(("Refresh" = Option<u32>, description = "Seconds until the browser reloads the page (with `refresh` only)")))),
    security(("bearer" = []), ("session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    QueryParams(query): QueryParams<ListPageQuery>,
) -> Result<Response, PageError> {
    let run_query = query.run_query();
    let page = list_runs_for(&state, &caller.viewer(), &run_query).await?;
    let totals = run_totals_for(&state, &caller.viewer(), &run_query).await?;
    let over_time = run_outcomes_over_time_for(&state, &caller.viewer(), &run_query, Utc::now()).await?;
    let refresh = query.refresh_seconds();
    let body = console(
        "Operations",
        &caller,
        html! {
            h1 { "Operations" }
            (filters(&query))
            (ranges(&query))
            (outcomes_over_time(&over_time))
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
                    a rel="prev" href=(query.href(Some(cursor), refresh)) { "Newer operations" }
                }
                @if let Some(cursor) = &page.next_cursor {
                    a rel="next" href=(query.href(Some(cursor), refresh)) { "Older operations" }
                }
            }
            (refresh_note(&query, refresh))
        },
    );
    let mut response = body.into_response();
    if let Some(seconds) = refresh {
        response.headers_mut().insert("refresh", HeaderValue::from(seconds));
    }
    Ok(response)
}

fn filters(query: &ListPageQuery) -> Markup {
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
            label { "Queued from " input name="from" type="datetime-local" step="1" value=(local_value(query.from)); }
            label { "to " input name="to" type="datetime-local" step="1" value=(local_value(query.to)); " UTC" }
            input name="limit" type="number" min="1" max=(monitoring::PAGE_SIZE_MAX) placeholder="per page"
                value=(query.limit.map(|limit| limit.to_string()).unwrap_or_default());
            label {
                input name="refresh" type="checkbox"
                    value=(query.refresh_seconds().unwrap_or(AUTO_REFRESH_SECONDS)) checked[query.refresh.is_some()];
                " auto-refresh"
            }
            button type="submit" { "Filter" }
        }
    }
}

/// Links to the same filter over the recent past, or over any time.
fn ranges(query: &ListPageQuery) -> Markup {
    let now = Utc::now();
    html! {
        nav class="ranges" aria-label="time range" {
            @for (label, hours) in RECENT_RANGES {
                a href=(query.with_range(Some(PageTime(now - Duration::hours(hours))), None)) { (label) }
            }
            @if query.from.is_some() || query.to.is_some() {
                a href=(query.with_range(None, None)) { "any time" }
            }
        }
    }
}

/// Whether the page reloads itself, and the link that turns it on or off.
fn refresh_note(query: &ListPageQuery, refresh: Option<u32>) -> Markup {
    let cursor = query.cursor.as_deref();
    html! {
        p class="refresh note" {
            @if let Some(seconds) = refresh {
                "This page reloads every " (seconds) " s. "
                a href=(query.href(cursor, None)) { "Stop refreshing" }
            } @else {
                a href=(query.href(cursor, Some(AUTO_REFRESH_SECONDS))) { "Refresh every " (AUTO_REFRESH_SECONDS) " s" }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// A run id (a UUID); surrounding spaces are ignored.
    pub run: Option<String>,
}

/// `GET /admin/search?run=ID`: to the run's page when the viewer may see
/// it. An unknown run, a malformed id and a run the access rule hides
/// (404 or 403 on its page) all get the same 404 page: a search must not
/// tell a viewer which runs exist beyond what it may see.
#[utoipa::path(get, path = "/admin/search", tag = "monitoring", params(SearchQuery),
    responses(
        (status = 303, description = "To the run's page (`/admin/operations/{run}`); without a run id, to the list.",
            headers(("Location" = String)))),
    security(("bearer" = []), ("session" = [])))]
pub async fn search(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    QueryParams(query): QueryParams<SearchQuery>,
) -> Result<Response, PageError> {
    let id = query.run.as_deref().map(str::trim).unwrap_or_default();
    if id.is_empty() {
        return Ok(Redirect::to("/admin/operations").into_response());
    }
    match visible_run(&state, &caller.viewer(), id).await {
        Ok(run) => Ok(Redirect::to(&format!("/admin/operations/{}", run.id)).into_response()),
        Err(error) if hidden(&error) => {
            // A console page, not a bare error page: the navigation and its
            // search field stay, to try another id.
            let body = console(
                "No such run",
                &caller,
                html! {
                    h1 { "No such run" }
                    p class="error" data-code="not_found" { "no such run: " (id) }
                    p { a href="/admin/operations" { "Back to operations" } }
                },
            );
            Ok((StatusCode::NOT_FOUND, body).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// The answers a search turns into "no such run".
fn hidden(error: &ApiError) -> bool {
    matches!(error.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST)
}
