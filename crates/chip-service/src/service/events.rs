//! The tenant's event streams: `GET /v1/events` (Server-Sent Events) and `GET /v1/events/ws`
//! (WebSocket), both of the token's tenant only.
//!
//! - **Filters**: `?chip=a,b` (those chips only) and `?chat=x,y` (the message events of those
//!   chats only), combined as [`ChangeFilter`] does.
//! - **Resume**: SSE's `Last-Event-ID` header, or `?after=<seq>` (both transports): the
//!   changes numbered after it that the bus still holds are replayed, then the live ones
//!   follow; without either, the stream starts with the next change. `?after=0` replays
//!   everything the bus holds.
//! - **SSE frames**: a change is `event: change`, `id: <seq>`, `data: <JSON>` (see
//!   `views::change_json`); a gap (changes lost to this subscriber) is `event: gap`,
//!   `data: {"missed": .., "resume_after": ..}` without an id: reconnect with
//!   `Last-Event-ID: <resume_after>` (or re-read the chips). Keep-alive comments every 15 s.
//! - **WebSocket messages**: one JSON text per item, `{"type": "change", ...}` or
//!   `{"type": "gap", ...}`. What the client sends is ignored (pings are answered).
//!
//! Both end when the service shuts down (the WebSocket with a close frame).

use std::convert::Infallible;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::Value;
use session_supervisor::{ChangeFilter, ChangeItem, ChangeStream};
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::watch;

use super::auth::TenantAuth;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views::{change_json, gap_json, item_message};
use super::{AppState, stopped};

/// The query of both stream routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Comma-separated chip ids.
    chip: Option<String>,
    /// Comma-separated chat ids.
    chat: Option<String>,
    /// Resume after this sequence number.
    after: Option<u64>,
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn filter_of(query: &EventsQuery) -> Result<ChangeFilter, ApiError> {
    let mut filter = match query.chip.as_deref() {
        Some(chips) => {
            let chips = split(chips)
                .map(ChipId::new)
                .collect::<Result<Vec<_>, _>>()?;
            if chips.is_empty() {
                ChangeFilter::all()
            } else {
                ChangeFilter::chips(chips)
            }
        }
        None => ChangeFilter::all(),
    };
    if let Some(chats) = query.chat.as_deref() {
        let chats: Vec<String> = split(chats).map(str::to_owned).collect();
        if !chats.is_empty() {
            filter = filter.with_chats(chats);
        }
    }
    Ok(filter)
}

/// The `Last-Event-ID` header, if any.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::invalid_input("Last-Event-ID must be a sequence number")
            .with("field", "Last-Event-ID")
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid_input("Last-Event-ID must be a sequence number")
            .with("field", "Last-Event-ID")
    })
}

/// Subscribes `tenant` as the request asks (filter, resume point).
async fn open(
    state: &AppState,
    tenant: &TenantId,
    query: &EventsQuery,
    headers: &HeaderMap,
) -> Result<ChangeStream, ApiError> {
    let filter = filter_of(query)?;
    let after = last_event_id(headers)?.or(query.after);
    let supervisor = &state.inner.supervisor;
    let stream = match after {
        Some(after) => supervisor.subscribe_from(tenant, filter, after).await?,
        None => supervisor.subscribe(tenant, filter).await?,
    };
    Ok(stream)
}

fn sse_event(item: &ChangeItem) -> Event {
    match item {
        ChangeItem::Change(change) => Event::default()
            .event("change")
            .id(change.seq.to_string())
            .data(Value::Object(change_json(change)).to_string()),
        ChangeItem::Gap {
            missed,
            resume_after,
        } => Event::default()
            .event("gap")
            .data(Value::Object(gap_json(*missed, *resume_after)).to_string()),
    }
}

/// The stream of SSE events: the changes until the bus or the service goes away.
fn sse_stream(
    changes: ChangeStream,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures::stream::unfold((changes, stop), |(mut changes, mut stop)| async move {
        let item = tokio::select! {
            item = changes.next() => item,
            () = stopped(&mut stop) => None,
        };
        item.map(|item| (Ok::<Event, Infallible>(sse_event(&item)), (changes, stop)))
    })
}

/// `GET /v1/events`: the tenant's changes as Server-Sent Events.
pub(crate) async fn events_sse(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let changes = open(&state, &tenant, &query, &headers).await?;
    let stop = state.inner.shutdown.subscribe();
    let keep_alive = KeepAlive::new().interval(state.inner.options.sse_keep_alive);
    Ok(Sse::new(sse_stream(changes, stop))
        .keep_alive(keep_alive)
        .into_response())
}

/// `GET /v1/events/ws`: the tenant's changes over a WebSocket.
pub(crate) async fn events_ws(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "websocket_upgrade_required",
            rejection.body_text(),
        )
    })?;
    let changes = open(&state, &tenant, &query, &headers).await?;
    let stop = state.inner.shutdown.subscribe();
    Ok(upgrade.on_upgrade(move |socket| forward(socket, changes, stop)))
}

/// Sends the changes over `socket` until the client leaves, the bus goes away or the service
/// shuts down.
async fn forward(
    mut socket: WebSocket,
    mut changes: ChangeStream,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            item = changes.next() => {
                let Some(item) = item else { break };
                let text = item_message(&item);
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
            () = stopped(&mut stop) => break,
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
