//! Success bodies whose field order matters (serde_json's `json!` would sort keys).

use serde::Serialize;

use crate::session::{Me, SessionStatus};
use crate::wire::SessionConfig;

/// `GET /api/server/version` and the webhook `environment`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Environment {
    pub(crate) version: String,
    pub(crate) engine: &'static str,
    pub(crate) tier: String,
    pub(crate) browser: Option<String>,
}

/// `SessionInfo` (plus `engine` on `GET /api/sessions/{name}`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionInfoBody<'a> {
    pub(crate) name: &'a str,
    pub(crate) status: SessionStatus,
    pub(crate) config: Option<&'a SessionConfig>,
    pub(crate) me: Option<&'a Me>,
    pub(crate) assigned_worker: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) engine: Option<serde_json::Value>,
}
