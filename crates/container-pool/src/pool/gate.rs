//! The readiness gate: running → Docker health → authenticated HTTP, under one deadline.

use std::time::{Duration, Instant};

use tracing::{debug, info};
use url::Url;

use super::TenantPool;
use crate::{
    ApiKey, ContainerId, ContainerState, Error, HealthStatus, PoolEventKind, ReadinessCheck,
    TenantId,
};

/// How often a `WaitingForHealth` event is emitted while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl TenantPool {
    /// Polls the container every `poll_interval` until it runs, its image health check (if
    /// any) passes and the HTTP probe answers, or until `startup_deadline`. At the deadline a
    /// container the image's health check calls unhealthy is [`Error::Unhealthy`]; any other
    /// not-ready container is [`Error::StartupTimeout`]. An exit is reported at once.
    pub(super) async fn await_ready(
        &self,
        tenant: &TenantId,
        slot: u32,
        id: &ContainerId,
        name: &str,
        key: &ApiKey,
    ) -> Result<Url, Error> {
        let cfg = &self.inner.config;
        let runtime = &self.inner.runtime;
        let started = Instant::now();
        let deadline = started + cfg.startup_deadline;
        let mut last_progress: Option<Instant> = None;
        loop {
            let info = match runtime.inspect(id).await {
                Ok(info) => info,
                Err(Error::NotFound { .. }) => {
                    return Err(Error::StartFailed {
                        container: name.to_owned(),
                        reason: "the container was removed while starting".into(),
                    });
                }
                Err(e) => return Err(e),
            };
            let mut unhealthy = None;
            let (check, detail) = match (&info.state, &info.health, &info.url) {
                (ContainerState::Exited { exit_code }, _, _) => {
                    return Err(self.exited(id, name, *exit_code).await);
                }
                (ContainerState::Dead, _, _) => return Err(self.exited(id, name, None).await),
                (ContainerState::Running, HealthStatus::Unhealthy { last_output }, _) => {
                    // Not fatal before the deadline: a slow starter outlives an image's short
                    // start period and turns healthy later.
                    unhealthy = Some(last_output.clone());
                    (
                        ReadinessCheck::DockerHealth,
                        format!("health check failing: {last_output}"),
                    )
                }
                (ContainerState::Running, HealthStatus::Starting, _) => (
                    ReadinessCheck::DockerHealth,
                    "health check starting".to_owned(),
                ),
                (ContainerState::Running, _, None) => {
                    (ReadinessCheck::Http, "no address yet".to_owned())
                }
                (ContainerState::Running, _, Some(url)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let limit = cfg.probe_timeout.min(left).max(Duration::from_millis(1));
                    let probe = tokio::time::timeout(limit, self.inner.probe.probe(url, key)).await;
                    match probe {
                        Ok(Ok(())) => {
                            let took = started.elapsed();
                            info!(container = %name, took_ms = took.as_millis() as u64, "container ready");
                            self.emit(tenant, slot, name, PoolEventKind::Ready { took });
                            return Ok(url.clone());
                        }
                        Ok(Err(e)) => (ReadinessCheck::Http, e),
                        Err(_) => (
                            ReadinessCheck::Http,
                            format!("probe timed out after {limit:?}"),
                        ),
                    }
                }
                (state, _, _) => (ReadinessCheck::Running, format!("container is {state}")),
            };
            let now = Instant::now();
            if now >= deadline {
                if let Some(last_output) = unhealthy {
                    return Err(Error::Unhealthy {
                        container: name.to_owned(),
                        last_output,
                    });
                }
                return Err(Error::StartupTimeout {
                    container: name.to_owned(),
                    elapsed: started.elapsed(),
                    deadline: cfg.startup_deadline,
                    last_probe_error: detail,
                });
            }
            if last_progress.is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY) {
                last_progress = Some(now);
                debug!(container = %name, ?check, %detail, "waiting for readiness");
                let elapsed = started.elapsed();
                self.emit(
                    tenant,
                    slot,
                    name,
                    PoolEventKind::WaitingForHealth {
                        elapsed,
                        check,
                        detail,
                    },
                );
            }
            tokio::time::sleep(cfg.poll_interval.min(deadline - now)).await;
        }
    }

    async fn exited(&self, id: &ContainerId, name: &str, exit_code: Option<i64>) -> Error {
        let last_logs = self
            .inner
            .runtime
            .logs_tail(id, self.inner.config.exit_log_lines)
            .await
            .unwrap_or_else(|e| vec![format!("(logs unavailable: {e})")]);
        Error::Exited {
            container: name.to_owned(),
            exit_code,
            last_logs,
        }
    }
}
