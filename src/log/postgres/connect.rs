//! Connections to the database: each one made through the log's TLS
//! settings (`tls.rs`), driven by a task that also hears the server's
//! asynchronous messages (notices, notifications), and a small set of
//! shared read connections that reconnect when theirs broke.

use std::fmt::Write;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::error::Severity;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{self, SslMode, Tls};
use super::{conninfo, session};
use crate::error::Error;

/// Where and how every connection of one log connects: tokio-postgres'
/// settings and the TLS ones, parsed once when the log opens.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    tls: Tls,
    /// The `SET`s every connection runs first (`session.rs`).
    session: String,
}

impl Target {
    /// Reads a connection string (URL or `key=value`), its TLS parameters
    /// with libpq's meaning, completed from this process' environment
    /// (`PGSSLMODE`, …, `HOME`); the TLS files are read now.
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        Target::parse_in(url, &|name| std::env::var(name).ok())
    }

    /// [`Target::parse`] in the `environment` given.
    pub(crate) fn parse_in(url: &str, environment: tls::sources::Environment<'_>) -> Result<Target, Error> {
        let split = conninfo::split(url);
        let mut config = Config::from_str(&split.rest)
            .map_err(|error| Error::Storage(format!("not a PostgreSQL connection string: {error}")))?;
        let tls = Tls::from_sources(&tls::sources::resolve(&split.tls, environment))?;
        config.ssl_mode(tls.mode.negotiation());
        session::dead_peer_bounds(&mut config, &split)?;
        let session = session::statements(config.get_options());
        Ok(Target { config, tls, session })
    }
}

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

/// A driver error as the log reports it: [`Error::LockWaitPassed`] when a
/// lock wait passed `lock_timeout`, [`Error::Unavailable`] when the
/// database could not be reached or stopped answering (worth a retry),
/// [`Error::WritesRefused`] when it is up but refuses writes (read-only,
/// a full disk), else [`Error::Storage`].
pub(crate) fn storage(error: tokio_postgres::Error) -> Error {
    if lock_wait_passed(&error) {
        Error::LockWaitPassed(format!(
            "{}: a lock the log needs (its head, most likely) stayed held by another session past the lock wait \
             (lock_timeout: {} s unless the connection string's options set it); pg_locks and pg_stat_activity \
             show which; nothing was appended",
            storage_message(&error),
            super::LOCK_WAIT_MAX.as_secs()
        ))
    } else if unreachable(&error) {
        Error::Unavailable(storage_message(&error))
    } else if refuses_writes(&error) {
        Error::WritesRefused(storage_message(&error))
    } else {
        Error::Storage(storage_message(&error))
    }
}

/// The server is up and refuses writes: read-only (25006, a standby or
/// `default_transaction_read_only`), or out of a resource (SQLSTATE class
/// 53, insufficient resources: a full disk is 53100), but for out of
/// connections (53300), which is [`unreachable`].
fn refuses_writes(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|refused| {
        let code = refused.code().code();
        code == "25006" || (code.starts_with("53") && code != "53300")
    })
}

/// No answer from a server (a connection not made, broken, closed), or
/// the server's own word that it cannot serve now: a connection exception
/// (class 08), shutting down or starting up (57P01, 57P02, 57P03), or
/// out of connections (53300).
fn unreachable(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(refused) => {
            let code = refused.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
    }
}

/// A lock wait passed `lock_timeout` (55P03): [`super::LOCK_WAIT_MAX`], or
/// a speculative group's shorter bound, which the writer handles itself.
fn lock_wait_passed(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|refused| refused.code().code() == "55P03")
}

/// The server ended an idle session (`idle_session_timeout`, 57P05).
fn ended_for_idling(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|ended| ended.code().code() == "57P05")
}

/// A prepared statement the session no longer has (`invalid_sql_statement_name`).
const POOLED_STATEMENT_LOST: &str = "26000";

/// What a lost prepared statement almost always means for a node: it
/// prepares its statements once per connection, so only a pooler that
/// hands its transactions to other server sessions loses them.
const POOLED_HINT: &str = "; a pooler in transaction mode between the node and the database (PgBouncer's \
     pool_mode = transaction) loses the prepared statements, session locks and LISTEN a node relies on: connect \
     directly or through session pooling";

/// The driver's words and, for an error without the server's own, every
/// cause under them: tokio-postgres says only "error connecting to
/// server", and the operator needs the "Connection refused" under it.
fn storage_message(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        let hint = match code {
            POOLED_STATEMENT_LOST => POOLED_HINT,
            _ => "",
        };
        return format!("PostgreSQL: {} ({code}){hint}", db.message());
    }
    let mut message = format!("PostgreSQL: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let _ = write!(message, ": {inner}");
        cause = inner.source();
    }
    message
}

/// Connects, drives the connection on the current runtime and sets the
/// node's session settings (`session.rs`). Notifications go to
/// `notifications` when given.
pub(crate) async fn connect(
    target: &Target,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, Error> {
    let client = open_session(target, heard, notifications).await?;
    if !target.session.is_empty() {
        client.batch_execute(&target.session).await.map_err(storage)?;
    }
    Ok(client)
}

async fn open_session(
    target: &Target,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, Error> {
    let Some(connector) = target.tls.connector.clone() else {
        return connect_plain(&target.config, heard, notifications).await;
    };
    let mode = target.tls.mode;
    if mode == SslMode::Allow {
        return connect_allow(target, connector, heard, notifications).await;
    }
    let error = match target.config.connect(connector).await {
        Ok((client, connection)) => {
            drive(connection, heard, notifications);
            return Ok(client);
        }
        Err(error) => error,
    };
    match tls::handshake_failure(&error, &target.tls) {
        // libpq's prefer: a failed TLS handshake is tried again in plain.
        Some(failure) if mode == SslMode::Prefer => {
            tracing::warn!(%failure, "PostgreSQL: TLS failed with sslmode=prefer, connecting without TLS");
            let mut plain = target.config.clone();
            plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
            match connect_plain(&plain, heard, notifications).await {
                Err(Error::Storage(message)) => {
                    Err(Error::Storage(format!("{message}; tried without TLS after: {failure}")))
                }
                answer => answer,
            }
        }
        Some(failure) => Err(Error::Storage(format!("PostgreSQL: {failure}"))),
        None => Err(storage(error)),
    }
}

/// libpq's `allow`: plain first, and TLS when the server answered the
/// plain attempt with an error (a `pg_hba.conf` that wants TLS); a server
/// out of reach is not tried again.
async fn connect_allow(
    target: &Target,
    connector: MakeRustlsConnect,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, Error> {
    let refused = match target.config.connect(NoTls).await {
        Ok((client, connection)) => {
            drive(connection, heard, notifications);
            return Ok(client);
        }
        Err(error) if error.as_db_error().is_some() => storage_message(&error),
        Err(error) => return Err(storage(error)),
    };
    let mut encrypted = target.config.clone();
    encrypted.ssl_mode(tokio_postgres::config::SslMode::Require);
    match encrypted.connect(connector).await {
        Ok((client, connection)) => {
            drive(connection, heard, notifications);
            Ok(client)
        }
        Err(error) => {
            let failure = tls::handshake_failure(&error, &target.tls)
                .map_or_else(|| storage_message(&error), |failure| format!("PostgreSQL: {failure}"));
            Err(Error::Storage(format!("{failure}; tried with TLS after the server refused plain: {refused}")))
        }
    }
}

async fn connect_plain(
    config: &Config,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await.map_err(storage)?;
    drive(connection, heard, notifications);
    Ok(client)
}

/// Drives `connection` on the current runtime until it ends, hearing its
/// notices and notifications.
fn drive<S, T>(
    mut connection: Connection<S, T>,
    heard: Arc<Heard>,
    notifications: Option<mpsc::UnboundedSender<String>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    if is_replication_wait_cancelled(notice.message()) {
                        heard.replication_waits_cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    // A NOTICE is information ("relation … already exists,
                    // skipping" at every open); a WARNING is worth a look.
                    if notice.parsed_severity() == Some(Severity::Warning) {
                        tracing::warn!(notice = notice.message(), "PostgreSQL warning");
                    } else {
                        tracing::debug!(notice = notice.message(), severity = notice.severity(), "PostgreSQL notice");
                    }
                }
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if let Some(sender) = &notifications {
                        let _ = sender.send(notification.payload().to_owned());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    // The server's own words ("terminating connection due
                    // to idle-session timeout"), not the driver's "db error".
                    let why = storage_message(&error);
                    if ended_for_idling(&error) {
                        // A server's `idle_session_timeout`: expected, and
                        // the next use reconnects; a warning every time the
                        // timeout passes would bury the ones that matter.
                        tracing::info!(error = %why, "PostgreSQL connection ended");
                    } else {
                        tracing::warn!(error = %why, "PostgreSQL connection ended");
                    }
                    return;
                }
                None => return,
            }
        }
    });
}

/// PostgreSQL's warning when a commit stopped waiting for its synchronous
/// standby (cancelled, or the backend terminated): "canceling wait for
/// synchronous replication …; the transaction has already committed
/// locally, but might not have been replicated to the standby".
fn is_replication_wait_cancelled(message: &str) -> bool {
    message.contains("wait for synchronous replication")
}

/// A read the database refused for want of a resource (SQLSTATE class 53:
/// memory, temporary space, a configured limit such as `temp_file_limit`),
/// which [`storage`] calls a refused write, is a database that cannot serve
/// that read now: [`Error::Unavailable`], in the database's words. Nothing
/// was written, and writes may well be taken.
pub(crate) fn read_refused(error: Error) -> Error {
    match error {
        Error::WritesRefused(why) => {
            Error::Unavailable(format!("{why}; the database is up, but out of a resource this read needs"))
        }
        other => other,
    }
}

/// A few read connections, each replaced on its next use once it broke.
pub(crate) struct Readers {
    target: Target,
    slots: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl Readers {
    pub(crate) fn new(target: Target) -> Readers {
        let slots = (0..READ_CONNECTIONS).map(|_| Mutex::new(None)).collect();
        Readers { target, slots, next: AtomicUsize::new(0) }
    }

    /// A read connection, in turn; for statements that write (which must
    /// not be sent twice), not [`Readers::read`].
    pub(crate) async fn client(&self) -> Result<Arc<Client>, Error> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(self.slot_client(index, None).await?.0)
    }

    /// Runs `read`, statements that only read, on a read connection; once
    /// more on a new connection when the one the pool kept open turned out
    /// broken under it (the database restarted, failed over or went silent
    /// since its last use, unnoticed until now). A statement that writes
    /// is never sent again: it may have committed before its connection
    /// broke.
    pub(crate) async fn read<T, F, Work>(&self, read: F) -> Result<T, Error>
    where
        F: Fn(Arc<Client>) -> Work,
        Work: Future<Output = Result<T, Error>>,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let (client, kept_open) = self.slot_client(index, None).await?;
        let answer = match read(Arc::clone(&client)).await {
            // Not waiting for the client to see it closed: the answer can
            // come before the connection's driver has ended.
            Err(Error::Unavailable(why)) if kept_open => {
                tracing::info!(%why, "a read connection kept open failed; reading again on a new one");
                read(self.slot_client(index, Some(&client)).await?.0).await
            }
            answer => answer,
        };
        answer.map_err(read_refused)
    }

    /// Slot `index` (modulo the slots)'s connection, made anew if it has
    /// none, its connection broke, or it is `failed`; and whether it was
    /// kept open.
    async fn slot_client(&self, index: usize, failed: Option<&Arc<Client>>) -> Result<(Arc<Client>, bool), Error> {
        let Some(slot) = self.slots.get(index % self.slots.len().max(1)) else { return Err(Error::Closed) };
        let mut slot = slot.lock().await;
        let usable = |client: &&Arc<Client>| !client.is_closed() && !failed.is_some_and(|f| Arc::ptr_eq(f, client));
        if let Some(client) = slot.as_ref().filter(usable) {
            return Ok((Arc::clone(client), true));
        }
        let client = Arc::new(connect(&self.target, Arc::new(Heard::default()), None).await?);
        *slot = Some(Arc::clone(&client));
        Ok((client, false))
    }
}
