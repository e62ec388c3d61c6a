//! The single writer: serializes every append and batches concurrent ones
//! into group commits (one sled batch, then one flush for every group the
//! syncer finds waiting, then every caller in them is acknowledged).
//!
//! Two threads form a pipeline: this one stages a group and applies it to
//! sled, then hands it to the [`Syncer`], which flushes and acknowledges
//! while the next group is staged. An apply becomes visible to readers only
//! when the syncer publishes its head, after the flush that covers it.
//!
//! The writer keeps the head, the newest recording time and, per group, an
//! overlay of stream versions and event ids staged but not yet applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::envelope::{truncate_to_micros, Envelope, NewEvent, StreamId};
use crate::error::Error;
use crate::limits::{GROUP_COMMIT_BYTES_MAX, GROUP_COMMIT_EVENTS_MAX};
use crate::log::store::{StagedBatch, Store};
use crate::log::syncer::{Applied, Failed};
use crate::log::{Appended, Clock, Conflict, Expectations, ExpectedVersion, Head};

pub(crate) type Reply = oneshot::Sender<Result<Result<Appended, Conflict>, Error>>;

pub(crate) struct Request {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) expectations: Expectations,
    /// The recording time the caller wants; never earlier than the last one.
    pub(crate) recorded_at: Option<DateTime<Utc>>,
    pub(crate) reply: Reply,
    /// When the append was handed to the log (its answer's latency).
    pub(crate) submitted: Instant,
}

pub(crate) type Outcome = Result<Result<Appended, Conflict>, Error>;

pub(crate) struct Writer {
    pub(crate) store: Arc<Store>,
    pub(crate) head: Head,
    pub(crate) last_recorded_at: DateTime<Utc>,
    pub(crate) clock: Clock,
    /// Applied groups on their way to the syncer (bounded: backpressure).
    pub(crate) applied: std::sync::mpsc::SyncSender<Applied>,
    pub(crate) failed: Failed,
}

/// What one group commit stages before it touches the store.
struct Group {
    staged: StagedBatch,
    head: Head,
    last_recorded_at: DateTime<Utc>,
    versions: HashMap<StreamId, u64>,
    ids: HashMap<Uuid, u64>,
}

impl Writer {
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            let mut events = batch[0].events.len();
            let mut bytes = payload_bytes(&batch[0]);
            while events < GROUP_COMMIT_EVENTS_MAX && bytes < GROUP_COMMIT_BYTES_MAX {
                match requests.try_recv() {
                    Ok(request) => {
                        events += request.events.len();
                        bytes += payload_bytes(&request);
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            let stopped = self.failed.reason();
            if let Some(why) = stopped.or_else(|| self.commit_group(batch).err().map(|e| e.to_string())) {
                tracing::error!(failure = %why, "group commit failed; the writer stops");
                self.failed.set(&why);
                self.refuse_all(&mut requests, &why);
                return;
            }
        }
    }

    /// After a failed commit memory and disk may disagree, so every later
    /// append is refused until the log is reopened.
    fn refuse_all(&self, requests: &mut mpsc::Receiver<Request>, why: &str) {
        requests.close();
        while let Some(request) = requests.blocking_recv() {
            let _ = request.reply.send(Err(Error::WriterStopped(why.to_owned())));
        }
    }

    /// Stages and applies one group, then hands it to the syncer, which
    /// acknowledges it once a flush covers it.
    fn commit_group(&mut self, batch: Vec<Request>) -> Result<(), Error> {
        let mut group = Group {
            staged: StagedBatch::default(),
            head: self.head,
            last_recorded_at: self.last_recorded_at,
            versions: HashMap::new(),
            ids: HashMap::new(),
        };
        let mut replies: Vec<(Reply, Outcome, Instant)> = Vec::with_capacity(batch.len());
        for request in batch {
            let outcome = self.stage(&request, &mut group);
            replies.push((request.reply, outcome, request.submitted));
        }
        let events = group.staged.events as u64;
        if events > 0 {
            if let Err(failure) = self.store.apply(group.staged, group.head) {
                let why = failure.to_string();
                for (reply, _, _) in replies {
                    let _ = reply.send(Err(Error::WriterStopped(why.clone())));
                }
                return Err(failure);
            }
            self.head = group.head;
            self.last_recorded_at = group.last_recorded_at;
        }
        let applied = Applied { head: self.head, events, replies };
        self.applied.send(applied).map_err(|_| Error::WriterStopped("the syncer stopped".into()))
    }

    /// Stages one append into the group, or leaves the group untouched and
    /// says why not.
    fn stage(&self, request: &Request, group: &mut Group) -> Result<Result<Appended, Conflict>, Error> {
        if let Some(answer) = self.replayed(&request.events, group)? {
            return Ok(Ok(answer));
        }
        if let Some(conflict) = self.conflict(&request.expectations, group)? {
            return Ok(Err(conflict));
        }
        let mut local_versions: HashMap<&StreamId, u64> = HashMap::new();
        let mut sealed = Vec::with_capacity(request.events.len());
        let mut head = group.head;
        let wanted = request.recorded_at.unwrap_or_else(|| (self.clock)());
        let recorded_at = truncate_to_micros(wanted).max(group.last_recorded_at);
        for event in &request.events {
            let version = match local_versions.get(&event.stream) {
                Some(version) => *version,
                None => self.current_version(&event.stream, group)?,
            } + 1;
            local_versions.insert(&event.stream, version);
            let (envelope, record) = Envelope::seal(event, head.position + 1, version, recorded_at, head.hash)?;
            head = Head { position: envelope.position, hash: envelope.hash };
            sealed.push((envelope, record));
        }
        let first_position = group.head.position + 1;
        for (envelope, record) in sealed {
            group.versions.insert(envelope.stream.clone(), envelope.stream_version);
            group.ids.insert(envelope.id, envelope.position);
            group.staged.put_event(&envelope, record);
        }
        group.head = head;
        group.last_recorded_at = recorded_at;
        Ok(Ok(Appended { first_position, last_position: head.position, recorded_at, duplicate: false }))
    }

    fn current_version(&self, stream: &StreamId, group: &Group) -> Result<u64, Error> {
        match group.versions.get(stream) {
            Some(version) => Ok(*version),
            None => self.store.stream_version(stream),
        }
    }

    fn position_of(&self, id: &Uuid, group: &Group) -> Result<Option<u64>, Error> {
        match group.ids.get(id) {
            Some(position) => Ok(Some(*position)),
            None => self.store.position_of_id(id),
        }
    }

    /// An append whose event ids are all in the log already, at consecutive
    /// positions, is answered with the original positions and appends nothing.
    fn replayed(&self, events: &[NewEvent], group: &Group) -> Result<Option<Appended>, Error> {
        let mut found = Vec::with_capacity(events.len());
        for event in events {
            found.push(self.position_of(&event.event_id, group)?);
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
        let recorded_at = self.recorded_at_of(first_position, group)?;
        Ok(Some(Appended { first_position, last_position, recorded_at, duplicate: true }))
    }

    fn recorded_at_of(&self, position: u64, group: &Group) -> Result<DateTime<Utc>, Error> {
        if position > self.head.position {
            return Ok(group.last_recorded_at);
        }
        let event = self.store.event(position)?;
        Ok(event.map_or(group.last_recorded_at, |e| e.recorded_at))
    }

    fn conflict(&self, expectations: &Expectations, group: &Group) -> Result<Option<Conflict>, Error> {
        if let Some(expected) = expectations.head {
            if expected != group.head.position {
                return Ok(Some(Conflict::Head { expected, actual: group.head.position }));
            }
        }
        for expectation in &expectations.streams {
            let actual = self.current_version(&expectation.stream, group)?;
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

fn payload_bytes(request: &Request) -> usize {
    request.events.iter().map(|event| event.payload.get().len()).sum()
}
