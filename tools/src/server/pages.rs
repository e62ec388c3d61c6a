//! The Monitoring pages, server-rendered with maud: `/admin/operations`
//! and `/admin/operations/{run}`, under the same 404/403 rule as the JSON
//! API. A browser cannot send a bearer header, so `/admin/login` takes a
//! token once and keeps it in an HttpOnly cookie.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use opledger::domain::model::RunOutcome;
use opledger::domain::run::Run;
use serde::Deserialize;

use crate::server::auth::Caller;
use crate::server::body::{PathParam, QueryParams};
use crate::server::error::ApiError;
use crate::server::reads::{list_runs_for, run_for, RunDetail, RunDetailQuery, RunQuery};
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
        Ok(PageCaller(<Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(parts, state).await?))
    }
}

fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · opledger" }
                style { (STYLE) }
            }
            body { main { (content) } }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e4e7eb}
.badge{padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;font-weight:600}
.succeeded{background:#d1fae5;color:#065f46}.partially_succeeded{background:#fef3c7;color:#92400e}
.failed{background:#fee2e2;color:#991b1b}.blocked{background:#e0e7ff;color:#3730a3;border:1px dashed #3730a3}
.pending{background:#f3f4f6;color:#374151}.cancelled{background:#fff;color:#4b5563;border:1px solid #9ca3af}.fail{color:#991b1b}.pass{color:#065f46}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;margin-bottom:1rem}.error{color:#991b1b}
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dt{font-weight:600}";

fn badge(outcome: RunOutcome) -> Markup {
    html! { span class={ "badge " (outcome.as_str()) } data-outcome=(outcome.as_str()) { (outcome.operator_word()) } }
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

pub async fn list(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    QueryParams(query): QueryParams<RunQuery>,
) -> Result<Response, PageError> {
    let page = list_runs_for(&state, &caller.viewer(), &query).await?;
    let body = layout(
        "Operations",
        html! {
            h1 { "Operations" }
            (filters(&query))
            (chart(&page.runs))
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
            @if let Some(cursor) = &page.next_cursor {
                p { a href={ "/admin/operations?cursor=" (cursor) } { "Older operations" } }
            }
        },
    );
    Ok(body.into_response())
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
                @for outcome in ["pending", "succeeded", "partially_succeeded", "failed", "blocked", "cancelled"] {
                    option value=(outcome) selected[query.outcome.as_deref() == Some(outcome)] { (outcome.replace('_', " ")) }
                }
            }
            select name="status" {
                option value="" { "any status" }
                @for status in ["queued", "running", "completed"] {
                    option value=(status) selected[query.status.as_deref() == Some(status)] { (status) }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

/// Outcomes per hour of the runs on this page, as stacked bars.
fn chart(runs: &[Run]) -> Markup {
    const OUTCOMES: [RunOutcome; 6] = [
        RunOutcome::Succeeded,
        RunOutcome::PartiallySucceeded,
        RunOutcome::Failed,
        RunOutcome::Blocked,
        RunOutcome::Pending,
        RunOutcome::Cancelled,
    ];
    const COLORS: [&str; 6] = ["#10b981", "#f59e0b", "#ef4444", "#6366f1", "#9ca3af", "#4b5563"];
    const HEIGHT: u32 = 120;
    const BAR: u32 = 24;
    let mut hours: BTreeMap<String, [u32; 6]> = BTreeMap::new();
    for run in runs {
        let Some(at) = run.queued_at.or(run.completed_at) else { continue };
        let slot = OUTCOMES.iter().position(|o| *o == run.outcome).unwrap_or(4);
        hours.entry(at.format("%m-%d %H:00").to_string()).or_default()[slot] += 1;
    }
    let tallest = hours.values().map(|counts| counts.iter().sum::<u32>()).max().unwrap_or(1).max(1);
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (index, (hour, counts)) in hours.iter().enumerate() {
        let x = 4 + index as u32 * (BAR + 8);
        let mut top = HEIGHT;
        for (slot, count) in counts.iter().enumerate().filter(|(_, count)| **count > 0) {
            let height = count * HEIGHT / tallest;
            top -= height;
            bars.push((x, top, height, COLORS[slot], format!("{}: {count}", OUTCOMES[slot].operator_word())));
        }
        labels.push((x, hour.clone()));
    }
    html! {
        svg class="chart" role="img" aria-label="Outcomes over time" width="480" height=(HEIGHT + 20) {
            title { "Outcomes over time" }
            @for (x, y, height, color, label) in &bars {
                rect x=(x) y=(y) width=(BAR) height=(height) fill=(color) { title { (label) } }
            }
            @for (x, hour) in &labels {
                text x=(x) y=(HEIGHT + 14) font-size="8" { (hour) }
            }
        }
    }
}

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
            dt { "Summary counts" } dd { (serde_json::to_string(&run.summary_counts).unwrap_or_default()) }
        }
        @if let Some(decision) = &run.latest_decision {
            h2 { "Latest decision (attempt " (decision.attempt) "): " (if decision.allowed() { "allowed" } else { "denied" }) }
            p { "Authority as of log position " (decision.authority_position) }
            table class="checks" {
                thead { tr { th { "Check" } th { "Result" } th { "Fact" } th { "Because of position" } } }
                tbody {
                    @for check in &decision.checks {
                        tr {
                            td { (format!("{:?}", check.check)) }
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

pub async fn login_form() -> Response {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in" }
            form method="post" action="/admin/login" {
                label { "Token " input type="password" name="token" autocomplete="off"; }
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

pub async fn login(State(state): State<AppState>, Form(login): Form<Login>) -> Result<Response, PageError> {
    match state.tokens.authenticate(&login.token) {
        Ok(Some(_)) => {
            let cookie = format!("opledger_token={}; HttpOnly; SameSite=Strict; Path=/admin", login.token);
            Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/admin/operations")).into_response())
        }
        Ok(None) => Err(ApiError::unauthorized().into()),
        Err(error) => Err(ApiError::internal(error.to_string()).into()),
    }
}
