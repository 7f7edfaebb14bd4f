//! What every request passes first: latency, the API key, the booting window, the error rate.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::faults::chance;
use crate::server::AppState;
use crate::wire::ApiError;

pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let control = path.starts_with("/_sim/") || path == "/_sim";
    let session_call = path.starts_with("/api/") && !path.starts_with("/api/server/");
    let faults = (!control).then(|| state.faults());
    if let Some(faults) = &faults {
        let latency = state.settings.scaled(faults.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    if path != "/ping"
        && !state
            .settings
            .key
            .accepts(presented_key(&request).as_deref())
    {
        return ApiError::Bare(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    if let Some(faults) = faults {
        if session_call && state.is_booting() {
            let status = StatusCode::from_u16(faults.booting_status.code())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return ApiError::Message(
                status,
                "WAHA is starting: the session manager is not ready yet".to_owned(),
            )
            .into_response();
        }
        if session_call && chance(faults.error_rate) {
            return ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                .into_response();
        }
    }
    next.run(request).await
}

/// `X-Api-Key`, or the `x-api-key` query parameter.
fn presented_key(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get("x-api-key") {
        return value.to_str().ok().map(str::to_owned);
    }
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("x-api-key"))
        .map(|(_, v)| v.into_owned())
}
