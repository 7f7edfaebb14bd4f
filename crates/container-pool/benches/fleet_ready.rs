//! Fleet readiness on real Docker: `N` tenant containers (default 100) made ready by
//! [`TenantPool::ensure`] against the same `N` containers started by a plain
//! "`docker run` + readiness-poll loop", measured in the same run. Goal: the pool takes at most
//! 1.2× the plain loop's wall time.
//!
//! Run it (it needs the Docker daemon; `DOCKER_HOST` is honoured, and it fails loudly when no
//! daemon answers: `scripts/test-env.sh` starts one):
//!
//! ```text
//! cargo bench -p container-pool --features docker --bench fleet_ready
//! FLEET_READY_TENANTS=20 FLEET_READY_ROUNDS=2 cargo bench -p container-pool --features docker --bench fleet_ready
//! ```
//!
//! # What is measured
//!
//! Both sides run the locally built `FROM scratch` simulator image
//! (`waha_sim::container::build_default_image`) on Docker's host network, each container's
//! server listening on 127.0.0.1 on its own port, all `N` containers at once (one task each),
//! polling every 100 ms, under the same deadline. Per side the bench prints the wall time until
//! all `N` are ready and the p50/p95 of each container's own time (from the start of its task
//! to ready), then the ratio pool/plain of the wall times and whether the goal is met.
//!
//! - **pool**: a fresh [`TenantPool`] on [`DockerRuntime`] with host-network addressing (ports
//!   from an in-memory port store), volumes off, the WAHA health probe
//!   ([`WahaHealthProbe`]), small containers (the sizing of session-supervisor's
//!   `docker_pool_config`), no auto-start stagger; `N` distinct tenants ensured concurrently.
//!   Each `ensure` reads the tenant's key and incarnation, looks for an existing container by
//!   its labels, allocates a port (reconciling the store with the pool's containers' labels),
//!   checks the image, creates and starts the container with its full label set, then polls
//!   `docker inspect` plus the authenticated HTTP probe (`/health`, then `/api/server/status`
//!   for the worker id) until ready.
//! - **plain**: for each container, with bollard directly: create (the same image, the same
//!   environment the pool gives its containers — API key, engine, worker id, auto-start delay,
//!   `PORT`/`WHATSAPP_API_PORT`/`SIM_HOST` for host networking, the simulator variables — the
//!   same limits and restart policy, host network), start, then `GET /health` with the key every
//!   100 ms until it answers 200.
//!
//! The plain loop deliberately leaves out everything the pool adds on top of "run it and wait":
//! no tenant key or incarnation lookup (a random key per container), no search for an existing
//! container and no labels beyond the one the clean-up needs (no spec hash, key fingerprint,
//! tenant, slot, addressing or incarnation labels), no port store or reconciliation of held
//! ports (ports are picked by a bind check), no image-presence check, no volumes (off on both
//! sides), no `docker inspect` while waiting (so no exit or crash-loop detection and no gating
//! on the image's Docker HEALTHCHECK), no worker-id check, no single-flight, events, metrics or
//! error classification.
//!
//! # Fairness
//!
//! One untimed warm-up container (plain) runs first, so neither side pays for a cold image or
//! page cache. Rounds alternate which side goes first (plain first in odd rounds, pool first
//! in even ones), so with an even `FLEET_READY_ROUNDS` each side goes first equally often.
//! Everything a side created is removed before the next side starts.
//!
//! Ports: the pool allocates from `[base, base + N + 100)`, the plain side from the next range
//! of the same size (default base 21000). Both lie below Linux's ephemeral ports (32768+), so
//! the many outgoing probe connections never take a port a container is about to bind.
//!
//! # Settings (environment)
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `FLEET_READY_TENANTS` | containers per side and round | 100 |
//! | `FLEET_READY_ROUNDS` | rounds (each runs both sides; even, so each side goes first equally often) | 2 |
//! | `FLEET_READY_DEADLINE_SECS` | start-up deadline of one container, both sides | 120 |
//! | `FLEET_READY_PORT_BASE` | first port of the pool's range | 21000 |
//!
//! # Clean-up
//!
//! Everything the bench creates carries the managed-by label `fleet-ready-<run id>`; it is
//! removed between sides, at the end, after a panic (re-raised after the clean-up) and on
//! Ctrl-C. Containers of killed runs (label `fleet-ready-*`, older than 30 minutes) are removed
//! when the bench starts.
//!
//! Host networking needs the bench to run on the Docker host itself (a local `DOCKER_HOST`):
//! the containers' servers listen on the host's 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HostConfig, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
};
use container_pool::{
    AddressingPolicy, AutoStartStagger, ContainerId, ContainerRuntime, DockerRuntime, Engine,
    EnvVar, ImageRef, InMemoryPortStore, LabelSelector, PoolConfig, Resources, SizingPolicy,
    SizingRow, TenantId, TenantPool, WahaHealthProbe, labels,
};
use futures::FutureExt;
use tokio::task::JoinSet;

/// Every readiness poll, both sides.
const POLL: Duration = Duration::from_millis(100);
/// The time limit of one HTTP probe, both sides.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The goal: pool wall time / plain wall time.
const GOAL: f64 = 1.2;
/// The managed-by label value of every run starts with this.
const OWNER_PREFIX: &str = "fleet-ready-";
/// Leftovers of killed runs older than this are removed at start.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// The engine both sides configure.
const ENGINE: Engine = Engine::Noweb;
/// Ports of a range beyond the containers' count (ports held by other processes are skipped).
const PORT_SLACK: u32 = 100;
/// Ports at and above this are Linux's default ephemeral range (outgoing connections).
const EPHEMERAL_START: u32 = 32_768;

/// The run's settings, from the environment.
struct Settings {
    tenants: usize,
    rounds: usize,
    deadline: Duration,
    port_base: u16,
}

impl Settings {
    fn from_env() -> Self {
        let tenants: usize = env_or("FLEET_READY_TENANTS", 100);
        let rounds: usize = env_or("FLEET_READY_ROUNDS", 2);
        let deadline = Duration::from_secs(env_or("FLEET_READY_DEADLINE_SECS", 120));
        let port_base: u16 = env_or("FLEET_READY_PORT_BASE", 21_000);
        assert!(tenants >= 1, "FLEET_READY_TENANTS must be at least 1");
        assert!(rounds >= 1, "FLEET_READY_ROUNDS must be at least 1");
        assert!(
            !deadline.is_zero(),
            "FLEET_READY_DEADLINE_SECS must be positive"
        );
        let settings = Self {
            tenants,
            rounds,
            deadline,
            port_base,
        };
        let end = u32::from(port_base) + 2 * settings.port_span();
        assert!(
            port_base >= 1024 && end <= EPHEMERAL_START,
            "FLEET_READY_PORT_BASE={port_base}: the pool's and the plain side's port ranges \
             ({} ports each) must lie within 1024..{EPHEMERAL_START} (below the ephemeral \
             ports outgoing connections use); lower the base or FLEET_READY_TENANTS",
            settings.port_span()
        );
        settings
    }

    /// Ports per range.
    fn port_span(&self) -> u32 {
        u32::try_from(self.tenants)
            .unwrap_or(u32::MAX)
            .saturating_add(PORT_SLACK)
    }

    /// The `index`-th range (0: the pool's, 1: the plain side's).
    fn port_range(&self, index: u32) -> RangeInclusive<u16> {
        let start = u32::from(self.port_base) + index * self.port_span();
        let end = start + self.port_span() - 1;
        let port = |p: u32| u16::try_from(p).expect("checked in from_env");
        port(start)..=port(end)
    }
}

/// `name` parsed from the environment, or `default` when it is not set; a bad value panics
/// naming the variable.
fn env_or<T>(name: &str, default: T) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?} is not valid: {e}")),
        Err(std::env::VarError::NotPresent) => default,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Which way the containers are made ready.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Plain,
    Pool,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Pool => "pool",
        }
    }
}

/// One side's measurement in one round.
struct Sample {
    /// From before the first task was spawned until the last container was ready.
    wall: Duration,
    /// Each container's time from the start of its task to ready, sorted.
    per_container: Vec<Duration>,
}

impl Sample {
    fn new(wall: Duration, mut per_container: Vec<Duration>) -> Self {
        per_container.sort();
        Self {
            wall,
            per_container,
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted, non-empty `sorted`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mean_wall(samples: &[Sample]) -> Duration {
    let total: Duration = samples.iter().map(|s| s.wall).sum();
    total / u32::try_from(samples.len()).unwrap_or(u32::MAX).max(1)
}

/// What both sides share.
struct Fleet {
    runtime: Arc<DockerRuntime>,
    image: String,
    /// `fleet-ready-<run>`: the managed-by label of everything this run creates.
    managed_by: String,
    run: String,
    settings: Settings,
    /// The plain side's HTTP client (no proxy, like the pool's probe).
    http: reqwest::Client,
    /// The limits the pool gives its containers, for the plain side.
    resources: Resources,
}

/// Small containers on a 2-core machine (session-supervisor's `docker_pool_config`).
fn sizing() -> SizingPolicy {
    SizingPolicy::waha_guide()
        .with_table(
            ENGINE,
            vec![SizingRow {
                sessions: 10,
                millicpus: 500,
                memory_mib: 64,
            }],
        )
        .expect("a valid sizing table")
}

/// The simulator's variables, both sides (the pool's `extra_env`): no state directory, and the
/// timings of session-supervisor's `docker_pool_config`.
fn sim_env() -> Vec<EnvVar> {
    vec![
        EnvVar::plain("SIM_STATE_DIR", "none"),
        EnvVar::plain("SIM_STARTING_MS", "500"),
        EnvVar::plain("SIM_FIRST_QR_MS", "1000"),
    ]
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Waits for every task; a task's panic is re-raised here (dropping the set aborts the rest).
async fn join_all_tasks(mut tasks: JoinSet<Duration>) -> Vec<Duration> {
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(took) => done.push(took),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a readiness task did not finish: {e}"),
        }
    }
    done
}

impl Fleet {
    /// A pool for `round`: its own name prefix and port store, this run's managed-by label.
    /// Does no I/O.
    fn pool_config(&self, round: usize) -> PoolConfig {
        let mut config =
            PoolConfig::new(ImageRef::parse(&self.image).expect("a valid image reference"));
        config.managed_by = self.managed_by.clone();
        config.name_prefix = format!("fr-{}-p{round}", self.run);
        config.engine = ENGINE;
        config.addressing = AddressingPolicy::loopback_host_network(
            self.settings.port_range(0),
            Arc::new(InMemoryPortStore::new()),
        );
        config.volumes = false;
        config.startup_deadline = self.settings.deadline;
        config.poll_interval = POLL;
        config.probe_timeout = PROBE_TIMEOUT;
        config.stop_grace = Duration::from_secs(1);
        config.auto_start = AutoStartStagger {
            base: Duration::ZERO,
            spread: Duration::ZERO,
        };
        config.sizing = sizing();
        config.extra_env = sim_env();
        config
    }

    /// Every side of every round, then the summary.
    async fn measure(self: Arc<Self>) {
        let n = self.settings.tenants;
        println!(
            "fleet_ready: {n} tenant containers at once per side, {} round(s), {} ms polls, \
             host network, image {}, run {}",
            self.settings.rounds,
            POLL.as_millis(),
            self.image,
            self.managed_by
        );
        let warm = self.warm_up().await;
        self.remove_leftovers().await;
        println!("warm-up: one plain container ready in {}", secs(warm));

        let mut plain = Vec::new();
        let mut pool = Vec::new();
        for round in 1..=self.settings.rounds {
            let order = if round % 2 == 1 {
                [Side::Plain, Side::Pool]
            } else {
                [Side::Pool, Side::Plain]
            };
            for side in order {
                let sample = match side {
                    Side::Plain => self.plain_round(round).await,
                    Side::Pool => self.pool_round(round).await,
                };
                self.remove_leftovers().await;
                println!(
                    "round {round} {:<5}: all {n} ready in {} (per container p50 {}, p95 {})",
                    side.name(),
                    secs(sample.wall),
                    secs(percentile(&sample.per_container, 0.50)),
                    secs(percentile(&sample.per_container, 0.95)),
                );
                match side {
                    Side::Plain => plain.push(sample),
                    Side::Pool => pool.push(sample),
                }
            }
            if let (Some(last_plain), Some(last_pool)) = (plain.last(), pool.last()) {
                let ratio = last_pool.wall.as_secs_f64() / last_plain.wall.as_secs_f64();
                println!("round {round} ratio pool/plain: {ratio:.2}×");
            }
        }

        for (side, samples) in [(Side::Plain, &plain), (Side::Pool, &pool)] {
            let mut all: Vec<Duration> = samples
                .iter()
                .flat_map(|s| s.per_container.iter().copied())
                .collect();
            all.sort();
            println!(
                "{:<5}: mean wall {} over {} round(s); per container p50 {}, p95 {} ({} containers)",
                side.name(),
                secs(mean_wall(samples)),
                samples.len(),
                secs(percentile(&all, 0.50)),
                secs(percentile(&all, 0.95)),
                all.len()
            );
        }
        let ratio = mean_wall(&pool).as_secs_f64() / mean_wall(&plain).as_secs_f64();
        let verdict = if ratio <= GOAL { "met" } else { "missed" };
        println!(
            "ratio pool/plain (mean wall): {ratio:.2}× — goal ≤ {GOAL}×: {verdict} \
             ({n} tenants, {} round(s))",
            self.settings.rounds
        );
    }

    /// One plain container, left out of the figures, so the first measured side does not pay
    /// for a cold image or page cache.
    async fn warm_up(&self) -> Duration {
        let port = self.free_plain_ports(1)[0];
        self.plain_container(format!("fr-{}-warm", self.run), port)
            .await
    }

    /// `N` tenants ensured by a fresh pool, all at once.
    async fn pool_round(&self, round: usize) -> Sample {
        let probe =
            Arc::new(WahaHealthProbe::new(PROBE_TIMEOUT).expect("the probe's HTTP client builds"));
        let pool = TenantPool::new(
            self.runtime.clone(),
            support::tenants(),
            probe,
            self.pool_config(round),
        )
        .expect("a valid pool configuration");
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 0..self.settings.tenants {
            let pool = pool.clone();
            let tenant = TenantId::new(format!("r{round}-t{i}")).expect("a valid tenant id");
            tasks.spawn(async move {
                let began = Instant::now();
                match pool.ensure(&tenant).await {
                    Ok(_endpoint) => began.elapsed(),
                    Err(e) => panic!("the pool did not make tenant {tenant} ready: {e}"),
                }
            });
        }
        let per_container = join_all_tasks(tasks).await;
        Sample::new(started.elapsed(), per_container)
    }

    /// `N` containers created, started and polled with bollard directly, all at once.
    async fn plain_round(self: &Arc<Self>, round: usize) -> Sample {
        let started = Instant::now();
        let ports = self.free_plain_ports(self.settings.tenants);
        let mut tasks = JoinSet::new();
        for (i, port) in ports.into_iter().enumerate() {
            let fleet = self.clone();
            let name = format!("fr-{}-d{round}-t{i}", fleet.run);
            tasks.spawn(async move { fleet.plain_container(name, port).await });
        }
        let per_container = join_all_tasks(tasks).await;
        Sample::new(started.elapsed(), per_container)
    }

    /// The first `count` ports of the plain side's range that nothing holds on 127.0.0.1 (the
    /// listener of the check is closed at once).
    fn free_plain_ports(&self, count: usize) -> Vec<u16> {
        let range = self.settings.port_range(1);
        let ports: Vec<u16> = range
            .clone()
            .filter(|p| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
            .take(count)
            .collect();
        assert_eq!(
            ports.len(),
            count,
            "only {} of {count} ports are free in {range:?} (FLEET_READY_PORT_BASE)",
            ports.len()
        );
        ports
    }

    /// `docker run` (create + start) of the container the pool would make for one tenant on
    /// host networking, then `GET /health` with its key every [`POLL`] until it answers 200.
    /// Returns the time from the call to ready; panics at the deadline.
    async fn plain_container(&self, name: String, port: u16) -> Duration {
        let began = Instant::now();
        let docker = self.runtime.client();
        // Never printed: the error messages below carry the URL and status only.
        let key = format!("plain-{}", ulid::Ulid::generate()).to_lowercase();
        let mut env = vec![
            format!("WAHA_API_KEY={key}"),
            format!("WHATSAPP_DEFAULT_ENGINE={}", ENGINE.as_str()),
            format!("WAHA_WORKER_ID={name}"),
            "WAHA_AUTO_START_DELAY_SECONDS=0".to_owned(),
            format!("PORT={port}"),
            format!("WHATSAPP_API_PORT={port}"),
            format!("SIM_HOST={}", Ipv4Addr::LOCALHOST),
        ];
        env.extend(sim_env().iter().map(EnvVar::to_assignment));
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(env),
            labels: Some(
                [(labels::MANAGED_BY.to_owned(), self.managed_by.clone())]
                    .into_iter()
                    .collect(),
            ),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_owned()),
                memory: Some(to_i64(self.resources.memory_bytes)),
                nano_cpus: Some(to_i64(self.resources.nano_cpus)),
                pids_limit: Some(to_i64(self.resources.pids_limit)),
                restart_policy: Some(DockerRestart {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .unwrap_or_else(|e| panic!("plain: creating container {name} failed: {e}"));
        docker
            .start_container(&created.id, None)
            .await
            .unwrap_or_else(|e| panic!("plain: starting container {name} failed: {e}"));

        let url = format!("http://{}:{port}/health", Ipv4Addr::LOCALHOST);
        let deadline = began + self.settings.deadline;
        loop {
            let last = match self
                .http
                .get(&url)
                .header("X-Api-Key", key.as_str())
                .send()
                .await
            {
                Ok(response) if response.status() == reqwest::StatusCode::OK => {
                    return began.elapsed();
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "plain: container {name} was not ready within {:?}; last answer of {url}: {last}",
                self.settings.deadline
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Removes every container, volume and network carrying this run's managed-by label;
    /// reports failures without panicking. Returns how many containers it removed.
    async fn remove_leftovers(&self) -> usize {
        let runtime = &self.runtime;
        let selector = LabelSelector::new(labels::MANAGED_BY, self.managed_by.as_str());
        let mut removed = 0;
        match runtime.list(&selector).await {
            Ok(containers) => {
                let removals = containers
                    .iter()
                    .map(|c| async move { (c.name.as_str(), runtime.remove(&c.id).await) });
                for (name, outcome) in futures::future::join_all(removals).await {
                    match outcome {
                        Ok(()) => removed += 1,
                        Err(e) => eprintln!("clean-up: removing container {name}: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("clean-up: listing containers: {e}"),
        }
        match runtime.list_volumes(&selector).await {
            Ok(volumes) => {
                for v in volumes {
                    if let Err(e) = runtime.remove_volume(&v.name).await {
                        eprintln!("clean-up: removing volume {}: {e}", v.name);
                    }
                }
            }
            Err(e) => eprintln!("clean-up: listing volumes: {e}"),
        }
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::MANAGED_BY, self.managed_by)],
        )]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        match runtime.client().list_networks(Some(options)).await {
            Ok(networks) => {
                for name in networks.into_iter().filter_map(|n| n.name) {
                    if let Err(e) = runtime.client().remove_network(&name).await {
                        eprintln!("clean-up: removing network {name}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("clean-up: listing networks: {e}"),
        }
        removed
    }
}

/// Removes the containers of killed runs of this bench: managed-by `fleet-ready-*`, older than
/// [`STALE_AFTER`] (a live run of another instance is younger and left alone).
async fn remove_stale_runs(runtime: &DockerRuntime) {
    let filters = HashMap::from([("label".to_owned(), vec![labels::MANAGED_BY.to_owned()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match runtime.client().list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            eprintln!("stale sweep: listing containers: {e}");
            return;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let stale_after = i64::try_from(STALE_AFTER.as_secs()).unwrap_or(i64::MAX);
    for c in containers {
        let ours = c
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::MANAGED_BY))
            .is_some_and(|owner| owner.starts_with(OWNER_PREFIX));
        let stale = now - c.created.unwrap_or(now) > stale_after;
        if ours && stale {
            let id = ContainerId::new(c.id.unwrap_or_default());
            if let Err(e) = runtime.remove(&id).await {
                eprintln!("stale sweep: removing container {id}: {e}");
            }
        }
    }
}

/// Resolves on Ctrl-C; never when the handler cannot be installed.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `body`, then removes what the run created whether it finished, panicked (the panic is
/// re-raised afterwards) or was interrupted (exit code 130).
async fn with_clean_up<F>(fleet: &Fleet, body: F)
where
    F: Future<Output = ()>,
{
    let outcome = tokio::select! {
        outcome = AssertUnwindSafe(body).catch_unwind() => Some(outcome),
        () = interrupted() => None,
    };
    if !matches!(outcome, Some(Ok(()))) {
        // Creations in flight when the tasks were aborted may still land: wait for them.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let removed = fleet.remove_leftovers().await;
    eprintln!(
        "clean-up: {removed} container(s) of {} removed at the end",
        fleet.managed_by
    );
    match outcome {
        Some(Ok(())) => {}
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => {
            eprintln!("fleet_ready: interrupted");
            std::process::exit(130);
        }
    }
}

async fn run() {
    let settings = Settings::from_env();
    let runtime = Arc::new(DockerRuntime::connect().await.unwrap_or_else(|e| {
        panic!(
            "fleet_ready needs the Docker daemon (DOCKER_HOST, else /var/run/docker.sock; \
             scripts/test-env.sh starts one): {e}"
        )
    }));
    remove_stale_runs(&runtime).await;
    let image = waha_sim::container::build_default_image(runtime.client())
        .await
        .unwrap_or_else(|e| panic!("building the waha-sim image failed: {e}"));
    let run = support::run_id();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("the plain side's HTTP client builds");
    // The limits the pool computes for its containers (default sessions per container).
    let sessions = PoolConfig::new(ImageRef::parse(&image).expect("a valid image reference"))
        .sessions_per_container;
    let resources = sizing()
        .try_resources(ENGINE, sessions)
        .expect("the sizing table covers the pool's container size");
    let fleet = Arc::new(Fleet {
        runtime,
        image,
        managed_by: format!("{OWNER_PREFIX}{run}"),
        run,
        settings,
        http,
        resources,
    });
    with_clean_up(&fleet, fleet.clone().measure()).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}
