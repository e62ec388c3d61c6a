//! The event envelope and its canonical encoding.
//!
//! One encoding serves both storage and hashing: the stored record is the
//! canonical bytes of every envelope field but the hash, followed by the
//! SHA-256 of those bytes. The previous event's hash is one of the encoded
//! fields, so each hash commits to the whole history before it.
//!
//! Layout (all integers big-endian, version 1):
//! `version:u8 position:u64 event_id:[16] stream:str stream_version:u64
//!  event_type:str schema_version:u32 recorded_at_us:i64 flags:u8
//!  [causation:[16]] [correlation:[16]] payload:bytes previous_hash:[32] | hash:[32]`
//! where `str` and `bytes` are a `u32` length followed by the bytes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::Error;
use crate::limits::{EVENT_BYTES_MAX, EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};

const FORMAT_VERSION: u8 = 1;
const FLAG_CAUSATION: u8 = 0b01;
const FLAG_CORRELATION: u8 = 0b10;

/// A SHA-256 digest, shown and serialized as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash the first event chains to.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Hash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// A stream id: printable ASCII without spaces, at most
/// [`STREAM_ID_BYTES_MAX`] bytes, e.g. `run-0190…` or `authority`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    pub fn new(id: impl Into<String>) -> Result<StreamId, Error> {
        let id = id.into();
        check_name("stream id", &id, STREAM_ID_BYTES_MAX)?;
        Ok(StreamId(id))
    }

    /// A stream id the crate builds itself from printable parts (a fixed
    /// prefix and a UUID), which cannot fail the checks of [`StreamId::new`].
    pub(crate) fn trusted(id: String) -> StreamId {
        assert!(check_name("stream id", &id, STREAM_ID_BYTES_MAX).is_ok(), "crate-built stream ids are valid: {id}");
        StreamId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        StreamId::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> String {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

fn check_name(what: &str, name: &str, max: usize) -> Result<(), Error> {
    if name.is_empty() || name.len() > max {
        return Err(Error::InvalidEvent(format!("{what} must be 1 to {max} bytes, got {}", name.len())));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidEvent(format!("{what} {name:?} must be printable ASCII without spaces")));
    }
    Ok(())
}

/// An event as a caller proposes it. The log assigns position, stream
/// version, recording time and hashes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub stream: StreamId,
    pub event_type: String,
    pub schema_version: u32,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    /// Canonical JSON (object keys sorted, no insignificant white space).
    pub payload: Box<RawValue>,
}

impl NewEvent {
    /// A new event with a fresh UUID v7 id and a payload serialized to canonical JSON.
    pub fn new<T: Serialize>(
        stream: StreamId,
        event_type: &str,
        schema_version: u32,
        payload: &T,
    ) -> Result<NewEvent, Error> {
        Self::with_id(Uuid::now_v7(), stream, event_type, schema_version, payload)
    }

    /// As [`NewEvent::new`] with a caller-chosen id (idempotent retries reuse it).
    pub fn with_id<T: Serialize>(
        event_id: Uuid,
        stream: StreamId,
        event_type: &str,
        schema_version: u32,
        payload: &T,
    ) -> Result<NewEvent, Error> {
        check_name("event type", event_type, EVENT_TYPE_BYTES_MAX)?;
        Ok(NewEvent {
            event_id,
            stream,
            event_type: event_type.to_owned(),
            schema_version,
            causation_id: None,
            correlation_id: None,
            payload: canonical_json(payload)?,
        })
    }
}

/// Serializes a value to canonical JSON: object keys sorted (serde_json's
/// map is ordered), no white space. Re-serializing a parsed canonical
/// document gives the same bytes, which is what lets an exported log be
/// imported and still verify.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Box<RawValue>, Error> {
    let tree = serde_json::to_value(value).map_err(|e| Error::InvalidEvent(format!("payload: {e}")))?;
    // Written straight into the raw value: text serde_json just wrote is
    // valid JSON, so it is not parsed again to check it.
    serde_json::value::to_raw_value(&tree).map_err(|e| Error::InvalidEvent(format!("payload: {e}")))
}

/// A recorded event: what the log stores and serves.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    pub position: u64,
    pub id: Uuid,
    /// Serialized as its text (`run-…`, `authority`).
    #[schema(value_type = String)]
    pub stream: StreamId,
    pub stream_version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event's payload: an object whose fields depend on `type`.
    #[serde(rename = "data")]
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Serialized as 64 lowercase hex digits.
    #[schema(value_type = String)]
    pub previous_hash: Hash,
    #[schema(value_type = String)]
    pub hash: Hash,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.encode() == other.encode()
    }
}

impl Envelope {
    /// Builds the envelope for `event` at `position`, chained to `previous_hash`,
    /// and returns it with its stored record.
    pub fn seal(
        event: &NewEvent,
        position: u64,
        stream_version: u64,
        recorded_at: DateTime<Utc>,
        previous_hash: Hash,
    ) -> Result<(Envelope, Vec<u8>), Error> {
        let mut envelope = Envelope {
            position,
            id: event.event_id,
            stream: event.stream.clone(),
            stream_version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: truncate_to_micros(recorded_at),
            causation_id: event.causation_id,
            correlation_id: event.correlation_id,
            payload: event.payload.clone(),
            previous_hash,
            hash: Hash::GENESIS,
        };
        envelope.check_invariants()?;
        let mut record = envelope.encode_unhashed();
        envelope.hash = Hash::of(&record);
        record.extend_from_slice(&envelope.hash.0);
        if record.len() > EVENT_BYTES_MAX {
            return Err(Error::InvalidEvent(format!(
                "event is {} bytes encoded, the limit is {EVENT_BYTES_MAX}",
                record.len()
            )));
        }
        Ok((envelope, record))
    }

    /// What must hold of every envelope, before encoding and after decoding.
    pub fn check_invariants(&self) -> Result<(), Error> {
        let fail = |detail: String| Err(Error::corrupt(self.position, detail));
        if self.position == 0 {
            return fail("position 0 is not a valid position (the first event is 1)".into());
        }
        if self.stream_version == 0 {
            return fail("stream version 0 is not valid (streams start at 1)".into());
        }
        if self.position == 1 && self.previous_hash != Hash::GENESIS {
            return fail("the first event must chain to the genesis hash".into());
        }
        check_name("stream id", self.stream.as_str(), STREAM_ID_BYTES_MAX)
            .and_then(|()| check_name("event type", &self.event_type, EVENT_TYPE_BYTES_MAX))
            .map_err(|e| Error::corrupt(self.position, e.to_string()))
    }

    /// The canonical bytes of every field but the hash.
    fn encode_unhashed(&self) -> Vec<u8> {
        let payload = self.payload.get().as_bytes();
        let mut out = Vec::with_capacity(128 + self.stream.as_str().len() + payload.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
        put_bytes(&mut out, self.stream.as_str().as_bytes());
        out.extend_from_slice(&self.stream_version.to_be_bytes());
        put_bytes(&mut out, self.event_type.as_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.recorded_at.timestamp_micros().to_be_bytes());
        let flags = (if self.causation_id.is_some() { FLAG_CAUSATION } else { 0 })
            | (if self.correlation_id.is_some() { FLAG_CORRELATION } else { 0 });
        out.push(flags);
        for id in [self.causation_id, self.correlation_id].into_iter().flatten() {
            out.extend_from_slice(id.as_bytes());
        }
        put_bytes(&mut out, payload);
        out.extend_from_slice(&self.previous_hash.0);
        out
    }

    /// The stored record of this envelope (canonical bytes and hash).
    pub fn encode(&self) -> Vec<u8> {
        let mut record = self.encode_unhashed();
        record.extend_from_slice(&self.hash.0);
        record
    }

    /// Decodes a stored record found at `position`, checking its hash.
    /// Never returns an envelope whose bytes do not hash to its hash.
    pub fn decode(position: u64, record: &[u8]) -> Result<Envelope, Error> {
        let corrupt = |detail: &str| Error::corrupt(position, detail.to_owned());
        if record.len() < 32 {
            return Err(corrupt("record shorter than a hash"));
        }
        let (body, stored_hash) = record.split_at(record.len() - 32);
        let hash = Hash::of(body);
        if hash.0 != stored_hash {
            return Err(corrupt("stored hash does not match the record's bytes"));
        }
        let envelope = Reader { bytes: body, at: 0 }
            .envelope(hash)
            .ok_or_else(|| corrupt("record bytes do not decode as an envelope"))?;
        if envelope.position != position {
            return Err(corrupt(&format!("record claims position {}", envelope.position)));
        }
        envelope.check_invariants()?;
        Ok(envelope)
    }

    /// Deserializes the payload into a typed value.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

/// Recording times are kept to the microsecond, as the encoding stores them.
pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len());
    assert!(len.is_ok(), "field longer than 4 GiB: the event size limit forbids it");
    out.extend_from_slice(&len.unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over record bytes; every method returns `None` on short input.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn envelope(mut self, hash: Hash) -> Option<Envelope> {
        if self.array::<1>()?[0] != FORMAT_VERSION {
            return None;
        }
        let position = self.u64()?;
        let id = Uuid::from_bytes(self.array()?);
        let stream = StreamId::new(self.text()?).ok()?;
        let stream_version = self.u64()?;
        let event_type = self.text()?;
        let schema_version = self.u32()?;
        let recorded_at = DateTime::from_timestamp_micros(i64::from_be_bytes(self.array()?))?;
        let flags = self.array::<1>()?[0];
        if flags & !(FLAG_CAUSATION | FLAG_CORRELATION) != 0 {
            return None;
        }
        let causation_id = (flags & FLAG_CAUSATION != 0).then(|| self.array().map(Uuid::from_bytes));
        let correlation_id = (flags & FLAG_CORRELATION != 0).then(|| self.array().map(Uuid::from_bytes));
        let payload_text = String::from_utf8(self.bytes()?.to_vec()).ok()?;
        let payload = RawValue::from_string(payload_text).ok()?;
        let previous_hash = Hash(self.array()?);
        if self.at != self.bytes.len() {
            return None;
        }
        Some(Envelope {
            position,
            id,
            stream,
            stream_version,
            event_type,
            schema_version,
            recorded_at,
            causation_id: causation_id.map_or(Some(None), |id| id.map(Some))?,
            correlation_id: correlation_id.map_or(Some(None), |id| id.map(Some))?,
            payload,
            previous_hash,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(payload: serde_json::Value) -> NewEvent {
        let stream = StreamId::new("run-1").unwrap();
        NewEvent::new(stream, "run_queued", 1, &payload).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let raw = canonical_json(&serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}})).unwrap();
        assert_eq!(raw.get(), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn decode_rejects_a_flipped_bit_anywhere() {
        let (_, record) =
            Envelope::seal(&sample(serde_json::json!({"k": "v"})), 7, 1, Utc::now(), Hash::of(b"x")).unwrap();
        for index in 0..record.len() {
            let mut bad = record.clone();
            bad[index] ^= 0x10;
            assert!(Envelope::decode(7, &bad).is_err(), "flip at byte {index} went unnoticed");
        }
    }

    #[test]
    fn decode_rejects_a_record_found_at_another_position() {
        let (_, record) = Envelope::seal(&sample(serde_json::json!(1)), 7, 1, Utc::now(), Hash::GENESIS).unwrap();
        assert!(matches!(Envelope::decode(8, &record), Err(Error::Corrupt { position: 8, .. })));
    }

    #[test]
    fn seal_refuses_oversized_events() {
        let big = "x".repeat(EVENT_BYTES_MAX);
        let result = Envelope::seal(&sample(serde_json::json!({ "big": big })), 1, 1, Utc::now(), Hash::GENESIS);
        assert!(matches!(result, Err(Error::InvalidEvent(_))));
    }

    #[test]
    fn stream_ids_are_printable_and_bounded() {
        assert!(StreamId::new("run-0190a").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("has space").is_err());
        assert!(StreamId::new("nul\0").is_err());
        assert!(StreamId::new("x".repeat(STREAM_ID_BYTES_MAX + 1)).is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[\\PC]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            payload in json_value(),
            position in 1u64..u64::MAX,
            version in 1u64..u64::MAX,
            micros in 0i64..4_000_000_000_000_000,
            causation in any::<Option<u128>>(),
            previous in any::<[u8; 32]>(),
        ) {
            let mut event = sample(payload);
            event.causation_id = causation.map(Uuid::from_u128);
            let previous = if position == 1 { Hash::GENESIS } else { Hash(previous) };
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let (sealed, record) = Envelope::seal(&event, position, version, at, previous).unwrap();
            let decoded = Envelope::decode(position, &record).unwrap();
            prop_assert_eq!(decoded.payload.get(), sealed.payload.get());
            prop_assert_eq!(&decoded.encode(), &record);
            prop_assert_eq!(decoded.hash, Hash::of(&record[..record.len() - 32]));
            let reparsed: serde_json::Value = decoded.payload_as().unwrap();
            let recanonical = canonical_json(&reparsed).unwrap();
            prop_assert_eq!(recanonical.get(), decoded.payload.get());
        }
    }
}
