//! The shared backend: the log in a PostgreSQL database that many nodes
//! append to. The only module of the workspace that imports
//! `tokio_postgres`.
//!
//! The database serializes appends: a writer's group commit locks the head
//! row, stages its appends on the head it found (the shared
//! [`staging`](crate::log::staging) code), inserts the events and moves the
//! head in the same transaction. Positions are therefore gapless and commit
//! order is position order, whichever node commits. Acknowledged means
//! committed (see `schema::check_durability` and the replication warning in
//! `writer.rs`).
//!
//! The backend runs its own small tokio runtime, so its synchronous reads
//! can be called from any thread, async or not: a read is spawned there and
//! waited for, at most [`QUERY_WAIT_MAX`].

mod cohort;
mod connect;
mod conninfo;
mod follower;
mod lane;
mod reads;
mod refusals;
mod schema;
mod session;
mod speculation;
mod statements;
mod tls;
mod writer;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Config;

use crate::error::Error;
use crate::limits::{APPEND_QUEUE_DEPTH_MAX, OPEN_TAIL_CHECK_EVENTS};
use crate::log::backend::Opened;
use crate::log::{Head, LogOptions, StatsCounters};
use connect::{Heard, Readers, Target};
use refusals::LatestRefusal;

/// Longest wait for one database round of a read before it fails (a read
/// never hangs on a database that stopped answering).
pub const QUERY_WAIT_MAX: Duration = Duration::from_secs(30);

/// Longest time a writer keeps trying to reach the database after a commit
/// whose answer was lost, to learn by event id whether it committed.
pub const COMMIT_RESOLVE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Longest data a node sent may stay unacknowledged by the database's
/// machine before the connection is ended (`tcp_user_timeout`, unless the
/// connection string sets it): a silent peer found in seconds, not TCP's
/// 15 minutes.
pub const TCP_UNACKNOWLEDGED_WAIT_MAX: Duration = Duration::from_secs(20);

/// Idle time before a node's connection probes the database's machine
/// (`keepalives_idle`, unless the string sets it; TCP's default is 2 h).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// Time between keepalive probes (`keepalives_interval`, unless set).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Unanswered keepalive probes that end a connection (`keepalives_retries`,
/// unless set): an idle connection to a silent peer ends within
/// `KEEPALIVE_IDLE + KEEPALIVE_RETRIES × KEEPALIVE_INTERVAL`, 25 s.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// Longest any statement of a node waits for a lock (`lock_timeout` of its
/// sessions): the head, above all, which one group at a time holds for a
/// commit, or a decider for at most `HEAD_HOLD_WAIT_MAX` (10 s). Past it the
/// append fails as unavailable (a session outside the ledger holding the
/// head, say), instead of waiting for good.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(30);

/// Longest a node's session may sit idle inside a transaction before the
/// server ends it (`idle_in_transaction_session_timeout`): above
/// `HEAD_HOLD_WAIT_MAX` (10 s), the longest a decider holds the head open, so
/// only a node that stopped mid-transaction is cut off.
pub const IDLE_IN_TRANSACTION_WAIT_MAX: Duration = Duration::from_secs(60);

/// Longest a lane's session keeps, by default, the advisory lock it took in
/// one group's call for its next group, when no append comes: a writer
/// without appends holds no lock. Other nodes' groups never wait on it (its
/// key is this writer's own); it only keeps a session busy.
pub const HELD_LOCK_IDLE_WAIT_MAX: Duration = Duration::from_secs(1);

/// How often a node reads the head even without a notification (one may be
/// lost while its listening connection reconnects).
pub const HEAD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest the follower waits for that read (or for a connection) before
/// it counts the database unreachable (`/readyz`): a one-row read, so a
/// database that takes longer has stopped answering for this node.
pub const HEAD_POLL_WAIT_MAX: Duration = Duration::from_secs(5);

pub use refusals::WRITES_REFUSED_READY_WAIT;

/// Threads of the backend's own runtime.
const RUNTIME_THREADS: usize = 2;

/// Drops the backend's runtime without blocking, wherever the last handle
/// of the log goes away (dropping a runtime inside another one panics).
struct RuntimeGuard(Option<Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the backend's tasks share.
pub(crate) struct Shared {
    /// Where and how every connection connects (TLS included).
    pub(crate) config: Target,
    pub(crate) readers: Readers,
    /// Taken when the log closes, which ends every subscription.
    head: std::sync::Mutex<Option<watch::Sender<Head>>>,
    pub(crate) location: String,
    /// Why the follower could not reach the database on its last attempt.
    unreachable: std::sync::Mutex<Option<String>>,
    /// The database's refusal of this node's latest group commit while up
    /// (read-only, a full disk), and when; cleared by a commit.
    pub(crate) writes_refused: LatestRefusal,
}

impl Shared {
    /// Moves the published head forward (never back).
    pub(crate) fn publish(&self, head: Head) {
        let Ok(sender) = self.head.lock() else { return };
        let Some(sender) = sender.as_ref() else { return };
        sender.send_if_modified(|current| {
            let newer = head.position > current.position;
            if newer {
                *current = head;
            }
            newer
        });
    }

    /// Records whether the database answered the follower's last attempt.
    pub(crate) fn reached(&self, failure: Option<String>) {
        if let Ok(mut unreachable) = self.unreachable.lock() {
            *unreachable = failure;
        }
    }

    pub(crate) fn unreachable(&self) -> Option<String> {
        self.unreachable.lock().ok().and_then(|unreachable| unreachable.clone())
    }

    pub(crate) fn closed(&self) -> bool {
        self.head.lock().map_or(true, |sender| sender.is_none())
    }

    fn close(&self) {
        if let Ok(mut sender) = self.head.lock() {
            sender.take();
        }
    }
}

pub(crate) struct PostgresBackend {
    shared: Arc<Shared>,
    handle: Handle,
    /// To the writer's hold lane; taken when the log closes.
    holds: std::sync::Mutex<Option<mpsc::Sender<writer::Hold>>>,
    _runtime: Arc<RuntimeGuard>,
}

impl PostgresBackend {
    /// Waits (bounded) for the writer's hold lane to lock the head.
    fn hold(&self) -> Result<crate::log::HeldHead, Error> {
        let holds = self.holds.lock().ok().and_then(|holds| holds.clone()).ok_or(Error::Closed)?;
        let (locked, locked_answer) = tokio::sync::oneshot::channel();
        let (append, append_request) = tokio::sync::oneshot::channel();
        let head = self.call(async move {
            holds.send(writer::Hold { locked, append: append_request }).await.map_err(|_| Error::Closed)?;
            locked_answer.await.map_err(|_| Error::Closed)?
        })?;
        Ok(crate::log::HeldHead::new(head, append))
    }

    /// Runs `work` on the backend's runtime and waits for it, bounded.
    fn call<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        call(&self.handle, work)
    }

    /// [`PostgresBackend::call`] for a one-row read that every round of a
    /// decider makes: bounded as the follower's read of the head is
    /// ([`HEAD_POLL_WAIT_MAX`]), so that a database gone silent fails the
    /// round in seconds instead of holding every command queued behind it
    /// for [`QUERY_WAIT_MAX`] each.
    fn call_briefly<T: Send + 'static>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        call_within(&self.handle, work, HEAD_POLL_WAIT_MAX)
            .unwrap_or_else(|| Err(not_answered(&format!("answer {what}"), HEAD_POLL_WAIT_MAX)))
    }
}

fn call<T: Send + 'static>(
    handle: &Handle,
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    call_within(handle, work, QUERY_WAIT_MAX).unwrap_or_else(|| Err(not_answered("answer", QUERY_WAIT_MAX)))
}

/// PostgreSQL did not `what` within `wait`: the database stopped
/// answering this node, [`Error::Unavailable`].
pub(crate) fn not_answered(what: &str, wait: Duration) -> Error {
    Error::Unavailable(format!("PostgreSQL did not {what} within {} s", wait.as_secs()))
}

/// Runs `work` on the backend's runtime and waits for it at most `wait`;
/// `None` once that passed (the work goes on, and ends when the database
/// answers or its connection is found dead).
fn call_within<T: Send + 'static>(
    handle: &Handle,
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
    wait: Duration,
) -> Option<Result<T, Error>> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = answer.send(work.await);
    });
    answered.recv_timeout(wait).ok()
}

/// The database a connection string names, without user or password (for
/// messages: the string itself may hold a password).
pub fn describe_url(url: &str) -> String {
    match Config::from_str(&conninfo::split(url).rest) {
        Ok(config) => describe(&config),
        Err(_) => "a PostgreSQL database (the connection string does not parse)".to_owned(),
    }
}

/// The database `config` names, without user or password.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!("postgres://{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

/// Opens (or creates) the log in the database `url` names.
pub(crate) fn open(url: &str, options: &LogOptions, stats: &Arc<StatsCounters>) -> Result<Opened, Error> {
    let target = Target::parse(url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .thread_name("opledger-postgres")
        .enable_all()
        .build()
        .map_err(|error| Error::Storage(format!("cannot start the PostgreSQL runtime: {error}")))?;
    let handle = runtime.handle().clone();
    let runtime = Arc::new(RuntimeGuard(Some(runtime)));
    let heard = Arc::new(Heard::default());
    let prepare_target = target.clone();
    let prepare_heard = Arc::clone(&heard);
    let (client, head, last_recorded_at, lanes) = call(&handle, async move {
        let mut client = connect::connect(&prepare_target, prepare_heard, None).await?;
        schema::create(&mut client).await?;
        schema::check_durability(&client).await?;
        let (head, last_recorded_at) = opening_state(&client).await?;
        // Every writer lane connects now: a log that opened can append
        // without first reaching the database again.
        let mut lanes = Vec::with_capacity(writer::WRITER_LANES);
        for _ in 1..=writer::WRITER_LANES {
            let heard = Arc::new(Heard::default());
            lanes.push((connect::connect(&prepare_target, Arc::clone(&heard), None).await?, heard));
        }
        Ok((client, head, last_recorded_at, lanes))
    })?;
    let (head_tx, head_rx) = watch::channel(head);
    let shared = Arc::new(Shared {
        location: describe(&target.config),
        readers: Readers::new(target.clone()),
        config: target,
        head: std::sync::Mutex::new(Some(head_tx)),
        unreachable: std::sync::Mutex::new(None),
        writes_refused: LatestRefusal::default(),
    });
    handle.spawn(follower::follow(Arc::clone(&shared)));
    let (requests_tx, requests_rx) = mpsc::channel(APPEND_QUEUE_DEPTH_MAX);
    let (holds_tx, holds_rx) = mpsc::channel(writer::HOLD_QUEUE_DEPTH_MAX);
    let writer = writer::Writer {
        shared: Arc::clone(&shared),
        last_recorded_at: std::sync::Mutex::new(last_recorded_at),
        clock: Arc::clone(&options.clock),
        stats: Arc::clone(stats),
        resolve_wait: options.commit_resolve_wait,
        held_lock_idle_wait: options.held_lock_idle_wait,
        speculation: std::sync::Mutex::default(),
        key_prefix: (uuid::Uuid::now_v7().as_u128() & 0x7fff_ffff) as i64,
        speculative_groups: std::sync::atomic::AtomicU32::default(),
        cohorts: cohort::Cohorts::default(),
    };
    let writer_handle = handle.clone();
    let writer_runtime = Arc::clone(&runtime);
    let thread = std::thread::Builder::new()
        .name("opledger-pg-writer".into())
        .spawn(move || {
            writer_handle.block_on(writer.run(requests_rx, holds_rx, std::iter::once((client, heard)).chain(lanes)));
            drop(writer_runtime);
        })
        .map_err(|error| Error::Storage(format!("cannot start the PostgreSQL writer: {error}")))?;
    let holds = std::sync::Mutex::new(Some(holds_tx));
    let backend = Arc::new(PostgresBackend { shared, handle, holds, _runtime: runtime });
    Ok(Opened { backend, requests: requests_tx, head: head_rx, writer: thread })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod refused_writes_tests;
#[cfg(test)]
mod session_settings_tests;

/// The stored head and the recording time of its event, once the tail is
/// checked ([`check_stored_tail`]). The head, the last stored position and
/// the tail are read in one snapshot: other nodes may be appending, and a
/// group committed between two reads is not corruption.
async fn opening_state(client: &tokio_postgres::Client) -> Result<(Head, chrono::DateTime<chrono::Utc>), Error> {
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(connect::storage)?;
    let checked = async {
        let (head, last_recorded_at) = reads::stored_head(client).await?;
        check_stored_tail(client, head).await?;
        Ok((head, last_recorded_at))
    }
    .await;
    // Read only: ending it commits nothing, whatever the reads found.
    client.batch_execute("COMMIT").await.map_err(connect::storage)?;
    checked.map_err(connect::read_refused)
}

/// The last [`OPEN_TAIL_CHECK_EVENTS`] events must be stored, chain and
/// end in the stored head, and nothing may be stored past it.
async fn check_stored_tail(client: &tokio_postgres::Client, head: Head) -> Result<(), Error> {
    let last = reads::last_position(client).await?;
    if last != head.position {
        return Err(Error::corrupt(
            last.max(head.position),
            format!("the stored head ({}) does not name the last stored event ({last})", head.position),
        ));
    }
    if head.position == 0 {
        return Ok(());
    }
    let from = head.position.saturating_sub(OPEN_TAIL_CHECK_EVENTS).max(1);
    let count = usize::try_from(head.position - from + 1).unwrap_or(usize::MAX);
    let tail = reads::events(client, from, count).await?;
    crate::log::check_tail(from, &tail, head)
}
