//! The copy of the shared tokens document a node authenticates from, read
//! again off the request path.
//!
//! A read of the document is a statement on the log's database. Made by
//! the request that found the copy old, it held that request (and the
//! runtime thread serving it) for as long as the database took: with a
//! database that went silent (a hung server, a partition without resets)
//! that was the log's 30 s bound per request, enough to stall every
//! route of the node, `/healthz` included. So one read at a time runs on
//! a thread of its own; a request waits for it at most
//! [`SHARED_TOKENS_READ_WAIT`], and not at all for a read that has been
//! running longer than that. Past the wait it is answered from the copy
//! read last while that copy is younger than [`SHARED_TOKENS_STALE_MAX`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opledger::Log;

use super::{read_document, TokenRecord, SHARED_TOKENS_REFRESH, SHARED_TOKENS_STALE_MAX};

/// Longest a request waits for a read of the shared tokens it did not find
/// fresh, when the node has a copy younger than [`SHARED_TOKENS_STALE_MAX`]
/// to fall back on: a database that answers takes milliseconds; past this
/// the request is answered from that copy.
pub const SHARED_TOKENS_READ_WAIT: Duration = Duration::from_millis(250);

/// Longest a request waits for that read when the node has no copy to fall
/// back on (none read yet, or too old): longer, since the answer is
/// otherwise a refusal, and bounded, since a database that does not answer
/// must not hold the node's requests (the log's own bound is 30 s).
pub const SHARED_TOKENS_FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// After a read failed, the next is started no sooner than this: while the
/// database refuses connections, requests are answered from the copy (or
/// refused) without a thread and a connection attempt each.
pub const SHARED_TOKENS_READ_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// The node's copy of the shared tokens, and the one read that renews it.
#[derive(Debug)]
pub(super) struct SharedTokens {
    log: Arc<Log>,
    state: Mutex<State>,
    read_finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    copy: Option<Copy>,
    /// When the read in flight started, if one is.
    reading_since: Option<Instant>,
    /// Reads finished so far: what a waiting request watches.
    reads_finished: u64,
    /// Why the last read failed, and when, until one succeeds.
    failure: Option<(Failure, Instant)>,
    /// Changes of the tokens by this node: a read that started before one
    /// is not kept.
    changes: u64,
}

#[derive(Debug)]
struct Copy {
    read_at: Instant,
    records: Arc<Vec<TokenRecord>>,
}

/// A failed read, kept for the requests that wait on it (an error is not
/// `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    /// The database could not be reached or did not answer.
    unreachable: bool,
    message: String,
}

impl Failure {
    fn of(error: &anyhow::Error) -> Failure {
        let unreachable =
            error.chain().any(|cause| matches!(cause.downcast_ref(), Some(opledger::Error::Unavailable(_))));
        Failure { unreachable, message: format!("{error:#}") }
    }

    /// As the error it was: an unreachable database stays one (a 503 to the
    /// caller), anything else a failure of the token store.
    fn error(&self) -> anyhow::Error {
        match self.unreachable {
            true => anyhow::Error::new(opledger::Error::Unavailable(self.message.clone())),
            false => anyhow::anyhow!("{}", self.message),
        }
    }
}

impl SharedTokens {
    pub(super) fn new(log: Arc<Log>) -> Arc<SharedTokens> {
        Arc::new(SharedTokens { log, state: Mutex::new(State::default()), read_finished: Condvar::new() })
    }

    pub(super) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// This node changed the tokens: the next look-up reads them again, and
    /// a read already running, which may have missed the change, is not
    /// kept.
    pub(super) fn changed(&self) {
        if let Ok(mut state) = self.lock() {
            state.changes += 1;
            state.copy = None;
        }
    }

    /// The records to authenticate from: the copy when it is fresh (read
    /// within [`SHARED_TOKENS_REFRESH`]), else the copy a read renews
    /// within [`SHARED_TOKENS_READ_WAIT`], else the copy read last while it
    /// is younger than [`SHARED_TOKENS_STALE_MAX`], else the read's error.
    pub(super) fn records(self: &Arc<Self>) -> anyhow::Result<Arc<Vec<TokenRecord>>> {
        let mut state = self.lock()?;
        let wait = state.read_wait();
        let waited_until = Instant::now() + wait;
        let mut read_seen = false;
        loop {
            if let Some(records) = state.fresh() {
                return Ok(records);
            }
            match state.reading_since {
                // This request's read failed, or one failed just now: no
                // other read for it.
                None if state.failed_within(retry_after(read_seen)) => break,
                None => self.start_read(&mut state),
                // A read stuck since before this request: not waited for.
                Some(since) if since.elapsed() >= wait => break,
                Some(_) => {}
            }
            let finished = state.reads_finished;
            while state.reads_finished == finished {
                let Some(left) = waited_until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
                else {
                    return state.fallback();
                };
                state = self.read_finished.wait_timeout(state, left).map_err(|_| poisoned())?.0;
            }
            read_seen = true;
        }
        state.fallback()
    }

    fn lock(&self) -> anyhow::Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned())
    }

    fn start_read(self: &Arc<Self>, state: &mut State) {
        state.reading_since = Some(Instant::now());
        let changes = state.changes;
        let shared = Arc::clone(self);
        let spawned =
            std::thread::Builder::new().name("opledger-tokens".into()).spawn(move || shared.read_and_keep(changes));
        if let Err(error) = spawned {
            state.finish(Some(Failure {
                unreachable: false,
                message: format!("cannot start a read of the tokens: {error}"),
            }));
        }
    }

    /// One read of the document, kept unless this node changed the tokens
    /// since it started.
    fn read_and_keep(&self, changes: u64) {
        let read = read_document(&self.log);
        let Ok(mut state) = self.lock() else { return };
        let failure = match read {
            Ok((records, _)) => {
                if state.changes == changes {
                    state.copy = Some(Copy { read_at: Instant::now(), records: Arc::new(records) });
                }
                if state.failure.is_some() {
                    tracing::info!("the tokens in the database are read again");
                }
                None
            }
            Err(error) => {
                state.report(&error);
                Some(Failure::of(&error))
            }
        };
        state.finish(failure);
        self.read_finished.notify_all();
    }
}

impl State {
    /// Logs a failed read: a warning once per outage (the reads retry
    /// several times a second), then at debug level.
    fn report(&self, error: &anyhow::Error) {
        let copy_age_ms = self.copy.as_ref().map(|copy| copy.read_at.elapsed().as_millis() as u64);
        let error = format!("{error:#}");
        match self.failure.is_none() {
            true => tracing::warn!(
                error,
                copy_age_ms,
                "cannot read the tokens in the database; authenticating from the copy read last while it is \
                 younger than {} s",
                SHARED_TOKENS_STALE_MAX.as_secs()
            ),
            false => tracing::debug!(error, copy_age_ms, "cannot read the tokens in the database, again"),
        }
    }

    fn fresh(&self) -> Option<Arc<Vec<TokenRecord>>> {
        let copy = self.copy.as_ref().filter(|copy| copy.read_at.elapsed() < SHARED_TOKENS_REFRESH)?;
        Some(Arc::clone(&copy.records))
    }

    /// How long a request waits for a read: see [`SHARED_TOKENS_READ_WAIT`]
    /// and [`SHARED_TOKENS_FIRST_READ_WAIT`].
    fn read_wait(&self) -> Duration {
        match self.usable_copy().is_some() {
            true => SHARED_TOKENS_READ_WAIT,
            false => SHARED_TOKENS_FIRST_READ_WAIT,
        }
    }

    /// The copy read last, while it is younger than
    /// [`SHARED_TOKENS_STALE_MAX`].
    fn usable_copy(&self) -> Option<&Copy> {
        self.copy.as_ref().filter(|copy| copy.read_at.elapsed() < SHARED_TOKENS_STALE_MAX)
    }

    /// A read failed, less than `interval` ago.
    fn failed_within(&self, interval: Duration) -> bool {
        self.failure.as_ref().is_some_and(|(_, at)| at.elapsed() < interval)
    }

    fn finish(&mut self, failure: Option<Failure>) {
        self.failure = failure.map(|failure| (failure, Instant::now()));
        self.reading_since = None;
        self.reads_finished += 1;
    }

    /// No fresh copy in time: the copy read last while it is younger than
    /// [`SHARED_TOKENS_STALE_MAX`], else why there is none.
    fn fallback(&self) -> anyhow::Result<Arc<Vec<TokenRecord>>> {
        if let Some(copy) = self.usable_copy() {
            return Ok(Arc::clone(&copy.records));
        }
        if let Some(since) = self.reading_since {
            return Err(anyhow::Error::new(opledger::Error::Unavailable(format!(
                "the database has not answered a read of the tokens for {} ms",
                since.elapsed().as_millis()
            ))));
        }
        Err(self.failure.as_ref().map_or_else(|| anyhow::anyhow!("the tokens could not be read"), |(f, _)| f.error()))
    }
}

/// How long after a failed read a request starts no other: never again
/// once one read failed for it, else [`SHARED_TOKENS_READ_RETRY_INTERVAL`].
fn retry_after(read_seen: bool) -> Duration {
    match read_seen {
        true => Duration::MAX,
        false => SHARED_TOKENS_READ_RETRY_INTERVAL,
    }
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("the token cache is poisoned (a thread panicked holding it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_aged(age: Duration) -> Option<Copy> {
        let read_at = Instant::now().checked_sub(age).unwrap();
        Some(Copy { read_at, records: Arc::new(Vec::new()) })
    }

    fn unreachable_kind(error: &anyhow::Error) -> bool {
        matches!(error.downcast_ref(), Some(opledger::Error::Unavailable(_)))
    }

    #[test]
    fn given_a_copy_read_within_the_refresh_when_asked_then_it_is_fresh() {
        let state = State { copy: copy_aged(Duration::ZERO), ..State::default() };
        assert!(state.fresh().is_some());
        let old = State { copy: copy_aged(SHARED_TOKENS_REFRESH), ..State::default() };
        assert!(old.fresh().is_none(), "read again once the refresh passed");
    }

    #[test]
    fn given_a_copy_younger_than_the_stale_bound_when_no_read_answered_then_it_is_the_answer_after_a_short_wait() {
        let state = State {
            copy: copy_aged(SHARED_TOKENS_STALE_MAX / 2),
            reading_since: Some(Instant::now()),
            ..State::default()
        };
        assert_eq!(state.read_wait(), SHARED_TOKENS_READ_WAIT);
        assert!(state.fallback().is_ok());
    }

    #[test]
    fn given_no_usable_copy_when_the_read_does_not_answer_then_the_database_is_unreachable_after_a_longer_wait() {
        for copy in [None, copy_aged(SHARED_TOKENS_STALE_MAX)] {
            let state = State { copy, reading_since: Some(Instant::now()), ..State::default() };
            assert_eq!(state.read_wait(), SHARED_TOKENS_FIRST_READ_WAIT);
            let error = state.fallback().unwrap_err();
            assert!(unreachable_kind(&error), "{error:#}");
            assert!(format!("{error:#}").contains("has not answered a read of the tokens"), "{error:#}");
        }
    }

    #[test]
    fn given_no_usable_copy_when_the_read_failed_then_its_error_keeps_its_kind() {
        let unreachable = anyhow::Error::new(opledger::Error::Unavailable("connection refused".into()));
        let state = State { failure: Some((Failure::of(&unreachable), Instant::now())), ..State::default() };
        let error = state.fallback().unwrap_err();
        assert!(unreachable_kind(&error) && format!("{error:#}").contains("connection refused"), "{error:#}");
        let corrupt = anyhow::anyhow!("reading the tokens in the database: expected value");
        let state = State { failure: Some((Failure::of(&corrupt), Instant::now())), ..State::default() };
        let error = state.fallback().unwrap_err();
        assert!(!unreachable_kind(&error) && format!("{error:#}").contains("expected value"), "{error:#}");
    }

    #[test]
    fn given_a_read_that_failed_just_now_when_asked_then_no_other_read_is_started_until_the_retry_interval() {
        let refused = anyhow::Error::new(opledger::Error::Unavailable("connection refused".into()));
        let now = State { failure: Some((Failure::of(&refused), Instant::now())), ..State::default() };
        assert!(now.failed_within(SHARED_TOKENS_READ_RETRY_INTERVAL));
        let then = Instant::now().checked_sub(SHARED_TOKENS_READ_RETRY_INTERVAL).unwrap();
        let earlier = State { failure: Some((Failure::of(&refused), then)), ..State::default() };
        assert!(!earlier.failed_within(SHARED_TOKENS_READ_RETRY_INTERVAL), "read again");
        assert!(!State::default().failed_within(Duration::MAX), "no failure, no wait");
    }
}
