//! Webhook deliveries: the envelope, its signature, the retry schedule and the dispatcher.

mod dispatcher;
mod envelope;
mod retry;
mod signature;
mod stats;

pub(crate) use dispatcher::run as run_dispatcher;
pub(crate) use envelope::{
    AckPayload, EngineEventPayload, EventPayload, MessagePayload, OutgoingEvent,
    StateChangePayload, StatusPayload,
};
pub(crate) use stats::WebhookCounters;
pub use stats::WebhookStats;
