//! The simulator's own reading of WAHA's request and response bodies (deliberately not shared
//! with `waha-client`: two independent readings of the contract catch each other's mistakes).

pub(crate) mod api_error;
mod config;
mod responses;
mod validation;

pub(crate) use api_error::ApiError;
pub use config::{
    ClientConfig, CustomHeader, HmacConfig, NowebConfig, NowebStoreConfig, ProxyConfig,
    RetriesConfig, RetryPolicy, SessionConfig, WebhookConfig,
};
pub(crate) use responses::{Environment, SessionInfoBody};
pub(crate) use validation::{parse_body, required_strings, validate_create, validate_update};

/// The webhook event names the simulator accepts in `WebhookConfig.events` (WAHA's list; `*`
/// is refused, as the contract observed).
pub const KNOWN_EVENTS: &[&str] = &[
    "session.status",
    "message",
    "message.reaction",
    "message.any",
    "message.ack",
    "message.waiting",
    "message.revoked",
    "message.edited",
    "state.change",
    "group.join",
    "group.leave",
    "group.v2.join",
    "group.v2.leave",
    "group.v2.update",
    "group.v2.participants",
    "presence.update",
    "poll.vote",
    "poll.vote.failed",
    "chat.archive",
    "call.received",
    "call.accepted",
    "call.rejected",
    "label.upsert",
    "label.deleted",
    "label.chat.added",
    "label.chat.deleted",
    "engine.event",
    "event.response",
    "event.response.failed",
];
