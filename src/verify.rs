//! Integrity: a walk of the whole log.
//!
//! Checks that positions run gapless from 1, that every record hashes to its
//! hash and chains to the one before, that every stream's versions run
//! gapless from 1, that both indexes point at every event and hold nothing
//! else, that the stored head names the last event, and (when given) that
//! the log still holds an exported head digest. Stops at the first bad
//! position.

use std::collections::HashMap;

use crate::envelope::{Envelope, Hash, StreamId};
use crate::error::Error;
use crate::log::{Backend, Head, Log};

/// Events read per page of the walk.
const VERIFY_PAGE_EVENTS: usize = 1024;

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub streams: u64,
    pub head: Head,
    /// The first position that does not hold, and why. `None`: the log verifies.
    pub first_failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: u64,
    pub detail: String,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }
}

/// Looks at every event the walk reaches, in log order, and may reject it
/// (the domain replays legitimacy decisions this way).
pub trait Observer {
    fn observe(&mut self, event: &Envelope) -> Result<(), String>;
}

impl<F: FnMut(&Envelope) -> Result<(), String>> Observer for F {
    fn observe(&mut self, event: &Envelope) -> Result<(), String> {
        self(event)
    }
}

/// Walks the whole log. `expected_head` is a digest exported earlier: the
/// log must still hold that very event at that position. `progress` is
/// called with the number of events checked so far.
pub fn verify(
    log: &Log,
    expected_head: Option<Head>,
    observer: &mut dyn Observer,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, Error> {
    let head = log.head();
    let mut walk = Walk { previous: Hash::GENESIS, versions: HashMap::new(), checked: 0 };
    let failure = walk.run(log, head, observer, progress)?.or_else(|| walk.check_expected(log, expected_head));
    Ok(VerifyReport { events_checked: walk.checked, streams: walk.versions.len() as u64, head, first_failure: failure })
}

struct Walk {
    previous: Hash,
    versions: HashMap<StreamId, u64>,
    checked: u64,
}

impl Walk {
    fn run(
        &mut self,
        log: &Log,
        head: Head,
        observer: &mut dyn Observer,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<Failure>, Error> {
        let backend = log.backend();
        let mut expected = 1u64;
        while expected <= head.position {
            let want = usize::try_from(head.position - expected + 1).unwrap_or(usize::MAX).min(VERIFY_PAGE_EVENTS);
            let page = match backend.events(expected, want) {
                Ok(page) if page.is_empty() => {
                    return Ok(Some(Failure { position: expected, detail: "event missing from the store".into() }))
                }
                Ok(page) => page,
                Err(Error::Corrupt { position, detail }) => return Ok(Some(Failure { position, detail })),
                // A store refusing a page it cannot read is corruption at
                // the next position the walk needed.
                Err(Error::Storage(detail)) => return Ok(Some(Failure { position: expected, detail })),
                Err(other) => return Err(other),
            };
            for event in page {
                if let Some(failure) = self.check(backend, &event, expected)? {
                    return Ok(Some(failure));
                }
                if let Err(detail) = observer.observe(&event) {
                    return Ok(Some(Failure { position: event.position, detail }));
                }
                expected += 1;
                self.checked += 1;
                if self.checked.is_multiple_of(4096) {
                    progress(self.checked);
                }
            }
        }
        progress(self.checked);
        Ok(self.check_end(log, head, expected - 1))
    }

    fn check(&mut self, backend: &dyn Backend, event: &Envelope, expected: u64) -> Result<Option<Failure>, Error> {
        let fail = |detail: String| Ok(Some(Failure { position: expected, detail }));
        if event.position != expected {
            return fail(format!("position {expected} is missing (the next stored event is {})", event.position));
        }
        if event.previous_hash != self.previous {
            return fail("does not chain to the hash of the event before it".into());
        }
        let version = self.versions.entry(event.stream.clone()).or_insert(0);
        if event.stream_version != *version + 1 {
            return fail(format!("stream {} jumps from version {} to {}", event.stream, version, event.stream_version));
        }
        *version += 1;
        if let Some(detail) = backend.index_failure(event)? {
            return fail(detail);
        }
        self.previous = event.hash;
        Ok(None)
    }

    fn check_end(&self, log: &Log, head: Head, last: u64) -> Option<Failure> {
        if last != head.position || self.previous != head.hash {
            return Some(Failure {
                position: last + 1,
                detail: format!("the log ends at {last} but its head says {}", head.position),
            });
        }
        match log.backend().index_count_failure() {
            Ok(None) => None,
            Ok(Some(detail)) => Some(Failure { position: last, detail }),
            Err(error) => Some(Failure { position: last, detail: error.to_string() }),
        }
    }

    fn check_expected(&self, log: &Log, expected: Option<Head>) -> Option<Failure> {
        let expected = expected?;
        let fail = |detail: &str| Some(Failure { position: expected.position, detail: detail.to_owned() });
        match log.event(expected.position) {
            _ if expected.position == 0 => None,
            Ok(Some(event)) if event.hash == expected.hash => None,
            Ok(Some(_)) => fail("the event differs from the exported head digest: the log was rewritten"),
            Ok(None) => fail("the log no longer reaches the exported head digest: events were removed"),
            Err(error) => fail(&error.to_string()),
        }
    }
}
