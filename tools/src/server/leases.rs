//! The lease reaper: a loop that, every [`LEASE_REAPER_INTERVAL`], asks the
//! ledger to abandon the attempts whose lease lapsed. The decision is the
//! ledger's pure lease decision with "now" passed in, appended through the
//! sequencer like any command, so replay and `verify` re-derive it; the
//! loop itself mutates nothing.

use std::time::Duration;

use crate::server::state::AppState;

/// How often the reaper looks for lapsed leases. A lapsed lease is noticed
/// at most this long after it lapsed (plus the time of the append, and of
/// earlier passes when more than `LEASE_REAPS_PER_PASS_MAX` lapse at once).
pub const LEASE_REAPER_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the task is aborted (the server aborts it when it stops).
/// A failed pass is logged and retried at the next tick: the ledger stops
/// itself after a failed append, and health reports that.
pub async fn reap(state: AppState) {
    let mut ticks = tokio::time::interval(LEASE_REAPER_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = reap_once(&state).await {
            tracing::warn!(%error, "lease reaper pass failed");
        }
    }
}

/// One pass: abandons what lapsed, logs each run and counts the
/// abandonments in `/metrics`. Answers how many attempts were abandoned.
/// While the store is being reopened there is no ledger to ask; the next
/// pass after the reopen catches up on what lapsed.
pub async fn reap_once(state: &AppState) -> Result<usize, opledger::domain::ledger::LedgerError> {
    let Ok(ledger) = state.ledger() else { return Ok(0) };
    let runs = ledger.reap_lapsed_leases().await?;
    state.metrics.count_lease_abandonments(runs.len());
    for run in &runs {
        tracing::info!(run = %run.id, attempt = run.attempts, status = run.status.as_str(), "lease lapsed: attempt abandoned");
    }
    Ok(runs.len())
}
