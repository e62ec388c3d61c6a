//! Bearer tokens: every route but `/healthz` needs one (401 otherwise).
//! Service tokens append and read everything; actor tokens read under the
//! access rule and may not write (403).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use opledger_projections::access::Viewer;

use crate::server::error::ApiError;
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

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// The HTML pages also accept the token from the `opledger_token` cookie,
/// which the login form sets, since a browser cannot send a bearer header.
fn cookie(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    value.split(';').map(str::trim).find_map(|pair| pair.strip_prefix("opledger_token="))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let token = bearer(parts).or_else(|| cookie(parts)).ok_or_else(ApiError::unauthorized)?;
        match state.tokens.authenticate(token) {
            Ok(Some(grant)) => Ok(Caller(grant)),
            Ok(None) => Err(ApiError::unauthorized()),
            Err(error) => Err(ApiError::internal(format!("token store: {error:#}"))),
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
