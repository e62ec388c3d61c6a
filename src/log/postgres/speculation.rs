//! Speculative groups: a group staged on the head the writer expects, and
//! inserted before the head is locked.
//!
//! A group that locks the head first does all its work under the lock:
//! the lock's answer travels back, the group is staged, its rows travel to
//! the server and are inserted, and only then does it commit. Measured with
//! pgbench on this project's 2-core machine, two connections committing
//! groups of 27 rows: 990 groups/s locking first, 1,990/s inserting first.
//!
//! So, while one writer has the head to itself, a group:
//! 1. reads the head as committed, without locking it, with what staging
//!    needs ([`Lane::read_unlocked`](super::lane::Lane::read_unlocked));
//! 2. is staged on the head this writer's own groups still in flight will
//!    leave ([`Chain::view`]): the head it read, plus each group staged on
//!    top of it;
//! 3. in one call, one round trip (`opledger_log_append_speculative_v1`,
//!    in `schema.rs`, a transaction of its own): inserts its rows; waits
//!    until the speculative group it was staged on moved the head (that
//!    group's advisory lock, see [`Chain::view`]); locks the head, which
//!    waits for that group's commit; moves it only from the head it was
//!    staged on; commits. Any other head, a row another writer stored
//!    first, or a lock wait past [`SPECULATIVE_LOCK_WAIT_MAX`] rolls the
//!    whole transaction back: the group *missed*, and its appends are
//!    staged again on the locked head.
//!    Nothing is answered from a speculative view unless the commit proved
//!    it: the head the group moved from is the chain the view was built on.
//!
//! A group whose streams the writer knows skips the read: it is staged on
//! [`Known`], the stream versions at a head this writer's reads and commits
//! taught it, plus its own groups since; its advisory lock was taken by the
//! call of its lane's group before, so the group is its call alone. Event
//! ids it does not know are
//! taken as not stored; the events table's unique constraints refuse any
//! that are, and the group misses. Every stream an expectation names must
//! be known: a conflict is an answer, and the database checks no version of
//! a stream the group does not write.
//!
//! A miss turns speculation off ([`Switch`]); it comes back after enough
//! locked groups in a row found only this writer's own groups before them.
//! While nodes or held heads collide, groups lock first, as before.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::error::{DbError, SqlState};
use uuid::Uuid;

use crate::envelope::StreamId;
use crate::error::Error;
use crate::log::postgres::lane::Prefetched;
use crate::log::staging::{Committed, Group, Request};
use crate::log::Head;

/// Longest a speculative group waits for a lock (the head row, or a row
/// another transaction is inserting at the same position or id). The wait
/// for the group ahead to commit is a flush, about a millisecond; a longer
/// one is a held head or a deadlock with a writer that locked first, which
/// the speculative group ends by rolling back. PostgreSQL's
/// `deadlock_timeout` (1 s by default) must stay above it, so that the
/// speculative side, not the other, is the one that gives way.
pub(crate) const SPECULATIVE_LOCK_WAIT_MAX: Duration = Duration::from_millis(100);

/// Locked groups in a row that must find only this writer's groups before
/// them before it speculates again, after its first miss.
const CLEAN_GROUPS_MIN: u32 = 16;

/// Each miss after a short return doubles the groups required, up to this.
const CLEAN_GROUPS_MAX: u32 = 4_096;

/// Staged groups remembered for chaining: two lanes have at most one in
/// flight ahead of the one staging; the rest are committed groups a slow
/// read may still be behind.
const CHAIN_GROUPS_MAX: usize = 8;

/// Streams whose versions [`Known`] keeps; past it, it forgets them all and
/// learns again from the reads of the groups that follow (about 100 bytes a
/// stream).
pub(crate) const KNOWN_STREAMS_MAX: usize = 65_536;

/// Whether a refusal of a speculative group's statements means it missed
/// (the head or a row was not as staged; a lock waited too long), rather
/// than a failure to report.
pub(crate) fn missed(refusal: &DbError) -> bool {
    let code = refusal.code();
    let table = refusal.table();
    (*code == SqlState::NOT_NULL_VIOLATION && table == Some("opledger_log_head"))
        || (*code == SqlState::UNIQUE_VIOLATION && table == Some("opledger_log_events"))
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// One group a writer staged, as a group staged after it sees it.
struct Staged {
    ticket: u64,
    base: Head,
    after: Head,
    /// A speculative group's advisory lock, held by its lane's session
    /// until its call moved the head; `None` for a group that locked the
    /// head first.
    key: Option<i64>,
    /// Its commit was acknowledged.
    committed: bool,
    last_recorded_at: DateTime<Utc>,
    ids: HashMap<Uuid, (u64, DateTime<Utc>)>,
    versions: HashMap<StreamId, u64>,
}

/// Stream versions as they are at one head, learnt from reads and carried
/// forward by this writer's own commits: what a group staged without a read
/// starts from.
///
/// Every version it holds is exact at `head`, or newer by groups of this
/// writer that committed after it (a read's statements each see what was
/// committed when they ran, so its versions can be newer than its head).
/// Either way, at the head a group is staged on (this one, plus every
/// group in flight) the versions are exact, if that head is the log's: the
/// only commits after `head` that can lead to it are this writer's groups,
/// and the view takes their versions. If another writer committed since,
/// the group's head move finds the head elsewhere and it misses.
pub(crate) struct Known {
    head: Head,
    recorded_at: DateTime<Utc>,
    versions: HashMap<StreamId, u64>,
}

impl Known {
    fn merge<'a>(&mut self, versions: impl IntoIterator<Item = (&'a StreamId, &'a u64)>) {
        for (stream, version) in versions {
            // Looked up first: most streams are known, and `entry` would
            // copy the id each time.
            match self.versions.get_mut(stream) {
                Some(known) => *known = (*known).max(*version),
                None => {
                    self.versions.insert(stream.clone(), *version);
                }
            }
        }
        if self.versions.len() > KNOWN_STREAMS_MAX {
            self.versions.clear();
        }
    }

    /// Carried over a group that moved the head from `head`.
    fn advance(&mut self, staged: &Staged) {
        self.merge(&staged.versions);
        self.head = staged.after;
        self.recorded_at = self.recorded_at.max(staged.last_recorded_at);
    }
}

/// The groups a writer staged lately, newest last.
#[derive(Default)]
pub(crate) struct Chain {
    staged: VecDeque<Staged>,
    next_ticket: u64,
    known: Option<Known>,
}

impl Chain {
    /// Remembers a staged group (with its advisory lock if speculative);
    /// the ticket settles it.
    pub(crate) fn push(&mut self, group: &Group, key: Option<i64>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut staged = Staged {
            ticket,
            base: group.base,
            after: group.head,
            key,
            committed: false,
            last_recorded_at: group.last_recorded_at,
            ids: HashMap::with_capacity(group.sealed.len()),
            versions: HashMap::new(),
        };
        for (envelope, _) in &group.sealed {
            staged.ids.insert(envelope.id, (envelope.position, envelope.recorded_at));
            staged.versions.insert(envelope.stream.clone(), envelope.stream_version);
        }
        self.staged.push_back(staged);
        if self.staged.len() > CHAIN_GROUPS_MAX {
            self.staged.pop_front();
        }
        ticket
    }

    /// Whether `ticket`'s group committed; one that did not is forgotten,
    /// so no view builds on it. [`Known`] moves over committed groups, in
    /// the order they moved the head (lanes may learn of their commits in
    /// another order).
    pub(crate) fn settle(&mut self, ticket: u64, committed: bool) {
        if !committed {
            self.staged.retain(|staged| staged.ticket != ticket);
            return;
        }
        if let Some(staged) = self.staged.iter_mut().find(|staged| staged.ticket == ticket) {
            staged.committed = true;
        }
        let Some(known) = self.known.as_mut() else { return };
        while let Some(next) = self.staged.iter().rev().find(|staged| staged.committed && staged.base == known.head) {
            known.advance(next);
        }
    }

    /// Learns the stream versions a read found at its head (locked, or as
    /// committed). A read at a head this writer's groups lead to from the
    /// known head, or from which they lead to it, adds to what is known;
    /// any other head was moved by another writer: what was known is
    /// dropped, and the read is what is known.
    pub(crate) fn learn(&mut self, read: &Prefetched) {
        let Some(mut known) = self.known.take() else {
            self.known =
                Some(Known { head: read.head, recorded_at: read.head_recorded_at, versions: read.versions.clone() });
            return;
        };
        if let Some(path) = self.path(known.head, read.head) {
            for staged in path {
                known.advance(staged);
            }
            known.merge(&read.versions);
            known.recorded_at = known.recorded_at.max(read.head_recorded_at);
        } else if let Some(path) = self.path(read.head, known.head) {
            // An older read: its versions, carried over this writer's
            // groups since, are versions at the known head.
            let mut carried =
                Known { head: read.head, recorded_at: read.head_recorded_at, versions: read.versions.clone() };
            for staged in path {
                carried.merge(&staged.versions);
            }
            known.merge(&carried.versions);
        } else {
            known = Known { head: read.head, recorded_at: read.head_recorded_at, versions: read.versions.clone() };
        }
        self.known = Some(known);
    }

    /// This writer's groups that lead from `from` to `to`, in order; `None`
    /// when they do not.
    fn path(&self, from: Head, to: Head) -> Option<Vec<&Staged>> {
        let mut path = Vec::new();
        let mut at = from;
        while at != to {
            let next = self.staged.iter().rev().find(|staged| staged.base == at)?;
            at = next.after;
            path.push(next);
            if path.len() > self.staged.len() {
                return None;
            }
        }
        Some(path)
    }

    /// What a group of `batch` can be staged on without a read: the known
    /// head, with the version of every stream the batch names (its events'
    /// and its expectations'). `None` if one of them is not known.
    pub(crate) fn known_for(&self, batch: &[Request]) -> Option<Prefetched> {
        let known = self.known.as_ref()?;
        let mut versions = HashMap::new();
        for request in batch {
            let events = request.events.iter().map(|event| &event.stream);
            let expected = request.expectations.streams.iter().map(|expectation| &expectation.stream);
            for stream in events.chain(expected) {
                versions.insert(stream.clone(), *known.versions.get(stream)?);
            }
        }
        Some(Prefetched::found(known.head, known.recorded_at, versions, HashMap::new()))
    }

    /// Whether `head` is one this writer's groups left (or will leave):
    /// a locked group that finds it found no other writer's events.
    pub(crate) fn left(&self, head: Head) -> bool {
        self.staged.iter().any(|staged| staged.after == head)
    }

    /// What the log will hold once the groups staged on top of the head
    /// `read` found have committed.
    ///
    /// A group staged on a speculative one still in flight locks the head
    /// only once that one moved it ([`Speculated::awaits`]), and then waits
    /// for its commit on the head's row lock: a later group's lock granted
    /// first would find the head not as staged (a smaller group inserts
    /// sooner), and miss. The earlier group's lane took its advisory lock
    /// before it was staged, so before the later group can ask for it. A group that locked the head first needs no wait:
    /// it held the head before anything was staged on it.
    pub(crate) fn view<'a>(&self, read: &'a Prefetched) -> Speculated<'a> {
        let mut view = Speculated {
            read,
            head: read.head,
            head_recorded_at: read.head_recorded_at,
            awaits: None,
            ids: HashMap::new(),
            versions: HashMap::new(),
        };
        while let Some(next) = self.staged.iter().rev().find(|staged| staged.base == view.head) {
            view.head = next.after;
            view.awaits = next.key;
            view.head_recorded_at = view.head_recorded_at.max(next.last_recorded_at);
            view.ids.extend(next.ids.iter().map(|(id, stored)| (*id, *stored)));
            for (stream, version) in &next.versions {
                let known = view.versions.entry(stream.clone()).or_default();
                *known = (*known).max(*version);
            }
        }
        view
    }
}

/// What a group is staged on: a head, when its newest event was recorded,
/// and what the log holds there.
pub(crate) trait StagingBase {
    fn head(&self) -> (Head, DateTime<Utc>);
    fn stored(&self) -> &dyn Committed;
}

impl StagingBase for Prefetched {
    fn head(&self) -> (Head, DateTime<Utc>) {
        (self.head, self.head_recorded_at)
    }

    fn stored(&self) -> &dyn Committed {
        self
    }
}

impl StagingBase for Speculated<'_> {
    fn head(&self) -> (Head, DateTime<Utc>) {
        (self.head, self.head_recorded_at)
    }

    fn stored(&self) -> &dyn Committed {
        self
    }
}

/// The stored state a speculative group is staged on: what was read, and
/// the groups this writer has in flight on top of it.
pub(crate) struct Speculated<'a> {
    read: &'a Prefetched,
    pub(crate) head: Head,
    pub(crate) head_recorded_at: DateTime<Utc>,
    /// The advisory lock of the speculative group in flight this view ends
    /// on, if any.
    pub(crate) awaits: Option<i64>,
    ids: HashMap<Uuid, (u64, DateTime<Utc>)>,
    versions: HashMap<StreamId, u64>,
}

impl Committed for Speculated<'_> {
    fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        let read = self.read.stream_version(stream)?;
        Ok(self.versions.get(stream).map_or(read, |version| read.max(*version)))
    }

    fn position_of_id(&self, id: &Uuid) -> Result<Option<u64>, Error> {
        match self.ids.get(id) {
            Some((position, _)) => Ok(Some(*position)),
            None => self.read.position_of_id(id),
        }
    }

    fn recorded_at(&self, position: u64) -> Result<Option<DateTime<Utc>>, Error> {
        match self.ids.values().find(|(p, _)| *p == position) {
            Some((_, at)) => Ok(Some(*at)),
            None => self.read.recorded_at(position),
        }
    }
}

/// Whether a writer speculates now.
#[derive(Debug)]
pub(crate) struct Switch {
    on: bool,
    /// Locked groups in a row that found only this writer's groups.
    clean: u32,
    clean_needed: u32,
    /// A speculative group committed since speculation last came back.
    hit: bool,
}

impl Default for Switch {
    fn default() -> Switch {
        Switch { on: true, clean: 0, clean_needed: CLEAN_GROUPS_MIN, hit: true }
    }
}

impl Switch {
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// A speculative group missed: lock first. If no speculative group
    /// committed since speculation came back, wait twice as long before
    /// the next return.
    pub(crate) fn missed(&mut self) {
        if self.on {
            self.on = false;
            self.clean = 0;
            if !self.hit {
                self.clean_needed = (self.clean_needed * 2).min(CLEAN_GROUPS_MAX);
            }
            self.hit = false;
        }
    }

    /// A speculative group committed: speculation pays again.
    pub(crate) fn hit(&mut self) {
        if !self.hit {
            self.hit = true;
            self.clean_needed = CLEAN_GROUPS_MIN;
        }
    }

    /// A decider holds the head: the head is contended.
    pub(crate) fn held(&mut self) {
        self.on = false;
        self.clean = 0;
    }

    /// A locked group found, before it, only this writer's groups
    /// (`clean`), or another writer's.
    pub(crate) fn locked(&mut self, clean: bool) {
        if !clean {
            self.clean = 0;
            return;
        }
        self.clean += 1;
        if self.clean >= self.clean_needed {
            self.on = true;
            self.clean = 0;
        }
    }
}

#[cfg(test)]
#[path = "speculation_tests.rs"]
mod tests;
