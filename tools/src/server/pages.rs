//! The operator console: server-rendered HTML pages (maud) under the same
//! access rules as the JSON API, which they read through the same
//! functions. A browser cannot send a bearer header: it signs in at
//! `/admin/login` (`login.rs`) and sends a session cookie (`session.rs`).
//!
//! One page per module: the run list and the run search (`list.rs`, with
//! its charts: outcomes over time in `over_time.rs`, totals by outcome in
//! `chart.rs`), a run (`detail.rs`), the viewer's inbox (`inbox.rs`), and
//! for service sessions the audit trail (`audit.rs`) and the authority
//! state (`authority.rs`). No page runs a script (the
//! Content-Security-Policy of `headers.rs` allows none): forms and links
//! do the work, and auto-refresh is a `Refresh` header.

pub mod audit;
pub mod authority;
mod chart;
pub mod detail;
mod form;
pub mod inbox;
pub mod list;
mod over_time;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use opledger::domain::model::RunOutcome;

use crate::server::auth::{require_service_reader, Caller, PageViewer};
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::tokens::Grant;

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
pub struct PageCaller(pub Caller);

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

/// The caller of a page that spans every workspace (the audit trail, the
/// authority state): an actor gets the JSON route's 403, as a page.
pub struct PageService(pub Caller);

impl axum::extract::FromRequestParts<AppState> for PageService {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<PageService, PageError> {
        let PageCaller(caller) = PageCaller::from_request_parts(parts, state).await?;
        require_service_reader(&caller)?;
        Ok(PageService(caller))
    }
}

/// A whole page. The style comes from `/admin/style.css`, not an inline
/// `<style>`, so the Content-Security-Policy (`headers.rs`) needs no
/// exception; the sign-out button is a plain form (no script).
pub(crate) fn layout(title: &str, content: Markup) -> Markup {
    page(title, html! {}, content)
}

/// A page of a signed-in viewer: [`layout`] with the console's navigation,
/// which names the pages this viewer may open.
pub(crate) fn console(title: &str, caller: &Caller, content: Markup) -> Markup {
    let (who, service) = match &caller.0 {
        Grant::Service { name } => (format!("service {name}"), true),
        Grant::Actor { actor_id } => (format!("actor {actor_id}"), false),
    };
    let navigation = html! {
        nav class="console" {
            a href="/admin/operations" { "Operations" }
            a href="/admin/inbox" { "Inbox" }
            @if service {
                a href="/admin/audit" { "Audit" }
                a href="/admin/authority" { "Authority" }
            }
            form class="search" method="get" action="/admin/search" {
                input name="run" placeholder="run id" aria-label="run id" size="36";
                button type="submit" { "Go to run" }
            }
            span class="who" { "Signed in as " (who) }
        }
    };
    page(title, navigation, content)
}

fn page(title: &str, navigation: Markup, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · opledger" }
                link rel="stylesheet" href="/admin/style.css";
            }
            body {
                header { (navigation) }
                main { (content) }
                footer { form method="post" action="/admin/logout" { button type="submit" { "Sign out" } } }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e4e7eb;vertical-align:top}
.badge{padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;font-weight:600}
.succeeded{background:#d1fae5;color:#065f46}.partially_succeeded{background:#fef3c7;color:#92400e}
.failed{background:#fee2e2;color:#991b1b}.blocked{background:#e0e7ff;color:#3730a3;border:1px dashed #3730a3}
.pending{background:#f3f4f6;color:#374151}.cancelled{background:#fff;color:#4b5563;border:1px solid #9ca3af}.fail{color:#991b1b}.pass{color:#065f46}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center;margin-bottom:1rem}form.filters input[name=limit]{width:6rem}.error{color:#991b1b}
figure.chart,figure.over-time{margin:0 0 1rem}figure.over-time svg{max-width:100%;height:auto}
details.over-time-numbers{margin:.25rem 0;color:#52606d}details.over-time-numbers table{width:auto;font-size:.85rem}figcaption{color:#52606d}nav.pages,nav.ranges{display:flex;gap:1.5rem;margin:.5rem 0 1rem}
nav.console{display:flex;gap:1.25rem;align-items:center;padding-bottom:.75rem;margin-bottom:1rem;border-bottom:1px solid #e4e7eb}
nav.console form.search{display:flex;gap:.4rem;margin-left:auto}nav.console .who{color:#52606d}
table.summary-counts{width:auto}table.summary-counts th,table.summary-counts td{padding:.1rem .6rem .1rem 0;border:0}
section.failure{border-left:4px solid #ef4444;padding-left:1rem}section.lease{border-left:4px solid #10b981;padding-left:1rem}
section.lease.lapsed{border-left-color:#f59e0b}section.decision{margin-bottom:1.5rem}
tr.unread td{font-weight:600;background:#eff6ff}tr.as-of td{background:#fef9c3}
pre{margin:0;white-space:pre-wrap;font-size:.8rem}.note{color:#52606d}
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dt{font-weight:600}";

/// `GET /admin/style.css` (no token): the pages' one stylesheet, the same
/// for everyone, and the sign-in page needs it too.
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

/// A log position, linked to the audit trail as of it (where the entry of
/// the event at that position is the first, and marked) for a service; an
/// actor may not read the audit trail, so it sees the number alone.
fn position_link(caller: &Caller, position: u64) -> Markup {
    html! {
        @if matches!(caller.0, Grant::Service { .. }) {
            a class="position" href=(format!("/admin/audit?as_of={position}")) { (position) }
        } @else {
            span class="position" { (position) }
        }
    }
}
