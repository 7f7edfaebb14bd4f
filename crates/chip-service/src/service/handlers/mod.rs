//! The route handlers.

pub(crate) mod admin;
pub(crate) mod chips;
pub(crate) mod dashboard;
pub(crate) mod messages;
pub(crate) mod ops;

use std::time::Duration;

use axum::Json;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// A JSON answer that carries a secret (a token, a QR value, a pairing code): never cached.
pub(crate) fn no_store(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `?wait_secs=` of the long admin calls.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    wait_secs: Option<u64>,
}

impl WaitQuery {
    /// The wait asked for, else `default`; at most `max`.
    pub(crate) fn wait(&self, default: Duration, max: Duration) -> Result<Duration, ApiError> {
        match self.wait_secs {
            None => Ok(default),
            Some(secs) if Duration::from_secs(secs) <= max => Ok(Duration::from_secs(secs)),
            Some(_) => Err(ApiError::invalid_input(format!(
                "wait_secs must be at most {}",
                max.as_secs()
            ))
            .with("field", "wait_secs")
            .with("max", max.as_secs())),
        }
    }
}
