//! An idle fleet in memory (issue 15, "Figures"): 100 000 `WORKING` chips in a
//! `MemoryChipStore`, then two one-shot figures measured in this one run (a plain `main`,
//! `harness = false`, not criterion):
//!
//! - **Memory per idle chip** (goal ≤ 2 KB): the process RSS delta (`VmRSS` in
//!   `/proc/self/status`) from before the store is created to after it is filled, with the store
//!   and every record alive and the fill's temporaries dropped, divided by the number of chips.
//!   No counting allocator: the workspace forbids `unsafe`, which a `GlobalAlloc` needs. The
//!   delta includes allocator slack (freed clones the allocator keeps), and covers the chip
//!   store only (records, work rows, signal counters, owner leases), not the proxy allocator's
//!   leases, the pool or the event bus.
//! - **One reconcile pass over 100 000 idle chips** on one core (goal ≤ 1 s): per tenant, the
//!   store's `list` (pages of 500), then per chip its pending signals (`signals_after`), the
//!   `World` a resync of an idle chip sees (tenant active, its container running and the one
//!   recorded, its lease, its session `WORKING` with an equivalent config and its `me`) built
//!   from the stored record, and `decide`. No WAHA call, no write. Every decision must be the
//!   idle one (`Wait` until a later time), or the bench fails.
//!
//! Run: `cargo bench -p session-supervisor --bench idle_fleet`
//!
//! The fleet is 1 000 tenants × 100 chips (`TenantId::generate`, `ChipId::generate`: the
//! service's default chip ids), 10 sessions per container (the pool's default), 256 proxy
//! endpoints. Each chip is driven to `WORKING` as the reconcile loop drives it: `decide` on a
//! world, `apply` of the step's outcome, `write_observed` under the tenant's owner fence:
//! reserve the running slot, place, ensure the container, lease a proxy, ensure the session,
//! start it, await the QR login, then confirm working with one activity signal folded: 8 logged
//! steps, a container ref, a proxy ref, a session ref, WAHA's status and `me` per record, as a
//! provisioned chip has them.
//! Time is a `ManualClock`: each chip provisions from the same start, 2 s per step, and the
//! passes run 10 minutes later (idle: before the 30-minute silence threshold).
//!
//! Printed after the memory line and the headline pass:
//! - the headline pass's time inside `MemoryChipStore::list` (the rest is signals, world and
//!   decide);
//! - `reconcile loop path`: what the reconcile loop itself does per due chip (`get`, signals,
//!   world, `decide`, requeue of the `Wait` with `enqueue`), over the same 100 000 chips;
//! - `world + decide only`: the pure part alone, over records already in hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use container_pool::{ContainerId, Engine, Placement};
use proxy_allocator::{EndpointId, LeaseHealth, ProxyLease};
use session_supervisor::{
    ChipKey, ChipRecord, ChipSpec, ChipStore, Clock, ContainerRef, ContainerSeen, CreateOutcome,
    Decision, Fence, ManualClock, MemoryChipStore, NewChip, Outcome, OwnerId, Phase, Policy,
    ProxyRef, SessionRef, SessionSeen, Signal, SignalBody, Step, StepError, StepKind, TenantSeen,
    Trigger, World, apply, decide,
};
use tenant_isolation::{ChipId, TenantId};
use url::Url;
use waha_client::{Me, SessionStatus};

/// Tenants in the fleet.
const TENANTS: usize = 1_000;
/// Chips per tenant.
const CHIPS_PER_TENANT: usize = 100;
/// Chips in the fleet.
const CHIPS: usize = TENANTS * CHIPS_PER_TENANT;
/// Sessions per tenant container (`PoolConfig`'s default).
const SESSIONS_PER_CONTAINER: u32 = 10;
/// Proxy endpoints the chips' leases point at.
const PROXIES: usize = 256;
/// The page size of the pass's `list` reads (the executor's occupancy read uses 500).
const PAGE: u32 = 500;
/// Steps each chip logs on its way to `WORKING`.
const STEPS_PER_CHIP: usize = 8;
/// The memory goal per idle chip, in bytes.
const MEMORY_GOAL_BYTES: usize = 2_048;
/// The goal of one reconcile pass.
const PASS_GOAL: Duration = Duration::from_secs(1);
/// Time between two provisioning steps of a chip.
const STEP_GAP: Duration = Duration::from_secs(2);
/// How long after the provisioning start the passes run (under the silence threshold).
const IDLE_FOR: Duration = Duration::from_secs(10 * 60);
/// The owner leases' time to live (longer than the whole run on the manual clock).
const OWNER_TTL: Duration = Duration::from_secs(24 * 3_600);

/// When every chip starts provisioning.
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// One tenant and its chips' ids.
struct TenantChips {
    tenant: TenantId,
    chips: Vec<ChipId>,
}

/// `TENANTS` tenants of `CHIPS_PER_TENANT` chips, with generated ids.
fn fleet() -> Vec<TenantChips> {
    (0..TENANTS)
        .map(|_| TenantChips {
            tenant: TenantId::generate(),
            chips: (0..CHIPS_PER_TENANT).map(|_| ChipId::generate()).collect(),
        })
        .collect()
}

/// The proxy endpoints, `http://10.20.x.y:3128`.
fn endpoints() -> Vec<EndpointId> {
    (0..PROXIES)
        .map(|i| {
            EndpointId::new(format!("http://10.20.{}.{}:3128", i / 256, i % 256))
                .expect("an endpoint id")
        })
        .collect()
}

/// The containers of tenant number `t_index`, one per slot, as the pool reports them ready.
fn tenant_containers(t_index: usize, tenant: &TenantId, slots: u32) -> Vec<ContainerRef> {
    (0..slots)
        .map(|slot| {
            let n = t_index * slots as usize + slot as usize;
            let port = 20_000 + n % 40_000;
            let docker_id = ((t_index as u128) << 32) | u128::from(slot);
            ContainerRef {
                name: format!("chipfleet-{tenant}-{slot}"),
                id: ContainerId::new(format!("{docker_id:064x}")),
                base_url: format!("http://127.0.0.1:{port}/")
                    .parse::<Url>()
                    .expect("a container URL"),
                ready_at: start(),
            }
        })
        .collect()
}

/// The account of chip number `n`.
fn me(n: usize) -> Me {
    let phone = 5_511_900_000_000_u64 + n as u64;
    Me::new(format!("{phone}@c.us"), Some(format!("Store {n}")))
}

/// A session WAHA reports with `status`, its config equivalent to the chip's plan.
fn present(status: SessionStatus, me: Option<Me>) -> SessionSeen {
    SessionSeen::Present {
        status,
        config_equivalent: true,
        me,
    }
}

/// The world a resync of `record` sees at `now` when nothing changed since it was written:
/// the tenant active, the recorded container running, the recorded lease, the session
/// `WORKING` with its `me`, and the chip's pending `signals`.
fn resync_world(
    record: &ChipRecord,
    signals: Vec<Signal>,
    now: SystemTime,
    placement: Placement,
) -> World {
    let engine = record.desired.spec.engine.unwrap_or(Engine::Noweb);
    let mut world = World::new(now, placement, engine);
    world.tenant = TenantSeen::Active;
    if let Some(container) = &record.observed.container {
        world.container = ContainerSeen::Running {
            id: container.id.clone(),
            base_url: container.base_url.clone(),
        };
        world.session = present(SessionStatus::Working, record.observed.me.clone());
    } else {
        world.container = ContainerSeen::Missing;
    }
    world.lease = record.observed.proxy.as_ref().map(|proxy| ProxyLease {
        tenant: record.key.tenant.clone(),
        chip: record.key.chip.clone(),
        endpoint: proxy.endpoint.clone(),
        session_id: None,
        country: None,
        generation: proxy.generation,
        assigned_at: record.created_at,
        health: LeaseHealth::Healthy,
        consecutive_failures: 0,
        last_failure_at: None,
        egress_ip: None,
    });
    world.signals = signals;
    world
}

/// Resident set size or peak (`VmRSS`, `VmHWM`) of this process, in KiB (Linux).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status (the bench needs Linux)");
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} line in /proc/self/status"))
}

/// Milliseconds, for printing.
fn ms(took: Duration) -> f64 {
    took.as_secs_f64() * 1_000.0
}

/// Decisions of a pass, by step kind, and whether each was the idle one.
#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, usize>,
    not_idle: usize,
    first_not_idle: Option<String>,
}

impl Tally {
    fn count(&mut self, record: &ChipRecord, decision: &Decision, now: SystemTime) {
        *self.kinds.entry(decision.step.kind().as_str()).or_default() += 1;
        let idle = matches!(&decision.step, Step::Wait { until: Some(until) } if *until > now);
        if !idle {
            self.not_idle += 1;
            if self.first_not_idle.is_none() {
                self.first_not_idle = Some(format!(
                    "{}: {:?} in phase {:?}",
                    record.key, decision.step, record.observed.phase
                ));
            }
        }
    }

    fn total(&self) -> usize {
        self.kinds.values().sum()
    }

    /// `{wait: 100000}`.
    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .kinds
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }

    /// Fails the bench unless every chip was decided once, and idle.
    fn assert_idle(&self, pass: &str) {
        assert_eq!(self.total(), CHIPS, "{pass}: every chip is decided once");
        assert_eq!(
            self.not_idle,
            0,
            "{pass}: {} of {CHIPS} decisions were not the idle wait (first: {}); the bench would \
             measure something else",
            self.not_idle,
            self.first_not_idle.as_deref().unwrap_or("-")
        );
    }
}

/// Drives chips to `WORKING` through `decide`, `apply` and `write_observed`.
struct Filler<'a> {
    store: &'a MemoryChipStore,
    clock: &'a ManualClock,
    policy: &'a Policy,
    placement: Placement,
}

impl Filler<'_> {
    /// Records and provisions every chip of `fleet`.
    async fn fill(&self, fleet: &[TenantChips], endpoints: &[EndpointId]) {
        // One chip per tenant first: a tenant with work can be acquired, and one `acquire`
        // then takes every tenant (its fence is what the owner writes under).
        self.clock.set(start());
        for t in fleet {
            let first = t.chips.first().expect("a tenant has chips");
            self.store
                .create(NewChip {
                    key: ChipKey::new(t.tenant.clone(), first.clone()),
                    spec: ChipSpec::qr(),
                    chip_slot: true,
                })
                .await
                .expect("chip recorded");
        }
        let limit = u32::try_from(fleet.len()).expect("tenants fit in u32");
        let fences: HashMap<TenantId, Fence> = self
            .store
            .acquire(&OwnerId::new("bench-idle-fleet"), limit, OWNER_TTL)
            .await
            .expect("tenants acquired")
            .into_iter()
            .map(|fence| (fence.tenant.clone(), fence))
            .collect();
        assert_eq!(
            fences.len(),
            fleet.len(),
            "every tenant is owned by this process"
        );
        for (t_index, t) in fleet.iter().enumerate() {
            let fence = &fences[&t.tenant];
            let chips = u32::try_from(t.chips.len()).expect("chips fit in u32");
            let containers =
                tenant_containers(t_index, &t.tenant, self.placement.containers_needed(chips));
            let mut occupancy: Vec<u32> = Vec::new();
            for (c_index, chip) in t.chips.iter().enumerate() {
                let n = t_index * t.chips.len() + c_index;
                let key = ChipKey::new(t.tenant.clone(), chip.clone());
                let endpoint = endpoints[n % endpoints.len()].clone();
                self.provision(key, fence, &containers, &mut occupancy, endpoint, me(n))
                    .await;
            }
        }
    }

    /// Moves the clock one step on.
    fn tick(&self) {
        self.clock.advance(STEP_GAP);
    }

    /// Decides in `world` now, checks the step is `expected`, applies `outcome` as its success
    /// and writes the patch under `fence`; returns the written record.
    async fn step(
        &self,
        record: ChipRecord,
        world: &mut World,
        fence: &Fence,
        expected: StepKind,
        outcome: Outcome,
    ) -> ChipRecord {
        world.now = self.clock.now();
        let decision = decide(&record, world, self.policy);
        assert_eq!(
            decision.step.kind(),
            expected,
            "chip {}: unexpected step in phase {:?}",
            record.key,
            record.observed.phase
        );
        let result: Result<Outcome, StepError> = Ok(outcome);
        let patch = apply(&record, world, &decision, &result, self.policy);
        self.store
            .write_observed(&record.key, record.observed_version, patch, fence)
            .await
            .expect("the owner's write")
    }

    /// Records `key` (QR login) and drives it to `WORKING` in `containers` (its tenant's, by
    /// slot; `occupancy` counts the tenant's placed chips) through `endpoint`, logged in as
    /// `me`.
    async fn provision(
        &self,
        key: ChipKey,
        fence: &Fence,
        containers: &[ContainerRef],
        occupancy: &mut Vec<u32>,
        endpoint: EndpointId,
        me: Me,
    ) {
        self.clock.set(start());
        let new = NewChip {
            key: key.clone(),
            spec: ChipSpec::qr(),
            chip_slot: true,
        };
        let mut record = match self.store.create(new).await.expect("chip recorded") {
            CreateOutcome::Created(record) | CreateOutcome::Existing(record) => record,
        };
        let mut world = World::new(self.clock.now(), self.placement, Engine::Noweb);
        world.tenant = TenantSeen::Active;
        world.container = ContainerSeen::Missing;
        world.occupancy.clone_from(occupancy);

        self.tick();
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::ReserveRunningSlot,
                Outcome::Done,
            )
            .await;
        self.tick();
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::PlaceChip,
                Outcome::Done,
            )
            .await;
        let slot = record.observed.placement.expect("the chip is placed");
        let index = usize::try_from(slot).expect("a slot fits usize");
        if occupancy.len() <= index {
            occupancy.resize(index + 1, 0);
        }
        occupancy[index] += 1;

        let container = containers.get(index).expect("a container for every slot");
        self.tick();
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::EnsureContainer,
                Outcome::Container(container.clone()),
            )
            .await;
        world.container = ContainerSeen::Running {
            id: container.id.clone(),
            base_url: container.base_url.clone(),
        };

        self.tick();
        let lease = ProxyLease {
            tenant: key.tenant.clone(),
            chip: key.chip.clone(),
            endpoint,
            session_id: None,
            country: None,
            generation: 1,
            assigned_at: self.clock.now(),
            health: LeaseHealth::Healthy,
            consecutive_failures: 0,
            last_failure_at: None,
            egress_ip: None,
        };
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::LeaseProxy,
                Outcome::Lease(ProxyRef::from(&lease)),
            )
            .await;
        world.lease = Some(lease);
        world.session = SessionSeen::Missing;

        self.tick();
        let session = SessionRef {
            name: key.session_name(),
            proxy_generation: 1,
            ensured_at: self.clock.now(),
        };
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::EnsureSession,
                Outcome::Session {
                    session,
                    status: SessionStatus::Stopped,
                },
            )
            .await;
        world.session = present(SessionStatus::Stopped, None);

        self.tick();
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::StartSession,
                Outcome::Status(SessionStatus::Starting),
            )
            .await;
        world.session = present(SessionStatus::ScanQrCode, None);

        self.tick();
        record = self
            .step(record, &mut world, fence, StepKind::Record, Outcome::Done)
            .await;

        // Scanned: the session works, and an event arrived (folded by the confirmation).
        self.tick();
        self.store
            .append_signal(&key, self.clock.now(), SignalBody::Activity)
            .await
            .expect("signal appended");
        world.signals = self
            .store
            .signals_after(&key, record.observed.signals_applied)
            .await
            .expect("signals read");
        world.session = present(SessionStatus::Working, Some(me.clone()));
        record = self
            .step(
                record,
                &mut world,
                fence,
                StepKind::ConfirmWorking,
                Outcome::LoggedIn(me),
            )
            .await;
        assert!(
            matches!(record.observed.phase, Phase::Working { .. })
                && record.steps.len() == STEPS_PER_CHIP,
            "chip {}: ended in {:?} after {} steps",
            record.key,
            record.observed.phase,
            record.steps.len()
        );
    }
}

/// What a timed pass measured.
struct PassReport {
    wall: Duration,
    /// Time inside the store's `list` (headline pass only).
    listing: Duration,
    list_calls: usize,
    tally: Tally,
}

/// The headline pass: per tenant, `list` pages; per chip, its signals, its world and `decide`.
async fn pass_by_list(
    store: &MemoryChipStore,
    fleet: &[TenantChips],
    now: SystemTime,
    policy: &Policy,
    placement: Placement,
) -> PassReport {
    let mut tally = Tally::default();
    let mut listing = Duration::ZERO;
    let mut list_calls = 0;
    let started = Instant::now();
    for t in fleet {
        let mut after: Option<ChipId> = None;
        loop {
            let asked = Instant::now();
            let page = store
                .list(&t.tenant, after.as_ref(), PAGE)
                .await
                .expect("a page of chips");
            listing += asked.elapsed();
            list_calls += 1;
            for record in &page {
                let signals = store
                    .signals_after(&record.key, record.observed.signals_applied)
                    .await
                    .expect("signals read");
                let world = resync_world(record, signals, now, placement);
                let decision = decide(record, &world, policy);
                tally.count(record, &decision, now);
            }
            let full = page.len() >= PAGE as usize;
            match page.last() {
                Some(last) if full => after = Some(last.key.chip.clone()),
                _ => break,
            }
        }
    }
    PassReport {
        wall: started.elapsed(),
        listing,
        list_calls,
        tally,
    }
}

/// The reconcile loop's own path per due chip: `get`, signals, world, `decide`, requeue.
async fn pass_by_get(
    store: &MemoryChipStore,
    fleet: &[TenantChips],
    now: SystemTime,
    policy: &Policy,
    placement: Placement,
) -> PassReport {
    let mut tally = Tally::default();
    let started = Instant::now();
    for t in fleet {
        for chip in &t.chips {
            let key = ChipKey::new(t.tenant.clone(), chip.clone());
            let record = store
                .get(&key)
                .await
                .expect("a chip read")
                .expect("the chip exists");
            let signals = store
                .signals_after(&key, record.observed.signals_applied)
                .await
                .expect("signals read");
            let world = resync_world(&record, signals, now, placement);
            let decision = decide(&record, &world, policy);
            tally.count(&record, &decision, now);
            if let Step::Wait { until: Some(until) } = decision.step {
                store
                    .enqueue(&key, until, Trigger::Resync)
                    .await
                    .expect("requeued");
            }
        }
    }
    PassReport {
        wall: started.elapsed(),
        listing: Duration::ZERO,
        list_calls: 0,
        tally,
    }
}

/// The pure part alone: world and `decide` over records read beforehand (untimed), one tenant
/// at a time.
async fn pass_in_hand(
    store: &MemoryChipStore,
    fleet: &[TenantChips],
    now: SystemTime,
    policy: &Policy,
    placement: Placement,
) -> PassReport {
    let mut tally = Tally::default();
    let mut timed = Duration::ZERO;
    for t in fleet {
        let mut in_hand: Vec<(ChipRecord, Vec<Signal>)> = Vec::with_capacity(t.chips.len());
        for chip in &t.chips {
            let key = ChipKey::new(t.tenant.clone(), chip.clone());
            let record = store
                .get(&key)
                .await
                .expect("a chip read")
                .expect("the chip exists");
            let signals = store
                .signals_after(&key, record.observed.signals_applied)
                .await
                .expect("signals read");
            in_hand.push((record, signals));
        }
        let started = Instant::now();
        for (record, signals) in in_hand {
            let world = resync_world(&record, signals, now, placement);
            let decision = decide(&record, &world, policy);
            tally.count(&record, &decision, now);
        }
        timed += started.elapsed();
    }
    PassReport {
        wall: timed,
        listing: Duration::ZERO,
        list_calls: 0,
        tally,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let policy = Policy::default();
    let placement = Placement::new(SESSIONS_PER_CONTAINER).expect("a placement");
    let clock = ManualClock::new(start());
    // The ids and endpoints the bench keeps for itself exist before the first reading, so the
    // delta is the store's.
    let fleet = fleet();
    let endpoints = endpoints();

    // --- memory per idle chip ---------------------------------------------------------------
    let before_kib = status_kib("VmRSS");
    let store = MemoryChipStore::with_clock(Arc::new(clock.clone()));
    let filler = Filler {
        store: &store,
        clock: &clock,
        policy: &policy,
        placement,
    };
    let fill_started = Instant::now();
    rt.block_on(filler.fill(&fleet, &endpoints));
    let fill_took = fill_started.elapsed();
    let after_kib = status_kib("VmRSS");
    let peak_kib = status_kib("VmHWM");

    let delta_kib = after_kib.saturating_sub(before_kib);
    let per_chip = delta_kib as f64 * 1_024.0 / CHIPS as f64;
    println!(
        "filled {CHIPS} WORKING chips ({TENANTS} tenants x {CHIPS_PER_TENANT}, \
         {STEPS_PER_CHIP} logged steps each) in {:.1} s",
        fill_took.as_secs_f64()
    );
    println!(
        "memory per idle chip: {per_chip:.0} bytes (RSS delta {:.1} MiB over {CHIPS} chips; \
         goal <= {MEMORY_GOAL_BYTES})",
        delta_kib as f64 / 1_024.0
    );
    let sample_key = ChipKey::new(fleet[0].tenant.clone(), fleet[0].chips[0].clone());
    let sample = rt
        .block_on(store.get(&sample_key))
        .expect("a chip read")
        .expect("the chip exists");
    let sample_json = serde_json::to_vec(&sample).expect("a record as JSON").len();
    println!(
        "  ratio to goal: {:.2}; VmRSS {before_kib} -> {after_kib} KiB, peak (VmHWM) \
         {peak_kib} KiB; one record: {} bytes inline (size_of::<ChipRecord>), {} steps logged, \
         {sample_json} bytes as JSON",
        per_chip / MEMORY_GOAL_BYTES as f64,
        std::mem::size_of::<ChipRecord>(),
        sample.steps.len()
    );

    // --- one reconcile pass over the idle fleet ---------------------------------------------
    let now = start() + IDLE_FOR;
    clock.set(now);

    let by_list = rt.block_on(pass_by_list(&store, &fleet, now, &policy, placement));
    by_list.tally.assert_idle("reconcile pass");
    println!(
        "reconcile pass over {CHIPS} idle chips: {:.0} ms (goal <= {} ms), decisions: {}",
        ms(by_list.wall),
        PASS_GOAL.as_millis(),
        by_list.tally.summary()
    );
    println!(
        "  ratio to goal: {:.2}; of which MemoryChipStore::list: {:.0} ms over {} calls (pages \
         of {PAGE}); signals, world and decide: {:.0} ms",
        by_list.wall.as_secs_f64() / PASS_GOAL.as_secs_f64(),
        ms(by_list.listing),
        by_list.list_calls,
        ms(by_list.wall.saturating_sub(by_list.listing))
    );

    let by_get = rt.block_on(pass_by_get(&store, &fleet, now, &policy, placement));
    by_get.tally.assert_idle("reconcile loop path");
    println!(
        "reconcile loop path (get, signals, world, decide, requeue per chip) over {CHIPS} idle \
         chips: {:.0} ms, decisions: {}",
        ms(by_get.wall),
        by_get.tally.summary()
    );

    let in_hand = rt.block_on(pass_in_hand(&store, &fleet, now, &policy, placement));
    in_hand.tally.assert_idle("world + decide only");
    println!(
        "world + decide only, over {CHIPS} records in hand: {:.0} ms ({:.2} us per chip), \
         decisions: {}",
        ms(in_hand.wall),
        in_hand.wall.as_secs_f64() * 1e6 / CHIPS as f64,
        in_hand.tally.summary()
    );
}
