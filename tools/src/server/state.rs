//! What every handler shares.

use std::sync::Arc;

use opledger::domain::ledger::Ledger;
use opledger_projections::Projector;

use crate::server::metrics::Metrics;
use crate::tokens::TokenStore;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub projector: Arc<Projector>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Waits until the projections reflect every acknowledged append, so a
    /// read sees the writes acknowledged before it.
    pub async fn fresh_projections(&self) -> Result<(), crate::server::error::ApiError> {
        let head = self.ledger.log().head().position;
        Ok(self.projector.wait_for(head).await?)
    }
}
