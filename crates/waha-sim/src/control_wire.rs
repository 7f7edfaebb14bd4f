//! The bodies of the `/_sim/...` control routes: one definition, read by the server and
//! written by [`crate::SimControlClient`].

use serde::{Deserialize, Serialize};

use crate::session::DisconnectReason;

/// `POST /_sim/sessions/{name}/scan`: log in as `id` (`<digits>@c.us`), or as a generated
/// number when absent. `pushName` defaults to the session's name.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScanRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) push_name: Option<String>,
}

/// `POST /_sim/sessions/{name}/disconnect`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DisconnectRequest {
    pub(crate) reason: DisconnectReason,
}

/// `POST /_sim/sessions/{name}/messages`: a message arrives.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IncomingMessage {
    pub(crate) from: String,
    pub(crate) text: String,
}

/// The answer to [`IncomingMessage`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MessageCreated {
    pub(crate) id: String,
}

/// `POST /_sim/messages/{id}/ack`: the server also takes the level's number (`3`).
#[derive(Debug, Serialize)]
pub(crate) struct AckRequest {
    pub(crate) ack: &'static str,
}

/// `POST /_sim/booting`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BootingRequest {
    pub(crate) duration_ms: u64,
}
