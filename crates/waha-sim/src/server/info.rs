//! `/ping`, `/health`, `/api/server/*` and `/-json`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::faults::BootingHealth;
use crate::server::AppState;
use crate::state::now_ms;
use crate::wire::api_error::json;

pub(crate) async fn ping() -> Response {
    json(StatusCode::OK, &json!({ "message": "pong" }))
}

pub(crate) async fn health(State(state): State<AppState>) -> Response {
    if state.environment.tier.eq_ignore_ascii_case("CORE") {
        return json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "statusCode": 422,
                "message": "Health check is available only in WAHA Plus",
                "error": "Unprocessable Entity",
            }),
        );
    }
    if state.is_booting() && state.faults().booting_health == BootingHealth::Unavailable {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "error",
                "info": {},
                "error": { "sessions": { "status": "down", "message": "starting" } },
                "details": { "sessions": { "status": "down", "message": "starting" } },
            }),
        );
    }
    json(
        StatusCode::OK,
        &json!({ "status": "ok", "info": {}, "error": {}, "details": {} }),
    )
}

pub(crate) async fn version(State(state): State<AppState>) -> Response {
    json(StatusCode::OK, &state.environment)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerStatus<'a> {
    start_timestamp: u64,
    uptime: u64,
    worker: Worker<'a>,
}

#[derive(serde::Serialize)]
struct Worker<'a> {
    id: &'a str,
}

pub(crate) async fn status(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &ServerStatus {
            start_timestamp: state.started_at_ms,
            uptime: now_ms().saturating_sub(state.started_at_ms),
            worker: Worker {
                id: &state.settings.worker_id,
            },
        },
    )
}

/// A small OpenAPI document of the simulator's own (WAHA's upstream document is not copied).
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "openapi": "3.0.0",
            "info": {
                "title": "waha-sim",
                "description": "A WAHA-compatible simulator",
                "version": state.environment.version,
            },
            "paths": {},
        }),
    )
}
