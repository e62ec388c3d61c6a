//! The single writer: serializes every append and batches concurrent ones
//! into group commits (one sled batch, then one flush for every group the
//! syncer finds waiting, then every caller in them is acknowledged).
//!
//! Two threads form a pipeline: this one stages a group and applies it to
//! sled, then hands it to the [`Syncer`], which flushes and acknowledges
//! while the next group is staged. An apply becomes visible to readers only
//! when the syncer publishes its head, after the flush that covers it.
//!
//! The writer keeps the head and the newest recording time; staging each
//! append (replays, expectations, the chain) is `log::staging`, shared with
//! the PostgreSQL backend.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::log::sled::store::{StagedBatch, Store};
use crate::log::sled::syncer::{Applied, Failed};
use crate::log::staging::{gather, Group, Outcome, Reply, Request};
use crate::log::{Clock, Head};

pub(crate) struct Writer {
    pub(crate) store: Arc<Store>,
    pub(crate) head: Head,
    pub(crate) last_recorded_at: DateTime<Utc>,
    pub(crate) clock: Clock,
    /// Applied groups on their way to the syncer (bounded: backpressure).
    pub(crate) applied: std::sync::mpsc::SyncSender<Applied>,
    pub(crate) failed: Failed,
}

impl Writer {
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let (batch, _) = gather(first, &mut requests);
            let stopped = self.failed.reason();
            if let Some(why) = stopped.or_else(|| self.commit_group(batch).err().map(|e| e.to_string())) {
                tracing::error!(failure = %why, "group commit failed; the writer stops");
                self.failed.set(&why);
                self.refuse_all(&mut requests, &why);
                return;
            }
        }
    }

    /// After a failed commit memory and disk may disagree, so every later
    /// append is refused until the log is reopened.
    fn refuse_all(&self, requests: &mut mpsc::Receiver<Request>, why: &str) {
        requests.close();
        while let Some(request) = requests.blocking_recv() {
            let _ = request.reply.send(Err(Error::WriterStopped(why.to_owned())));
        }
    }

    /// Stages and applies one group, then hands it to the syncer, which
    /// acknowledges it once a flush covers it.
    fn commit_group(&mut self, batch: Vec<Request>) -> Result<(), Error> {
        let mut group = Group::new(self.head, self.last_recorded_at);
        let mut replies: Vec<(Reply, Outcome, Instant)> = Vec::with_capacity(batch.len());
        for request in batch {
            let outcome = group.stage(&*self.store, &request, &self.clock);
            replies.push((request.reply, outcome, request.submitted));
        }
        let events = group.events();
        if events > 0 {
            let mut staged = StagedBatch::default();
            for (envelope, record) in group.sealed {
                staged.put_event(&envelope, record);
            }
            if let Err(failure) = self.store.apply(staged, group.head) {
                let why = failure.to_string();
                for (reply, _, _) in replies {
                    let _ = reply.send(Err(Error::WriterStopped(why.clone())));
                }
                return Err(failure);
            }
            self.head = group.head;
            self.last_recorded_at = group.last_recorded_at;
        }
        let applied = Applied { head: self.head, events, replies };
        self.applied.send(applied).map_err(|_| Error::WriterStopped("the syncer stopped".into()))
    }
}
