//! Sending (paced, at most once per idempotency key) and message status.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use session_supervisor::SendRequest;

use crate::service::AppState;
use crate::service::auth::TenantAuth;
use crate::service::error::ApiError;
use crate::service::extract::{ApiJson, ApiQuery, ChipPath, TextPath};
use crate::service::views::{outbox_json, receipt_json};

/// The header that carries a send's idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn yes() -> bool {
    true
}

/// `POST /v1/chips/{chip}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    /// The chat, e.g. `5511999999999@c.us`.
    chat: String,
    /// The text.
    text: String,
    /// The anti-ban choreography (seen, typing for a time that grows with the text) before
    /// the send (default `true`).
    #[serde(default = "yes")]
    choreography: bool,
    /// How long the call may wait for the pacer (default 0: a pacer refusal answers 429 at
    /// once).
    #[serde(default)]
    max_wait_ms: u64,
}

/// The `Idempotency-Key` header (required; the supervisor checks its shape).
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "an Idempotency-Key header is required: a retry of the same send uses the same key",
        ));
    };
    value.to_str().map(str::to_owned).map_err(|_| {
        ApiError::invalid_input("the Idempotency-Key must be printable ASCII")
            .with("field", "Idempotency-Key")
    })
}

/// `POST /v1/chips/{chip}/messages`: sends a text, paced, at most once per key. 201 when it
/// was sent now; 200 with `replayed: true` when the key was used before for the same request
/// (nothing is sent again); 409 `idempotency_conflict` when it was used for another one.
pub(crate) async fn send_text(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let max_wait = Duration::from_millis(body.max_wait_ms);
    let limit = state.inner.options.max_send_wait;
    if max_wait > limit {
        let max_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        return Err(
            ApiError::invalid_input(format!("max_wait_ms must be at most {max_ms}"))
                .with("field", "max_wait_ms")
                .with("max", max_ms),
        );
    }
    let mut request = SendRequest::new(body.chat, body.text, key).with_max_wait(max_wait);
    if !body.choreography {
        request = request.with_choreography(None);
    }
    let receipt = state
        .inner
        .supervisor
        .send_text(&tenant, &chip, request)
        .await?;
    let status = if receipt.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(receipt_json(&receipt))).into_response())
}

/// `GET /v1/messages/{message_id}`: a send by WAHA's message id.
pub(crate) async fn message_by_id(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    TextPath(message_id): TextPath,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .inner
        .supervisor
        .outbox()
        .by_message_id(&tenant, &message_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("message_not_found", "no message of this tenant has this id")
        })?;
    Ok(Json(outbox_json(&record)))
}

/// `GET /v1/messages?idempotency_key=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageQuery {
    idempotency_key: Option<String>,
}

/// `GET /v1/messages?idempotency_key=`: a send by its idempotency key.
pub(crate) async fn message_by_key(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(key) = query.idempotency_key.filter(|key| !key.is_empty()) else {
        return Err(
            ApiError::invalid_input("the idempotency_key query parameter is required")
                .with("field", "idempotency_key"),
        );
    };
    let record = state
        .inner
        .supervisor
        .outbox()
        .get(&tenant, &key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "message_not_found",
                "no message of this tenant has this idempotency key",
            )
        })?;
    Ok(Json(outbox_json(&record)))
}
