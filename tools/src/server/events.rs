//! The raw log: pages of events and a Server-Sent Events stream that
//! catches up from `from` and then follows live. Each streamed event's SSE
//! id is its position, so a reconnecting client (`Last-Event-ID`) resumes
//! right after the last event it received.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use opledger::{Envelope, Subscription};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::server::auth::ServiceReader;
use crate::server::body::QueryParams;
use crate::server::error::ApiError;
use crate::server::state::AppState;

/// Most events one page returns.
pub const EVENTS_PAGE_MAX: usize = 1000;

/// Events buffered per stream subscriber before the stream waits for it.
const STREAM_BUFFER_EVENTS: usize = 256;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The first position (inclusive; positions start at 1).
    from: Option<u64>,
    /// 1 to 1,000 (the default); ignored by the stream.
    limit: Option<usize>,
}

/// A page of the raw log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<Envelope>,
    /// The `from` of the following page.
    pub next: u64,
}

/// `GET /v1/events`: a page of the raw log.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "Events from `from` on.", body = EventsPage)),
    security(("bearer" = [])))]
pub async fn page(
    State(state): State<AppState>,
    _service: ServiceReader,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let from = query.from.unwrap_or(1).max(1);
    let limit = query.limit.unwrap_or(EVENTS_PAGE_MAX).clamp(1, EVENTS_PAGE_MAX);
    let log = Arc::clone(state.ledger()?.log());
    let events = state.read_log("a read of the log", move || log.read(from, limit)).await?;
    let next = from + events.len() as u64;
    Ok(Json(EventsPage { events, next }))
}

/// Where a stream starts: after the `Last-Event-ID` a reconnecting
/// `EventSource` sends (each event's id is its position), else at `from`.
/// A `Last-Event-ID` that is not a position is a 400, not a silent replay
/// from the start.
fn stream_start(headers: &HeaderMap, from: Option<u64>) -> Result<u64, ApiError> {
    let Some(last) = headers.get(LAST_EVENT_ID) else { return Ok(from.unwrap_or(1).max(1)) };
    let position = last.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_last_event_id", "Last-Event-ID must be an event position")
    })?;
    Ok(position.saturating_add(1))
}

/// The `Last-Event-ID` request header of the Server-Sent Events standard.
const LAST_EVENT_ID: &str = "last-event-id";

/// `GET /v1/events/stream`: Server-Sent Events, catching up from `from`
/// (or after `Last-Event-ID`) and then live.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The position of the last event received: the stream resumes after it, whatever `from` says.")),
    responses((status = 200,
        description = "One SSE event per log event: `id:` its position, `data:` the event (an `Envelope`) as one JSON line. Ends when the server closes its store; reconnect with `Last-Event-ID`.",
        content_type = "text/event-stream", body = StreamEvent)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    _service: ServiceReader,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let start = stream_start(&headers, query.from)?;
    let log = state.ledger()?.log().clone();
    let subscription = log.subscribe(start);
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

/// One Server-Sent Event of the stream: the fields an SSE parser reads
/// from its lines. The OpenAPI document gives this as the schema of
/// `text/event-stream`, the schema of each event (what OpenAPI 3.2 calls
/// `itemSchema`; 3.1 has no word for it, and tools such as schemathesis
/// read a 3.1 stream's `schema` that way).
#[derive(Debug, ToSchema)]
pub struct StreamEvent {
    /// The event's log position; absent on an `error` event.
    #[schema(nullable = false)]
    id: Option<String>,
    /// Absent on a log event (an SSE parser reads that as `message`);
    /// `error` when the log could not be read or the event encoded.
    #[schema(nullable = false)]
    event: Option<StreamEventKind>,
    /// The event (an `Envelope`) as one JSON line, or the error's message.
    data: String,
}

/// The SSE `event:` field of a stream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum StreamEventKind {
    Message,
    Error,
}

impl StreamEvent {
    fn of(item: Result<Envelope, opledger::Error>) -> StreamEvent {
        let failed = |message: String| StreamEvent { id: None, event: Some(StreamEventKind::Error), data: message };
        match item.map(|envelope| (envelope.position, serde_json::to_string(&envelope))) {
            Ok((position, Ok(data))) => StreamEvent { id: Some(position.to_string()), event: None, data },
            Ok((_, Err(error))) => failed(error.to_string()),
            Err(error) => failed(error.to_string()),
        }
    }

    /// The fields in the order they were always written: `id:`, `event:`, `data:`.
    fn into_sse(self) -> Event {
        let mut event = Event::default();
        if let Some(id) = self.id {
            event = event.id(id);
        }
        // `message` is what a parser reads when the field is absent.
        if self.event == Some(StreamEventKind::Error) {
            event = event.event("error");
        }
        event.data(self.data)
    }
}

/// Sends every event of the subscription until it ends or the client goes.
async fn forward(mut subscription: Subscription, sender: Sender<Result<Event, Infallible>>) {
    while let Some(item) = subscription.next().await {
        let event = StreamEvent::of(item).into_sse();
        if sender.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with_last_event_id(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LAST_EVENT_ID, axum::http::HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_reconnect_resumes_after_the_last_event_it_saw() {
        assert_eq!(stream_start(&HeaderMap::new(), None).unwrap(), 1);
        assert_eq!(stream_start(&HeaderMap::new(), Some(0)).unwrap(), 1);
        assert_eq!(stream_start(&HeaderMap::new(), Some(7)).unwrap(), 7);
        assert_eq!(stream_start(&with_last_event_id("41"), Some(7)).unwrap(), 42, "the header wins over from");
        assert_eq!(stream_start(&with_last_event_id("0"), None).unwrap(), 1);
        assert_eq!(stream_start(&with_last_event_id("x1"), None).unwrap_err().code, "invalid_last_event_id");
    }
}
