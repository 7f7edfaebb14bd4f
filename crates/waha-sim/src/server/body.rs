//! The request body of WAHA's POST and PUT routes: read within axum's size limit (2 MiB by
//! default, with or without a `Content-Length`) and parsed as a JSON object, answering in
//! NestJS's shapes when either step fails.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::wire::{ApiError, parse_body};

/// A JSON object body (an empty body counts as `{}`).
pub(crate) struct JsonObject(pub(crate) Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    // What Express's body parser answers, wrapped by NestJS.
                    ApiError::Message(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request entity too large".to_owned(),
                    )
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        parse_body(&bytes).map(Self)
    }
}
