//! `chip-service`: the chipfleet HTTP service, by default on the embedded default (in-process
//! WAHA simulators, in-memory backends: one command, no Docker, no PostgreSQL), with
//! `CHIPSERVICE_BACKEND=docker` or `swarm` on real Docker (or Swarm) and PostgreSQL with the
//! WAHA image of your choice (`docs/chip-service.md`, "Running on Docker and PostgreSQL").
//!
//! ```text
//! CHIPSERVICE_ADMIN_TOKEN=$(openssl rand -hex 32) cargo run -p chip-service --bin chip-service
//! ```
//!
//! Configuration comes from the environment (`chip_service::service::ServiceConfig`: the
//! listen address, the required admin token, the backend and its settings, JSON logs,
//! metrics, the drain timeout). On
//! SIGTERM or ctrl-c it stops accepting connections, drains the open ones, shuts the
//! supervisor down (releasing its ownership leases) and exits 0. The signal listeners are
//! installed first thing: a signal during startup shuts the service down gracefully once
//! startup finished. Exit codes: 0 after a graceful shutdown, 1 when the service failed
//! (also when the drain timed out: connections were cut), 2 for a refused configuration.

use std::process::ExitCode;

use chip_service::service::{ServiceConfig, init_tracing, run, shutdown_signal};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything else: from here on SIGTERM and ctrl-c are recorded, not fatal.
    let stop = shutdown_signal();
    let config = match ServiceConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chip-service: configuration refused: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = init_tracing(&config) {
        eprintln!("chip-service: logging: {error}");
        return ExitCode::from(2);
    }
    // The one recorder of the process, installed before the supervisor starts so its first
    // gauges are recorded.
    let metrics = if config.metrics {
        match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                eprintln!("chip-service: the Prometheus recorder: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    tracing::info!(config = ?config, "chip-service starting");
    match run(config, metrics, stop).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "chip-service failed");
            eprintln!("chip-service: {error}");
            ExitCode::FAILURE
        }
    }
}
