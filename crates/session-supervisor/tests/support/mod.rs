//! The in-memory world the supervisor's end-to-end tests run in (`docs/session-supervisor.md`,
//! 11, "In memory"): a tenant directory with generated secrets, the quota ledger, the container
//! pool on container-pool's `InMemoryRuntime` running one in-process `waha-sim` per
//! "container" (with volumes: a container re-created on its volume finds its sessions), a
//! proxy allocator over fake endpoints that are never contacted, one `MemoryChipStore` and one
//! event bus shared by every supervisor of the world, and a webhook receiver on 127.0.0.1 that
//! verifies each webhook with the tenant's HMAC key and hands it to a supervisor's `observe`.
//!
//! Waits poll a condition under a deadline ([`eventually`], [`wait_record`]); nothing here
//! sleeps a fixed time to decide an outcome. Secrets are never printed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use container_pool::{
    AutoStartStagger, ContainerInfo, ContainerState, Engine, ImageRef, InMemoryRuntime, PoolConfig,
    TenantEndpoint, TenantPool, labels,
};
use proxy_allocator::{InMemoryLeaseStore, ProxyAllocator, ProxyLease};
use session_supervisor::{
    ChipKey, ChipRecord, ChipSpec, ChipStore, EventBus, InProcessEventBus, MemoryChipStore,
    OwnerId, PhaseName, ShutdownReport, StepOutcome, Supervisor, SupervisorConfig,
    SupervisorHandle, SupervisorParts, SystemClock, WahaClients,
};
use tenant_isolation::{
    ChipId, MemoryQuotaLedger, MemoryTenantDirectory, NewTenant, PlanLimits, QuotaLedger,
    QuotaUsage, SessionName, TenantDirectory, TenantId, TenantSecrets,
};
use waha_client::webhook::WebhookEvent;
use waha_client::{WahaApi, WahaClient};
use waha_sim::{Faults, SimLauncher, SimulatorControl, Timings};

use crate::shared::{
    SupervisorTimings, fake_proxies, http_clients, supervisor_config, tenant_pool,
};
// Defined in `shared` (the Docker and PostgreSQL tests use them too); re-exported for this
// module's users.
pub use crate::shared::{ms, secs};

/// How long any single wait of a test may take before the test fails (a broken run fails, it
/// never hangs).
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a polled condition is looked at again.
pub const POLL: Duration = Duration::from_millis(20);

/// Generous plan limits (tests that need a tight plan set their own).
pub const GENEROUS: PlanLimits = PlanLimits {
    max_chips: 50,
    max_running_sessions: 50,
    max_sends_per_day: 10_000,
};

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("a valid tenant id")
}

pub fn chip(id: &str) -> ChipId {
    ChipId::new(id).expect("a valid chip id")
}

pub fn key(tenant: &TenantId, chip: &ChipId) -> ChipKey {
    ChipKey::new(tenant.clone(), chip.clone())
}

/// The WAHA session name of a chip, `cf_<tenant>_<chip>`.
pub fn session(tenant: &TenantId, chip: &ChipId) -> String {
    SessionName::new(tenant, chip).as_str().to_owned()
}

/// Polls `check` every [`POLL`] until it answers `Some`, or panics naming `what` after
/// `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: impl Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A short, secret-free description of a chip for failure messages: phase, last error and the
/// step log.
pub fn describe(record: &ChipRecord) -> String {
    let error = record.observed.last_error.as_ref().map(|e| {
        format!(
            "{} (kind {}, attempt {}): {}",
            e.reason.as_str(),
            e.kind,
            e.attempt,
            e.detail
        )
    });
    let steps: Vec<String> = record
        .steps
        .iter()
        .map(|entry| match &entry.outcome {
            StepOutcome::Succeeded => entry.step.as_str().to_owned(),
            StepOutcome::Failed { reason, kind } => {
                format!("{}!{}:{}", entry.step.as_str(), reason.as_str(), kind)
            }
        })
        .collect();
    format!(
        "{} is {:?}; last error {:?}; steps [{}]",
        record.key,
        record.observed.phase,
        error,
        steps.join(", ")
    )
}

/// Polls the chip until `done` holds for its record, or panics after `within` with what was
/// last seen.
pub async fn wait_record(
    supervisor: &Supervisor,
    tenant: &TenantId,
    chip: &ChipId,
    within: Duration,
    what: &str,
    done: impl Fn(&ChipRecord) -> bool,
) -> ChipRecord {
    let deadline = Instant::now() + within;
    loop {
        let last = match supervisor.get_chip(tenant, chip).await {
            Ok(record) => {
                if done(&record) {
                    return record;
                }
                describe(&record)
            }
            Err(error) => format!("get_chip failed: {error}"),
        };
        if Instant::now() >= deadline {
            panic!(
                "{tenant}/{chip}: timed out after {within:?} waiting for {what}; last seen: {last}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the chip's phase is `want`.
pub async fn wait_phase(
    supervisor: &Supervisor,
    tenant: &TenantId,
    chip: &ChipId,
    want: PhaseName,
    within: Duration,
) -> ChipRecord {
    wait_record(
        supervisor,
        tenant,
        chip,
        within,
        &format!("phase {want}"),
        |record| record.observed.phase.name() == want,
    )
    .await
}

/// The chip's phase now (`None`: no such chip).
pub async fn chip_phase(
    supervisor: &Supervisor,
    tenant: &TenantId,
    chip: &ChipId,
) -> Option<PhaseName> {
    supervisor
        .get_chip(tenant, chip)
        .await
        .ok()
        .map(|record| record.observed.phase.name())
}

/// What the webhook receiver hands events to: the supervisors of the world (any replica may
/// observe; the first running one is used).
type Observers = Arc<Mutex<Vec<Supervisor>>>;

#[derive(Clone)]
struct Receiver {
    directory: Arc<dyn TenantDirectory>,
    observers: Observers,
    received: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

/// `POST /webhooks/{tenant}`: verify with the tenant's HMAC key (or its previous one during a
/// rotation) over the raw body, then
/// `observe` through any supervisor of the world.
async fn receive(
    State(receiver): State<Receiver>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(tenant) = TenantId::new(tenant) else {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_FOUND;
    };
    let Ok(record) = receiver.directory.get(&tenant).await else {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_FOUND;
    };
    // The current key, or the previous one while a rotation is in progress.
    let verified = record
        .secrets
        .webhook_keys()
        .find_map(|key| WebhookEvent::from_signed(key, &headers, &body).ok());
    let Some(event) = verified else {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    };
    let supervisor = receiver
        .observers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first()
        .cloned();
    let Some(supervisor) = supervisor else {
        // No supervisor yet: WAHA retries on the webhook's policy.
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match supervisor.observe(&tenant, &event).await {
        Ok(_) => {
            receiver.received.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Builds a [`Fleet`].
pub struct FleetBuilder {
    tenants: Vec<(String, PlanLimits)>,
    engine: Engine,
    time_scale: f64,
    faults: Faults,
    timings: Option<Timings>,
    idle_ttl: Duration,
    startup_deadline: Duration,
    volumes: bool,
    endpoints: usize,
}

impl FleetBuilder {
    /// A tenant with generous limits.
    pub fn tenant(self, id: &str) -> Self {
        self.tenant_with_limits(id, GENEROUS)
    }

    /// A tenant with these limits.
    pub fn tenant_with_limits(mut self, id: &str, limits: PlanLimits) -> Self {
        self.tenants.push((id.to_owned(), limits));
        self
    }

    /// The engine of the pool (and so of every simulator): one pool runs one engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The simulators' time scale (default 0.05: the 160 s QR window lasts 8 s).
    pub fn time_scale(mut self, factor: f64) -> Self {
        self.time_scale = factor;
        self
    }

    /// Faults every simulator starts with.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The simulators' timings (simulated time).
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = Some(timings);
        self
    }

    /// The pool's idle TTL (default 30 min: never reached in a test).
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// The pool's startup deadline (default 3 s); the supervisor's step timeout is 1 s more.
    pub fn startup_deadline(mut self, deadline: Duration) -> Self {
        self.startup_deadline = deadline;
        self
    }

    /// How many fake proxy endpoints (default 4, 16 chips each).
    pub fn endpoints(mut self, count: usize) -> Self {
        self.endpoints = count;
        self
    }

    pub async fn build(self) -> Fleet {
        let directory: Arc<dyn TenantDirectory> = Arc::new(MemoryTenantDirectory::new());
        let mut tenants = Vec::new();
        for (id, limits) in &self.tenants {
            let id = tenant(id);
            directory
                .create(NewTenant::new(
                    id.clone(),
                    *limits,
                    TenantSecrets::generate().expect("secrets from the OS random source"),
                ))
                .await
                .expect("tenant created");
            tenants.push(id);
        }
        let quota: Arc<dyn QuotaLedger> = Arc::new(MemoryQuotaLedger::new(
            directory.clone(),
            Arc::new(SystemClock),
        ));

        let scale = self.time_scale;
        let faults = self.faults.clone();
        let timings = self.timings.clone();
        let launcher = Arc::new(SimLauncher::new().configure(move |builder| {
            let builder = builder.time_scale(scale).faults(faults.clone());
            match &timings {
                Some(timings) => builder.timings(timings.clone()),
                None => builder,
            }
        }));
        let runtime = Arc::new(InMemoryRuntime::new(launcher.clone()));
        let mut config = PoolConfig::new(
            ImageRef::parse("devlikeapro/waha:latest").expect("a valid image reference"),
        );
        config.engine = self.engine;
        config.volumes = self.volumes;
        config.startup_deadline = self.startup_deadline;
        config.poll_interval = ms(20);
        config.probe_timeout = secs(1);
        config.idle_ttl = self.idle_ttl;
        config.auto_start = AutoStartStagger {
            base: Duration::ZERO,
            spread: Duration::ZERO,
        };
        let pool = tenant_pool(runtime.clone(), &directory, config);
        let proxies = fake_proxies(self.endpoints, Arc::new(InMemoryLeaseStore::new()));
        let waha = http_clients();

        let observers: Observers = Arc::default();
        let receiver = Receiver {
            directory: directory.clone(),
            observers: observers.clone(),
            received: Arc::default(),
            refused: Arc::default(),
        };
        let received = receiver.received.clone();
        let refused = receiver.refused.clone();
        let app = axum::Router::new()
            .route("/webhooks/{tenant}", post(receive))
            .with_state(receiver);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port for the webhook receiver");
        let webhook_addr = listener.local_addr().expect("the receiver's address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        Fleet {
            directory,
            quota,
            launcher,
            runtime,
            pool,
            proxies,
            store: Arc::new(MemoryChipStore::new()),
            bus: Arc::new(InProcessEventBus::new()),
            waha,
            tenants,
            webhook_addr,
            observers,
            webhooks_received: received,
            webhooks_refused: refused,
        }
    }
}

/// The in-memory world (named `Fleet`: `session_supervisor::World` is the reconcile's view).
pub struct Fleet {
    pub directory: Arc<dyn TenantDirectory>,
    pub quota: Arc<dyn QuotaLedger>,
    pub launcher: Arc<SimLauncher>,
    pub runtime: Arc<InMemoryRuntime>,
    pub pool: Arc<TenantPool>,
    pub proxies: Arc<ProxyAllocator>,
    pub store: Arc<MemoryChipStore>,
    pub bus: Arc<InProcessEventBus>,
    pub waha: Arc<dyn WahaClients>,
    pub tenants: Vec<TenantId>,
    pub webhook_addr: SocketAddr,
    observers: Observers,
    pub webhooks_received: Arc<AtomicU64>,
    pub webhooks_refused: Arc<AtomicU64>,
}

/// A running supervisor of a [`Fleet`]; derefs to its [`Supervisor`].
pub struct Replica {
    pub supervisor: Supervisor,
    handle: Option<SupervisorHandle>,
    observers: Observers,
}

impl std::ops::Deref for Replica {
    type Target = Supervisor;

    fn deref(&self) -> &Supervisor {
        &self.supervisor
    }
}

impl Replica {
    /// Stops the supervisor (it no longer receives webhooks) and releases its tenants.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let me = self.supervisor.owner_id().clone();
        self.observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| *s.owner_id() != me);
        self.handle
            .take()
            .expect("a replica is shut down once")
            .shutdown()
            .await
    }

    /// Whether its tasks still run.
    pub fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(SupervisorHandle::is_running)
    }
}

impl Fleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            tenants: Vec::new(),
            engine: Engine::Noweb,
            time_scale: 0.05,
            faults: Faults::none(),
            timings: None,
            idle_ttl: secs(30 * 60),
            startup_deadline: secs(3),
            volumes: true,
            endpoints: 4,
        }
    }

    /// The webhook URL template the supervisors give WAHA.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/{{tenant}}", self.webhook_addr)
    }

    /// The test configuration: 10 ms ticks, a step timeout 1 s above the pool's startup
    /// deadline, short ownership timings (`lease_ttl ≥ safety_margin + 2 × renew_every`), the
    /// fast policy, restart budgets too large to matter, and the proxy-health task off (the
    /// fake endpoints are never contacted).
    pub fn config(&self) -> SupervisorConfig {
        supervisor_config(
            self.webhook_url(),
            SupervisorTimings {
                tick_interval: ms(10),
                step_timeout: self.pool.config().startup_deadline + secs(1),
                lease_ttl: secs(2),
                renew_every: ms(200),
                safety_margin: ms(500),
                claim_interval: ms(100),
                shutdown_grace: secs(2),
            },
        )
    }

    /// A pool like the fleet's, on the same runtime and simulators, whose containers run
    /// `image` (what a host deploys to roll a new WAHA image out).
    pub fn pool_with_image(&self, image: &str) -> Arc<TenantPool> {
        let mut config = self.pool.config().clone();
        config.image = ImageRef::parse(image).expect("a valid image reference");
        tenant_pool(self.runtime.clone(), &self.directory, config)
    }

    /// A supervisor of this world on another pool, built but not running.
    pub fn build_supervisor_on(
        &self,
        pool: Arc<TenantPool>,
        config: SupervisorConfig,
    ) -> Supervisor {
        let mut parts = self.parts();
        parts.pool = pool;
        Supervisor::builder(parts)
            .event_bus(self.bus.clone() as Arc<dyn EventBus>)
            .config(config)
            .build()
            .expect("the test configuration is valid")
    }

    /// The pieces a supervisor of this world is built from.
    pub fn parts(&self) -> SupervisorParts {
        SupervisorParts {
            directory: self.directory.clone(),
            quota: self.quota.clone(),
            pool: self.pool.clone(),
            proxies: self.proxies.clone(),
            store: self.store.clone() as Arc<dyn ChipStore>,
            waha: self.waha.clone(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A supervisor of this world, built but not running (it receives webhooks once started).
    pub fn build_supervisor(&self, config: SupervisorConfig, owner: Option<&str>) -> Supervisor {
        let mut builder = Supervisor::builder(self.parts())
            .event_bus(self.bus.clone() as Arc<dyn EventBus>)
            .config(config);
        if let Some(owner) = owner {
            builder = builder.owner_id(OwnerId::new(owner));
        }
        builder.build().expect("the test configuration is valid")
    }

    /// Runs `supervisor` and routes webhooks to it.
    pub async fn start(&self, supervisor: Supervisor) -> Replica {
        let handle = supervisor.run().await.expect("the supervisor runs");
        self.observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(supervisor.clone());
        Replica {
            supervisor,
            handle: Some(handle),
            observers: self.observers.clone(),
        }
    }

    /// A running supervisor with the test configuration.
    pub async fn supervisor(&self) -> Replica {
        self.supervisor_with(self.config()).await
    }

    /// A running supervisor with `config`.
    pub async fn supervisor_with(&self, config: SupervisorConfig) -> Replica {
        let supervisor = self.build_supervisor(config, None);
        self.start(supervisor).await
    }

    /// A running supervisor with `config` under the owner id `owner`.
    pub async fn supervisor_owned(&self, config: SupervisorConfig, owner: &str) -> Replica {
        let supervisor = self.build_supervisor(config, Some(owner));
        self.start(supervisor).await
    }

    /// The tenant's containers (every state).
    pub async fn containers(&self, tenant: &TenantId) -> Vec<ContainerInfo> {
        self.pool
            .containers(tenant)
            .await
            .expect("the pool lists containers")
    }

    /// The tenant's running container of `slot`, if any.
    pub async fn running_container(&self, tenant: &TenantId, slot: u32) -> Option<ContainerInfo> {
        let slot = slot.to_string();
        self.containers(tenant).await.into_iter().find(|c| {
            c.label(labels::SLOT) == Some(slot.as_str()) && c.state == ContainerState::Running
        })
    }

    /// How many containers the tenant has per slot label.
    pub async fn containers_per_slot(&self, tenant: &TenantId) -> BTreeMap<String, usize> {
        let mut per_slot = BTreeMap::new();
        for c in self.containers(tenant).await {
            *per_slot
                .entry(c.label(labels::SLOT).unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        per_slot
    }

    /// The simulator control of the tenant's slot-0 container (waits until it runs).
    pub async fn control_for(&self, tenant: &TenantId) -> SimulatorControl {
        eventually(
            WAIT,
            format!("a running simulator for tenant {tenant}, slot 0"),
            // Only references are captured: `move` copies them into each poll's future.
            move || async move {
                let container = self.running_container(tenant, 0).await?;
                self.launcher
                    .control(&container.name)
                    .filter(SimulatorControl::is_running)
            },
        )
        .await
    }

    /// The tenant's slot-0 endpoint (ensured: the container is created when missing).
    pub async fn endpoint(&self, tenant: &TenantId) -> TenantEndpoint {
        self.pool
            .ensure(tenant)
            .await
            .expect("the tenant's container is ready")
    }

    /// A WAHA client for the tenant's slot-0 container, with the tenant's key.
    pub async fn waha_for(&self, tenant: &TenantId) -> WahaClient {
        let endpoint = self.endpoint(tenant).await;
        WahaClient::new(endpoint.base_url.clone(), endpoint.api_key.clone()).expect("a WAHA client")
    }

    /// The session names WAHA lists in the tenant's slot-0 container, sorted.
    pub async fn session_names(&self, tenant: &TenantId) -> Vec<String> {
        let mut names: Vec<String> = self
            .waha_for(tenant)
            .await
            .list_sessions(true)
            .await
            .expect("sessions listed")
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names
    }

    /// A simulated phone scans the chip's QR code (or enters its pairing code) as the account
    /// `<digits>@c.us`, once WAHA shows `SCAN_QR_CODE`.
    pub async fn scan(&self, tenant: &TenantId, chip: &ChipId, digits: &str) {
        let name = session(tenant, chip);
        let control = self.control_for(tenant).await;
        control
            .wait_for_status(&name, waha_sim::SessionStatus::ScanQrCode, WAIT)
            .await
            .unwrap_or_else(|error| panic!("{name} never asked for a scan: {error}"));
        control
            .scan_as(&name, waha_sim::Me::phone(digits, "Chipfleet Test"))
            .unwrap_or_else(|error| panic!("scanning {name} failed: {error}"));
    }

    /// The tenant's quota usage.
    pub async fn usage(&self, tenant: &TenantId) -> QuotaUsage {
        self.quota.usage(tenant).await.expect("quota usage")
    }

    /// The chip's proxy lease, if any.
    pub async fn lease(&self, tenant: &TenantId, chip: &ChipId) -> Option<ProxyLease> {
        self.proxies
            .lease(tenant, chip)
            .await
            .expect("the allocator reads leases")
    }

    /// The records of one tenant in the shared store.
    pub async fn records(&self, tenant: &TenantId) -> Vec<ChipRecord> {
        self.store
            .list(tenant, None, 1_000)
            .await
            .expect("the store lists chips")
    }
}

/// Calls of a simulator's log about `session` that created it and were answered 201.
pub fn creates_answered_201(control: &SimulatorControl, session: &str) -> usize {
    control
        .calls_for(session)
        .iter()
        .filter(|call| call.is_create() && call.method == "POST" && call.status == 201)
        .count()
}

/// Whether a logged call starts or restarts a session.
pub fn is_start_or_restart(call: &waha_sim::CallRecord) -> bool {
    call.method == "POST"
        && (call.route == "/api/sessions/{session}/start"
            || call.route == "/api/sessions/{session}/restart")
}

/// The highest call number a simulator has logged so far (0: none).
pub fn call_mark(control: &SimulatorControl) -> u64 {
    control.calls().last().map_or(0, |call| call.seq)
}

/// Creates a QR chip, waits for its QR window, lets a phone scan it as `digits`, and waits
/// until it is `Working`.
pub async fn working_chip(
    fleet: &Fleet,
    supervisor: &Supervisor,
    tenant: &TenantId,
    chip: &ChipId,
    digits: &str,
) -> ChipRecord {
    supervisor
        .create_chip(tenant, chip, ChipSpec::qr())
        .await
        .unwrap_or_else(|error| panic!("creating {tenant}/{chip} failed: {error}"));
    wait_phase(supervisor, tenant, chip, PhaseName::AwaitingLogin, WAIT).await;
    fleet.scan(tenant, chip, digits).await;
    wait_phase(supervisor, tenant, chip, PhaseName::Working, WAIT).await
}

/// Milliseconds since the Unix epoch of `at` (the simulators' call logs are stamped so).
pub fn unix_ms(at: std::time::SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits")
}

/// The calls the simulator logged about `name` after call number `mark`.
pub fn calls_after(control: &SimulatorControl, name: &str, mark: u64) -> Vec<waha_sim::CallRecord> {
    control
        .calls_for(name)
        .into_iter()
        .filter(|call| call.seq > mark)
        .collect()
}

/// Calls in one line each, for failure messages.
pub fn show_calls(calls: &[waha_sim::CallRecord]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("#{} {} {} -> {}", c.seq, c.method, c.route, c.status))
        .collect()
}

/// Polls every chip of `tenants` × `chips` until each has been seen in phase `want` (each is
/// noted as soon as it is seen: a QR window may run out later). Returns the records as seen.
pub async fn wait_all(
    supervisor: &Supervisor,
    tenants: &[TenantId],
    chips: &[ChipId],
    want: PhaseName,
    within: Duration,
) -> BTreeMap<ChipKey, ChipRecord> {
    let deadline = Instant::now() + within;
    let mut seen = BTreeMap::new();
    loop {
        let mut pending = Vec::new();
        for t in tenants {
            for c in chips {
                let k = key(t, c);
                if seen.contains_key(&k) {
                    continue;
                }
                match supervisor.get_chip(t, c).await {
                    Ok(record) if record.observed.phase.name() == want => {
                        seen.insert(k, record);
                    }
                    Ok(record) => pending.push(describe(&record)),
                    Err(error) => pending.push(format!("{k}: {error}")),
                }
            }
        }
        if pending.is_empty() {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for every chip to be {want}; still: {pending:#?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asserts that the restart times `times` (wall-clock ms, sorted) never outran `budget` from
/// `mark_ms` on: for every restart's time t, the restarts in [mark, t] are at most
/// `burst + ⌊(t − mark) / every⌋ + 1` (the +1 for millisecond rounding).
pub fn assert_within_budget(
    who: &str,
    times: &[u64],
    mark_ms: u64,
    budget: session_supervisor::policy::Rate,
) {
    let every_ms = u64::try_from(budget.every.as_millis())
        .expect("fits")
        .max(1);
    let relative: Vec<u64> = times.iter().map(|x| x.saturating_sub(mark_ms)).collect();
    for &at in times {
        let elapsed = at.saturating_sub(mark_ms);
        let so_far = u64::try_from(times.iter().filter(|&&x| x <= at).count()).expect("fits");
        let allowed = u64::from(budget.burst) + elapsed / every_ms + 1;
        assert!(
            so_far <= allowed,
            "{who}: {so_far} restarts by +{elapsed} ms exceed the budget (burst {}, one every \
             {:?}): at most {allowed} by then; all restarts at +ms: {relative:?}",
            budget.burst,
            budget.every,
        );
    }
}
