//! What every handler shares.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use opledger::domain::ledger::Ledger;
use opledger::LogOptions;
use opledger_projections::Projector;

use crate::server::error::ApiError;
use crate::server::health::Reopening;
use crate::server::metrics::Metrics;
use crate::server::request_log::RequestTally;
use crate::server::session::SessionStore;
use crate::tokens::TokenStore;

/// Longest a read waits for the projections to reach the head it saw;
/// past it the read answers `503 projection_unavailable` (a projector that
/// stopped, or a store that failed, never holds a read forever).
pub const READ_PROJECTION_WAIT: Duration = Duration::from_secs(5);

/// The ledger and the projector over one open store. A server replaces
/// the whole core when it reopens its store (after a storage error), so a
/// handler takes the current one once per request through [`AppState`].
#[derive(Clone)]
pub struct Core {
    pub ledger: Arc<Ledger>,
    pub projector: Arc<Projector>,
}

/// Verify walks running at once: each reads the whole log.
pub const VERIFIES_CONCURRENT_MAX: usize = 1;
/// Where the core is opened from: what a reopen after a storage error
/// needs to run the same checks as a restart.
#[derive(Clone)]
pub struct CoreSource {
    pub data: PathBuf,
    /// The log in PostgreSQL (a connection string, which may hold a
    /// password: never printed); `None`: the log is in `data/log`.
    pub log: Option<String>,
    pub options: LogOptions,
}

impl std::fmt::Debug for CoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreSource")
            .field("data", &self.data)
            .field("log", &self.log.as_deref().map(opledger::log::postgres::describe_url))
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct AppState {
    /// `None` while the store is closed for a reopen (its files must be
    /// released before the same directory can be opened again).
    core: Arc<RwLock<Option<Core>>>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<Metrics>,
    /// The requests since the last INFO summary (server/request_log.rs).
    pub requests: Arc<RequestTally>,
    verifies: Arc<tokio::sync::Semaphore>,
    /// The browser sessions of the HTML pages.
    pub sessions: Arc<SessionStore>,
    /// Where a reopen opens the core again; `None` for a state built
    /// around a core opened elsewhere (no reopen then).
    pub source: Option<Arc<CoreSource>>,
    /// See [`READ_PROJECTION_WAIT`]; a field so tests can shorten it.
    pub read_projection_wait: Duration,
    /// Why the store is being reopened, while it is (for `/readyz`).
    pub reopening: Arc<Reopening>,
}

impl AppState {
    pub fn new(core: Core, tokens: Arc<TokenStore>, metrics: Arc<Metrics>) -> AppState {
        AppState {
            core: Arc::new(RwLock::new(Some(core))),
            tokens,
            metrics,
            requests: Arc::default(),
            verifies: Arc::new(tokio::sync::Semaphore::new(VERIFIES_CONCURRENT_MAX)),
            sessions: Arc::new(SessionStore::default()),
            source: None,
            read_projection_wait: READ_PROJECTION_WAIT,
            reopening: Arc::default(),
        }
    }

    /// The current core, or `503 ledger_stopped` while the store is being
    /// reopened. The lock is held only to clone two `Arc`s; a poisoned lock
    /// still holds a whole value (replacing it is one store).
    pub fn core(&self) -> Result<Core, ApiError> {
        let current = match self.core.read() {
            Ok(core) => core.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        current.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger_stopped",
                "the store is being reopened after a storage error; retry shortly",
            )
        })
    }

    /// Puts a freshly opened core in place of the current one.
    pub fn replace_core(&self, core: Core) {
        self.set_core(Some(core));
    }

    /// Takes the current core out (requests answer 503 until
    /// [`AppState::replace_core`]), so its store can be closed.
    pub fn take_core(&self) -> Option<Core> {
        match self.core.write() {
            Ok(mut current) => current.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    fn set_core(&self, core: Option<Core>) {
        match self.core.write() {
            Ok(mut current) => *current = core,
            Err(poisoned) => *poisoned.into_inner() = core,
        }
    }

    /// The slots of [`VERIFIES_CONCURRENT_MAX`].
    pub fn verifies(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.verifies
    }

    pub fn ledger(&self) -> Result<Arc<Ledger>, ApiError> {
        Ok(self.core()?.ledger)
    }

    /// The projector, or `503 projection_unavailable` while the store is
    /// being reopened.
    pub fn projector(&self) -> Result<Arc<Projector>, ApiError> {
        self.core()
            .map(|core| core.projector)
            .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "projection_unavailable", error.message))
    }

    /// Runs `read`, a read of the log (a statement on its database when
    /// the log is shared), off the runtime's threads, and waits for it at
    /// most [`AppState::read_projection_wait`], as a read waits for the
    /// read models: past it, `503 log_unreachable` saying what was asked.
    /// A database that went silent must not hold the request for the
    /// log's own, longer, bound.
    pub async fn read_log<T: Send + 'static>(
        &self,
        what: &str,
        read: impl FnOnce() -> Result<T, opledger::Error> + Send + 'static,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.read_projection_wait, tokio::task::spawn_blocking(read)).await {
            Ok(joined) => Ok(joined.map_err(|error| ApiError::internal(error.to_string()))??),
            Err(_) => Err(ApiError::log_unreachable(format!(
                "the log's database did not answer {what} within {} ms; retry",
                self.read_projection_wait.as_millis()
            ))),
        }
    }

    /// The log's newest head, asked of its store ([`opledger::Log::latest_head`]:
    /// the database's, for a shared log, which the node's head then moves
    /// to), within [`AppState::read_log`]'s wait. `asked` says why, for the
    /// 503.
    pub async fn latest_head(&self, asked: &str) -> Result<opledger::Head, ApiError> {
        let log = std::sync::Arc::clone(self.ledger()?.log());
        self.read_log(&format!("a read of its head {asked}"), move || log.latest_head()).await
    }

    /// Waits until the projections reflect every acknowledged append, so a
    /// read sees the writes acknowledged before it; at most
    /// [`AppState::read_projection_wait`], then `503 projection_unavailable`.
    pub async fn fresh_projections(&self) -> Result<(), ApiError> {
        let core = self
            .core()
            .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "projection_unavailable", error.message))?;
        let head = core.ledger.log().head().position;
        match tokio::time::timeout(self.read_projection_wait, core.projector.wait_for(head)).await {
            Ok(reached) => Ok(reached?),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_unavailable",
                format!(
                    "the projections did not reach position {head} within {} ms; retry shortly",
                    self.read_projection_wait.as_millis()
                ),
            )),
        }
    }
}
