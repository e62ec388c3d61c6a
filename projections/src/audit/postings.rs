//! The audit trail's index entries, packed in blocks ("postings").
//!
//! An index value (a tenant, an actor, a run, an action) maps to the log
//! positions of its entries. One sled key per position made the indexes
//! four of the audit's five writes per event; here the positions of one
//! value within one block of [`BLOCK_POSITIONS`] log positions share a key:
//!
//! `prefix value 0x00 block (8 bytes BE)` → the positions' offsets within
//! the block, 2 bytes BE each, strictly increasing.
//!
//! Positions reach the audit in log order, so adding one appends to the
//! last block of its value, and a batch of events rewrites each touched
//! block once (the projector's batch coalesces the writes). A block never
//! holds more than [`BLOCK_POSITIONS`] offsets, so a value is at most
//! 8 KiB.

use std::ops::Bound;

use opledger::log::views::{Pending, View};

use crate::error::ProjectionError;

/// log2 of the log positions one block covers.
const BLOCK_SHIFT: u32 = 12;
/// Log positions one block covers (and so the most offsets it holds).
pub const BLOCK_POSITIONS: u64 = 1 << BLOCK_SHIFT;
const OFFSET_BYTES: usize = 2;
/// Blocks read per range call while collecting positions.
const BLOCKS_PER_READ: usize = 8;

fn block_of(position: u64) -> u64 {
    position >> BLOCK_SHIFT
}

fn block_key(base: &[u8], block: u64) -> Vec<u8> {
    [base, &block.to_be_bytes()].concat()
}

/// Records `position` under the index value whose keys start with `base`.
/// Positions must come in increasing order, as the log hands them out.
pub fn add(pending: &mut Pending<'_>, base: &[u8], position: u64) -> Result<(), String> {
    let key = block_key(base, block_of(position));
    let offset = (position & (BLOCK_POSITIONS - 1)) as u16;
    let mut value = pending.get(&key).map_err(|e| e.to_string())?.unwrap_or_default();
    if let Some(last) = value.rchunks_exact(OFFSET_BYTES).next() {
        let last = u16::from_be_bytes([last[0], last[1]]);
        if last >= offset {
            return Err(format!("audit index {}: position {position} after a later one", key.escape_ascii()));
        }
    }
    value.extend_from_slice(&offset.to_be_bytes());
    pending.put(key, value);
    Ok(())
}

/// Up to `limit` positions under `base` within `low..=high`, ascending or
/// descending.
pub fn positions(
    view: &View,
    base: &[u8],
    low: u64,
    high: u64,
    descending: bool,
    limit: usize,
) -> Result<Vec<u64>, ProjectionError> {
    let mut found = Vec::new();
    let (mut first_block, mut last_block) = (block_of(low), block_of(high));
    while found.len() < limit && first_block <= last_block {
        let start = Bound::Included(block_key(base, first_block));
        let end = Bound::Included(block_key(base, last_block));
        let blocks = view.range(start, end, descending, BLOCKS_PER_READ)?;
        for (key, value) in &blocks {
            let block = block_number(base, key)?;
            let mut in_block = decode(key, value, block)?;
            in_block.retain(|position| (low..=high).contains(position));
            if descending {
                in_block.reverse();
            }
            found.extend(in_block.into_iter().take(limit - found.len()));
            match descending {
                true => last_block = block.wrapping_sub(1),
                false => first_block = block + 1,
            }
            if found.len() == limit || (descending && block == 0) {
                return Ok(found);
            }
        }
        if blocks.len() < BLOCKS_PER_READ {
            break;
        }
    }
    Ok(found)
}

fn block_number(base: &[u8], key: &[u8]) -> Result<u64, ProjectionError> {
    let tail = key.strip_prefix(base).and_then(|tail| <[u8; 8]>::try_from(tail).ok());
    tail.map(u64::from_be_bytes).ok_or_else(|| corrupt(key, "an index key ends with its block number"))
}

/// The positions of one block, checked: whole offsets, strictly increasing.
fn decode(key: &[u8], value: &[u8], block: u64) -> Result<Vec<u64>, ProjectionError> {
    if value.is_empty() || !value.len().is_multiple_of(OFFSET_BYTES) {
        return Err(corrupt(key, "an index block holds whole 2-byte offsets"));
    }
    let offsets: Vec<u16> =
        value.chunks_exact(OFFSET_BYTES).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
    if offsets.windows(2).any(|pair| pair[0] >= pair[1]) || offsets.iter().any(|o| u64::from(*o) >= BLOCK_POSITIONS) {
        return Err(corrupt(key, "an index block's offsets are not strictly increasing"));
    }
    Ok(offsets.into_iter().map(|offset| (block << BLOCK_SHIFT) | u64::from(offset)).collect())
}

fn corrupt(key: &[u8], detail: &str) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("{}:{}", super::NAME, key.escape_ascii()), detail: detail.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> (tempfile::TempDir, opledger::Log, View) {
        let dir = tempfile::tempdir().unwrap();
        let log = opledger::Log::open(dir.path(), opledger::LogOptions::default()).unwrap();
        let view = log.views().unwrap().current("postings").unwrap();
        (dir, log, view)
    }

    /// Positions spread over several blocks, some on block edges.
    const POSITIONS: [u64; 9] = [1, 2, 4095, 4096, 4097, 9000, 12_287, 12_288, 40_000];

    #[test]
    fn positions_come_back_in_either_order_within_any_range() {
        let (_dir, _log, view) = view();
        let mut pending = view.pending();
        for position in POSITIONS {
            add(&mut pending, b"t:a\0", position).unwrap();
            add(&mut pending, b"t:b\0", position + 1).unwrap();
        }
        view.commit(pending, 40_001).unwrap();
        for (low, high) in [(0, u64::MAX), (1, 1), (2, 4096), (4096, 12_288), (5000, 8000), (12_288, 40_000)] {
            let expected: Vec<u64> = POSITIONS.iter().copied().filter(|p| (low..=high).contains(p)).collect();
            for limit in [1, 2, 3, 100] {
                let up = positions(&view, b"t:a\0", low, high, false, limit).unwrap();
                assert_eq!(up, expected.iter().copied().take(limit).collect::<Vec<_>>(), "{low}..={high} up {limit}");
                let down = positions(&view, b"t:a\0", low, high, true, limit).unwrap();
                let newest: Vec<u64> = expected.iter().rev().copied().take(limit).collect();
                assert_eq!(down, newest, "{low}..={high} down {limit}");
            }
        }
        assert!(positions(&view, b"t:\0", 0, u64::MAX, true, 10).unwrap().is_empty(), "no other value's positions");
    }

    #[test]
    fn a_block_is_appended_across_batches_and_refuses_going_back() {
        let (_dir, _log, view) = view();
        for position in [10, 20] {
            let mut pending = view.pending();
            add(&mut pending, b"x:a\0", position).unwrap();
            view.commit(pending, position).unwrap();
        }
        assert_eq!(positions(&view, b"x:a\0", 0, u64::MAX, false, 10).unwrap(), [10, 20]);
        assert_eq!(view.len(), 1, "one block");
        let mut pending = view.pending();
        assert!(add(&mut pending, b"x:a\0", 20).is_err());
        assert!(add(&mut pending, b"x:a\0", 15).is_err());
    }

    #[test]
    fn a_malformed_block_is_corrupt() {
        let (_dir, _log, view) = view();
        for bad in [vec![0u8], vec![0, 5, 0, 5], vec![0, 6, 0, 5], vec![0xff, 0xff]] {
            let mut pending = view.pending();
            pending.put(block_key(b"a:u\0", 0), bad.clone());
            view.commit(pending, 1).unwrap();
            let read = positions(&view, b"a:u\0", 0, u64::MAX, true, 10);
            assert!(matches!(read, Err(ProjectionError::Corrupt { .. })), "{bad:?}: {read:?}");
        }
    }
}
