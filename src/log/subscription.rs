//! A subscription: every event from a position on, catching up from the
//! store and then following new appends.
//!
//! It reads only up to the head the writer has published, and the writer
//! publishes a head only after the group commit holding it is durable, so a
//! subscriber never sees an unacknowledged event. Reading by position makes
//! the hand-over from catch-up to live free of gaps and duplicates.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::envelope::Envelope;
use crate::error::Error;
use crate::limits::SUBSCRIPTION_REFILL_EVENTS;
use crate::log::backend::Backend;
use crate::log::Head;

pub struct Subscription {
    backend: Arc<dyn Backend>,
    head: watch::Receiver<Head>,
    next: u64,
    buffer: VecDeque<Envelope>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(backend: Arc<dyn Backend>, head: watch::Receiver<Head>, from: u64) -> Subscription {
        Subscription { backend, head, next: from, buffer: VecDeque::new() }
    }

    /// The position of the next event this subscription yields.
    pub fn next_position(&self) -> u64 {
        self.next - self.buffer.len() as u64
    }

    /// The next event; waits for one when caught up. `None` once the log is
    /// closed and every acknowledged event has been yielded.
    pub async fn next(&mut self) -> Option<Result<Envelope, Error>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            let head = self.head.borrow_and_update().position;
            if self.next <= head {
                if let Err(error) = self.refill(head) {
                    return Some(Err(error));
                }
                continue;
            }
            if self.head.changed().await.is_err() {
                return None;
            }
        }
    }

    fn refill(&mut self, head: u64) -> Result<(), Error> {
        let want = usize::try_from(head - self.next + 1).unwrap_or(usize::MAX).min(SUBSCRIPTION_REFILL_EVENTS);
        for event in self.backend.events(self.next, want)? {
            if event.position != self.next {
                return Err(Error::corrupt(self.next, "event missing from the store"));
            }
            self.next += 1;
            self.buffer.push_back(event);
        }
        if self.buffer.is_empty() {
            return Err(Error::corrupt(self.next, "event missing from the store"));
        }
        Ok(())
    }
}
