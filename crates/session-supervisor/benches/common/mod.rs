//! What the ingest benchmarks share: an in-memory world (tenants in a `MemoryTenantDirectory`,
//! a supervisor built but never run over an `InMemoryRuntime` pool, a `MemoryChipStore` with
//! real chips so events route to them, an `InProcessEventBus`), signed webhook deliveries with
//! unique ids, and the percentile line the benches print.
//!
//! The supervisor never runs: the ingest needs only its directory, chip store, bus, outbox and
//! clock (as in `tests/ingest.rs`). The pool, the proxy allocator and the WAHA clients are
//! built because a supervisor needs them, and never called.
// Each bench uses a subset of these helpers.
#![allow(dead_code)]

/// The test helpers shared by this crate's test binaries (fake proxies, WAHA clients, a pool
/// over a runtime; with `postgres`, the scratch databases), included as the tests include them.
#[path = "../../tests/shared/mod.rs"]
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use container_pool::{ImageRef, InMemoryRuntime, PoolConfig};
use http::HeaderMap;
use proxy_allocator::InMemoryLeaseStore;
use serde_json::{Value, json};
use session_supervisor::{
    ChipSpec, ChipStore, EventBus, InProcessEventBus, Inbox, Ingest, IngestConfig, MemoryChipStore,
    MemoryInbox, Supervisor, SupervisorConfig, SupervisorParts, SystemClock, Toggle,
};
use tenant_isolation::{
    ChipId, HmacKey, MemoryQuotaLedger, MemoryTenantDirectory, NewTenant, PlanLimits, QuotaLedger,
    SessionName, TenantDirectory, TenantId, TenantSecrets,
};

/// The customer every benchmark message comes from.
pub const CUSTOMER: &str = "5511999999999@c.us";
/// The chips' own number.
pub const CHIP_NUMBER: &str = "5522999999999@c.us";

/// One tenant of the world: its id, its webhook key and secrets, its chips.
pub struct BenchTenant {
    pub id: TenantId,
    pub key: HmacKey,
    pub secrets: TenantSecrets,
    pub chips: Vec<ChipId>,
}

/// The in-memory world an ingest runs over.
pub struct World {
    pub supervisor: Supervisor,
    pub bus: Arc<InProcessEventBus>,
    pub directory: Arc<dyn TenantDirectory>,
    pub tenants: Vec<BenchTenant>,
}

/// A world of `tenants` tenants (`t0`, `t1`, ...) with `chips` chips each (`c0`, `c1`, ...),
/// every chip created through the supervisor (so a record exists and `observe` finds it).
pub async fn world(tenants: usize, chips: usize) -> World {
    let directory: Arc<dyn TenantDirectory> = Arc::new(MemoryTenantDirectory::new());
    let limits = PlanLimits::new(
        u32::try_from(chips).expect("chips fit in u32").max(1),
        u32::try_from(chips).expect("chips fit in u32").max(1),
        100_000,
    );
    let mut made = Vec::with_capacity(tenants);
    for n in 0..tenants {
        let id = TenantId::new(format!("t{n}")).expect("a valid tenant id");
        let secrets = TenantSecrets::generate().expect("secrets from the OS random source");
        let tenant = directory
            .create(NewTenant::new(id.clone(), limits, secrets.clone()))
            .await
            .expect("tenant created");
        made.push(BenchTenant {
            id,
            key: tenant.secrets.webhook_hmac_key.clone(),
            secrets,
            chips: (0..chips)
                .map(|c| ChipId::new(format!("c{c}")).expect("a valid chip id"))
                .collect(),
        });
    }
    let quota: Arc<dyn QuotaLedger> = Arc::new(MemoryQuotaLedger::new(
        directory.clone(),
        Arc::new(SystemClock),
    ));
    // Never launched: the supervisor does not run.
    let runtime = Arc::new(InMemoryRuntime::new(Arc::new(waha_sim::SimLauncher::new())));
    let mut pool_config =
        PoolConfig::new(ImageRef::parse("devlikeapro/waha:latest").expect("an image reference"));
    pool_config.volumes = false;
    let pool = shared::tenant_pool(runtime, &directory, pool_config);
    let bus = Arc::new(InProcessEventBus::new());
    let mut config = SupervisorConfig::new("http://127.0.0.1:9/webhooks/{tenant}");
    config.monitors.proxy_health = Toggle::Off {
        reason: "bench: the supervisor is built, never run".to_owned(),
    };
    let supervisor = Supervisor::builder(SupervisorParts {
        directory: directory.clone(),
        quota,
        pool,
        proxies: shared::fake_proxies(4, Arc::new(InMemoryLeaseStore::new())),
        store: Arc::new(MemoryChipStore::new()) as Arc<dyn ChipStore>,
        waha: shared::http_clients(),
        clock: Arc::new(SystemClock),
    })
    .event_bus(bus.clone() as Arc<dyn EventBus>)
    .config(config)
    .build()
    .expect("a valid supervisor configuration");
    for tenant in &made {
        for chip in &tenant.chips {
            supervisor
                .create_chip(&tenant.id, chip, ChipSpec::qr())
                .await
                .expect("chip created");
        }
    }
    World {
        supervisor,
        bus,
        directory,
        tenants: made,
    }
}

impl World {
    /// A fresh ingest over this world's supervisor storing into `inbox`, default settings.
    pub fn ingest(&self, inbox: Arc<dyn Inbox>) -> Ingest {
        let config = IngestConfig::for_supervisor(self.supervisor.config());
        Ingest::new(self.supervisor.clone(), inbox, config).expect("a valid ingest config")
    }

    /// A fresh ingest over a fresh [`MemoryInbox`] with room for `capacity` entries.
    pub fn memory_ingest(&self, capacity: usize) -> (Ingest, Arc<MemoryInbox>) {
        let inbox = Arc::new(MemoryInbox::with_capacity(capacity.max(1)));
        (self.ingest(inbox.clone()), inbox)
    }
}

/// What kind of event a delivery carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An incoming `message` (publishes `MessageReceived`).
    Message,
    /// The first `message.ack` (SERVER) of a message this chip sent (moves the ack mark and the
    /// outbox, publishes `MessageStatus`).
    Ack,
}

/// One signed delivery, as WAHA posts it: the URL's tenant, the headers, the raw body.
#[derive(Clone)]
pub struct Delivery {
    pub tenant: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// The headers WAHA sends with a body signed under `key` (defined once, in `shared`).
pub use shared::signed;

/// A signed delivery of `kind` for `tenant`'s `chip`, with an event id and a WhatsApp message
/// id never used before in this process (so de-duplication admits it).
pub fn delivery(tenant: &BenchTenant, chip: &ChipId, kind: Kind) -> Delivery {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (event, payload): (&str, Value) = match kind {
        Kind::Message => (
            "message",
            json!({
                "id": format!("false_{CUSTOMER}_B{n:016X}"),
                "timestamp": 1_700_000_000,
                "from": CUSTOMER,
                "fromMe": false,
                "to": CHIP_NUMBER,
                "body": "hello, is this the shop?",
                "hasMedia": false,
            }),
        ),
        Kind::Ack => (
            "message.ack",
            json!({
                "id": format!("true_{CUSTOMER}_B{n:016X}"),
                "from": CHIP_NUMBER,
                "to": CUSTOMER,
                "fromMe": true,
                "ack": 1,
            }),
        ),
    };
    let body = serde_json::to_vec(&json!({
        "id": format!("evt_bench_{n:016x}"),
        "timestamp": now_ms(),
        "event": event,
        "session": SessionName::new(&tenant.id, chip).as_str(),
        "metadata": { "tenant": tenant.id.as_str(), "chip": chip.as_str() },
        "me": null,
        "engine": "NOWEB",
        "payload": payload,
    }))
    .expect("JSON");
    Delivery {
        tenant: tenant.id.as_str().to_owned(),
        headers: signed(&tenant.key, &body),
        body,
    }
}

/// `count` fresh deliveries of `kind`, spread round-robin over every chip of every tenant.
pub fn deliveries(world: &World, kind: Kind, count: usize) -> Vec<Delivery> {
    let targets: Vec<(&BenchTenant, &ChipId)> = world
        .tenants
        .iter()
        .flat_map(|t| t.chips.iter().map(move |c| (t, c)))
        .collect();
    (0..count)
        .map(|n| {
            let (tenant, chip) = targets[n % targets.len()];
            delivery(tenant, chip, kind)
        })
        .collect()
}

/// The `q` quantile of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[index]
}

/// Prints `label: N calls, p50 .., p90 .., p99 .., p99.9 .., max ..; R events/s` for the
/// per-call `samples` of a run that took `wall` in total.
pub fn print_percentiles(label: &str, samples: &mut [Duration], wall: Duration) {
    samples.sort_unstable();
    let rate = samples.len() as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "{label}: {} calls, p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}; {:.0} events/s",
        samples.len(),
        quantile(samples, 0.50),
        quantile(samples, 0.90),
        quantile(samples, 0.99),
        quantile(samples, 0.999),
        samples.last().copied().unwrap_or_default(),
        rate
    );
}
