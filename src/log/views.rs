//! Storage for projections ("views"), beside the log in the same sled
//! database but in trees of their own.
//!
//! A view is one sled tree holding a projection's state and its checkpoint
//! (the last log position applied). [`View::commit`] writes a batch of state
//! changes and the new checkpoint in one `apply_batch`, so after any crash
//! the state is exactly the fold of the log up to the checkpoint.
//!
//! Views are disposable: a rebuild fills a fresh generation of the tree and
//! [`Views::promote`] swaps the pointer, so readers of the old generation
//! keep working until the new one has caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::error::Error;

/// Keys under this prefix are the view's own bookkeeping, never state.
const RESERVED_PREFIX: &[u8] = b"\xff\xff";
const CHECKPOINT_KEY: &[u8] = b"\xff\xffcheckpoint";
/// The layout version of the projection that wrote the view.
const LAYOUT_KEY: &[u8] = b"\xff\xfflayout";
const META_TREE: &str = "views.meta";

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

fn storage(error: sled::Error) -> Error {
    Error::Storage(error.to_string())
}

/// The projection trees of a log's store.
#[derive(Clone)]
pub struct Views {
    db: sled::Db,
    meta: sled::Tree,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").finish_non_exhaustive()
    }
}

impl Views {
    pub(crate) fn new(db: sled::Db) -> Result<Views, Error> {
        let meta = db.open_tree(META_TREE).map_err(storage)?;
        Ok(Views { db, meta })
    }

    fn tree_name(name: &str, generation: u64) -> String {
        format!("view.{name}.{generation}")
    }

    /// The generation of `name` readers use now (0 when never built).
    pub fn generation(&self, name: &str) -> Result<u64, Error> {
        let value = self.meta.get(name.as_bytes()).map_err(storage)?;
        Ok(value.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    /// The current generation of the view `name`.
    pub fn current(&self, name: &str) -> Result<View, Error> {
        self.open(name, self.generation(name)?)
    }

    /// A fresh, empty generation of `name` for a rebuild.
    pub fn fresh(&self, name: &str) -> Result<View, Error> {
        let generation = self.generation(name)? + 1;
        let tree_name = Self::tree_name(name, generation);
        self.db.drop_tree(tree_name.as_bytes()).map_err(storage)?;
        self.open(name, generation)
    }

    fn open(&self, name: &str, generation: u64) -> Result<View, Error> {
        let tree = self.db.open_tree(Self::tree_name(name, generation).as_bytes()).map_err(storage)?;
        Ok(View { tree, generation })
    }

    /// Makes `view` the current generation and drops the one it replaces.
    pub fn promote(&self, name: &str, view: &View) -> Result<(), Error> {
        let previous = self.generation(name)?;
        self.meta.insert(name.as_bytes(), &view.generation.to_be_bytes()).map_err(storage)?;
        if previous != view.generation {
            self.db.drop_tree(Self::tree_name(name, previous).as_bytes()).map_err(storage)?;
        }
        Ok(())
    }
}

/// One generation of one projection's tree.
#[derive(Clone)]
pub struct View {
    tree: sled::Tree,
    generation: u64,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl View {
    /// The last log position this view has applied (0: none).
    pub fn checkpoint(&self) -> Result<u64, Error> {
        let value = self.tree.get(CHECKPOINT_KEY).map_err(storage)?;
        Ok(value.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    /// The layout version the view was written with; `None` for a view
    /// written before layouts were recorded (or never written).
    pub fn layout(&self) -> Result<Option<u32>, Error> {
        let value = self.tree.get(LAYOUT_KEY).map_err(storage)?;
        Ok(value.and_then(|v| v.as_ref().try_into().ok()).map(u32::from_be_bytes))
    }

    /// Records the layout version of the projection about to fill the view.
    pub fn set_layout(&self, version: u32) -> Result<(), Error> {
        self.tree.insert(LAYOUT_KEY, &version.to_be_bytes()).map(|_| ()).map_err(storage)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree.get(key).map_err(storage)?.map(|v| v.to_vec()))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        self.tree.contains_key(key).map_err(storage)
    }

    /// Up to `limit` entries with keys in `range`, ascending or descending.
    pub fn range(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        let iter = self.tree.range::<Vec<u8>, _>((start, end));
        let collect = |item: Result<(sled::IVec, sled::IVec), sled::Error>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(storage)
        };
        let entries: Result<Vec<_>, Error> = if descending {
            iter.rev().filter(is_state).take(limit).map(collect).collect()
        } else {
            iter.filter(is_state).take(limit).map(collect).collect()
        };
        entries
    }

    /// Every entry whose key starts with `prefix`, ascending, up to `limit`.
    pub fn prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, Error> {
        self.tree
            .scan_prefix(prefix)
            .filter(is_state)
            .take(limit)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(storage))
            .collect()
    }

    /// How many state entries (not the bookkeeping) the view holds.
    pub fn len(&self) -> usize {
        self.tree.len().saturating_sub(self.tree.scan_prefix(RESERVED_PREFIX).count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every state entry, in key order, for comparing two views.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        self.range(Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
    }

    /// Starts a batch of changes on top of this view.
    pub fn pending(&self) -> Pending<'_> {
        Pending { view: self, writes: BTreeMap::new(), maybe_absent: BTreeSet::new() }
    }

    /// Writes the batch and the checkpoint atomically.
    pub fn commit(&self, pending: Pending<'_>, checkpoint: u64) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (key, write) in pending.writes {
            match write {
                Write::Put(value) => batch.insert(key, value),
                Write::Staged(value) => {
                    let bytes = sled::IVec::from(encode_staged(&key, value.as_ref())?);
                    for copy in value.copies() {
                        assert!(!copy.starts_with(RESERVED_PREFIX), "keys under 0xFFFF are the view's bookkeeping");
                        batch.insert(copy, bytes.clone());
                    }
                    batch.insert(key, bytes)
                }
                // A key put and deleted within the batch (an index entry
                // that moved twice) that the tree never held needs no
                // remove: the batch keeps to the writes that change the tree.
                Write::Delete if pending.maybe_absent.contains(&key) && !self.contains(&key)? => {}
                Write::Delete => batch.remove(key),
            }
        }
        batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        self.tree.apply_batch(batch).map_err(storage)
    }
}

fn is_state(item: &Result<(sled::IVec, sled::IVec), sled::Error>) -> bool {
    !matches!(item, Ok((key, _)) if key.starts_with(RESERVED_PREFIX))
}

/// A value a projection keeps decoded while its batch is pending (a run
/// record that several events of the batch change): it is encoded once,
/// when the batch commits, instead of decoded and encoded once per event.
pub trait Staged: std::any::Any + Send {
    fn encode(&self) -> Result<Vec<u8>, String>;

    /// Other keys that hold a copy of this value (a covering index entry):
    /// the commit writes the same bytes under each, encoded once. Within
    /// the batch, [`Pending::get`] of a copy's key does not see the copy.
    fn copies(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

fn encode_staged(key: &[u8], value: &dyn Staged) -> Result<Vec<u8>, Error> {
    value.encode().map_err(|e| Error::Storage(format!("view value {} does not encode: {e}", key.escape_ascii())))
}

enum Write {
    Put(Vec<u8>),
    Staged(Box<dyn Staged>),
    Delete,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Put(value) => write!(f, "Put({} bytes)", value.len()),
            Write::Staged(_) => f.write_str("Staged"),
            Write::Delete => f.write_str("Delete"),
        }
    }
}

/// Changes not yet committed, readable through [`Pending::get`] so that a
/// projection applying several events in one batch sees its own writes.
#[derive(Debug)]
pub struct Pending<'a> {
    view: &'a View,
    writes: BTreeMap<Vec<u8>, Write>,
    /// Deleted keys that were put earlier in this batch: the tree may never
    /// have held them, which the commit checks before writing a remove.
    maybe_absent: BTreeSet<Vec<u8>>,
}

impl Pending<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.writes.get(key) {
            Some(Write::Put(value)) => Ok(Some(value.clone())),
            Some(Write::Staged(value)) => encode_staged(key, value.as_ref()).map(Some),
            Some(Write::Delete) => Ok(None),
            None => self.view.get(key),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        assert!(!key.starts_with(RESERVED_PREFIX), "keys under 0xFFFF are the view's bookkeeping");
        self.writes.insert(key, Write::Put(value));
    }

    /// Puts a value to be encoded at commit; [`Pending::take_staged`] gets
    /// it back without decoding.
    pub fn stage<T: Staged>(&mut self, key: Vec<u8>, value: T) {
        assert!(!key.starts_with(RESERVED_PREFIX), "keys under 0xFFFF are the view's bookkeeping");
        self.writes.insert(key, Write::Staged(Box::new(value)));
    }

    /// The value staged under `key` if it is a `T`, removed from the batch
    /// (stage it again to keep it). `None` when the key holds anything
    /// else: the caller then reads the bytes with [`Pending::get`].
    pub fn take_staged<T: Staged>(&mut self, key: &[u8]) -> Option<T> {
        let Some(Write::Staged(value)) = self.writes.get(key) else { return None };
        let is_t = (value.as_ref() as &dyn std::any::Any).is::<T>();
        if !is_t {
            return None;
        }
        let Some(Write::Staged(value)) = self.writes.remove(key) else { return None };
        let value: Box<dyn std::any::Any> = value;
        value.downcast::<T>().ok().map(|value| *value)
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        if let Some(Write::Put(_) | Write::Staged(_)) = self.writes.get(&key) {
            self.maybe_absent.insert(key.clone());
        }
        self.writes.insert(key, Write::Delete);
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views() -> (tempfile::TempDir, Views) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, Views::new(db).unwrap())
    }

    #[test]
    fn a_commit_writes_state_and_checkpoint_together() {
        let (_dir, views) = views();
        let view = views.current("monitoring").unwrap();
        assert_eq!(view.checkpoint().unwrap(), 0);
        let mut pending = view.pending();
        pending.put(b"a".to_vec(), b"1".to_vec());
        assert_eq!(pending.get(b"a").unwrap(), Some(b"1".to_vec()), "a batch sees its own writes");
        assert_eq!(view.get(b"a").unwrap(), None, "nothing is visible before the commit");
        view.commit(pending, 7).unwrap();
        assert_eq!(view.checkpoint().unwrap(), 7);
        assert_eq!(view.entries().unwrap(), vec![(b"a".to_vec(), b"1".to_vec())]);
        let mut pending = view.pending();
        pending.delete(b"a".to_vec());
        view.commit(pending, 8).unwrap();
        assert!(view.is_empty());
    }

    #[test]
    fn a_fresh_generation_replaces_the_current_one_only_when_promoted() {
        let (_dir, views) = views();
        let old = views.current("audit").unwrap();
        let mut pending = old.pending();
        pending.put(b"k".to_vec(), b"old".to_vec());
        old.commit(pending, 3).unwrap();
        let fresh = views.fresh("audit").unwrap();
        assert!(fresh.is_empty());
        assert_eq!(views.current("audit").unwrap().get(b"k").unwrap(), Some(b"old".to_vec()));
        let mut pending = fresh.pending();
        pending.put(b"k".to_vec(), b"new".to_vec());
        fresh.commit(pending, 3).unwrap();
        views.promote("audit", &fresh).unwrap();
        assert_eq!(views.current("audit").unwrap().get(b"k").unwrap(), Some(b"new".to_vec()));
        assert_eq!(views.generation("audit").unwrap(), 1);
    }

    #[test]
    fn a_key_put_and_deleted_in_one_batch_leaves_nothing_and_an_old_key_is_removed() {
        let (_dir, views) = views();
        let view = views.current("v").unwrap();
        let mut pending = view.pending();
        pending.put(b"old".to_vec(), b"1".to_vec());
        view.commit(pending, 1).unwrap();
        let mut pending = view.pending();
        pending.put(b"new".to_vec(), b"2".to_vec());
        pending.delete(b"new".to_vec());
        pending.put(b"old".to_vec(), b"3".to_vec());
        pending.delete(b"old".to_vec());
        assert_eq!(pending.get(b"new").unwrap(), None);
        assert_eq!(pending.get(b"old").unwrap(), None, "the batch's delete hides the stored value");
        view.commit(pending, 2).unwrap();
        assert!(view.is_empty(), "both gone: {:?}", view.entries().unwrap());
        assert_eq!(view.checkpoint().unwrap(), 2);
    }

    #[derive(Debug, PartialEq)]
    struct Counter(u32);

    #[derive(Debug, PartialEq)]
    struct Other;

    impl Staged for Other {
        fn encode(&self) -> Result<Vec<u8>, String> {
            Ok(Vec::new())
        }
    }

    impl Staged for Counter {
        fn encode(&self) -> Result<Vec<u8>, String> {
            Ok(self.0.to_be_bytes().to_vec())
        }

        fn copies(&self) -> Vec<Vec<u8>> {
            vec![b"copy".to_vec()]
        }
    }

    #[test]
    fn a_staged_value_is_taken_back_typed_and_encoded_at_commit() {
        let (_dir, views) = views();
        let view = views.current("v").unwrap();
        let mut pending = view.pending();
        pending.stage(b"c".to_vec(), Counter(1));
        assert_eq!(pending.get(b"c").unwrap(), Some(vec![0, 0, 0, 1]), "readable as bytes too");
        assert_eq!(pending.take_staged::<Other>(b"c"), None, "another type is not taken");
        let mut counter = pending.take_staged::<Counter>(b"c").unwrap();
        assert_eq!(pending.take_staged::<Counter>(b"c"), None, "taken out of the batch");
        counter.0 += 1;
        pending.stage(b"c".to_vec(), counter);
        pending.put(b"p".to_vec(), vec![9]);
        assert_eq!(pending.take_staged::<Counter>(b"p"), None, "plain bytes are not staged");
        view.commit(pending, 1).unwrap();
        assert_eq!(view.get(b"c").unwrap(), Some(vec![0, 0, 0, 2]));
        assert_eq!(view.get(b"copy").unwrap(), Some(vec![0, 0, 0, 2]), "the copy is written with it");
    }

    #[test]
    fn the_layout_is_bookkeeping_not_state() {
        let (_dir, views) = views();
        let view = views.current("v").unwrap();
        assert_eq!(view.layout().unwrap(), None);
        view.set_layout(3).unwrap();
        assert_eq!(view.layout().unwrap(), Some(3));
        assert!(view.is_empty());
        assert!(view.entries().unwrap().is_empty());
    }

    #[test]
    fn ranges_skip_the_checkpoint_and_run_both_ways() {
        let (_dir, views) = views();
        let view = views.current("v").unwrap();
        let mut pending = view.pending();
        for key in [b"r1", b"r2", b"r3"] {
            pending.put(key.to_vec(), vec![]);
        }
        view.commit(pending, 1).unwrap();
        let down = view.range(Bound::Unbounded, Bound::Unbounded, true, 2).unwrap();
        assert_eq!(down.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b"r3".to_vec(), b"r2".to_vec()]);
        assert_eq!(view.prefix(b"r", 10).unwrap().len(), 3);
        assert_eq!(view.len(), 3);
    }
}
