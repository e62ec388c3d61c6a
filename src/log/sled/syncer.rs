//! The second stage of the write pipeline: makes applied groups durable and
//! acknowledges them, in order.
//!
//! It takes every group waiting for it, makes them durable with one flush
//! (sled's flush covers everything applied before it started) and, in
//! `fsync` mode, one `fdatasync`; then it records the head witness,
//! publishes the head to readers and answers every caller. While it
//! flushes, the writer applies the next groups.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::Error;
use crate::log::sled::store::{FileSync, Store};
use crate::log::sled::witness::Witness;
use crate::log::staging::{Outcome, Reply};
use crate::log::{Head, StatsCounters};

/// A group applied to sled, not yet durable.
pub(crate) struct Applied {
    /// The head after this group.
    pub(crate) head: Head,
    pub(crate) events: u64,
    /// Each answer with the time its append was handed to the log.
    pub(crate) replies: Vec<(Reply, Outcome, Instant)>,
}

/// Set once a stage fails; both stages then refuse everything.
#[derive(Clone, Default)]
pub(crate) struct Failed(Arc<Mutex<Option<String>>>);

impl Failed {
    pub(crate) fn set(&self, why: &str) {
        if let Ok(mut failed) = self.0.lock() {
            failed.get_or_insert_with(|| why.to_owned());
        }
    }

    pub(crate) fn reason(&self) -> Option<String> {
        match self.0.lock() {
            Ok(failed) => failed.clone(),
            Err(_) => Some("a write stage panicked".to_owned()),
        }
    }
}

pub(crate) struct Syncer {
    pub(crate) store: Arc<Store>,
    pub(crate) file_sync: Option<FileSync>,
    pub(crate) witness: Witness,
    pub(crate) head_tx: watch::Sender<Head>,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) failed: Failed,
}

impl Syncer {
    pub(crate) fn run(mut self, applied: Receiver<Applied>) {
        while let Ok(first) = applied.recv() {
            let mut waiting = vec![first];
            waiting.extend(applied.try_iter());
            let durable = match self.failed.reason() {
                Some(why) => Err(why),
                None => self.make_durable(&waiting).map_err(|e| e.to_string()),
            };
            match durable {
                Ok(()) => self.acknowledge(waiting),
                Err(why) => {
                    tracing::error!(failure = %why, "flush failed; the writer stops");
                    self.failed.set(&why);
                    refuse(waiting, &why);
                }
            }
        }
    }

    fn make_durable(&mut self, waiting: &[Applied]) -> Result<(), Error> {
        if waiting.iter().all(|group| group.events == 0) {
            return Ok(());
        }
        let started = Instant::now();
        self.store.flush()?;
        if let Some(sync) = &mut self.file_sync {
            sync.sync()?;
        }
        self.stats.record_sync(started.elapsed());
        Ok(())
    }

    fn acknowledge(&mut self, waiting: Vec<Applied>) {
        let Some(head) = waiting.last().map(|group| group.head) else { return };
        if waiting.iter().any(|group| group.events > 0) {
            if let Err(failure) = self.witness.record(head) {
                tracing::warn!(%failure, "head witness not written; truncation detection is weaker until the next commit");
            }
            self.head_tx.send_replace(head);
        }
        for group in waiting {
            if group.events > 0 {
                self.stats.record_commit(group.events);
            }
            for (reply, outcome, submitted) in group.replies {
                self.stats.record_outcome(&outcome);
                self.stats.record_answer(submitted);
                let _ = reply.send(outcome);
            }
        }
    }
}

fn refuse(waiting: Vec<Applied>, why: &str) {
    for group in waiting {
        for (reply, _, _) in group.replies {
            let _ = reply.send(Err(Error::WriterStopped(why.to_owned())));
        }
    }
}
