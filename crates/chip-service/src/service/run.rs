//! Running the service on the embedded default until a shutdown signal (what the
//! `chip-service` binary does).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use session_supervisor::ShutdownReport;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::config::{Backend, ServiceConfig};
use super::{ApiOptions, MemoryTokenStore, ReadyFlag, ServiceParts, ShutdownSignal, router};
use crate::embedded::{Embedded, EmbeddedError, EmbeddedOptions};

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The embedded backend could not be assembled or started.
    #[error("the embedded backend: {0}")]
    Embedded(#[from] EmbeddedError),
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
}

/// Resolves on SIGTERM or ctrl-c (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "ctrl-c cannot be listened for");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "SIGTERM cannot be listened for");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("ctrl-c received"),
        () = terminate => info!("SIGTERM received"),
    }
}

/// Runs the service as `config` says until `stop` resolves: assembles and starts the
/// embedded default, serves [`router`] on `config.listen` (printing
/// `chip-service listening on http://<addr>` to stdout once bound), then, on `stop`: reports
/// not ready, ends the event streams, stops accepting connections and lets the open ones
/// finish within `config.drain_timeout`, and shuts the embedded default down (the
/// supervisor's in-flight steps finish within its grace and its ownership leases are
/// released). Prints `chip-service stopped: <report>` and answers the supervisor's shutdown
/// report.
///
/// Tenants and their API tokens live in memory on the embedded default: they are gone after
/// a restart.
///
/// # Errors
/// [`RunError`]; the embedded default is shut down before any error is answered.
pub async fn run(
    config: ServiceConfig,
    metrics: Option<PrometheusHandle>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, RunError> {
    match config.backend {
        Backend::Embedded => {}
    }
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

    let ready = ReadyFlag::new(true);
    let shutdown = ShutdownSignal::new();
    let parts = ServiceParts {
        supervisor: embedded.supervisor().clone(),
        ingest: embedded.ingest().clone(),
        directory: embedded.directory().clone(),
        tokens: Arc::new(MemoryTokenStore::new()),
        admin_token: config.admin_token.clone(),
        metrics,
        ready: ready.clone(),
        shutdown: shutdown.clone(),
        options: ApiOptions::default(),
    };
    let app = router(parts);

    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(source) => {
            embedded.shutdown().await;
            return Err(RunError::Bind {
                addr: config.listen,
                source,
            });
        }
    };
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
        embedded.shutdown().await;
        return Err(RunError::Serve(reason));
    }

    info!(drain = ?config.drain_timeout, "shutting down: no new connections; draining the open ones");
    ready.set(false);
    shutdown.trigger();
    let _ = stop_accepting.send(());
    match tokio::time::timeout(config.drain_timeout, &mut server).await {
        Ok(Ok(Ok(()))) => info!("connections drained"),
        Ok(Ok(Err(error))) => warn!(%error, "the HTTP server failed while draining"),
        Ok(Err(error)) => warn!(%error, "the HTTP server task failed while draining"),
        Err(_) => {
            warn!("the drain timed out; closing the remaining connections");
            server.abort();
        }
    }

    let pool = embedded.pool().clone();
    let directory = embedded.directory().clone();
    let report = embedded.shutdown().await;
    // The tenants created through the API are not the embedded default's own: their
    // simulators are stopped and their volumes removed here (the supervisor is stopped).
    match directory.list().await {
        Ok(tenants) => {
            for tenant in tenants {
                if let Err(error) = pool.remove_tenant(&tenant.id, true).await {
                    warn!(tenant = %tenant.id, %error, "removing the tenant's containers failed");
                }
            }
        }
        Err(error) => warn!(%error, "listing the tenants to remove their containers failed"),
    }
    info!(%report, "chip-service stopped");
    println!("chip-service stopped: {report}");
    Ok(report)
}
