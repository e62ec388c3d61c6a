//! Accepting connections within bounds: a request whose headers do not
//! arrive within [`REQUEST_HEADER_TIMEOUT`] closes its connection (an idle
//! keep-alive connection too), a body not read within
//! [`REQUEST_BODY_TIMEOUT`] is answered `408 request_timeout`, and at most
//! [`CONNECTIONS_MAX`] connections are served at once.
//!
//! Past that bound up to [`OVERFLOW_CONNECTIONS_MAX`] more are accepted for
//! one request each, within [`OVERFLOW_CONNECTION_WAIT`]: `/livez`,
//! `/readyz` and `/healthz` answer as usual (an orchestrator must still see
//! a live process), everything else `503 too_many_connections` with
//! `Retry-After`. Beyond both bounds a connection is closed as accepted.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::server::error::ApiError;
use crate::server::health;
use crate::server::state::AppState;

/// Connections served at once. Each holds a file descriptor; the process's
/// descriptor limit must leave room for these, the overflow and the store.
pub const CONNECTIONS_MAX: usize = 10_000;

/// Connections accepted past [`CONNECTIONS_MAX`] to answer one request
/// (health probes in full, others 503).
pub const OVERFLOW_CONNECTIONS_MAX: usize = 256;

/// Longest wait for a request's headers, from the connection's start or
/// the end of the previous answer (so also the keep-alive idle bound).
pub const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest read of a request body, from the first read: a client that
/// trickles its body is answered 408 and closed.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole life of an overflow connection: headers, answer and close.
pub const OVERFLOW_CONNECTION_WAIT: Duration = Duration::from_secs(2);

/// Longest wait, after a failed `accept` (out of descriptors, say), before
/// accepting again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Longest wait at shutdown for open connections (an event stream never
/// ends by itself) after in-flight requests were told to finish.
pub const SHUTDOWN_DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The bounds [`serve_connections`] applies; [`ServeConfig::default`] is the
/// named constants above. Tests pass smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    pub connections_max: usize,
    pub overflow_connections_max: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub overflow_connection_wait: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            connections_max: CONNECTIONS_MAX,
            overflow_connections_max: OVERFLOW_CONNECTIONS_MAX,
            header_timeout: REQUEST_HEADER_TIMEOUT,
            body_timeout: REQUEST_BODY_TIMEOUT,
            overflow_connection_wait: OVERFLOW_CONNECTION_WAIT,
        }
    }
}

/// The body deadline of a request, put in its extensions by the server so
/// that the body reader applies the configured bound.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// The body deadline of `request` ([`REQUEST_BODY_TIMEOUT`] when none was set).
pub fn body_read_timeout<B>(request: &Request<B>) -> Duration {
    request.extensions().get::<BodyReadTimeout>().map_or(REQUEST_BODY_TIMEOUT, |timeout| timeout.0)
}

/// The 408 of a body that did not arrive within `timeout`.
pub fn request_timeout(timeout: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request body did not arrive within {} ms", timeout.as_millis()),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// open connections finish (at most [`SHUTDOWN_DRAIN_WAIT`]).
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    state: AppState,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let overflow_permits = Arc::new(Semaphore::new(config.overflow_connections_max));
    let overflow_app = overflow_router(state);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            let connection = connection(stream, app.clone(), config, true);
            let watched = graceful.watch(connection);
            tokio::spawn(finish(watched, permit));
        } else if let Ok(permit) = Arc::clone(&overflow_permits).try_acquire_owned() {
            let connection = connection(stream, overflow_app.clone(), config, false);
            let bounded = tokio::time::timeout(config.overflow_connection_wait, connection);
            tokio::spawn(finish(async move { bounded.await.unwrap_or(Ok(())) }, permit));
        } else {
            tracing::warn!("connection bounds reached; closing a new connection");
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN_WAIT, graceful.shutdown()).await.is_err() {
        tracing::warn!(wait_ms = SHUTDOWN_DRAIN_WAIT.as_millis() as u64, "connections still open at shutdown");
    }
}

/// Runs a connection to its end, then frees its slot.
async fn finish(connection: impl Future<Output = Result<(), hyper::Error>>, permit: OwnedSemaphorePermit) {
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error");
    }
    drop(permit);
}

/// One HTTP/1.1 connection with the header deadline, each request carrying
/// the body deadline. `keep_alive` false answers one request and closes.
fn connection(
    stream: TcpStream,
    app: Router,
    config: ServeConfig,
    keep_alive: bool,
) -> hyper::server::conn::http1::Connection<
    TokioIo<TcpStream>,
    impl hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send> + Send,
> {
    let body_timeout = BodyReadTimeout(config.body_timeout);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(body_timeout);
        app.clone().oneshot(request)
    });
    let header_timeout = match keep_alive {
        true => config.header_timeout,
        false => config.header_timeout.min(config.overflow_connection_wait),
    };
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(stream), service)
}

/// What an overflow connection answers: the health probes, and 503 with
/// `Retry-After` for everything else.
fn overflow_router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .fallback(too_many_connections)
        .with_state(state)
}

/// Seconds a client refused for the connection bound should wait.
const RETRY_AFTER_SECONDS: u64 = 1;

async fn too_many_connections() -> Response {
    let error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "the server is at its connection bound; retry shortly",
    );
    let mut response = error.into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}
