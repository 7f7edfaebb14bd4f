//! `/api/{session}/auth/qr` and `/api/{session}/auth/request-code`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use crate::server::AppState;
use crate::server::body::JsonObject;
use crate::server::query::QrFormat;
use crate::session::SessionStatus;
use crate::session::lifecycle::SCAN_QR_CODE;
use crate::state::SimState;
use crate::time_scale::deadline_after;
use crate::wire::api_error::json;
use crate::wire::{ApiError, required_strings};

/// Waits (up to `qr_wait`) for SCAN_QR_CODE; returns the QR value or the error answer.
async fn wait_for_qr(state: &SimState, name: &str) -> Result<String, ApiError> {
    match state.status_of(name) {
        None | Some(SessionStatus::Stopped) => return Err(ApiError::not_running(name)),
        Some(_) => {}
    }
    let deadline = deadline_after(state.settings.scaled(state.settings.timings.qr_wait));
    state
        .wait_until(deadline, |s| {
            !matches!(
                s.status_of(name),
                Some(SessionStatus::Starting | SessionStatus::Working | SessionStatus::Failed)
            )
        })
        .await;
    let sessions = state.sessions();
    match sessions.get(name) {
        None => Err(ApiError::not_running(name)),
        Some(s) if s.status == SessionStatus::Stopped => Err(ApiError::not_running(name)),
        Some(s) => match (&s.qr, s.status) {
            (Some(qr), SessionStatus::ScanQrCode) => Ok(qr.to_string()),
            _ => Err(ApiError::UnexpectedStatus {
                session: name.to_owned(),
                status: s.status,
                expected: SCAN_QR_CODE,
            }),
        },
    }
}

pub(crate) async fn qr(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let value = match wait_for_qr(&state, &name).await {
        Ok(value) => value,
        Err(error) => return error.into_response(),
    };
    if QrFormat::from_query(query.as_deref()) == QrFormat::Raw {
        return json(StatusCode::OK, &json!({ "value": value }));
    }
    let png = match crate::qr::png(&value) {
        Ok(png) => png,
        Err(error) => {
            tracing::error!(%error, "cannot render the QR code");
            return ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                .into_response();
        }
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .is_some_and(|accept| accept.as_bytes() == b"application/json");
    if wants_json {
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        return json(
            StatusCode::OK,
            &json!({ "mimetype": "image/png", "data": data }),
        );
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "image/png")], png).into_response()
}

pub(crate) async fn request_code(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    if let Err(error) = required_strings(&body, ["phoneNumber"]) {
        return error.into_response();
    }
    match wait_for_qr(&state, &name).await {
        Ok(_) => json(
            StatusCode::CREATED,
            &json!({ "code": crate::qr::pairing_code() }),
        ),
        Err(error) => error.into_response(),
    }
}
