//! `/admin/operations/{run}`: one run as an operator reads it — why it
//! was blocked or how it failed, its lease while it runs, every decision
//! made about it (the start gate's and each attempt's, each check with the
//! authority position behind it) and its timeline.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use maud::{html, Markup};
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger::domain::run::Run;
use opledger::domain::sanitize::SummaryCounts;
use opledger_projections::explain::{decisions_at, RecordedDecision};
use opledger_projections::monitoring;
use uuid::Uuid;

use super::{badge, console, position_link, time, PageCaller, PageError};
use crate::server::auth::Caller;
use crate::server::body::{PathParam, QueryParams};
use crate::server::error::ApiError;
use crate::server::reads::{run_for, RunDetail, RunDetailQuery};
use crate::server::state::AppState;

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
    let decisions = decisions_of(&state, detail.run.id)?;
    let body = console(&format!("Run {}", detail.run.id), &caller, run_page(&caller, &detail, &decisions));
    Ok(body.into_response())
}

/// Every decision recorded about the run, oldest first: Monitoring knows
/// where they are, the log holds them. The caller has applied the access
/// rule to the run.
fn decisions_of(state: &AppState, run_id: Uuid) -> Result<Vec<RecordedDecision>, ApiError> {
    let positions = monitoring::decision_positions(&*state.projector()?.reader()?, run_id)?;
    Ok(decisions_at(state.ledger()?.log(), &positions)?)
}

fn run_page(caller: &Caller, detail: &RunDetail, decisions: &[RecordedDecision]) -> Markup {
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
        (lease(run))
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
            dt { "Completed" } dd { (time(run.completed_at)) }
            dt { "Summary counts" } dd { (summary_counts(&run.summary_counts)) }
        }
        h2 { "Decisions" }
        @for decision in decisions { (decision_section(caller, decision)) }
        @if decisions.is_empty() { p { "No decision recorded." } }
        h2 { "Timeline" }
        table class="timeline" {
            thead { tr { th { "Position" } th { "Event" } th { "What happened" } th { "Attempt" } th { "Recorded" } } }
            tbody {
                @for event in events {
                    // The detail's events are the run's stream, so each is a run event.
                    @let entry = monitoring::timeline_entry(event).ok();
                    tr {
                        td { (event.position) }
                        td { (event.event_type) }
                        td { (entry.as_ref().map(|entry| entry.summary.as_str()).unwrap_or_default()) }
                        td { (entry.as_ref().map(|entry| entry.attempt).unwrap_or_default()) }
                        td { (time(Some(event.recorded_at))) }
                    }
                }
            }
        }
        @if let Some(next) = detail.timeline_next {
            p { a href=(format!("/admin/operations/{}?timeline_from={next}", run.id)) { "Later events" } }
        }
    }
}

/// The lease of a running attempt: when it lapses, and when it was last
/// renewed (a lease runs its full length from its last renewal: the
/// start, a progress report, or a heartbeat that appended `lease_renewed`).
/// For a run that is not running, the last attempt abandoned, if any.
fn lease(run: &Run) -> Markup {
    let length = Duration::seconds(i64::from(run.lease_seconds));
    html! {
        @if let (RunStatus::Running, Some(expires)) = (run.status, run.lease_expires_at) {
            @let lapsed = expires <= Utc::now();
            section class={ "lease" @if lapsed { " lapsed" } } data-lease=(if lapsed { "lapsed" } else { "live" }) {
                h2 { "Lease of attempt " (run.attempt) }
                dl {
                    dt { "Lease" } dd { (run.lease_seconds) " s from each renewal" }
                    dt { "Last renewed" } dd class="renewed" { (time(Some(expires - length))) }
                    dt { "Expires" } dd class="expires" { (time(Some(expires))) }
                    dt { "State" } dd {
                        @if lapsed {
                            "lapsed: the server abandons the attempt within about a second"
                        } @else {
                            "live: the worker is heard from"
                        }
                    }
                }
                p class="note" {
                    "A heartbeat renews the lease on the record only once more than half of it is used, "
                    "so the last renewal can be up to half a lease older than the last heartbeat."
                }
            }
        }
        @if let Some(attempt) = run.abandoned_attempt {
            p class="abandoned" { "Attempt " (attempt) " was abandoned: its lease lapsed without a heartbeat." }
        }
    }
}

fn decision_section(caller: &Caller, recorded: &RecordedDecision) -> Markup {
    let decision = &recorded.decision;
    let verdict = if decision.allowed() { "allowed" } else { "denied" };
    html! {
        section class="decision" data-gate=(recorded.gate) data-attempt=(decision.attempt) data-outcome=(verdict) {
            h3 {
                @if recorded.gate == "start" { "Start gate" } @else { "Attempt " (decision.attempt) }
                ": " span class=(if decision.allowed() { "pass" } else { "fail" }) { (verdict) }
            }
            p {
                "Decided " (time(Some(recorded.recorded_at))) " at log position " (recorded.position)
                ", on the authority as of position " (position_link(caller, decision.authority_position)) "."
                @if let Some(reason) = decision.reason_code {
                    " " strong { (reason.as_str()) } ": " (reason.operator_message())
                    @if decision.retryable { " (retryable)" }
                }
            }
            table class="checks" {
                thead { tr { th { "Check" } th { "Result" } th { "Fact" } th { "Because of position" } } }
                tbody {
                    @for check in &decision.checks {
                        tr {
                            td { (check.check.operator_word()) }
                            td class=(if check.passed { "pass" } else { "fail" }) { (if check.passed { "passed" } else { "failed" }) }
                            td { (check.fact) }
                            td { @if let Some(position) = check.source_position { (position_link(caller, position)) } }
                        }
                    }
                }
            }
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
