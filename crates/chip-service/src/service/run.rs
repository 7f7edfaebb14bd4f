//! Running the service on the backend the configuration names (the embedded default, or the
//! production backend on Docker or Swarm and PostgreSQL) until a shutdown signal (what the
//! `chip-service` binary does).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use session_supervisor::ShutdownReport;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::config::{Backend, ServiceConfig};
use super::{AdminToken, MemoryTokenStore, ReadyFlag, ServiceParts, ShutdownSignal, router};
use crate::embedded::{Embedded, EmbeddedError, EmbeddedOptions};
use crate::production::{Production, ProductionError};

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The embedded backend could not be assembled or started.
    #[error("the embedded backend: {0}")]
    Embedded(#[from] EmbeddedError),
    /// The production backend (Docker or Swarm, PostgreSQL) could not be assembled or
    /// started.
    #[error("the production backend: {0}")]
    Production(#[from] ProductionError),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server stopped on its own.
    #[error("the HTTP server stopped: {0}")]
    Serve(String),
    /// On shutdown, the open connections did not drain cleanly: they were still open when
    /// the drain timeout passed (and were closed), or the server failed while draining. The
    /// backend was shut down all the same; `report` is its shutdown report.
    #[error("the drain did not finish cleanly ({problem}); then: {report}")]
    Drain {
        /// What went wrong.
        problem: String,
        /// The supervisor's shutdown report.
        report: ShutdownReport,
    },
}

/// Installs the SIGTERM and ctrl-c (SIGINT) listeners now, and answers a future that
/// resolves on either: a signal that arrives before the future is first polled (while the
/// service is still starting) is not lost, it resolves the future at its first poll. Call it
/// first thing in `main`, inside the Tokio runtime, and hand the future to [`run`]. A listener
/// that cannot be installed is logged (at the first poll, once logging is set up) and never
/// fires.
///
/// # Panics
/// Outside a Tokio runtime with its I/O driver (`#[tokio::main]` has one).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        // `signal` registers at once, and the stream keeps every delivery after that.
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async fn wait(listener: std::io::Result<Signal>, name: &'static str) {
            match listener {
                Ok(mut listener) => {
                    listener.recv().await;
                }
                Err(error) => {
                    warn!(%error, "{name} cannot be listened for");
                    std::future::pending::<()>().await;
                }
            }
        }
        async move {
            tokio::select! {
                () = wait(interrupt, "ctrl-c (SIGINT)") => info!("ctrl-c received"),
                () = wait(terminate, "SIGTERM") => info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        // Only ctrl-c elsewhere; Tokio registers it at the first poll.
        async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => info!("ctrl-c received"),
                Err(error) => {
                    warn!(%error, "ctrl-c cannot be listened for");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// The backend a run serves, started.
enum Running {
    /// The embedded default.
    Embedded(Box<Embedded>),
    /// The production backend.
    Production(Box<Production>),
}

impl Running {
    /// Assembles and starts the backend `config` names; a backend that fails to start is shut
    /// down before the error is answered.
    async fn start(config: &ServiceConfig) -> Result<Self, RunError> {
        match config.backend {
            Backend::Embedded => {
                let mut options = EmbeddedOptions::default();
                if let Some(scale) = config.embedded_time_scale {
                    options.time_scale = scale;
                }
                let mut embedded = Embedded::build(options).await?;
                if let Err(error) = embedded.start().await {
                    embedded.shutdown().await;
                    return Err(error.into());
                }
                info!(webhooks = %embedded.webhook_addr(), "the embedded default runs");
                Ok(Running::Embedded(Box::new(embedded)))
            }
            Backend::Docker | Backend::Swarm => {
                let settings =
                    config
                        .production
                        .clone()
                        .ok_or_else(|| ProductionError::Refused {
                            what: format!(
                                "CHIPSERVICE_BACKEND={} but the configuration holds no \
                                 production settings (read it with ServiceConfig::from_env)",
                                config.backend.as_str()
                            ),
                        })?;
                let mut production = Production::build(settings).await?;
                if let Err(error) = production.start().await {
                    production.shutdown().await;
                    return Err(error.into());
                }
                Ok(Running::Production(Box::new(production)))
            }
        }
    }

    /// What the router serves from this backend: its supervisor, ingest, directory and token
    /// store (in memory on the embedded default, PostgreSQL on the production backend), with
    /// `admin_token`.
    fn service_parts(&self, admin_token: AdminToken) -> ServiceParts {
        match self {
            Running::Embedded(embedded) => ServiceParts::new(
                embedded.supervisor().clone(),
                embedded.ingest().clone(),
                embedded.directory().clone(),
                Arc::new(MemoryTokenStore::new()),
                admin_token,
            ),
            Running::Production(production) => ServiceParts::new(
                production.supervisor().clone(),
                production.ingest().clone(),
                production.directory().clone(),
                production.tokens(),
                admin_token,
            ),
        }
    }

    /// Shuts the backend down: the supervisor stops and releases its ownership leases (on
    /// the embedded default every tenant's containers are removed too; on the production
    /// backend they keep running for the next owner).
    async fn shutdown(self) -> ShutdownReport {
        match self {
            Running::Embedded(embedded) => (*embedded).shutdown().await,
            Running::Production(production) => (*production).shutdown().await,
        }
    }
}

/// Runs the service as `config` says until `stop` resolves: binds `config.listen`, then does
/// what [`run_on_listener`] does.
///
/// # Errors
/// [`RunError::Bind`] when the address cannot be bound; otherwise as [`run_on_listener`].
pub async fn run(
    config: ServiceConfig,
    metrics: Option<PrometheusHandle>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, RunError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    run_on_listener(config, metrics, stop, listener).await
}

/// Runs the service as `config` says on `listener` until `stop` resolves: assembles and
/// starts the backend `config.backend` names (the embedded default, or the production backend
/// on Docker or Swarm and PostgreSQL), serves [`router`] on `listener` (printing
/// `chip-service listening on http://<addr>` to stdout once the backend runs), then, on
/// `stop`: reports not ready, ends the event streams, stops accepting connections and lets
/// the open ones finish within `config.drain_timeout`, and shuts the backend down (the
/// supervisor's in-flight steps finish within its grace and its ownership leases are
/// released; the embedded default also removes every tenant's containers, the production
/// backend leaves them running for the next owner). Prints `chip-service stopped: <report>`
/// and answers the supervisor's shutdown report.
///
/// Binding first is for hosts that must know the address before the backend starts (the
/// production backend's `CHIPSERVICE_WEBHOOK_BASE_URL` names it); [`run`] binds
/// `config.listen` itself.
///
/// `stop` is polled only once the service listens: a signal recorded during startup (see
/// [`shutdown_signal`]) shuts the service down gracefully as soon as startup finished.
///
/// Tenants and their API tokens live in memory on the embedded default (gone after a
/// restart) and in PostgreSQL on the production backend.
///
/// # Errors
/// [`RunError`]; the backend is shut down before any error is answered. A drain that did not
/// finish cleanly (connections still open at the timeout, or a server failure while draining)
/// is [`RunError::Drain`], logged at warn, after the shutdown finished.
pub async fn run_on_listener(
    config: ServiceConfig,
    metrics: Option<PrometheusHandle>,
    stop: impl Future<Output = ()> + Send + 'static,
    listener: TcpListener,
) -> Result<ShutdownReport, RunError> {
    let backend = Running::start(&config).await?;

    let ready = ReadyFlag::new(true);
    let shutdown = ShutdownSignal::new();
    let mut parts = backend.service_parts(config.admin_token.clone());
    parts.metrics = metrics;
    parts.ready = ready.clone();
    parts.shutdown = shutdown.clone();
    let app = router(parts);

    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(%addr, "chip-service listening");
    println!("chip-service listening on http://{addr}");

    let (stop_accepting, stopped_accepting) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped_accepting.await;
            })
            .await
    });

    let ended_early = tokio::select! {
        () = stop => None,
        ended = &mut server => Some(ended),
    };
    if let Some(ended) = ended_early {
        let reason = match ended {
            Ok(Ok(())) => "it returned".to_owned(),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        backend.shutdown().await;
        return Err(RunError::Serve(reason));
    }

    info!(drain = ?config.drain_timeout, "shutting down: no new connections; draining the open ones");
    ready.set(false);
    shutdown.trigger();
    let _ = stop_accepting.send(());
    let drain_problem = match tokio::time::timeout(config.drain_timeout, &mut server).await {
        Ok(Ok(Ok(()))) => {
            info!("connections drained");
            None
        }
        Ok(Ok(Err(error))) => {
            warn!(%error, "the HTTP server failed while draining");
            Some(format!("the HTTP server failed while draining: {error}"))
        }
        Ok(Err(error)) => {
            warn!(%error, "the HTTP server task failed while draining");
            Some(format!(
                "the HTTP server task failed while draining: {error}"
            ))
        }
        Err(_) => {
            warn!(drain = ?config.drain_timeout, "the drain timed out; closing the remaining connections");
            server.abort();
            Some(format!(
                "connections were still open after the drain timeout of {}",
                seconds(config.drain_timeout)
            ))
        }
    };

    // The embedded default also removes the containers of every tenant (those created
    // through the API included); the production backend leaves them to the next owner.
    let report = backend.shutdown().await;
    info!(%report, "chip-service stopped");
    println!("chip-service stopped: {report}");
    match drain_problem {
        None => Ok(report),
        Some(problem) => {
            warn!(%problem, "the shutdown was not clean");
            Err(RunError::Drain { problem, report })
        }
    }
}

/// A duration as seconds for a message (`30 s`, `2.5 s`).
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
