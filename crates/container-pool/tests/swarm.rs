//! The Swarm runtime on a single-node swarm that this binary creates (listening on and
//! advertising 127.0.0.1) and always leaves at the end, also when a check fails: the checks run
//! in a spawned task, whose panic is caught, the swarm is left (explicitly, async; nothing in
//! `Drop`), then the panic resumed. Everything that changes the daemon's swarm state runs in
//! the one test below, under a process-wide lock should more tests be added.
//!
//! It FAILS (never skips) when Docker is not available, and when the daemon is already in a
//! swarm: it never leaves a swarm it did not create. Published ports are reached on 127.0.0.1;
//! the service runs the simulator image by its local id, so the daemon never contacts a
//! registry.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    LocalNodeState, SwarmInitRequest, SwarmSpec, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::LeaveSwarmOptionsBuilder;
use container_pool::runtime::{SwarmOptions, SwarmRuntime};
use container_pool::{
    AddressingPolicy, ContainerRuntime, ContainerState, DockerRuntime, ImageRef, LabelSelector,
    PoolConfig, PoolEventKind, RestartPolicy, RuntimeEventKind, TenantPool, WahaHealthProbe,
    labels,
};
use futures::StreamExt;
use support::{run_id, tenant, tenants};
use tokio::sync::OnceCell;

/// The label this test puts on the swarm it creates, so a leftover (a killed run) is named in
/// the failure message.
const SWARM_LABEL: &str = "io.chipfleet.test";

static IMAGE: OnceCell<String> = OnceCell::const_new();
/// Tests that change the daemon's swarm state hold this.
static SWARM_STATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Everything the crate logged during this binary's run.
static LOGS: OnceCell<Capture> = OnceCell::const_new();

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn capture_logs() -> &'static Capture {
    LOGS.get_or_init(|| async {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
        capture
    })
    .await
}

async fn docker() -> DockerRuntime {
    DockerRuntime::connect().await.unwrap_or_else(|e| {
        panic!("these tests need the Docker daemon (run scripts/test-env.sh): {e}")
    })
}

async fn image() -> &'static str {
    IMAGE
        .get_or_init(|| async {
            waha_sim::container::build_default_image(docker().await.client())
                .await
                .unwrap_or_else(|e| panic!("building the waha-sim image failed: {e}"))
        })
        .await
}

/// The prefix of every managed-by value, name and network of this run.
fn prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("cp-swarm-{}", run_id()))
}

/// A single-node swarm this test created; [`leave`](Self::leave) must be awaited.
struct SingleNodeSwarm {
    docker: Docker,
    /// Whether `docker_gwbridge` (made by `swarm init`) existed before.
    had_gwbridge: bool,
}

impl SingleNodeSwarm {
    async fn init(docker: &Docker) -> Self {
        let swarm = docker
            .info()
            .await
            .unwrap_or_else(|e| panic!("reading the daemon's info failed: {e}"))
            .swarm
            .unwrap_or_default();
        let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
        if !matches!(state, LocalNodeState::INACTIVE | LocalNodeState::EMPTY) {
            let ours = docker
                .inspect_swarm()
                .await
                .ok()
                .and_then(|s| s.spec)
                .and_then(|s| s.labels)
                .is_some_and(|l| l.contains_key(SWARM_LABEL));
            panic!(
                "the Docker daemon is already in a swarm (node state {state:?}); this test creates \
                 and leaves its own and never leaves a swarm it did not create. {}",
                if ours {
                    "It is a leftover of an interrupted run of this test (labelled \
                     io.chipfleet.test): `docker swarm leave --force` removes it."
                } else {
                    "Run it against a daemon that is not part of a swarm."
                }
            );
        }
        let had_gwbridge = docker
            .inspect_network("docker_gwbridge", None)
            .await
            .is_ok();
        docker
            .init_swarm(SwarmInitRequest {
                listen_addr: Some("127.0.0.1:2377".into()),
                advertise_addr: Some("127.0.0.1".into()),
                spec: Some(SwarmSpec {
                    labels: Some(
                        [(SWARM_LABEL.to_owned(), "container-pool".to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating a single-node swarm failed: {e}"));
        Self {
            docker: docker.clone(),
            had_gwbridge,
        }
    }

    /// Leaves the swarm (its services and their containers go with it), then removes what
    /// this run left on the node: volumes and networks under [`prefix`] (a failed check may
    /// skip its own clean-up) and the `docker_gwbridge` network `swarm init` made.
    async fn leave(self) {
        let options = LeaveSwarmOptionsBuilder::new().force(true).build();
        self.docker
            .leave_swarm(Some(options))
            .await
            .unwrap_or_else(|e| {
                panic!("leaving the test swarm failed (run `docker swarm leave --force`): {e}")
            });
        let state = self
            .docker
            .info()
            .await
            .unwrap()
            .swarm
            .unwrap_or_default()
            .local_node_state;
        assert_eq!(
            state,
            Some(LocalNodeState::INACTIVE),
            "the node left the swarm"
        );
        let volumes = self
            .docker
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .unwrap();
        for v in volumes.volumes.unwrap_or_default() {
            if v.name.starts_with(prefix()) {
                self.docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("removing leftover volume {}: {e}", v.name));
            }
        }
        if !self.had_gwbridge {
            // Still used when someone else's container joined it meanwhile: then it stays.
            let _ = self.docker.remove_network("docker_gwbridge").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_runtime_on_a_single_node_swarm() {
    let logs = capture_logs().await;
    let _one_at_a_time = SWARM_STATE.lock().await;
    let docker = docker().await;
    let image = image().await;
    let swarm = SingleNodeSwarm::init(docker.client()).await;
    let mut options = SwarmOptions::default();
    options.run_local_image_id = true;
    let runtime = Arc::new(SwarmRuntime::new(docker, options));
    let checks = tokio::spawn(async move {
        conformance(runtime.clone(), image).await;
        pool_end_to_end(runtime.clone(), image).await;
        network_attachment(runtime, image).await;
    })
    .await;
    swarm.leave().await;
    match checks {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the swarm checks did not finish: {e}"),
    }
    let text = logs.text();
    assert!(
        text.contains("created service"),
        "the runtime logged its work"
    );
    assert!(
        !text.contains(CONFORMANCE_KEY) && !text.contains("key-swarmed-"),
        "an API key reached the logs"
    );
}

const CONFORMANCE_KEY: &str = "conformance-key-123456";

fn host_port_spec(image: &str) -> container_pool::ContainerSpec {
    container_pool::ContainerSpec {
        name: String::new(),
        image: ImageRef::parse(image).unwrap(),
        env: vec![container_pool::EnvVar::secret(
            "WAHA_API_KEY",
            CONFORMANCE_KEY,
        )],
        labels: Default::default(),
        resources: container_pool::SizingPolicy::default()
            .resources(container_pool::Engine::Noweb, 1),
        volume: None,
        addressing: container_pool::Addressing::HostPort {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
        },
        container_port: container_pool::WAHA_PORT,
        restart: RestartPolicy::No,
    }
}

async fn conformance(runtime: Arc<SwarmRuntime>, image: &str) {
    let target = container_pool::conformance::ConformanceTarget {
        runtime,
        spec: host_port_spec(image),
        api_key: container_pool::ApiKey::new(CONFORMANCE_KEY).unwrap(),
        probe: Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
        missing_image: ImageRef::parse("chipfleet/absent:1").unwrap(),
        timeout: Duration::from_secs(60),
        prefix: format!("{}-conf", prefix()),
    };
    container_pool::conformance::run(&target).await;
}

/// `ensure` on Swarm: a service published in host mode on 127.0.0.1, ready through real HTTP,
/// with the spec on its task container; a killed task is restarted by Swarm and `ensure`
/// waits for it; the event stream reports the service's creation, start and removal.
async fn pool_end_to_end(runtime: Arc<SwarmRuntime>, image: &str) {
    let managed_by = format!("{}-pool", prefix());
    let selector = LabelSelector::new(labels::MANAGED_BY, &managed_by);
    let mut config = PoolConfig::new(ImageRef::parse(image).unwrap());
    config.managed_by = managed_by.clone();
    config.name_prefix = managed_by.clone();
    config.addressing = AddressingPolicy::loopback_ephemeral();
    config.startup_deadline = Duration::from_secs(60);
    config.stop_grace = Duration::from_secs(1);
    let tenants = tenants();
    let probe = Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    let pool = TenantPool::new(runtime.clone(), tenants.clone(), probe, config).unwrap();
    let mut events = runtime.events(&selector).await.unwrap();
    let mut progress = pool.subscribe();

    let t = tenant("swarmed");
    let endpoint = pool
        .ensure(&t)
        .await
        .unwrap_or_else(|e| panic!("ensure on swarm: {e}"));
    assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
    let response = reqwest::Client::new()
        .get(endpoint.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", endpoint.api_key.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        pool.ensure(&t).await.unwrap().container,
        endpoint.container,
        "idempotent"
    );
    let mut ready = false;
    while let Ok(e) = progress.try_recv() {
        ready |= matches!(e.kind, PoolEventKind::Ready { .. });
    }
    assert!(ready, "the pool reported readiness");

    // The spec reached the service and its task container.
    let client = runtime.client();
    let service = client
        .inspect_service(endpoint.container.as_str(), None)
        .await
        .unwrap();
    let task = service.spec.unwrap().task_template.unwrap();
    let resources = task.resources.unwrap();
    let limits = resources.limits.unwrap();
    let reserved = resources.reservations.unwrap();
    assert_eq!(
        reserved.memory_bytes, limits.memory_bytes,
        "memory is reserved"
    );
    assert_eq!(
        task.restart_policy.unwrap().condition,
        Some(TaskSpecRestartPolicyConditionEnum::ANY),
        "unless-stopped is Swarm's `any`"
    );
    let info = runtime.inspect(&endpoint.container).await.unwrap();
    assert_eq!(info.image, image, "the image as the spec gave it");
    let task_container = task_container_of(&runtime, &endpoint.container).await;
    let inspect = client
        .inspect_container(&task_container, None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, limits.memory_bytes);
    assert_eq!(host.nano_cpus, limits.nano_cpus);
    assert_eq!(host.pids_limit, limits.pids);
    let config = inspect.config.unwrap();
    let container_labels = config.labels.unwrap();
    assert_eq!(
        container_labels.get(labels::TENANT).map(String::as_str),
        Some("swarmed"),
        "the spec's labels are on the task container"
    );
    let key_env = format!("WAHA_API_KEY={}", tenants.key_of(&t));
    assert!(config.env.unwrap().contains(&key_env), "the tenant's key");
    let mounts = inspect.mounts.unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name.as_deref() == Some(&format!("{managed_by}-swarmed-0-sessions")[..])),
        "{mounts:?}"
    );
    let stats = runtime.stats(&endpoint.container).await.unwrap();
    assert_eq!(
        stats.memory_limit_bytes,
        limits.memory_bytes.map(|m| m as u64)
    );
    assert!(stats.memory_bytes.unwrap_or(0) > 0);

    // A killed task: Swarm replaces it (restart condition `any`) within the same service,
    // which shows as a restart; once it runs again `ensure` returns the same service.
    client.kill_container(&task_container, None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = runtime.inspect(&endpoint.container).await.unwrap();
        if info.state == ContainerState::Running && info.restart_count == 1 && info.url.is_some() {
            assert_eq!(info.exit_code, Some(137), "the killed run's exit code");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Swarm did not replace the killed task: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = pool
        .ensure(&t)
        .await
        .unwrap_or_else(|e| panic!("ensure after a kill: {e}"));
    assert_eq!(again.container, endpoint.container, "the same service");
    assert_ne!(
        task_container_of(&runtime, &again.container).await,
        task_container,
        "a new task"
    );

    pool.remove_tenant(&t, true).await.unwrap();
    assert!(runtime.list(&selector).await.unwrap().is_empty());
    assert!(runtime.list_volumes(&selector).await.unwrap().is_empty());
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Some(e) = events.next().await {
            let e = e.unwrap_or_else(|err| panic!("event stream: {err}"));
            assert_eq!(e.id, endpoint.container, "only the selected service");
            let removed = e.kind == RuntimeEventKind::Removed;
            seen.push(e.kind);
            if removed {
                break;
            }
        }
        seen
    })
    .await
    .expect("the event stream reports the removal");
    assert_eq!(seen.first(), Some(&RuntimeEventKind::Created), "{seen:?}");
    let starts = seen
        .iter()
        .filter(|k| **k == RuntimeEventKind::Started)
        .count();
    assert_eq!(starts, 2, "the first task and its replacement: {seen:?}");
    assert!(
        seen.iter()
            .any(|k| matches!(k, RuntimeEventKind::Died { .. })),
        "the kill: {seen:?}"
    );
}

async fn task_container_of(
    runtime: &SwarmRuntime,
    service: &container_pool::ContainerId,
) -> String {
    let filters = std::collections::HashMap::from([
        ("service".to_owned(), vec![service.to_string()]),
        ("desired-state".to_owned(), vec!["running".to_owned()]),
    ]);
    let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
        .filters(&filters)
        .build();
    let tasks = runtime.client().list_tasks(Some(options)).await.unwrap();
    tasks
        .iter()
        .filter(|t| {
            matches!(
                t.status.as_ref().and_then(|s| s.state),
                Some(bollard::models::TaskState::RUNNING | bollard::models::TaskState::STARTING)
            )
        })
        .find_map(|t| {
            t.status
                .as_ref()?
                .container_status
                .as_ref()?
                .container_id
                .clone()
        })
        .expect("a started task container")
}

/// Network addressing: the task joins an attachable overlay network (created, labelled), the
/// service gets a virtual IP there and its name as alias, publishes no port, and its URL is the
/// service name. (The host cannot route into an overlay network and the simulator image has
/// no HTTP client, so reachability by name is not checked from here.)
async fn network_attachment(runtime: Arc<SwarmRuntime>, image: &str) {
    let network = format!("{}-net", prefix());
    let owner = format!("{}-netted", prefix());
    let mut spec = host_port_spec(image);
    spec.name = owner.clone();
    spec.addressing = container_pool::Addressing::NetworkName {
        network: network.clone(),
    };
    spec.labels.insert(labels::MANAGED_BY.into(), owner.clone());
    spec.labels
        .insert(labels::ADDRESSING.into(), spec.addressing.label_value());
    let id = runtime.create(&spec).await.unwrap();
    runtime.start(&id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = runtime.inspect(&id).await.unwrap();
        if info.state == ContainerState::Running && info.url.is_some() {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not running: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        info.url.unwrap().as_str(),
        format!("http://{}:3000/", spec.name)
    );
    let client = runtime.client();
    let net = client.inspect_network(&network, None).await.unwrap();
    assert_eq!(net.driver.as_deref(), Some("overlay"));
    assert_eq!(net.scope.as_deref(), Some("swarm"));
    assert_eq!(
        net.labels.unwrap_or_default().get(labels::MANAGED_BY),
        Some(&owner)
    );
    let container = task_container_of(&runtime, &id).await;
    let inspect = client.inspect_container(&container, None).await.unwrap();
    let settings = inspect.network_settings.unwrap();
    let attached = &settings.networks.unwrap()[&network];
    assert!(
        attached
            .ip_address
            .as_deref()
            .is_some_and(|ip| !ip.is_empty()),
        "the task has an address on the network: {attached:?}"
    );
    // Swarm's DNS answers the service name and the attachment's aliases with the service's
    // virtual IP on the network (they are not container endpoint aliases).
    let service = client.inspect_service(id.as_str(), None).await.unwrap();
    let attachment = &service
        .spec
        .unwrap()
        .task_template
        .unwrap()
        .networks
        .unwrap()[0];
    assert_eq!(attachment.aliases.clone().unwrap(), [spec.name.clone()]);
    let vips = service.endpoint.unwrap().virtual_ips.unwrap_or_default();
    assert!(
        vips.iter().any(|v| v.network_id == net.id),
        "a virtual IP on the network: {vips:?}"
    );
    assert!(
        settings
            .ports
            .unwrap_or_default()
            .values()
            .all(Option::is_none),
        "no published port"
    );
    runtime.remove(&id).await.unwrap();
    client.remove_network(&network).await.unwrap();
}
