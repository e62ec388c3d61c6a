//! `/admin/inbox`: the signed-in actor's notifications (one per run it
//! started that reached an outcome), newest first, the unread ones marked.
//! Read-only: marking read is a write, an API action of the host
//! application (`POST /v1/notifications/{run}/read`, service token).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use opledger_projections::notifications::INBOX_PAGE_MAX;
use serde::Deserialize;
use utoipa::IntoParams;

use super::form::href;
use super::{badge, console, time, PageCaller, PageError};
use crate::server::auth::Caller;
use crate::server::body::QueryParams;
use crate::server::reads::{inbox_cursor, inbox_for, inbox_owner, NotificationsBody};
use crate::server::state::AppState;
use crate::tokens::Grant;

/// Notifications one inbox page shows; "Older notifications" goes on.
pub const INBOX_PAGE_NOTIFICATIONS: usize = INBOX_PAGE_MAX;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxPageQuery {
    /// Whose inbox: a service session names the actor; an actor session
    /// may name only itself (403 otherwise).
    pub actor_id: Option<String>,
    /// Only the unread notifications.
    #[serde(default)]
    pub unread: bool,
    /// Notifications a page shows: 1 to 200 (clamped), default 200.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// The cursor of the page's "Older notifications" link.
    pub cursor: Option<String>,
}

impl InboxPageQuery {
    /// This inbox (the same actor and filter) from `cursor` on.
    fn href(&self, cursor: Option<&str>) -> String {
        let fields = [
            ("actor_id", self.actor_id.clone()),
            ("unread", self.unread.then(|| "true".to_owned())),
            ("limit", self.limit.map(|limit| limit.to_string())),
            ("cursor", cursor.map(str::to_owned)),
        ];
        href("/admin/inbox", &fields)
    }
}

/// `GET /admin/inbox`: the viewer's notifications as an HTML page.
#[utoipa::path(get, path = "/admin/inbox", tag = "monitoring", params(InboxPageQuery),
    responses((status = 200, description = "The page (for a service session without `actor_id`, a form that asks for one).",
        content_type = "text/html", body = String)),
    security(("bearer" = []), ("session" = [])))]
pub async fn inbox(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    QueryParams(query): QueryParams<InboxPageQuery>,
) -> Result<Response, PageError> {
    let service = matches!(caller.0, Grant::Service { .. });
    if service && query.actor_id.is_none() {
        let body = console(
            "Inbox",
            &caller,
            html! { h1 { "Inbox" } (form(&caller, &query)) p { "Whose inbox? Name an actor." } },
        );
        return Ok(body.into_response());
    }
    let actor_id = inbox_owner(&caller, query.actor_id.clone())?;
    let before = inbox_cursor(query.cursor.as_deref())?;
    let limit = query.limit.unwrap_or(INBOX_PAGE_NOTIFICATIONS);
    let inbox = inbox_for(&state, &actor_id, query.unread, before, limit).await?;
    let body = console("Inbox", &caller, page(&caller, &query, &actor_id, &inbox));
    Ok(body.into_response())
}

fn form(caller: &Caller, query: &InboxPageQuery) -> Markup {
    html! {
        form class="filters" method="get" action="/admin/inbox" {
            @if matches!(caller.0, Grant::Service { .. }) {
                input name="actor_id" placeholder="actor" value=(query.actor_id.clone().unwrap_or_default());
            }
            label { input name="unread" type="checkbox" value="true" checked[query.unread]; " unread only" }
            input name="limit" type="number" min="1" max=(INBOX_PAGE_MAX) placeholder="per page"
                value=(query.limit.map(|limit| limit.to_string()).unwrap_or_default());
            button type="submit" { "Show" }
        }
    }
}

fn page(caller: &Caller, query: &InboxPageQuery, actor_id: &str, inbox: &NotificationsBody) -> Markup {
    let all = href("/admin/inbox", &[("actor_id", query.actor_id.clone())]);
    html! {
        h1 { "Inbox of " (actor_id) }
        p class="unread-count" data-unread=(inbox.unread) { (inbox.unread) " unread" }
        (form(caller, query))
        table class="inbox" {
            thead { tr { th {} th { "Notification" } th { "Outcome" } th { "Tenant" } th { "When" } th {} } }
            tbody {
                @for notification in &inbox.notifications {
                    tr class=(if notification.read { "read" } else { "unread" }) data-run=(notification.run_id)
                        data-read=(notification.read) {
                        td { @if notification.read { "read" } @else { strong { "unread" } } }
                        td { strong { (notification.title) } br; (notification.body) }
                        td { (badge(notification.outcome)) }
                        td { (notification.tenant_id) }
                        td { (time(Some(notification.created_at))) }
                        td { a href={ "/admin/operations/" (notification.run_id) } { "View run" } }
                    }
                }
            }
        }
        @if inbox.notifications.is_empty() {
            p { @if query.unread { "Nothing unread. " a href=(all) { "Show every notification" } } @else { "No notifications." } }
        }
        nav class="pages" {
            @if query.cursor.is_some() { a href=(query.href(None)) { "Newest notifications" } }
            @if let Some(cursor) = &inbox.next_cursor {
                a rel="next" href=(query.href(Some(cursor))) { "Older notifications" }
            }
        }
    }
}
