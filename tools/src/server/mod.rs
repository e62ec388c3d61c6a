//! `opledger serve`: the network contract of API.md on axum.
//!
//! One process owns the data directory: the ledger (log + sequencer), the
//! projector following the log, and the token store beside it.

pub mod auth;
pub mod body;
pub mod connections;
pub mod error;
pub mod events;
pub mod headers;
pub mod health;
pub mod integrity;
pub mod leases;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod openapi_positions;
pub mod pages;
pub mod positions;
pub mod reads;
pub mod request_log;
pub mod session;
pub mod state;
pub mod supervisor;
pub mod writes;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use opledger::LogOptions;

pub use connections::ServeConfig;
pub use error::ApiError;
pub use state::AppState;

use crate::tokens::TokenStore;

/// Opens everything a server needs on `data`, remembering where from so
/// that the supervisor can reopen the store after a storage error.
pub fn open_state(data: &Path, options: LogOptions) -> anyhow::Result<AppState> {
    open_state_with_log(data, None, options)
}

/// [`open_state`] with the log in PostgreSQL when `log` names a database:
/// `data` then holds only this node's read models, and the tokens are in
/// the database.
pub fn open_state_with_log(data: &Path, log: Option<&str>, options: LogOptions) -> anyhow::Result<AppState> {
    let source = state::CoreSource { data: data.to_path_buf(), log: log.map(str::to_owned), options };
    let core = supervisor::open_core(&source)?;
    let tokens = TokenStore::for_log(data, core.ledger.log());
    let mut state = AppState::new(core, Arc::new(tokens), Arc::new(metrics::Metrics::default()));
    state.source = Some(Arc::new(source));
    Ok(state)
}

/// Every route of API.md.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::served))
        .route("/v1/authority", post(writes::authority).get(integrity::authority))
        .route("/v1/head", get(integrity::head))
        .route("/v1/verify", get(integrity::verify))
        .route("/v1/export", get(integrity::export))
        .route("/v1/runs/{id}/explain", get(integrity::explain))
        .route("/v1/runs", post(writes::start).get(reads::list_runs))
        .route("/v1/runs/batch", post(writes::start_batch))
        .route("/v1/runs/summary", get(reads::run_summary))
        .route("/v1/runs/{id}", get(reads::get_run))
        .route("/v1/runs/{id}/begin", post(writes::begin))
        .route("/v1/runs/{id}/progress", post(writes::progress))
        .route("/v1/runs/{id}/complete", post(writes::complete))
        .route("/v1/runs/{id}/heartbeat", post(writes::heartbeat))
        .route("/v1/runs/{id}/cancel", post(writes::cancel))
        .route("/v1/audit", get(reads::audit))
        .route("/v1/notifications", get(reads::notifications))
        .route("/v1/notifications/{run}/read", post(reads::mark_read))
        .route("/v1/events", get(events::page))
        .route("/v1/events/stream", get(events::stream))
        .route("/admin/operations", get(pages::list::list))
        .route("/admin/operations/{run}", get(pages::detail::detail))
        .route("/admin/search", get(pages::list::search))
        .route("/admin/inbox", get(pages::inbox::inbox))
        .route("/admin/audit", get(pages::audit::audit))
        .route("/admin/authority", get(pages::authority::authority))
        .route("/admin/style.css", get(pages::stylesheet))
        .route("/admin/login", get(login::login_form).post(login::login))
        .route("/admin/logout", post(login::logout))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), positions::read_your_writes))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(body::REQUEST_BODY_BYTES_MAX))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// One span per request (with the run id when the path names one), the
/// request's count and latency in the metrics and in the interval summary,
/// and its log line: DEBUG, or WARN for a server error (request_log.rs).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let run = request.uri().path().split('/').find(|part| uuid::Uuid::parse_str(part).is_ok()).map(str::to_owned);
    let span = tracing::info_span!("request", method = %request.method(), route = %route, run = run.as_deref());
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let elapsed = started.elapsed();
    state.metrics.observe(&route, response.status().as_u16(), elapsed);
    state.requests.record(response.status().as_u16(), elapsed);
    span.in_scope(|| request_log::log_request(response.status(), elapsed));
    response
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight
/// requests (and their appends) finish, and closes the log.
pub async fn serve(state: AppState, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    serve_on(state, listener, ServeConfig::default(), shutdown_signal()).await
}

/// [`serve`] on a bound listener, with the connection bounds of `config`,
/// until `shutdown` resolves. The supervisor runs alongside: it follows the
/// log with the projector and reopens the store after a storage error.
pub async fn serve_on(
    state: AppState,
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving");
    let supervisor = tokio::spawn(supervisor::run(state.clone()));
    let reaper = tokio::spawn(leases::reap(state.clone()));
    let summaries = tokio::spawn(request_log::summarize(Arc::clone(&state.requests)));
    connections::serve_connections(listener, router(state.clone()), state.clone(), config, shutdown).await;
    supervisor.abort();
    reaper.abort();
    summaries.abort();
    request_log::log_summary(&state.requests);
    let _ = supervisor.await;
    if let Ok(core) = state.core() {
        core.ledger.log().close();
    }
    tracing::info!("stopped; the log is closed");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
