//! The writer's counters and histograms ([`StatsCounters`], shared by both
//! backends' writers) and what [`super::Log::stats`] and
//! [`super::Log::observations`] read of them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::Error;
use crate::log::observations::{AtomicHistogram, LogObservations};
use crate::log::{Appended, Conflict};

/// Counters and histograms of the writer, for metrics.
#[derive(Debug)]
pub(crate) struct StatsCounters {
    commits: AtomicU64,
    events: AtomicU64,
    appends: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    largest_commit_events: AtomicU64,
    heads_held: AtomicU64,
    speculative_groups_committed: AtomicU64,
    speculative_groups_missed: AtomicU64,
    speculative_groups_unread: AtomicU64,
    append_latency: AtomicHistogram,
    sync_latency: AtomicHistogram,
    commit_events: AtomicHistogram,
}

impl Default for StatsCounters {
    fn default() -> StatsCounters {
        StatsCounters {
            commits: AtomicU64::default(),
            events: AtomicU64::default(),
            appends: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            conflicts: AtomicU64::default(),
            largest_commit_events: AtomicU64::default(),
            heads_held: AtomicU64::default(),
            speculative_groups_committed: AtomicU64::default(),
            speculative_groups_missed: AtomicU64::default(),
            speculative_groups_unread: AtomicU64::default(),
            append_latency: AtomicHistogram::latency(),
            sync_latency: AtomicHistogram::latency(),
            commit_events: AtomicHistogram::commit_events(),
        }
    }
}

impl StatsCounters {
    pub(crate) fn record_sync(&self, elapsed: std::time::Duration) {
        self.sync_latency.observe_duration(elapsed);
    }

    pub(crate) fn record_answer(&self, submitted: std::time::Instant) {
        self.append_latency.observe_duration(submitted.elapsed());
    }

    /// A speculative group (PostgreSQL) that committed, or missed.
    pub(crate) fn record_speculative(&self, committed: bool) {
        let counter = if committed { &self.speculative_groups_committed } else { &self.speculative_groups_missed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A speculative group staged without a read (PostgreSQL).
    pub(crate) fn record_unread(&self) {
        self.speculative_groups_unread.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, events: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.largest_commit_events.fetch_max(events, Ordering::Relaxed);
        self.commit_events.observe_count(events);
    }

    pub(crate) fn record_outcome(&self, outcome: &Result<Result<Appended, Conflict>, Error>) {
        let counter = match outcome {
            Ok(Ok(appended)) if appended.duplicate => &self.duplicates,
            Ok(Ok(_)) => &self.appends,
            Ok(Err(_)) => &self.conflicts,
            Err(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A head held for a decision ([`super::Log::hold_head_blocking`]).
    pub(crate) fn record_head_held(&self) {
        self.heads_held.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LogStats {
        LogStats {
            commits: self.commits.load(Ordering::Relaxed),
            events_appended: self.events.load(Ordering::Relaxed),
            appends_acknowledged: self.appends.load(Ordering::Relaxed),
            appends_duplicate: self.duplicates.load(Ordering::Relaxed),
            appends_conflicted: self.conflicts.load(Ordering::Relaxed),
            largest_commit_events: self.largest_commit_events.load(Ordering::Relaxed),
            heads_held: self.heads_held.load(Ordering::Relaxed),
            speculative_groups_committed: self.speculative_groups_committed.load(Ordering::Relaxed),
            speculative_groups_missed: self.speculative_groups_missed.load(Ordering::Relaxed),
            speculative_groups_staged_without_read: self.speculative_groups_unread.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn observations(&self) -> LogObservations {
        LogObservations {
            append_latency: self.append_latency.snapshot(),
            sync_latency: self.sync_latency.snapshot(),
            commit_events: self.commit_events.snapshot(),
        }
    }
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LogStats {
    pub commits: u64,
    pub events_appended: u64,
    pub appends_acknowledged: u64,
    pub appends_duplicate: u64,
    pub appends_conflicted: u64,
    pub largest_commit_events: u64,
    /// Heads held for a decision ([`super::Log::hold_head_blocking`]): on a log
    /// many nodes append to, rounds that lost the race to another node or
    /// that hold while the nodes keep colliding.
    pub heads_held: u64,
    /// Group commits on PostgreSQL staged on the head this node expected
    /// and inserted before locking it (`src/log/postgres/speculation.rs`).
    pub speculative_groups_committed: u64,
    /// Speculative groups that found the head moved (or waited too long
    /// for it), rolled back and were staged again on the locked head.
    pub speculative_groups_missed: u64,
    /// Speculative groups staged on the stream versions this node knew,
    /// without reading them first: their advisory lock was taken by the
    /// lane's previous call, so each was its call alone, one round trip.
    /// Counted when staged; a miss counts in `speculative_groups_missed`
    /// too.
    pub speculative_groups_staged_without_read: u64,
}
