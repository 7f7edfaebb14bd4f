//! The control API over HTTP, under `/_sim` (not a WAHA path), for simulators in containers.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::faults::Faults;
use crate::server::body::JsonObject;
use crate::server::{AppState, session_info};
use crate::session::lifecycle::Refusal;
use crate::session::{AckLevel, Me, SessionView};
use crate::state::SimState;
use crate::wire::api_error::json;
use crate::wire::{ApiError, required_strings};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/_sim/sessions/{session}/scan", post(scan))
        .route("/_sim/sessions/{session}/fail", post(fail))
        .route("/_sim/sessions/{session}/disconnect", post(disconnect))
        .route("/_sim/sessions/{session}/messages", post(receive))
        .route("/_sim/messages/{id}/ack", post(ack))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/booting", post(booting))
        .route("/_sim/crash", post(crash))
        .route("/_sim/stats", get(stats))
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

async fn scan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let me = match (body.get("id"), body.get("pushName")) {
        (None, None) => Ok(None),
        (Some(Value::String(id)), push_name) => Ok(Some(Me {
            id: id.clone(),
            push_name: push_name
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_owned(),
        })),
        _ => Err(ApiError::Validation(vec!["id must be a string".to_owned()])),
    };
    let result = me.and_then(|me| state.scan(&name, me).map_err(refused));
    match result {
        Ok(view) => session_info(&state, StatusCode::CREATED, &view, false),
        Err(error) => error.into_response(),
    }
}

async fn fail(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    interrupt(&state, &name, &body, SimState::fail)
}

async fn disconnect(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    interrupt(&state, &name, &body, SimState::disconnect)
}

/// `fail` and `disconnect`: `{reason}` in, the session's `SessionInfo` out.
fn interrupt(
    state: &SimState,
    name: &str,
    body: &Map<String, Value>,
    apply: fn(&SimState, &str, &str) -> Result<SessionView, Refusal>,
) -> Response {
    let result = required_strings(body, ["reason"])
        .and_then(|[reason]| apply(state, name, &reason).map_err(refused));
    match result {
        Ok(view) => session_info(state, StatusCode::CREATED, &view, false),
        Err(error) => error.into_response(),
    }
}

async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let result = required_strings(&body, ["from", "text"])
        .and_then(|[from, text]| state.receive(&name, &from, &text).map_err(refused));
    match result {
        Ok(id) => json(StatusCode::CREATED, &json!({ "id": id })),
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
    let faults: Faults = match serde_json::from_value(Value::Object(body)) {
        Ok(faults) => faults,
        Err(e) => return ApiError::Validation(vec![e.to_string()]).into_response(),
    };
    if let Err(e) = faults.validate() {
        return ApiError::Validation(vec![e.to_string()]).into_response();
    }
    state.set_faults(faults.clone());
    json(StatusCode::OK, &faults)
}

async fn booting(State(state): State<AppState>, JsonObject(body): JsonObject) -> Response {
    let result = body
        .get("durationMs")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            ApiError::Validation(vec!["durationMs must be a non-negative integer".to_owned()])
        });
    match result {
        Ok(ms) => {
            state.set_booting(Some(Duration::from_millis(ms)));
            json(StatusCode::CREATED, &json!({ "booting": ms > 0 }))
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
    json(
        StatusCode::OK,
        &json!({
            "sessions": state.session_count(),
            "pendingTimers": state.scheduler.pending(),
            "webhooks": state.webhook_counters.snapshot(),
        }),
    )
}
