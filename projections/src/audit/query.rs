//! Queries of the audit trail: filtered pages newest first, the JSON Lines
//! export, one entry by position. Entries come out of the view without
//! their details, which are read from the log as each entry is served.

use std::io::Write;
use std::ops::Bound;

use chrono::{DateTime, Utc};
use opledger::log::views::View;
use opledger::Log;

use super::{
    actor_value, at_position, entry_key, index_base, postings, AuditEntry, AuditError, AuditFilter, AuditPage, Stored,
    BY_ACTION, BY_ACTOR, BY_RUN, BY_TENANT, CURSOR_PREFIX, ENTRY, NAME, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
    RECORDS_EXAMINED_MAX, SCAN_CHUNK,
};
use crate::error::ProjectionError;

/// The inclusive position range a query may return.
#[derive(Debug, Clone, Copy)]
struct Span {
    low: u64,
    high: u64,
}

/// One page of entries matching `filter`, newest first, continuing below
/// `cursor` when given. `limit` defaults to [`PAGE_SIZE_DEFAULT`] and is
/// held to 1 ..= [`PAGE_SIZE_MAX`]. At most [`RECORDS_EXAMINED_MAX`]
/// records are examined: a page may then be short and still carry a cursor.
pub fn list(
    log: &Log,
    view: &View,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<AuditPage, AuditError> {
    let limit = limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX);
    let before = cursor.map(decode_cursor).transpose()?;
    let Some(span) = span(view, filter, before)? else { return Ok(AuditPage::default()) };
    let base = scan_base(filter);
    let mut page = AuditPage::default();
    let mut high = span.high;
    let mut examined = 0;
    while high >= span.low {
        let budget = RECORDS_EXAMINED_MAX - examined;
        if budget == 0 {
            page.next_cursor = Some(encode_cursor(high.saturating_add(1)));
            return Ok(page);
        }
        let chunk = SCAN_CHUNK.min(budget);
        let records = scan(view, &base, Span { low: span.low, high }, true, chunk)?;
        let fetched = records.len();
        let last = records.last().map(|(position, _)| *position);
        for (position, entry) in records {
            examined += 1;
            high = position.saturating_sub(1);
            if !matches(filter, &entry) {
                continue;
            }
            // A match past a full page: more follow, so hand out a cursor
            // (without reading this one's details from the log).
            if page.entries.len() == limit {
                page.next_cursor = page.entries.last().map(|entry| encode_cursor(entry.position));
                return Ok(page);
            }
            page.entries.push(with_details(log, entry)?);
        }
        if fetched < chunk || last.is_some_and(|position| position <= span.low) {
            break;
        }
    }
    Ok(page)
}

/// Writes every entry matching `filter` (the cursor aside), oldest first,
/// one JSON object per line. Returns how many lines it wrote.
pub fn export_jsonl(log: &Log, view: &View, filter: &AuditFilter, writer: &mut impl Write) -> Result<u64, AuditError> {
    let Some(span) = span(view, filter, None)? else { return Ok(0) };
    let base = scan_base(filter);
    let mut low = span.low;
    let mut written = 0;
    loop {
        let records = scan(view, &base, Span { low, high: span.high }, false, SCAN_CHUNK)?;
        for (_, entry) in records.iter().filter(|(_, entry)| matches(filter, entry)) {
            let entry = with_details(log, entry.clone())?;
            serde_json::to_writer(&mut *writer, &entry).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
            written += 1;
        }
        match records.last() {
            Some((position, _)) if records.len() == SCAN_CHUNK && *position < span.high => low = position + 1,
            _ => return Ok(written),
        }
    }
}

/// The entry at `position`, if the audit holds one.
pub fn entry(log: &Log, view: &View, position: u64) -> Result<Option<AuditEntry>, AuditError> {
    let key = entry_key(position);
    let Some(bytes) = view.get(&key)? else { return Ok(None) };
    Ok(Some(with_details(log, decode_entry(&key, &bytes)?)?))
}

/// The entry with its details: the payload of the event at its position,
/// read from the log (which checks the event's hash). The event must be
/// the one the entry was made from.
fn with_details(log: &Log, stored: Stored) -> Result<AuditEntry, AuditError> {
    let key = entry_key(stored.position);
    let Some(envelope) = log.event(stored.position)? else {
        return Err(corrupt(&key, "the log has no event at the entry's position").into());
    };
    if envelope.id != stored.event_id {
        return Err(corrupt(&key, &format!("the log's event here is {}, not {}", envelope.id, stored.event_id)).into());
    }
    let details = serde_json::from_str(envelope.payload.get())
        .map_err(|e| corrupt(&key, &format!("the event's payload is not JSON: {e}")))?;
    Ok(stored.with_details(details))
}

/// The positions a query may return, from the cursor, `as_of` and the time
/// range; `None` when nothing can match.
fn span(view: &View, filter: &AuditFilter, before: Option<u64>) -> Result<Option<Span>, AuditError> {
    let mut span = Span { low: 1, high: filter.as_of.unwrap_or(u64::MAX) };
    if let Some(before) = before {
        span.high = span.high.min(before.saturating_sub(1));
    }
    if let Some(to) = filter.to {
        let Some(last) = last_position_before(view, to)? else { return Ok(None) };
        span.high = span.high.min(last);
    }
    if let Some(from) = filter.from {
        let Some(first) = first_position_from(view, from)? else { return Ok(None) };
        span.low = first;
    }
    Ok((span.low <= span.high).then_some(span))
}

/// The position of the first entry recorded at or after `from`.
fn first_position_from(view: &View, from: DateTime<Utc>) -> Result<Option<u64>, AuditError> {
    // Entries are in position order and so in time order: the first entry
    // at or after position p is recorded at or after `from` for every p
    // past some point; find the least such p.
    let Some((mut low, mut high)) = entry_positions(view)? else { return Ok(None) };
    if entry_at_or_after(view, high)?.is_none_or(|entry| entry.recorded_at < from) {
        return Ok(None);
    }
    while low < high {
        let middle = low + (high - low) / 2;
        match entry_at_or_after(view, middle)? {
            Some(entry) if entry.recorded_at >= from => high = middle,
            _ => low = middle + 1,
        }
    }
    Ok(entry_at_or_after(view, low)?.map(|entry| entry.position))
}

/// The position of the last entry recorded before `to`.
fn last_position_before(view: &View, to: DateTime<Utc>) -> Result<Option<u64>, AuditError> {
    let Some((mut low, mut high)) = entry_positions(view)? else { return Ok(None) };
    if entry_at_or_before(view, low)?.is_none_or(|entry| entry.recorded_at >= to) {
        return Ok(None);
    }
    while low < high {
        let middle = high - (high - low) / 2;
        match entry_at_or_before(view, middle)? {
            Some(entry) if entry.recorded_at < to => low = middle,
            _ => high = middle - 1,
        }
    }
    Ok(entry_at_or_before(view, low)?.map(|entry| entry.position))
}

/// The positions of the first and the last entry.
fn entry_positions(view: &View) -> Result<Option<(u64, u64)>, AuditError> {
    let (Some(first), Some(last)) = (entry_at_or_after(view, 0)?, entry_at_or_before(view, u64::MAX)?) else {
        return Ok(None);
    };
    Ok(Some((first.position, last.position)))
}

fn entry_at_or_after(view: &View, position: u64) -> Result<Option<Stored>, AuditError> {
    let start = Bound::Included(entry_key(position));
    let end = Bound::Included(entry_key(u64::MAX));
    nearest_entry(view.range(start, end, false, 1)?)
}

fn entry_at_or_before(view: &View, position: u64) -> Result<Option<Stored>, AuditError> {
    let start = Bound::Included(entry_key(0));
    let end = Bound::Included(entry_key(position));
    nearest_entry(view.range(start, end, true, 1)?)
}

fn nearest_entry(found: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Option<Stored>, AuditError> {
    found.first().map(|(key, value)| decode_entry(key, value).map_err(AuditError::from)).transpose()
}

/// The key prefix to scan: the most selective index the filter names, or
/// the entries themselves.
fn scan_base(filter: &AuditFilter) -> Vec<u8> {
    if let Some(run_id) = filter.run_id {
        return index_base(BY_RUN, &run_id.to_string());
    }
    if let Some(actor_id) = &filter.actor_id {
        return index_base(BY_ACTOR, actor_id);
    }
    if let Some(tenant_id) = &filter.tenant_id {
        return index_base(BY_TENANT, tenant_id);
    }
    if let Some(action) = &filter.action {
        return index_base(BY_ACTION, action);
    }
    ENTRY.to_vec()
}

/// Up to `limit` entries under `base` with positions in `span`: a range of
/// the entries themselves, or an index's positions and their entries.
fn scan(
    view: &View,
    base: &[u8],
    span: Span,
    descending: bool,
    limit: usize,
) -> Result<Vec<(u64, Stored)>, AuditError> {
    if base != ENTRY {
        let positions = postings::positions(view, base, span.low, span.high, descending, limit)?;
        let entries: Result<Vec<_>, _> =
            positions.into_iter().map(|position| Ok((position, load_entry(view, position)?))).collect();
        return entries;
    }
    let start = Bound::Included(at_position(base, span.low));
    let end = Bound::Included(at_position(base, span.high));
    let records = view.range(start, end, descending, limit)?;
    let mut entries = Vec::with_capacity(records.len());
    for (key, value) in records {
        entries.push((key_position(&key)?, decode_entry(&key, &value)?));
    }
    Ok(entries)
}

fn load_entry(view: &View, position: u64) -> Result<Stored, AuditError> {
    let key = entry_key(position);
    let bytes = view.get(&key)?.ok_or_else(|| corrupt(&key, "an index names an entry that is not there"))?;
    Ok(decode_entry(&key, &bytes)?)
}

fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Stored, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, &e.to_string()))
}

fn key_position(key: &[u8]) -> Result<u64, AuditError> {
    let tail = key.len().checked_sub(8).and_then(|at| key.get(at..));
    let bytes: Option<[u8; 8]> = tail.and_then(|tail| tail.try_into().ok());
    bytes.map(u64::from_be_bytes).ok_or_else(|| corrupt(key, "the key ends without a position").into())
}

fn corrupt(key: &[u8], detail: &str) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("{}:{}", NAME, String::from_utf8_lossy(key)), detail: detail.to_owned() }
}

fn matches(filter: &AuditFilter, entry: &Stored) -> bool {
    let tenant = filter.tenant_id.as_ref().is_none_or(|t| entry.tenant_id.as_ref() == Some(t));
    let actor = filter.actor_id.as_deref().is_none_or(|a| actor_value(&entry.caused_by) == a);
    let run = filter.run_id.is_none_or(|r| entry.run_id == Some(r));
    let action = filter.action.as_ref().is_none_or(|a| &entry.action == a);
    tenant && actor && run && action
}

/// Cursors are opaque to callers: "continue below this position".
fn encode_cursor(position: u64) -> String {
    format!("{CURSOR_PREFIX}{position:016x}")
}

fn decode_cursor(cursor: &str) -> Result<u64, AuditError> {
    let invalid = || AuditError::InvalidCursor(format!("{cursor:?} is not a cursor of the audit trail"));
    let digits = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
    let well_formed = digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(invalid());
    }
    match u64::from_str_radix(digits, 16) {
        Ok(position) if position > 0 => Ok(position),
        _ => Err(invalid()),
    }
}
