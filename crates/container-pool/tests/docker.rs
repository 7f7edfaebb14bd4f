//! The pool on the real Docker daemon with the `waha-sim` image. Every container publishes its
//! port on 127.0.0.1 (or is reached on a user network the test created). Each test labels what
//! it creates with its own managed-by value and removes it at the end, so reruns start clean.
//! These tests FAIL when Docker is not available.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use container_pool::{
    AddressingPolicy, ContainerRuntime, ContainerState, DockerRuntime, Error, ImageRef,
    LabelSelector, PoolConfig, RestartPolicy, TenantPool, WahaHealthProbe, labels,
};
use support::{Activity, Tenants, run_id, tenant, tenants};
use tokio::sync::OnceCell;

static IMAGE: OnceCell<String> = OnceCell::const_new();

async fn docker() -> DockerRuntime {
    DockerRuntime::connect().await.unwrap_or_else(|e| {
        panic!("these tests need the Docker daemon (run scripts/test-env.sh): {e}")
    })
}

/// Builds the simulator image once per test binary (reused across runs when unchanged).
async fn image() -> &'static str {
    IMAGE
        .get_or_init(|| async {
            let docker = docker().await;
            waha_sim::container::build_default_image(docker.client())
                .await
                .unwrap_or_else(|e| panic!("building the waha-sim image failed: {e}"))
        })
        .await
}

struct Fixture {
    runtime: Arc<DockerRuntime>,
    tenants: Arc<Tenants>,
    pool: TenantPool,
    managed_by: String,
}

async fn fixture(adjust: impl FnOnce(&mut PoolConfig)) -> Fixture {
    let image = image().await;
    let runtime = Arc::new(docker().await);
    let managed_by = format!("cp-test-{}", run_id());
    let mut config = PoolConfig::new(ImageRef::parse(image).unwrap());
    config.managed_by = managed_by.clone();
    config.name_prefix = managed_by.clone();
    config.addressing = AddressingPolicy::loopback_ephemeral();
    config.startup_deadline = Duration::from_secs(30);
    config.stop_grace = Duration::from_secs(1);
    // Small limits: 20 containers on a 2-core test machine.
    config.sizing = container_pool::SizingPolicy::waha_guide()
        .with_table(
            container_pool::Engine::Noweb,
            vec![container_pool::SizingRow {
                sessions: 10,
                millicpus: 500,
                memory_mib: 64,
            }],
        )
        .unwrap();
    adjust(&mut config);
    let tenants = tenants();
    let probe = Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), tenants.clone(), probe, config).unwrap();
    Fixture {
        runtime,
        tenants,
        pool,
        managed_by,
    }
}

impl Fixture {
    fn selector(&self) -> LabelSelector {
        LabelSelector::new(labels::MANAGED_BY, &self.managed_by)
    }

    async fn cleanup(&self) {
        for c in self.runtime.list(&self.selector()).await.unwrap() {
            self.runtime.remove(&c.id).await.unwrap();
        }
        for v in self.runtime.list_volumes(&self.selector()).await.unwrap() {
            self.runtime.remove_volume(&v.name).await.unwrap();
        }
    }
}

async fn get_sessions(endpoint: &container_pool::TenantEndpoint) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(endpoint.base_url.join("api/sessions?all=true").unwrap())
        .header("X-Api-Key", endpoint.api_key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_slow_start_within_the_deadline_succeeds() {
    // 4 s without listening: a short fixed timeout (say 2 s) would have given up.
    let f = fixture(|c| {
        c.extra_env
            .push(("SIM_STARTUP_DELAY_MS".into(), "4000".into()));
        c.startup_deadline = Duration::from_secs(40);
    })
    .await;
    let started = Instant::now();
    let endpoint = f.pool.ensure(&tenant("slow")).await;
    let took = started.elapsed();
    let endpoint = endpoint.unwrap_or_else(|e| panic!("slow start failed: {e}"));
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
    get_sessions(&endpoint).await;
    f.cleanup().await;
}

#[tokio::test]
async fn a_container_that_never_gets_ready_fails_with_startup_timeout_at_the_deadline() {
    // Listening, healthy for Docker (`/ping`), but `/health` answers 503 for 10 minutes.
    let f = fixture(|c| {
        c.extra_env.push(("SIM_BOOTING_MS".into(), "600000".into()));
        c.startup_deadline = Duration::from_secs(4);
    })
    .await;
    let started = Instant::now();
    let err = f.pool.ensure(&tenant("never")).await.unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::StartupTimeout {
            elapsed,
            last_probe_error,
            ..
        } => {
            assert!(*elapsed >= Duration::from_secs(4), "{elapsed:?}");
            assert!(!last_probe_error.is_empty());
        }
        other => panic!("expected StartupTimeout, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(7),
        "the deadline bounds the wait: {took:?}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn a_killed_container_is_recreated_by_the_next_ensure() {
    let f = fixture(|c| c.restart = RestartPolicy::No).await;
    let acme = tenant("killed");
    let first = f.pool.ensure(&acme).await.unwrap();
    f.runtime
        .client()
        .kill_container(first.container.as_str(), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.runtime.inspect(&first.container).await.unwrap().state == ContainerState::Running {
        assert!(Instant::now() < deadline, "the kill did not take effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = f.pool.ensure(&acme).await.unwrap();
    assert_ne!(second.container, first.container);
    assert!(matches!(
        f.runtime.inspect(&first.container).await,
        Err(Error::NotFound { .. })
    ));
    get_sessions(&second).await;
    f.cleanup().await;
}

#[tokio::test]
async fn twenty_tenants_ensured_concurrently_give_twenty_ready_containers() {
    let f = fixture(|_| {}).await;
    let calls = (0..20).map(|i| {
        let pool = f.pool.clone();
        tokio::spawn(async move { pool.ensure(&tenant(&format!("t{i}"))).await })
    });
    let endpoints: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap_or_else(|e| panic!("ensure failed: {e}")))
        .collect();
    let ids: std::collections::HashSet<_> = endpoints.iter().map(|e| e.container.clone()).collect();
    assert_eq!(ids.len(), 20);
    let running = f.runtime.list(&f.selector()).await.unwrap();
    assert_eq!(
        running
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .count(),
        20
    );
    for e in &endpoints {
        get_sessions(e).await;
    }
    f.cleanup().await;
}

#[tokio::test]
async fn a_reused_volume_brings_old_sessions_back() {
    let f = fixture(|_| {}).await;
    let t = tenant("keeper");
    let first = f.pool.ensure(&t).await.unwrap();
    let created = reqwest::Client::new()
        .post(first.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", first.api_key.expose_secret())
        .json(&serde_json::json!({ "name": "chip-old" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Give the simulator time to write its state file (it coalesces writes), then the container
    // goes; the volume stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.runtime
        .stop(&first.container, Duration::from_secs(5))
        .await
        .unwrap();
    f.pool.remove_tenant(&t, false).await.unwrap();
    let second = f.pool.ensure(&t).await.unwrap();
    assert_ne!(second.container, first.container);
    let sessions = get_sessions(&second).await;
    assert!(sessions.to_string().contains("chip-old"), "{sessions}");
    f.cleanup().await;
}

#[tokio::test]
async fn orphan_sweep_and_idle_reaping_remove_exactly_what_they_should() {
    let f = fixture(|c| c.idle_ttl = Duration::ZERO).await;
    let (keep, busy, gone) = (tenant("keep"), tenant("busy"), tenant("gone"));
    for t in [&keep, &busy, &gone] {
        f.pool.ensure(t).await.unwrap();
    }
    f.tenants.delete(&gone);
    let swept = f
        .pool
        .sweep_orphans(f.tenants.as_ref(), true)
        .await
        .unwrap();
    assert_eq!(swept.removed, vec![format!("{}-gone-0", f.managed_by)]);
    assert_eq!(
        swept.removed_volumes,
        vec![format!("{}-gone-0-sessions", f.managed_by)]
    );
    let activity = Activity::default();
    activity.0.lock().unwrap().insert((busy.clone(), 0), 1);
    // The first pass starts the idle clock of containers this pool has not seen idle yet;
    // with a zero TTL it stops them at once.
    let reaped = f.pool.reap_idle(&activity).await.unwrap();
    assert_eq!(reaped.stopped, vec![format!("{}-keep-0", f.managed_by)]);
    let states: Vec<_> = f
        .runtime
        .list(&f.selector())
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, matches!(c.state, ContainerState::Running)))
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.contains(&(format!("{}-busy-0", f.managed_by), true)),
        "{states:?}"
    );
    assert!(
        states.contains(&(format!("{}-keep-0", f.managed_by), false)),
        "{states:?}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn containers_on_a_user_network_are_reachable_by_their_address_there() {
    let network = format!("cp-test-net-{}", run_id());
    let f = fixture(|c| {
        c.addressing = AddressingPolicy::NetworkIp {
            network: network.clone(),
        }
    })
    .await;
    let endpoint = f.pool.ensure(&tenant("netted")).await.unwrap();
    let inspect = f
        .runtime
        .client()
        .inspect_container(endpoint.container.as_str(), None)
        .await
        .unwrap();
    let settings = inspect.network_settings.unwrap().networks.unwrap();
    let on_network = &settings[&network];
    assert_eq!(
        endpoint.base_url.host_str(),
        on_network.ip_address.as_deref()
    );
    assert!(
        on_network
            .aliases
            .clone()
            .unwrap_or_default()
            .contains(&endpoint.container_name)
    );
    assert!(
        inspect
            .host_config
            .unwrap()
            .port_bindings
            .unwrap_or_default()
            .is_empty(),
        "no host port is used"
    );
    get_sessions(&endpoint).await;
    f.cleanup().await;
    f.runtime.client().remove_network(&network).await.unwrap();
}

#[tokio::test]
async fn limits_labels_and_restart_policy_reach_the_container() {
    let f = fixture(|_| {}).await;
    let endpoint = f.pool.ensure(&tenant("spec")).await.unwrap();
    let inspect = f
        .runtime
        .client()
        .inspect_container(endpoint.container.as_str(), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(256 + 16 * 10));
    assert_eq!(
        host.restart_policy.unwrap().name,
        Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    let config = inspect.config.unwrap();
    let env = config.env.unwrap();
    assert!(env.contains(&format!("WAHA_WORKER_ID={}", endpoint.container_name)));
    assert!(env.contains(&"WHATSAPP_DEFAULT_ENGINE=NOWEB".to_owned()));
    assert!(
        env.iter()
            .any(|e| e.starts_with("WAHA_AUTO_START_DELAY_SECONDS="))
    );
    let labels_on = config.labels.unwrap();
    assert_eq!(
        labels_on.get(labels::TENANT).map(String::as_str),
        Some("spec")
    );
    let stats = f.pool.tenant_stats(&tenant("spec")).await.unwrap();
    let measured = stats[0].stats.clone().unwrap();
    assert_eq!(measured.memory_limit_bytes, Some(64 * 1024 * 1024));
    assert!(measured.memory_bytes.unwrap_or(0) > 0);
    f.cleanup().await;
}

#[tokio::test]
async fn the_docker_runtime_passes_the_conformance_suite() {
    let image = image().await;
    let key = "conformance-key-123456";
    let spec = container_pool::ContainerSpec {
        name: String::new(),
        image: ImageRef::parse(image).unwrap(),
        env: vec![container_pool::EnvVar::secret("WAHA_API_KEY", key)],
        labels: [(labels::ADDRESSING.to_owned(), "host:127.0.0.1:0".to_owned())]
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
        restart: RestartPolicy::No,
    };
    let target = container_pool::conformance::ConformanceTarget {
        runtime: Arc::new(docker().await),
        spec,
        api_key: container_pool::ApiKey::new(key),
        probe: Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        missing_image: ImageRef::parse("chipfleet/absent:1").unwrap(),
        timeout: Duration::from_secs(30),
        prefix: format!("cp-conf-{}", run_id()),
    };
    container_pool::conformance::run(&target).await;
}
