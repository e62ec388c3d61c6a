//! Follows the head other nodes move: listens for the notification every
//! group commit sends (`opledger_log_appended`, the new head's digest), and
//! reads the head every [`HEAD_POLL_INTERVAL`] besides, since notifications
//! sent while the listening connection reconnects are lost.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::log::postgres::connect::{self, Heard};
use crate::log::postgres::reads::stored_head;
use crate::log::postgres::{Shared, HEAD_POLL_INTERVAL, HEAD_POLL_WAIT_MAX};
use crate::log::Head;

pub(crate) async fn follow(shared: Arc<Shared>) {
    while !shared.closed() {
        let (notified, mut notifications) = mpsc::unbounded_channel();
        let connecting = connect::connect(&shared.config, Arc::new(Heard::default()), Some(notified));
        let connected = tokio::time::timeout(HEAD_POLL_WAIT_MAX, connecting).await.unwrap_or_else(|_| {
            Err(crate::error::Error::Unavailable(format!(
                "PostgreSQL did not accept a connection within {} s",
                HEAD_POLL_WAIT_MAX.as_secs()
            )))
        });
        let listener = match connected {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for appends of other nodes; retrying");
                shared.reached(Some(error.to_string()));
                tokio::time::sleep(HEAD_POLL_INTERVAL).await;
                continue;
            }
        };
        let listening =
            tokio::time::timeout(HEAD_POLL_WAIT_MAX, listener.batch_execute("LISTEN opledger_log_appended"));
        let listened = listening.await.map_err(|_| {
            crate::error::Error::Unavailable(format!(
                "PostgreSQL did not answer LISTEN within {} s",
                HEAD_POLL_WAIT_MAX.as_secs()
            ))
        });
        if let Err(error) = listened.and_then(|listened| listened.map_err(connect::storage)) {
            tracing::warn!(%error, "LISTEN failed; retrying");
            shared.reached(Some(error.to_string()));
            tokio::time::sleep(HEAD_POLL_INTERVAL).await;
            continue;
        }
        // Caught up with what was missed while not listening, and reached.
        poll(&listener, &shared).await;
        while !listener.is_closed() && !shared.closed() {
            tokio::select! {
                payload = notifications.recv() => match payload.as_deref().and_then(Head::parse_digest) {
                    Some(head) => shared.publish(head),
                    None if payload.is_none() => break,
                    None => tracing::warn!("a notification without a head digest"),
                },
                () = tokio::time::sleep(HEAD_POLL_INTERVAL) => poll(&listener, &shared).await,
            }
        }
    }
}

/// Reads the head, bounded by [`HEAD_POLL_WAIT_MAX`]: a database that
/// stopped answering is unreachable too.
async fn poll(client: &tokio_postgres::Client, shared: &Shared) {
    let read = match tokio::time::timeout(HEAD_POLL_WAIT_MAX, stored_head(client)).await {
        Ok(read) => read,
        Err(_) => Err(crate::error::Error::Unavailable(format!(
            "PostgreSQL did not answer a read of the head within {} s",
            HEAD_POLL_WAIT_MAX.as_secs()
        ))),
    };
    match read {
        Ok((head, _)) => {
            shared.publish(head);
            shared.reached(None);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the head");
            shared.reached(Some(error.to_string()));
        }
    }
}
