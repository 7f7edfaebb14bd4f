//! The axum adapter of the webhook ingest (feature `axum`): `POST /webhooks/{tenant}` in front
//! of [`Ingest::ingest`], answering [`IngestOutcome::http_status`].

use std::sync::Arc;

use ::axum::Router;
use ::axum::body::Bytes;
use ::axum::extract::rejection::BytesRejection;
use ::axum::extract::{DefaultBodyLimit, Path, State};
use ::axum::http::{HeaderMap, StatusCode};
use ::axum::routing::post;
use tracing::debug;

use super::{Ingest, IngestOutcome, IngestRefusal, count};

/// The route the adapter serves; `{tenant}` is the tenant id (the supervisor's
/// [`webhook_url`](crate::SupervisorConfig::webhook_url) must point here).
pub const ROUTE: &str = "/webhooks/{tenant}";

/// A router serving `POST` [`ROUTE`] with `ingest`. The body limit
/// ([`IngestConfig::max_body_bytes`](super::IngestConfig::max_body_bytes)) is enforced by
/// axum's [`DefaultBodyLimit`] while the body is read, so an oversized body is never read
/// whole; it is answered 413 and counted like any refusal. Nest or merge it into the host's
/// router.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use session_supervisor::{Ingest, ingest_router};
/// # async fn demo(ingest: Ingest) -> std::io::Result<()> {
/// let app = ingest_router(Arc::new(ingest));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router(ingest: Arc<Ingest>) -> Router {
    let limit = ingest.config().max_body_bytes;
    Router::new()
        .route(ROUTE, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

async fn receive(
    State(ingest): State<Arc<Ingest>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let outcome = match body {
        Ok(body) => ingest.ingest(&tenant, &headers, &body).await,
        Err(rejection) => {
            let status = rejection.status();
            if status != StatusCode::PAYLOAD_TOO_LARGE {
                // The body could not be read (the client went away, a broken encoding).
                debug!(%status, "webhook body could not be read");
                return status;
            }
            let outcome = IngestOutcome::Refused(IngestRefusal::TooLarge {
                limit: ingest.config().max_body_bytes,
            });
            count(&outcome);
            outcome
        }
    };
    StatusCode::from_u16(outcome.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
