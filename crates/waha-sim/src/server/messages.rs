//! `/api/sendText`, `/api/sendSeen`, `/api/startTyping`, `/api/stopTyping`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::server::AppState;
use crate::session::SessionStatus;
use crate::session::lifecycle::{Refusal, WORKING};
use crate::state::SimState;
use crate::wire::api_error::{empty, json};
use crate::wire::{ApiError, parse_body, validate_object_strings};

/// `session` defaults to `default`, as in WAHA's request schemas.
fn session_name(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("session") {
        None | Some(Value::Null) => Ok("default".to_owned()),
        Some(Value::String(name)) => Ok(name.clone()),
        Some(_) => Err(ApiError::Validation(vec![
            "session must be a string".to_owned(),
        ])),
    }
}

fn refusal(name: &str, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::WrongStatus { status, expected } => ApiError::UnexpectedStatus {
            session: name.to_owned(),
            status,
            expected,
        },
        _ => ApiError::not_running(name),
    }
}

fn require_working(state: &SimState, name: &str) -> Result<(), ApiError> {
    match state.status_of(name) {
        None | Some(SessionStatus::Stopped) => Err(ApiError::not_running(name)),
        Some(SessionStatus::Working) => Ok(()),
        Some(status) => Err(ApiError::UnexpectedStatus {
            session: name.to_owned(),
            status,
            expected: WORKING,
        }),
    }
}

pub(crate) async fn send_text(State(state): State<AppState>, body: Bytes) -> Response {
    let result = parse_body(&body).and_then(|body| {
        let name = session_name(&body)?;
        let fields = validate_object_strings(&body, &["chatId", "text"])?;
        state
            .send_text(&name, &fields[0], &fields[1])
            .map_err(|r| refusal(&name, r))
    });
    match result {
        Ok(message) => json(StatusCode::CREATED, &message),
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn send_seen(State(state): State<AppState>, body: Bytes) -> Response {
    let result = parse_body(&body).and_then(|body| {
        let name = session_name(&body)?;
        validate_object_strings(&body, &["chatId"])?;
        require_working(&state, &name)
    });
    match result {
        Ok(()) => json(StatusCode::CREATED, &serde_json::json!({})),
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn typing(State(state): State<AppState>, body: Bytes) -> Response {
    let result = parse_body(&body).and_then(|body| {
        let name = session_name(&body)?;
        validate_object_strings(&body, &["chatId"])?;
        require_working(&state, &name)
    });
    match result {
        Ok(()) => empty(StatusCode::CREATED),
        Err(error) => error.into_response(),
    }
}
