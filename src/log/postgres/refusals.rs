//! Writes the database refuses while it is up ([`crate::Error::WritesRefused`]:
//! read-only, or out of space): it answers reads, so the node's follower
//! finds nothing wrong, and only the refused commits tell. The writer
//! keeps the latest for `/readyz`, which otherwise would call ready a node
//! none of whose writes can commit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node counts itself refusing writes (`/readyz`) after the
/// database refused its latest group commit while up (read-only, a full
/// disk), unless a commit succeeds first. Bounded because nothing else
/// tells when the cause is gone: with no writes (a balancer that took
/// the node out of rotation) the node would stay unready for good; past
/// the bound it is ready again, and its next write finds out.
pub const WRITES_REFUSED_READY_WAIT: Duration = Duration::from_secs(10);

/// How this node's latest group commit ended, as `/readyz` needs it.
#[derive(Debug, Default)]
pub(crate) struct LatestRefusal(Mutex<Option<(String, Instant)>>);

impl LatestRefusal {
    /// The latest group commit was refused (the database is up), at `at`.
    pub(crate) fn refused(&self, why: &str, at: Instant) {
        self.set(Some((why.to_owned(), at)));
    }

    /// The latest group commit committed.
    pub(crate) fn committed(&self) {
        self.set(None);
    }

    /// The latest refusal, if it is the latest outcome and within
    /// [`WRITES_REFUSED_READY_WAIT`] of `now`.
    pub(crate) fn lately(&self, now: Instant) -> Option<String> {
        let latest = self.0.lock().ok()?;
        let (why, at) = latest.as_ref()?;
        (now.saturating_duration_since(*at) < WRITES_REFUSED_READY_WAIT).then(|| why.clone())
    }

    fn set(&self, latest: Option<(String, Instant)>) {
        if let Ok(mut current) = self.0.lock() {
            *current = latest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_refused_commit_when_asked_within_the_wait_then_it_is_the_reason() {
        let latest = LatestRefusal::default();
        let at = Instant::now();
        latest.refused("PostgreSQL: No space left on device (53100)", at);
        assert_eq!(latest.lately(at).as_deref(), Some("PostgreSQL: No space left on device (53100)"));
        let almost = at + WRITES_REFUSED_READY_WAIT - Duration::from_millis(1);
        assert!(latest.lately(almost).is_some());
    }

    #[test]
    fn given_a_refused_commit_when_the_wait_passed_then_it_is_forgotten() {
        let latest = LatestRefusal::default();
        let at = Instant::now();
        latest.refused("PostgreSQL: No space left on device (53100)", at);
        assert_eq!(latest.lately(at + WRITES_REFUSED_READY_WAIT), None);
    }

    #[test]
    fn given_a_refused_commit_when_a_later_one_commits_then_it_is_forgotten() {
        let latest = LatestRefusal::default();
        let at = Instant::now();
        latest.refused("PostgreSQL: No space left on device (53100)", at);
        latest.committed();
        assert_eq!(latest.lately(at), None);
    }
}
