//! Logs and request metrics.

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

use super::config::ServiceConfig;

/// Why the logs could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log filter was refused.
    #[error("the log filter is not valid: {0}")]
    Filter(String),
    /// A global subscriber was installed already.
    #[error("a tracing subscriber is installed already: {0}")]
    AlreadySet(String),
}

/// Installs the global `tracing` subscriber the configuration asks for: `log_filter`
/// (`EnvFilter` syntax), to stderr, one JSON object per line when `log_json`, else plain text
/// (coloured only when stderr is a terminal).
///
/// # Errors
/// [`TelemetryError`] when the filter is refused or a subscriber is installed already.
pub fn init_tracing(config: &ServiceConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|error| TelemetryError::Filter(error.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if config.log_json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    installed.map_err(|error| TelemetryError::AlreadySet(error.to_string()))
}

/// Logs and counts every request: method, route template (never the concrete path's query,
/// a header or a body), status and duration.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let elapsed = started.elapsed();
    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    if status.is_server_error() {
        warn!(%method, %route, status = status.as_u16(), millis, "request failed");
    } else if route.starts_with("/v1/") || route.starts_with("/webhooks/") {
        info!(%method, %route, status = status.as_u16(), millis, "request");
    } else {
        debug!(%method, %route, status = status.as_u16(), millis, "request");
    }
    metrics::counter!(
        "chipservice_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(
        "chipservice_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(elapsed.as_secs_f64());
    response
}
