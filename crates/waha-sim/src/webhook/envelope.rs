//! The webhook envelope, serialised in WAHA's field order.

use std::sync::Arc;

use serde::Serialize;

use crate::session::{Me, SessionStatus};
use crate::wire::{Environment, SessionConfig};

/// `session.status` payload.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StatusPayload {
    pub(crate) name: String,
    pub(crate) status: SessionStatus,
}

/// A message (`message`, `message.any`, and the `sendText` answer).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessagePayload {
    pub(crate) id: String,
    pub(crate) timestamp: u64,
    pub(crate) from: String,
    pub(crate) from_me: bool,
    pub(crate) to: String,
    pub(crate) body: String,
    pub(crate) has_media: bool,
    pub(crate) ack: i8,
    pub(crate) ack_name: &'static str,
}

/// `message.ack` payload.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AckPayload {
    pub(crate) id: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) participant: Option<String>,
    pub(crate) from_me: bool,
    pub(crate) ack: i8,
    pub(crate) ack_name: &'static str,
}

/// `engine.event` payload: `{"event":"<engine's event name>","data":<engine's data>}`, in
/// each engine's own shape (see [`crate::DisconnectReason`]).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EngineEventPayload {
    pub(crate) event: &'static str,
    pub(crate) data: serde_json::Value,
}

/// `state.change` payload (WEBJS): `{"state":"CONFLICT"}`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StateChangePayload {
    pub(crate) state: &'static str,
}

/// Any payload.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EventPayload {
    Status(StatusPayload),
    Message(MessagePayload),
    Ack(AckPayload),
    Engine(EngineEventPayload),
    State(StateChangePayload),
}

/// An event on its way to the dispatcher, with a snapshot of the session's config and account
/// as they were when it happened.
#[derive(Debug)]
pub(crate) struct OutgoingEvent {
    pub(crate) id: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) session: String,
    pub(crate) event: &'static str,
    pub(crate) payload: EventPayload,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) me: Option<Me>,
    /// The faults in force when the event happened (they decide drop/duplicate/reorder).
    pub(crate) faults: crate::faults::Faults,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    timestamp: u64,
    event: &'a str,
    session: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a std::collections::BTreeMap<String, String>>,
    me: Option<&'a Me>,
    payload: &'a EventPayload,
    engine: &'a str,
    environment: &'a Environment,
}

impl OutgoingEvent {
    /// The exact bytes POSTed (and signed).
    pub(crate) fn body(&self, environment: &Environment) -> Vec<u8> {
        let envelope = Envelope {
            id: &self.id,
            timestamp: self.timestamp_ms,
            event: self.event,
            session: &self.session,
            metadata: self.config.metadata.as_ref(),
            me: self.me.as_ref(),
            payload: &self.payload,
            engine: environment.engine,
            environment,
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_field_order_matches_waha() {
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("tenant".to_owned(), "t1".to_owned());
        let event = OutgoingEvent {
            id: "evt_1".into(),
            timestamp_ms: 7,
            session: "default".into(),
            event: "session.status",
            payload: EventPayload::Status(StatusPayload {
                name: "default".into(),
                status: SessionStatus::Starting,
            }),
            config: Arc::new(SessionConfig {
                metadata: Some(metadata),
                ..SessionConfig::default()
            }),
            me: None,
            faults: crate::faults::Faults::none(),
        };
        let env = Environment {
            version: "2024.10.8".into(),
            engine: "NOWEB",
            tier: "CORE".into(),
            browser: Some("/usr/bin/chromium".into()),
        };
        assert_eq!(
            String::from_utf8(event.body(&env)).unwrap(),
            r#"{"id":"evt_1","timestamp":7,"event":"session.status","session":"default","metadata":{"tenant":"t1"},"me":null,"payload":{"name":"default","status":"STARTING"},"engine":"NOWEB","environment":{"version":"2024.10.8","engine":"NOWEB","tier":"CORE","browser":"/usr/bin/chromium"}}"#
        );
    }
}
