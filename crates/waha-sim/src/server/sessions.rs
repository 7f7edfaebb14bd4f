//! `/api/sessions...`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::server::body::JsonObject;
use crate::server::query::optional_bool;
use crate::server::{AppState, about_session, session_info, slow_stop};
use crate::session::lifecycle::Refusal;
use crate::wire::api_error::{empty, json};
use crate::wire::{ApiError, validate_create, validate_update};

const NOT_FOUND: &str = "Session not found";

pub(crate) async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let all = match optional_bool(query.as_deref(), "all") {
        Ok(all) => all.unwrap_or(false),
        Err(error) => return error.into_response(),
    };
    let views = state.list(all);
    let bodies: Vec<_> = views
        .iter()
        .map(|view| crate::wire::SessionInfoBody {
            name: &view.name,
            status: view.status,
            config: view.config.as_deref(),
            me: view.me.as_ref(),
            assigned_worker: &state.settings.worker_id,
            engine: None,
        })
        .collect();
    json(StatusCode::OK, &bodies)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Response {
    let request = match validate_create(&body) {
        Ok(request) => request,
        Err(error) => {
            let named = body.get("name").and_then(serde_json::Value::as_str);
            return about_session(error.into_response(), named);
        }
    };
    let wanted = request.name.clone().unwrap_or_default();
    match state.create(request.name, request.config, request.start) {
        Ok(view) => about_session(
            session_info(&state, StatusCode::CREATED, &view, false),
            Some(&view.name),
        ),
        Err(_) => about_session(
            ApiError::unprocessable(format!(
                "Session '{wanted}' already exists. Use PUT to update it."
            ))
            .into_response(),
            Some(&wanted),
        ),
    }
}

pub(crate) async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.view(&name) {
        Some(view) => session_info(&state, StatusCode::OK, &view, true),
        None => ApiError::not_found(NOT_FOUND).into_response(),
    }
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let config = match validate_update(&body) {
        Ok(config) => config,
        Err(error) => return error.into_response(),
    };
    match state.view(&name) {
        None => return ApiError::not_found(NOT_FOUND).into_response(),
        Some(view) if view.status != crate::session::SessionStatus::Stopped => {
            slow_stop(&state).await;
        }
        Some(_) => {}
    }
    match state.update(&name, config) {
        Ok(view) => session_info(&state, StatusCode::OK, &view, false),
        Err(_) => ApiError::not_found(NOT_FOUND).into_response(),
    }
}

pub(crate) async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if state.view(&name).is_some() {
        slow_stop(&state).await;
    }
    state.delete(&name);
    empty(StatusCode::OK)
}

pub(crate) async fn start(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.start(&name) {
        Ok(view) => session_info(&state, StatusCode::CREATED, &view, false),
        Err(Refusal::AlreadyStarted) => {
            ApiError::unprocessable(format!("Session '{name}' is already started.")).into_response()
        }
        Err(_) => ApiError::not_found(NOT_FOUND).into_response(),
    }
}

pub(crate) async fn stop(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if state.view(&name).is_some() {
        slow_stop(&state).await;
    }
    match state.stop(&name) {
        Some(view) => session_info(&state, StatusCode::CREATED, &view, false),
        None => empty(StatusCode::CREATED),
    }
}

pub(crate) async fn restart(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if state.view(&name).is_none() {
        return ApiError::not_found(NOT_FOUND).into_response();
    }
    slow_stop(&state).await;
    match state.restart(&name) {
        Ok(view) => session_info(&state, StatusCode::CREATED, &view, false),
        Err(_) => ApiError::not_found(NOT_FOUND).into_response(),
    }
}

pub(crate) async fn logout(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.logout(&name) {
        Ok(view) => session_info(&state, StatusCode::CREATED, &view, false),
        Err(_) => ApiError::not_found(NOT_FOUND).into_response(),
    }
}

pub(crate) async fn me(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.view(&name) {
        Some(view) if view.status != crate::session::SessionStatus::Stopped => match &view.me {
            Some(me) => json(StatusCode::OK, me),
            None => empty(StatusCode::OK),
        },
        _ => ApiError::not_running(&name).into_response(),
    }
}
