//! The webhook envelope WAHA posts for every event.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::error::WebhookError;
use super::payload::EventPayload;
use super::signature::verify_headers;
use crate::error::WahaError;
use crate::model::lenient::{null_as_default, optional_whole_number};
use crate::model::{Me, ServerVersion};
use crate::response::{decode, decode_value};
use crate::secret::HmacKey;

const OPERATION: &str = "webhook";

/// One webhook delivery: `{event, session, metadata, me, payload, engine, environment}`, plus
/// `id` and `timestamp` on newer servers.
///
/// ```
/// use waha_client::webhook::{EventPayload, WebhookEvent};
/// use waha_client::SessionStatus;
///
/// let body = br#"{"event":"session.status","session":"default","metadata":{"tenant":"t1"},
///   "me":null,"payload":{"name":"default","status":"STARTING"},"engine":"NOWEB",
///   "environment":{"version":"2024.10.8","engine":"NOWEB","tier":"CORE","browser":"/usr/bin/chromium"}}"#;
/// let event = WebhookEvent::from_slice(body)?;
/// assert_eq!(event.metadata["tenant"], "t1");
/// let EventPayload::SessionStatus(change) = event.payload else { panic!("typed payload") };
/// assert_eq!(change.status, SessionStatus::Starting);
/// # Ok::<(), waha_client::webhook::WebhookError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    /// The event id (`evt_<ulid>`, newer servers): the key for dropping duplicates.
    pub id: Option<String>,
    /// When the event happened, Unix milliseconds (newer servers).
    pub timestamp_ms: Option<u64>,
    /// The event name, e.g. `session.status`.
    pub event: String,
    /// The session name. Check it against your own names: anyone can post to a webhook URL.
    pub session: String,
    /// The session's metadata (tenant and chip ids, if you put them there).
    pub metadata: BTreeMap<String, String>,
    /// The logged-in account, when there is one.
    pub me: Option<Me>,
    /// The engine (`WEBJS`, `NOWEB`, `GOWS`).
    pub engine: Option<String>,
    /// The server that sent it.
    pub environment: Option<ServerVersion>,
    /// The payload, typed by `event`.
    pub payload: EventPayload,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    timestamp: Option<u64>,
    event: String,
    session: String,
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    me: Option<Me>,
    #[serde(default)]
    engine: Option<String>,
    #[serde(default)]
    environment: Option<ServerVersion>,
    #[serde(default)]
    payload: Value,
}

impl WebhookEvent {
    /// Parses a webhook body. Verify its signature first ([`WebhookEvent::from_signed`]).
    ///
    /// # Errors
    /// [`WebhookError::Decode`] naming the JSON path that failed (e.g. `payload.status`).
    pub fn from_slice(body: &[u8]) -> Result<Self, WebhookError> {
        let envelope: Envelope = decode(OPERATION, body)?;
        let payload = EventPayload::from_event(&envelope.event, envelope.payload)?;
        Ok(Self {
            id: envelope.id,
            timestamp_ms: envelope.timestamp,
            event: envelope.event,
            session: envelope.session,
            metadata: envelope.metadata,
            me: envelope.me,
            engine: envelope.engine,
            environment: envelope.environment,
            payload,
        })
    }

    /// Verifies `X-Webhook-Hmac` over the raw `body` with `key`, then parses it.
    ///
    /// # Errors
    /// The signature errors of [`verify`](super::verify), then those of
    /// [`WebhookEvent::from_slice`].
    pub fn from_signed(
        key: &HmacKey,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Self, WebhookError> {
        verify_headers(key, headers, body)?;
        Self::from_slice(body)
    }
}

impl EventPayload {
    /// Types `payload` by the event name.
    fn from_event(event: &str, payload: Value) -> Result<Self, WahaError> {
        const PATH: &str = "payload";
        Ok(match event {
            "session.status" => Self::SessionStatus(decode_value(OPERATION, PATH, payload)?),
            "message" => Self::Message(Box::new(decode_value(OPERATION, PATH, payload)?)),
            "message.any" => Self::MessageAny(Box::new(decode_value(OPERATION, PATH, payload)?)),
            "message.ack" => Self::MessageAck(decode_value(OPERATION, PATH, payload)?),
            "state.change" => Self::StateChange(decode_value(OPERATION, PATH, payload)?),
            "engine.event" => Self::EngineEvent(decode_value(OPERATION, PATH, payload)?),
            _ => Self::Other(payload),
        })
    }
}
