//! The `run_documents.run` column: the run's JSON, LZ4-compressed.
//!
//! A run document is about 2.8 KB of JSON, most of it two decisions whose
//! checks repeat the same words; compressed it is about a quarter of that.
//! Run documents were 40% of the read models' file at a million events,
//! and a rebuild writes each at least once, so the column is compressed.
//! It is internal: tools read the stable columns of `runs` (and the API's
//! run object through the server or `opledger runs show`).
//!
//! The block carries its decompressed size (4 bytes, little-endian) first;
//! a size past [`RUN_DOCUMENT_BYTES_MAX`] is corruption, never allocated.

use opledger::domain::run::Run;

use crate::error::ProjectionError;

/// Largest decompressed run document accepted. A run holds bounded
/// contexts, decisions and follow-up lists, far below this.
pub const RUN_DOCUMENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The column's bytes for `run`.
pub(crate) fn encode(run: &Run) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(run).map_err(|e| format!("run {} does not encode: {e}", run.id))?;
    Ok(lz4_flex::block::compress_prepend_size(&json))
}

/// The run stored in the column's `bytes` at `first_position`.
pub(crate) fn decode(bytes: &[u8], first_position: i64) -> Result<Run, ProjectionError> {
    let corrupt = |detail: String| ProjectionError::Corrupt {
        key: format!("run_documents.run at first_position {first_position}"),
        detail,
    };
    let size = bytes.get(..4).and_then(|head| head.try_into().ok()).map(u32::from_le_bytes);
    match size.map(|size| size as usize) {
        Some(size) if size <= RUN_DOCUMENT_BYTES_MAX => {}
        Some(size) => return Err(corrupt(format!("claims {size} bytes, more than {RUN_DOCUMENT_BYTES_MAX}"))),
        None => return Err(corrupt("shorter than its size".into())),
    }
    let json = lz4_flex::block::decompress_size_prepended(bytes).map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_past_the_bound_or_a_short_block_is_corruption_not_an_allocation() {
        let huge = [0xff, 0xff, 0xff, 0x7f, 0, 0];
        assert!(matches!(decode(&huge, 1), Err(ProjectionError::Corrupt { .. })));
        assert!(matches!(decode(&[1, 2], 1), Err(ProjectionError::Corrupt { .. })));
        let not_lz4 = [10, 0, 0, 0, 0xff, 0xff];
        assert!(matches!(decode(&not_lz4, 1), Err(ProjectionError::Corrupt { .. })));
    }
}
