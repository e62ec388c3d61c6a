//! Cursors of the run list: where a page starts, bound to the filter it
//! was listed with.
//!
//! A cursor is the hex of a fingerprint of the filter (8 bytes) and a
//! position (8 bytes): a `next_cursor` lists runs whose first position is
//! below it, a `prev_cursor` (text starting `newer-`) runs above it. A
//! cursor passed with another filter is refused rather than silently
//! listing another list's runs from a position of the first.

use chrono::SecondsFormat;

use super::columns::initiator_value;
use super::query::{ListError, RunFilter, CURSOR_CHARS_MAX};

/// What starts the text of a cursor to newer runs; a cursor to older runs
/// is the bare hex (the form `next_cursor` always had).
const NEWER_CURSOR_PREFIX: &str = "newer-";
/// Bytes of a cursor: the filter's fingerprint and a position.
const CURSOR_BYTES: usize = 16;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cursor {
    /// Runs whose first position is below this one (older runs).
    Older(u64),
    /// Runs whose first position is above this one (newer runs).
    Newer(u64),
}

impl Cursor {
    /// The cursor's text for `filter`.
    pub(super) fn text(self, filter: &RunFilter) -> String {
        let (prefix, position) = match self {
            Cursor::Older(position) => ("", position),
            Cursor::Newer(position) => (NEWER_CURSOR_PREFIX, position),
        };
        let bytes = [fingerprint(filter).to_be_bytes(), position.to_be_bytes()].concat();
        format!("{prefix}{}", to_hex(&bytes))
    }

    /// A cursor this filter's list handed out, or why `text` is not one.
    pub(super) fn parse(text: &str, filter: &RunFilter) -> Result<Cursor, ListError> {
        let invalid = |why: &str| Err(ListError::InvalidCursor(why.to_owned()));
        if text.len() > CURSOR_CHARS_MAX {
            return invalid("too long");
        }
        let (newer, hex) = match text.strip_prefix(NEWER_CURSOR_PREFIX) {
            Some(hex) => (true, hex),
            None => (false, text),
        };
        let Some(bytes) = from_hex(hex).filter(|bytes| bytes.len() == CURSOR_BYTES) else {
            return invalid("not a cursor: 32 hex digits, or `newer-` and 32 hex digits");
        };
        let (mark, position) = bytes.split_at(8);
        let (Ok(mark), Ok(position)) = (<[u8; 8]>::try_from(mark), <[u8; 8]>::try_from(position)) else {
            return invalid("not a cursor");
        };
        if u64::from_be_bytes(mark) != fingerprint(filter) {
            return invalid("not a cursor of this filter: a cursor is only valid with the filter it was listed with");
        }
        let position = u64::from_be_bytes(position);
        Ok(if newer { Cursor::Newer(position) } else { Cursor::Older(position) })
    }
}

/// FNV-1a (64 bits) of every field of the filter, each named and length
/// prefixed so that no two filters have the same text. Stable across
/// builds, unlike the standard library's hasher.
fn fingerprint(filter: &RunFilter) -> u64 {
    let time = |at: Option<chrono::DateTime<chrono::Utc>>| at.map(|at| at.to_rfc3339_opts(SecondsFormat::Nanos, true));
    let fields = [
        ("workspace_id", filter.workspace_id.clone()),
        ("tenant_id", filter.tenant_id.clone()),
        ("status", filter.status.map(|s| s.as_str().to_owned())),
        ("outcome", filter.outcome.map(|o| o.as_str().to_owned())),
        ("operation_type", filter.operation_type.clone()),
        ("initiator", filter.initiator.as_ref().map(initiator_value)),
        ("from", time(filter.from)),
        ("to", time(filter.to)),
    ];
    let mut text = String::new();
    for (name, value) in fields {
        match value {
            Some(value) => text.push_str(&format!("{name}+{}:{value};", value.len())),
            None => text.push_str(&format!("{name}-;")),
        }
    }
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| text.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}
