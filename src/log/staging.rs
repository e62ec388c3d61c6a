//! What every backend's writer does with one append before storage sees it:
//! answer a replayed append (every event id already in the log) with its
//! original positions, check the append's expectations, and seal each event
//! onto the chain. The same code for sled and PostgreSQL, so both backends
//! keep one contract: only the reads of what is already committed
//! ([`Committed`]) differ.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::envelope::{truncate_to_micros, Envelope, NewEvent, StreamId};
use crate::error::Error;
use crate::limits::{GROUP_COMMIT_BYTES_MAX, GROUP_COMMIT_EVENTS_MAX};
use crate::log::{Appended, Clock, Conflict, Expectations, ExpectedVersion, Head};

pub(crate) type Outcome = Result<Result<Appended, Conflict>, Error>;
pub(crate) type Reply = oneshot::Sender<Outcome>;

/// One append on its way to a writer.
pub(crate) struct Request {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) expectations: Expectations,
    /// The recording time the caller wants; never earlier than the last one.
    pub(crate) recorded_at: Option<DateTime<Utc>>,
    pub(crate) reply: Reply,
    /// When the append was handed to the log (its answer's latency).
    pub(crate) submitted: Instant,
}

impl Request {
    pub(crate) fn payload_bytes(&self) -> usize {
        self.events.iter().map(|event| event.payload.get().len()).sum()
    }
}

/// The first waiting append and every other one already queued behind it,
/// up to a group commit's bounds: what one group commit takes, and how
/// full it is.
pub(crate) fn gather(first: Request, requests: &mut mpsc::Receiver<Request>) -> (Vec<Request>, Fill) {
    let mut fill = Fill::default();
    fill.add(&first);
    let mut batch = vec![first];
    while !fill.full() {
        let Ok(request) = requests.try_recv() else { break };
        fill.add(&request);
        batch.push(request);
    }
    (batch, fill)
}

/// What a group holds so far, against a group commit's bounds.
#[derive(Default)]
pub(crate) struct Fill {
    events: usize,
    bytes: usize,
}

impl Fill {
    pub(crate) fn add(&mut self, request: &Request) {
        self.events += request.events.len();
        self.bytes += request.payload_bytes();
    }

    /// No other append joins the group (the last one may have passed a
    /// bound: an append is never split).
    pub(crate) fn full(&self) -> bool {
        self.events >= GROUP_COMMIT_EVENTS_MAX || self.bytes >= GROUP_COMMIT_BYTES_MAX
    }
}

/// What the store holds already, as the writer sees it before a group.
pub(crate) trait Committed {
    /// The stream's version (0 when it has no event).
    fn stream_version(&self, stream: &StreamId) -> Result<u64, Error>;
    fn position_of_id(&self, id: &Uuid) -> Result<Option<u64>, Error>;
    fn recorded_at(&self, position: u64) -> Result<Option<DateTime<Utc>>, Error>;
}

/// One group commit being staged: the head it starts from, what it sealed
/// so far, and an overlay of stream versions and ids not yet stored.
pub(crate) struct Group {
    /// The head before the group.
    pub(crate) base: Head,
    /// The head after every append staged so far.
    pub(crate) head: Head,
    pub(crate) last_recorded_at: DateTime<Utc>,
    versions: HashMap<StreamId, u64>,
    ids: HashMap<Uuid, u64>,
    /// Each sealed event with its record ([`Envelope::encode`]), in order.
    pub(crate) sealed: Vec<(Envelope, Vec<u8>)>,
}

impl Group {
    pub(crate) fn new(base: Head, last_recorded_at: DateTime<Utc>) -> Group {
        Group { base, head: base, last_recorded_at, versions: HashMap::new(), ids: HashMap::new(), sealed: Vec::new() }
    }

    /// Stages one append into the group, or leaves the group untouched and
    /// says why not.
    pub(crate) fn stage(&mut self, committed: &dyn Committed, request: &Request, clock: &Clock) -> Outcome {
        if let Some(answer) = self.replayed(committed, &request.events)? {
            return Ok(Ok(answer));
        }
        if let Some(conflict) = self.conflict(committed, &request.expectations)? {
            return Ok(Err(conflict));
        }
        let mut local_versions: HashMap<&StreamId, u64> = HashMap::new();
        let mut sealed = Vec::with_capacity(request.events.len());
        let mut head = self.head;
        let wanted = request.recorded_at.unwrap_or_else(|| clock());
        let recorded_at = truncate_to_micros(wanted).max(self.last_recorded_at);
        for event in &request.events {
            let version = match local_versions.get(&event.stream) {
                Some(version) => *version,
                None => self.current_version(committed, &event.stream)?,
            } + 1;
            local_versions.insert(&event.stream, version);
            let (envelope, record) = Envelope::seal(event, head.position + 1, version, recorded_at, head.hash)?;
            head = Head { position: envelope.position, hash: envelope.hash };
            sealed.push((envelope, record));
        }
        let first_position = self.head.position + 1;
        for (envelope, record) in sealed {
            self.versions.insert(envelope.stream.clone(), envelope.stream_version);
            self.ids.insert(envelope.id, envelope.position);
            self.sealed.push((envelope, record));
        }
        self.head = head;
        self.last_recorded_at = recorded_at;
        Ok(Ok(Appended { first_position, last_position: head.position, recorded_at, duplicate: false }))
    }

    pub(crate) fn events(&self) -> u64 {
        self.sealed.len() as u64
    }

    fn current_version(&self, committed: &dyn Committed, stream: &StreamId) -> Result<u64, Error> {
        match self.versions.get(stream) {
            Some(version) => Ok(*version),
            None => committed.stream_version(stream),
        }
    }

    fn position_of(&self, committed: &dyn Committed, id: &Uuid) -> Result<Option<u64>, Error> {
        match self.ids.get(id) {
            Some(position) => Ok(Some(*position)),
            None => committed.position_of_id(id),
        }
    }

    /// An append whose event ids are all in the log already, at consecutive
    /// positions, is answered with the original positions and appends nothing.
    fn replayed(&self, committed: &dyn Committed, events: &[NewEvent]) -> Result<Option<Appended>, Error> {
        let mut found = Vec::with_capacity(events.len());
        for event in events {
            found.push(self.position_of(committed, &event.event_id)?);
        }
        let Some(Some(first_position)) = found.first().copied() else {
            if let Some((index, Some(position))) = found.iter().enumerate().find(|(_, p)| p.is_some()) {
                return Err(Error::EventIdReused { event_id: events[index].event_id, position: *position });
            }
            return Ok(None);
        };
        for (offset, position) in found.iter().enumerate() {
            if *position != Some(first_position + offset as u64) {
                return Err(Error::EventIdReused { event_id: events[offset].event_id, position: first_position });
            }
        }
        let last_position = first_position + events.len() as u64 - 1;
        let recorded_at = self.recorded_at_of(committed, first_position)?;
        Ok(Some(Appended { first_position, last_position, recorded_at, duplicate: true }))
    }

    fn recorded_at_of(&self, committed: &dyn Committed, position: u64) -> Result<DateTime<Utc>, Error> {
        if position > self.base.position {
            return Ok(self.last_recorded_at);
        }
        Ok(committed.recorded_at(position)?.unwrap_or(self.last_recorded_at))
    }

    fn conflict(&self, committed: &dyn Committed, expectations: &Expectations) -> Result<Option<Conflict>, Error> {
        if let Some(expected) = expectations.head {
            if expected != self.head.position {
                return Ok(Some(Conflict::Head { expected, actual: self.head.position }));
            }
        }
        for expectation in &expectations.streams {
            let actual = self.current_version(committed, &expectation.stream)?;
            let holds = match expectation.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual == 0,
                ExpectedVersion::Exact(version) => actual == version,
            };
            if !holds {
                return Ok(Some(Conflict::StreamVersion {
                    stream: expectation.stream.clone(),
                    expected: expectation.expected,
                    actual,
                }));
            }
        }
        Ok(None)
    }
}
