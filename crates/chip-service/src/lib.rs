//! The assembled chipfleet service (issue 14). A `publish = false` member of the workspace, so
//! its dependencies (the WAHA simulator among them) never burden the library's users.
//!
//! What it holds now:
//! - [`embedded`]: the embedded default, everything a
//!   [`Supervisor`](session_supervisor::Supervisor) needs on in-memory backends and the
//!   in-process WAHA simulator (container-pool's in-memory runtime running one `waha-sim` per
//!   container), with the real webhook [`Ingest`](session_supervisor::Ingest) served by axum on
//!   `127.0.0.1` as the endpoint the sessions post to. No Docker, no PostgreSQL.
//! - [`quickstart`]: the README's main job, seed report 000 played on the embedded default
//!   (`cargo run --example quickstart` calls [`quickstart::run`]); a library function, so a
//!   test runs it too and checks its report against the simulators' own state.
//! - [`progress`]: how a run shows what happens as it happens ([`Progress`]), with
//!   [`TerminalProgress`] for stdout (a live board on a terminal, timestamped lines
//!   otherwise).
//! - [`service`]: the HTTP service over the supervisor (REST JSON API under `/v1`, admin and
//!   per-tenant API tokens, SSE and WebSocket event streams, the webhook endpoint, `/metrics`,
//!   `/healthz`, `/readyz`, an OpenAPI document, and the dashboard at `/dashboard`), run by the
//!   `chip-service` binary on the embedded default or on the production backend.
//! - [`production`]: the production backend, the same supervisor on real backends: the
//!   tenants' WAHA containers on Docker or Docker Swarm (the WAHA image of your choice) and
//!   every store in PostgreSQL (`CHIPSERVICE_BACKEND=docker` or `swarm`).

pub mod embedded;
pub mod production;
pub mod progress;
pub mod quickstart;
pub mod service;

pub use embedded::{Embedded, EmbeddedError, EmbeddedOptions};
pub use production::{Production, ProductionConfig, ProductionError};
pub use progress::{Progress, TerminalProgress};
pub use quickstart::{QuickstartError, QuickstartOptions, QuickstartReport};

/// A boxed error that keeps its cause: what the assembly and the scenario wrap the sibling
/// crates' typed errors in.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
