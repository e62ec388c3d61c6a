//! Accepting connections within bounds: a request whose headers do not
//! arrive within [`REQUEST_HEADER_TIMEOUT`] closes its connection (an idle
//! keep-alive connection too), a body not read within
//! [`REQUEST_BODY_TIMEOUT`] of the request's head is answered
//! `408 request_timeout` (whichever route reads it), and at most
//! [`CONNECTIONS_MAX`] connections are served at once.
//!
//! Past that bound up to [`OVERFLOW_CONNECTIONS_MAX`] more are accepted for
//! one request each, within [`OVERFLOW_CONNECTION_WAIT`]: `/livez`,
//! `/readyz` and `/healthz` answer as usual (an orchestrator must still see
//! a live process), everything else `503 too_many_connections` with
//! `Retry-After`. Beyond both bounds a connection is closed as accepted.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// Longest time for a request body to arrive, from the request's head: a
/// client that trickles its body is answered 408 and closed.
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

/// The 408 of a body that did not arrive within `timeout`.
fn request_timeout(timeout: Duration) -> ApiError {
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
    let overflow_app = overflow_router(state.clone());
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
            // Counted, not logged: a flood would otherwise flood the log too.
            state.metrics.count_connection_refused();
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

/// One HTTP/1.1 connection with the header deadline, each request body
/// read within the body deadline. `keep_alive` false answers one request
/// and closes.
fn connection(
    stream: TcpStream,
    app: Router,
    config: ServeConfig,
    keep_alive: bool,
) -> hyper::server::conn::http1::Connection<
    TokioIo<TcpStream>,
    impl hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send> + Send,
> {
    let body_timeout = config.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let expired = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout, Arc::clone(&expired))));
        let answer = app.clone().oneshot(request);
        async move {
            let response = answer.await?;
            // Whatever the handler made of the failed read (a 413 of the JSON
            // reader, a 400 of a form), the cause was the deadline.
            match expired.load(Ordering::Relaxed) {
                true => Ok(request_timeout(body_timeout).into_response()),
                false => Ok(response),
            }
        }
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

/// A request body that fails once its deadline has passed (counted from
/// the request's head), and says so in `expired`.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, expired: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), expired }
    }
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyDeadlinePassed;

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyDeadlinePassed))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
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
