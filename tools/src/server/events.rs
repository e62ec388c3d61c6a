//! The raw log: pages of events and a Server-Sent Events stream that
//! catches up from `from` and then follows live.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use opledger::Subscription;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::Sender;
use tokio_stream::wrappers::ReceiverStream;

use crate::server::auth::Service;
use crate::server::body::QueryParams;
use crate::server::error::ApiError;
use crate::server::state::AppState;

/// Most events one page returns.
pub const EVENTS_PAGE_MAX: usize = 1000;

/// Events buffered per stream subscriber before the stream waits for it.
const STREAM_BUFFER_EVENTS: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

pub async fn page(
    State(state): State<AppState>,
    _service: Service,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let from = query.from.unwrap_or(1).max(1);
    let limit = query.limit.unwrap_or(EVENTS_PAGE_MAX).clamp(1, EVENTS_PAGE_MAX);
    let events = state.ledger()?.log().read(from, limit)?;
    let next = from + events.len() as u64;
    Ok(Json(json!({"events": events, "next": next})))
}

pub async fn stream(
    State(state): State<AppState>,
    _service: Service,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let log = state.ledger()?.log().clone();
    let subscription = log.subscribe(query.from.unwrap_or(1));
    let mut head = log.head_watch();
    drop(log);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(STREAM_BUFFER_EVENTS);
    tokio::spawn(async move {
        // A subscriber that stopped reading must not keep a closed store
        // open (a reopen after a storage error waits for its files): the
        // forwarding ends when the log closes, whatever it is waiting on.
        let log_closed = async move { while head.changed().await.is_ok() {} };
        tokio::select! {
            () = forward(subscription, sender) => {}
            () = log_closed => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default()))
}

/// Sends every event of the subscription until it ends or the client goes.
async fn forward(mut subscription: Subscription, sender: Sender<Result<Event, Infallible>>) {
    while let Some(item) = subscription.next().await {
        let event = match item.map(|envelope| serde_json::to_string(&envelope)) {
            Ok(Ok(data)) => Event::default().data(data),
            Ok(Err(error)) => Event::default().event("error").data(error.to_string()),
            Err(error) => Event::default().event("error").data(error.to_string()),
        };
        if sender.send(Ok(event)).await.is_err() {
            return;
        }
    }
}
