//! `/api/sendText`, `/api/sendSeen`, `/api/startTyping`, `/api/stopTyping`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::server::body::JsonObject;
use crate::server::{AppState, about_session};
use crate::session::SessionStatus;
use crate::session::lifecycle::{Refusal, WORKING};
use crate::state::SimState;
use crate::wire::api_error::{empty, json};
use crate::wire::{ApiError, required_strings};

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

pub(crate) async fn send_text(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Response {
    let name = match session_name(&body) {
        Ok(name) => name,
        Err(error) => return error.into_response(),
    };
    let result = required_strings(&body, ["chatId", "text"]).and_then(|[chat_id, text]| {
        state
            .send_text(&name, &chat_id, &text)
            .map_err(|r| refusal(&name, r))
    });
    let response = match result {
        Ok(message) => json(StatusCode::CREATED, &message),
        Err(error) => error.into_response(),
    };
    about_session(response, Some(&name))
}

/// What `sendSeen` and the typing routes check: a chat and a WORKING session.
fn chat_action(state: &SimState, body: &Map<String, Value>) -> Result<(), ApiError> {
    let name = session_name(body)?;
    required_strings(body, ["chatId"])?;
    require_working(state, &name)
}

pub(crate) async fn send_seen(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Response {
    let response = match chat_action(&state, &body) {
        Ok(()) => json(StatusCode::CREATED, &serde_json::json!({})),
        Err(error) => error.into_response(),
    };
    about_session(response, session_name(&body).ok().as_deref())
}

pub(crate) async fn typing(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Response {
    let response = match chat_action(&state, &body) {
        Ok(()) => empty(StatusCode::CREATED),
        Err(error) => error.into_response(),
    };
    about_session(response, session_name(&body).ok().as_deref())
}
