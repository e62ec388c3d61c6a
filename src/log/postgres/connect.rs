//! Connections to the database: each one driven by a task that also hears
//! the server's asynchronous messages (notices, notifications), and a small
//! set of shared read connections that reconnect when theirs broke.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::error::Error;

/// Read connections shared by every reader of one log. Each is one
/// `tokio_postgres::Client`, which pipelines concurrent queries.
pub(crate) const READ_CONNECTIONS: usize = 2;

/// What a connection's driver saw besides answers.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// Warnings that a commit's wait for a synchronous standby was cancelled:
    /// the commit is local to the primary, not acknowledged by a standby.
    pub(crate) replication_waits_cancelled: AtomicU64,
}

pub(crate) fn storage(error: tokio_postgres::Error) -> Error {
    match error.as_db_error() {
        Some(db) => Error::Storage(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => Error::Storage(format!("PostgreSQL: {error}")),
    }
}

/// Connects and drives the connection on the current runtime. Notifications
/// go to `notifications` when given.
pub(crate) async fn connect(
    config: &Config,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, Error> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(storage)?;
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    if is_replication_wait_cancelled(notice.message()) {
                        heard.replication_waits_cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    tracing::warn!(notice = notice.message(), "PostgreSQL notice");
                }
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if let Some(sender) = &notifications {
                        let _ = sender.send(notification.payload().to_owned());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "PostgreSQL connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    Ok(client)
}

/// PostgreSQL's warning when a commit stopped waiting for its synchronous
/// standby (cancelled, or the backend terminated): "canceling wait for
/// synchronous replication …; the transaction has already committed
/// locally, but might not have been replicated to the standby".
fn is_replication_wait_cancelled(message: &str) -> bool {
    message.contains("wait for synchronous replication")
}

/// A few read connections, each replaced on its next use once it broke.
pub(crate) struct Readers {
    config: Config,
    slots: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl Readers {
    pub(crate) fn new(config: Config) -> Readers {
        let slots = (0..READ_CONNECTIONS).map(|_| Mutex::new(None)).collect();
        Readers { config, slots, next: AtomicUsize::new(0) }
    }

    pub(crate) async fn client(&self) -> Result<Arc<Client>, Error> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len().max(1);
        let Some(slot) = self.slots.get(index) else { return Err(Error::Closed) };
        let mut slot = slot.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(connect(&self.config, Arc::new(Heard::default()), None).await?);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}
