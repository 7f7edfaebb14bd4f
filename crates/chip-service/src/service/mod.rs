//! The HTTP service over the supervisor (issue 14, "chip-service"): a REST JSON API under
//! `/v1`, per-tenant API tokens, Server-Sent Events and WebSocket streams of a tenant's chip
//! changes, the WAHA webhook endpoint, `/metrics`, `/healthz`, `/readyz` and an OpenAPI
//! document.
//!
//! **What the router is built from.** [`router`] takes [`ServiceParts`]: a
//! [`Supervisor`], the webhook [`Ingest`], the [`TenantDirectory`], a [`TokenStore`] and the
//! admin token, never a backend itself, so the router and the handlers are the same on every
//! backend. [`run`] assembles the backend the configuration names (`CHIPSERVICE_BACKEND`):
//! the [`Embedded`](crate::Embedded) default (in-memory, [`MemoryTokenStore`]) or the
//! [`Production`](crate::Production) backend on Docker or Swarm and PostgreSQL
//! ([`PgTokenStore`]), and serves it until a shutdown signal; the `chip-service` binary calls
//! it.
//!
//! **Routes** (every one is in the OpenAPI document, [`openapi_document`], served at
//! `GET /openapi.json`; [`documented_routes`] lists them):
//! - admin, with the admin bearer token: `POST /v1/tenants` (answers the tenant's API token
//!   once), `GET /v1/tenants`, `GET /v1/tenants/{tenant}`, `POST .../suspend`,
//!   `POST .../reactivate`, `POST .../offboard`, `PUT .../limits`, `POST .../token/rotate`
//!   (answers the new token; the old one stops working), `POST .../webhook-key/rotate`;
//! - tenant, with the tenant's bearer token (the tenant comes from the token, never from the
//!   path): `POST /v1/chips`, `GET /v1/chips`, `GET|DELETE /v1/chips/{chip}`,
//!   `POST /v1/chips/{chip}/{stop,start,restart,logout}`, `GET /v1/chips/{chip}/qr` (PNG),
//!   `GET /v1/chips/{chip}/qr/raw`, `GET /v1/chips/{chip}/pairing-code`,
//!   `POST /v1/chips/{chip}/messages` (`Idempotency-Key` header required),
//!   `GET /v1/messages/{message_id}`, `GET /v1/messages?idempotency_key=`,
//!   `GET /v1/events` (SSE), `GET /v1/events/ws` (WebSocket);
//! - `POST /webhooks/{tenant}` (session-supervisor's `ingest_router`, HMAC-signed by WAHA);
//! - `GET /metrics`, `GET /healthz`, `GET /readyz`, `GET /openapi.json`, unauthenticated;
//! - `GET /dashboard` (with `/dashboard/app.js` and `/dashboard/app.css`): the dashboard, a
//!   page embedded in the binary that asks for a tenant's API token and shows its chips live
//!   (phase, phone, proxy country, last error, QR code or pairing code; create, restart, log
//!   out, delete, send a test message). Same-origin only (`Content-Security-Policy`); it reads
//!   the event stream with `fetch()` so the token travels in the `Authorization` header.
//!
//! **Errors** are JSON, `{"error": {"code": "<stable snake_case>", "message": "...", ...}}`,
//! with the limit or reason that applies ([`ApiError`]). A tenant token asking for another
//! tenant's chip gets 404, as for a chip that does not exist.
//!
//! **Secrets.** API tokens are shown once (tenant creation, rotation) and stored as SHA-256
//! hashes ([`TokenStore`]); the admin token is held only as its hash. No response, event,
//! error, log line or `Debug` output carries a tenant's container API key or webhook HMAC
//! key; QR values appear only in the two QR endpoints and pairing codes only in the
//! pairing-code endpoint (a `pairing_code` event says one is on offer and until when, without
//! the code).

mod auth;
mod auth_pg;
mod config;
mod error;
mod events;
mod extract;
mod handlers;
mod openapi;
mod routes;
mod run;
mod telemetry;
mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use session_supervisor::{Ingest, Supervisor};
use tenant_isolation::TenantDirectory;
use tokio::sync::watch;

pub use auth::{
    AdminToken, ApiToken, InvalidAdminToken, MemoryTokenStore, TOKEN_PREFIX, TokenError, TokenHash,
    TokenStore, TokenStoreError,
};
pub use auth_pg::PgTokenStore;
pub use config::{Backend, ConfigError, ServiceConfig, vars};
pub use error::ApiError;
pub use openapi::{documented_routes, openapi_document};
pub use run::{RunError, run, run_on_listener, shutdown_signal};
pub use telemetry::{TelemetryError, init_tracing};
pub use views::PHONE_LABEL;

/// Whether the service reports ready (`/readyz`): the host sets it once the supervisor runs
/// and clears it when shutdown begins. Cheap to clone; clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    /// A flag, initially `ready`.
    pub fn new(ready: bool) -> Self {
        ReadyFlag(Arc::new(AtomicBool::new(ready)))
    }

    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Tells the long-lived responses (event streams) that the service is shutting down, so they
/// end and the server's graceful shutdown can drain. Cheap to clone; clones share the signal.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(Arc<watch::Sender<bool>>);

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// A signal not triggered yet.
    pub fn new() -> Self {
        ShutdownSignal(Arc::new(watch::Sender::new(false)))
    }

    /// Triggers it: every open event stream ends (SSE streams end, WebSockets are closed).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Resolves once `stop` says the service is shutting down (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        let triggered = *stop.borrow_and_update();
        if triggered {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Tunables of the API. [`Default`] gives the values documented on each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    /// How long `POST /v1/tenants/{tenant}/offboard` waits for the tenant's chips to be
    /// deleted when the request names no `wait_secs` (default 60 s).
    pub offboard_wait: Duration,
    /// How long `POST /v1/tenants/{tenant}/webhook-key/rotate` waits for every session to
    /// carry the new key when the request names no `wait_secs` (default 60 s); the rotation
    /// goes on after that (call again to see it finish).
    pub rotation_wait: Duration,
    /// The longest `wait_secs` a request may ask for (default 300 s).
    pub max_wait: Duration,
    /// The longest `max_wait_ms` a send may ask the pacer to wait (default 30 s).
    pub max_send_wait: Duration,
    /// The SSE keep-alive interval (default 15 s).
    pub sse_keep_alive: Duration,
    /// The largest page `GET /v1/chips` answers (default 500; 100 when no `limit` is given).
    pub max_page: u32,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            offboard_wait: Duration::from_secs(60),
            rotation_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
            max_send_wait: Duration::from_secs(30),
            sse_keep_alive: Duration::from_secs(15),
            max_page: 500,
        }
    }
}

/// Everything [`router`] serves: the backend's pieces, not the backend itself.
pub struct ServiceParts {
    /// The supervisor (chips, sends, events, rotations, offboarding).
    pub supervisor: Supervisor,
    /// The webhook ingest, mounted at `POST /webhooks/{tenant}`.
    pub ingest: Arc<Ingest>,
    /// The tenant directory (tenant management, readiness).
    pub directory: Arc<dyn TenantDirectory>,
    /// Where the tenants' API token hashes live.
    pub tokens: Arc<dyn TokenStore>,
    /// The admin token.
    pub admin_token: AdminToken,
    /// The Prometheus recorder's handle, rendered at `/metrics` (`None`: `/metrics` answers
    /// 404 `metrics_disabled`).
    pub metrics: Option<PrometheusHandle>,
    /// What `/readyz` reports besides the directory answering.
    pub ready: ReadyFlag,
    /// Ends the event streams on shutdown.
    pub shutdown: ShutdownSignal,
    /// The API's tunables.
    pub options: ApiOptions,
}

impl ServiceParts {
    /// Parts with no metrics, ready, a fresh shutdown signal and default options.
    pub fn new(
        supervisor: Supervisor,
        ingest: Arc<Ingest>,
        directory: Arc<dyn TenantDirectory>,
        tokens: Arc<dyn TokenStore>,
        admin_token: AdminToken,
    ) -> Self {
        ServiceParts {
            supervisor,
            ingest,
            directory,
            tokens,
            admin_token,
            metrics: None,
            ready: ReadyFlag::new(true),
            shutdown: ShutdownSignal::new(),
            options: ApiOptions::default(),
        }
    }

    /// With `/metrics` rendered from `handle`.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }
}

impl std::fmt::Debug for ServiceParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceParts")
            .field("supervisor", &self.supervisor)
            .field("admin_token", &self.admin_token)
            .field("metrics", &self.metrics.is_some())
            .field("ready", &self.ready)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The state every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) supervisor: Supervisor,
    pub(crate) directory: Arc<dyn TenantDirectory>,
    pub(crate) tokens: Arc<dyn TokenStore>,
    pub(crate) admin_token: AdminToken,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) ready: ReadyFlag,
    pub(crate) shutdown: ShutdownSignal,
    pub(crate) options: ApiOptions,
    pub(crate) openapi: serde_json::Value,
}

/// The service's router: every route above, the webhook ingest, a JSON 404 for unknown
/// routes, and a layer that logs each request (method, route template, status, duration;
/// never a header or a body) and counts it in `chipservice_http_requests_total{method, route,
/// status}` and `chipservice_http_request_duration_seconds{method, route}`.
pub fn router(parts: ServiceParts) -> Router {
    let ingest = session_supervisor::ingest_router(parts.ingest.clone());
    let state = AppState {
        inner: Arc::new(Shared {
            supervisor: parts.supervisor,
            directory: parts.directory,
            tokens: parts.tokens,
            admin_token: parts.admin_token,
            metrics: parts.metrics,
            ready: parts.ready,
            shutdown: parts.shutdown,
            options: parts.options,
            openapi: openapi_document(),
        }),
    };
    let mut api: Router<AppState> = Router::new();
    for route in routes::table() {
        if let Some(handler) = route.handler {
            api = api.route(route.spec.path, handler);
        }
    }
    api.with_state::<()>(state)
        .merge(ingest)
        .fallback(handlers::ops::route_not_found)
        .layer(axum::middleware::from_fn(telemetry::observe))
}
