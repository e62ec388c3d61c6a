//! Integrity and audit reads on the live ledger, for service tokens: the
//! head, a verify walk, the log as JSON Lines, a run's explanation and the
//! authority as of any position. None of them stops writes: they read the
//! log the appenders keep writing, up to the head they start at.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use opledger::domain::replay::DecisionReplay;
use opledger::limits::READ_PAGE_EVENTS_MAX;
use opledger::{Head, Log};
use opledger_projections::authority::{self, AuthorityFilter, AuthorityReadError, AuthorityReport};
use opledger_projections::explain::{explain as explain_run, Explanation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::server::auth::ServiceReader;
use crate::server::body::{run_id, PathParam, QueryParams};
use crate::server::error::ApiError;
use crate::server::state::AppState;

/// Export pages in flight between the reading thread and the connection:
/// a slow client holds at most this many pages of memory.
const EXPORT_BUFFER_PAGES: usize = 4;

/// The response header naming the head an export or verify stopped at.
pub const HEAD_HEADER: &str = "opledger-head";

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| ApiError::internal(error.to_string()))?
}

/// The log, once its store answered a read of its head within the read
/// wait ([`AppState::latest_head`]), else `503 log_unreachable`. A walk's own
/// reads are bounded only by the log's per-statement wait (30 s for
/// PostgreSQL), since reading a long log rightly takes longer than 5 s: a
/// database gone silent before the walk is told in seconds instead. For a
/// shared log the node's head then moves to the database's, so the walk
/// also sees what other nodes acknowledged before it began.
async fn answering_log(state: &AppState, walk: &str) -> Result<Arc<Log>, ApiError> {
    state.latest_head(&format!("before {walk}")).await?;
    Ok(Arc::clone(state.ledger()?.log()))
}

/// The head of the log: what `opledger head` prints.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeadBody {
    /// Position of the last acknowledged event (0: an empty log).
    pub position: u64,
    /// Its hash, 64 lowercase hex digits.
    pub hash: String,
    /// `POSITION:HASH`, what `expect_head` takes.
    pub digest: String,
}

fn head_body(head: Head) -> HeadBody {
    HeadBody { position: head.position, hash: head.hash.to_hex(), digest: head.digest() }
}

/// `GET /v1/head`: what `opledger head` prints.
#[utoipa::path(get, path = "/v1/head", tag = "integrity",
    responses((status = 200, description = "The head.", body = HeadBody)),
    security(("bearer" = [])))]
pub async fn head(State(state): State<AppState>, _service: ServiceReader) -> Result<Json<HeadBody>, ApiError> {
    Ok(Json(head_body(state.ledger()?.log().head())))
}

/// The report of `opledger verify --json`. Built as JSON by
/// [`crate::cmd::verify::report_json`] (the CLI prints the same value);
/// this type describes it in the document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(description = "The report of `opledger verify --json` (the CLI prints the same value).")]
pub struct VerifyReport {
    /// Whether the whole log verified (200 either way).
    pub ok: bool,
    pub events_checked: u64,
    pub streams: u64,
    pub decisions_checked: u64,
    pub start_decisions_checked: u64,
    pub abandonments_checked: u64,
    pub cancellations_checked: u64,
    /// The head walked to, `POSITION:HASH`.
    pub head: String,
    #[schema(required = true)]
    pub first_failure: Option<VerifyFailure>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyFailure {
    pub position: u64,
    pub detail: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// A head digest exported earlier (`POSITION:HASH`).
    expect_head: Option<String>,
}

/// `GET /v1/verify`: the walk of `opledger verify` over the live log, up to
/// the head it starts at, with every decision replayed. One at a time
/// (a second answers 429): a walk reads the whole log.
#[utoipa::path(get, path = "/v1/verify", tag = "integrity", params(VerifyQuery),
    responses((status = 200, description = "The report, whether or not the log verifies (read `ok`).", body = VerifyReport)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    _service: ServiceReader,
    QueryParams(query): QueryParams<VerifyQuery>,
) -> Result<Json<Value>, ApiError> {
    let expected = match query.expect_head.as_deref() {
        Some(text) => Some(Head::parse_digest(text).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "expect_head takes POSITION:HASH")
        })?),
        None => None,
    };
    let Ok(_slot) = Arc::clone(state.verifies()).try_acquire_owned() else {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "verify_busy", "a verify walk is already running"));
    };
    let log = answering_log(&state, "the verify walk").await?;
    let report = blocking(move || {
        let mut replay = DecisionReplay::new();
        let report = opledger::verify::verify(&log, expected, &mut replay, &mut |_| {})?;
        Ok(crate::cmd::verify::report_json(&report, &replay))
    })
    .await?;
    Ok(Json(report))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The first position exported (default 1): a broken export resumes
    /// at the position after the last line it kept.
    from: Option<u64>,
}

/// `GET /v1/export?from=N`: the log from N to the head at the start, as the
/// JSON Lines of `opledger export`, streamed page by page. The
/// `Opledger-Head` header names the head the export ends at, so a client
/// can check the last line it received.
#[utoipa::path(get, path = "/v1/export", tag = "integrity", params(ExportQuery),
    responses((status = 200,
        description = "The log as JSON Lines, one event (as `Envelope`) per line, streamed. A read error breaks the transfer.",
        headers(("Opledger-Head" = String, description = "The head digest (`POSITION:HASH`) the export ends at.")),
        content_type = "application/jsonl", body = String)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    _service: ServiceReader,
    QueryParams(query): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let log = answering_log(&state, "the export").await?;
    let head = log.head();
    let from = query.from.unwrap_or(1).max(1);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_BUFFER_PAGES);
    tokio::task::spawn_blocking(move || stream_pages(&log, from, head.position, &sender));
    let mut response = Body::from_stream(ReceiverStream::new(receiver)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl"));
    if let Ok(value) = HeaderValue::from_str(&head.digest()) {
        headers.insert(HEAD_HEADER, value);
    }
    Ok(response)
}

/// Sends positions `from..=to` as JSON Lines, a page per message; stops
/// when the client goes away. A read error ends the body with an error, so
/// the client sees a broken transfer, never a short export that looks whole.
fn stream_pages(log: &Log, from: u64, to: u64, sender: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let mut next = from;
    while next <= to {
        let want = usize::try_from(to - next + 1).unwrap_or(usize::MAX).min(READ_PAGE_EVENTS_MAX);
        let page = match log.read(next, want) {
            Ok(page) if !page.is_empty() => page,
            Ok(_) => return,
            Err(error) => {
                let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
                return;
            }
        };
        let mut lines = Vec::new();
        for envelope in &page {
            if let Err(error) = crate::cmd::events::write_line(&mut lines, envelope) {
                let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
                return;
            }
        }
        next = page.last().map_or(to + 1, |last| last.position + 1);
        if sender.blocking_send(Ok(Bytes::from(lines))).is_err() {
            return;
        }
    }
}

/// `GET /v1/runs/{id}/explain`: what `opledger explain` prints.
#[utoipa::path(get, path = "/v1/runs/{id}/explain", tag = "integrity",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    responses((status = 200, description = "Every decision of the run, each check with its fact and source.", body = Explanation)),
    security(("bearer" = [])))]
pub async fn explain(
    State(state): State<AppState>,
    _service: ServiceReader,
    PathParam(id): PathParam,
) -> Result<Json<Explanation>, ApiError> {
    let run = run_id(&id)?;
    let log = answering_log(&state, "the explanation").await?;
    let explanation = blocking(move || Ok(explain_run(&log, run)?)).await?;
    explanation.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_run", format!("no run {run}")))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthorityQuery {
    /// A log position (default the head); past the head → 400 `invalid_as_of`.
    pub as_of: Option<u64>,
    pub workspace_id: Option<String>,
    pub tenant_id: Option<String>,
    pub actor_id: Option<String>,
}

/// `GET /v1/authority?as_of=N`: the authority state as of N (default the
/// head), each fact with the position of the event that made it true.
// Its own operation id: the write of `POST /v1/authority` is `authority`,
// and an OpenAPI document's operation ids are unique (tools drop a twin).
#[utoipa::path(get, path = "/v1/authority", operation_id = "authority_as_of", tag = "integrity", params(AuthorityQuery),
    responses((status = 200, description = "The authority state as of `as_of`.", body = AuthorityReport)),
    security(("bearer" = [])))]
pub async fn authority(
    State(state): State<AppState>,
    _service: ServiceReader,
    QueryParams(query): QueryParams<AuthorityQuery>,
) -> Result<Json<AuthorityReport>, ApiError> {
    Ok(Json(authority_report_for(&state, query).await?))
}

/// The authority state `query` asks for. The caller has checked that the
/// viewer is a service: the state spans every workspace.
pub async fn authority_report_for(state: &AppState, query: AuthorityQuery) -> Result<AuthorityReport, ApiError> {
    // `QueryParams` has already dropped empty fields: an empty one is no filter.
    let filter =
        AuthorityFilter { workspace_id: query.workspace_id, tenant_id: query.tenant_id, actor_id: query.actor_id };
    let log = answering_log(state, "the authority walk").await?;
    blocking(move || match authority::state_as_of(&log, query.as_of) {
        Ok((as_of, state)) => Ok(authority::report(as_of, &state, &filter)),
        Err(error @ AuthorityReadError::PastHead { .. }) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_as_of", error.to_string()))
        }
        Err(AuthorityReadError::Projection(error)) => Err(error.into()),
    })
    .await
}
