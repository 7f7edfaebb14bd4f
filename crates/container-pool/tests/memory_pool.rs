//! The pool on the in-memory runtime, with `waha-sim` running in-process on 127.0.0.1: real
//! HTTP readiness probes, no Docker.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use container_pool::{
    AddressingPolicy, ContainerRuntime, ContainerState, Error, HostPorts, IdleAction, ImageRef,
    InMemoryPortStore, InMemoryRuntime, LabelSelector, ManualClock, PoolConfig, PoolEventKind,
    PortAllocationStore, ReadinessProbe, RolloutOptions, TenantPool, WahaHealthProbe, labels,
};
use support::{
    Activity, Quirk, SimLauncher, Tenants, create_session, list_sessions, run_id, tenant, tenants,
};

const IMAGE: &str = "chipfleet/waha-sim:dev";

fn config(managed_by: &str) -> PoolConfig {
    let mut config = PoolConfig::new(ImageRef::parse(IMAGE).unwrap());
    config.managed_by = managed_by.to_owned();
    config.name_prefix = "cp".to_owned();
    config.startup_deadline = Duration::from_secs(10);
    config.poll_interval = Duration::from_millis(20);
    config.sessions_per_container = 2;
    config
}

struct Fixture {
    runtime: Arc<InMemoryRuntime>,
    tenants: Arc<Tenants>,
    pool: TenantPool,
}

fn fixture_with(config: PoolConfig) -> Fixture {
    let runtime = Arc::new(InMemoryRuntime::new(Arc::new(SimLauncher::new())).with_images([IMAGE]));
    fixture_on(runtime, config)
}

fn fixture_on(runtime: Arc<InMemoryRuntime>, config: PoolConfig) -> Fixture {
    let tenants = tenants();
    let probe = Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), tenants.clone(), probe, config).unwrap();
    Fixture {
        runtime,
        tenants,
        pool,
    }
}

fn fixture() -> Fixture {
    fixture_with(config(&format!("test-{}", run_id())))
}

#[tokio::test]
async fn ensure_returns_a_ready_endpoint_with_the_tenants_key() {
    let f = fixture();
    let acme = tenant("acme");
    let endpoint = f.pool.ensure(&acme).await.unwrap();
    assert_eq!(endpoint.api_key.expose_secret(), f.tenants.key_of(&acme));
    assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
    // The endpoint answers an authenticated call, and refuses a wrong key.
    let http = reqwest::Client::new();
    let ok = http
        .get(endpoint.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", endpoint.api_key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = http
        .get(endpoint.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // The container carries the pool's labels and the spec's environment.
    let info = f.runtime.inspect(&endpoint.container).await.unwrap();
    assert_eq!(info.label(labels::TENANT), Some("acme"));
    assert_eq!(info.label(labels::SLOT), Some("0"));
    assert_eq!(info.label(labels::SPEC_HASH).map(str::len), Some(16));
    assert_eq!(info.name, "cp-acme-0");
    // Idempotent: the same container again.
    let again = f.pool.ensure(&acme).await.unwrap();
    assert_eq!(again.container, endpoint.container);
    assert_eq!(
        f.runtime
            .list(&LabelSelector::new(labels::TENANT, "acme"))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_hundred_concurrent_ensures_make_one_container() {
    let f = fixture();
    let acme = tenant("acme");
    let mut events = f.pool.subscribe();
    let calls = (0..100).map(|_| {
        let pool = f.pool.clone();
        let acme = acme.clone();
        tokio::spawn(async move { pool.ensure(&acme).await })
    });
    let results = futures::future::join_all(calls).await;
    let ids: std::collections::HashSet<_> = results
        .into_iter()
        .map(|r| r.unwrap().unwrap().container)
        .collect();
    assert_eq!(ids.len(), 1, "every caller got the same container");
    let all = f
        .runtime
        .list(&LabelSelector::new(
            labels::MANAGED_BY,
            &f.pool.config().managed_by,
        ))
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "exactly one container was created");
    let mut ready = 0;
    let mut creating = 0;
    while let Ok(e) = events.try_recv() {
        ready += usize::from(matches!(e.kind, PoolEventKind::Ready { .. }));
        creating += usize::from(matches!(e.kind, PoolEventKind::Creating));
    }
    assert_eq!(
        (creating, ready),
        (1, 1),
        "one creation and one readiness wait"
    );
}

#[tokio::test]
async fn a_slow_start_within_the_deadline_succeeds_and_reports_progress() {
    let mut cfg = config(&format!("test-{}", run_id()));
    // The simulator refuses connections for 1.5 s: more than a short fixed timeout allows.
    cfg.extra_env.push(container_pool::EnvVar::plain(
        "SIM_STARTUP_DELAY_MS",
        "1500",
    ));
    cfg.startup_deadline = Duration::from_secs(8);
    let f = fixture_with(cfg);
    let mut events = f.pool.subscribe();
    let started = Instant::now();
    f.pool.ensure(&tenant("slow")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    assert!(
        matches!(kinds.first(), Some(PoolEventKind::Creating)),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| matches!(k, PoolEventKind::Starting)));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, PoolEventKind::WaitingForHealth { .. }))
    );
    match kinds.last() {
        Some(PoolEventKind::Ready { took }) => {
            assert!(*took >= Duration::from_millis(1400), "{took:?}")
        }
        other => panic!("last event should be Ready, got {other:?}"),
    }
}

#[tokio::test]
async fn a_container_that_never_gets_ready_times_out_at_the_deadline() {
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.extra_env.push(container_pool::EnvVar::plain(
        "SIM_STARTUP_DELAY_MS",
        "600000",
    ));
    cfg.startup_deadline = Duration::from_millis(800);
    let f = fixture_with(cfg);
    let mut events = f.pool.subscribe();
    let started = Instant::now();
    let err = f.pool.ensure(&tenant("never")).await.unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::StartupTimeout {
            elapsed,
            deadline,
            last_probe_error,
            ..
        } => {
            assert_eq!(*deadline, Duration::from_millis(800));
            assert!(
                *elapsed >= Duration::from_millis(800) && *elapsed < Duration::from_millis(1500),
                "{elapsed:?}"
            );
            assert!(!last_probe_error.is_empty());
        }
        other => panic!("expected StartupTimeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(err.is_retryable());
    let mut failed = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let PoolEventKind::Failed { error, .. } = e.kind {
            failed.push(error);
        }
    }
    assert_eq!(
        failed,
        vec!["startup_timeout"],
        "exactly one Failed event names the error"
    );
}

#[tokio::test]
async fn a_killed_container_is_recreated_by_the_next_ensure() {
    let f = fixture();
    let acme = tenant("acme");
    let first = f.pool.ensure(&acme).await.unwrap();
    f.runtime.kill(&first.container, 137).await.unwrap();
    let second = f.pool.ensure(&acme).await.unwrap();
    assert_ne!(second.container, first.container);
    assert!(matches!(
        f.runtime.inspect(&first.container).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        f.runtime.inspect(&second.container).await.unwrap().state,
        ContainerState::Running
    );
}

#[tokio::test]
async fn a_process_that_exits_while_starting_is_reported_with_its_logs() {
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.extra_env.push(container_pool::EnvVar::plain(
        "SIM_STARTUP_DELAY_MS",
        "600000",
    ));
    let f = fixture_with(cfg);
    let pool = f.pool.clone();
    let waiting = tokio::spawn(async move { pool.ensure(&tenant("crashy")).await });
    let id = loop {
        let found = f
            .runtime
            .list(&LabelSelector::new(labels::TENANT, "crashy"))
            .await
            .unwrap();
        if let Some(c) = found
            .into_iter()
            .find(|c| c.state == ContainerState::Running)
        {
            break c.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    f.runtime.kill(&id, 3).await.unwrap();
    match waiting.await.unwrap() {
        Err(Error::Exited {
            exit_code,
            last_logs,
            ..
        }) => {
            assert_eq!(exit_code, Some(3));
            assert!(
                last_logs.iter().any(|l| l.contains("exit code 3")),
                "{last_logs:?}"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_image_and_a_failed_start_are_distinct_errors() {
    let runtime =
        Arc::new(InMemoryRuntime::new(Arc::new(SimLauncher::new())).with_images(["other/image:1"]));
    let f = fixture_on(runtime, config(&format!("test-{}", run_id())));
    assert!(
        matches!(f.pool.ensure(&tenant("acme")).await, Err(Error::ImageMissing { image }) if image == IMAGE)
    );

    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.extra_env.push(container_pool::EnvVar::plain(
        "SIM_TIME_SCALE",
        "not-a-number",
    ));
    let f = fixture_with(cfg);
    match f.pool.ensure(&tenant("acme")).await {
        Err(Error::StartFailed { reason, .. }) => {
            assert!(reason.contains("SIM_TIME_SCALE"), "{reason}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

/// Everything `tracing` writes while the guard lives (this thread; the tests' runtime is
/// single-threaded, so the pool and the simulators log here).
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Captured(writer.clone()))
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn the_api_key_never_appears_in_logs_debug_output_errors_or_events() {
    let (logs, _guard) = capture_logs();
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.extra_env.push(container_pool::EnvVar::plain(
        "SIM_STARTUP_DELAY_MS",
        "600000",
    ));
    cfg.startup_deadline = Duration::from_millis(300);
    let f = fixture_with(cfg);
    let t = tenant("secretive");
    let key = f.tenants.key_of(&t);
    let mut events = f.pool.subscribe();
    let err = f.pool.ensure(&t).await.unwrap_err();
    let mut text = format!("{err} {err:?} {:?}", f.pool);
    while let Ok(e) = events.try_recv() {
        text.push_str(&format!("{e:?}"));
    }
    let spec_debug = format!(
        "{:?}",
        f.runtime
            .list(&LabelSelector::new(labels::TENANT, "secretive"))
            .await
            .unwrap()
    );
    text.push_str(&spec_debug);
    let ok = fixture();
    let endpoint = ok.pool.ensure(&t).await.unwrap();
    text.push_str(&format!("{endpoint:?}"));
    // A rotation goes through the logs too.
    let rotated = ok.tenants.rotate(&t);
    ok.pool.ensure(&t).await.unwrap();
    assert!(!text.contains(&key), "the key leaked: {text}");
    assert!(!text.contains(endpoint.api_key.expose_secret()));
    assert!(text.contains("<redacted>"));
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("container not ready") && logged.contains("creating container"),
        "the capture works: {logged}"
    );
    for secret in [
        key.as_str(),
        rotated.as_str(),
        endpoint.api_key.expose_secret(),
    ] {
        assert!(!logged.contains(secret), "a key was logged: {logged}");
    }
}

/// The labels of the tenant's volumes, by name.
async fn volume_labels(
    f: &Fixture,
    t: &container_pool::TenantId,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let selector = LabelSelector::new(labels::MANAGED_BY, &f.pool.config().managed_by)
        .and(labels::TENANT, t.as_str());
    f.runtime
        .list_volumes(&selector)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.labels))
        .collect()
}

/// The same tenant (same incarnation) gets its own volume back, with its sessions.
#[tokio::test]
async fn a_reused_volume_brings_old_sessions_back_to_the_same_incarnation() {
    let f = fixture();
    let t = tenant("keeper");
    let first = f.pool.ensure(&t).await.unwrap();
    create_session(&first, "chip-old").await;
    let volumes = volume_labels(&f, &t).await;
    assert_eq!(
        volumes["cp-keeper-0-sessions"][labels::INCARNATION],
        f.tenants.incarnation_of(&t).as_str(),
        "the volume is labelled with the tenant's incarnation"
    );
    f.pool.remove_tenant(&t, false).await.unwrap();
    let second = f.pool.ensure(&t).await.unwrap();
    assert_ne!(second.container, first.container);
    let listed = list_sessions(&second).await;
    assert!(listed.to_string().contains("chip-old"), "{listed}");
}

/// A tenant purged with its volume kept, then created again under the same id (a new
/// incarnation): its volume is refused with a typed conflict, nothing is created or mounted,
/// and the volume is left as it was (the earlier tenant, restored, still finds its sessions).
#[tokio::test]
async fn a_reused_tenant_id_never_mounts_the_earlier_tenants_volume() {
    let f = fixture();
    let t = tenant("reused");
    let earlier = f.tenants.incarnation_of(&t);
    let first = f.pool.ensure(&t).await.unwrap();
    create_session(&first, "chip-of-the-earlier-customer").await;
    f.pool.remove_tenant(&t, false).await.unwrap();
    let before = volume_labels(&f, &t).await;

    let later = f.tenants.reincarnate(&t);
    assert_ne!(later, earlier);
    let err = f.pool.ensure(&t).await.unwrap_err();
    let reason =
        support::assert_volume_refused(&err, &f.pool, &t, "cp-reused-0-sessions", &earlier).await;
    assert!(reason.contains(labels::INCARNATION), "{reason}");
    assert_eq!(
        volume_labels(&f, &t).await,
        before,
        "the volume is untouched"
    );

    // The earlier tenant (restored from a backup, say) still gets its own volume back.
    support::assert_restored_tenant_finds_session(
        &f.pool,
        &f.tenants,
        &t,
        earlier,
        "chip-of-the-earlier-customer",
    )
    .await;
}

/// The earlier tenant's container still runs (purged without removing it): the new
/// incarnation is not handed that container either; it is removed (its volume kept) and the
/// volume refused.
#[tokio::test]
async fn a_reused_tenant_id_is_not_handed_the_earlier_tenants_running_container() {
    let f = fixture();
    let t = tenant("running");
    let first = f.pool.ensure(&t).await.unwrap();
    let mut events = f.pool.subscribe();
    f.tenants.reincarnate(&t);
    let err = f.pool.ensure(&t).await.unwrap_err();
    assert!(matches!(err, Error::VolumeConflict { .. }), "{err:?}");
    assert!(matches!(
        f.runtime.inspect(&first.container).await,
        Err(Error::NotFound { .. })
    ));
    assert!(f.pool.containers(&t).await.unwrap().is_empty());
    let mut removed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let PoolEventKind::Removed { reason } = event.kind {
            removed.push(reason);
        }
    }
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains("incarnation"), "{removed:?}");
    assert_eq!(volume_labels(&f, &t).await.len(), 1, "the volume is kept");
}

#[tokio::test]
async fn orphan_sweep_removes_exactly_the_deleted_tenants_containers() {
    let f = fixture();
    let (keep, gone) = (tenant("keep"), tenant("gone"));
    f.pool.ensure(&keep).await.unwrap();
    f.pool.ensure(&gone).await.unwrap();
    f.pool.ensure_slot(&gone, 1).await.unwrap();
    // Another pool's container on the same runtime is never touched.
    let mut other_config = config("another-pool");
    other_config.name_prefix = "other".into();
    let other = fixture_on(f.runtime.clone(), other_config);
    other.pool.ensure(&gone).await.unwrap();
    f.tenants.delete(&gone);
    let report = f
        .pool
        .sweep_orphans(f.tenants.as_ref(), true)
        .await
        .unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, vec!["cp-gone-0", "cp-gone-1"]);
    assert_eq!(report.removed_volumes.len(), 2, "{report:?}");
    assert_eq!(f.pool.containers(&keep).await.unwrap().len(), 1);
    assert_eq!(other.pool.containers(&gone).await.unwrap().len(), 1);
    let again = f
        .pool
        .sweep_orphans(f.tenants.as_ref(), true)
        .await
        .unwrap();
    assert!(again.removed.is_empty() && again.removed_volumes.is_empty());
}

#[tokio::test]
async fn idle_reaping_stops_exactly_the_idle_containers_after_the_ttl() {
    let mut cfg = config(&format!("test-{}", run_id()));
    let clock = ManualClock::new(SystemTime::now());
    cfg.clock = Arc::new(clock.clone());
    cfg.idle_ttl = Duration::from_secs(30 * 60);
    let f = fixture_with(cfg);
    let (busy, idle) = (tenant("busy"), tenant("idle"));
    f.pool.ensure(&busy).await.unwrap();
    f.pool.ensure(&idle).await.unwrap();
    let activity = Activity::default();
    activity.0.lock().unwrap().insert((busy.clone(), 0), 2);
    let early = f.pool.reap_idle(&activity).await.unwrap();
    assert!(
        early.stopped.is_empty(),
        "nothing is reaped before the TTL: {early:?}"
    );
    clock.advance(Duration::from_secs(30 * 60 - 1));
    let almost = f.pool.reap_idle(&activity).await.unwrap();
    assert!(almost.stopped.is_empty(), "one second short: {almost:?}");
    clock.advance(Duration::from_secs(1));
    let report = f.pool.reap_idle(&activity).await.unwrap();
    assert_eq!(report.stopped, vec!["cp-idle-0"]);
    assert_eq!(
        f.pool.containers(&busy).await.unwrap()[0].state,
        ContainerState::Running
    );
    assert!(matches!(
        f.pool.containers(&idle).await.unwrap()[0].state,
        ContainerState::Exited { .. }
    ));
    // The next ensure brings the idle tenant back.
    f.pool.ensure(&idle).await.unwrap();

    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.idle_ttl = Duration::ZERO;
    cfg.idle_action = IdleAction::Remove;
    let f = fixture_with(cfg);
    f.pool.ensure(&idle).await.unwrap();
    let report = f.pool.reap_idle(&Activity::default()).await.unwrap();
    assert_eq!(report.removed, vec!["cp-idle-0"]);
    assert!(f.pool.containers(&idle).await.unwrap().is_empty());
}

#[tokio::test]
async fn replace_tenant_touches_that_tenant_only_also_when_it_has_nothing_drifted() {
    let managed_by = format!("test-{}", run_id());
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(SimLauncher::new()))
            .with_images([IMAGE, "chipfleet/waha-sim:next"]),
    );
    let old = fixture_on(runtime.clone(), config(&managed_by));
    for name in ["a", "b"] {
        old.pool.ensure(&tenant(name)).await.unwrap();
    }
    let mut next = config(&managed_by);
    next.image = ImageRef::parse("chipfleet/waha-sim:next").unwrap();
    let probe: Arc<dyn ReadinessProbe> =
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), old.tenants.clone(), probe, next).unwrap();

    let report = pool.replace_tenant(&tenant("b")).await.unwrap();
    assert_eq!(report.replaced, vec!["cp-b-0"]);
    assert!(
        report.pending.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    let drift = pool.drifted().await.unwrap();
    assert_eq!(
        drift.drifted.keys().cloned().collect::<Vec<_>>(),
        vec![tenant("a")],
        "a is left as it was"
    );
    // b is up to date now: asking again replaces nothing, and never another tenant (a
    // rolling replace with b as canary would move on to a).
    let again = pool.replace_tenant(&tenant("b")).await.unwrap();
    assert!(
        again.replaced.is_empty() && again.pending.is_empty(),
        "{again:?}"
    );
    assert_eq!(
        pool.drifted().await.unwrap().drifted.len(),
        1,
        "a still drifted"
    );
}

#[tokio::test]
async fn rolling_replace_rolls_a_new_image_out_one_tenant_at_a_time_after_a_canary() {
    let managed_by = format!("test-{}", run_id());
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(SimLauncher::new()))
            .with_images([IMAGE, "chipfleet/waha-sim:next"]),
    );
    let old = fixture_on(runtime.clone(), config(&managed_by));
    for name in ["a", "b", "c"] {
        old.pool.ensure(&tenant(name)).await.unwrap();
    }
    let mut next = config(&managed_by);
    next.image = ImageRef::parse("chipfleet/waha-sim:next").unwrap();
    let probe: Arc<dyn ReadinessProbe> =
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), old.tenants.clone(), probe.clone(), next).unwrap();
    assert_eq!(pool.drifted().await.unwrap().drifted.len(), 3);
    let mut events = pool.subscribe();
    let report = pool
        .rolling_replace(&RolloutOptions {
            canary: Some(tenant("b")),
            max_tenants: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        report.replaced,
        vec!["cp-b-0", "cp-a-0"],
        "canary first, then in order"
    );
    assert_eq!(report.pending, vec![tenant("c")]);
    // One tenant at a time: b is ready before a is removed.
    let mut order = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e.kind {
            PoolEventKind::Removed { .. } => order.push(format!("removed {}", e.container)),
            PoolEventKind::Ready { .. } => order.push(format!("ready {}", e.container)),
            _ => {}
        }
    }
    assert_eq!(
        order,
        vec![
            "removed cp-b-0",
            "ready cp-b-0",
            "removed cp-a-0",
            "ready cp-a-0"
        ]
    );
    let rest = pool
        .rolling_replace(&RolloutOptions::default())
        .await
        .unwrap();
    assert_eq!(rest.replaced, vec!["cp-c-0"]);
    assert!(pool.drifted().await.unwrap().drifted.is_empty());

    // An image that is not there: nothing is removed, no tenant is left without a container.
    let ids_before = container_ids(&runtime, &managed_by).await;
    let mut broken = config(&managed_by);
    broken.image = ImageRef::parse("chipfleet/waha-sim:missing").unwrap();
    let pool = TenantPool::new(runtime.clone(), old.tenants.clone(), probe, broken).unwrap();
    let err = pool
        .rolling_replace(&RolloutOptions {
            canary: Some(tenant("c")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ImageMissing { .. }), "{err:?}");
    assert_eq!(container_ids(&runtime, &managed_by).await, ids_before);
    for c in runtime
        .list(&LabelSelector::new(labels::MANAGED_BY, &managed_by))
        .await
        .unwrap()
    {
        assert_eq!(c.state, ContainerState::Running, "{}", c.name);
    }
}

async fn container_ids(runtime: &InMemoryRuntime, managed_by: &str) -> Vec<String> {
    let mut ids: Vec<String> = runtime
        .list(&LabelSelector::new(labels::MANAGED_BY, managed_by))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn rolling_replace_does_not_start_a_container_idle_reaping_stopped() {
    let managed_by = format!("test-{}", run_id());
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(SimLauncher::new()))
            .with_images([IMAGE, "chipfleet/waha-sim:next"]),
    );
    let mut cfg = config(&managed_by);
    cfg.idle_ttl = Duration::ZERO;
    let old = fixture_on(runtime.clone(), cfg);
    old.pool.ensure(&tenant("sleepy")).await.unwrap();
    old.pool.ensure(&tenant("busy")).await.unwrap();
    let activity = Activity::default();
    activity.0.lock().unwrap().insert((tenant("busy"), 0), 1);
    assert_eq!(
        old.pool.reap_idle(&activity).await.unwrap().stopped,
        vec!["cp-sleepy-0"]
    );
    let mut next = config(&managed_by);
    next.image = ImageRef::parse("chipfleet/waha-sim:next").unwrap();
    let probe: Arc<dyn ReadinessProbe> =
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), old.tenants.clone(), probe, next).unwrap();
    let report = pool
        .rolling_replace(&RolloutOptions::default())
        .await
        .unwrap();
    assert_eq!(report.replaced, vec!["cp-busy-0"]);
    assert_eq!(report.replaced_stopped, vec!["cp-sleepy-0"]);
    let sleepy = pool.containers(&tenant("sleepy")).await.unwrap();
    assert_eq!(sleepy.len(), 1);
    assert_eq!(sleepy[0].state, ContainerState::Created, "not started");
    assert_eq!(sleepy[0].image, "chipfleet/waha-sim:next");
    assert!(pool.drifted().await.unwrap().drifted.is_empty());
    // The next ensure starts it.
    pool.ensure(&tenant("sleepy")).await.unwrap();
}

#[tokio::test]
async fn more_chips_than_a_container_holds_get_more_containers() {
    let f = fixture();
    let t = tenant("big");
    let placement = f.pool.placement();
    // 5 chips, 2 per container: slots 0, 0, 1, 1, 2.
    let mut occupancy: Vec<u32> = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..5 {
        let slot = placement.place(&occupancy);
        if slot as usize == occupancy.len() {
            occupancy.push(0);
        }
        occupancy[slot as usize] += 1;
        slots.push(slot);
        f.pool.ensure_slot(&t, slot).await.unwrap();
    }
    assert_eq!(slots, vec![0, 0, 1, 1, 2]);
    let containers = f.pool.containers(&t).await.unwrap();
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["cp-big-0", "cp-big-1", "cp-big-2"]
    );
    let stats = f.pool.tenant_stats(&t).await.unwrap();
    assert_eq!(stats.len(), 3);
    let limit = stats[0].stats.as_ref().and_then(|s| s.memory_limit_bytes);
    assert_eq!(
        limit,
        Some(2048 * 1024 * 1024),
        "NOWEB with 2 sessions is sized by the 10-session row"
    );
}

#[tokio::test]
async fn host_port_mode_allocates_from_the_range_and_keeps_the_allocation() {
    let store = Arc::new(InMemoryPortStore::new());
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.addressing = AddressingPolicy::HostPort {
        bind: "127.0.0.1".parse().unwrap(),
        ports: HostPorts::Range {
            range: 41000..=41001,
            store: store.clone(),
        },
    };
    let f = fixture_with(cfg);
    let (a, b, c) = (tenant("a"), tenant("b"), tenant("c"));
    f.pool.ensure(&a).await.unwrap();
    f.pool.ensure(&b).await.unwrap();
    async fn addressing_of(f: &Fixture, name: &str) -> Option<String> {
        let all = f
            .runtime
            .list(&LabelSelector::new(
                labels::MANAGED_BY,
                &f.pool.config().managed_by,
            ))
            .await
            .unwrap();
        all.into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.label(labels::ADDRESSING).map(str::to_owned))
    }
    assert_eq!(
        addressing_of(&f, "cp-a-0").await.as_deref(),
        Some("host:127.0.0.1:41000")
    );
    assert_eq!(
        addressing_of(&f, "cp-b-0").await.as_deref(),
        Some("host:127.0.0.1:41001")
    );
    assert!(matches!(
        f.pool.ensure(&c).await,
        Err(Error::PortsExhausted {
            first: 41000,
            last: 41001
        })
    ));
    // Re-creating a container keeps its port: a's container dies, the next ensure makes a
    // new one, on the same allocation, while b's port stays b's.
    let before = f.pool.ensure(&a).await.unwrap();
    f.runtime.kill(&before.container, 137).await.unwrap();
    let after = f.pool.ensure(&a).await.unwrap();
    assert_ne!(
        after.container, before.container,
        "a new container was made"
    );
    assert_eq!(
        addressing_of(&f, "cp-a-0").await.as_deref(),
        Some("host:127.0.0.1:41000")
    );
    assert_eq!(store.allocations().await.unwrap().len(), 2);
    // Removing the tenant frees it.
    f.pool.remove_tenant(&a, true).await.unwrap();
    assert_eq!(store.allocations().await.unwrap().len(), 1);
    f.pool.ensure(&c).await.unwrap();
    assert_eq!(
        addressing_of(&f, "cp-c-0").await.as_deref(),
        Some("host:127.0.0.1:41000")
    );
}

#[tokio::test]
async fn drift_allocates_no_port_and_one_unknown_container_does_not_stop_a_rollout() {
    let managed_by = format!("test-{}", run_id());
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(SimLauncher::new()))
            .with_images([IMAGE, "chipfleet/waha-sim:next"]),
    );
    let store = Arc::new(InMemoryPortStore::new());
    let with_range = |image: &str, range: std::ops::RangeInclusive<u16>| {
        let mut cfg = config(&managed_by);
        cfg.image = ImageRef::parse(image).unwrap();
        cfg.addressing = AddressingPolicy::HostPort {
            bind: "127.0.0.1".parse().unwrap(),
            ports: HostPorts::Range {
                range,
                store: store.clone(),
            },
        };
        cfg
    };
    let old = fixture_on(runtime.clone(), with_range(IMAGE, 42000..=42002));
    for name in ["a", "b", "c"] {
        old.pool.ensure(&tenant(name)).await.unwrap();
    }
    let c_before = old.pool.containers(&tenant("c")).await.unwrap();
    // c's allocation is lost (an operator edited the store): the drift query must not make
    // one up.
    store.release("cp-c-0").await.unwrap();
    let probe: Arc<dyn ReadinessProbe> =
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let next = TenantPool::new(
        runtime.clone(),
        old.tenants.clone(),
        probe.clone(),
        with_range("chipfleet/waha-sim:next", 42000..=42002),
    )
    .unwrap();
    let drift = next.drifted().await.unwrap();
    assert_eq!(drift.drifted.len(), 3);
    assert!(drift.unknown.is_empty());
    let held: Vec<String> = store.allocations().await.unwrap().into_keys().collect();
    assert_eq!(held, vec!["cp-a-0", "cp-b-0"], "drifted() allocated a port");

    // With a range c cannot get a port in, c's wanted spec is unknown: reported, left alone,
    // and a and b are still replaced.
    let narrow = TenantPool::new(
        runtime.clone(),
        old.tenants.clone(),
        probe,
        with_range("chipfleet/waha-sim:next", 42000..=42001),
    )
    .unwrap();
    let report = narrow
        .rolling_replace(&RolloutOptions::default())
        .await
        .unwrap();
    assert_eq!(report.replaced, vec!["cp-a-0", "cp-b-0"]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.unknown.len(), 1, "{:?}", report.unknown);
    assert_eq!(report.unknown[0].0, "cp-c-0");
    assert!(
        matches!(
            report.unknown[0].1,
            Error::PortsExhausted {
                first: 42000,
                last: 42001
            }
        ),
        "{:?}",
        report.unknown
    );
    let c_after = narrow.containers(&tenant("c")).await.unwrap();
    assert_eq!(c_after.len(), 1);
    assert_eq!(c_after[0].id, c_before[0].id, "c was not touched");
    assert_eq!(c_after[0].state, ContainerState::Running);
    let after = narrow.drifted().await.unwrap();
    assert!(after.drifted.is_empty(), "{:?}", after.drifted);
    assert_eq!(after.unknown.len(), 1);
}

#[tokio::test]
async fn the_in_memory_runtime_passes_the_conformance_suite() {
    let key = "conformance-key-123456";
    let spec = container_pool::ContainerSpec {
        name: String::new(),
        image: ImageRef::parse(IMAGE).unwrap(),
        env: vec![
            container_pool::EnvVar::secret("WAHA_API_KEY", key),
            container_pool::EnvVar::plain("SIM_STATE_DIR", "none"),
        ],
        labels: Default::default(),
        resources: container_pool::SizingPolicy::default()
            .resources(container_pool::Engine::Noweb, 1),
        volume: None,
        addressing: container_pool::Addressing::HostPort {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
        },
        container_port: container_pool::WAHA_PORT,
        restart: container_pool::RestartPolicy::No,
    };
    let target = container_pool::conformance::ConformanceTarget {
        runtime: Arc::new(InMemoryRuntime::new(Arc::new(SimLauncher::new())).with_images([IMAGE])),
        spec,
        api_key: container_pool::ApiKey::new(key).unwrap(),
        probe: Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        missing_image: ImageRef::parse("chipfleet/absent:1").unwrap(),
        timeout: Duration::from_secs(10),
        prefix: format!("conf-{}", run_id()),
    };
    container_pool::conformance::run(&target).await;
}

#[tokio::test]
async fn a_rotated_key_recreates_the_container_on_its_volume() {
    let f = fixture();
    let t = tenant("rotating");
    let first = f.pool.ensure(&t).await.unwrap();
    let old_key = first.api_key.expose_secret().to_owned();
    let label = f
        .runtime
        .inspect(&first.container)
        .await
        .unwrap()
        .label(labels::KEY_FINGERPRINT)
        .map(str::to_owned)
        .expect("a key-fingerprint label");
    assert_eq!(label.len(), 32);
    assert!(!label.contains(&old_key));
    let http = reqwest::Client::new();
    let created = http
        .post(first.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", &old_key)
        .json(&serde_json::json!({ "name": "chip-kept" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let new_key = f.tenants.rotate(&t);
    let mut events = f.pool.subscribe();
    let started = Instant::now();
    let second = f.pool.ensure(&t).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "repaired at once, not at the deadline"
    );
    assert_ne!(second.container, first.container);
    assert_eq!(second.api_key.expose_secret(), new_key);
    let removed: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e.kind {
            PoolEventKind::Removed { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec!["API key rotated"]);
    // Same volume: the session made before the rotation is there.
    let listed = list_sessions(&second).await;
    assert!(listed.to_string().contains("chip-kept"), "{listed}");
    assert!(!pool_has_drift(&f).await, "a rotation is not spec drift");
}

async fn pool_has_drift(f: &Fixture) -> bool {
    !f.pool.drifted().await.unwrap().drifted.is_empty()
}

#[tokio::test]
async fn a_pool_with_another_fingerprint_secret_keeps_a_container_that_accepts_the_key() {
    // A restarted host application without a shared secret: the labels do not match, but the
    // container accepts the current key, so it is kept.
    let f = fixture();
    let t = tenant("restarted");
    let first = f.pool.ensure(&t).await.unwrap();
    let again = TenantPool::new(
        f.runtime.clone(),
        f.tenants.clone(),
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        f.pool.config().clone(),
    )
    .unwrap();
    assert_eq!(again.ensure(&t).await.unwrap().container, first.container);
    // With the same configured secret, the fingerprints agree.
    let mut shared = f.pool.config().clone();
    shared.key_fingerprint_secret =
        Some(container_pool::KeyFingerprintSecret::new([7u8; 32]).unwrap());
    let one = fixture_with(shared.clone());
    let two = TenantPool::new(
        one.runtime.clone(),
        one.tenants.clone(),
        Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        shared,
    )
    .unwrap();
    let a = one.pool.ensure(&t).await.unwrap();
    let b = two.ensure(&t).await.unwrap();
    assert_eq!(a.container, b.container);
}

#[tokio::test]
async fn a_container_that_refuses_the_current_key_is_unauthorized_without_waiting() {
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(support::QuirkyLauncher::new(Quirk::WrongKey)))
            .with_images([IMAGE]),
    );
    let f = fixture_on(runtime, config(&format!("test-{}", run_id())));
    let started = Instant::now();
    let err = f.pool.ensure(&tenant("acme")).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not polled until the deadline"
    );
}

/// The server at the container's address reports another worker id (another container
/// answers there): a typed mismatch at once, and no endpoint with the tenant's key.
#[tokio::test]
async fn a_server_reporting_another_worker_id_is_never_handed_out() {
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(support::QuirkyLauncher::new(Quirk::WrongWorker)))
            .with_images([IMAGE]),
    );
    let f = fixture_on(runtime, config(&format!("test-{}", run_id())));
    let started = Instant::now();
    let err = f.pool.ensure(&tenant("acme")).await.unwrap_err();
    support::assert_worker_mismatch(&err, "cp-acme-0", "someone-else");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not polled until the deadline"
    );
}

/// A server that reports no worker id (old WAHA Core) is accepted.
#[tokio::test]
async fn a_server_reporting_no_worker_id_is_accepted() {
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(support::QuirkyLauncher::new(Quirk::NoWorker)))
            .with_images([IMAGE]),
    );
    let f = fixture_on(runtime, config(&format!("test-{}", run_id())));
    f.pool.ensure(&tenant("acme")).await.unwrap();
}

/// A loopback port held by the returned listener, with the next `extra` ports above it free
/// when looked at.
fn held_port_with_free_neighbours(extra: u16) -> (std::net::TcpListener, u16) {
    for _ in 0..100 {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        if port.checked_add(extra).is_none() {
            continue;
        }
        let free =
            (1..=extra).all(|n| std::net::TcpListener::bind(("127.0.0.1", port + n)).is_ok());
        if free {
            return (held, port);
        }
    }
    panic!("found no loopback port with {extra} free neighbours");
}

fn host_port_range(
    managed_by: &str,
    range: std::ops::RangeInclusive<u16>,
    store: Arc<dyn PortAllocationStore>,
) -> PoolConfig {
    let mut cfg = config(managed_by);
    cfg.addressing = AddressingPolicy::HostPort {
        bind: "127.0.0.1".parse().unwrap(),
        ports: HostPorts::Range { range, store },
    };
    cfg
}

/// Host-port mode never allocates a port a socket on this host already holds (the container's
/// published port could not be bound).
#[tokio::test]
async fn host_port_mode_skips_ports_already_bound_on_the_host() {
    let (held, first) = held_port_with_free_neighbours(2);
    let store = Arc::new(InMemoryPortStore::new());
    let f = fixture_with(host_port_range(
        &format!("test-{}", run_id()),
        first..=first + 2,
        store.clone(),
    ));
    f.pool.ensure(&tenant("a")).await.unwrap();
    let allocations = store.allocations().await.unwrap();
    assert_eq!(allocations["cp-a-0"], first + 1, "{allocations:?}");
    drop(held);
}

/// A restarted pool whose store lost its allocations (an in-memory store; a file removed)
/// never hands a port a running container holds to another one: it records the running
/// containers' ports from their labels first. A persisted file keeps them anyway.
#[tokio::test]
async fn a_restarted_pool_never_reissues_a_port_a_running_container_holds() {
    let managed_by = format!("test-{}", run_id());
    let runtime = Arc::new(InMemoryRuntime::new(Arc::new(SimLauncher::new())).with_images([IMAGE]));
    let range = 43000..=43009;
    async fn addressing(f: &Fixture, name: &str) -> Option<String> {
        f.runtime
            .list(&LabelSelector::new(
                labels::MANAGED_BY,
                &f.pool.config().managed_by,
            ))
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.label(labels::ADDRESSING).map(str::to_owned))
    }
    let before = fixture_on(
        runtime.clone(),
        host_port_range(
            &managed_by,
            range.clone(),
            Arc::new(InMemoryPortStore::new()),
        ),
    );
    before.pool.ensure(&tenant("a")).await.unwrap();
    let a_port = addressing(&before, "cp-a-0").await.unwrap();

    // Restart with an empty store: a's port is recorded again, and b gets another one.
    let lost = Arc::new(InMemoryPortStore::new());
    let after = fixture_on(
        runtime.clone(),
        host_port_range(&managed_by, range.clone(), lost.clone()),
    );
    after.pool.ensure(&tenant("b")).await.unwrap();
    let b_port = addressing(&after, "cp-b-0").await.unwrap();
    assert_ne!(
        b_port, a_port,
        "a running container's port was issued again"
    );
    let held = lost.allocations().await.unwrap();
    assert_eq!(
        format!("host:127.0.0.1:{}", held["cp-a-0"]),
        a_port,
        "{held:?}"
    );

    // With a file store the allocations survive the restart as they are.
    let path = std::env::temp_dir().join(format!("cp-ports-{managed_by}.json"));
    let _ = std::fs::remove_file(&path);
    let file = Arc::new(container_pool::FilePortStore::new(&path));
    let persisted = fixture_on(
        runtime.clone(),
        host_port_range(&managed_by, range.clone(), file.clone()),
    );
    persisted.pool.ensure(&tenant("c")).await.unwrap();
    let reopened = fixture_on(
        runtime,
        host_port_range(
            &managed_by,
            range,
            Arc::new(container_pool::FilePortStore::new(&path)),
        ),
    );
    reopened.pool.ensure(&tenant("d")).await.unwrap();
    let mut ports = std::collections::BTreeSet::new();
    for name in ["cp-a-0", "cp-b-0", "cp-c-0", "cp-d-0"] {
        ports.insert(addressing(&reopened, name).await.unwrap());
    }
    assert_eq!(
        ports.len(),
        4,
        "every running container has its own port: {ports:?}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_start_cancelled_mid_launch_does_not_wedge_the_container() {
    let launcher = Arc::new(support::QuirkyLauncher::new(Quirk::HangFirst));
    let runtime = InMemoryRuntime::new(launcher.clone()).with_images([IMAGE]);
    let spec = container_pool::ContainerSpec {
        name: "cancelled".into(),
        image: ImageRef::parse(IMAGE).unwrap(),
        env: vec![
            container_pool::EnvVar::secret("WAHA_API_KEY", "cancel-key-0123456789"),
            container_pool::EnvVar::plain("SIM_STATE_DIR", "none"),
        ],
        labels: Default::default(),
        resources: container_pool::SizingPolicy::default()
            .resources(container_pool::Engine::Noweb, 1),
        volume: None,
        addressing: container_pool::Addressing::HostPort {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
        },
        container_port: container_pool::WAHA_PORT,
        restart: container_pool::RestartPolicy::No,
    };
    let id = runtime.create(&spec).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), runtime.start(&id))
            .await
            .is_err(),
        "the first launch hangs"
    );
    runtime.start(&id).await.unwrap();
    assert_eq!(
        runtime.inspect(&id).await.unwrap().state,
        ContainerState::Running
    );
    assert_eq!(
        launcher.launches.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn an_ensure_dropped_midway_leaves_nothing_that_blocks_the_next() {
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(support::QuirkyLauncher::new(Quirk::HangFirst)))
            .with_images([IMAGE]),
    );
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.startup_deadline = Duration::from_secs(5);
    let f = fixture_on(runtime, cfg);
    let t = tenant("dropped");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), f.pool.ensure(&t))
            .await
            .is_err()
    );
    let started = Instant::now();
    let endpoint = f.pool.ensure(&t).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        f.runtime.inspect(&endpoint.container).await.unwrap().state,
        ContainerState::Running
    );
}

#[tokio::test]
async fn a_failed_ensure_does_not_poison_the_next() {
    let runtime = Arc::new(
        InMemoryRuntime::new(Arc::new(support::QuirkyLauncher::new(Quirk::FailFirst)))
            .with_images([IMAGE]),
    );
    let f = fixture_on(runtime, config(&format!("test-{}", run_id())));
    let t = tenant("flaky");
    assert!(matches!(
        f.pool.ensure(&t).await,
        Err(Error::StartFailed { .. })
    ));
    let endpoint = f.pool.ensure(&t).await.unwrap();
    assert_eq!(
        f.runtime.inspect(&endpoint.container).await.unwrap().state,
        ContainerState::Running
    );
}

#[tokio::test]
async fn a_removal_queued_behind_an_ensure_is_not_hidden_from_later_callers() {
    let mut cfg = config(&format!("test-{}", run_id()));
    cfg.extra_env
        .push(container_pool::EnvVar::plain("SIM_STARTUP_DELAY_MS", "400"));
    let f = fixture_with(cfg);
    let t = tenant("raced");
    let first = {
        let pool = f.pool.clone();
        let t = t.clone();
        tokio::spawn(async move { pool.ensure(&t).await })
    };
    // The container exists and is waiting for readiness.
    while f.pool.containers(&t).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let removal = {
        let pool = f.pool.clone();
        let t = t.clone();
        tokio::spawn(async move { pool.remove_tenant(&t, false).await })
    };
    // Queue the removal behind the ensure before the second caller comes: on this test's
    // current-thread runtime, yielding runs the removal task until it waits for the slot (the
    // in-memory runtime's `list` finishes without I/O, so the slot lock is its first wait, and
    // tokio's mutex serves waiters in order).
    tokio::task::yield_now().await;
    let second = {
        let pool = f.pool.clone();
        let t = t.clone();
        tokio::spawn(async move { pool.ensure(&t).await })
    };
    let first = first
        .await
        .unwrap()
        .expect("the removal waits for the ensure");
    assert_eq!(removal.await.unwrap().unwrap().len(), 1);
    let second = second
        .await
        .unwrap()
        .expect("queued behind the removal, it makes a new container");
    assert_ne!(second.container, first.container);
    assert_eq!(
        f.runtime.inspect(&second.container).await.unwrap().state,
        ContainerState::Running
    );
}

/// A probe that waits `delay_ms` before asking the real one, and says when a probe begins.
struct SlowProbe {
    inner: WahaHealthProbe,
    delay_ms: std::sync::atomic::AtomicU64,
    probing: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl ReadinessProbe for SlowProbe {
    async fn probe(
        &self,
        url: &url::Url,
        key: &container_pool::ApiKey,
        worker_id: &str,
    ) -> Result<(), container_pool::ProbeError> {
        let ms = self.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
        if ms > 0 {
            self.probing.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.inner.probe(url, key, worker_id).await
    }
}

#[tokio::test]
async fn idle_reaping_looks_again_after_waiting_for_a_concurrent_ensure() {
    let mut cfg = config(&format!("test-{}", run_id()));
    let clock = ManualClock::new(SystemTime::now());
    cfg.clock = Arc::new(clock.clone());
    cfg.idle_ttl = Duration::from_secs(300);
    let runtime = Arc::new(InMemoryRuntime::new(Arc::new(SimLauncher::new())).with_images([IMAGE]));
    let probe = Arc::new(SlowProbe {
        inner: WahaHealthProbe::new(Duration::from_secs(1)).unwrap(),
        delay_ms: 0.into(),
        probing: tokio::sync::Notify::new(),
    });
    let pool = TenantPool::new(runtime.clone(), tenants(), probe.clone(), cfg).unwrap();
    let t = tenant("revived");
    pool.ensure(&t).await.unwrap();
    // Recorded as idle by a first reap, then idle past the TTL.
    assert_eq!(
        pool.reap_idle(&Activity::default()).await.unwrap().idle,
        vec!["cp-revived-0"]
    );
    clock.advance(Duration::from_secs(301));
    // Idle past the TTL; now an ensure holds the slot (its probe is slow) while reaping runs.
    probe
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let ensure = {
        let pool = pool.clone();
        let t = t.clone();
        tokio::spawn(async move { pool.ensure(&t).await })
    };
    // The ensure holds the slot once its (slow) probe has begun.
    probe.probing.notified().await;
    let report = pool.reap_idle(&Activity::default()).await.unwrap();
    ensure.await.unwrap().unwrap();
    assert!(
        report.stopped.is_empty(),
        "the ensure that finished meanwhile used it: {report:?}"
    );
    assert_eq!(report.idle, vec!["cp-revived-0"]);
    assert_eq!(
        pool.containers(&t).await.unwrap()[0].state,
        ContainerState::Running
    );
}

#[tokio::test]
async fn the_in_memory_event_stream_reports_lost_events() {
    let runtime = InMemoryRuntime::new(Arc::new(SimLauncher::new()));
    let selector = LabelSelector::new(labels::MANAGED_BY, "lagging");
    let mut events = runtime.events(&selector).await.unwrap();
    for i in 0..1100 {
        let spec = container_pool::ContainerSpec {
            name: format!("lag-{i}"),
            image: ImageRef::parse(IMAGE).unwrap(),
            env: Vec::new(),
            labels: [(labels::MANAGED_BY.to_owned(), "lagging".to_owned())]
                .into_iter()
                .collect(),
            resources: container_pool::SizingPolicy::default()
                .resources(container_pool::Engine::Noweb, 1),
            volume: None,
            addressing: container_pool::Addressing::HostPort {
                bind: "127.0.0.1".parse().unwrap(),
                port: 0,
            },
            container_port: container_pool::WAHA_PORT,
            restart: container_pool::RestartPolicy::No,
        };
        runtime.create(&spec).await.unwrap();
    }
    use futures::StreamExt;
    match events.next().await {
        Some(Err(Error::EventsLagged { missed })) => assert!(missed >= 76, "{missed}"),
        other => panic!("expected EventsLagged first, got {other:?}"),
    }
    assert!(matches!(events.next().await, Some(Ok(_))), "and it goes on");
}
