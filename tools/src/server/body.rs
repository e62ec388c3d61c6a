//! Request bodies: bounded, parsed strictly, every failure in the API's
//! error shape (413 for too large, 415 for a body that is not declared
//! JSON, 400 with serde's message otherwise).
//!
//! Every write takes its body through [`JsonBody`], which is where the
//! media type rule lives: a body must come as `Content-Type:
//! application/json` (parameters such as `; charset=utf-8` allowed). A form
//! or `text/plain` body is what a cross-site HTML form or a "simple"
//! cross-site `fetch` can send without a preflight, and `curl -d` sends a
//! form type; none of them is read as JSON. A request with no body at all
//! and no `Content-Type` (`curl -X POST` on `begin` or on marking a
//! notification read) carries no data to misread, so it reads as `{}`.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::server::error::ApiError;

/// Largest request body accepted.
pub const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;

/// The one media type a write body may have.
const JSON_MEDIA_TYPE: &str = "application/json";

/// A JSON object body of type `T`. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

/// What a request's `Content-Type` says of its body.
enum Declared {
    Json,
    Nothing,
    Other,
}

fn declared(headers: &HeaderMap) -> Declared {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Declared::Nothing };
    let essence = value.to_str().ok().and_then(|v| v.split(';').next()).map(str::trim);
    match essence {
        Some(essence) if essence.eq_ignore_ascii_case(JSON_MEDIA_TYPE) => Declared::Json,
        _ => Declared::Other,
    }
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("write bodies are JSON objects sent with Content-Type: {JSON_MEDIA_TYPE}"),
    )
}

fn invalid_json(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("request body: {message}"))
}

/// Parses `bytes` as `T`, refusing anything but a JSON object: serde reads
/// a struct from an array too (`[]` is an empty struct), and no body of
/// this API is an array or a scalar.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes).map_err(invalid_json),
        _ => match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => Err(invalid_json("must be a JSON object")),
            Err(error) => Err(invalid_json(error)),
        },
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, _state: &S) -> Result<Self, ApiError> {
        let declared = declared(request.headers());
        if matches!(declared, Declared::Other) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::to_bytes(request.into_body(), REQUEST_BODY_BYTES_MAX).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {REQUEST_BODY_BYTES_MAX} bytes"),
            )
        })?;
        let bodyless = match declared {
            Declared::Nothing if !bytes.is_empty() => return Err(unsupported_media_type()),
            Declared::Nothing => true,
            _ => bytes.iter().all(u8::is_ascii_whitespace),
        };
        parse_object(if bodyless { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// A run id from the path; a malformed one is a 400, not a 404.
pub fn run_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_run_id", format!("{text:?} is not a run id (a UUID)"))
    })
}

/// Query parameters of type `T`; a bad query string is a 400 in the error shape.
///
/// An empty field (`status=`, as a browser's form sends for a field left
/// blank) is the same as an absent one: it means "no filter", "default".
/// Decided here, once, for every route.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, ApiError> {
        let invalid = |error: serde_urlencoded::de::Error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("Failed to deserialize query string: {error}"),
            )
        };
        let query = parts.uri.query().unwrap_or_default();
        let mut fields: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(invalid)?;
        fields.retain(|(_, value)| !value.is_empty());
        let kept = serde_urlencoded::to_string(&fields)
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string()))?;
        serde_urlencoded::from_str(&kept).map(QueryParams).map_err(invalid)
    }
}

/// One path parameter as text; a segment that does not decode is a 400 in
/// the error shape.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", rejection.body_text())),
        }
    }
}
