//! The readiness gate: running → Docker health → authenticated HTTP, under one deadline.

use std::time::{Duration, Instant};

use tracing::{debug, info};
use url::Url;

use super::TenantPool;
use super::deadline::Deadline;
use super::scrub::{scrub_lines, scrub_text};
use crate::{
    ApiKey, ContainerId, ContainerInfo, ContainerState, Error, HealthStatus, PoolEventKind,
    ProbeError, ReadinessCheck, TenantId,
};

/// How often a `WaitingForHealth` event is repeated while the same check is pending (a new
/// pending check is reported at once).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long the logs of an exited container may take to read (the deadline may be spent).
const EXIT_LOGS_WITHIN: Duration = Duration::from_secs(5);

/// What one poll found.
enum Poll {
    Ready(Url),
    Waiting {
        check: ReadinessCheck,
        detail: String,
        unhealthy: Option<String>,
    },
}

impl TenantPool {
    /// Polls the container every `poll_interval` until it runs, its image health check (if
    /// any) allows it and the HTTP probe answers, or until the deadline.
    ///
    /// - An exit, a restart by the restart policy (a crash loop) or a dead container is
    ///   [`Error::Exited`] at once; a probe answer of 401/403 is [`Error::Unauthorized`] at once,
    ///   and a server reporting another worker id [`Error::WorkerMismatch`].
    /// - The HTTP probe runs while Docker health is healthy, absent, or still starting with no
    ///   failed check (so a fast server is not held back by the health-check interval); it
    ///   never runs while the health check is failing.
    /// - At the deadline a container the health check calls unhealthy is [`Error::Unhealthy`];
    ///   any other not-ready container is [`Error::StartupTimeout`].
    pub(super) async fn await_ready(
        &self,
        tenant: &TenantId,
        slot: u32,
        id: &ContainerId,
        name: &str,
        key: &ApiKey,
        deadline: &Deadline,
    ) -> Result<Url, Error> {
        let cfg = &self.inner.config;
        let mut baseline_restarts = None;
        let mut last_progress: Option<(Instant, ReadinessCheck)> = None;
        loop {
            let info = match deadline
                .run(
                    name,
                    "inspecting the container",
                    self.inner.runtime.inspect(id),
                )
                .await
            {
                Ok(info) => info,
                Err(Error::NotFound { .. }) => {
                    return Err(Error::StartFailed {
                        container: name.to_owned(),
                        reason: "the container was removed while starting".into(),
                    });
                }
                Err(e) => return Err(e),
            };
            let restarts = *baseline_restarts.get_or_insert(info.restart_count);
            let crashed = match info.state {
                ContainerState::Exited { exit_code } => Some(exit_code.or(info.exit_code)),
                ContainerState::Dead | ContainerState::Restarting => Some(info.exit_code),
                _ if info.restart_count > restarts => Some(info.exit_code),
                _ => None,
            };
            if let Some(exit_code) = crashed {
                return Err(self.exited(id, name, exit_code, &info, key).await);
            }
            let (check, detail, unhealthy) = match self.poll(&info, name, key, deadline).await? {
                Poll::Ready(url) => {
                    let took = deadline.elapsed();
                    info!(container = %name, took_ms = took.as_millis() as u64, "container ready");
                    self.emit(tenant, slot, name, PoolEventKind::Ready { took });
                    return Ok(url);
                }
                // Health-check output and probe errors are the container's own words: they may
                // echo a key (the current one, or one rotated since).
                Poll::Waiting {
                    check,
                    detail,
                    unhealthy,
                } => {
                    let secrets = self.secrets(key);
                    (
                        check,
                        scrub_text(&detail, &secrets),
                        unhealthy.map(|output| scrub_text(&output, &secrets)),
                    )
                }
            };
            if deadline.passed() {
                return Err(match unhealthy {
                    Some(last_output) => Error::Unhealthy {
                        container: name.to_owned(),
                        last_output,
                    },
                    None => deadline.timeout(name, detail),
                });
            }
            let now = Instant::now();
            if last_progress
                .is_none_or(|(t, c)| c != check || now.duration_since(t) >= PROGRESS_EVERY)
            {
                last_progress = Some((now, check));
                debug!(container = %name, ?check, %detail, "waiting for readiness");
                self.emit(
                    tenant,
                    slot,
                    name,
                    PoolEventKind::WaitingForHealth {
                        elapsed: deadline.elapsed(),
                        check,
                        detail,
                    },
                );
            }
            tokio::time::sleep(cfg.poll_interval.min(deadline.left())).await;
        }
    }

    /// One look at a running (or not yet running) container.
    async fn poll(
        &self,
        info: &ContainerInfo,
        name: &str,
        key: &ApiKey,
        deadline: &Deadline,
    ) -> Result<Poll, Error> {
        let waiting = |check, detail: String| Poll::Waiting {
            check,
            detail,
            unhealthy: None,
        };
        if info.state != ContainerState::Running {
            return Ok(waiting(
                ReadinessCheck::Running,
                format!("container is {}", info.state),
            ));
        }
        let health_starting = match &info.health {
            HealthStatus::Unhealthy { last_output } => {
                // Not fatal before the deadline: a slow starter outlives an image's short
                // start period and turns healthy later.
                return Ok(Poll::Waiting {
                    check: ReadinessCheck::DockerHealth,
                    detail: format!("health check failing: {last_output}"),
                    unhealthy: Some(last_output.clone()),
                });
            }
            HealthStatus::Starting if info.health_failing_streak > 0 => {
                return Ok(waiting(
                    ReadinessCheck::DockerHealth,
                    format!(
                        "health check starting, {} failed check(s) so far",
                        info.health_failing_streak
                    ),
                ));
            }
            HealthStatus::Starting => true,
            HealthStatus::None | HealthStatus::Healthy => false,
        };
        let Some(url) = &info.url else {
            return Ok(waiting(ReadinessCheck::Http, "no address yet".to_owned()));
        };
        let limit = self
            .inner
            .config
            .probe_timeout
            .min(deadline.left())
            .max(Duration::from_millis(1));
        // The pool set `WAHA_WORKER_ID` to the container's name: the probe checks that the
        // server answering at the address is this container.
        let probe = self.inner.probe.probe(url, key, name);
        let detail = match tokio::time::timeout(limit, probe).await {
            Ok(Ok(())) => return Ok(Poll::Ready(url.clone())),
            Ok(Err(ProbeError::Unauthorized)) => {
                return Err(Error::Unauthorized {
                    container: name.to_owned(),
                });
            }
            // Another server holds the address: never hand it the tenant's endpoint.
            Ok(Err(ProbeError::WorkerMismatch { reported, .. })) => {
                return Err(Error::WorkerMismatch {
                    container: name.to_owned(),
                    reported: scrub_text(&reported, &self.secrets(key)),
                });
            }
            Ok(Err(ProbeError::Misconfigured(reason))) => {
                return Err(Error::InvalidConfig(format!(
                    "container `{name}` cannot be probed: {reason}"
                )));
            }
            Ok(Err(ProbeError::NotReady(e))) => e,
            Err(_) => format!("probe timed out after {limit:?}"),
        };
        Ok(if health_starting {
            waiting(
                ReadinessCheck::DockerHealth,
                format!("health check starting; HTTP probe: {detail}"),
            )
        } else {
            waiting(ReadinessCheck::Http, detail)
        })
    }

    async fn exited(
        &self,
        id: &ContainerId,
        name: &str,
        exit_code: Option<i64>,
        info: &ContainerInfo,
        key: &ApiKey,
    ) -> Error {
        let logs = self
            .inner
            .runtime
            .logs_tail(id, self.inner.config.exit_log_lines);
        let last_logs = match tokio::time::timeout(EXIT_LOGS_WITHIN, logs).await {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => vec![format!("(logs unavailable: {e})")],
            Err(_) => vec![format!(
                "(logs unavailable: no answer within {EXIT_LOGS_WITHIN:?})"
            )],
        };
        Error::Exited {
            container: name.to_owned(),
            exit_code,
            oom_killed: info.oom_killed,
            last_logs: scrub_lines(last_logs, &self.secrets(key)),
        }
    }

    /// What container output is scrubbed of: the key and the secret `extra_env` values.
    fn secrets<'a>(&'a self, key: &'a ApiKey) -> Vec<&'a str> {
        std::iter::once(key.expose_secret())
            .chain(
                self.inner
                    .config
                    .extra_env
                    .iter()
                    .filter(|e| e.value.as_plain().is_none())
                    .map(|e| e.value.expose_secret()),
            )
            .collect()
    }
}
