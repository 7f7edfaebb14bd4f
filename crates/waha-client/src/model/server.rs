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

/// The worker of a server (`WAHA_WORKER_ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker id (empty when not set).
    #[serde(default)]
    pub id: String,
}
