//! A head held locked for one decision, on logs other nodes append to.
//!
//! A decider whose round lost the race for the head to another node takes
//! the database's head lock first, then folds up to the head it locked,
//! decides, and appends under that same lock: the round cannot lose again,
//! and the lock's queue (first come, first served) makes the nodes take
//! turns instead of one node losing round after round.

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::envelope::NewEvent;
use crate::error::Error;
use crate::log::staging::Request;
use crate::log::{internal_request, Appended, Conflict, Expectations, Head};

/// The head, locked until [`HeldHead::append_blocking`] commits or the value
/// is dropped (which rolls back, appending nothing).
pub struct HeldHead {
    head: Head,
    append: oneshot::Sender<Request>,
}

impl std::fmt::Debug for HeldHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldHead").field("head", &self.head).finish_non_exhaustive()
    }
}

impl HeldHead {
    pub(crate) fn new(head: Head, append: oneshot::Sender<Request>) -> HeldHead {
        HeldHead { head, append }
    }

    /// The head no other append can move while this value lives.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Appends `events` under the hold and commits, which ends the hold.
    /// `expectations` are checked as for any append: a caller that names the
    /// head its decision folded to learns of a fold that fell short as a
    /// conflict, never as an event decided on a stale state. Blocks the
    /// calling thread; not for use inside an async task.
    pub fn append_blocking(
        self,
        events: Vec<NewEvent>,
        expectations: Expectations,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<Result<Appended, Conflict>, Error> {
        let (request, pending) = internal_request(events, expectations, recorded_at)?;
        self.append
            .send(request)
            .map_err(|_| Error::Storage("the head lock was released before the append reached it".into()))?;
        pending.wait_blocking()
    }
}
