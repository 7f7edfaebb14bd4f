//! The readiness gate and `ensure`'s control flow against a scripted runtime: the order of the
//! checks, the errors each state leads to, the one deadline, the name-conflict path and the
//! single `Failed` event. No server and no Docker: every runtime answer is scripted.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use container_pool::{
    ApiKey, ContainerId, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState,
    ContainerStats, Error, HealthStatus, ImageRef, Incarnation, LabelSelector, PoolConfig,
    PoolEventKind, ProbeError, ReadinessCheck, ReadinessProbe, RuntimeEvent, TenantId, TenantKeys,
    TenantPool, VolumeInfo,
};
use futures::stream::BoxStream;
use url::Url;

const KEY: &str = "scripted-secret-key-0123456789";

/// How `create` behaves.
#[derive(Clone, Copy, PartialEq)]
enum OnCreate {
    Ok,
    Hang,
    /// Another replica created the container first: `Conflict`, and the container appears
    /// (created, not started) in the next listing.
    ConflictWithCreated,
    Fail,
}

/// A runtime whose `inspect` answers come from a script (the last one repeats), once started.
struct Scripted {
    on_create: OnCreate,
    script: Mutex<VecDeque<ContainerInfo>>,
    listed: Mutex<Vec<ContainerInfo>>,
    started: AtomicUsize,
    created: AtomicUsize,
    logs: Vec<String>,
}

fn info(state: ContainerState, health: HealthStatus, url: bool) -> ContainerInfo {
    ContainerInfo {
        id: ContainerId::new("c1"),
        name: "cp-acme-0".into(),
        state,
        health,
        url: url.then(|| Url::parse("http://127.0.0.1:9/").unwrap()),
        ..ContainerInfo::default()
    }
}

impl Scripted {
    fn new(on_create: OnCreate, script: Vec<ContainerInfo>) -> Arc<Self> {
        Arc::new(Self {
            on_create,
            script: Mutex::new(script.into()),
            listed: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
            logs: vec![
                "booting".into(),
                format!("config: WAHA_API_KEY={KEY}"),
                "fatal: cannot open /app/.sessions".into(),
            ],
        })
    }
}

#[async_trait]
impl ContainerRuntime for Scripted {
    fn backend(&self) -> &'static str {
        "scripted"
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, Error> {
        self.created.fetch_add(1, Ordering::SeqCst);
        match self.on_create {
            OnCreate::Ok => Ok(ContainerId::new("c1")),
            OnCreate::Hang => futures::future::pending().await,
            OnCreate::ConflictWithCreated => {
                self.listed.lock().unwrap().push(ContainerInfo {
                    labels: spec.labels.clone(),
                    ..info(ContainerState::Created, HealthStatus::None, false)
                });
                Err(Error::Conflict {
                    name: spec.name.clone(),
                })
            }
            OnCreate::Fail => Err(Error::StartFailed {
                container: spec.name.clone(),
                reason: "no such entry point".into(),
            }),
        }
    }
    async fn start(&self, _: &ContainerId) -> Result<(), Error> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn inspect(&self, _: &ContainerId) -> Result<ContainerInfo, Error> {
        if self.started.load(Ordering::SeqCst) == 0 {
            return Ok(info(ContainerState::Created, HealthStatus::None, false));
        }
        let mut script = self.script.lock().unwrap();
        Ok(if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().unwrap()
        })
    }
    async fn stop(&self, _: &ContainerId, _: Duration) -> Result<(), Error> {
        Ok(())
    }
    async fn remove(&self, _: &ContainerId) -> Result<(), Error> {
        Ok(())
    }
    async fn list(&self, _: &LabelSelector) -> Result<Vec<ContainerInfo>, Error> {
        Ok(self.listed.lock().unwrap().clone())
    }
    async fn logs_tail(&self, _: &ContainerId, lines: usize) -> Result<Vec<String>, Error> {
        Ok(self.logs[self.logs.len().saturating_sub(lines)..].to_vec())
    }
    async fn stats(&self, _: &ContainerId) -> Result<ContainerStats, Error> {
        Ok(ContainerStats::default())
    }
    async fn events(
        &self,
        _: &LabelSelector,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, Error>>, Error> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn list_volumes(&self, _: &LabelSelector) -> Result<Vec<VolumeInfo>, Error> {
        Ok(Vec::new())
    }
    async fn remove_volume(&self, _: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// Answers from a script (the last one repeats), counts the calls and records the worker id
/// each call expected.
struct ScriptedProbe {
    answers: Mutex<VecDeque<Result<(), ProbeError>>>,
    calls: AtomicUsize,
    workers: Mutex<Vec<String>>,
}

impl ScriptedProbe {
    fn new(answers: Vec<Result<(), ProbeError>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            calls: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl ReadinessProbe for ScriptedProbe {
    async fn probe(&self, _: &Url, _: &ApiKey, worker_id: &str) -> Result<(), ProbeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.workers.lock().unwrap().push(worker_id.to_owned());
        let mut answers = self.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap()
        }
    }
}

#[derive(Default)]
struct Keys {
    hang: bool,
    /// Signalled when a read that hangs has begun (the ensure then holds its slot's flight).
    reading: tokio::sync::Notify,
}

#[async_trait]
impl TenantKeys for Keys {
    async fn container_api_key(&self, _: &TenantId) -> Result<ApiKey, Error> {
        if self.hang {
            self.reading.notify_one();
            futures::future::pending::<()>().await;
        }
        Ok(ApiKey::new(KEY).unwrap())
    }

    async fn incarnation(&self, _: &TenantId) -> Result<Incarnation, Error> {
        Ok(Incarnation::parse("first-life").unwrap())
    }
}

fn pool_config(deadline: Duration) -> PoolConfig {
    let mut config = PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap());
    config.name_prefix = "cp".into();
    config.volumes = false;
    config.startup_deadline = deadline;
    config.poll_interval = Duration::from_millis(5);
    config
}

fn pool_with(
    runtime: Arc<Scripted>,
    probe: Arc<ScriptedProbe>,
    deadline: Duration,
    hang_keys: bool,
) -> TenantPool {
    let config = pool_config(deadline);
    let keys = Keys {
        hang: hang_keys,
        ..Keys::default()
    };
    TenantPool::new(runtime, Arc::new(keys), probe, config).unwrap()
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<container_pool::PoolEvent>,
) -> Vec<PoolEventKind> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.kind);
    }
    out
}

fn failed_count(kinds: &[PoolEventKind]) -> usize {
    kinds
        .iter()
        .filter(|k| matches!(k, PoolEventKind::Failed { .. }))
        .count()
}

#[tokio::test]
async fn the_gate_checks_running_then_docker_health_then_http() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![
            info(ContainerState::Created, HealthStatus::None, false),
            ContainerInfo {
                health_failing_streak: 1,
                ..info(ContainerState::Running, HealthStatus::Starting, true)
            },
            info(ContainerState::Running, HealthStatus::Healthy, true),
        ],
    );
    let probe = ScriptedProbe::new(vec![
        Err(ProbeError::NotReady("503 booting".into())),
        Ok(()),
    ]);
    let pool = pool_with(
        runtime.clone(),
        probe.clone(),
        Duration::from_secs(5),
        false,
    );
    let mut rx = pool.subscribe();
    pool.ensure(&acme()).await.unwrap();
    let kinds = drain(&mut rx);
    let checks: Vec<ReadinessCheck> = kinds
        .iter()
        .filter_map(|k| match k {
            PoolEventKind::WaitingForHealth { check, .. } => Some(*check),
            _ => None,
        })
        .collect();
    assert_eq!(
        checks,
        vec![
            ReadinessCheck::Running,
            ReadinessCheck::DockerHealth,
            ReadinessCheck::Http
        ],
        "{kinds:?}"
    );
    assert!(matches!(kinds.last(), Some(PoolEventKind::Ready { .. })));
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        2,
        "no HTTP probe while the health check fails"
    );
}

#[tokio::test]
async fn a_starting_health_check_with_no_failure_does_not_hold_back_a_server_that_answers() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(ContainerState::Running, HealthStatus::Starting, true)],
    );
    let probe = ScriptedProbe::new(vec![Ok(())]);
    let pool = pool_with(runtime, probe.clone(), Duration::from_secs(5), false);
    let started = Instant::now();
    pool.ensure(&acme()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_container_still_unhealthy_at_the_deadline_is_unhealthy_and_never_probed() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(
            ContainerState::Running,
            HealthStatus::Unhealthy {
                last_output: "connect: connection refused".into(),
            },
            true,
        )],
    );
    let probe = ScriptedProbe::new(vec![Ok(())]);
    let pool = pool_with(runtime, probe.clone(), Duration::from_millis(300), false);
    match pool.ensure(&acme()).await {
        Err(Error::Unhealthy { last_output, .. }) => {
            assert_eq!(last_output, "connect: connection refused")
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(probe.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_key_is_unauthorized_at_once_not_a_timeout() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let probe = ScriptedProbe::new(vec![Err(ProbeError::Unauthorized)]);
    let pool = pool_with(runtime, probe.clone(), Duration::from_secs(10), false);
    let started = Instant::now();
    let err = pool.ensure(&acme()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
}

/// The probe is asked for the container's own worker id (its name, the pool's
/// `WAHA_WORKER_ID`); a server reporting another one stops the wait at once with a typed,
/// permanent error, scrubbed like all container output, and exactly one `Failed` event.
#[tokio::test]
async fn a_server_reporting_another_worker_id_is_a_mismatch_at_once() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let probe = ScriptedProbe::new(vec![Err(ProbeError::WorkerMismatch {
        expected: "cp-acme-0".into(),
        reported: format!("cp-other-0/{KEY}"),
    })]);
    let pool = pool_with(runtime, probe.clone(), Duration::from_secs(10), false);
    let mut rx = pool.subscribe();
    let started = Instant::now();
    let err = pool.ensure(&acme()).await.unwrap_err();
    support::assert_worker_mismatch(&err, "cp-acme-0", "cp-other-0/<redacted>");
    assert!(started.elapsed() < Duration::from_secs(2), "not polled");
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
    assert_eq!(*probe.workers.lock().unwrap(), vec!["cp-acme-0".to_owned()]);
    assert_eq!(failed_count(&drain(&mut rx)), 1);
}

#[tokio::test]
async fn a_crash_loop_under_a_restart_policy_is_exited_with_scrubbed_logs() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![ContainerInfo {
            exit_code: Some(3),
            restart_count: 2,
            ..info(ContainerState::Restarting, HealthStatus::None, false)
        }],
    );
    let probe = ScriptedProbe::new(vec![Ok(())]);
    let pool = pool_with(runtime, probe, Duration::from_secs(10), false);
    let mut rx = pool.subscribe();
    let started = Instant::now();
    let err = pool.ensure(&acme()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reported at once"
    );
    match &err {
        Error::Exited {
            exit_code,
            last_logs,
            oom_killed,
            ..
        } => {
            assert_eq!(*exit_code, Some(3));
            assert!(!oom_killed);
            assert_eq!(last_logs.len(), 3);
            assert_eq!(last_logs[1], "config: WAHA_API_KEY=<redacted>");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let kinds = drain(&mut rx);
    assert_eq!(failed_count(&kinds), 1, "{kinds:?}");
    let text = format!("{err} {err:?} {kinds:?}");
    assert!(!text.contains(KEY), "{text}");
}

#[tokio::test]
async fn a_restart_during_the_gate_is_exited_even_if_running_again() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![
            ContainerInfo {
                health_failing_streak: 1,
                ..info(ContainerState::Running, HealthStatus::Starting, true)
            },
            ContainerInfo {
                restart_count: 1,
                exit_code: Some(137),
                oom_killed: true,
                health_failing_streak: 1,
                ..info(ContainerState::Running, HealthStatus::Starting, true)
            },
        ],
    );
    let pool = pool_with(
        runtime,
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_secs(10),
        false,
    );
    match pool.ensure(&acme()).await {
        Err(e @ Error::Exited { .. }) => {
            assert!(matches!(
                e,
                Error::Exited {
                    exit_code: Some(137),
                    oom_killed: true,
                    ..
                }
            ));
            assert!(e.to_string().contains("out of memory"), "{e}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[tokio::test]
async fn one_deadline_bounds_a_runtime_call_that_never_answers() {
    let runtime = Scripted::new(
        OnCreate::Hang,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let pool = pool_with(
        runtime,
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_millis(300),
        false,
    );
    let mut rx = pool.subscribe();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), pool.ensure(&acme()))
        .await
        .expect("ensure must not outlive its deadline")
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    match &err {
        Error::StartupTimeout {
            last_probe_error,
            elapsed,
            ..
        } => {
            assert!(last_probe_error.contains("creating"), "{last_probe_error}");
            assert!(*elapsed >= Duration::from_millis(300));
        }
        other => panic!("expected StartupTimeout, got {other:?}"),
    }
    assert_eq!(failed_count(&drain(&mut rx)), 1);
}

#[tokio::test]
async fn one_deadline_bounds_a_key_store_that_never_answers() {
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let pool = pool_with(
        runtime.clone(),
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_millis(300),
        true,
    );
    let err = tokio::time::timeout(Duration::from_secs(5), pool.ensure(&acme()))
        .await
        .expect("ensure must not outlive its deadline")
        .unwrap_err();
    assert!(
        matches!(&err, Error::StartupTimeout { last_probe_error, .. } if last_probe_error.contains("API key")),
        "{err:?}"
    );
    assert_eq!(runtime.created.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_container_another_replica_created_first_is_started_and_used() {
    let runtime = Scripted::new(
        OnCreate::ConflictWithCreated,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let pool = pool_with(
        runtime.clone(),
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_secs(5),
        false,
    );
    let endpoint = pool.ensure(&acme()).await.unwrap();
    assert_eq!(endpoint.container.as_str(), "c1");
    assert_eq!(runtime.created.load(Ordering::SeqCst), 1);
    assert_eq!(
        runtime.started.load(Ordering::SeqCst),
        1,
        "the container found after the conflict is started"
    );
}

#[tokio::test]
async fn a_failed_create_emits_exactly_one_failed_event() {
    let runtime = Scripted::new(
        OnCreate::Fail,
        vec![info(ContainerState::Running, HealthStatus::None, true)],
    );
    let pool = pool_with(
        runtime,
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_secs(5),
        false,
    );
    let mut rx = pool.subscribe();
    assert!(matches!(
        pool.ensure(&acme()).await,
        Err(Error::StartFailed { .. })
    ));
    let kinds = drain(&mut rx);
    assert_eq!(failed_count(&kinds), 1, "{kinds:?}");
}

/// Everything `tracing` writes while the guard lives (this thread: the test runtime is
/// single-threaded).
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Captured(writer.clone()))
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

const OLD_KEY: &str = "an-old-rotated-key-9876543210";

#[tokio::test]
async fn health_check_output_is_scrubbed_in_logs_events_and_the_unhealthy_error() {
    let (logs, _guard) = capture_logs();
    let runtime = Scripted::new(
        OnCreate::Ok,
        vec![info(
            ContainerState::Running,
            HealthStatus::Unhealthy {
                last_output: format!(
                    "curl -H 'X-Api-Key: {KEY}' failed; WHATSAPP_API_KEY={OLD_KEY} rejected"
                ),
            },
            true,
        )],
    );
    let pool = pool_with(
        runtime,
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_millis(300),
        false,
    );
    let mut rx = pool.subscribe();
    let err = pool.ensure(&acme()).await.unwrap_err();
    match &err {
        Error::Unhealthy { last_output, .. } => assert_eq!(
            last_output,
            "curl -H 'X-Api-Key: <redacted> failed; WHATSAPP_API_KEY=<redacted> rejected"
        ),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    let kinds = drain(&mut rx);
    let details: Vec<&String> = kinds
        .iter()
        .filter_map(|k| match k {
            PoolEventKind::WaitingForHealth { detail, .. } => Some(detail),
            _ => None,
        })
        .collect();
    assert!(
        details.iter().any(|d| d.contains("<redacted>")),
        "{kinds:?}"
    );
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("waiting for readiness") && logged.contains("health check failing"),
        "the capture works: {logged}"
    );
    let text = format!("{err} {err:?} {kinds:?} {logged}");
    for secret in [KEY, OLD_KEY] {
        assert!(!text.contains(secret), "a key leaked: {text}");
    }
}

#[tokio::test]
async fn exit_logs_of_a_container_started_with_a_rotated_key_are_scrubbed() {
    const DASHBOARD_PASSWORD: &str = "hunter2-dashboard-password";
    let runtime = Arc::new(Scripted {
        logs: vec![
            format!("config: WAHA_API_KEY={OLD_KEY} engine=NOWEB"),
            format!("fatal: key {KEY} refused"),
            format!("dashboard login with {DASHBOARD_PASSWORD} failed"),
        ],
        ..Arc::into_inner(Scripted::new(
            OnCreate::Ok,
            vec![ContainerInfo {
                exit_code: Some(1),
                ..info(
                    ContainerState::Exited { exit_code: Some(1) },
                    HealthStatus::None,
                    false,
                )
            }],
        ))
        .unwrap()
    });
    let mut config = pool_config(Duration::from_secs(5));
    config.extra_env.push(container_pool::EnvVar::secret(
        "WAHA_DASHBOARD_PASSWORD",
        DASHBOARD_PASSWORD,
    ));
    let pool = TenantPool::new(
        runtime,
        Arc::new(Keys::default()),
        ScriptedProbe::new(vec![Ok(())]),
        config,
    )
    .unwrap();
    match pool.ensure(&acme()).await {
        Err(Error::Exited { last_logs, .. }) => assert_eq!(
            last_logs,
            vec![
                "config: WAHA_API_KEY=<redacted> engine=NOWEB".to_owned(),
                "fatal: key <redacted> refused".to_owned(),
                "dashboard login with <redacted> failed".to_owned(),
            ]
        ),
        other => panic!("expected Exited, got {other:?}"),
    }
}

/// A container of tenant `acme` whose slot label is `slot` (readable or not).
fn labelled(id: &str, name: &str, slot: &str) -> ContainerInfo {
    ContainerInfo {
        id: ContainerId::new(id),
        name: name.into(),
        labels: [
            (container_pool::labels::MANAGED_BY, "chipfleet"),
            (container_pool::labels::TENANT, "acme"),
            (container_pool::labels::SLOT, slot),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..info(ContainerState::Running, HealthStatus::None, true)
    }
}

#[tokio::test]
async fn tenant_stats_leaves_out_a_container_with_an_unreadable_slot_label() {
    let runtime = Scripted::new(OnCreate::Ok, vec![]);
    runtime.listed.lock().unwrap().extend([
        labelled("c9", "cp-acme-garbled", "not-a-number"),
        labelled("c1", "cp-acme-1", "1"),
    ]);
    let pool = pool_with(
        runtime,
        ScriptedProbe::new(vec![Ok(())]),
        Duration::from_secs(5),
        false,
    );
    let stats = pool.tenant_stats(&acme()).await.unwrap();
    let slots: Vec<(u32, &str)> = stats
        .iter()
        .map(|s| (s.slot, s.container.as_str()))
        .collect();
    assert_eq!(slots, vec![(1, "cp-acme-1")]);
}

#[tokio::test]
async fn removing_a_container_with_an_unreadable_slot_label_does_not_wait_for_slot_0() {
    let runtime = Scripted::new(OnCreate::Ok, vec![]);
    runtime
        .listed
        .lock()
        .unwrap()
        .push(labelled("c9", "cp-acme-garbled", "x"));
    // An ensure of slot 0 holds that slot's flight (stuck reading the key) for 5 s.
    let keys = Arc::new(Keys {
        hang: true,
        ..Keys::default()
    });
    let pool = TenantPool::new(
        runtime,
        keys.clone(),
        ScriptedProbe::new(vec![Ok(())]),
        pool_config(Duration::from_secs(5)),
    )
    .unwrap();
    let ensuring = tokio::spawn({
        let pool = pool.clone();
        async move { pool.ensure(&acme()).await }
    });
    // The ensure holds slot 0's flight once it is reading the key.
    keys.reading.notified().await;
    let removed = tokio::time::timeout(Duration::from_secs(2), pool.remove_tenant(&acme(), false))
        .await
        .expect("remove_tenant waited for slot 0's ensure")
        .unwrap();
    assert_eq!(removed, vec!["cp-acme-garbled"]);
    ensuring.abort();
}
