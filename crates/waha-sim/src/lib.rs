//! A WAHA-compatible server simulator for tests, examples and container images (development
//! tool, not published).
//!
//! It answers like a current multi-session WAHA server (see the project's WAHA contract): the
//! same paths, status codes (201 on every POST, 200 with an empty body on DELETE), error bodies
//! (including the QR 422 without `statusCode` and the 400 message lists), webhook envelope and
//! HMAC signing, and a session state machine that runs in real time (scaled by
//! [`TimeScale`]). Faults can be injected at start and at run time.
//!
//! ```
//! use std::time::Duration;
//! use waha_sim::{Simulator, SessionStatus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::builder()
//!     .api_key("test-key-123456")
//!     .time_scale(0.01) // a 60 s QR lives 0.6 s
//!     .start()
//!     .await?;
//!
//! let http = reqwest::Client::new();
//! let created = http
//!     .post(format!("{}/api/sessions", sim.url()))
//!     .header("X-Api-Key", "test-key-123456")
//!     .json(&serde_json::json!({ "name": "chip-1", "start": true }))
//!     .send()
//!     .await?;
//! assert_eq!(created.status(), 201);
//!
//! // The session reaches SCAN_QR_CODE on its own; a simulated phone scans it.
//! let control = sim.control();
//! control.wait_for_status("chip-1", SessionStatus::ScanQrCode, Duration::from_secs(5)).await?;
//! control.scan("chip-1")?;
//! assert_eq!(control.session_status("chip-1"), Some(SessionStatus::Working));
//!
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP surface
//! WAHA's routes: `/ping` (no key needed), `/health`, `/api/server/version`,
//! `/api/server/status`, `/-json`, `/api/sessions[/{name}[/start|stop|restart|logout|me]]`,
//! `/api/{name}/auth/qr` (PNG, `Accept: application/json` base64, `?format=raw`),
//! `/api/{name}/auth/request-code`, `/api/sendText`, `/api/sendSeen`, `/api/startTyping`,
//! `/api/stopTyping`.
//!
//! The control API, for simulators running in a container (same API key):
//!
//! | call | effect |
//! |---|---|
//! | `POST /_sim/sessions/{name}/scan` `{id?, pushName?}` | [`SimulatorControl::scan`] |
//! | `POST /_sim/sessions/{name}/fail` `{reason}` | [`SimulatorControl::fail`] |
//! | `POST /_sim/sessions/{name}/disconnect` `{reason}` | [`SimulatorControl::disconnect`] |
//! | `POST /_sim/sessions/{name}/messages` `{from, text}` | [`SimulatorControl::receive_message`] |
//! | `POST /_sim/messages/{id}/ack` `{ack: 3 \| "READ"}` | [`SimulatorControl::ack`] |
//! | `GET`/`PUT /_sim/faults` ([`Faults`] JSON) | [`SimulatorControl::set_faults`] |
//! | `POST /_sim/booting` `{durationMs}` | [`SimulatorControl::set_booting`] |
//! | `POST /_sim/crash` | [`SimulatorControl::crash`] |
//! | `GET /_sim/stats` | session count, pending timers, [`WebhookStats`] |
//!
//! # Binary and image
//! The `waha-sim` binary reads WAHA's environment variables (see
//! [`SimulatorBuilder::from_env_vars`]) and has a `healthcheck` subcommand. With the `docker`
//! feature, [`container`] builds a `FROM scratch` image around a statically linked build.
//!
//! # Cost
//! A session is a small record in one map; all timers of all sessions share one queue and one
//! task; events are only built for sessions whose webhooks want them. Thousands of sessions
//! stay cheap (see `docs/benchmarks.md`).

mod api_key;
#[cfg(feature = "docker")]
pub mod container;
mod control;
mod env_config;
mod error;
mod faults;
pub mod healthcheck;
mod persistence;
mod qr;
mod scheduler;
mod server;
mod session;
mod settings;
mod simulator;
mod state;
mod time_scale;
mod webhook;
mod wire;

pub use api_key::ApiKey;
pub use control::SimulatorControl;
pub use env_config::DEFAULT_STATE_DIR;
pub use error::SimError;
pub use faults::{BootingStatus, Faults};
pub use session::{AckLevel, Me, SessionStatus};
pub use settings::{CrashBehaviour, Engine, Timings};
pub use simulator::{RunningSimulator, Simulator, SimulatorBuilder};
pub use time_scale::TimeScale;
pub use webhook::WebhookStats;
pub use wire::{
    ClientConfig, CustomHeader, HmacConfig, KNOWN_EVENTS, NowebConfig, NowebStoreConfig,
    ProxyConfig, RetriesConfig, RetryPolicy, SessionConfig, WebhookConfig,
};
