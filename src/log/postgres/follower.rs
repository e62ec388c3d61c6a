//! Follows the head other nodes move: listens for the notification every
//! group commit sends (`opledger_log_appended`, the new head's digest), and
//! reads the head every [`HEAD_POLL_INTERVAL`] besides, since notifications
//! sent while the listening connection reconnects are lost.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::log::postgres::connect::{self, Heard};
use crate::log::postgres::reads::stored_head;
use crate::log::postgres::{Shared, HEAD_POLL_INTERVAL};
use crate::log::Head;

pub(crate) async fn follow(shared: Arc<Shared>) {
    while !shared.closed() {
        let (notified, mut notifications) = mpsc::unbounded_channel();
        let listener = match connect::connect(&shared.config, Arc::new(Heard::default()), Some(notified)).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for appends of other nodes; retrying");
                tokio::time::sleep(HEAD_POLL_INTERVAL).await;
                continue;
            }
        };
        if let Err(error) = listener.batch_execute("LISTEN opledger_log_appended").await {
            tracing::warn!(%error, "LISTEN failed; retrying");
            tokio::time::sleep(HEAD_POLL_INTERVAL).await;
            continue;
        }
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

async fn poll(client: &tokio_postgres::Client, shared: &Shared) {
    match stored_head(client).await {
        Ok((head, _)) => shared.publish(head),
        Err(error) => tracing::warn!(%error, "cannot read the head"),
    }
}
