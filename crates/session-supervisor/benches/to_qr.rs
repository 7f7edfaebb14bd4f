//! 100 chips to their QR code (20 tenants × 5 chips): the supervisor against a straight-line
//! program that makes the same WAHA calls, with the same WAHA client and 100 ms status polls,
//! but keeps nothing, owns nothing and never reconciles (the shape of the old service). The
//! program is a plain `main` (`harness = false`, not criterion) that prints the ratio measured in
//! this one run. Goal: the supervisor takes at most 1.2× the straight-line program's time. After
//! that comes a fault table: servers that answer 400 to session calls for 3 s while their
//! `/health` already answers 200 (seed report 000). The straight-line program fails there and
//! the supervisor still gets 100 of 100 chips to their QR code.
//!
//! Run: `cargo bench -p session-supervisor --bench to_qr` (`ROUNDS=5 cargo bench ...` for
//! more rounds; the default is 1).
//!
//! # What is measured
//! - **Wall time**: from launching the first chip to the last chip's QR code, on each side.
//! - **Create→QR per chip** (p50, p95). Supervisor: from just before the chip's
//!   `Supervisor::create_chip` until `Supervisor::qr` returns the code (a record read, then
//!   WAHA's `GET /api/{session}/auth/qr`). The host learns that a QR window opened from the
//!   supervisor's change stream (`subscribe`, one stream per tenant, opened before the first
//!   create) and then calls `qr`. Straight-line: from the start of its tenant's work (before
//!   the container is ensured) until its `GET` of the QR code answers.
//! - The ratio of the supervisor's wall time to the straight-line program's (means over the
//!   rounds), with the p50 and p95 ratios next to it. Each chip must reach its QR code in every
//!   timed run, or the bench fails.
//!
//! Order: a small untimed warm-up (2 tenants × 1 chip on each side), then each round runs the
//! straight-line program, the supervisor, and the supervisor with its default concurrency
//! limits. Every run gets fresh tenants, containers, volumes and HTTP connection pools, and at
//! the end of a run its containers and volumes are removed.
//!
//! # The world, the same on both sides
//! The world is the in-memory one of the end-to-end tests (`tests/support`: `Fleet`, built
//! afresh for every run). It has a `MemoryTenantDirectory` with 20 tenants, container-pool's
//! `InMemoryRuntime` running one in-process `waha-sim` on 127.0.0.1 per container, a
//! `MemoryQuotaLedger`, a `MemoryChipStore` and an `InProcessEventBus`.
//! - **Container start**: both sides get their containers from `TenantPool::ensure` on a pool
//!   built the same way: the fleet's settings with `PoolConfig`'s default 100 ms readiness poll,
//!   volumes on, a 30 s start-up deadline, and one container per tenant (10 sessions each).
//!   Every container has the same simulator environment, as `tests/shared/docker.rs` sets it:
//!   `SIM_STARTUP_DELAY_MS=300` (it refuses connections that long), `SIM_STARTING_MS=500`
//!   (STARTING → SCAN_QR_CODE) and `SIM_FIRST_QR_MS=20000`. The QR lifetime is that long so that
//!   no refresh (and no re-emitted `SCAN_QR_CODE` webhook) falls inside a run. Time scale 1: every
//!   duration is wall-clock time.
//! - **WAHA client**: both sides use one `HttpWahaClients` per run, configured as chip-service
//!   runs the supervisor: waha-client's defaults with its retries off (`RetryConfig::disabled`:
//!   the supervisor retries through its own policy). The straight-line program takes its
//!   clients from that factory too, so time-outs, retries and the shared connection pool are
//!   the same. With the client's own retries on, the supervisor's world read of a chip whose
//!   container another chip is still starting (the session read refused while the simulator
//!   is not listening yet) waits out the client's backoff (about 1 s): measured, 2.1× instead
//!   of the figure below. In the fault run the booting 400 carries a NestJS error body, which
//!   the client never retries under any policy.
//!
//! # The straight-line program
//! For each tenant at once, `TenantPool::ensure`. Then for each of its 5 chips at once:
//! `POST /api/sessions` with `start: true`, `GET /api/sessions/{name}` every 100 ms until
//! `SCAN_QR_CODE`, then `GET /api/{name}/auth/qr?format=raw`. Any error that the client's
//! retries did not absorb fails the chip: there is no store, no owner and no reconcile. Its
//! session config has the supervisor's metadata (tenant, chip) and a proxy of the same fake
//! list, but no webhooks. The program polls and would never read them, and leaving them out
//! spares its simulators the deliveries. Its 100 ms polls (the definition of the plain
//! program) cost it up to 100 ms per chip (about 50 ms on average) after `SCAN_QR_CODE`, where
//! the supervisor is woken by the webhook: that bias favours the supervisor, by about 5 % of
//! the straight-line time here, and is part of what the ratio compares.
//!
//! # The supervisor
//! The real `Supervisor`, running before the first chip is created (a long-running service),
//! over the fleet's stores. The proxy allocator is `fake_proxies` with 8 TEST-NET endpoints,
//! never contacted. Webhooks go to the fleet's receiver, which verifies the tenant's HMAC and
//! then calls `observe`. Its configuration is `SupervisorConfig::new`'s defaults (policy,
//! restart budgets, lease timings, monitors) except:
//! - `tick_interval` 100 ms (default 1 s) and `claim_interval` 100 ms (default 2 s): how often
//!   it looks for due work that nothing woke it for, and for tenants without an owner. They
//!   are set to the straight-line program's poll interval. With the defaults, a brand-new
//!   tenant waits up to 2 s to be claimed, and 4 of the 20 wait a second claim (`claim_batch`
//!   16).
//! - `policy.reread_after` 1 s (default 10 s): only a failed read waits for it, and reads fail
//!   only in the fault run. At 1 s that table ends in seconds.
//! - `reconcile_concurrency` 100 and `per_tenant_concurrency` 5 (defaults 16 and 4): the
//!   supervisor has as many chips in flight as the straight-line program, so the ratio measures
//!   its per-chip overhead (store writes, ownership, reconcile reads, webhooks), not its storm
//!   limits. Each round also runs the supervisor with the default limits. That row is printed
//!   with its own ratio for information; the goal is judged on the first.
//! - `monitors.proxy_health` off: the fake endpoints cannot be probed.
//!
//! # The fault table
//! Every container runs with `SIM_BOOTING_MS=3000`, `SIM_BOOTING_STATUS=400` and
//! `SIM_BOOTING_HEALTH=200`. For 3 s after it starts listening, `/health` (and
//! `/api/server/status`) answer 200, so `TenantPool::ensure` reports the container ready, while
//! every session call answers 400 with a NestJS error body, which waha-client maps to
//! `WahaError::Invalid` (never retried). The straight-line program's creates fail, as in seed
//! report 000. The supervisor's session reads fail the same way; it reads again after
//! `reread_after` and creates each session once WAHA answers. The bench prints
//! `straight-line: X of 100 reached QR (errors: ...)` and `supervisor: N of 100`, and exits
//! non-zero when the supervisor gets fewer than 100.

/// The test helpers shared by this crate's test binaries (fake proxies, a pool over a
/// runtime), included as the tests include them.
#[path = "../tests/shared/mod.rs"]
mod shared;
/// The in-memory world of the end-to-end tests (`Fleet`: directory, quota, runtime with
/// `SimLauncher`, stores, the webhook receiver), included as the tests include it.
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container_pool::{EnvVar, TenantPool};
use session_supervisor::{
    ChangeFilter, ChangeItem, ChangeStream, ChipKey, ChipSpec, ChipStore, EventBus,
    HttpWahaClients, PhaseName, QrFormat, Supervisor, SupervisorConfig, SupervisorParts,
    SystemClock, Toggle, WahaClients,
};
use tenant_isolation::{ChipId, TenantId};
use tokio::task::JoinSet;
use waha_client::{
    ClientConfig, NewSession, ProxyConfig, RetryConfig, SessionConfig, SessionStatus, WahaApi,
    WahaError, metadata,
};

use shared::tenant_pool;
use support::{Fleet, describe, session};

/// Tenants per run.
const TENANTS: usize = 20;
/// Chips per tenant.
const CHIPS_PER_TENANT: usize = 5;
/// Chips per run.
const CHIPS: usize = TENANTS * CHIPS_PER_TENANT;
/// The goal: the supervisor's wall time at most this many times the straight-line program's.
const GOAL: f64 = 1.2;
/// The straight-line program's status poll, the pool's readiness poll, and the supervisor's
/// tick and claim intervals.
const POLL: Duration = Duration::from_millis(100);
/// How long a simulator refuses connections after its container starts.
const SIM_STARTUP_DELAY_MS: u64 = 300;
/// STARTING → SCAN_QR_CODE.
const SIM_STARTING_MS: u64 = 500;
/// The first QR code's lifetime (no refresh inside a run).
const SIM_FIRST_QR_MS: u64 = 20_000;
/// The fault run's booting window (health 200, session calls 400).
const SIM_BOOTING_MS: u64 = 3_000;
/// The pool's start-up deadline (far above a container's start here, 2 cores included).
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a run waits for every chip before it reports the missing ones.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// Fake proxy endpoints (16 chips each: room for 128).
const PROXY_ENDPOINTS: usize = 8;
/// A tenant's watcher re-reads its pending chips this often, in case a change was missed
/// (a lagging stream); the run reports how many chips were found that way.
const REREAD_EVERY: Duration = Duration::from_secs(1);
/// The longest error detail printed.
const DETAIL_CHARS: usize = 200;

/// How many chips a run has, and whether its containers boot with the fault.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    tenants: usize,
    chips_per_tenant: usize,
    booting_fault: bool,
}

impl Scenario {
    const TIMED: Scenario = Scenario {
        tenants: TENANTS,
        chips_per_tenant: CHIPS_PER_TENANT,
        booting_fault: false,
    };
    const WARM_UP: Scenario = Scenario {
        tenants: 2,
        chips_per_tenant: 1,
        booting_fault: false,
    };
    const FAULT: Scenario = Scenario {
        booting_fault: true,
        ..Scenario::TIMED
    };

    fn chips(self) -> usize {
        self.tenants * self.chips_per_tenant
    }
}

/// The supervisor's concurrency limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Limits {
    /// As many chips in flight as the straight-line program: `reconcile_concurrency` = chips,
    /// `per_tenant_concurrency` = chips per tenant.
    Matched,
    /// `SupervisorConfig::new`'s (16 and 4).
    Defaults,
}

/// One run's world: a fresh fleet, the pool both sides ensure containers through, the WAHA
/// client factory, and the chip ids of every tenant.
struct World {
    fleet: Fleet,
    pool: Arc<TenantPool>,
    clients: Arc<HttpWahaClients>,
    chips: Vec<ChipId>,
}

/// The simulators' environment (both sides): the start-up delay, the timings and, for the fault
/// run, the booting window.
fn sim_env(booting_fault: bool) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar::plain("SIM_STARTUP_DELAY_MS", SIM_STARTUP_DELAY_MS.to_string()),
        EnvVar::plain("SIM_STARTING_MS", SIM_STARTING_MS.to_string()),
        EnvVar::plain("SIM_FIRST_QR_MS", SIM_FIRST_QR_MS.to_string()),
    ];
    if booting_fault {
        env.push(EnvVar::plain("SIM_BOOTING_MS", SIM_BOOTING_MS.to_string()));
        env.push(EnvVar::plain("SIM_BOOTING_STATUS", "400"));
        env.push(EnvVar::plain("SIM_BOOTING_HEALTH", "200"));
    }
    env
}

/// Both sides' WAHA client configuration (see the module docs).
fn client_config() -> ClientConfig {
    ClientConfig {
        retry: RetryConfig::disabled(),
        ..ClientConfig::default()
    }
}

/// A fresh world whose tenants are `<tag>-t00`, `<tag>-t01`, ...
async fn world(tag: &str, scenario: Scenario) -> World {
    let mut builder = Fleet::builder()
        .time_scale(1.0)
        .startup_deadline(STARTUP_DEADLINE)
        .endpoints(PROXY_ENDPOINTS);
    for n in 0..scenario.tenants {
        builder = builder.tenant(&format!("{tag}-t{n:02}"));
    }
    let fleet = builder.build().await;
    // The fleet's pool settings with PoolConfig's default 100 ms readiness poll and the
    // simulators' environment. Only this pool touches the runtime's containers.
    let mut config = fleet.pool.config().clone();
    config.poll_interval = POLL;
    config.extra_env.extend(sim_env(scenario.booting_fault));
    let pool = tenant_pool(fleet.runtime.clone(), &fleet.directory, config);
    let clients = Arc::new(HttpWahaClients::new(client_config()).expect("an HTTP client"));
    let chips = (0..scenario.chips_per_tenant)
        .map(|n| ChipId::new(format!("c{n}")).expect("a valid chip id"))
        .collect();
    World {
        fleet,
        pool,
        clients,
        chips,
    }
}

/// Removes the run's containers and volumes (stopping their simulators).
async fn tear_down(world: World) {
    let removals = world
        .fleet
        .tenants
        .iter()
        .map(|tenant| world.pool.remove_tenant(tenant, true));
    for result in futures::future::join_all(removals).await {
        if let Err(error) = result {
            eprintln!("clean-up: removing a tenant's containers failed: {error}");
        }
    }
}

/// The supervisor's configuration (see the module docs for each change from the defaults).
fn bench_config(webhook_url: String, limits: Limits, scenario: Scenario) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(webhook_url);
    config.tick_interval = POLL;
    config.claim_interval = POLL;
    config.policy.reread_after = Duration::from_secs(1);
    if limits == Limits::Matched {
        config.reconcile_concurrency = scenario.chips();
        config.per_tenant_concurrency = scenario.chips_per_tenant;
    }
    config.monitors.proxy_health = Toggle::Off {
        reason: "bench: the proxy endpoints are documentation addresses (203.0.113.x), never \
                 contacted"
            .to_owned(),
    };
    config
}

// ---------------------------------------------------------------------------------------------
// What a run reports.
// ---------------------------------------------------------------------------------------------

/// How one chip's run ended.
enum ChipOutcome {
    /// Its QR code was fetched at `at`, `took` after its start.
    Reached { at: Instant, took: Duration },
    /// It never got there: `what` (counted), `detail` (one sample printed; never a secret).
    Failed { what: String, detail: String },
}

impl ChipOutcome {
    fn waha_failed(call: &str, error: &WahaError) -> Self {
        ChipOutcome::Failed {
            what: format!("{call}: {}", error.kind()),
            detail: error.to_string(),
        }
    }
}

/// What one run measured.
struct RunReport {
    /// From the first chip's launch to the last chip's QR code (to the end of the wait when
    /// some never got there).
    wall: Duration,
    /// Create→QR of the chips that got there, sorted.
    per_chip: Vec<Duration>,
    /// How many chips the run had.
    chips: usize,
    /// Failures by what failed.
    errors: BTreeMap<String, usize>,
    /// The first failure's detail.
    sample: Option<String>,
    /// Supervisor runs: chips first seen at their QR code by the watchers' re-read rather than
    /// through a change (expected 0).
    found_by_reread: usize,
}

impl RunReport {
    fn new(started: Instant, outcomes: Vec<ChipOutcome>, found_by_reread: usize) -> Self {
        let chips = outcomes.len();
        let mut per_chip = Vec::with_capacity(chips);
        let mut last = None::<Instant>;
        let mut errors = BTreeMap::new();
        let mut sample = None;
        for outcome in outcomes {
            match outcome {
                ChipOutcome::Reached { at, took } => {
                    per_chip.push(took);
                    last = Some(last.map_or(at, |last| last.max(at)));
                }
                ChipOutcome::Failed { what, detail } => {
                    *errors.entry(what).or_insert(0) += 1;
                    if sample.is_none() {
                        sample = Some(detail);
                    }
                }
            }
        }
        per_chip.sort_unstable();
        let wall = if errors.is_empty() {
            last.map_or(Duration::ZERO, |last| last.duration_since(started))
        } else {
            started.elapsed()
        };
        RunReport {
            wall,
            per_chip,
            chips,
            errors,
            sample,
            found_by_reread,
        }
    }

    fn reached(&self) -> usize {
        self.per_chip.len()
    }

    fn complete(&self) -> bool {
        self.reached() == self.chips
    }

    /// `N × what, ...` and the first detail, shortened.
    fn errors_line(&self) -> String {
        let counts: Vec<String> = self
            .errors
            .iter()
            .map(|(what, n)| format!("{n} × {what}"))
            .collect();
        match &self.sample {
            Some(detail) => format!("{}; first: \"{}\"", counts.join(", "), shorten(detail)),
            None => "none".to_owned(),
        }
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(DETAIL_CHARS).collect();
    if text.chars().count() > DETAIL_CHARS {
        short.push('…');
    }
    short
}

/// The `q` quantile of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[index]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mean(durations: &[Duration]) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    durations.iter().sum::<Duration>() / u32::try_from(durations.len()).unwrap_or(u32::MAX)
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(f64::MIN_POSITIVE)
}

// ---------------------------------------------------------------------------------------------
// The straight-line program.
// ---------------------------------------------------------------------------------------------

/// The session config of chip number `n`: the supervisor's metadata and a proxy of the same
/// fake list; no webhooks (it polls).
fn straight_session_config(tenant: &TenantId, chip: &ChipId, n: usize) -> SessionConfig {
    let mut config = SessionConfig::default();
    config
        .metadata
        .insert(metadata::TENANT.to_owned(), tenant.as_str().to_owned());
    config
        .metadata
        .insert(metadata::CHIP.to_owned(), chip.as_str().to_owned());
    config.proxy = Some(ProxyConfig::new(format!(
        "203.0.113.{}:3128",
        10 + n % PROXY_ENDPOINTS
    )));
    config
}

/// One chip: create with start, poll the status every 100 ms until `SCAN_QR_CODE`, get the QR
/// code. `began` is when its tenant's work began.
async fn straight_chip(
    api: Arc<dyn WahaApi>,
    name: String,
    config: SessionConfig,
    began: Instant,
    deadline: Instant,
) -> ChipOutcome {
    let new = NewSession {
        start: true,
        ..NewSession::new(name.clone(), config)
    };
    let mut status = match api.create_session(&new).await {
        Ok(created) => created.map(|info| info.status),
        Err(error) => return ChipOutcome::waha_failed("create_session", &error),
    };
    loop {
        match &status {
            Some(SessionStatus::ScanQrCode) => break,
            Some(SessionStatus::Failed) => {
                return ChipOutcome::Failed {
                    what: "session FAILED".to_owned(),
                    detail: format!("{name} went FAILED before its QR code"),
                };
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return ChipOutcome::Failed {
                what: "timed out".to_owned(),
                detail: format!(
                    "{name} still {} after {RUN_DEADLINE:?}",
                    status.as_ref().map_or("unknown", SessionStatus::as_str)
                ),
            };
        }
        tokio::time::sleep(POLL).await;
        status = match api.get_session(&name).await {
            Ok(info) => Some(info.status),
            Err(error) => return ChipOutcome::waha_failed("get_session", &error),
        };
    }
    match api.qr_raw(&name).await {
        Ok(_) => {
            let at = Instant::now();
            ChipOutcome::Reached {
                at,
                took: at.duration_since(began),
            }
        }
        Err(error) => ChipOutcome::waha_failed("qr_raw", &error),
    }
}

/// One tenant: ensure its container, then its chips at once.
async fn straight_tenant(
    pool: Arc<TenantPool>,
    clients: Arc<HttpWahaClients>,
    tenant: TenantId,
    chips: Vec<ChipId>,
    first_chip: usize,
    deadline: Instant,
) -> Vec<ChipOutcome> {
    let began = Instant::now();
    let all_failed = |what: String, detail: String| {
        chips
            .iter()
            .map(|_| ChipOutcome::Failed {
                what: what.clone(),
                detail: detail.clone(),
            })
            .collect::<Vec<_>>()
    };
    let endpoint = match pool.ensure(&tenant).await {
        Ok(endpoint) => endpoint,
        Err(error) => return all_failed(format!("ensure: {}", error.kind()), error.to_string()),
    };
    let api = match clients.client(&endpoint.base_url, endpoint.api_key.clone()) {
        Ok(api) => api,
        Err(error) => return all_failed(format!("client: {}", error.kind()), error.to_string()),
    };
    let mut set = JoinSet::new();
    for (n, chip) in chips.iter().enumerate() {
        set.spawn(straight_chip(
            api.clone(),
            session(&tenant, chip),
            straight_session_config(&tenant, chip, first_chip + n),
            began,
            deadline,
        ));
    }
    let mut outcomes = Vec::with_capacity(chips.len());
    while let Some(joined) = set.join_next().await {
        outcomes.push(joined.expect("a straight-line chip task"));
    }
    outcomes
}

/// The straight-line program over `world`: every tenant at once.
async fn straight_run(world: &World) -> RunReport {
    let started = Instant::now();
    let deadline = started + RUN_DEADLINE;
    let mut tenants = JoinSet::new();
    for (n, tenant) in world.fleet.tenants.iter().enumerate() {
        tenants.spawn(straight_tenant(
            world.pool.clone(),
            world.clients.clone(),
            tenant.clone(),
            world.chips.clone(),
            n * world.chips.len(),
            deadline,
        ));
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tenants.join_next().await {
        outcomes.extend(joined.expect("a straight-line tenant task"));
    }
    RunReport::new(started, outcomes, 0)
}

// ---------------------------------------------------------------------------------------------
// The supervisor.
// ---------------------------------------------------------------------------------------------

/// The chips of one tenant that reached their QR code, and when.
struct TenantWatch {
    tenant: TenantId,
    reached: HashMap<ChipId, Instant>,
    found_by_reread: usize,
}

/// Whether the chip's QR code can be fetched now (`Supervisor::qr` reads the record, checks
/// the QR login window and asks WAHA).
async fn qr_ready(supervisor: &Supervisor, tenant: &TenantId, chip: &ChipId) -> bool {
    supervisor.qr(tenant, chip, QrFormat::Raw).await.is_ok()
}

/// Follows one tenant's changes until each of `chips` has its QR code or `deadline` passes: a
/// change that shows the QR login window triggers `qr`; every `REREAD_EVERY` (and after a gap)
/// the pending chips are tried too.
async fn watch_tenant(
    supervisor: Supervisor,
    tenant: TenantId,
    chips: Vec<ChipId>,
    mut stream: ChangeStream,
    deadline: Instant,
) -> TenantWatch {
    let mut pending: BTreeSet<ChipId> = chips.into_iter().collect();
    let mut reached = HashMap::new();
    let mut found_by_reread = 0;
    let mut open = true;
    let mut next_reread = Instant::now() + REREAD_EVERY;
    while !pending.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wake = deadline.min(next_reread);
        let (candidates, reread): (Vec<ChipId>, bool) = if now >= next_reread {
            (pending.iter().cloned().collect(), true)
        } else if !open {
            tokio::time::sleep(wake.duration_since(now)).await;
            continue;
        } else {
            match tokio::time::timeout(wake.duration_since(now), stream.next()).await {
                Ok(Some(ChangeItem::Change(change))) => {
                    if change.phase == PhaseName::AwaitingLogin && pending.contains(&change.chip) {
                        (vec![change.chip], false)
                    } else {
                        continue;
                    }
                }
                Ok(Some(ChangeItem::Gap { .. })) => (pending.iter().cloned().collect(), true),
                Ok(None) => {
                    open = false;
                    continue;
                }
                Err(_) => continue,
            }
        };
        if reread {
            next_reread = Instant::now() + REREAD_EVERY;
        }
        for chip in candidates {
            if qr_ready(&supervisor, &tenant, &chip).await {
                reached.insert(chip.clone(), Instant::now());
                pending.remove(&chip);
                if reread {
                    found_by_reread += 1;
                }
            }
        }
    }
    TenantWatch {
        tenant,
        reached,
        found_by_reread,
    }
}

/// The supervisor over `world`: running first, then every chip created at once through
/// `create_chip`, each counted when `qr` returns its code.
async fn supervisor_run(world: &World, limits: Limits, scenario: Scenario) -> RunReport {
    let fleet = &world.fleet;
    let supervisor = Supervisor::builder(SupervisorParts {
        directory: fleet.directory.clone(),
        quota: fleet.quota.clone(),
        pool: world.pool.clone(),
        proxies: fleet.proxies.clone(),
        store: fleet.store.clone() as Arc<dyn ChipStore>,
        waha: world.clients.clone() as Arc<dyn WahaClients>,
        clock: Arc::new(SystemClock),
    })
    .event_bus(fleet.bus.clone() as Arc<dyn EventBus>)
    .config(bench_config(fleet.webhook_url(), limits, scenario))
    .build()
    .expect("a valid supervisor configuration");
    let replica = fleet.start(supervisor).await;
    let supervisor = replica.supervisor.clone();

    // Every stream is open before the first create, so no change is missed.
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut watchers = JoinSet::new();
    for tenant in &fleet.tenants {
        let stream = supervisor
            .subscribe(tenant, ChangeFilter::all())
            .await
            .expect("a change stream");
        watchers.spawn(watch_tenant(
            supervisor.clone(),
            tenant.clone(),
            world.chips.clone(),
            stream,
            deadline,
        ));
    }
    let started = Instant::now();

    let mut creates = JoinSet::new();
    for tenant in &fleet.tenants {
        for chip in &world.chips {
            let supervisor = supervisor.clone();
            let key = ChipKey::new(tenant.clone(), chip.clone());
            creates.spawn(async move {
                let at = Instant::now();
                let result = supervisor
                    .create_chip(&key.tenant, &key.chip, ChipSpec::qr())
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string());
                (key, at, result)
            });
        }
    }
    let mut began: HashMap<ChipKey, Instant> = HashMap::new();
    let mut outcomes = Vec::new();
    while let Some(joined) = creates.join_next().await {
        let (key, at, result) = joined.expect("a create task");
        match result {
            Ok(()) => {
                began.insert(key, at);
            }
            Err(detail) => outcomes.push(ChipOutcome::Failed {
                what: "create_chip".to_owned(),
                detail,
            }),
        }
    }

    let mut found_by_reread = 0;
    let mut reached_at: HashMap<ChipKey, Instant> = HashMap::new();
    while let Some(joined) = watchers.join_next().await {
        let watch = joined.expect("a watcher task");
        found_by_reread += watch.found_by_reread;
        for (chip, at) in watch.reached {
            reached_at.insert(ChipKey::new(watch.tenant.clone(), chip), at);
        }
    }
    for (key, start) in &began {
        match reached_at.get(key) {
            Some(at) => outcomes.push(ChipOutcome::Reached {
                at: *at,
                took: at.duration_since(*start),
            }),
            None => {
                let (what, detail) = match supervisor.get_chip(&key.tenant, &key.chip).await {
                    Ok(record) => (
                        format!("no QR code: {}", record.observed.phase.name()),
                        describe(&record),
                    ),
                    Err(error) => ("no QR code: unreadable".to_owned(), error.to_string()),
                };
                outcomes.push(ChipOutcome::Failed { what, detail });
            }
        }
    }
    // Where the slowest chip's time went (TO_QR_TRACE=1): each step, when it was recorded
    // after the chip's creation, and how long it took.
    if std::env::var_os("TO_QR_TRACE").is_some()
        && let Some(key) = began
            .iter()
            .filter_map(|(key, start)| {
                reached_at
                    .get(key)
                    .map(|at| (key, at.duration_since(*start)))
            })
            .max_by_key(|(_, took)| *took)
            .map(|(key, _)| key)
        && let Ok(record) = supervisor.get_chip(&key.tenant, &key.chip).await
    {
        eprintln!("trace {key} (the slowest chip):");
        for entry in record.steps.iter() {
            let at = entry
                .at
                .duration_since(record.created_at)
                .unwrap_or_default();
            eprintln!(
                "  +{:>7.3} s {:?} {:?} took {:.3} s",
                at.as_secs_f64(),
                entry.step,
                entry.outcome,
                entry.took.as_secs_f64()
            );
        }
    }
    let report = RunReport::new(started, outcomes, found_by_reread);
    let _ = replica.shutdown().await;
    report
}

// ---------------------------------------------------------------------------------------------
// The runs and the tables.
// ---------------------------------------------------------------------------------------------

/// Which program a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Straight,
    Supervisor(Limits),
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Straight => "straight-line",
            Side::Supervisor(Limits::Matched) => "supervisor",
            Side::Supervisor(Limits::Defaults) => "supervisor, default limits (info)",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Side::Straight => "line",
            Side::Supervisor(Limits::Matched) => "sup",
            Side::Supervisor(Limits::Defaults) => "def",
        }
    }
}

/// One run of `side` on a fresh world of `scenario`, torn down afterwards.
async fn run_side(tag: &str, side: Side, scenario: Scenario) -> RunReport {
    let world = world(&format!("{tag}-{}", side.tag()), scenario).await;
    let report = match side {
        Side::Straight => straight_run(&world).await,
        Side::Supervisor(limits) => supervisor_run(&world, limits, scenario).await,
    };
    tear_down(world).await;
    report
}

fn print_row(round: &str, side: Side, report: &RunReport) {
    println!(
        "{round:>6}  {:<34} {:>10} {:>10} {:>10} {:>5}/{}",
        side.label(),
        secs(report.wall),
        secs(quantile(&report.per_chip, 0.50)),
        secs(quantile(&report.per_chip, 0.95)),
        report.reached(),
        report.chips
    );
    if !report.errors.is_empty() {
        println!("{:>6}  errors: {}", "", report.errors_line());
    }
    if report.found_by_reread > 0 {
        println!(
            "{:>6}  {} chip(s) were first seen at their QR code by the 1 s re-read, not through \
             a change",
            "", report.found_by_reread
        );
    }
}

/// Walls and pooled per-chip samples of one side over the rounds.
#[derive(Default)]
struct Totals {
    walls: Vec<Duration>,
    per_chip: Vec<Duration>,
}

impl Totals {
    fn add(&mut self, report: &RunReport) {
        self.walls.push(report.wall);
        self.per_chip.extend_from_slice(&report.per_chip);
    }

    fn p(&mut self, q: f64) -> Duration {
        self.per_chip.sort_unstable();
        quantile(&self.per_chip, q)
    }
}

fn rounds() -> usize {
    match std::env::var("ROUNDS") {
        Err(_) => 1,
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("ROUNDS={value:?} is not a positive number; running 1 round");
                1
            }
        },
    }
}

async fn bench(rounds: usize) -> ExitCode {
    let mut failed = false;
    println!(
        "to_qr: {CHIPS} chips ({TENANTS} tenants × {CHIPS_PER_TENANT}) from no containers to their \
         QR code; simulators: start-up delay {SIM_STARTUP_DELAY_MS} ms, STARTING \
         {SIM_STARTING_MS} ms; polls {} ms; {rounds} round(s)",
        POLL.as_millis()
    );

    // Untimed: the first run of a process pays for what later runs find ready.
    for side in [Side::Straight, Side::Supervisor(Limits::Matched)] {
        let warm = run_side("warm", side, Scenario::WARM_UP).await;
        if !warm.complete() {
            println!(
                "warm-up ({}): {} of {} reached QR (errors: {})",
                side.label(),
                warm.reached(),
                warm.chips,
                warm.errors_line()
            );
        }
    }

    println!();
    println!(
        "{:>6}  {:<34} {:>10} {:>10} {:>10} {:>9}",
        "round", "side", "wall", "p50", "p95", "at QR"
    );
    let sides = [
        Side::Straight,
        Side::Supervisor(Limits::Matched),
        Side::Supervisor(Limits::Defaults),
    ];
    let mut totals: HashMap<Side, Totals> = HashMap::new();
    for round in 1..=rounds {
        // Alternate which side goes first, so neither always runs on a warmer machine.
        let mut order = sides.to_vec();
        if round.is_multiple_of(2) {
            order.swap(0, 1);
        }
        for side in order {
            let report = run_side(&format!("r{round}"), side, Scenario::TIMED).await;
            print_row(&round.to_string(), side, &report);
            if !report.complete() {
                failed = true;
            }
            totals.entry(side).or_default().add(&report);
        }
    }

    println!();
    println!("over {rounds} round(s) (wall: mean; p50/p95: all chips of all rounds):");
    let mut summary: HashMap<Side, (Duration, Duration, Duration)> = HashMap::new();
    for side in sides {
        let t = totals.entry(side).or_default();
        let line = (mean(&t.walls), t.p(0.50), t.p(0.95));
        println!(
            "  {:<34} wall {}, create→QR p50 {}, p95 {}",
            side.label(),
            secs(line.0),
            secs(line.1),
            secs(line.2)
        );
        summary.insert(side, line);
    }
    let straight = summary[&Side::Straight];
    let matched = summary[&Side::Supervisor(Limits::Matched)];
    let default = summary[&Side::Supervisor(Limits::Defaults)];
    let headline = ratio(matched.0, straight.0);
    println!(
        "ratio supervisor/straight-line: {headline:.2}× wall (p50 {:.2}×, p95 {:.2}×); with the \
         default limits (16 / 4 per tenant): {:.2}× wall",
        ratio(matched.1, straight.1),
        ratio(matched.2, straight.2),
        ratio(default.0, straight.0)
    );
    if failed {
        println!("goal ≤ {GOAL}×: not judged (a timed run left chips without a QR code)");
    } else if headline <= GOAL {
        println!("goal ≤ {GOAL}×: met");
    } else {
        println!("goal ≤ {GOAL}×: missed");
    }

    println!();
    println!(
        "fault: every container answers 400 to session calls for {SIM_BOOTING_MS} ms after its \
         /health already answers 200 (SIM_BOOTING_MS={SIM_BOOTING_MS}, SIM_BOOTING_STATUS=400, \
         SIM_BOOTING_HEALTH=200)"
    );
    let line = run_side("fault", Side::Straight, Scenario::FAULT).await;
    println!(
        "straight-line: {} of {} reached QR (errors: {})",
        line.reached(),
        line.chips,
        line.errors_line()
    );
    let sup = run_side("fault", Side::Supervisor(Limits::Matched), Scenario::FAULT).await;
    println!(
        "supervisor: {} of {} reached QR (wall {}, create→QR p50 {}, p95 {}{})",
        sup.reached(),
        sup.chips,
        secs(sup.wall),
        secs(quantile(&sup.per_chip, 0.50)),
        secs(quantile(&sup.per_chip, 0.95)),
        if sup.errors.is_empty() {
            String::new()
        } else {
            format!("; errors: {}", sup.errors_line())
        }
    );
    if !sup.complete() {
        println!(
            "FAILED: the supervisor got {} of {} chips to their QR code under the booting fault",
            sup.reached(),
            sup.chips
        );
        failed = true;
    }

    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    // The supervisor's own logs, on stderr, when RUST_LOG asks for them.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rounds = rounds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(rounds))
}
