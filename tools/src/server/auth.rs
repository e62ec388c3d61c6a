//! Bearer tokens: every route but `/healthz` needs one (401 otherwise).
//! Service tokens append and read everything; actor tokens read under the
//! access rule and may not write (403).
//!
//! The JSON API takes the `Authorization` header only. A browser session
//! cookie (see `session.rs`) counts on the HTML pages alone: a cookie rides
//! along on any request a browser makes, so honouring it on `/v1/*` would
//! let another site's page write with the operator's authority.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use opledger_projections::access::Viewer;

use crate::server::error::ApiError;
use crate::server::session;
use crate::server::state::AppState;
use crate::tokens::Grant;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Grant);

impl Caller {
    pub fn viewer(&self) -> Viewer {
        match &self.0 {
            Grant::Service { .. } => Viewer::Service,
            Grant::Actor { actor_id } => Viewer::Actor(actor_id.clone()),
        }
    }

    /// Writes are for service tokens only.
    pub fn require_service(&self) -> Result<(), ApiError> {
        match &self.0 {
            Grant::Service { .. } => Ok(()),
            Grant::Actor { .. } => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "actor tokens are read-only")),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme name
/// is case-insensitive (RFC 7235 section 2.1), so `bearer` counts too.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn caller_of(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    match state.tokens.authenticate(token) {
        Ok(Some(grant)) => Ok(Caller(grant)),
        Ok(None) => Err(ApiError::unauthorized()),
        Err(error) => Err(token_store_failure(&error)),
    }
}

/// The tokens could not be read: 503 `log_unreachable` when they are in a
/// log database out of reach (past the copy read last, see
/// `tokens::SHARED_TOKENS_STALE_MAX`), else a fault of the server.
fn token_store_failure(error: &anyhow::Error) -> ApiError {
    let unreachable = error.chain().any(|cause| matches!(cause.downcast_ref(), Some(opledger::Error::Unavailable(_))));
    if unreachable {
        ApiError::log_unreachable(format!("the tokens cannot be read: {error:#}"))
    } else {
        ApiError::internal(format!("token store: {error:#}"))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        caller_of(state, bearer(parts).ok_or_else(ApiError::unauthorized)?)
    }
}

/// The caller of an HTML page: a bearer header, or else the session a
/// browser signed in with at `/admin/login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageViewer(pub Caller);

impl FromRequestParts<AppState> for PageViewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<PageViewer, ApiError> {
        if let Some(token) = bearer(parts) {
            return caller_of(state, token).map(PageViewer);
        }
        let id = session::session_id(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        match state.sessions.resolve(id, &state.tokens) {
            Ok(Some(grant)) => Ok(PageViewer(Caller(grant))),
            Ok(None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the session has ended (signed out, expired, or its token revoked): sign in again",
            )),
            Err(error) => Err(token_store_failure(&error)),
        }
    }
}

/// A caller holding a service token; an actor token is refused with 403
/// before the request body is even read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service(pub Caller);

impl FromRequestParts<AppState> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Service, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_service()?;
        Ok(Service(caller))
    }
}

/// A caller holding a service token, on a read that spans every workspace
/// (the raw log, the audit trail, `/metrics`): an actor token is refused
/// with 403 and told which token the route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReader(pub Caller);

impl FromRequestParts<AppState> for ServiceReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ServiceReader, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        require_service_reader(&caller)?;
        Ok(ServiceReader(caller))
    }
}

/// The refusal of a read that spans every workspace (the raw log, the
/// audit trail, the authority state, `/metrics`) to an actor: the JSON
/// routes and the pages answer the same.
pub fn require_service_reader(caller: &Caller) -> Result<(), ApiError> {
    match &caller.0 {
        Grant::Service { .. } => Ok(()),
        Grant::Actor { .. } => Err(ApiError::forbidden(
            "this route needs a service token: it reads across every workspace, beyond an actor's access",
        )),
    }
}
