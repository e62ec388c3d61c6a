//! Follows the head other nodes move: listens for the notification every
//! group commit sends (`opledger_log_appended`, the new head's digest), and
//! reads the head every [`HEAD_POLL_INTERVAL`] besides, since notifications
//! sent while the listening connection reconnects are lost. What its
//! attempts find is the node's word on whether the database can be
//! reached (`/readyz`).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::error::Error;
use crate::log::postgres::connect::{self, Heard};
use crate::log::postgres::reads::stored_head;
use crate::log::postgres::{not_answered, Shared, HEAD_POLL_INTERVAL, HEAD_POLL_WAIT_MAX};
use crate::log::Head;

pub(crate) async fn follow(shared: Arc<Shared>) {
    while !shared.closed() {
        let (notified, mut notifications) = mpsc::unbounded_channel();
        let listener = match listen(&shared, notified).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for appends of other nodes; retrying");
                shared.reached(Some(error.to_string()));
                tokio::time::sleep(HEAD_POLL_INTERVAL).await;
                continue;
            }
        };
        // Caught up with what was missed while not listening, and reached.
        poll(&listener, &shared, false).await;
        while !listener.is_closed() && !shared.closed() {
            tokio::select! {
                payload = notifications.recv() => match payload.as_deref().and_then(Head::parse_digest) {
                    Some(head) => shared.publish(head),
                    None if payload.is_none() => break,
                    None => tracing::warn!("a notification without a head digest"),
                },
                () = tokio::time::sleep(HEAD_POLL_INTERVAL) => {
                    if !poll(&listener, &shared, true).await {
                        break;
                    }
                }
            }
        }
    }
}

/// A connection listening for appends, its notifications sent to
/// `notified`.
async fn listen(shared: &Shared, notified: mpsc::UnboundedSender<String>) -> Result<Client, Error> {
    let connecting = connect::connect(&shared.config, Arc::new(Heard::default()), Some(notified));
    let listener = within("accept a connection", connecting).await?;
    let listening = async { listener.batch_execute("LISTEN opledger_log_appended").await.map_err(connect::storage) };
    within("answer LISTEN", listening).await?;
    Ok(listener)
}

/// Reads the head: a database that did not answer is unreachable too,
/// but for a listening connection `kept_open` that failed the read (it
/// broke while idle: the database restarted or failed over): false, and
/// the follower listens anew at once; that attempt tells whether the
/// database can be reached. A read that took too long is told either way.
async fn poll(client: &Client, shared: &Shared, kept_open: bool) -> bool {
    let error = match tokio::time::timeout(HEAD_POLL_WAIT_MAX, stored_head(client)).await {
        Ok(Ok((head, _))) => {
            shared.publish(head);
            shared.reached(None);
            return true;
        }
        Ok(Err(error)) if kept_open => {
            tracing::info!(%error, "the listening connection failed a read of the head; listening anew");
            return false;
        }
        Ok(Err(error)) => error,
        Err(_) => too_long("answer a read of the head"),
    };
    tracing::warn!(%error, "cannot read the head");
    shared.reached(Some(error.to_string()));
    true
}

/// `work`, or [`Error::Unavailable`] once it took [`HEAD_POLL_WAIT_MAX`]
/// (PostgreSQL did not `what` in time).
async fn within<T>(what: &str, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(HEAD_POLL_WAIT_MAX, work).await.unwrap_or_else(|_| Err(too_long(what)))
}

/// PostgreSQL did not `what` within [`HEAD_POLL_WAIT_MAX`].
fn too_long(what: &str) -> Error {
    not_answered(what, HEAD_POLL_WAIT_MAX)
}
