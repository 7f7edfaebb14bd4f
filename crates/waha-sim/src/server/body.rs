//! The request body of WAHA's POST and PUT routes: read within axum's size limit (2 MiB by
//! default, with or without a `Content-Length`) and parsed as a JSON object, answering in
//! NestJS's shapes when either step fails.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::wire::{ApiError, parse_body};

/// A JSON object body (an empty body counts as `{}`).
pub(crate) struct JsonObject(pub(crate) Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    // What Express's body parser answers, wrapped by NestJS. The rest of the
                    // body was never read, so the connection cannot carry another request:
                    // say so, or a client that pools it fails its next request on it.
                    let mut response = ApiError::Message(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request entity too large".to_owned(),
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                } else {
                    ApiError::bad_request(rejection.body_text()).into_response()
                }
            })?;
        parse_body(&bytes)
            .map(Self)
            .map_err(IntoResponse::into_response)
    }
}
