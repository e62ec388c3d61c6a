//! The projector's follower: applies each acknowledged commit as the head
//! moves, until the log closes.
//!
//! Over a shared log (PostgreSQL) a read of the log that fails on a storage
//! error (the database restarting or failing over) is retried with capped
//! exponential backoff, one log line each: the read models keep answering
//! what they applied, and [`Projector::log_unreachable`] says why they are
//! behind until a catch-up succeeds. Reopening the store would answer every
//! request `503` for as long as the database is away, and a reopen could
//! not fix a database that is away anyway. Over a log in a directory the
//! same failure is the store failing: the follower returns it, and the
//! server's supervisor reopens the store.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ProjectionError;
use crate::projector::Projector;

/// The wait before the first retry of a failed read of a shared log.
pub const FOLLOW_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between retries (the backoff doubles up to it): the
/// most a follower lags behind a database that came back.
pub const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(1);

/// The wait before retry `attempt` (0 for the first): doubling from
/// [`FOLLOW_RETRY_FIRST`], never above [`FOLLOW_RETRY_MAX`].
pub fn follow_retry_delay(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    FOLLOW_RETRY_FIRST.checked_mul(factor).map_or(FOLLOW_RETRY_MAX, |delay| delay.min(FOLLOW_RETRY_MAX))
}

/// Whether a failed catch-up is retried rather than returned: a storage
/// error reading a shared log, or its database out of reach. A projection
/// that cannot apply an event, a corrupt log, or a failure of the read
/// models' own file is not.
pub fn retried(shared: bool, error: &ProjectionError) -> bool {
    shared
        && matches!(
            error,
            ProjectionError::Log(
                opledger::Error::Storage(_) | opledger::Error::Unavailable(_) | opledger::Error::WritesRefused(_)
            )
        )
}

impl Projector {
    /// Follows the log until it closes, applying each acknowledged commit.
    /// Runs the blocking work on the blocking pool.
    pub async fn follow(self: Arc<Self>) -> Result<(), ProjectionError> {
        let mut head = self.log().head_watch();
        let mut failures: u32 = 0;
        loop {
            let projector = Arc::clone(&self);
            let caught_up = tokio::task::spawn_blocking(move || projector.catch_up())
                .await
                .map_err(|_| ProjectionError::Poisoned)?;
            match caught_up {
                Ok(applied) => {
                    if failures > 0 {
                        tracing::warn!(applied, failures, "the log is readable again; the read models caught up");
                        self.set_log_unreachable(None);
                    }
                    failures = 0;
                }
                Err(error) if retried(self.log().shared(), &error) => {
                    let delay = follow_retry_delay(failures);
                    tracing::warn!(
                        %error,
                        applied = self.applied(),
                        attempt = failures + 1,
                        next_try_in_ms = delay.as_millis() as u64,
                        "cannot read the log; the read models answer what they applied and retry"
                    );
                    self.set_log_unreachable(Some(error.to_string()));
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(error) => return Err(error),
            }
            if head.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_backoff_starts_short_doubles_and_is_capped() {
        assert_eq!(follow_retry_delay(0), FOLLOW_RETRY_FIRST);
        assert_eq!(follow_retry_delay(1), FOLLOW_RETRY_FIRST * 2);
        let delays: Vec<Duration> = (0..40).map(follow_retry_delay).collect();
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]), "{delays:?}");
        assert_eq!(follow_retry_delay(u32::MAX), FOLLOW_RETRY_MAX);
    }

    #[test]
    fn only_storage_errors_and_outages_of_a_shared_log_are_retried() {
        let storage = || ProjectionError::Log(opledger::Error::Storage("connection refused".into()));
        assert!(retried(true, &storage()));
        assert!(!retried(false, &storage()), "a local store that fails is reopened");
        assert!(retried(true, &ProjectionError::Log(opledger::Error::Unavailable("connection closed".into()))));
        let stopped = ProjectionError::Stopped { position: 3, detail: "bad event".into() };
        assert!(!retried(true, &stopped), "a reopen stops at the same event: not retried either");
        let corrupt = ProjectionError::Log(opledger::Error::Corrupt { position: 3, detail: "hash".into() });
        assert!(!retried(true, &corrupt));
        assert!(!retried(true, &ProjectionError::Sqlite("disk full".into())));
    }
}
