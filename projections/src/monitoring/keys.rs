//! The key layout of the monitoring view (one sled tree, bytewise order).
//!
//! | key | value |
//! | --- | --- |
//! | `run:` first position (8 bytes) | the run record (JSON: first position, created time, the Run) |
//! | `id:` run id (16 bytes) | the run's first position (8 bytes) |
//! | `ix:tenant:` tenant `\0` position | a copy of the run record (a covering index entry) |
//! | `ix:` other index `:` value `\0` position | empty (index entry) |
//! | `tm:` created time (8 bytes) position (8 bytes) | empty (time → position) |
//! | `cnt:g\0` dimension `\0` name | a global counter (u64 BE) |
//! | `cnt:t` tenant `\0` dimension `\0` name | a per-tenant counter (u64 BE) |
//!
//! Records are keyed by the position of the run's first event, so the run
//! list without a filter is a scan of the records themselves (the `all`
//! index *is* the record keys) and runs created together sit in the same
//! leaves: a page of any index reads records that are near each other.
//! A tenant's runs are spread over the whole log, so the tenant index
//! holds a copy of each record: a tenant's page is one range read instead
//! of fifty cold gets (the price: the record written twice per batch).
//! The timeline is not copied here: it is the run's stream in the log,
//! which the log's stream index already serves (see `query::timeline`).
//!
//! Ids never contain control characters (`model::check_id`), so `\0` ends a
//! value unambiguously: a prefix scan of one value never meets another value
//! that merely starts with it. Positions and times are 8 bytes big-endian so
//! bytewise order is numeric order; run ids are fixed-length hyphenated UUIDs.

use chrono::{DateTime, Utc};
use opledger::domain::model::Principal;
use uuid::Uuid;

pub(super) const RUN: &[u8] = b"run:";
const ID: &[u8] = b"id:";
const INDEX: &[u8] = b"ix:";
pub(super) const TIME: &[u8] = b"tm:";
/// The first key after every `tm:` key (`;` follows `:`).
pub(super) const TIME_END: &[u8] = b"tm;";
const COUNTER: &[u8] = b"cnt:";
const END: u8 = 0;

/// The secondary indexes, by name. The order of [`Index::BY_SELECTIVITY`]
/// is the order in which a list picks the index to scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Index {
    All,
    Workspace,
    Tenant,
    Status,
    Outcome,
    OperationType,
    Initiator,
}

impl Index {
    /// Every index, the most selective first. The last, `all`, is the
    /// record keys: it has no entries of its own.
    pub const BY_SELECTIVITY: [Index; 7] = [
        Index::Tenant,
        Index::Workspace,
        Index::OperationType,
        Index::Initiator,
        Index::Outcome,
        Index::Status,
        Index::All,
    ];

    /// The pinned name inside the key.
    pub fn name(self) -> &'static str {
        match self {
            Index::All => "all",
            Index::Workspace => "workspace",
            Index::Tenant => "tenant",
            Index::Status => "status",
            Index::Outcome => "outcome",
            Index::OperationType => "operation_type",
            Index::Initiator => "initiator",
        }
    }
}

/// The initiator as an index value. Actors carry a kind prefix so that an
/// actor whose id happens to be `system` is never confused with the system.
pub fn initiator_value(initiator: &Principal) -> String {
    match initiator {
        Principal::Actor { id } => format!("actor:{id}"),
        Principal::System => opledger::domain::model::SYSTEM_PRINCIPAL_WORD.to_owned(),
    }
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The record of the run whose first event is at `first_position`.
pub fn run(first_position: u64) -> Vec<u8> {
    joined(&[RUN, &first_position.to_be_bytes()])
}

/// Where the record of `run_id` is: the value is its first position.
pub fn id(run_id: Uuid) -> Vec<u8> {
    joined(&[ID, run_id.as_bytes()])
}

/// Whether `key` is an entry of an index that holds the record.
pub fn holds_record(key: &[u8]) -> bool {
    key.starts_with(RUN) || key.starts_with(&joined(&[INDEX, Index::Tenant.name().as_bytes(), b":"]))
}

/// The keys of one index value. The `all` index is the records themselves.
pub fn index_prefix(index: Index, value: &str) -> Vec<u8> {
    match index {
        Index::All => RUN.to_vec(),
        _ => joined(&[INDEX, index.name().as_bytes(), b":", value.as_bytes(), &[END]]),
    }
}

pub fn index(index: Index, value: &str, position: u64) -> Vec<u8> {
    joined(&[&index_prefix(index, value), &position.to_be_bytes()])
}

/// Microseconds since the epoch with the sign bit flipped, so that bytewise
/// order is time order across the epoch too.
pub fn time_bytes(micros: i64) -> [u8; 8] {
    (micros as u64 ^ (1 << 63)).to_be_bytes()
}

/// The log stamps `recorded_at` in whole microseconds.
pub fn time(at: DateTime<Utc>, position: u64) -> Vec<u8> {
    joined(&[TIME, &time_bytes(at.timestamp_micros()), &position.to_be_bytes()])
}

/// The position at the end of an index or time key.
pub fn position_of(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).and_then(|start| key.get(start..))?;
    tail.try_into().ok().map(u64::from_be_bytes)
}

/// Counters of one scope: every run (`None`) or one tenant's.
pub fn counter_prefix(tenant_id: Option<&str>) -> Vec<u8> {
    match tenant_id {
        None => joined(&[COUNTER, b"g", &[END]]),
        Some(tenant) => joined(&[COUNTER, b"t", tenant.as_bytes(), &[END]]),
    }
}

pub fn counter(tenant_id: Option<&str>, dimension: &str, name: &str) -> Vec<u8> {
    joined(&[&counter_prefix(tenant_id), dimension.as_bytes(), &[END], name.as_bytes()])
}

/// `(dimension, name)` of a counter key under `prefix`.
pub fn counter_parts<'k>(prefix: &[u8], key: &'k [u8]) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?;
    let split = rest.iter().position(|b| *b == END)?;
    let dimension = std::str::from_utf8(rest.get(..split)?).ok()?;
    let name = std::str::from_utf8(rest.get(split + 1..)?).ok()?;
    Some((dimension, name))
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}
