//! Typed payloads of the webhook events this project acts on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::SessionStatus;
use crate::model::lenient::optional_whole_number;

/// The payload of a webhook, typed by its `event` name. Events without a typed form are kept
/// raw in [`EventPayload::Other`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventPayload {
    /// `session.status`.
    SessionStatus(SessionStatusChange),
    /// `message`: an incoming message.
    Message(Box<MessageEvent>),
    /// `message.any`: any message, also those this account sent.
    MessageAny(Box<MessageEvent>),
    /// `message.ack`: a sent message's delivery state moved.
    MessageAck(MessageAckEvent),
    /// `state.change`: the engine's internal state (not the session status).
    StateChange(StateChange),
    /// `engine.event` (newer servers): a low-level engine event such as a disconnect reason.
    EngineEvent(EngineEvent),
    /// Any other event, payload as received.
    Other(Value),
}

/// `session.status`: `{name, status}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatusChange {
    /// The session name.
    pub name: String,
    /// The new status.
    pub status: SessionStatus,
}

/// `message` and `message.any`: the message fields this project uses.
///
/// `id`, `from`, `fromMe` and `hasMedia` are required: WAHA always sends them, and a default
/// would pass for data. The `Option` fields may be absent or `null` (engines leave `to`,
/// `participant`, `body` and `ack` out or `null`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    /// The message id (also the key for dropping duplicates).
    pub id: String,
    /// When it was sent, Unix seconds.
    #[serde(
        default,
        deserialize_with = "optional_whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<u64>,
    /// The chat it came from (or, when sent by this account, the chat it went to). Required:
    /// a payload without it is a decode error naming `payload.from`.
    pub from: String,
    /// Whether this account sent it. Required, like `from` and `hasMedia`: WAHA always sends
    /// it, and an invented `false` would make an outgoing message look incoming.
    pub from_me: bool,
    /// The recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// Groups: the member who sent it.
    #[serde(default)]
    pub participant: Option<String>,
    /// The text (or caption).
    #[serde(default)]
    pub body: Option<String>,
    /// Whether it has media. Required.
    pub has_media: bool,
    /// The media descriptor, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Value>,
    /// The delivery state, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<MessageAck>,
    /// The message it replies to, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Value>,
}

/// `message.ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAckEvent {
    /// The message id.
    pub id: String,
    /// Sender.
    #[serde(default)]
    pub from: Option<String>,
    /// Recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// Groups: the member the ack is about.
    #[serde(default)]
    pub participant: Option<String>,
    /// Whether this account sent the message. Required.
    pub from_me: bool,
    /// The delivery state.
    pub ack: MessageAck,
    /// WAHA's name for it (`READ`, ...).
    #[serde(default)]
    pub ack_name: Option<String>,
}

/// A message's delivery state (`ack`), ordered: a state only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "i64", into = "i64")]
pub enum MessageAck {
    /// -1: failed.
    Error,
    /// 0: not yet at the server.
    Pending,
    /// 1: at the server.
    Server,
    /// 2: at the device.
    Device,
    /// 3: read.
    Read,
    /// 4: played (voice, video).
    Played,
    /// Any other number.
    Other(i64),
}

impl MessageAck {
    /// Whether an ack `new` that arrives after `old` replaces it. Acks only move forward, along
    /// one total order:
    ///
    /// `Pending (0) < Error (-1) < Server (1) < Device (2) < Read (3) < Played (4) < Other(n > 4)`
    ///
    /// - `Error` ranks just above `Pending`: a message that never reached the server can fail,
    ///   but once the server or a device has it, a late `Error` is not believed; and a positive
    ///   ack after `Error` is evidence the message went through after all, so it replaces it.
    /// - `Other(n)` with `n > 4` (a state newer than this crate) ranks above `Played`, by its
    ///   number; `Other(n)` with `n < -1` (an unknown failure) ranks as `Error`.
    /// - An equal rank never supersedes: a duplicate changes nothing.
    ///
    /// ```
    /// use waha_client::webhook::MessageAck;
    /// assert!(MessageAck::supersedes(MessageAck::Server, MessageAck::Read));
    /// assert!(!MessageAck::supersedes(MessageAck::Read, MessageAck::Device));
    /// assert!(!MessageAck::supersedes(MessageAck::Device, MessageAck::Error));
    /// assert!(MessageAck::supersedes(MessageAck::Error, MessageAck::Server));
    /// ```
    pub fn supersedes(old: Self, new: Self) -> bool {
        new.rank() > old.rank()
    }

    /// The position in the order [`supersedes`](Self::supersedes) documents: the ack number
    /// doubled, so that every failure (`-1` and below) fits between `Pending` and `Server`.
    fn rank(self) -> i128 {
        match i64::from(self) {
            failure if failure < 0 => 1,
            state => i128::from(state) * 2,
        }
    }
}

impl From<i64> for MessageAck {
    fn from(value: i64) -> Self {
        match value {
            -1 => Self::Error,
            0 => Self::Pending,
            1 => Self::Server,
            2 => Self::Device,
            3 => Self::Read,
            4 => Self::Played,
            other => Self::Other(other),
        }
    }
}

impl From<MessageAck> for i64 {
    fn from(ack: MessageAck) -> Self {
        match ack {
            MessageAck::Error => -1,
            MessageAck::Pending => 0,
            MessageAck::Server => 1,
            MessageAck::Device => 2,
            MessageAck::Read => 3,
            MessageAck::Played => 4,
            MessageAck::Other(other) => other,
        }
    }
}

/// `state.change`: the engine state, plus whatever else the engine sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The state, e.g. `CONNECTED`, `CONFLICT`.
    #[serde(default)]
    pub state: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `engine.event`: the engine's own event name and data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineEvent {
    /// The engine's event name.
    #[serde(default)]
    pub event: Option<String>,
    /// Its data, as sent.
    #[serde(default)]
    pub data: Value,
}
