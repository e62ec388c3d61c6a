//! The supervisor: runs the projector's follower and, when the store
//! fails (the ledger stops after a failed append, or the follower fails on
//! a storage error), closes the store and reopens it with the same checks
//! as a restart, retrying with capped exponential backoff until it opens.
//! Over a shared log neither happens when the database is briefly away: the
//! follower retries its reads itself (`opledger_projections::following`)
//! and the ledger answers the commands it could not decide with the error.
//!
//! Nothing acknowledged is lost by a reopen: an append is acknowledged only
//! once durable, and the reopen checks the stored head, the tail of the
//! chain and the head witness before the new core takes a write.

use std::sync::Arc;
use std::time::Duration;

use opledger::domain::ledger::Ledger;
use opledger::Log;
use opledger_projections::{ProjectionError, Projector};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::server::state::{AppState, Core, CoreSource};

/// The wait before the first reopen attempt: long enough for the closed
/// store's files to be released, short enough that a transient failure
/// costs little.
pub const REOPEN_BACKOFF_FIRST: Duration = Duration::from_millis(200);

/// The longest wait between reopen attempts (the backoff doubles up to it):
/// a disk that stays full is retried at this pace, with one log line each.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait before reopen attempt `attempt` (0 for the first): doubling from
/// [`REOPEN_BACKOFF_FIRST`], never above [`REOPEN_BACKOFF_MAX`].
pub fn reopen_delay(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    REOPEN_BACKOFF_FIRST.checked_mul(factor).map_or(REOPEN_BACKOFF_MAX, |delay| delay.min(REOPEN_BACKOFF_MAX))
}

/// Opens a core: the ledger (stored head, chain tail and head witness are
/// checked; the state folded) and the projector (caught up to the head).
pub fn open_core(source: &CoreSource) -> anyhow::Result<Core> {
    use anyhow::Context;
    let data = &source.data;
    let ledger = match &source.log {
        Some(url) => {
            let log = Log::open_postgres(url, source.options.clone())
                .with_context(|| format!("opening the log in {}", opledger::log::postgres::describe_url(url)))?;
            Ledger::over(Arc::new(log), Arc::clone(&source.options.clock))
        }
        None => Ledger::open(data.join("log"), source.options.clone()),
    };
    let ledger = Arc::new(ledger.with_context(|| format!("opening {}", data.display()))?);
    let projector = Projector::open_in(&data.join("log"), Arc::clone(ledger.log()), opledger_projections::all())
        .context("opening the projections")?;
    Ok(Core { ledger, projector: Arc::new(projector) })
}

/// Follows with the current core; reopens the store whenever it fails.
/// Runs until aborted (the follower is aborted with it).
pub async fn run(state: AppState) {
    loop {
        let Ok(core) = state.core() else { return };
        let mut follower = JoinSet::new();
        follower.spawn(Arc::clone(&core.projector).follow());
        let failure = watch_core(&core, &mut follower).await;
        let Some(source) = state.source.clone() else {
            tracing::error!(%failure, "the store failed and this server cannot reopen it");
            return;
        };
        drop(follower);
        drop(core);
        reopen(&state, &source, &failure).await;
    }
}

/// Waits until the core fails and says why. A projection that cannot apply
/// an event is not a store failure (a reopen stops at the same event), so
/// it only leaves the server unready.
async fn watch_core(core: &Core, follower: &mut JoinSet<Result<(), ProjectionError>>) -> String {
    let stopped = ledger_stopped(core.ledger.stopped_watch());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            why = &mut stopped => return format!("the ledger stopped: {why}"),
            joined = follower.join_next(), if !follower.is_empty() => match joined {
                Some(Ok(Err(ProjectionError::Stopped { position, detail }))) => {
                    tracing::error!(position, %detail, "projections stopped; reads answer 503 until fixed");
                }
                Some(Ok(Err(error))) => return format!("the projector failed: {error}"),
                Some(Ok(Ok(()))) | None => {}
                Some(Err(error)) => return format!("the projector task ended: {error}"),
            },
        }
    }
}

/// Resolves with the reason once the ledger has stopped.
async fn ledger_stopped(mut stopped: watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(why) = stopped.borrow_and_update().clone() {
            return why;
        }
        if stopped.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Closes the failed store, then opens it again until that succeeds and
/// puts the fresh core in place.
async fn reopen(state: &AppState, source: &Arc<CoreSource>, failure: &str) {
    tracing::error!(%failure, "storage failure: closing the store to reopen it");
    state.metrics.count_storage_error();
    state.reopening.begin(failure);
    if let Some(old) = state.take_core() {
        let log = Arc::clone(old.ledger.log());
        drop(old);
        // Joins the writer threads (blocking); the store's files are
        // released once the last holder of the old core is gone.
        if tokio::task::spawn_blocking(move || log.close()).await.is_err() {
            tracing::error!("closing the failed log panicked");
        }
    }
    let mut attempt: u32 = 0;
    loop {
        let delay = reopen_delay(attempt);
        tokio::time::sleep(delay).await;
        state.metrics.count_reopen_attempt();
        let opening = Arc::clone(source);
        let opened = tokio::task::spawn_blocking(move || open_core(&opening)).await;
        match opened {
            Ok(Ok(core)) => {
                let head = core.ledger.log().head().digest();
                state.replace_core(core);
                state.reopening.end();
                state.metrics.count_reopen();
                tracing::warn!(attempt = attempt + 1, %head, "store reopened; taking writes again");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    attempt = attempt + 1,
                    error = format!("{error:#}"),
                    next_try_in_ms = reopen_delay(attempt + 1).as_millis() as u64,
                    "reopening the store failed"
                )
            }
            Err(error) => tracing::error!(attempt = attempt + 1, %error, "reopening the store panicked"),
        }
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_starts_short_doubles_and_is_capped() {
        assert_eq!(reopen_delay(0), REOPEN_BACKOFF_FIRST);
        assert_eq!(reopen_delay(1), REOPEN_BACKOFF_FIRST * 2);
        assert_eq!(reopen_delay(2), REOPEN_BACKOFF_FIRST * 4);
        let delays: Vec<Duration> = (0..40).map(reopen_delay).collect();
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]), "{delays:?}");
        assert!(delays.iter().all(|delay| *delay <= REOPEN_BACKOFF_MAX), "{delays:?}");
        assert_eq!(reopen_delay(10), REOPEN_BACKOFF_MAX);
        assert_eq!(reopen_delay(u32::MAX), REOPEN_BACKOFF_MAX);
    }
}
