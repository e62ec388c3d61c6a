//! The error body of API.md: `{"error": {"code": "snake_case", "message": "…"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use opledger::domain::lease::Fenced;
use opledger::domain::ledger::LedgerError;
use opledger::domain::sequencer::CommandRefused;
use opledger::domain::start_gate::StartRejected;
use opledger_projections::ProjectionError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The log's database cannot be reached: a passing state, not a fault
    /// of the server (nothing was appended unless the message says the
    /// outcome is unknown; retry).
    pub fn log_unreachable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unreachable", message)
    }

    /// `503 log_contended`: the append could not get in (a round that
    /// kept losing the race for the head, or a lock wait on the head that
    /// passed); nothing was appended, worth retrying.
    pub fn log_contended(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_contended", message)
    }

    /// The log's database is up and refused the append (read-only, a full
    /// disk): nothing appended, worth retrying once the cause is gone.
    pub fn log_refuses_writes(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_refuses_writes", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message.clone() } }
    }
}

/// The body of every 4xx/5xx answer of the JSON API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A pinned snake_case code (`unknown_run`, `invalid_cursor`, …): what
    /// a client branches on. Each response of the document lists the codes
    /// it may carry.
    pub code: String,
    /// For people; not pinned.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let retry_soon = matches!(self.code, "log_unreachable" | "log_refuses_writes" | "log_contended");
        let mut response = (self.status, Json(self.body())).into_response();
        if retry_soon {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(LOG_UNREACHABLE_RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// `Retry-After` of a `503 log_unreachable` (the node retries the database
/// on its own about this often) and of a `503 log_refuses_writes`.
pub const LOG_UNREACHABLE_RETRY_AFTER_SECONDS: u64 = 1;

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> ApiError {
        let message = error.to_string();
        match error {
            LedgerError::Refused(refused) => refused_status(&refused, message),
            LedgerError::UnknownRun(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_run", message),
            LedgerError::Stopped(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ledger_stopped", message),
            LedgerError::Contended { .. } => ApiError::log_contended(message),
            LedgerError::Log(opledger::Error::Unavailable(_)) => ApiError::log_unreachable(message),
            LedgerError::Log(opledger::Error::WritesRefused(_)) => ApiError::log_refuses_writes(message),
            LedgerError::Log(opledger::Error::LockWaitPassed(_)) => ApiError::log_contended(message),
            LedgerError::Log(_) | LedgerError::Inconsistent { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", message)
            }
        }
    }
}

fn refused_status(refused: &CommandRefused, message: String) -> ApiError {
    let (status, code) = match refused {
        CommandRefused::InvalidAuthorityChange { .. } => (StatusCode::BAD_REQUEST, "invalid_authority_change"),
        CommandRefused::Start(StartRejected::UnknownOperationType(_)) => {
            (StatusCode::NOT_FOUND, "unknown_operation_type")
        }
        CommandRefused::Start(StartRejected::UnknownTenant(_)) => (StatusCode::NOT_FOUND, "unknown_tenant"),
        CommandRefused::Start(StartRejected::Invalid(_)) | CommandRefused::Invalid(_) => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        CommandRefused::Transition(_) => (StatusCode::CONFLICT, "illegal_transition"),
        CommandRefused::NotLive(_) => (StatusCode::NOT_FOUND, "unknown_run"),
        CommandRefused::Fenced(Fenced::LeaseExpired { .. }) => (StatusCode::CONFLICT, "lease_expired"),
        CommandRefused::Fenced(Fenced::RunCancelled { .. }) => (StatusCode::CONFLICT, "run_cancelled"),
    };
    ApiError::new(status, code, message)
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "projection_unavailable", error.to_string())
    }
}

impl From<opledger::Error> for ApiError {
    fn from(error: opledger::Error) -> ApiError {
        match error {
            opledger::Error::Unavailable(_) => ApiError::log_unreachable(error.to_string()),
            opledger::Error::WritesRefused(_) => ApiError::log_refuses_writes(error.to_string()),
            opledger::Error::LockWaitPassed(_) => ApiError::log_contended(error.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_database_out_of_reach_is_a_503_and_other_storage_failures_a_500() {
        let unreachable = || opledger::Error::Unavailable("PostgreSQL: error connecting to server".into());
        for answer in [ApiError::from(unreachable()), ApiError::from(LedgerError::Log(unreachable()))] {
            assert_eq!((answer.status, answer.code), (StatusCode::SERVICE_UNAVAILABLE, "log_unreachable"));
            assert!(answer.message.contains("cannot be reached: PostgreSQL: error connecting"), "{}", answer.message);
            let response = answer.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|value| value.as_bytes()), Some(&b"1"[..]));
        }
        let failed = || opledger::Error::Storage("disk full".into());
        for answer in [ApiError::from(failed()), ApiError::from(LedgerError::Log(failed()))] {
            assert_eq!((answer.status, answer.code), (StatusCode::INTERNAL_SERVER_ERROR, "storage_failure"));
            assert_eq!(answer.message, "storage failure: disk full", "one prefix");
        }
    }

    #[test]
    fn a_log_database_refusing_writes_is_a_503_to_retry() {
        let full = || {
            opledger::Error::WritesRefused(
                "PostgreSQL: could not extend file \"base/16384/16394\": No space left on device (53100)".into(),
            )
        };
        for answer in [ApiError::from(full()), ApiError::from(LedgerError::Log(full()))] {
            assert_eq!((answer.status, answer.code), (StatusCode::SERVICE_UNAVAILABLE, "log_refuses_writes"));
            assert!(answer.message.contains("refuses writes: PostgreSQL: could not extend"), "{}", answer.message);
            let response = answer.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|value| value.as_bytes()), Some(&b"1"[..]));
        }
    }

    #[test]
    fn a_head_lock_wait_that_passed_is_a_503_log_contended_to_retry() {
        let waited =
            || opledger::Error::LockWaitPassed("PostgreSQL: canceling statement due to lock timeout (55P03)".into());
        for answer in [ApiError::from(waited()), ApiError::from(LedgerError::Log(waited()))] {
            assert_eq!((answer.status, answer.code), (StatusCode::SERVICE_UNAVAILABLE, "log_contended"));
            assert!(answer.message.contains("head stayed locked: PostgreSQL: canceling"), "{}", answer.message);
            let response = answer.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|value| value.as_bytes()), Some(&b"1"[..]));
        }
    }
}
