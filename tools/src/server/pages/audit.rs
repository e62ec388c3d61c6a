//! `/admin/audit` (service sessions): the audit trail with the JSON
//! route's filters, "as of position", and "Older" paging that keeps them.
//! A check's position on a run page links here, as of that position: the
//! entry of the authority event behind the check comes first, marked.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use opledger_projections::audit::{AuditEntry, AuditPage, PAGE_SIZE_MAX};
use serde::Deserialize;
use utoipa::IntoParams;

use super::form::{href, link_time, local_value, PageTime};
use super::{console, time, PageError, PageService};
use crate::server::body::QueryParams;
use crate::server::reads::{audit_page_for, AuditQuery};
use crate::server::state::AppState;

/// The audit page's query: the JSON route's fields (`AuditQuery`), its
/// times also as a browser's `datetime-local` field sends them.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditPageQuery {
    pub tenant_id: Option<String>,
    /// An actor id, or `system` for what the system principal did.
    pub actor_id: Option<String>,
    /// A run id (a UUID).
    pub run_id: Option<String>,
    /// An event type (`run_blocked`, `capability_revoked`, …).
    pub action: Option<String>,
    /// Recorded at or after: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` in UTC.
    #[param(value_type = Option<String>)]
    pub from: Option<PageTime>,
    /// Recorded before, in the same forms as `from`.
    #[param(value_type = Option<String>)]
    pub to: Option<PageTime>,
    /// Only entries at or before this log position; the entry at it is marked.
    pub as_of: Option<u64>,
    /// 1 to 1,000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The cursor of the page's "Older entries" link.
    pub cursor: Option<String>,
}

impl AuditPageQuery {
    fn audit_query(&self) -> AuditQuery {
        AuditQuery {
            tenant_id: self.tenant_id.clone(),
            actor_id: self.actor_id.clone(),
            run_id: self.run_id.clone(),
            action: self.action.clone(),
            from: self.from.map(|PageTime(at)| at),
            to: self.to.map(|PageTime(at)| at),
            as_of: self.as_of,
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }

    fn href(&self, cursor: Option<&str>) -> String {
        let fields = [
            ("tenant_id", self.tenant_id.clone()),
            ("actor_id", self.actor_id.clone()),
            ("run_id", self.run_id.clone()),
            ("action", self.action.clone()),
            ("from", link_time(self.from)),
            ("to", link_time(self.to)),
            ("as_of", self.as_of.map(|position| position.to_string())),
            ("limit", self.limit.map(|limit| limit.to_string())),
            ("cursor", cursor.map(str::to_owned)),
        ];
        href("/admin/audit", &fields)
    }
}

/// `GET /admin/audit` (service sessions; an actor's gets the JSON route's
/// 403, as a page): one page of the audit trail, newest first.
#[utoipa::path(get, path = "/admin/audit", operation_id = "audit_page", tag = "monitoring", params(AuditPageQuery),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    security(("bearer" = []), ("session" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    PageService(caller): PageService,
    QueryParams(query): QueryParams<AuditPageQuery>,
) -> Result<Response, PageError> {
    let page = audit_page_for(&state, &query.audit_query()).await?;
    let head = state.ledger()?.log().head().position;
    let body = console("Audit", &caller, content(&query, &page, head));
    Ok(body.into_response())
}

fn content(query: &AuditPageQuery, page: &AuditPage, head: u64) -> Markup {
    html! {
        h1 { "Audit trail" }
        p class="note" {
            @if let Some(as_of) = query.as_of { "As of log position " (as_of) " (the head is at " (head) ")." }
            @else { "Up to the head of the log, position " (head) "." }
        }
        (filters(query))
        table class="audit" {
            thead { tr { th { "Position" } th { "Recorded" } th { "Action" } th { "Caused by" } th { "Tenant" } th { "Run" } th { "What happened" } } }
            tbody { @for entry in &page.entries { (row(query, entry)) } }
        }
        @if page.entries.is_empty() { p { "No entries match." } }
        nav class="pages" {
            @if query.cursor.is_some() { a href=(query.href(None)) { "Newest entries" } }
            @if let Some(cursor) = &page.next_cursor { a rel="next" href=(query.href(Some(cursor))) { "Older entries" } }
        }
    }
}

fn row(query: &AuditPageQuery, entry: &AuditEntry) -> Markup {
    let marked = query.as_of == Some(entry.position);
    html! {
        tr class=[marked.then_some("as-of")] data-position=(entry.position) id={ "position-" (entry.position) } {
            td { (entry.position) }
            td { (time(Some(entry.recorded_at))) }
            td { (entry.action) }
            td { (entry.caused_by) }
            td { (entry.tenant_id.as_deref().unwrap_or("—")) }
            td { @if let Some(run) = entry.run_id { a href={ "/admin/operations/" (run) } { "View run" } } }
            td {
                (entry.summary)
                details { summary { "details" } pre { (serde_json::to_string_pretty(&entry.details).unwrap_or_default()) } }
            }
        }
    }
}

fn filters(query: &AuditPageQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form class="filters" method="get" action="/admin/audit" {
            input name="tenant_id" placeholder="tenant" value=(value(&query.tenant_id));
            input name="actor_id" placeholder="caused by (actor or system)" value=(value(&query.actor_id));
            input name="run_id" placeholder="run id" value=(value(&query.run_id));
            input name="action" placeholder="action (capability_revoked, …)" value=(value(&query.action));
            label { "From " input name="from" type="datetime-local" step="1" value=(local_value(query.from)); }
            label { "to " input name="to" type="datetime-local" step="1" value=(local_value(query.to)); " UTC" }
            input name="as_of" type="number" min="1" placeholder="as of position"
                value=(query.as_of.map(|p| p.to_string()).unwrap_or_default());
            input name="limit" type="number" min="1" max=(PAGE_SIZE_MAX) placeholder="per page"
                value=(query.limit.map(|limit| limit.to_string()).unwrap_or_default());
            button type="submit" { "Filter" }
        }
    }
}
