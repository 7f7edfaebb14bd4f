//! The control API over HTTP, under `/_sim` (not a WAHA path), for simulators in containers.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::control_wire::{
    BootingRequest, DisconnectRequest, IncomingMessage, MessageCreated, ScanRequest,
};
use crate::faults::Faults;
use crate::server::body::JsonObject;
use crate::server::{AppState, session_info};
use crate::session::lifecycle::Refusal;
use crate::session::{AckLevel, Me, SessionView};
use crate::wire::ApiError;
use crate::wire::api_error::json;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/_sim/sessions/{session}", get(session))
        .route("/_sim/sessions/{session}/scan", post(scan))
        .route("/_sim/sessions/{session}/fail", post(fail))
        .route("/_sim/sessions/{session}/disconnect", post(disconnect))
        .route("/_sim/sessions/{session}/silence", post(silence))
        .route("/_sim/sessions/{session}/messages", post(receive))
        .route("/_sim/messages/{id}/ack", post(ack))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/booting", post(booting))
        .route("/_sim/crash", post(crash))
        .route("/_sim/stats", get(stats))
        .route("/_sim/calls", get(calls).delete(clear_calls))
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::WrongStatus { status, expected } => ApiError::Message(
            StatusCode::CONFLICT,
            format!(
                "session is {status}, this action needs {}",
                expected.join(" or ")
            ),
        ),
        Refusal::MessageNotFound => ApiError::not_found("Message not found"),
        _ => ApiError::not_found("Session not found"),
    }
}

/// Reads a control body into its type; any mismatch is a 400 with serde's message.
fn parse<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::Validation(vec![e.to_string()]))
}

/// A control action's answer: the session's `SessionInfo` (201), or the refusal.
fn answer(state: &AppState, result: Result<SessionView, ApiError>) -> Response {
    match result {
        Ok(view) => session_info(state, StatusCode::CREATED, &view, false),
        Err(error) => error.into_response(),
    }
}

async fn session(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.view(&name) {
        Some(view) => session_info(&state, StatusCode::OK, &view, false),
        None => ApiError::not_found("Session not found").into_response(),
    }
}

async fn scan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let me = parse::<ScanRequest>(body).and_then(|request| match request {
        ScanRequest {
            id: None,
            push_name: None,
        } => Ok(None),
        ScanRequest {
            id: Some(id),
            push_name,
        } => Ok(Some(Me {
            id,
            push_name: push_name.unwrap_or_else(|| name.clone()),
        })),
        ScanRequest { id: None, .. } => {
            Err(ApiError::Validation(vec!["id must be a string".to_owned()]))
        }
    });
    let result = me.and_then(|me| state.scan(&name, me).map_err(refused));
    answer(&state, result)
}

async fn fail(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = state.fail(&name).map_err(refused);
    answer(&state, result)
}

async fn disconnect(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let result = parse::<DisconnectRequest>(body)
        .and_then(|request| state.disconnect(&name, request.reason).map_err(refused));
    answer(&state, result)
}

async fn silence(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = state.silence(&name).map_err(refused);
    answer(&state, result)
}

async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let result = parse::<IncomingMessage>(body).and_then(|message| {
        state
            .receive(&name, &message.from, &message.text)
            .map_err(refused)
    });
    match result {
        Ok(id) => json(StatusCode::CREATED, &MessageCreated { id }),
        Err(error) => error.into_response(),
    }
}

async fn ack(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let level = match body.get("ack") {
        Some(Value::Number(n)) => AckLevel::parse(&n.to_string()),
        Some(Value::String(s)) => AckLevel::parse(s),
        _ => None,
    };
    let result = level
        .ok_or_else(|| {
            ApiError::Validation(vec![
                "ack must be one of -1..4 or ERROR, PENDING, SERVER, DEVICE, READ, PLAYED"
                    .to_owned(),
            ])
        })
        .and_then(|level| state.ack(&id, level).map_err(refused));
    match result {
        Ok(()) => json(StatusCode::CREATED, &json!({})),
        Err(error) => error.into_response(),
    }
}

async fn get_faults(State(state): State<AppState>) -> Response {
    json(StatusCode::OK, &state.faults())
}

async fn put_faults(State(state): State<AppState>, JsonObject(body): JsonObject) -> Response {
    let faults: Faults = match parse(body) {
        Ok(faults) => faults,
        Err(error) => return error.into_response(),
    };
    if let Err(e) = faults.validate() {
        return ApiError::Validation(vec![e.to_string()]).into_response();
    }
    state.set_faults(faults);
    // The faults now in force (with the seed in use).
    json(StatusCode::OK, &state.faults())
}

async fn booting(State(state): State<AppState>, JsonObject(body): JsonObject) -> Response {
    match parse::<BootingRequest>(body) {
        Ok(request) => {
            state.set_booting(Some(Duration::from_millis(request.duration_ms)));
            json(
                StatusCode::CREATED,
                &json!({ "booting": request.duration_ms > 0 }),
            )
        }
        Err(error) => error.into_response(),
    }
}

async fn crash(State(state): State<AppState>) -> Response {
    // Answer first, then crash.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state.crash();
    });
    json(StatusCode::ACCEPTED, &json!({ "crashing": true }))
}

async fn stats(State(state): State<AppState>) -> Response {
    json(StatusCode::OK, &state.stats())
}

/// `GET /_sim/calls[?session=<name>]`.
async fn calls(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let session = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "session")
        .map(|(_, value)| value.into_owned());
    json(StatusCode::OK, &state.calls.snapshot(session.as_deref()))
}

async fn clear_calls(State(state): State<AppState>) -> Response {
    state.calls.clear();
    json(StatusCode::OK, &json!({}))
}
