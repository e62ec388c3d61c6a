//! The head witness: a small file beside the store that records the last
//! acknowledged head (position and hash).
//!
//! sled checksums its own segments, and on recovery treats a segment that
//! fails its checksum as the torn end of the log. A corrupted file can
//! therefore make sled silently forget acknowledged events. The witness
//! catches that: it is written after every group commit has been made
//! durable, so it never runs ahead of the store, and on open a store that
//! ends before the witness, or disagrees with it, fails closed.
//!
//! Two 64-byte slots are written alternately, each with its own checksum, so
//! a torn write of one slot leaves the other (one commit older) readable.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::envelope::Hash;
use crate::error::Error;
use crate::log::Head;

const MAGIC: &[u8; 4] = b"OPLW";
const SLOT_BYTES: usize = 64;
const BODY_BYTES: usize = 4 + 8 + 32;

pub(crate) struct Witness {
    file: File,
    path: PathBuf,
    next_slot: u64,
}

impl Witness {
    pub(crate) fn open(path: &Path) -> Result<(Witness, Option<Head>), Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let slots = [read_slot(&file, 0), read_slot(&file, 1)];
        let newest = slots.iter().flatten().copied().max_by_key(|head| head.position);
        let next_slot = match slots {
            [Some(a), Some(b)] if a.position > b.position => 1,
            [Some(_), None] => 1,
            _ => 0,
        };
        Ok((Witness { file, path: path.to_path_buf(), next_slot }, newest))
    }

    /// Records `head`. Written without its own fsync: it is written only
    /// after the store made `head` durable, so whether this write survives a
    /// power loss or not, the witness never claims more than the store holds.
    pub(crate) fn record(&mut self, head: Head) -> Result<(), Error> {
        let slot = encode(head);
        let offset = self.next_slot * SLOT_BYTES as u64;
        self.file.write_all_at(&slot, offset).map_err(|e| Error::io(&self.path, e))?;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }
}

fn encode(head: Head) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[..4].copy_from_slice(MAGIC);
    slot[4..12].copy_from_slice(&head.position.to_be_bytes());
    slot[12..BODY_BYTES].copy_from_slice(&head.hash.0);
    let check = Hash::of(&slot[..BODY_BYTES]);
    slot[BODY_BYTES..BODY_BYTES + 8].copy_from_slice(&check.0[..8]);
    slot
}

fn read_slot(file: &File, index: u64) -> Option<Head> {
    let mut slot = [0u8; SLOT_BYTES];
    file.read_exact_at(&mut slot, index * SLOT_BYTES as u64).ok()?;
    if &slot[..4] != MAGIC || Hash::of(&slot[..BODY_BYTES]).0[..8] != slot[BODY_BYTES..BODY_BYTES + 8] {
        return None;
    }
    let position = u64::from_be_bytes(slot[4..12].try_into().ok()?);
    let hash = Hash(slot[12..BODY_BYTES].try_into().ok()?);
    Some(Head { position, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(position: u64) -> Head {
        Head { position, hash: Hash::of(&position.to_be_bytes()) }
    }

    #[test]
    fn a_new_witness_is_empty_and_keeps_the_newest_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness");
        let (mut witness, found) = Witness::open(&path).unwrap();
        assert_eq!(found, None);
        for position in 1..=5 {
            witness.record(head(position)).unwrap();
        }
        drop(witness);
        assert_eq!(Witness::open(&path).unwrap().1, Some(head(5)));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness");
        let (mut witness, _) = Witness::open(&path).unwrap();
        witness.record(head(1)).unwrap();
        witness.record(head(2)).unwrap();
        drop(witness);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 8], SLOT_BYTES as u64 + 6).unwrap();
        assert_eq!(Witness::open(&path).unwrap().1, Some(head(1)));
    }
}
