//! Operations: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and the JSON 404 of
//! unknown routes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tenant_isolation::TenantId;

use crate::service::AppState;
use crate::service::error::ApiError;

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the supervisor runs (the host's [`ReadyFlag`](crate::service::ReadyFlag))
/// and the tenant directory answers.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !state.inner.ready.is_ready() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the supervisor is not running (starting or shutting down)",
        ));
    }
    // Any answer proves the directory works, "no such tenant" included.
    let probe =
        TenantId::new("readyz-probe").map_err(|error| ApiError::internal("readyz", &error))?;
    match state.inner.directory.get(&probe).await {
        Ok(_) | Err(tenant_isolation::Error::TenantNotFound { .. }) => {
            Ok(Json(json!({ "status": "ready" })))
        }
        Err(error) => {
            tracing::warn!(kind = error.kind(), %error, "readiness: the tenant directory failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "directory_unavailable",
                "the tenant directory does not answer",
            ))
        }
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.inner.metrics else {
        return Err(ApiError::not_found(
            "metrics_disabled",
            "no metrics recorder is installed",
        ));
    };
    handle.run_upkeep();
    let body = handle.render();
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

/// `GET /openapi.json`.
pub(crate) async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(state.inner.openapi.clone())
}

/// Any route not served: a JSON 404.
pub(crate) async fn route_not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}
