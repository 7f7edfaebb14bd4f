//! The HTTP surface: WAHA's routes, plus the simulator's own control routes under `/_sim`.

mod auth;
mod body;
mod control_api;
mod gate;
mod info;
mod messages;
mod query;
mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use crate::session::SessionView;
use crate::state::SimState;
use crate::wire::{ApiError, SessionInfoBody};

/// The shared state every handler sees.
pub(crate) type AppState = Arc<SimState>;

/// Builds the router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(info::ping))
        .route("/health", get(info::health))
        .route("/api/server/version", get(info::version))
        .route("/api/server/status", get(info::status))
        .route("/-json", get(info::openapi))
        .route("/api/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/api/sessions/{session}",
            get(sessions::get)
                .put(sessions::update)
                .delete(sessions::delete),
        )
        .route("/api/sessions/{session}/start", post(sessions::start))
        .route("/api/sessions/{session}/stop", post(sessions::stop))
        .route("/api/sessions/{session}/restart", post(sessions::restart))
        .route("/api/sessions/{session}/logout", post(sessions::logout))
        .route("/api/sessions/{session}/me", get(sessions::me))
        .route("/api/{session}/auth/qr", get(auth::qr))
        .route("/api/{session}/auth/request-code", post(auth::request_code))
        .route("/api/sendText", post(messages::send_text))
        .route("/api/sendSeen", post(messages::send_seen))
        .route("/api/startTyping", post(messages::typing))
        .route("/api/stopTyping", post(messages::typing))
        .merge(control_api::router())
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            gate::gate,
        ))
        .with_state(state)
}

/// NestJS's answer for an unknown route: `Cannot GET /x`.
async fn not_found(request: axum::extract::Request) -> ApiError {
    ApiError::not_found(format!(
        "Cannot {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Names, on a response, the session a call was about when the path does not (the body's
/// `name` or `session`): the call log reads it.
#[derive(Clone, Debug)]
pub(crate) struct CallSession(pub(crate) String);

/// Tags `response` with the session the call was about, if known.
pub(crate) fn about_session(mut response: Response, session: Option<&str>) -> Response {
    if let Some(session) = session {
        response
            .extensions_mut()
            .insert(CallSession(session.to_owned()));
    }
    response
}

/// A `SessionInfo` answer.
pub(crate) fn session_info(
    state: &SimState,
    status: StatusCode,
    view: &SessionView,
    with_engine: bool,
) -> Response {
    let engine = with_engine.then(|| {
        if view.status == crate::session::SessionStatus::Stopped {
            serde_json::json!({})
        } else {
            serde_json::json!({ "engine": state.settings.engine.as_str() })
        }
    });
    crate::wire::api_error::json(
        status,
        &SessionInfoBody {
            name: &view.name,
            status: view.status,
            config: view.config.as_deref(),
            me: view.me.as_ref(),
            assigned_worker: &state.settings.worker_id,
            engine,
        },
    )
}

/// Sleeps for the slow-stop fault.
pub(crate) async fn slow_stop(state: &SimState) {
    let delay = state.settings.scaled(state.faults().slow_stop);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
