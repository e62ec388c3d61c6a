//! `/admin/authority` (service sessions): the authority state as of a log
//! position — workspaces, tenants, members, capabilities, connections and
//! the catalog — each fact with the position that made it true, linked to
//! the audit trail. The JSON `GET /v1/authority` answer, as tables.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use opledger_projections::authority::{AuthorityReport, Member};

use super::{console, position_link, PageError, PageService};
use crate::server::auth::Caller;
use crate::server::body::QueryParams;
use crate::server::integrity::{authority_report_for, AuthorityQuery};
use crate::server::state::AppState;

/// Rows one table of the page shows at most; a larger state is narrowed
/// with the filters (a workspace, a tenant, an actor).
pub const AUTHORITY_ROWS_PER_TABLE_MAX: usize = 500;

/// `GET /admin/authority` (service sessions; an actor's gets the JSON
/// route's 403, as a page): the authority state as of `as_of`.
#[utoipa::path(get, path = "/admin/authority", operation_id = "authority_page", tag = "monitoring", params(AuthorityQuery),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    security(("bearer" = []), ("session" = [])))]
pub async fn authority(
    State(state): State<AppState>,
    PageService(caller): PageService,
    QueryParams(query): QueryParams<AuthorityQuery>,
) -> Result<Response, PageError> {
    let form = filters(&query);
    let report = authority_report_for(&state, query).await?;
    let body = console("Authority", &caller, content(&caller, form, &report));
    Ok(body.into_response())
}

fn filters(query: &AuthorityQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form class="filters" method="get" action="/admin/authority" {
            input name="as_of" type="number" min="0" placeholder="as of position (default: head)"
                value=(query.as_of.map(|p| p.to_string()).unwrap_or_default());
            input name="workspace_id" placeholder="workspace" value=(value(&query.workspace_id));
            input name="tenant_id" placeholder="tenant" value=(value(&query.tenant_id));
            input name="actor_id" placeholder="actor" value=(value(&query.actor_id));
            button type="submit" { "Show" }
        }
    }
}

fn content(caller: &Caller, form: Markup, report: &AuthorityReport) -> Markup {
    let members = |members: &[Member]| {
        html! { @for (i, m) in members.iter().enumerate() { @if i > 0 { ", " } (m.actor_id) " (" (position_link(caller, m.position)) ")" } }
    };
    html! {
        h1 { "Authority as of position " span data-as-of=(report.as_of) { (report.as_of) } }
        p class="note" {
            "The last authority event at or before it is at position " (position_link(caller, report.authority_position))
            ". Facts no longer true then (a removed member, a revoked capability) are not listed: the audit trail has the history."
        }
        (form)
        h2 { "Workspaces" }
        table class="workspaces" {
            thead { tr { th { "Workspace" } th { "Registered at" } th { "Members (since position)" } } }
            tbody {
                @for w in report.workspaces.iter().take(AUTHORITY_ROWS_PER_TABLE_MAX) {
                    tr { td { (w.workspace_id) } td { (position_link(caller, w.registered_position)) } td { (members(&w.members)) } }
                }
            }
        }
        h2 { "Tenants" }
        table class="tenants" {
            thead { tr { th { "Tenant" } th { "Workspace" } th { "Lifecycle" } th { "Write gate" } th { "Default connection" } th { "Members" } th { "Capabilities" } } }
            tbody {
                @for t in report.tenants.iter().take(AUTHORITY_ROWS_PER_TABLE_MAX) {
                    tr data-tenant=(t.tenant_id) {
                        td { (t.tenant_id) " (" (position_link(caller, t.registered_position)) ")" }
                        td { (t.workspace_id) }
                        td { (t.lifecycle.value.as_str()) " (" (position_link(caller, t.lifecycle.position)) ")" }
                        td { (if t.write_gate_open.value { "open" } else { "closed" }) " (" (position_link(caller, t.write_gate_open.position)) ")" }
                        td {
                            @if let Some(c) = &t.default_connection { (c.value) " (" (position_link(caller, c.position)) ")" } @else { "—" }
                        }
                        td { (members(&t.members)) }
                        td {
                            @for c in &t.capabilities {
                                div class="capability" { (c.actor_id) ": " (c.capability) " (" (position_link(caller, c.position)) ")" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Provider connections" }
        table class="connections" {
            thead { tr { th { "Connection" } th { "Tenant" } th { "Status" } } }
            tbody {
                @for c in report.connections.iter().take(AUTHORITY_ROWS_PER_TABLE_MAX) {
                    tr { td { (c.connection_id) } td { (c.tenant_id) } td { (c.status.value.as_str()) " (" (position_link(caller, c.status.position)) ")" } }
                }
            }
        }
        h2 { "Operation catalog" }
        table class="catalog" {
            thead { tr { th { "Operation type" } th { "Requires" } th { "Provider" } th { "Writes" } th { "System authority" } th { "Attempts" } th { "Lease" } th { "Since" } } }
            tbody {
                @for entry in report.catalog.iter().take(AUTHORITY_ROWS_PER_TABLE_MAX) {
                    @let spec = &entry.spec;
                    tr {
                        td { (spec.operation_type) } td { (spec.required_capability) }
                        td { (yes(spec.provider_backed)) } td { (yes(spec.writes)) } td { (yes(spec.system_authority_allowed)) }
                        td { (spec.max_attempts) } td { (spec.lease_seconds) " s" }
                        td { (position_link(caller, entry.position)) }
                    }
                }
            }
        }
        @if [report.workspaces.len(), report.tenants.len(), report.connections.len(), report.catalog.len()]
            .iter().any(|n| *n > AUTHORITY_ROWS_PER_TABLE_MAX) {
            p class="note" { "Each table shows its first " (AUTHORITY_ROWS_PER_TABLE_MAX) " rows: narrow with a workspace, tenant or actor." }
        }
    }
}

fn yes(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}
