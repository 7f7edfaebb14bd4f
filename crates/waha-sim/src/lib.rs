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
//! The control API, for simulators running in a container (same API key, exempt from the
//! latency, booting and error-rate faults); [`SimControlClient`] calls it with typed bodies:
//!
//! | call | effect |
//! |---|---|
//! | `GET /_sim/sessions/{name}` | the session's `SessionInfo` ([`SimSession`]) |
//! | `POST /_sim/sessions/{name}/scan` `{id?, pushName?}` | [`SimulatorControl::scan`] |
//! | `POST /_sim/sessions/{name}/fail` | [`SimulatorControl::fail`] |
//! | `POST /_sim/sessions/{name}/disconnect` `{reason}` ([`DisconnectReason`]) | [`SimulatorControl::disconnect`] |
//! | `POST /_sim/sessions/{name}/silence` | [`SimulatorControl::silence`] |
//! | `POST /_sim/sessions/{name}/messages` `{from, text}` | [`SimulatorControl::receive_message`] |
//! | `POST /_sim/messages/{id}/ack` `{ack: 3 \| "READ"}` | [`SimulatorControl::ack`] |
//! | `GET`/`PUT /_sim/faults` ([`Faults`] JSON, with `seed`) | [`SimulatorControl::set_faults`] |
//! | `POST /_sim/booting` `{durationMs}` | [`SimulatorControl::set_booting`] |
//! | `POST /_sim/crash` | [`SimulatorControl::crash`] |
//! | `GET /_sim/stats` | [`SimStats`]: sessions, pending timers, [`WebhookStats`], calls |
//! | `GET /_sim/calls[?session=]`, `DELETE /_sim/calls` | [`SimulatorControl::calls`] ([`CallRecord`]s), [`SimulatorControl::clear_calls`] |
//!
//! # Faults like the real server's
//! Engine-shaped disconnects ([`DisconnectReason`]: Baileys status codes, whatsmeow event
//! names, WEBJS states and `state.change`), the QR window (60 s, then 20 s refreshes, 6 codes,
//! then FAILED, scaled), a silent WORKING session ([`SimulatorControl::silence`]), a booting
//! window whose `/health` already answers 200 ([`BootingHealth::Ok`]), webhook drops retried
//! on the webhook's policy, lost answers (duplicates) and reordering drawn from a seed
//! ([`Faults::seed`]: same seed, same decisions), and a log of every mutating call.
//!
//! # In-process containers (feature `pool`)
//! `SimLauncher` implements container-pool's `ProcessLauncher`: its `InMemoryRuntime` starts
//! one simulator per "container", configured by the container's environment, with one state
//! directory per volume.
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
mod calls;
#[cfg(feature = "docker")]
pub mod container;
mod control;
mod control_client;
mod control_wire;
mod env_config;
mod error;
mod faults;
pub mod healthcheck;
mod persistence;
#[cfg(feature = "pool")]
mod pool;
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
pub use calls::CallRecord;
pub use control::{SimStats, SimulatorControl};
pub use control_client::{SimControlClient, SimControlError, SimSession};
pub use env_config::DEFAULT_STATE_DIR;
pub use error::SimError;
pub use faults::{BootingHealth, BootingStatus, Faults};
#[cfg(feature = "pool")]
pub use pool::SimLauncher;
pub use session::{AckLevel, DisconnectReason, Me, SessionStatus};
pub use settings::{CrashBehaviour, Engine, Timings};
pub use simulator::{RunningSimulator, Simulator, SimulatorBuilder};
pub use time_scale::TimeScale;
pub use webhook::WebhookStats;
pub use wire::{
    ClientConfig, CustomHeader, HmacConfig, KNOWN_EVENTS, NowebConfig, NowebStoreConfig,
    ProxyConfig, RetriesConfig, RetryPolicy, SessionConfig, WebhookConfig,
};
