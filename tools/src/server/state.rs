//! What every handler shares.

use std::sync::{Arc, RwLock};

use opledger::domain::ledger::Ledger;
use opledger_projections::Projector;

use crate::server::metrics::Metrics;
use crate::server::session::SessionStore;
use crate::tokens::TokenStore;

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

#[derive(Clone)]
pub struct AppState {
    core: Arc<RwLock<Core>>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<Metrics>,
    verifies: Arc<tokio::sync::Semaphore>,
    /// The browser sessions of the HTML pages.
    pub sessions: Arc<SessionStore>,
}

impl AppState {
    pub fn new(core: Core, tokens: Arc<TokenStore>, metrics: Arc<Metrics>) -> AppState {
        let verifies = Arc::new(tokio::sync::Semaphore::new(VERIFIES_CONCURRENT_MAX));
        let sessions = Arc::new(SessionStore::default());
        AppState { core: Arc::new(RwLock::new(core)), tokens, metrics, verifies, sessions }
    }

    /// The current core. The lock is held only to clone two `Arc`s; a
    /// poisoned lock still holds a whole core (replacing it is one store).
    pub fn core(&self) -> Core {
        match self.core.read() {
            Ok(core) => core.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a freshly opened core in place of the current one.
    pub fn replace_core(&self, core: Core) {
        match self.core.write() {
            Ok(mut current) => *current = core,
            Err(poisoned) => *poisoned.into_inner() = core,
        }
    }

    /// The slots of [`VERIFIES_CONCURRENT_MAX`].
    pub fn verifies(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.verifies
    }

    pub fn ledger(&self) -> Arc<Ledger> {
        self.core().ledger
    }

    pub fn projector(&self) -> Arc<Projector> {
        self.core().projector
    }

    /// Waits until the projections reflect every acknowledged append, so a
    /// read sees the writes acknowledged before it.
    pub async fn fresh_projections(&self) -> Result<(), crate::server::error::ApiError> {
        let core = self.core();
        let head = core.ledger.log().head().position;
        Ok(core.projector.wait_for(head).await?)
    }
}
