//! The pool on the real Docker daemon with the `waha-sim` image. Every container publishes its
//! port on 127.0.0.1 (or is reached on a user network the test created, or runs on the host's
//! network listening on 127.0.0.1 only). Each test labels what
//! it creates with its own managed-by value and removes it at the end, also when the test body
//! panics (the panic is re-raised after the clean-up); leftovers of killed runs are swept when
//! the binary starts. These tests FAIL when Docker is not available.

mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container_pool::{
    AddressingPolicy, ContainerRuntime, ContainerState, DockerRuntime, Error, ImageRef,
    LabelSelector, PoolConfig, PortAllocationStore, RestartPolicy, TenantPool, WahaHealthProbe,
    labels,
};
use futures::FutureExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use support::{
    Activity, Tenants, create_session, get_json, list_sessions, run_id, tenant, tenants,
};
use tokio::sync::OnceCell;

static IMAGE: OnceCell<String> = OnceCell::const_new();

/// Label values of what these tests create: `cp-test-<run>` (pools) and `cp-conf-<run>-<nonce>`
/// (the conformance suite).
const TEST_PREFIXES: [&str; 2] = ["cp-test-", "cp-conf-"];

/// Leftovers older than this are from a run that was killed (a live run is shorter).
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

async fn docker() -> DockerRuntime {
    DockerRuntime::connect().await.unwrap_or_else(|e| {
        panic!("these tests need the Docker daemon (run scripts/test-env.sh): {e}")
    })
}

/// Builds the simulator image once per test binary (reused across runs when unchanged), after
/// sweeping what killed runs of these tests left behind.
async fn image() -> &'static str {
    IMAGE
        .get_or_init(|| async {
            let docker = docker().await;
            sweep_stale(&docker).await;
            waha_sim::container::build_default_image(docker.client())
                .await
                .unwrap_or_else(|e| panic!("building the waha-sim image failed: {e}"))
        })
        .await
}

fn is_test_owner(value: Option<&String>) -> bool {
    value.is_some_and(|v| TEST_PREFIXES.iter().any(|p| v.starts_with(p)))
}

/// Removes containers (older than [`STALE_AFTER`]), then volumes and networks (unused) that
/// carry a test managed-by label.
async fn sweep_stale(runtime: &DockerRuntime) {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    };
    let docker = runtime.client();
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![labels::MANAGED_BY.to_owned()],
    )]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_else(|e| panic!("listing containers: {e}"));
    for c in containers {
        let stale = now - c.created.unwrap_or(now) > STALE_AFTER.as_secs() as i64;
        if stale && is_test_owner(c.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY))) {
            let id = container_pool::ContainerId::new(c.id.unwrap_or_default());
            runtime.remove(&id).await.unwrap();
        }
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap_or_else(|e| panic!("listing volumes: {e}"));
    for v in volumes.volumes.unwrap_or_default() {
        if is_test_owner(v.labels.get(labels::MANAGED_BY)) {
            // A volume a live test uses is refused (Conflict): it is not stale.
            let _ = runtime.remove_volume(&v.name).await;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap_or_else(|e| panic!("listing networks: {e}"));
    for n in networks {
        if is_test_owner(n.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY))) {
            // A network with containers on it is refused: it belongs to a live test.
            let _ = docker.remove_network(&n.name.unwrap_or_default()).await;
        }
    }
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

/// Runs `body` on a fresh fixture and removes everything the fixture's pool made (containers,
/// volumes, networks) whether the body passed or panicked; a panic is re-raised afterwards.
async fn with_fixture<B, Fut>(adjust: impl FnOnce(&mut PoolConfig), body: B)
where
    B: FnOnce(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()>,
{
    let f = Arc::new(fixture(adjust).await);
    let outcome = AssertUnwindSafe(body(f.clone())).catch_unwind().await;
    f.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Fixture {
    fn selector(&self) -> LabelSelector {
        LabelSelector::new(labels::MANAGED_BY, &self.managed_by)
    }

    /// Docker's view of the container behind `endpoint`.
    async fn inspect_container(
        &self,
        endpoint: &container_pool::TenantEndpoint,
    ) -> bollard::models::ContainerInspectResponse {
        self.runtime
            .client()
            .inspect_container(endpoint.container.as_str(), None)
            .await
            .unwrap()
    }

    async fn cleanup(&self) {
        for c in self.runtime.list(&self.selector()).await.unwrap() {
            self.runtime.remove(&c.id).await.unwrap();
        }
        for v in self.runtime.list_volumes(&self.selector()).await.unwrap() {
            self.runtime.remove_volume(&v.name).await.unwrap();
        }
        let filters = container_pool_label_filter(&self.managed_by);
        let networks = self
            .runtime
            .client()
            .list_networks(Some(
                bollard::query_parameters::ListNetworksOptionsBuilder::new()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        for n in networks {
            self.runtime
                .client()
                .remove_network(&n.name.unwrap_or_default())
                .await
                .unwrap();
        }
    }
}

fn container_pool_label_filter(managed_by: &str) -> std::collections::HashMap<String, Vec<String>> {
    std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={managed_by}", labels::MANAGED_BY)],
    )])
}

fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Polls the container's file system (the archive API works on a `FROM scratch` image) until
/// `path` exists.
async fn wait_for_file(runtime: &DockerRuntime, id: &container_pool::ContainerId, path: &str) {
    use futures::TryStreamExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let found: Result<Vec<_>, _> = runtime
            .client()
            .download_from_container(id.as_str(), Some(options))
            .try_collect()
            .await;
        if found.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{path} was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_start_within_the_deadline_succeeds() {
    // 4 s without listening: a short fixed timeout (say 2 s) would have given up.
    with_fixture(
        |c| {
            c.extra_env.push(container_pool::EnvVar::plain(
                "SIM_STARTUP_DELAY_MS",
                "4000",
            ));
            c.startup_deadline = Duration::from_secs(40);
        },
        |f| async move {
            let started = Instant::now();
            let endpoint = f.pool.ensure(&tenant("slow")).await;
            let took = started.elapsed();
            let endpoint = endpoint.unwrap_or_else(|e| panic!("slow start failed: {e}"));
            assert!(took >= Duration::from_secs(4), "{took:?}");
            assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
            list_sessions(&endpoint).await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_container_that_never_gets_ready_fails_with_startup_timeout_at_the_deadline() {
    // Listening, healthy for Docker (`/ping`), but `/health` answers 503 for 10 minutes.
    with_fixture(
        |c| {
            c.extra_env
                .push(container_pool::EnvVar::plain("SIM_BOOTING_MS", "600000"));
            c.startup_deadline = Duration::from_secs(4);
        },
        |f| async move {
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
        },
    )
    .await;
}

#[tokio::test]
async fn a_killed_container_is_recreated_by_the_next_ensure() {
    with_fixture(
        |c| c.restart = RestartPolicy::No,
        |f| async move {
            let acme = tenant("killed");
            let first = f.pool.ensure(&acme).await.unwrap();
            f.runtime
                .client()
                .kill_container(first.container.as_str(), None)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while f.runtime.inspect(&first.container).await.unwrap().state
                == ContainerState::Running
            {
                assert!(Instant::now() < deadline, "the kill did not take effect");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let second = f.pool.ensure(&acme).await.unwrap();
            assert_ne!(second.container, first.container);
            assert!(matches!(
                f.runtime.inspect(&first.container).await,
                Err(Error::NotFound { .. })
            ));
            list_sessions(&second).await;
        },
    )
    .await;
}

#[tokio::test]
async fn twenty_tenants_ensured_concurrently_give_twenty_ready_containers() {
    with_fixture(
        |_| {},
        |f| async move {
            let started = std::time::Instant::now();
            let calls = (0..20).map(|i| {
                let pool = f.pool.clone();
                tokio::spawn(async move { pool.ensure(&tenant(&format!("t{i}"))).await })
            });
            let endpoints: Vec<_> = futures::future::join_all(calls)
                .await
                .into_iter()
                .map(|r| r.unwrap().unwrap_or_else(|e| panic!("ensure failed: {e}")))
                .collect();
            // The figure docs/benchmarks.md records (printed with --nocapture).
            let took = started.elapsed();
            println!(
                "20 tenants ensured concurrently on Docker in {:.2} s: {:.1} tenants made ready per second",
                took.as_secs_f64(),
                20.0 / took.as_secs_f64()
            );
            let ids: std::collections::HashSet<_> =
                endpoints.iter().map(|e| e.container.clone()).collect();
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
                list_sessions(e).await;
            }
        },
    )
    .await;
}

/// The labels of the tenant's volumes (this fixture's pool only).
async fn tenant_volumes(
    f: &Fixture,
    t: &container_pool::TenantId,
) -> Vec<container_pool::VolumeInfo> {
    f.runtime
        .list_volumes(&f.selector().and(labels::TENANT, t.as_str()))
        .await
        .unwrap()
}

/// A tenant's volume comes back, sessions and all, to the same incarnation of the tenant; a
/// new tenant under the same id (a new incarnation) is refused it with a typed conflict, gets
/// no container, and leaves the volume untouched.
#[tokio::test]
async fn a_reused_volume_brings_old_sessions_back_only_to_the_same_incarnation() {
    with_fixture(
        |_| {},
        |f| async move {
            let t = tenant("keeper");
            let earlier = f.tenants.incarnation_of(&t);
            let first = f.pool.ensure(&t).await.unwrap();
            create_session(&first, "chip-old").await;
            // Wait until the simulator has written the session's state file (it coalesces
            // writes), then the container goes; the volume stays.
            let state_file = format!("/app/.sessions/{}.json", hex_of("chip-old"));
            wait_for_file(&f.runtime, &first.container, &state_file).await;
            let stop_and_remove = |id: container_pool::ContainerId| {
                let f = f.clone();
                let t = t.clone();
                async move {
                    f.runtime.stop(&id, Duration::from_secs(5)).await.unwrap();
                    f.pool.remove_tenant(&t, false).await.unwrap();
                }
            };
            stop_and_remove(first.container.clone()).await;
            let volumes = tenant_volumes(&f, &t).await;
            assert_eq!(volumes.len(), 1, "{volumes:?}");
            assert_eq!(
                volumes[0]
                    .labels
                    .get(labels::INCARNATION)
                    .map(String::as_str),
                Some(earlier.as_str()),
                "the volume carries the tenant's incarnation"
            );

            // The same incarnation: its own volume, its old sessions.
            let second = f.pool.ensure(&t).await.unwrap();
            assert_ne!(second.container, first.container);
            let sessions = list_sessions(&second).await;
            assert!(sessions.to_string().contains("chip-old"), "{sessions}");
            stop_and_remove(second.container.clone()).await;

            // The id reused by a new tenant: refused, nothing created, the volume as it was.
            f.tenants.reincarnate(&t);
            let err = f.pool.ensure(&t).await.unwrap_err();
            support::assert_volume_refused(&err, &f.pool, &t, &volumes[0].name, &earlier).await;
            assert_eq!(
                tenant_volumes(&f, &t).await,
                volumes,
                "the volume was changed"
            );

            // Restored (the earlier incarnation again), the tenant still finds its sessions:
            // the refusal touched nothing in the volume.
            support::assert_restored_tenant_finds_session(
                &f.pool, &f.tenants, &t, earlier, "chip-old",
            )
            .await;
        },
    )
    .await;
}

#[tokio::test]
async fn orphan_sweep_and_idle_reaping_remove_exactly_what_they_should() {
    with_fixture(
        |c| c.idle_ttl = Duration::ZERO,
        |f| async move {
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
        },
    )
    .await;
}

#[tokio::test]
async fn containers_on_a_user_network_are_reachable_by_their_address_there() {
    let network = format!("cp-test-net-{}", run_id());
    let addressing = AddressingPolicy::NetworkIp {
        network: network.clone(),
    };
    with_fixture(
        |c| c.addressing = addressing,
        |f| async move {
            let endpoint = f.pool.ensure(&tenant("netted")).await.unwrap();
            let inspect = f.inspect_container(&endpoint).await;
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
            list_sessions(&endpoint).await;
        },
    )
    .await;
}

#[tokio::test]
async fn limits_labels_and_restart_policy_reach_the_container() {
    with_fixture(
        |_| {},
        |f| async move {
            let endpoint = f.pool.ensure(&tenant("spec")).await.unwrap();
            let inspect = f.inspect_container(&endpoint).await;
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
        },
    )
    .await;
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
        api_key: container_pool::ApiKey::new(key).unwrap(),
        probe: Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        missing_image: ImageRef::parse("chipfleet/absent:1").unwrap(),
        timeout: Duration::from_secs(30),
        prefix: format!("cp-conf-{}", run_id()),
    };
    let outcome = AssertUnwindSafe(container_pool::conformance::run(&target))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        // A failing check leaves its container behind: remove everything under this prefix.
        let runtime = docker().await;
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![labels::MANAGED_BY.to_owned()],
        )]);
        let containers = runtime
            .client()
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        for c in containers {
            let owner = c.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY));
            if owner.is_some_and(|o| o.starts_with(&target.prefix)) {
                let id = container_pool::ContainerId::new(c.id.unwrap_or_default());
                runtime.remove(&id).await.unwrap();
            }
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn a_missing_image_is_image_missing_through_the_pool() {
    with_fixture(
        |c| c.image = ImageRef::parse("chipfleet/absent:1").unwrap(),
        |f| async move {
            match f.pool.ensure(&tenant("noimage")).await {
                Err(Error::ImageMissing { image }) => assert_eq!(image, "chipfleet/absent:1"),
                other => panic!("expected ImageMissing, got {other:?}"),
            }
            assert!(f.runtime.list(&f.selector()).await.unwrap().is_empty());
        },
    )
    .await;
}

/// The simulator exits at once (status 1) when its configuration does not parse.
fn broken_config(c: &mut PoolConfig) {
    c.extra_env.push(container_pool::EnvVar::plain(
        "SIM_TIME_SCALE",
        "not-a-number",
    ));
}

#[tokio::test]
async fn a_process_that_exits_is_exited_with_its_logs_through_the_pool() {
    with_fixture(
        |c| {
            broken_config(c);
            c.restart = RestartPolicy::No;
        },
        |f| async move {
            let started = Instant::now();
            match f.pool.ensure(&tenant("exits")).await {
                Err(Error::Exited {
                    exit_code,
                    last_logs,
                    ..
                }) => {
                    assert!(exit_code.is_some_and(|c| c != 0), "{exit_code:?}");
                    assert!(
                        last_logs.iter().any(|l| l.contains("SIM_TIME_SCALE")),
                        "{last_logs:?}"
                    );
                }
                other => panic!("expected Exited, got {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(15));
        },
    )
    .await;
}

#[tokio::test]
async fn a_crash_loop_under_the_default_restart_policy_is_exited_not_a_timeout() {
    with_fixture(
        |c| {
            broken_config(c);
            c.startup_deadline = Duration::from_secs(60);
        },
        |f| async move {
            let started = Instant::now();
            match f.pool.ensure(&tenant("loops")).await {
                Err(Error::Exited { exit_code, .. }) => {
                    assert!(exit_code.is_some_and(|c| c != 0), "{exit_code:?}")
                }
                other => panic!("expected Exited, got {other:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "reported when the restart policy restarts it, not at the deadline: {:?}",
                started.elapsed()
            );
        },
    )
    .await;
}

#[tokio::test]
async fn containers_on_a_user_network_reach_each_other_by_name() {
    // The test process is not on the network, so it cannot resolve names; instead container
    // `beta` calls container `alpha` by its name: a webhook of a session on `beta` is aimed at
    // `http://<alpha's name>:3000/api/sessions/by-name/start` with alpha's key. That session on
    // `alpha` starting, and `beta` counting a delivered webhook, prove that the name resolved
    // on the network. The test reaches both containers by their IP there.
    let network = format!("cp-test-net-{}", run_id());
    let addressing = AddressingPolicy::NetworkIp { network };
    with_fixture(
        |c| c.addressing = addressing,
        |f| async move {
            let alpha = f.pool.ensure(&tenant("alpha")).await.unwrap();
            let beta = f.pool.ensure(&tenant("beta")).await.unwrap();
            let http = reqwest::Client::new();
            let created = http
                .post(alpha.base_url.join("api/sessions").unwrap())
                .header("X-Api-Key", alpha.api_key.expose_secret())
                .json(&serde_json::json!({ "name": "by-name", "start": false }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
            let target = format!(
                "http://{}:{}/api/sessions/by-name/start",
                alpha.container_name,
                container_pool::WAHA_PORT
            );
            let created = http
                .post(beta.base_url.join("api/sessions").unwrap())
                .header("X-Api-Key", beta.api_key.expose_secret())
                .json(&serde_json::json!({
                    "name": "caller",
                    "start": true,
                    "config": { "webhooks": [{
                        "url": target,
                        "events": ["session.status"],
                        "customHeaders": [
                            { "name": "X-Api-Key", "value": alpha.api_key.expose_secret() }
                        ]
                    }]}
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201, "{:?}", created.text().await);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let session = get_json(&alpha, "api/sessions/by-name").await;
                let stats = get_json(&beta, "_sim/stats").await;
                let started = session["status"] != "STOPPED";
                let delivered = stats["webhooks"]["delivered"].as_u64().unwrap_or(0) >= 1;
                if started && delivered {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "beta never reached alpha by name: {session} {stats}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn readiness_overhead_on_docker_is_measured() {
    // Not a speed assertion (those live in benches): it measures, per fresh tenant, the time
    // from the simulator in the container answering `/health` (polled by this test about every
    // millisecond) to `ensure` returning, and prints p50/p99 for docs/benchmarks.md: once with
    // a simulator that listens at once, once with one that listens only after 300 ms (so the
    // moment it becomes ready falls anywhere between two polls).
    with_fixture(
        |_| {},
        |f| async move {
            for delay_ms in [0u64, 300] {
                let mut config = f.pool.config().clone();
                config.extra_env.push(container_pool::EnvVar::plain(
                    "SIM_STARTUP_DELAY_MS",
                    delay_ms.to_string(),
                ));
                let pool = TenantPool::new(
                    f.runtime.clone(),
                    f.tenants.clone(),
                    Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
                    config,
                )
                .unwrap();
                measure_overhead(&f, &pool, delay_ms).await;
            }
        },
    )
    .await;
}

async fn measure_overhead(f: &Fixture, pool: &TenantPool, delay_ms: u64) {
    let runs = 20;
    let http = reqwest::Client::new();
    let mut overheads = Vec::new();
    // Runs in which `ensure` had returned before this test saw the server answer.
    let mut late = 0;
    for i in 0..runs {
        let t = tenant(&format!("o{delay_ms}-{i}"));
        let key = f.tenants.key_of(&t);
        let ensure = {
            let pool = pool.clone();
            let t = t.clone();
            tokio::spawn(async move { pool.ensure(&t).await })
        };
        // The address, as soon as the container runs; then `/health` as fast as a
        // kept-alive connection allows (about 1 ms per round trip here).
        let url = loop {
            let url = pool
                .containers(&t)
                .await
                .unwrap()
                .into_iter()
                .find_map(|c| c.url);
            if let Some(url) = url {
                break url.join("health").unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ready_at = loop {
            let answer = http
                .get(url.clone())
                .header("X-Api-Key", &key)
                .timeout(Duration::from_millis(200))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        ensure.await.unwrap().unwrap();
        let done = Instant::now();
        if done < ready_at + Duration::from_micros(50) {
            late += 1;
        }
        overheads.push(done.saturating_duration_since(ready_at));
        pool.remove_tenant(&t, true).await.unwrap();
    }
    overheads.sort();
    let pick = |q: f64| overheads[((runs as f64 - 1.0) * q).round() as usize];
    println!(
        "docker readiness overhead, start-up delay {delay_ms} ms, {runs} runs: p50 {:?}, \
                 p99 {:?}, max {:?} ({late} runs: ensure returned before the test's own poll \
                 saw the server answer)",
        pick(0.5),
        pick(0.99),
        overheads[runs - 1]
    );
}

#[tokio::test]
async fn host_network_containers_deliver_signed_webhooks_to_a_receiver_on_loopback() {
    // Host-network addressing: the container shares the host's loopback, so a webhook aimed at
    // 127.0.0.1 reaches this test's receiver. The first port of the range is held by this test,
    // so the allocator must skip it; the range lies below the ephemeral ports (32768+), where
    // nothing else in this binary binds.
    let (blocker, first) = (20_000u16..21_000)
        .find_map(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p))
                .ok()
                .map(|l| (l, p))
        })
        .expect("a free loopback port in 20000..21000");
    let range = first..=first + 50;
    let store = Arc::new(container_pool::InMemoryPortStore::new());
    let addressing = AddressingPolicy::loopback_host_network(range.clone(), store.clone());
    with_fixture(
        |c| c.addressing = addressing,
        |f| async move {
            let receiver = WebhookReceiver::start().await;
            let endpoint = f.pool.ensure(&tenant("hostnet")).await.unwrap();

            // Its own port from the range (not the held one), on 127.0.0.1, on the host's
            // network with nothing published.
            assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
            let port = endpoint.base_url.port().unwrap();
            assert!(
                port != first && range.contains(&port),
                "{port}: not in {range:?}, or the port this test holds"
            );
            let allocations = store.allocations().await.unwrap();
            assert_eq!(allocations.get(&endpoint.container_name), Some(&port));
            let inspect = f.inspect_container(&endpoint).await;
            let host = inspect.host_config.unwrap();
            assert_eq!(host.network_mode.as_deref(), Some("host"));
            assert!(host.port_bindings.unwrap_or_default().is_empty());
            let env = inspect.config.unwrap().env.unwrap();
            for expected in [format!("PORT={port}"), "SIM_HOST=127.0.0.1".to_owned()] {
                assert!(
                    env.contains(&expected),
                    "{expected} not in the container's env"
                );
            }

            // A session in that container whose webhook points at the receiver, signed with a
            // key only this session has.
            let session = format!("hostnet-{}", run_id());
            let hmac_key = format!("whsec-{}", run_id());
            let http = reqwest::Client::new();
            let created = http
                .post(endpoint.base_url.join("api/sessions").unwrap())
                .header("X-Api-Key", endpoint.api_key.expose_secret())
                .json(&serde_json::json!({
                    "name": session,
                    "start": true,
                    "config": {
                        "metadata": { "container": endpoint.container_name },
                        "webhooks": [{
                            "url": receiver.url,
                            "events": ["session.status"],
                            "hmac": { "key": hmac_key }
                        }]
                    }
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201, "{:?}", created.text().await);

            // Poll the receiver until a session.status webhook arrived, under a deadline.
            let deadline = Instant::now() + Duration::from_secs(20);
            let delivery = loop {
                let status = receiver
                    .deliveries()
                    .into_iter()
                    .find(|d| d.json()["event"] == "session.status");
                if let Some(delivery) = status {
                    break delivery;
                }
                assert!(
                    Instant::now() < deadline,
                    "no session.status webhook reached 127.0.0.1 within 20 s: {:?}",
                    receiver.deliveries()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };

            // Over loopback, to the URL given, signed with this session's key (HMAC-SHA512 of
            // the exact body, computed here independently).
            assert!(delivery.peer.ip().is_loopback(), "{:?}", delivery.peer);
            assert!(
                delivery.request_line.starts_with("POST /hook "),
                "{}",
                delivery.request_line
            );
            let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(hmac_key.as_bytes()).unwrap();
            mac.update(&delivery.body);
            let expected = hex::encode(mac.finalize().into_bytes());
            assert_eq!(delivery.headers.get("x-webhook-hmac"), Some(&expected));
            assert_eq!(
                delivery
                    .headers
                    .get("x-webhook-hmac-algorithm")
                    .map(String::as_str),
                Some("sha512")
            );
            // From that container's session: its name, the metadata given to it there, and the
            // engine the pool configured.
            let body = delivery.json();
            assert_eq!(body["session"], session.as_str(), "{body}");
            assert_eq!(body["payload"]["name"], session.as_str(), "{body}");
            assert_eq!(
                body["metadata"]["container"],
                endpoint.container_name.as_str(),
                "{body}"
            );
            assert_eq!(body["engine"], "NOWEB", "{body}");
            // The session lives in that container (WAHA_WORKER_ID is the container name), and
            // nothing else posted to the receiver.
            let info = get_json(&endpoint, &format!("api/sessions/{session}")).await;
            assert_eq!(
                info["assignedWorker"],
                endpoint.container_name.as_str(),
                "{info}"
            );
            for other in receiver.deliveries() {
                assert_eq!(other.json()["session"], session.as_str());
            }
        },
    )
    .await;
    drop(blocker);
}

/// One request the [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
struct Delivery {
    /// Where the connection came from.
    peer: std::net::SocketAddr,
    /// `POST /hook HTTP/1.1`.
    request_line: String,
    /// Header names in lower case.
    headers: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers it 200. Minimal
/// HTTP/1.1: one request per connection (it answers `connection: close`), bodies with a
/// `Content-Length` (how the simulator sends them). Its tasks end with the test's runtime.
struct WebhookReceiver {
    url: String,
    deliveries: Arc<std::sync::Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let deliveries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = deliveries.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    if let Some(delivery) = read_webhook(stream, peer).await {
                        sink.lock().unwrap().push(delivery);
                    }
                });
            }
        });
        Self { url, deliveries }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// Reads one request from `stream` and answers it 200; `None` when the request is cut short or
/// has no `Content-Length`.
async fn read_webhook(
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<Delivery> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next()?.to_owned();
    let headers: std::collections::HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let _ = stream.shutdown().await;
    Some(Delivery {
        peer,
        request_line,
        headers,
        body: buf[head_end..head_end + length].to_vec(),
    })
}
