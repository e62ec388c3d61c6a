//! Read routes: run list and detail (under the access rule), audit trail,
//! notifications. Every read first waits for the projections to reflect
//! the appends acknowledged before it.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use opledger::domain::model::{RunOutcome, RunStatus};
use opledger::domain::run::Run;
use opledger::{Envelope, Log};
use opledger_projections::access::{list_access, run_access, Access, ListAccess, Viewer};
use opledger_projections::audit::{self, AuditError, AuditFilter};
use opledger_projections::monitoring::{self, ListError, OutcomesOverTime, RunFilter, RunPage, RunTotals};
use opledger_projections::notifications::{self, Notification};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::server::auth::{Caller, Service, ServiceReader};
use crate::server::body::{run_id, JsonBody, PathParam, QueryParams};
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::server::writes::Empty;
use crate::tokens::Grant;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    pub workspace_id: Option<String>,
    pub tenant_id: Option<String>,
    #[param(value_type = Option<RunStatus>)]
    pub status: Option<String>,
    #[param(value_type = Option<RunOutcome>)]
    pub outcome: Option<String>,
    pub operation_type: Option<String>,
    /// An actor id, or `system` for the system principal.
    pub initiator: Option<String>,
    /// Runs queued at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Runs queued before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// 1 to 200, default 50 (not on the summary).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// A `next_cursor` or `prev_cursor` listed with the same filters (not on the summary).
    pub cursor: Option<String>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(name: &str, text: &Option<String>) -> Result<Option<T>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    serde_json::from_value(Value::String(text.clone()))
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("{name} {text:?} is not one of the known values")))
}

impl RunQuery {
    pub fn filter(&self) -> Result<RunFilter, ApiError> {
        Ok(RunFilter {
            workspace_id: self.workspace_id.clone(),
            tenant_id: self.tenant_id.clone(),
            status: parse_enum::<RunStatus>("status", &self.status)?,
            outcome: parse_enum::<RunOutcome>("outcome", &self.outcome)?,
            operation_type: self.operation_type.clone(),
            initiator: self.initiator.as_deref().map(monitoring::parse_initiator),
            from: self.from,
            to: self.to,
        })
    }
}

/// The filter of `query` and, under the list rule of SPEC 6, the tenants
/// `viewer` may see within it (`None`: every tenant).
async fn visible_filter(
    state: &AppState,
    viewer: &Viewer,
    query: &RunQuery,
) -> Result<(RunFilter, Option<BTreeSet<String>>), ApiError> {
    state.fresh_projections().await?;
    let filter = query.filter()?;
    let access = state.projector()?.with_authority(|authority| {
        list_access(authority, viewer, query.workspace_id.as_deref(), query.tenant_id.as_deref())
    })?;
    match access {
        ListAccess::All => Ok((filter, None)),
        ListAccess::Tenants(tenants) => Ok((filter, Some(tenants))),
        ListAccess::NotFound => Err(ApiError::not_found("no such workspace or tenant")),
        ListAccess::Forbidden => Err(ApiError::forbidden("operations.view is required to list these runs")),
    }
}

/// The list rule of SPEC 6, then the page (only visible tenants' runs).
pub async fn list_runs_for(state: &AppState, viewer: &Viewer, query: &RunQuery) -> Result<RunPage, ApiError> {
    let (filter, allowed) = visible_filter(state, viewer, query).await?;
    let db = state.projector()?.reader()?;
    let limit = query.limit.unwrap_or(monitoring::PAGE_SIZE_DEFAULT);
    monitoring::list_in_tenants(&db, &filter, allowed.as_ref(), query.cursor.as_deref(), limit).map_err(|error| {
        match error {
            ListError::InvalidCursor(why) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", why),
            ListError::Projection(error) => error.into(),
        }
    })
}

/// The counts of every run of the list `query` names (its filters, the
/// same list rule), whatever page `limit` and `cursor` point at.
pub async fn run_totals_for(state: &AppState, viewer: &Viewer, query: &RunQuery) -> Result<RunTotals, ApiError> {
    let (filter, allowed) = visible_filter(state, viewer, query).await?;
    let db = state.projector()?.reader()?;
    Ok(monitoring::totals_in_tenants(&db, &filter, allowed.as_ref())?)
}

/// The runs of the list `query` names (its filters, the same list rule)
/// by outcome per hour or per day, up to `now`.
pub async fn run_outcomes_over_time_for(
    state: &AppState,
    viewer: &Viewer,
    query: &RunQuery,
    now: DateTime<Utc>,
) -> Result<OutcomesOverTime, ApiError> {
    let (filter, allowed) = visible_filter(state, viewer, query).await?;
    let db = state.projector()?.reader()?;
    Ok(monitoring::outcomes_over_time(&db, &filter, allowed.as_ref(), now)?)
}

/// `GET /v1/runs`: one page of the run list, newest first, under the access rule.
#[utoipa::path(get, path = "/v1/runs", tag = "reads", params(RunQuery),
    responses((status = 200, description = "A page of runs.", body = RunPage)),
    security(("bearer" = [])))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<RunQuery>,
) -> Result<Json<RunPage>, ApiError> {
    Ok(Json(list_runs_for(&state, &caller.viewer(), &query).await?))
}

/// `GET /v1/runs/summary`: counts by status and by outcome of the runs the
/// same filters list. Paging parameters have no meaning here and are refused.
#[utoipa::path(get, path = "/v1/runs/summary", tag = "reads", params(RunQuery),
    responses((status = 200, description = "Counts of every status and outcome, zeros included.", body = RunTotals)),
    security(("bearer" = [])))]
pub async fn run_summary(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<RunQuery>,
) -> Result<Json<RunTotals>, ApiError> {
    if query.limit.is_some() || query.cursor.is_some() {
        let why = "limit and cursor page the run list; a summary counts every run of the filters";
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", why));
    }
    Ok(Json(run_totals_for(&state, &caller.viewer(), &query).await?))
}

/// Most timeline events one run detail carries; a longer timeline (a
/// worker reporting progress often) continues with `timeline_from`.
pub const RUN_TIMELINE_PAGE_EVENTS_MAX: usize = 1000;

/// A run and one page of its timeline.
pub struct RunDetail {
    pub run: Run,
    /// Events of the run's stream from the requested version on.
    pub timeline: Vec<Envelope>,
    /// The stream version the next page starts at, when there is one.
    pub timeline_next: Option<u64>,
}

/// A run and the page of its events from stream version `from`, if
/// `viewer` may see it (404 and 403 otherwise). The run is Monitoring's
/// (the same fold of the same events, caught up before reading), so a long
/// run is never read whole.
pub async fn run_for(state: &AppState, viewer: &Viewer, id: &str, from: u64) -> Result<RunDetail, ApiError> {
    let run = visible_run(state, viewer, id).await?;
    let (timeline, timeline_next) = timeline_page(state.ledger()?.log(), run.id, from)?;
    Ok(RunDetail { run, timeline, timeline_next })
}

/// The run `id` names, if `viewer` may see it: 400 for a malformed id,
/// 404 for an unknown run or one outside the viewer's memberships, 403
/// for a member without `operations.view`.
pub async fn visible_run(state: &AppState, viewer: &Viewer, id: &str) -> Result<Run, ApiError> {
    let run_id = run_id(id)?;
    state.fresh_projections().await?;
    let db = state.projector()?.reader()?;
    let run = monitoring::get(&db, run_id)?.ok_or_else(|| ApiError::not_found("no such run"))?;
    let access = state
        .projector()?
        .with_authority(|authority| run_access(authority, viewer, &run.workspace_id, &run.tenant_id))?;
    match access {
        Access::Visible => Ok(run),
        Access::NotFound => Err(ApiError::not_found("no such run")),
        Access::Forbidden => Err(ApiError::forbidden("operations.view is required to see this run")),
    }
}

/// Up to [`RUN_TIMELINE_PAGE_EVENTS_MAX`] events of the run's stream from
/// version `from`, and the version the next page starts at when there is one.
pub fn timeline_page(log: &Log, run_id: Uuid, from: u64) -> Result<(Vec<Envelope>, Option<u64>), opledger::Error> {
    let stream = opledger::domain::events::run_stream(run_id);
    let mut events = log.read_stream(&stream, from.max(1), RUN_TIMELINE_PAGE_EVENTS_MAX + 1)?;
    let next = match events.len() > RUN_TIMELINE_PAGE_EVENTS_MAX {
        true => events.pop().map(|next| next.stream_version),
        false => None,
    };
    Ok((events, next))
}

/// The timeline as the API answers it: each event as the log serves it,
/// plus `summary`, Monitoring's operator-readable line for it (the same
/// words as the HTML detail), so that no client has to re-derive them.
pub fn timeline_json(events: &[Envelope]) -> Result<Vec<Value>, ApiError> {
    events
        .iter()
        .map(|envelope| {
            let entry = monitoring::timeline_entry(envelope)?;
            let mut event = serde_json::to_value(envelope).map_err(|error| ApiError::internal(error.to_string()))?;
            if let Some(fields) = event.as_object_mut() {
                fields.insert("summary".to_owned(), Value::String(entry.summary));
            }
            Ok(event)
        })
        .collect()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunDetailQuery {
    /// The stream version the timeline page starts at (default 1).
    pub timeline_from: Option<u64>,
}

/// One event of a run's timeline as the API answers it: the event as the
/// log serves it ([`Envelope`]) plus `summary`. The handler builds it as a
/// JSON object ([`timeline_json`]); this type describes it in the document.
#[derive(Serialize, ToSchema)]
#[schema(description = "One event of a run's timeline: the event as the log serves it (`Envelope`) plus `summary`.")]
pub struct TimelineEvent {
    #[schema(inline)]
    #[serde(flatten)]
    event: Envelope,
    /// One operator-readable line (`queued`, `completed: failed (provider_error)`).
    summary: String,
}

/// `GET /v1/runs/{id}`: a run and one page of its timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunDetailBody {
    pub run: Run,
    /// At most 1,000 events of the run's stream from `timeline_from` on.
    #[schema(value_type = Vec<TimelineEvent>)]
    pub timeline: Vec<Value>,
    /// The stream version the next page starts at; `null` on the last page.
    #[schema(required = true)]
    pub timeline_next: Option<u64>,
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "reads",
    params(("id" = String, Path, description = "The run id (a UUID)."), RunDetailQuery),
    responses((status = 200, description = "The run and a page of its timeline.", body = RunDetailBody)),
    security(("bearer" = [])))]
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
    QueryParams(query): QueryParams<RunDetailQuery>,
) -> Result<Json<RunDetailBody>, ApiError> {
    let detail = run_for(&state, &caller.viewer(), &id, query.timeline_from.unwrap_or(1)).await?;
    let timeline = timeline_json(&detail.timeline)?;
    Ok(Json(RunDetailBody { run: detail.run, timeline, timeline_next: detail.timeline_next }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub tenant_id: Option<String>,
    /// An actor id, or `system` for what the system principal did.
    pub actor_id: Option<String>,
    pub run_id: Option<String>,
    /// An event type (`run_blocked`, `capability_revoked`, …).
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only entries at or before this log position.
    pub as_of: Option<u64>,
    pub limit: Option<usize>,
    /// The `next_cursor` of the page before, with the same filters.
    pub cursor: Option<String>,
}

impl AuditQuery {
    /// The filter the query names (a malformed `run_id` is a 400).
    pub fn filter(&self) -> Result<AuditFilter, ApiError> {
        Ok(AuditFilter {
            tenant_id: self.tenant_id.clone(),
            actor_id: self.actor_id.clone(),
            run_id: self.run_id.as_deref().map(run_id).transpose()?,
            action: self.action.clone(),
            from: self.from,
            to: self.to,
            as_of: self.as_of,
        })
    }
}

/// One page of the audit trail `query` names. The caller has checked that
/// the viewer is a service: the trail spans every workspace.
pub async fn audit_page_for(state: &AppState, query: &AuditQuery) -> Result<audit::AuditPage, ApiError> {
    let filter = query.filter()?;
    state.fresh_projections().await?;
    let db = state.projector()?.reader()?;
    audit::list(&db, &filter, query.cursor.as_deref(), query.limit).map_err(audit_error)
}

fn audit_error(error: AuditError) -> ApiError {
    match error {
        AuditError::InvalidCursor(why) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", why),
        AuditError::Projection(error) => error.into(),
        AuditError::Io(error) => ApiError::internal(error.to_string()),
    }
}

/// The audit trail is for service tokens (auditors' tools and the host app).
#[utoipa::path(get, path = "/v1/audit", tag = "reads", params(AuditQuery),
    responses((status = 200, description = "A page of the audit trail.", body = audit::AuditPage)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    _service: ServiceReader,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<audit::AuditPage>, ApiError> {
    Ok(Json(audit_page_for(&state, &query).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// The initiator whose inbox it is: required with a service token; an
    /// actor token may name only itself.
    actor_id: Option<String>,
    /// Only unread notifications.
    #[serde(default)]
    unread: bool,
    /// 1 to 200 (clamped), default 200.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// A page's `next_cursor`: the notifications older than that page's.
    cursor: Option<String>,
}

/// A page of an actor's inbox: newest first, the count of unread ones
/// (all of them, not the page's), and the cursor of the older page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationsBody {
    pub notifications: Vec<Notification>,
    pub unread: u64,
    /// Pass it back as `cursor` for the older notifications; `null` on the
    /// last page.
    pub next_cursor: Option<String>,
}

/// An actor token reads its own inbox; a service token names the actor.
#[utoipa::path(get, path = "/v1/notifications", tag = "reads", params(NotificationQuery),
    responses((status = 200, description = "The inbox.", body = NotificationsBody)),
    security(("bearer" = [])))]
pub async fn notifications(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<NotificationQuery>,
    JsonBody(_): JsonBody<Empty>,
) -> Result<Json<NotificationsBody>, ApiError> {
    let actor_id = inbox_owner(&caller, query.actor_id)?;
    let limit = query.limit.unwrap_or(notifications::INBOX_PAGE_MAX);
    let before = inbox_cursor(query.cursor.as_deref())?;
    Ok(Json(inbox_for(&state, &actor_id, query.unread, before, limit).await?))
}

/// Whose inbox `caller` reads when it asks for `asked`'s: an actor reads
/// its own only (403 for another's), a service names the actor (400 without).
pub fn inbox_owner(caller: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    match (&caller.0, asked) {
        (Grant::Actor { actor_id }, None) => Ok(actor_id.clone()),
        (Grant::Actor { actor_id }, Some(asked)) if &asked == actor_id => Ok(asked),
        (Grant::Actor { .. }, Some(_)) => Err(ApiError::forbidden("an actor token reads its own inbox only")),
        (Grant::Service { .. }, Some(asked)) => Ok(asked),
        (Grant::Service { .. }, None) => Err(ApiError::bad_request("actor_id is required with a service token")),
    }
}

/// The position an inbox cursor names: the page goes on below it. A
/// cursor is a position this server handed out, a positive integer.
pub fn inbox_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    match notifications::cursor_position(cursor) {
        Some(position) => Ok(Some(position)),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            format!("{cursor:?} is not an inbox cursor (a page's next_cursor)"),
        )),
    }
}

/// A page of `actor_id`'s notifications: at most `limit` (held to the
/// inbox's page bound) older than position `before`, only the unread ones
/// when `unread_only`, and the unread count.
pub async fn inbox_for(
    state: &AppState,
    actor_id: &str,
    unread_only: bool,
    before: Option<u64>,
    limit: usize,
) -> Result<NotificationsBody, ApiError> {
    state.fresh_projections().await?;
    let db = state.projector()?.reader()?;
    let page = notifications::inbox(&db, actor_id, unread_only, before, limit)?;
    let unread = notifications::unread_count(&db, actor_id)?;
    let next_cursor = page.next_before.map(|position| position.to_string());
    Ok(NotificationsBody { notifications: page.notifications, unread, next_cursor })
}

/// The log position of the event a write appended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PositionBody {
    pub position: u64,
}

/// Marking read is itself an event: a write, so a service token (the host
/// application, on behalf of the initiator named by `actor_id`). It takes
/// no body but, like every write, refuses one that is not JSON.
#[utoipa::path(post, path = "/v1/notifications/{run}/read", tag = "writes",
    params(("run" = String, Path, description = "The run id (a UUID) of the notification."), NotificationQuery),
    request_body(content = Option<Empty>, description = "`{}`, or no body and no `Content-Type` at all."),
    responses((status = 200, description = "Marked read (the mark is a `notification_read` event).", body = PositionBody)),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(state): State<AppState>,
    Service(caller): Service,
    PathParam(id): PathParam,
    QueryParams(query): QueryParams<NotificationQuery>,
    JsonBody(_): JsonBody<Empty>,
) -> Result<Json<PositionBody>, ApiError> {
    let actor_id = match (&caller.0, query.actor_id) {
        (Grant::Actor { actor_id }, _) => actor_id.clone(),
        (Grant::Service { .. }, Some(asked)) => asked,
        (Grant::Service { .. }, None) => {
            return Err(ApiError::bad_request("actor_id is required with a service token"))
        }
    };
    let position = state.ledger()?.mark_notification_read(&actor_id, run_id(&id)?).await?;
    Ok(Json(PositionBody { position }))
}
