//! Reading one's writes on any node.
//!
//! Every successful write (`POST /v1/…`) answers with the header
//! `Opledger-Position`: a position at or past the write's last event (the
//! node's acknowledged head when it answered). Every read (`GET /v1/…`)
//! takes `min_position=N`: the node first waits until its read models
//! have applied position N, at most [`AppState::read_projection_wait`],
//! else `503 projection_unavailable`; a position past the log's head names
//! no write and is refused at once (`400 invalid_request`). A client can so write on one node
//! and read its write on another. The parameter is taken off the query
//! before the route reads it, so each route's own parameters stay strict.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::server::error::ApiError;
use crate::server::state::AppState;

/// The header a write answer carries.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("opledger-position");

/// The query parameter a read takes.
pub const MIN_POSITION_PARAMETER: &str = "min_position";

pub async fn read_your_writes(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/v1/");
    if api && request.method() == Method::GET {
        match take_min_position(&mut request) {
            Ok(Some(position)) => {
                if let Err(error) = wait_for(&state, position).await {
                    return error.into_response();
                }
            }
            Ok(None) => {}
            Err(error) => return error.into_response(),
        }
    }
    let write = api && request.method() == Method::POST;
    let mut response = next.run(request).await;
    if write && response.status().is_success() {
        if let Ok(ledger) = state.ledger() {
            let head = ledger.log().head().position;
            if let Ok(value) = HeaderValue::from_str(&head.to_string()) {
                response.headers_mut().insert(POSITION_HEADER, value);
            }
        }
    }
    response
}

/// Removes `min_position` from the request's query and parses it.
fn take_min_position(request: &mut Request) -> Result<Option<u64>, ApiError> {
    let Some(query) = request.uri().query() else { return Ok(None) };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("bad query: {error}")))?;
    let (wanted, kept): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(name, _)| name == MIN_POSITION_PARAMETER);
    let Some((_, value)) = wanted.last() else { return Ok(None) };
    let position = value.parse::<u64>().map_err(|_| {
        let why = format!("{MIN_POSITION_PARAMETER} must be a position (a whole number), got {value:?}");
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", why)
    })?;
    let rest = serde_urlencoded::to_string(&kept)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("bad query: {error}")))?;
    let path = request.uri().path();
    let uri = match rest.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{rest}"),
    };
    *request.uri_mut() =
        uri.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "bad request target"))?;
    Ok(Some(position))
}

/// Waits until this node's read models have applied `position`. A
/// position past the log's head (the database's, for a shared log) names
/// no write yet: refused at once, never waited for. Asking the database
/// for its head waits as long as the read models would
/// ([`AppState::read_log`]).
async fn wait_for(state: &AppState, position: u64) -> Result<(), ApiError> {
    let projector = state.projector()?;
    let head = match position > state.ledger()?.log().head().position {
        true => state.latest_head(&format!("(is position {position} written?)")).await?.position,
        false => position,
    };
    if position > head {
        let why =
            format!("{MIN_POSITION_PARAMETER} {position} is past the log's head ({head}): no write has reached it");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", why));
    }
    let unavailable = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "projection_unavailable", why);
    match tokio::time::timeout(state.read_projection_wait, projector.wait_for(position)).await {
        Ok(reached) => reached.map_err(|error| unavailable(error.to_string())),
        Err(_) => Err(unavailable(format!(
            "this node's read models did not reach position {position} within {} ms; retry, or read from the node \
             that wrote",
            state.read_projection_wait.as_millis()
        ))),
    }
}
