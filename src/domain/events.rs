//! Domain events and their place in the log.
//!
//! Stream layout:
//! - `authority`: every authority change, in one stream. Changes are rare
//!   next to run events, one stream gives auditors the whole authority
//!   history in order with one read, and rebuilding the authority state as
//!   of any position is one bounded scan of it.
//! - `notifications`: initiators marking their notifications read. The
//!   notifications themselves are a projection of terminal run events.
//! - `run-{uuid}`: everything that happens to one run, from the start gate
//!   to its terminal event, including starts deduplicated onto it and starts
//!   refused while it held its scope. A run's state is the fold of its stream.
//!
//! The payload is the serialized event including its `type`, which must
//! equal the envelope's event type: a mismatch is treated as corruption.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::authority::AuthorityChanged;
use crate::domain::run::RunEvent;
use crate::envelope::{Envelope, NewEvent, StreamId};
use crate::error::Error;

/// Schema version of every domain event payload.
pub const SCHEMA_VERSION: u32 = 1;

pub const AUTHORITY_STREAM: &str = "authority";
pub const NOTIFICATIONS_STREAM: &str = "notifications";
const RUN_STREAM_PREFIX: &str = "run-";

// Run events are by far the most common; boxing them would allocate on the
// hot path to save stack space on the rare authority event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    Authority(AuthorityChanged),
    Run { run_id: Uuid, event: RunEvent },
    NotificationRead(NotificationRead),
}

/// An initiator read the terminal notification of one of their runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "notification_read")]
pub struct NotificationRead {
    pub actor_id: String,
    pub run_id: Uuid,
}

pub fn authority_stream() -> StreamId {
    stream(AUTHORITY_STREAM.to_owned())
}

pub fn run_stream(run_id: Uuid) -> StreamId {
    stream(format!("{RUN_STREAM_PREFIX}{run_id}"))
}

fn stream(name: String) -> StreamId {
    StreamId::trusted(name)
}

/// The run id of a run stream.
pub fn run_id_of(stream: &StreamId) -> Option<Uuid> {
    stream.as_str().strip_prefix(RUN_STREAM_PREFIX).and_then(|id| Uuid::parse_str(id).ok())
}

impl DomainEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::Authority(changed) => changed.change.event_type(),
            DomainEvent::Run { event, .. } => event.event_type(),
            DomainEvent::NotificationRead(_) => "notification_read",
        }
    }

    pub fn stream(&self) -> StreamId {
        match self {
            DomainEvent::Authority(_) => authority_stream(),
            DomainEvent::Run { run_id, .. } => run_stream(*run_id),
            DomainEvent::NotificationRead(_) => stream(NOTIFICATIONS_STREAM.to_owned()),
        }
    }

    /// The event as proposed to the log, with the given id.
    pub fn to_new_event(&self, event_id: Uuid) -> Result<NewEvent, Error> {
        fn sealed<T: Serialize>(id: Uuid, stream: StreamId, kind: &str, payload: &T) -> Result<NewEvent, Error> {
            NewEvent::with_id(id, stream, kind, SCHEMA_VERSION, payload)
        }
        match self {
            DomainEvent::Authority(changed) => sealed(event_id, self.stream(), self.event_type(), changed),
            DomainEvent::Run { event, .. } => sealed(event_id, self.stream(), self.event_type(), event),
            DomainEvent::NotificationRead(read) => sealed(event_id, self.stream(), self.event_type(), read),
        }
    }

    /// Decodes a domain event from the log; refuses anything it does not know.
    pub fn from_envelope(envelope: &Envelope) -> Result<DomainEvent, String> {
        if envelope.schema_version != SCHEMA_VERSION {
            return Err(format!("unknown schema version {} of {}", envelope.schema_version, envelope.event_type));
        }
        let event = if envelope.stream.as_str() == AUTHORITY_STREAM {
            DomainEvent::Authority(envelope.payload_as().map_err(|e| decode_error(envelope, &e))?)
        } else if envelope.stream.as_str() == NOTIFICATIONS_STREAM {
            DomainEvent::NotificationRead(envelope.payload_as().map_err(|e| decode_error(envelope, &e))?)
        } else if let Some(run_id) = run_id_of(&envelope.stream) {
            DomainEvent::Run { run_id, event: envelope.payload_as().map_err(|e| decode_error(envelope, &e))? }
        } else {
            return Err(format!("stream {} is not a domain stream", envelope.stream));
        };
        if event.event_type() != envelope.event_type {
            return Err(format!("payload is a {} but the envelope says {}", event.event_type(), envelope.event_type));
        }
        Ok(event)
    }
}

fn decode_error(envelope: &Envelope, error: &serde_json::Error) -> String {
    format!("{} payload does not decode: {error}", envelope.event_type)
}
