//! The machine-readable API: an OpenAPI 3.1 document generated from the
//! server's own request and response types (utoipa's `ToSchema` derives and
//! the `#[utoipa::path]` of each handler), served at `GET /openapi.json`
//! and committed as `docs/openapi.json` (a test fails when they differ).
//!
//! The success answers are declared on the handlers. The error answers
//! are declared here, in one table ([`ROUTE_ERRORS`]): each route lists the
//! `error.code`s it can answer, and the status follows from the code
//! ([`status_of`]), as in the error table of docs/api.md. Keeping them in
//! one place lets a test hold the table against docs/api.md.

mod links;

use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use crate::server::openapi_positions::Positions;

use crate::server::error::ApiError;
use crate::server::openapi::links::add_links;

use crate::server::{error, events, health, integrity, login, metrics, pages, reads, writes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opledger",
        description = "The network contract of `opledger serve` (docs/api.md). JSON everywhere except the HTML \
            Monitoring pages under `/admin/*`, the metrics and the exports. Times are RFC 3339 UTC; ids the \
            ledger mints are UUIDs. Every 4xx/5xx JSON answer is an `ErrorBody`; each response lists the \
            `error.code`s it can carry. Any path not listed answers 404 `not_found`, and a listed path asked \
            with another method 405 `method_not_allowed`. Field names, result words, reason codes and \
            status codes are pinned: later versions add and rename nothing.",
    ),
    paths(
        health::livez,
        health::readyz,
        metrics::metrics,
        served,
        writes::authority,
        integrity::authority,
        integrity::head,
        integrity::verify,
        integrity::export,
        integrity::explain,
        writes::start,
        reads::list_runs,
        writes::start_batch,
        reads::run_summary,
        reads::get_run,
        writes::begin,
        writes::progress,
        writes::complete,
        writes::heartbeat,
        writes::cancel,
        reads::audit,
        reads::notifications,
        reads::mark_read,
        events::page,
        events::stream,
        pages::list::list,
        pages::detail::detail,
        pages::list::search,
        pages::inbox::inbox,
        pages::audit::audit,
        pages::authority::authority,
        pages::stylesheet,
        login::login_form,
        login::login,
        login::logout,
    ),
    components(schemas(error::ErrorBody, opledger::Envelope, reads::TimelineEvent)),
    modifiers(&Security, &Errors, &Aliases, &Positions),
    tags(
        (name = "health", description = "No token; for load balancers and orchestrators."),
        (name = "writes", description = "Service tokens. Bodies are JSON objects sent as `Content-Type: application/json`; nothing is appended by a request that answers an error."),
        (name = "reads", description = "Run list and detail, audit trail, notifications; actor tokens read under the access rule."),
        (name = "integrity", description = "Service tokens: the head, a verify walk, the export, explanations, the authority as of a position."),
        (name = "events", description = "Service tokens: the raw log."),
        (name = "monitoring", description = "The HTML Monitoring pages and their sign-in (`text/html`)."),
        (name = "meta", description = "This document."),
    ),
)]
pub struct ApiDoc;

/// The document, as the server serves it.
pub fn document() -> Result<Value, serde_json::Error> {
    let mut document = serde_json::to_value(ApiDoc::openapi())?;
    let schemas = document["components"]["schemas"].clone();
    merge_closed_all_of(&mut document, &schemas);
    add_links(&mut document);
    Ok(document)
}

/// The document as committed in `docs/openapi.json`: pretty-printed, keys
/// in a stable order (utoipa keeps its maps sorted or in declaration
/// order; `serde_json::Value` sorts object keys), with a final newline.
pub fn document_text() -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&document()?).map(|text| text + "\n")
}

/// `GET /openapi.json`: this document (no token).
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server (docs/openapi.json).", body = Object)))]
pub async fn served() -> Result<Json<Value>, ApiError> {
    document().map(Json).map_err(|error| ApiError::internal(error.to_string()))
}

/// utoipa writes a `#[serde(flatten)]` field, and an internally tagged
/// newtype variant, as `allOf` of the inner type and the outer fields. When
/// the inner type is closed (`deny_unknown_fields`: `additionalProperties:
/// false`), that `allOf` would refuse the outer fields (a catalog entry's
/// `position`, a change's `type`) in any JSON Schema validator. Such an
/// `allOf` becomes the one object it means: the properties and required
/// fields of every part, closed only if every part is.
fn merge_closed_all_of(value: &mut Value, schemas: &Value) {
    match value {
        Value::Object(fields) => {
            for field in fields.values_mut() {
                merge_closed_all_of(field, schemas);
            }
            let Some(Value::Array(parts)) = fields.get("allOf") else { return };
            let resolved: Option<Vec<&Value>> = parts
                .iter()
                .map(|part| match part.get("$ref").and_then(Value::as_str) {
                    Some(reference) => schemas.get(reference.trim_start_matches("#/components/schemas/")),
                    None => Some(part),
                })
                .collect();
            let Some(resolved) = resolved else { return };
            let closed = |part: &&Value| part.get("additionalProperties") == Some(&Value::Bool(false));
            let plain = |part: &&Value| {
                part.get("type") == Some(&json!("object")) && part.get("allOf").is_none() && part.get("oneOf").is_none()
            };
            if !resolved.iter().any(closed) || !resolved.iter().all(plain) {
                return;
            }
            let mut properties = Map::new();
            let mut required: Vec<Value> = Vec::new();
            for part in &resolved {
                if let Some(Value::Object(more)) = part.get("properties") {
                    properties.extend(more.clone());
                }
                for name in part.get("required").and_then(Value::as_array).into_iter().flatten() {
                    if !required.contains(name) {
                        required.push(name.clone());
                    }
                }
            }
            let all_closed = resolved.iter().all(closed);
            fields.remove("allOf");
            fields.insert("type".to_owned(), json!("object"));
            fields.insert("properties".to_owned(), Value::Object(properties));
            fields.insert("required".to_owned(), Value::Array(required));
            if all_closed {
                fields.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
        }
        Value::Array(items) => {
            for item in items {
                merge_closed_all_of(item, schemas);
            }
        }
        _ => {}
    }
}

/// The two ways a request proves who it is: the bearer header (every
/// route but health and this document), and the browser session of the
/// HTML pages (never on `/v1/*` or `/metrics`).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description =
            Some("A service or actor token (`opledger token create`). The scheme name is case-insensitive.".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "opledger_session",
                "The browser session of `POST /admin/login`; counts on `/admin/*` pages only.",
            ))),
        );
    }
}

/// `/healthz` is `/readyz` (one handler, two routes).
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, openapi: &mut Document) {
        if let Some(ready) = openapi.paths.paths.get("/readyz").cloned() {
            let mut alias = ready;
            if let Some(get) = alias.get.as_mut() {
                get.operation_id = Some("healthz".to_owned());
                get.summary = Some("`/readyz` under its older name.".to_owned());
            }
            openapi.paths.paths.insert("/healthz".to_owned(), alias);
        }
    }
}

/// The status of each `error.code` (docs/api.md, "Errors").
pub fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_json"
        | "invalid_request"
        | "invalid_authority_change"
        | "invalid_query"
        | "invalid_path"
        | "invalid_run_id"
        | "invalid_cursor"
        | "invalid_last_event_id"
        | "invalid_as_of" => 400,
        "unauthorized" => 401,
        "forbidden" | "cross_origin" => 403,
        "not_found" | "unknown_run" | "unknown_tenant" | "unknown_operation_type" => 404,
        "method_not_allowed" => 405,
        "request_timeout" => 408,
        "illegal_transition" | "lease_expired" | "run_cancelled" => 409,
        "body_too_large" => 413,
        "unsupported_media_type" => 415,
        "verify_busy" => 429,
        "internal_error" | "storage_failure" => 500,
        "ledger_stopped"
        | "projection_unavailable"
        | "too_many_connections"
        | "log_contended"
        | "log_unreachable"
        | "log_refuses_writes" => 503,
        _ => return None,
    })
}

/// Any token: a missing or unknown one, or a token store that cannot be
/// read (in a log database out of reach: `log_unreachable`).
const TOKEN: &[&str] = &["unauthorized", "internal_error", "log_unreachable"];
/// A service token: an actor token is refused.
const SERVICE: &[&str] = &["unauthorized", "forbidden", "internal_error", "log_unreachable"];
/// A JSON body (`JsonBody`): its type, size, arrival and shape.
const BODY: &[&str] = &["invalid_json", "request_timeout", "body_too_large", "unsupported_media_type"];
/// An append through the sequencer.
const APPEND: &[&str] =
    &["ledger_stopped", "storage_failure", "log_contended", "log_unreachable", "log_refuses_writes"];
/// `min_position` of every `GET /v1/…` (`server/positions.rs`): a value
/// that is not a position, or read models that do not reach it in time.
const READ_AFTER_WRITE: &[&str] = &["invalid_request", "projection_unavailable"];
/// A run id in the path.
const RUN_PATH: &[&str] = &["invalid_path", "invalid_run_id"];
/// The commands on one run (begin, progress, heartbeat, complete, cancel).
const RUN_COMMAND: &[&str] = &["invalid_request", "unknown_run", "illegal_transition"];
/// The fencing of `progress`, `heartbeat` and `complete`.
const FENCED: &[&str] = &["lease_expired", "run_cancelled"];
/// A read of the projections.
const PROJECTION_READ: &[&str] = &["invalid_query", "projection_unavailable"];
/// Every route but the health routes, at the server's connection bound.
const BUSY: &[&str] = &["too_many_connections"];

/// The error codes each route can answer: `(method, path, code groups)`.
pub const ROUTE_ERRORS: &[(&str, &str, &[&[&str]])] = &[
    ("get", "/metrics", &[SERVICE, BUSY]),
    ("get", "/openapi.json", &[BUSY]),
    ("post", "/v1/authority", &[SERVICE, BODY, APPEND, BUSY, &["invalid_request", "invalid_authority_change"]]),
    (
        "get",
        "/v1/authority",
        &[SERVICE, BUSY, &["invalid_query", "invalid_as_of", "ledger_stopped", "projection_unavailable"]],
    ),
    ("get", "/v1/head", &[SERVICE, BUSY, &["ledger_stopped"]]),
    ("get", "/v1/verify", &[SERVICE, BUSY, APPEND, &["invalid_query", "verify_busy"]]),
    ("get", "/v1/export", &[SERVICE, BUSY, &["invalid_query", "ledger_stopped"]]),
    (
        "get",
        "/v1/runs/{id}/explain",
        &[SERVICE, BUSY, RUN_PATH, &["unknown_run", "ledger_stopped", "projection_unavailable"]],
    ),
    (
        "post",
        "/v1/runs",
        &[SERVICE, BODY, APPEND, BUSY, &["invalid_request", "unknown_tenant", "unknown_operation_type"]],
    ),
    (
        "post",
        "/v1/runs/batch",
        &[SERVICE, BODY, APPEND, BUSY, &["invalid_request", "unknown_tenant", "unknown_operation_type"]],
    ),
    (
        "get",
        "/v1/runs",
        &[TOKEN, PROJECTION_READ, BUSY, &["invalid_request", "invalid_cursor", "forbidden", "not_found"]],
    ),
    ("get", "/v1/runs/summary", &[TOKEN, PROJECTION_READ, BUSY, &["invalid_request", "forbidden", "not_found"]]),
    (
        "get",
        "/v1/runs/{id}",
        &[TOKEN, PROJECTION_READ, BUSY, RUN_PATH, &["forbidden", "not_found", "ledger_stopped", "storage_failure"]],
    ),
    ("post", "/v1/runs/{id}/begin", &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, RUN_COMMAND]),
    ("post", "/v1/runs/{id}/progress", &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, RUN_COMMAND, FENCED]),
    ("post", "/v1/runs/{id}/complete", &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, RUN_COMMAND, FENCED]),
    ("post", "/v1/runs/{id}/heartbeat", &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, RUN_COMMAND, FENCED]),
    ("post", "/v1/runs/{id}/cancel", &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, RUN_COMMAND]),
    ("get", "/v1/audit", &[SERVICE, PROJECTION_READ, BUSY, &["invalid_run_id", "invalid_cursor"]]),
    // It reads an (empty) JSON body like a write, so the body's codes apply.
    (
        "get",
        "/v1/notifications",
        &[TOKEN, PROJECTION_READ, BODY, BUSY, &["invalid_request", "invalid_cursor", "forbidden"]],
    ),
    (
        "post",
        "/v1/notifications/{run}/read",
        &[SERVICE, BODY, APPEND, BUSY, RUN_PATH, &["invalid_query", "invalid_request", "unknown_run"]],
    ),
    ("get", "/v1/events", &[SERVICE, BUSY, APPEND, &["invalid_query"]]),
    ("get", "/v1/events/stream", &[SERVICE, BUSY, &["invalid_query", "invalid_last_event_id", "ledger_stopped"]]),
    // The HTML pages answer their errors as pages (`data-code` on the message).
    (
        "get",
        "/admin/operations",
        &[TOKEN, PROJECTION_READ, BUSY, &["invalid_request", "invalid_cursor", "forbidden", "not_found"]],
    ),
    (
        "get",
        "/admin/operations/{run}",
        &[TOKEN, PROJECTION_READ, BUSY, RUN_PATH, &["forbidden", "not_found", "ledger_stopped", "storage_failure"]],
    ),
    ("get", "/admin/search", &[TOKEN, PROJECTION_READ, BUSY, &["not_found"]]),
    ("get", "/admin/inbox", &[TOKEN, PROJECTION_READ, BUSY, &["invalid_request", "invalid_cursor", "forbidden"]]),
    ("get", "/admin/audit", &[SERVICE, PROJECTION_READ, BUSY, &["invalid_run_id", "invalid_cursor", "ledger_stopped"]]),
    (
        "get",
        "/admin/authority",
        &[SERVICE, BUSY, &["invalid_query", "invalid_as_of", "ledger_stopped", "projection_unavailable"]],
    ),
    ("get", "/admin/style.css", &[BUSY]),
    ("get", "/admin/login", &[BUSY]),
    ("post", "/admin/login", &[BUSY, &["invalid_request", "unauthorized", "internal_error", "cross_origin"]]),
    ("post", "/admin/logout", &[BUSY, &["cross_origin"]]),
];

/// The codes a page answers in the JSON error shape: its query string and
/// path segment are parsed (`QueryParams`, `PathParam`) before the page is.
const JSON_ON_PAGES: &[&str] = &["invalid_query", "invalid_path"];

/// Adds the error answers of [`ROUTE_ERRORS`] to the operations.
struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut Document) {
        for (method, path, groups) in ROUTE_ERRORS {
            let Some(item) = openapi.paths.paths.get_mut(*path) else { continue };
            let operation = match *method {
                "get" => item.get.as_mut(),
                "post" => item.post.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            let html = path.starts_with("/admin/");
            let read_after_write = match *method == "get" && path.starts_with("/v1/") {
                true => READ_AFTER_WRITE,
                false => &[],
            };
            let codes = groups.iter().flat_map(|group| group.iter().copied()).chain(read_after_write.iter().copied());
            add_errors(operation, codes, html);
        }
    }
}

fn add_errors<'a>(operation: &mut Operation, codes: impl Iterator<Item = &'a str>, html: bool) {
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for code in codes {
        // A code missing from `status_of` is caught by the tests (the
        // document would lack it); it is left out rather than guessed.
        let Some(status) = status_of(code) else { continue };
        let codes = by_status.entry(status).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    for (status, mut codes) in by_status {
        codes.sort_unstable();
        let listed = codes.iter().map(|code| format!("`{code}`")).collect::<Vec<_>>().join(", ");
        let key = status.to_string();
        let existing = operation.responses.responses.get(&key).cloned();
        let response = match (existing, html) {
            // A page answers its errors as a page, except a bad query
            // string or path segment, refused in the error shape before
            // the page is reached.
            (_, true) if codes.iter().any(|code| JSON_ON_PAGES.contains(code)) => ResponseBuilder::new()
                .description(format!(
                    "An HTML error page (its message carries `data-code`), or the JSON error shape for \
                     `invalid_query` and `invalid_path`: {listed}."
                ))
                .content("text/html", ContentBuilder::new().schema(Some(string_schema())).build())
                .content("application/json", ContentBuilder::new().schema(Some(error_schema(&codes))).build())
                .build(),
            (_, true) => ResponseBuilder::new()
                .description(format!("An HTML error page (its message carries `data-code`): {listed}."))
                .content("text/html", ContentBuilder::new().schema(Some(string_schema())).build())
                .build(),
            (Some(RefOr::T(mut response)), false) => {
                // A success-shaped body shares this status (a start's 409
                // `scope_busy`): either shape may come.
                response.description = format!("{} Or an error: {listed}.", response.description);
                if let Some(content) = response.content.get_mut("application/json") {
                    let both = OneOfBuilder::new()
                        .item(content.schema.clone().unwrap_or_else(|| RefOr::T(Schema::default())))
                        .item(error_schema(&codes))
                        .build();
                    content.schema = Some(RefOr::T(Schema::OneOf(both)));
                }
                response
            }
            _ => ResponseBuilder::new()
                .description(format!("An error: {listed}."))
                .content("application/json", ContentBuilder::new().schema(Some(error_schema(&codes))).build())
                .build(),
        };
        operation.responses.responses.insert(key, RefOr::T(response));
    }
}

fn string_schema() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).build())
}

/// `ErrorBody` with `error.code` narrowed to `codes`.
fn error_schema(codes: &[&str]) -> Schema {
    let code = ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(codes.to_vec()));
    let error = ObjectBuilder::new().property("code", code);
    let narrowed = ObjectBuilder::new().property("error", error);
    Schema::AllOf(AllOfBuilder::new().item(Ref::from_schema_name("ErrorBody")).item(narrowed).build())
}
