//! The warm-up and measured window the baselines and the cycles share.

use std::time::{Duration, Instant};

/// A run's warm-up then measured window. A piece of work (a group, a
/// cycle) counts when it started inside the measured part; the last ones
/// started before the end are waited for, and the measured seconds run
/// until they ended (as the ledger's appends side waits for its last
/// append).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

impl Window {
    pub fn starting_in(warmup: Duration, length: Duration) -> Window {
        let from = Instant::now() + warmup;
        Window { from, until: from + length }
    }

    pub fn open(&self) -> bool {
        Instant::now() < self.until
    }

    /// Whether work that started at `started` counts.
    pub fn measuring(&self, started: Instant) -> bool {
        started >= self.from
    }

    /// Seconds from the start of the measured part until now (call once
    /// every task ended).
    pub fn measured_seconds(&self) -> f64 {
        Instant::now().saturating_duration_since(self.from).as_secs_f64()
    }
}
