//! What every request passes first: the call log, latency, the API key, the booting window,
//! the error rate.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::calls::{CallRecord, key_fingerprint, session_in_path};
use crate::faults::chance;
use crate::server::{AppState, CallSession};
use crate::state::{SimState, now_ms};
use crate::wire::ApiError;

pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let call = ArrivingCall::new(&state, &request);
    let response = admit(&state, request, next).await;
    if let Some(call) = call {
        state.calls.record(call.answered(&response));
    }
    response
}

async fn admit(state: &SimState, request: Request, next: Next) -> Response {
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
    if request.uri().path() != "/ping"
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

/// A mutating WAHA call, as known when it arrives.
struct ArrivingCall {
    method: String,
    route: String,
    session: Option<String>,
    api_key: Option<String>,
    remote_addr: Option<SocketAddr>,
    at_ms: u64,
    sim_ms: u64,
}

impl ArrivingCall {
    /// `None` for what is not logged: reads, and anything outside `/api/`.
    fn new(state: &SimState, request: &Request) -> Option<Self> {
        let path = request.uri().path();
        let mutating =
            [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(request.method());
        if !mutating || !path.starts_with("/api/") {
            return None;
        }
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(path, |matched| matched.as_str());
        Some(Self {
            method: request.method().as_str().to_owned(),
            route: route.to_owned(),
            session: session_in_path(route, path),
            api_key: presented_key(request).map(|key| key_fingerprint(&key)),
            remote_addr: request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
            at_ms: now_ms(),
            sim_ms: state.simulated_ms(),
        })
    }

    /// The record, once answered: the status, and the session the handler named (from the
    /// body) when the path had none.
    fn answered(self, response: &Response) -> CallRecord {
        let session = response
            .extensions()
            .get::<CallSession>()
            .map(|named| named.0.clone())
            .or(self.session);
        CallRecord {
            seq: 0,
            method: self.method,
            route: self.route,
            session,
            api_key: self.api_key,
            remote_addr: self.remote_addr,
            status: response.status().as_u16(),
            at_ms: self.at_ms,
            sim_ms: self.sim_ms,
        }
    }
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
