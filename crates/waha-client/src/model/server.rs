//! Server-level answers: health, version, status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient::whole_number;

/// The answer of `health`: either `/health`'s report or, on old Core (which answers `/health`
/// with 422), the fact that `/ping` answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerHealth {
    /// Which endpoint answered.
    pub source: HealthSource,
    /// `ok` (or whatever `/health` reported as its `status`).
    pub status: String,
    /// `/health`'s `details` (per-check results); empty for the `/ping` fallback.
    pub details: BTreeMap<String, Value>,
}

/// Which endpoint a [`ServerHealth`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthSource {
    /// `GET /health` answered.
    Health,
    /// `GET /health` is not available on this server (old Core); `GET /ping` answered.
    Ping,
}

/// `/health`'s body.
#[derive(Deserialize)]
pub(crate) struct HealthBody {
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::null_as_default")]
    pub(crate) details: BTreeMap<String, Value>,
}

/// `GET /api/server/version`, also the `environment` of every webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// WAHA's version, e.g. `2024.10.8`.
    pub version: String,
    /// The default engine (`WEBJS`, `NOWEB`, `GOWS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// `CORE` or `PLUS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The browser binary (WEBJS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
}

/// `GET /api/server/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// When the server started, in Unix milliseconds.
    #[serde(rename = "startTimestamp", deserialize_with = "whole_number")]
    pub start_timestamp_ms: u64,
    /// How long the server has been up, in milliseconds.
    #[serde(rename = "uptime", deserialize_with = "whole_number")]
    pub uptime_ms: u64,
    /// The worker answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerInfo>,
}

impl ServerStatus {
    /// The worker id the server reports (its `WAHA_WORKER_ID`), or `None` when it reports none:
    /// no `worker` object, or an empty id (a server started without the variable; old Core
    /// versions do not report one).
    pub fn worker_id(&self) -> Option<&str> {
        self.worker
            .as_ref()
            .map(|worker| worker.id.as_str())
            .filter(|id| !id.is_empty())
    }
}

/// The worker of a server (`WAHA_WORKER_ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker id (empty when not set).
    #[serde(default)]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(body: &str) -> ServerStatus {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn the_worker_id_is_reported_only_when_the_server_has_one() {
        let named = status(r#"{"startTimestamp":1,"uptime":2,"worker":{"id":"cf-acme-0"}}"#);
        assert_eq!(named.worker_id(), Some("cf-acme-0"));
        let empty = status(r#"{"startTimestamp":1,"uptime":2,"worker":{"id":""}}"#);
        assert_eq!(empty.worker_id(), None);
        let absent = status(r#"{"startTimestamp":1,"uptime":2}"#);
        assert_eq!(absent.worker_id(), None);
    }
}
