//! Sessions as WAHA describes them, and the body that creates one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::SessionConfig;
use super::status::SessionStatus;

/// One session as WAHA reports it (`GET /api/sessions/{name}`, list, create, update, start...).
///
/// The body may carry secrets from the config (WAHA echoes proxy passwords and HMAC keys in
/// clear text); they land in secret types, so `Debug` is safe. `Serialize` writes them out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session name.
    pub name: String,
    /// The current status.
    pub status: SessionStatus,
    /// The logged-in account; `null` or absent until the phone has scanned the QR code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<Me>,
    /// The worker that runs the session (servers that share one database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_worker: Option<String>,
    /// The config; `null` for old Core's built-in `default` session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SessionConfig>,
    /// Engine details from `GET /api/sessions/{name}` (`{}` when the session is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineInfo>,
}

impl SessionInfo {
    /// A session with only a name and a status (handy for fakes and mocks).
    pub fn new(name: impl Into<String>, status: SessionStatus) -> Self {
        Self {
            name: name.into(),
            status,
            me: None,
            assigned_worker: None,
            config: None,
            engine: None,
        }
    }
}

/// The WhatsApp account a session is logged in as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The account id, e.g. `5511999999999@c.us`.
    pub id: String,
    /// The account's display name, when WhatsApp shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_name: Option<String>,
}

impl Me {
    /// An account with an id and a display name.
    pub fn new(id: impl Into<String>, push_name: Option<String>) -> Self {
        Self {
            id: id.into(),
            push_name,
        }
    }
}

/// Engine details of a running session. All fields are optional: `{}` is what a stopped
/// session has, and each engine adds its own fields (kept in `other`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// The engine name (`WEBJS`, `NOWEB`, `GOWS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The engine's internal state, e.g. `CONNECTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Anything else the engine reports.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The body of `POST /api/sessions`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewSession {
    /// The session name (at most 54 characters).
    pub name: String,
    /// The initial config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<SessionConfig>,
    /// Start the session right after creating it. Always sent explicitly: WAHA's documented
    /// default (`true`) and observed default (`false`) differ.
    pub start: bool,
}

impl NewSession {
    /// A stopped session with that name and config.
    pub fn new(name: impl Into<String>, config: SessionConfig) -> Self {
        Self {
            name: name.into(),
            config: Some(config),
            start: false,
        }
    }
}

/// The body of `PUT /api/sessions/{name}`.
#[derive(Serialize)]
pub(crate) struct SessionUpdate<'a> {
    pub(crate) config: &'a SessionConfig,
}
