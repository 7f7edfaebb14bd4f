//! The fleet proof's world (issue 15), defined once for `fleet_proof.rs` (the scenarios at
//! full size) and `daemon_faults.rs` (dockerd and PostgreSQL restarted under a provisioning
//! fleet):
//!
//! - the production backend ([`Production::build_tuned`]): every store in a scratch PostgreSQL
//!   database (migrated by the backend at build, as in production), the pool on the real Docker
//!   daemon running the project's `FROM scratch` `waha-sim` image on the host network (each
//!   simulator on 127.0.0.1 at a port of its own, so its webhooks reach this process);
//! - the simulators boot unevenly and slowly (`SIM_STARTUP_DELAY_MS` and `SIM_BOOTING_MS` as
//!   ranges, drawn per container: `/health` answers 200 while session calls still answer 400),
//!   and their webhook deliveries are faulty (first attempts dropped and retried, duplicates,
//!   reordering);
//! - real proxies: [`Tinyproxies`], `tinyproxy` processes on 127.0.0.1 with Basic auth, as many
//!   as the allocation policy's cap needs for the fleet, plus one dead endpoint (a closed port)
//!   listed first; the supervisor's proxy-health task tunnels through each working chip's proxy
//!   to a [`holding_target`] on 127.0.0.1;
//! - the webhooks through the real ingest: `session_supervisor::ingest_router` over the
//!   backend's `Ingest` (the PostgreSQL inbox), on the listener the webhook URL names.
//!
//! Every wait polls under a deadline. Everything created in Docker carries the run's
//! managed-by label and is removed by [`Base::clean_up`], also when a body panics; the scratch
//! database is dropped likewise, and the tinyproxy processes end with their [`Tinyproxies`].
//! Fails (never skips) when Docker, PostgreSQL or tinyproxy is missing.
// Each test binary uses a subset of these helpers; what one binary leaves unused is not dead.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener as StdListener;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

use chip_service::production::{
    ContainerAddressing, Production, ProductionConfig, ProxyHealth, ProxyList, RuntimeKind,
};
use container_pool::{
    ContainerRuntime, ContainerState, DockerRuntime, Engine, EnvVar, ImageRef,
    KeyFingerprintSecret, LabelSelector, SizingPolicy, SizingRow, labels,
};
use futures::FutureExt;
use futures::future::join_all;
use proxy_allocator::{
    EndpointId, HistoryEvent, LeaseStore, PostgresLeaseStore, ProxySource, StaticListSource,
};
use session_supervisor::{
    ChipRecord, ChipSpec, OutboxStatus, Phase, PhaseName, QrCode, QrFormat, SendRequest, StepKind,
    StepOutcome, Supervisor, ingest_router,
};
use tenant_isolation::pg;
use tenant_isolation::{ChipId, NewTenant, PlanLimits, TenantId, TenantSecrets};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use waha_client::webhook::MessageAck;
use waha_client::{WahaApi, WahaClient};
use waha_sim::{CallRecord, SimControlClient};

use crate::common::decode_png;
use crate::shared_docker::{docker_with_sim_image, remove_docker_leftovers, run_id};
use crate::shared_pg::{app_url, end_app_connections, on_database, scratch};

/// How often a polled condition is looked at again.
pub const POLL: Duration = Duration::from_millis(250);

/// The chat every chip sends its one message to.
pub const CHAT: &str = "5511988887777@c.us";

/// The allocation policy's cap on chips per proxy endpoint (production's default, 3).
pub const CHIPS_PER_PROXY: u32 = 3;

/// Consecutive failed checks before a chip leaves its proxy (the test's policy).
pub const ROTATE_AFTER_FAILURES: u32 = 2;

/// How long a chip keeps a new proxy at least (the test's policy).
pub const ROTATION_COOLDOWN: Duration = Duration::from_secs(2);

/// How often the supervisor's sweeps (the proxy-health pass among them) run in these tests.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Proxies.
// ---------------------------------------------------------------------------------------------

/// `tinyproxy` processes on 127.0.0.1 (Basic auth, `CONNECT` to any port, foreground), ended
/// when this is dropped, and one dead endpoint: a port nothing listens on.
pub struct Tinyproxies {
    children: Vec<Child>,
    dir: PathBuf,
    /// The proxy list in proxy-allocator's line format: the dead endpoint first, then the live
    /// ones. Carries the proxies' password: never printed.
    pub list: String,
    /// `127.0.0.1:<port>` of the dead endpoint.
    pub dead: String,
    /// `127.0.0.1:<port>` of each live proxy.
    pub live: Vec<String>,
}

/// A port free on 127.0.0.1 right now (bound, then let go).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

impl Tinyproxies {
    /// Starts `live` proxies and names one dead endpoint; panics (saying to run
    /// `scripts/test-env.sh`) when `tinyproxy` is not installed or a proxy does not listen
    /// within 10 s.
    pub async fn start(live: usize, run: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("chipfleet-proxies-{run}"));
        std::fs::create_dir_all(&dir).expect("a directory for the proxies' configurations");
        // tinyproxy 1.11 accepts only [A-Za-z0-9._-] in BasicAuth credentials.
        let password = format!("fleet.{run}");
        let mut proxies = Tinyproxies {
            children: Vec::new(),
            dir: dir.clone(),
            list: String::new(),
            dead: format!("127.0.0.1:{}", free_port()),
            live: Vec::new(),
        };
        proxies.list.push_str(&format!(
            "http://fleet:{password}@{} country=BR\n",
            proxies.dead
        ));
        for n in 0..live {
            let port = free_port();
            let conf = dir.join(format!("tinyproxy-{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\n\
                     BasicAuth fleet {password}\nLogLevel Error\n"
                ),
            )
            .expect("a proxy configuration file");
            let child = Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("tinyproxy could not be started ({e}); run scripts/test-env.sh")
                });
            proxies.children.push(child);
            let address = format!("127.0.0.1:{port}");
            proxies
                .list
                .push_str(&format!("http://fleet:{password}@{address} country=BR\n"));
            proxies.live.push(address);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for address in &proxies.live {
            while tokio::net::TcpStream::connect(address.as_str())
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "tinyproxy does not listen on {address} within 10 s"
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
        proxies
    }

    /// The endpoint ids the allocator gives the list's entries, by `127.0.0.1:<port>`.
    pub async fn endpoint_ids(&self) -> HashMap<String, EndpointId> {
        StaticListSource::parse(&self.list)
            .expect("the proxy list parses")
            .endpoints()
            .await
            .expect("the static list answers")
            .iter()
            .map(|endpoint| (endpoint.host_port(), endpoint.id.clone()))
            .collect()
    }
}

impl Tinyproxies {
    /// Kills the live proxy at `address` (`127.0.0.1:<port>`): it refuses connections from
    /// now on.
    pub fn kill(&mut self, address: &str) {
        let index = self
            .live
            .iter()
            .position(|a| a == address)
            .unwrap_or_else(|| panic!("{address} is not a live proxy of this run"));
        let child = &mut self.children[index];
        child.kill().expect("killing a tinyproxy");
        child.wait().expect("reaping a tinyproxy");
    }
}

impl Drop for Tinyproxies {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listener on 127.0.0.1 that accepts connections and holds them open: the proxy-health
/// task's tunnel target. Answers its port.
pub async fn holding_target() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port for the health-check target");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            if held.len() > 256 {
                held.drain(..128);
            }
        }
    });
    port
}

// ---------------------------------------------------------------------------------------------
// The world.
// ---------------------------------------------------------------------------------------------

/// What a run needs before the backend is built, and what its clean-up must reach.
pub struct Base {
    pub runtime: Arc<DockerRuntime>,
    pub image: String,
    pub managed_by: String,
    pub run: String,
    pub db: scratch::ScratchDb,
    pub app_url: String,
}

impl Base {
    /// Docker first (failing loudly when it is missing; the image built or reused), then the
    /// scratch database.
    pub async fn new(prefix: &str) -> Self {
        let (runtime, image) = docker_with_sim_image().await;
        let run = run_id();
        let managed_by = format!("{prefix}-{run}");
        let db = scratch::ScratchDb::create().await;
        let app_url = on_database(&app_url(), &db.name);
        Base {
            runtime,
            image,
            managed_by,
            run,
            db,
            app_url,
        }
    }

    /// Removes the run's containers and volumes, ends the application role's connections and
    /// drops the database.
    pub async fn clean_up(self) {
        remove_docker_leftovers(&self.runtime, &self.managed_by, None).await;
        end_app_connections(&self.app_url).await;
        self.db.drop_db().await;
    }
}

/// How a fleet's simulators and supervisor are set up.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Live proxies (the dead endpoint comes on top).
    pub live_proxies: usize,
    /// The host ports the pool may give containers (apart from every other Docker test's).
    pub host_ports: RangeInclusive<u16>,
    /// `SIM_*` variables of every container, on top of the fleet's timings.
    pub sim_env: Vec<(&'static str, String)>,
}

impl FleetOptions {
    /// `live_proxies` proxies, the uneven slow boot and the webhook faults of the scenarios.
    pub fn scenario(live_proxies: usize, host_ports: RangeInclusive<u16>) -> Self {
        FleetOptions {
            live_proxies,
            host_ports,
            sim_env: vec![
                // Several seconds before it listens, varied per container...
                ("SIM_STARTUP_DELAY_MS", "1500..5000".to_owned()),
                // ...then healthy while session calls still answer 400 for a while.
                ("SIM_BOOTING_MS", "1000..4000".to_owned()),
                ("SIM_BOOTING_STATUS", "400".to_owned()),
                ("SIM_BOOTING_HEALTH", "200".to_owned()),
                // Webhook deliveries: first attempts lost (retried by the session's webhook
                // policy), duplicates (the 200 lost, the same delivery again), reordering.
                ("SIM_WEBHOOK_DROP_RATE", "0.1".to_owned()),
                ("SIM_WEBHOOK_DUPLICATE_RATE", "0.1".to_owned()),
                ("SIM_WEBHOOK_REORDER_RATE", "0.1".to_owned()),
                // A session connects through its proxy first (a dead proxy: FAILED), as WAHA's
                // engine does; the simulator does not dial out otherwise.
                ("SIM_PROXY_DIAL", "true".to_owned()),
            ],
        }
    }

    /// The same, with the simulators listening after `startup` (a `MIN..MAX` range of
    /// milliseconds) and then refusing session calls for `booting`.
    pub fn with_boot(mut self, startup: &str, booting: &str) -> Self {
        for (name, value) in &mut self.sim_env {
            match *name {
                "SIM_STARTUP_DELAY_MS" => *value = startup.to_owned(),
                "SIM_BOOTING_MS" => *value = booting.to_owned(),
                _ => {}
            }
        }
        self
    }

    /// The live proxies `chips` chips need under the cap, and one spare.
    pub fn proxies_for(chips: usize) -> usize {
        chips.div_ceil(CHIPS_PER_PROXY as usize) + 1
    }
}

/// Each webhook request the ingest answered: the event id its body carried, and the status.
pub type Answered = Arc<Mutex<Vec<(Option<String>, u16)>>>;

/// Around the ingest router: records each request's event id and the status it was answered.
async fn record(State(answered): State<Answered>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    answered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((id, response.status().as_u16()));
    response
}

/// A running fleet: the production backend, its webhook listener, the proxies.
pub struct Fleet {
    pub production: Production,
    pub proxies: Tinyproxies,
    pub leases: PostgresLeaseStore,
    /// Every webhook request the ingest answered.
    pub answered: Answered,
    server: JoinHandle<()>,
}

impl Fleet {
    /// Builds (migrating the scratch database) and starts the production backend on `base`.
    pub async fn start(base: &Base, options: &FleetOptions) -> Fleet {
        let proxies = Tinyproxies::start(options.live_proxies, &base.run).await;
        let target = holding_target().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port for the webhooks");
        let webhook_base = format!("http://{}", listener.local_addr().expect("its address"));
        let config = ProductionConfig {
            runtime: RuntimeKind::Docker,
            database_url: base.db.url.clone(),
            app_database_url: base.app_url.clone(),
            database_pool_size: 8,
            waha_image: ImageRef::parse(&base.image).expect("the simulator image's reference"),
            engine: Engine::Noweb,
            sessions_per_container: 10,
            startup_deadline: Duration::from_secs(60),
            addressing: ContainerAddressing::HostNetwork {
                ports: options.host_ports.clone(),
            },
            network: format!("{}-net", base.managed_by),
            managed_by: base.managed_by.clone(),
            webhook_base_url: webhook_base,
            proxies: ProxyList::Inline(proxies.list.clone()),
            proxy_health: ProxyHealth::On {
                host: "127.0.0.1".to_owned(),
                port: target,
            },
            max_chips_per_proxy: CHIPS_PER_PROXY,
            fingerprint_secret: Some(
                KeyFingerprintSecret::new(format!(
                    "fleet-fingerprint-{}-0123456789abcdef",
                    base.run
                ))
                .expect("a fingerprint secret"),
            ),
            owner_id: Some(format!("{}-a", base.managed_by)),
            swarm_constraints: Vec::new(),
        };
        let sim_env = options.sim_env.clone();
        let production = Production::build_tuned(config, move |tuning| {
            tuning.pool.volumes = true;
            tuning.pool.poll_interval = Duration::from_millis(100);
            tuning.pool.stop_grace = Duration::from_secs(2);
            // Small containers on a 2-core test machine.
            tuning.pool.sizing = SizingPolicy::waha_guide()
                .with_table(
                    Engine::Noweb,
                    vec![SizingRow {
                        sessions: 10,
                        millicpus: 500,
                        memory_mib: 64,
                    }],
                )
                .expect("a valid sizing table");
            tuning
                .pool
                .extra_env
                .push(EnvVar::plain("SIM_STARTING_MS", "500"));
            tuning
                .pool
                .extra_env
                .push(EnvVar::plain("SIM_FIRST_QR_MS", "1000"));
            for (name, value) in sim_env {
                tuning.pool.extra_env.push(EnvVar::plain(name, value));
            }
            // The proxy-health pass (with the other sweeps) every second, a rotation after two
            // failed checks, two seconds of cooldown: the dead proxy's chips move within the
            // test's deadlines. Everything else at production's defaults.
            tuning.supervisor.monitor_intervals.sweeps = SWEEP_EVERY;
            tuning.proxies.rotate_after_failures = ROTATE_AFTER_FAILURES;
            tuning.proxies.rotation_cooldown = ROTATION_COOLDOWN;
        })
        .await
        .unwrap_or_else(|e| panic!("the production backend did not build: {e}"));
        let answered = Answered::default();
        let router = ingest_router(production.ingest().clone())
            .layer(middleware::from_fn_with_state(answered.clone(), record));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let owner = pg::build_pool(&base.db.url, &crate::shared_pg::pool_options(2))
            .expect("the owner role's pool");
        let mut fleet = Fleet {
            production,
            proxies,
            leases: PostgresLeaseStore::new(owner),
            answered,
            server,
        };
        fleet
            .production
            .start()
            .await
            .unwrap_or_else(|e| panic!("the production backend did not start: {e}"));
        fleet
    }

    pub fn supervisor(&self) -> &Supervisor {
        self.production.supervisor()
    }

    /// Stops the backend (its leases released) and the webhook listener.
    pub async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(30), self.production.shutdown()).await;
        self.server.abort();
    }
}

/// One world at a time in a test binary: each is a fleet of containers on a 2-core machine,
/// and the daemon tests stop services every world needs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `body` on a fresh world (one world at a time per test binary), bounded by `deadline`;
/// then cleans up whatever happened (the backend first, so nothing re-creates containers, then
/// Docker and the database), re-raises a panic, and prints the duration.
pub async fn with_fleet<F>(name: &str, deadline: Duration, options: FleetOptions, body: F)
where
    F: AsyncFnOnce(&Base, &mut Fleet),
{
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let base = Base::new("cs-fleet").await;
    let slot: tokio::sync::Mutex<Option<Fleet>> = tokio::sync::Mutex::new(None);
    let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(deadline, async {
        let mut guard = slot.lock().await;
        let fleet = guard.insert(Fleet::start(&base, &options).await);
        body(&base, fleet).await;
    }))
    .catch_unwind()
    .await;
    if let Some(fleet) = slot.lock().await.take() {
        fleet.stop().await;
    }
    base.clean_up().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{name} did not finish within {deadline:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    eprintln!(
        "[{name}] duration {} (with set-up and clean-up)",
        s(started.elapsed())
    );
}

/// The tenants `t00`, `t01`, ... of a run (`prefix` keeps runs of one binary apart).
pub fn tenants(prefix: &str, count: usize) -> Vec<TenantId> {
    (0..count)
        .map(|n| TenantId::new(format!("{prefix}{n:02}")).expect("a valid tenant id"))
        .collect()
}

/// The chips `chip-0`, `chip-1`, ... of every tenant.
pub fn chips(count: usize) -> Vec<ChipId> {
    (0..count)
        .map(|n| ChipId::new(format!("chip-{n}")).expect("a valid chip id"))
        .collect()
}

/// Creates `tenants` with room for `chips` chips each, then every chip at once; answers when
/// each `create_chip` was called.
pub async fn create_fleet(
    fleet: &Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
) -> BTreeMap<(TenantId, ChipId), Instant> {
    let directory = fleet.production.directory();
    for tenant in tenants {
        directory
            .create(NewTenant::new(
                tenant.clone(),
                PlanLimits::new(chips.len() as u32, chips.len() as u32, 10_000),
                TenantSecrets::generate().expect("secrets from the OS random source"),
            ))
            .await
            .unwrap_or_else(|e| panic!("creating tenant {tenant}: {e}"));
    }
    let supervisor = fleet.supervisor();
    let creates = tenants.iter().flat_map(|tenant| {
        chips.iter().map(move |chip| async move {
            let at = Instant::now();
            supervisor
                .create_chip(tenant, chip, ChipSpec::qr())
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{chip}: create_chip failed: {e}"));
            ((tenant.clone(), chip.clone()), at)
        })
    });
    join_all(creates).await.into_iter().collect()
}

/// Every chip's record, tenant by tenant.
pub async fn records(supervisor: &Supervisor, tenants: &[TenantId]) -> Vec<ChipRecord> {
    let mut all = Vec::new();
    for tenant in tenants {
        match supervisor.list_chips(tenant, None, 10_000).await {
            Ok(records) => all.extend(records),
            Err(e) => panic!("{tenant}: listing the chips: {e}"),
        }
    }
    all
}

/// Polls every chip until each is in `want`; answers the records then. Panics within
/// `within` naming the chips that are not.
pub async fn wait_all(
    supervisor: &Supervisor,
    tenants: &[TenantId],
    expected: usize,
    want: PhaseName,
    within: Duration,
) -> Vec<ChipRecord> {
    let deadline = Instant::now() + within;
    loop {
        // A store error while a daemon restarts is a retry, not a failure.
        let mut all = Vec::new();
        let mut unreadable = None;
        for tenant in tenants {
            match supervisor.list_chips(tenant, None, 10_000).await {
                Ok(records) => all.extend(records),
                Err(e) => unreadable = Some(format!("{tenant}: {e}")),
            }
        }
        if unreadable.is_none()
            && all.len() == expected
            && all.iter().all(|r| r.observed.phase.name() == want)
        {
            return all;
        }
        if Instant::now() >= deadline {
            let behind: Vec<String> = all
                .iter()
                .filter(|r| r.observed.phase.name() != want)
                .take(10)
                .map(crate::fleet::describe)
                .collect();
            panic!(
                "{} of {expected} chips {want} within {within:?} ({} records read{}); behind: {behind:#?}",
                all.iter()
                    .filter(|r| r.observed.phase.name() == want)
                    .count(),
                all.len(),
                unreadable
                    .map(|e| format!(", last read error: {e}"))
                    .unwrap_or_default()
            );
        }
        sleep(POLL).await;
    }
}

/// A record in one line: phase, last error and the steps.
pub fn describe(record: &ChipRecord) -> String {
    let error = record
        .observed
        .last_error
        .as_ref()
        .map(|e| format!("{} ({}): {}", e.reason.as_str(), e.kind, e.detail));
    let steps: Vec<String> = record
        .steps
        .iter()
        .map(|s| format!("{:?}:{:?}", s.step, s.outcome))
        .collect();
    format!(
        "{}: {} error={error:?} steps={steps:?}",
        record.key,
        record.observed.phase.name()
    )
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Polls `check` every [`POLL`] until it answers `Ok`, and answers that; panics with `what`
/// and the last `Err` after `within`.
pub async fn eventually<T, F, Fut>(
    within: Duration,
    what: impl std::fmt::Display,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last: {last}"
            ),
        }
        sleep(POLL).await;
    }
}

/// Each chip's QR code as a PNG decodes to the raw value (a refresh between the two reads is
/// read again).
pub async fn every_qr_decodes(supervisor: &Supervisor, tenants: &[TenantId], chips: &[ChipId]) {
    for tenant in tenants {
        for chip in chips {
            let what = format!("{tenant}/{chip}: the QR code decodes");
            eventually(Duration::from_secs(60), what, || async {
                let png = supervisor.qr(tenant, chip, QrFormat::Png).await;
                let raw = supervisor.qr(tenant, chip, QrFormat::Raw).await;
                match (png, raw) {
                    (Ok(QrCode::Png(png)), Ok(QrCode::Raw(raw))) => match decode_png(&png) {
                        Ok(decoded) if decoded == raw.value => Ok(()),
                        Ok(_) => {
                            Err("the PNG's value is not the raw value (refreshed?)".to_owned())
                        }
                        Err(e) => Err(format!("the PNG does not decode: {e}")),
                    },
                    (png, raw) => Err(format!(
                        "png: {}, raw: {}",
                        png.map(|_| "ok".to_owned())
                            .unwrap_or_else(|e| e.to_string()),
                        raw.map(|_| "ok".to_owned())
                            .unwrap_or_else(|e| e.to_string())
                    )),
                }
            })
            .await;
        }
    }
}

/// The simulator's control API and WAHA client of `tenant`'s running slot-0 container (its
/// address from Docker's labels, the tenant's key from the directory); `None` while there is
/// none.
pub async fn tenant_sim(
    base: &Base,
    fleet: &Fleet,
    tenant: &TenantId,
) -> Option<(SimControlClient, WahaClient)> {
    crate::common::running_sim(
        &base.runtime,
        &base.managed_by,
        fleet.production.directory().as_ref(),
        tenant,
    )
    .await
}

/// The call log of the simulator behind `tenant`'s running container; panics when there is
/// none or the log cannot be read.
pub async fn tenant_calls(base: &Base, fleet: &Fleet, tenant: &TenantId) -> Vec<CallRecord> {
    let (control, _) = tenant_sim(base, fleet, tenant)
        .await
        .unwrap_or_else(|| panic!("{tenant}: no running container"));
    control
        .calls()
        .await
        .unwrap_or_else(|e| panic!("{tenant}: the simulator's call log: {e}"))
}

/// The phone scans every chip's QR code (through each tenant's simulator).
pub async fn scan_all(base: &Base, fleet: &Fleet, tenants: &[TenantId], chips: &[ChipId]) {
    for tenant in tenants {
        for chip in chips {
            let session = tenant_isolation::SessionName::new(tenant, chip);
            let what = format!("{tenant}/{chip}: the scan goes through");
            eventually(Duration::from_secs(60), what, || async {
                let (control, _) = tenant_sim(base, fleet, tenant)
                    .await
                    .ok_or_else(|| "no running container".to_owned())?;
                control
                    .scan(session.as_str())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await;
        }
    }
}

/// Checks, from the simulators' call logs, that each chip's session was created (accepted)
/// exactly once, and that every accepted create came from this run's owner.
pub async fn one_create_per_chip(
    base: &Base,
    fleet: &Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
) {
    for tenant in tenants {
        let calls = tenant_calls(base, fleet, tenant).await;
        for chip in chips {
            let session = tenant_isolation::SessionName::new(tenant, chip);
            let accepted = calls
                .iter()
                .filter(|call| {
                    call.is_create()
                        && call.status == 201
                        && call.session.as_deref() == Some(session.as_str())
                })
                .count();
            assert_eq!(
                accepted, 1,
                "{tenant}/{chip}: one accepted create of its session in this container's log"
            );
        }
    }
}

/// The provisioning steps each chip's stored log must carry, in order.
pub const PROVISIONING: [StepKind; 6] = [
    StepKind::ReserveRunningSlot,
    StepKind::PlaceChip,
    StepKind::EnsureContainer,
    StepKind::LeaseProxy,
    StepKind::EnsureSession,
    StepKind::StartSession,
];

/// Every record's stored step log carries the provisioning steps, succeeded, in order.
pub fn every_step_recorded(records: &[ChipRecord]) {
    for record in records {
        let succeeded: Vec<StepKind> = record
            .steps
            .iter()
            .filter(|entry| entry.outcome == StepOutcome::Succeeded)
            .map(|entry| entry.step)
            .collect();
        let mut rest = succeeded.iter();
        assert!(
            PROVISIONING
                .iter()
                .all(|wanted| rest.any(|step| step == wanted)),
            "the provisioning steps succeeded in order ({PROVISIONING:?}): {}",
            describe(record)
        );
    }
}

/// What the proxies did for a fleet.
#[derive(Debug, Default)]
pub struct ProxyReport {
    /// Chips that were ever assigned the dead endpoint.
    pub on_dead: usize,
    /// Rotations recorded.
    pub rotations: usize,
}

/// Waits until no chip holds the dead endpoint, then checks each chip's history: every change
/// of endpoint is a recorded rotation away from the one before, and the session in WAHA
/// carries the lease's proxy.
pub async fn no_chip_on_the_dead_proxy(
    base: &Base,
    fleet: &Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
    within: Duration,
) -> ProxyReport {
    let ids = fleet.proxies.endpoint_ids().await;
    let dead = ids
        .get(&fleet.proxies.dead)
        .expect("the dead endpoint is listed")
        .clone();
    let deadline = Instant::now() + within;
    loop {
        let mut on_dead = Vec::new();
        for tenant in tenants {
            for chip in chips {
                let lease = fleet.leases.lease(tenant, chip).await;
                match lease {
                    Ok(Some(lease)) if lease.endpoint == dead => {
                        on_dead.push(format!("{tenant}/{chip}"))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => on_dead.push(format!("{tenant}/{chip} (no lease)")),
                    Err(e) => on_dead.push(format!("{tenant}/{chip} ({e})")),
                }
            }
        }
        if on_dead.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chips still on the dead proxy (or unleased) after {within:?}: {on_dead:?}"
        );
        sleep(POLL).await;
    }
    let by_id: HashMap<&EndpointId, &String> = ids.iter().map(|(hp, id)| (id, hp)).collect();
    let mut report = ProxyReport::default();
    for tenant in tenants {
        for chip in chips {
            let history = fleet
                .leases
                .history(tenant, chip)
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{chip}: the proxy history: {e}"));
            let mut current: Option<&EndpointId> = None;
            let mut rotated_away: Option<&EndpointId> = None;
            for entry in &history {
                match &entry.event {
                    HistoryEvent::Assigned => {
                        if let Some(previous) = current {
                            assert_eq!(
                                rotated_away,
                                Some(previous),
                                "{tenant}/{chip}: a change of proxy without a recorded rotation: {history:?}"
                            );
                            report.rotations += 1;
                        }
                        if entry.endpoint == dead {
                            report.on_dead += 1;
                        }
                        current = Some(&entry.endpoint);
                        rotated_away = None;
                    }
                    HistoryEvent::RotatedAway { .. } => rotated_away = Some(&entry.endpoint),
                    _ => {}
                }
            }
            let lease = current.unwrap_or_else(|| panic!("{tenant}/{chip}: never assigned"));
            assert_ne!(lease, &dead, "{tenant}/{chip}: ends on the dead proxy");
            // The session in WAHA goes through the lease's proxy (sticky, rotated together).
            let want = by_id[lease];
            let session = tenant_isolation::SessionName::new(tenant, chip);
            let what =
                format!("{tenant}/{chip}: the session goes through its lease's proxy {want}");
            eventually(within, what, || async {
                let (_, waha) = tenant_sim(base, fleet, tenant)
                    .await
                    .ok_or_else(|| "no running container".to_owned())?;
                let proxy = waha
                    .get_session(session.as_str())
                    .await
                    .map_err(|e| e.to_string())?
                    .config
                    .and_then(|c| c.proxy)
                    .map(|p| p.server);
                match proxy {
                    Some(p) if p.contains(want.as_str()) => Ok(()),
                    other => Err(format!("the session's proxy is {other:?}")),
                }
            })
            .await;
        }
    }
    report
}

/// Every chip's current lease: its endpoint and generation.
pub async fn leases(
    fleet: &Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
) -> BTreeMap<(TenantId, ChipId), (EndpointId, u64)> {
    let mut all = BTreeMap::new();
    for tenant in tenants {
        for chip in chips {
            let lease = fleet
                .leases
                .lease(tenant, chip)
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{chip}: the lease: {e}"))
                .unwrap_or_else(|| panic!("{tenant}/{chip}: no lease"));
            all.insert(
                (tenant.clone(), chip.clone()),
                (lease.endpoint, lease.generation),
            );
        }
    }
    all
}

/// A proxy dies under working chips: the live proxy holding the most chips is killed; each
/// of its chips rotates away (a recorded rotation, no sooner than the policy's failure
/// threshold allows) and works again; every other chip keeps its lease untouched. Answers how many chips moved and how long the last
/// one took.
pub async fn a_proxy_dies_under_working_chips(
    base: &Base,
    fleet: &mut Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
    within: Duration,
) -> (usize, Duration) {
    let before = leases(fleet, tenants, chips).await;
    // Where each tenant's call log stands before the kill.
    let mut marks = BTreeMap::new();
    for tenant in tenants {
        let last = tenant_calls(base, fleet, tenant)
            .await
            .iter()
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        marks.insert(tenant.clone(), last);
    }
    let ids = fleet.proxies.endpoint_ids().await;
    let mut load: BTreeMap<&EndpointId, usize> = BTreeMap::new();
    for (endpoint, _) in before.values() {
        *load.entry(endpoint).or_default() += 1;
    }
    let (victim, moved) = load
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(e, n)| ((*e).clone(), *n))
        .expect("some lease");
    let address = ids
        .iter()
        .find(|(_, id)| **id == victim)
        .map(|(address, _)| address.clone())
        .expect("the victim is listed");
    let killed_at = Instant::now();
    let killed_wall = SystemTime::now();
    fleet.proxies.kill(&address);
    let deadline = killed_at + within;
    let mut last_moved = Duration::ZERO;
    let mut pending: Vec<(TenantId, ChipId)> = before
        .iter()
        .filter(|(_, (endpoint, _))| *endpoint == victim)
        .map(|(key, _)| key.clone())
        .collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (tenant, chip) in pending {
            match fleet.leases.lease(&tenant, &chip).await {
                Ok(Some(lease)) if lease.endpoint != victim => last_moved = killed_at.elapsed(),
                _ => still.push((tenant, chip)),
            }
        }
        pending = still;
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "chips still on the killed proxy after {within:?}: {pending:?}"
        );
        if !pending.is_empty() {
            sleep(POLL).await;
        }
    }
    let after = leases(fleet, tenants, chips).await;
    for (key, (endpoint, generation)) in &before {
        let (now_endpoint, now_generation) = &after[key];
        if *endpoint == victim {
            assert_ne!(now_endpoint, &victim, "{key:?} moved away");
            let history = fleet
                .leases
                .history(&key.0, &key.1)
                .await
                .unwrap_or_else(|e| panic!("{key:?}: the proxy history: {e}"));
            let assigned = history
                .iter()
                .rev()
                .find(|h| h.event == HistoryEvent::Assigned && h.endpoint == victim)
                .expect("the assignment to the killed proxy is in the history");
            let rotated = history
                .iter()
                .find(|h| {
                    h.endpoint == victim
                        && h.at >= assigned.at
                        && matches!(h.event, HistoryEvent::RotatedAway { .. })
                })
                .unwrap_or_else(|| panic!("{key:?}: a recorded rotation away: {history:?}"));
            // After the failure threshold: one failed check per sweep, so the rotation comes
            // at least (threshold - 1) sweeps after the kill. (The cooldown since an
            // assignment is proven at the allocator: proxy-allocator's
            // `rotation_needs_repeated_failures_and_a_cooldown`.)
            let earliest = killed_wall + SWEEP_EVERY * (ROTATE_AFTER_FAILURES - 1);
            assert!(
                rotated.at >= earliest,
                "{key:?}: rotated {:?} after the kill, before {} failed checks could have been counted",
                rotated.at.duration_since(killed_wall).unwrap_or_default(),
                ROTATE_AFTER_FAILURES
            );
        } else {
            assert_eq!(
                (now_endpoint, now_generation),
                (endpoint, generation),
                "{key:?}: a chip on another proxy is untouched"
            );
        }
    }
    // Untouched in WAHA too: since the kill, no call changed the session of a chip that was
    // not on the killed proxy (no PUT, start, restart, stop, logout or delete).
    for tenant in tenants {
        let calls = tenant_calls(base, fleet, tenant).await;
        for chip in chips {
            if before[&(tenant.clone(), chip.clone())].0 == victim {
                continue;
            }
            let session = tenant_isolation::SessionName::new(tenant, chip);
            let touched: Vec<String> = calls
                .iter()
                .filter(|c| c.seq > marks[tenant] && c.session.as_deref() == Some(session.as_str()))
                .map(|c| format!("{} {}", c.method, c.route))
                .collect();
            assert!(
                touched.is_empty(),
                "{tenant}/{chip} was not on the killed proxy, yet its session was changed: {touched:?}"
            );
        }
    }
    (moved, last_moved)
}

/// Whether a message's outbox status is acked to read (or played).
pub fn read(status: &OutboxStatus) -> bool {
    matches!(
        status,
        OutboxStatus::Sent {
            ack: MessageAck::Read | MessageAck::Played
        }
    )
}

/// Sends one message from every chip (no choreography, waiting for the pacer) and waits until
/// each is acked to read; answers the time from the sends to the last read.
pub async fn one_message_per_chip_read(
    fleet: &Fleet,
    tenants: &[TenantId],
    chips: &[ChipId],
    within: Duration,
) -> Duration {
    let supervisor = fleet.supervisor();
    let started = Instant::now();
    let sends = tenants.iter().flat_map(|tenant| {
        chips.iter().map(move |chip| async move {
            let key = format!("fleet-{chip}");
            let receipt = supervisor
                .send_text(
                    tenant,
                    chip,
                    SendRequest::new(CHAT, format!("hello from {chip}"), key.clone())
                        .with_choreography(None)
                        .with_max_wait(Duration::from_secs(120)),
                )
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{chip}: send_text failed: {e}"));
            assert!(
                matches!(receipt.status, OutboxStatus::Sent { .. }),
                "{tenant}/{chip}: sent: {:?}",
                receipt.status
            );
            (tenant.clone(), key)
        })
    });
    let keys: Vec<(TenantId, String)> = join_all(sends).await;
    for (tenant, key) in keys {
        let what = format!("{tenant}/{key}: acked to read");
        eventually(within, what, || async {
            let status = supervisor
                .outbox()
                .get(&tenant, &key)
                .await
                .map_err(|e| e.to_string())?
                .map(|r| r.status);
            match status {
                Some(status) if read(&status) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    started.elapsed()
}

/// Seconds with millisecond precision, for the printed timings.
pub fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// When the chip's QR window opened, from its stored phase (`None` when it is not awaiting a
/// login).
pub fn qr_opened(record: &ChipRecord) -> Option<SystemTime> {
    match record.observed.phase {
        Phase::AwaitingLogin { since, .. } => Some(since),
        _ => None,
    }
}

/// Restarts a shared service through `scripts/restart-service.sh` (the one way the tests touch
/// a daemon), keeping it down `down` first; panics with the script's output when it fails.
pub async fn restart_service(service: &'static str, down: Duration) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/restart-service.sh");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&script)
            .arg(service)
            .arg("--down")
            .arg(down.as_secs().to_string())
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("the restart's thread")
    .unwrap_or_else(|e| panic!("scripts/restart-service.sh could not run: {e}"));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "scripts/restart-service.sh {service} failed ({}); the service may be down: run scripts/test-env.sh",
        output.status
    );
}

/// The run's containers by (tenant, slot) label: each with its state.
pub async fn containers_by_slot(base: &Base) -> BTreeMap<(String, String), Vec<ContainerState>> {
    let containers = base
        .runtime
        .list(&LabelSelector::new(labels::MANAGED_BY, &base.managed_by))
        .await
        .unwrap_or_else(|e| panic!("listing the run's containers: {e}"));
    let mut by_slot: BTreeMap<(String, String), Vec<ContainerState>> = BTreeMap::new();
    for c in containers {
        let key = (
            c.label(labels::TENANT).unwrap_or_default().to_owned(),
            c.label(labels::SLOT).unwrap_or_default().to_owned(),
        );
        by_slot.entry(key).or_default().push(c.state);
    }
    by_slot
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A webhook body as WAHA sends one, with the metadata chipfleet sets, at `timestamp_ms`.
pub fn webhook_body(
    tenant: &TenantId,
    chip: &ChipId,
    event_id: &str,
    event: &str,
    timestamp_ms: u64,
    payload: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event_id,
        "timestamp": timestamp_ms,
        "event": event,
        "session": tenant_isolation::SessionName::new(tenant, chip).as_str(),
        "metadata": { "tenant": tenant.as_str(), "chip": chip.as_str() },
        "me": null,
        "engine": "NOWEB",
        "payload": payload,
    }))
    .expect("JSON")
}

/// Posts `body` to the ingest's URL of `url_tenant`, signed with `signer`'s webhook key (as
/// WAHA does: HMAC-SHA512 of the raw body); answers the status.
pub async fn post_webhook(
    fleet: &Fleet,
    url_tenant: &TenantId,
    signer: &TenantId,
    body: Vec<u8>,
) -> u16 {
    let key = fleet
        .production
        .directory()
        .get(signer)
        .await
        .unwrap_or_else(|e| panic!("{signer}: the directory: {e}"))
        .secrets
        .webhook_hmac_key;
    let url = format!(
        "{}/webhooks/{url_tenant}",
        fleet.production.config().webhook_base_url
    );
    crate::common::http_client(Some(Duration::from_secs(30)))
        .post(url)
        .header(
            waha_client::webhook::SIGNATURE_HEADER,
            waha_client::webhook::sign(&key, &body),
        )
        .header(waha_client::webhook::ALGORITHM_HEADER, "sha512")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("posting a webhook: {e}"))
        .status()
        .as_u16()
}

/// Every inbox entry's (event id, payload id), read as the owner role.
pub async fn inbox_entries(base: &Base) -> Vec<(String, String)> {
    let owner = crate::shared_pg::scratch::owner_client(&base.db.url).await;
    owner
        .query("SELECT body FROM supervisor_inbox", &[])
        .await
        .expect("the owner role reads the inbox")
        .iter()
        .filter_map(|row| {
            let body: Vec<u8> = row.get(0);
            let json = serde_json::from_slice::<serde_json::Value>(&body).ok()?;
            Some((
                json["id"].as_str()?.to_owned(),
                json["payload"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        })
        .collect()
}

/// Webhooks as an attacker or a faulty network would send them, through the real ingest and
/// the PostgreSQL inbox, after the fleet's messages were read: a duplicate, NOWEB's double
/// delivery of one message under two event ids, a replay from outside the freshness window, a
/// body signed with another tenant's key (to either tenant's URL), and a late, lower ack of a
/// message already read. Must hold: no double effect (one inbox entry per event and per
/// message), nothing stale or foreign stored, no cross-tenant routing, no regression of the
/// message's status.
pub async fn hostile_webhooks(base: &Base, fleet: &Fleet, tenants: &[TenantId], chips: &[ChipId]) {
    let (tenant, other, chip) = (&tenants[0], &tenants[1], &chips[0]);
    let run = now_ms();
    let message_id = format!("false_5511900000000@c.us_HOSTILE{run}");
    let message = serde_json::json!({
        "id": message_id,
        "timestamp": run / 1000,
        "from": "5511900000000@c.us",
        "fromMe": false,
        "to": "5511988887777@c.us",
        "body": "hello twice",
        "hasMedia": false,
    });
    let event = |id: &str| format!("evt_hostile_{run}_{id}");

    // The same delivery twice (WAHA retrying after a lost 200): both acknowledged, one entry.
    let first = webhook_body(
        tenant,
        chip,
        &event("first"),
        "message",
        now_ms(),
        message.clone(),
    );
    assert_eq!(
        post_webhook(fleet, tenant, tenant, first.clone()).await,
        200
    );
    assert_eq!(
        post_webhook(fleet, tenant, tenant, first).await,
        200,
        "a duplicate is acknowledged"
    );
    // NOWEB's double delivery: the same message under another event id.
    let twin = webhook_body(tenant, chip, &event("twin"), "message", now_ms(), message);
    assert_eq!(post_webhook(fleet, tenant, tenant, twin).await, 200);
    // A replay from outside the freshness window, correctly signed: refused.
    let old = webhook_body(
        tenant,
        chip,
        &event("replay"),
        "message",
        now_ms() - 3 * 3_600_000,
        serde_json::json!({"id": format!("{message_id}-old"), "fromMe": false, "body": "old"}),
    );
    assert_eq!(
        post_webhook(fleet, tenant, tenant, old).await,
        400,
        "a stale replay is refused"
    );
    // The tenant's session, signed with the other tenant's key: refused at either URL.
    let foreign = webhook_body(
        tenant,
        chip,
        &event("foreign"),
        "message",
        now_ms(),
        serde_json::json!({"id": format!("{message_id}-foreign"), "fromMe": false, "body": "x"}),
    );
    assert_eq!(
        post_webhook(fleet, tenant, other, foreign.clone()).await,
        401
    );
    assert_eq!(post_webhook(fleet, other, other, foreign).await, 401);

    let entries = inbox_entries(base).await;
    let with_event = |suffix: &str| entries.iter().filter(|(e, _)| *e == event(suffix)).count();
    assert_eq!(
        with_event("first"),
        1,
        "one entry for the delivery sent twice"
    );
    assert_eq!(
        with_event("twin"),
        0,
        "the double delivery is not stored again"
    );
    assert_eq!(
        entries.iter().filter(|(_, p)| *p == message_id).count(),
        1,
        "one entry for the message"
    );
    assert_eq!(
        with_event("replay") + with_event("foreign"),
        0,
        "nothing refused is stored"
    );

    // A reordered `session.status` (STARTING, older than what the chip has seen since): the
    // chip stays WORKING (a status webhook only wakes a reconcile, which reads WAHA itself).
    let stale_status = webhook_body(
        tenant,
        chip,
        &event("stale-status"),
        "session.status",
        now_ms() - 60_000,
        serde_json::json!({
            "name": tenant_isolation::SessionName::new(tenant, chip).as_str(),
            "status": "STARTING",
        }),
    );
    assert_eq!(post_webhook(fleet, tenant, tenant, stale_status).await, 200);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let record = fleet
            .supervisor()
            .get_chip(tenant, chip)
            .await
            .expect("the chip");
        assert_eq!(
            record.observed.phase.name(),
            PhaseName::Working,
            "a reordered status regresses nothing: {}",
            describe(&record)
        );
        sleep(POLL).await;
    }

    // A late SERVER ack of a message already read: acknowledged, and the status stays READ.
    let key = format!("fleet-{chip}");
    let sent = fleet
        .supervisor()
        .outbox()
        .get(tenant, &key)
        .await
        .expect("the outbox")
        .expect("the chip's message");
    let sent_id = sent.message_id.clone().expect("WAHA's message id");
    let late_ack = webhook_body(
        tenant,
        chip,
        &event("late-ack"),
        "message.ack",
        now_ms(),
        serde_json::json!({
            "id": sent_id,
            "from": "5511988887777@c.us",
            "to": CHAT,
            "fromMe": true,
            "ack": 1,
        }),
    );
    assert_eq!(post_webhook(fleet, tenant, tenant, late_ack).await, 200);
    let after = fleet
        .supervisor()
        .outbox()
        .get(tenant, &key)
        .await
        .expect("the outbox")
        .expect("the chip's message");
    assert!(
        read(&after.status),
        "a late, lower ack moves nothing back: {:?}",
        after.status
    );
    // The other tenant's message of the same chip id is untouched by any of this.
    let theirs = fleet
        .supervisor()
        .outbox()
        .get(other, &key)
        .await
        .expect("the outbox")
        .expect("the other tenant's message");
    assert!(read(&theirs.status), "{:?}", theirs.status);
}

/// The id of `tenant`'s slot-0 container, running or not.
pub async fn tenant_container(base: &Base, tenant: &TenantId) -> Option<String> {
    base.runtime
        .list(&LabelSelector::new(labels::MANAGED_BY, &base.managed_by))
        .await
        .ok()?
        .into_iter()
        .find(|c| {
            c.label(labels::TENANT) == Some(tenant.as_str()) && c.label(labels::SLOT) == Some("0")
        })
        .map(|c| c.id.as_str().to_owned())
}
