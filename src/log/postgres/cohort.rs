//! Keeps each of the writer's lanes fed by the clients it answered.
//!
//! Clients that append one at a time come back as soon as they are
//! answered. A lane that gathers the moment its group is answered finds
//! its own clients not back yet, and takes what other lanes' answers sent
//! back instead. The clients then settle into more cohorts than there are
//! lanes (seen: three cohorts of 50, 13 and 1 appends over two lanes, at
//! 64 clients), and every cohort costs the head a commit of its own, even
//! a cohort of one append.
//!
//! So a lane that gathered fewer appends than its last group answered
//! waits for them, but only while another lane's group is in flight: the
//! head is taken until that group commits, so the wait delays nothing
//! that could have gone sooner. It ends once the appends came back, once
//! any other lane's group was answered (from then on the head may be
//! free), or after [`COHORT_WAIT_MAX`]. With no other group in flight it
//! never waits: one client alone is not slowed. A group already at a group
//! commit's bounds does not wait either (the writer's `drive`), and the
//! wait stops at them.
//!
//! Measured (2026-11-30, 64 clients, one node): three cohorts became two
//! (56 and 9 appends), mean group 23 → 30, appends/s +17%, CPU per append
//! −18% (BENCHMARKS.md, "Lanes that wait for their clients").

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, Notify};

/// Longest a lane waits for the appends it last answered to come back.
/// (tokio's timers count whole milliseconds: this is the shortest bound
/// they keep; the other lane's answer usually ends the wait well before.)
pub(crate) const COHORT_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// The lanes' groups in flight, shared by the lanes of one writer.
#[derive(Default)]
pub(crate) struct Cohorts {
    /// Lanes whose group was gathered and is not answered yet.
    in_flight: AtomicUsize,
    /// Told whenever a lane's group was answered.
    answered: Notify,
}

impl Cohorts {
    /// A lane gathered a group.
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A lane's group was answered (committed, refused or failed).
    pub(crate) fn answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.answered.notify_waiters();
    }

    /// Adds to `batch` what arrives on `requests` until it holds
    /// `answered_last` items, another lane's group is answered, or
    /// [`COHORT_WAIT_MAX`] passed; at once when no other lane's group is
    /// in flight. `room` is told of each item added and says whether the
    /// group has room for more.
    pub(crate) async fn await_returning<T>(
        &self,
        batch: &mut Vec<T>,
        requests: &mut mpsc::Receiver<T>,
        answered_last: usize,
        mut room: impl FnMut(&T) -> bool,
    ) {
        if batch.len() >= answered_last {
            return;
        }
        // Registered before the count is read, so an answer between the
        // two still ends the wait.
        let mut answered = std::pin::pin!(self.answered.notified());
        answered.as_mut().enable();
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut deadline = std::pin::pin!(tokio::time::sleep(COHORT_WAIT_MAX));
        while batch.len() < answered_last {
            tokio::select! {
                biased;
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let more = room(&request);
                    batch.push(request);
                    if !more {
                        return;
                    }
                }
                () = answered.as_mut() => return,
                () = deadline.as_mut() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// On a paused clock: a wait that times out advances it by its bound,
    /// one that does not leaves it where it was.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
    }

    /// The lanes of a writer where another lane's group is in flight.
    fn another_group_in_flight() -> Cohorts {
        let cohorts = Cohorts::default();
        cohorts.started();
        cohorts
    }

    #[test]
    fn with_no_other_group_in_flight_a_lane_does_not_wait() {
        runtime().block_on(async {
            let cohorts = Cohorts::default();
            let (_tx, mut rx) = mpsc::channel::<u32>(8);
            let mut batch = vec![1];
            let started = Instant::now();
            cohorts.await_returning(&mut batch, &mut rx, 5, |_| true).await;
            assert_eq!(batch, vec![1]);
            assert_eq!(started.elapsed(), std::time::Duration::ZERO, "it returned at once");
        });
    }

    #[test]
    fn a_lane_that_gathered_as_many_as_it_answered_does_not_wait() {
        runtime().block_on(async {
            let cohorts = another_group_in_flight();
            let (_tx, mut rx) = mpsc::channel::<u32>(8);
            let mut batch = vec![1, 2];
            cohorts.await_returning(&mut batch, &mut rx, 2, |_| true).await;
            assert_eq!(batch, vec![1, 2]);
        });
    }

    #[test]
    fn a_lane_takes_its_returning_clients_while_another_group_is_in_flight() {
        runtime().block_on(async {
            let cohorts = another_group_in_flight();
            let (tx, mut rx) = mpsc::channel::<u32>(8);
            let sender = tokio::spawn(async move {
                for item in [2, 3] {
                    tokio::task::yield_now().await;
                    tx.send(item).await.unwrap();
                }
                tx
            });
            let mut batch = vec![1];
            cohorts.await_returning(&mut batch, &mut rx, 3, |_| true).await;
            assert_eq!(batch, vec![1, 2, 3]);
            drop(sender.await.unwrap());
        });
    }

    #[test]
    fn another_lane_answering_ends_the_wait() {
        runtime().block_on(async {
            let cohorts = std::sync::Arc::new(another_group_in_flight());
            let (_tx, mut rx) = mpsc::channel::<u32>(8);
            let other = std::sync::Arc::clone(&cohorts);
            tokio::spawn(async move { other.answered() });
            let mut batch = vec![1];
            cohorts.await_returning(&mut batch, &mut rx, 10, |_| true).await;
            assert_eq!(batch, vec![1]);
        });
    }

    #[test]
    fn the_wait_is_bounded_when_nothing_comes_back() {
        runtime().block_on(async {
            let cohorts = another_group_in_flight();
            let (_tx, mut rx) = mpsc::channel::<u32>(8);
            let mut batch = vec![1];
            let started = Instant::now();
            cohorts.await_returning(&mut batch, &mut rx, 10, |_| true).await;
            assert_eq!(batch, vec![1]);
            assert!(started.elapsed() >= COHORT_WAIT_MAX);
            assert!(started.elapsed() < COHORT_WAIT_MAX * 2, "bounded by COHORT_WAIT_MAX");
        });
    }

    #[test]
    fn a_full_group_stops_the_wait() {
        runtime().block_on(async {
            let cohorts = another_group_in_flight();
            let (tx, mut rx) = mpsc::channel::<u32>(8);
            for item in [2, 3, 4] {
                tx.send(item).await.unwrap();
            }
            let mut batch = vec![1];
            cohorts.await_returning(&mut batch, &mut rx, 10, |item| *item < 3).await;
            assert_eq!(batch, vec![1, 2, 3], "the item that filled the group is the last one taken");
        });
    }
}
