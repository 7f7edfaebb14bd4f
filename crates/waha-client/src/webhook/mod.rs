//! Webhooks: the envelope WAHA posts, typed payloads, and HMAC-SHA512 signature checks.
//!
//! Verify first, over the exact bytes received, then parse:
//!
//! ```
//! use waha_client::HmacKey;
//! use waha_client::webhook::{self, EventPayload, WebhookEvent};
//!
//! let key = HmacKey::new("my-secret-key")?;
//! let body = br#"{"event":"message.ack","session":"s1","payload":{"id":"m1","from":"5511999999999@c.us",
//!     "to":"5522999999999@c.us","fromMe":true,"ack":3,"ackName":"READ"}}"#;
//! let signature = webhook::sign(&key, body); // what WAHA puts in X-Webhook-Hmac
//! webhook::verify(&key, body, Some(&signature), Some("sha512"))?;
//! let event = WebhookEvent::from_slice(body)?;
//! assert!(matches!(event.payload, EventPayload::MessageAck(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod event;
mod payload;
mod signature;

pub use error::WebhookError;
pub use event::WebhookEvent;
pub use payload::{
    EngineEvent, EventPayload, MessageAck, MessageAckEvent, MessageEvent, SessionStatusChange,
    StateChange,
};
pub use signature::{ALGORITHM_HEADER, SIGNATURE_HEADER, sign, verify, verify_headers};

#[cfg(test)]
mod tests;
