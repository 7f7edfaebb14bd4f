//! The helpers several of this crate's test binaries need, defined once: durations, the fast
//! policy and supervisor configuration, the fake proxy allocator, the WAHA clients without
//! client retries and a pool over a runtime; with the `postgres` feature the scratch-database
//! helpers ([`pg`]), with the `docker` feature the Docker ones ([`docker`]).
//!
//! Included with `mod shared;` by `fleet_docker.rs`, `two_processes.rs`, `pg_store.rs`, and by
//! `supervisor.rs` and `mocks.rs` (whose `support` module uses it as `crate::shared`).
// Each test binary uses a subset of these helpers; what one binary leaves unused is not dead.
#![allow(dead_code)]

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "postgres")]
pub mod pg;

use std::sync::Arc;
use std::time::Duration;

use container_pool::{
    ContainerRuntime, PoolConfig, TenantPool, WahaHealthProbe, keys_from_directory,
};
use http::{HeaderMap, HeaderValue};
use proxy_allocator::{AllocationPolicy, LeaseStore, ProxyAllocator, StaticListSource};
use session_supervisor::policy::Rate;
use session_supervisor::{HttpWahaClients, Policy, SupervisorConfig, Toggle, WahaClients};
use tenant_isolation::{HmacKey, NewTenant, PlanLimits, TenantDirectory, TenantId, TenantSecrets};
use waha_client::webhook::{self, ALGORITHM_HEADER, SIGNATURE_HEADER};
use waha_client::{ClientConfig, RetryConfig};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fast policy: every delay and grace in tens or hundreds of milliseconds, resync every
/// second. The silence threshold stays long (no probe storms in tests that do not ask for it).
pub fn fast_policy() -> Policy {
    let mut policy = Policy::default();
    policy.classes.infra.base = ms(50);
    policy.classes.infra.cap = ms(500);
    policy.classes.provision.base = ms(100);
    policy.classes.provision.cap = ms(800);
    policy.classes.session.base = ms(100);
    policy.classes.session.cap = ms(800);
    policy.classes.capacity.base = ms(200);
    policy.classes.capacity.cap = secs(1);
    policy.starting_timeout = secs(5);
    policy.reason_grace = ms(200);
    policy.self_heal_grace = ms(300);
    policy.restart_required_grace = ms(200);
    policy.temp_ban_fallback = secs(3);
    policy.temp_ban_jitter = Duration::ZERO;
    policy.resync_interval = secs(1);
    policy.reread_after = ms(200);
    policy
}

/// The timings a test picks for its supervisors (the ownership ones must satisfy
/// `lease_ttl ≥ safety_margin + 2 × renew_every`).
#[derive(Clone, Copy, Debug)]
pub struct SupervisorTimings {
    pub tick_interval: Duration,
    pub step_timeout: Duration,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    pub safety_margin: Duration,
    pub claim_interval: Duration,
    pub shutdown_grace: Duration,
}

/// The test configuration: `timings`, the fast policy, restart budgets too large to matter, and
/// the proxy-health task off (the fake endpoints of [`fake_proxies`] are never contacted).
pub fn supervisor_config(webhook_url: String, timings: SupervisorTimings) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(webhook_url);
    config.tick_interval = timings.tick_interval;
    config.step_timeout = timings.step_timeout;
    config.lease_ttl = timings.lease_ttl;
    config.renew_every = timings.renew_every;
    config.safety_margin = timings.safety_margin;
    config.claim_interval = timings.claim_interval;
    config.shutdown_grace = timings.shutdown_grace;
    config.policy = fast_policy();
    config.tenant_restart_budget = Rate {
        every: ms(10),
        burst: 100,
    };
    config.global_restart_budget = Rate {
        every: ms(1),
        burst: 1_000,
    };
    config.monitors.proxy_health = Toggle::Off {
        reason:
            "tests: the proxy endpoints are documentation addresses (203.0.113.x), never contacted"
                .to_owned(),
    };
    config
}

/// A proxy allocator over `endpoints` fake endpoints on documentation addresses (TEST-NET-3,
/// `203.0.113.10` on; never contacted, so the proxy-health task is off in every test), 16
/// chips each, keeping its leases in `leases`. Every call builds the same list, so the same
/// endpoint ids (processes sharing a lease store agree on them).
pub fn fake_proxies(endpoints: usize, leases: Arc<dyn LeaseStore>) -> Arc<ProxyAllocator> {
    let list: String = (0..endpoints)
        .map(|n| format!("http://203.0.113.{}:3128 country=BR\n", 10 + n))
        .collect();
    let allocation = AllocationPolicy {
        max_chips_per_endpoint: 16,
        ..AllocationPolicy::default()
    };
    Arc::new(
        ProxyAllocator::new(
            Arc::new(StaticListSource::parse(&list).expect("a valid proxy list")),
            leases,
            allocation,
        )
        .expect("a valid allocation policy"),
    )
}

/// The WAHA clients of a supervisor: over HTTP with the clients' own retries disabled (the
/// supervisor retries through its policy; a client retrying inside a step only hides what
/// happened from the step log).
pub fn http_clients() -> Arc<dyn WahaClients> {
    let client = ClientConfig {
        retry: RetryConfig::disabled(),
        ..ClientConfig::default()
    };
    Arc::new(HttpWahaClients::new(client).expect("an HTTP client"))
}

/// A pool on `runtime` with `config`, its keys from `directory` and a WAHA health probe with a
/// 1 s timeout.
pub fn tenant_pool(
    runtime: Arc<dyn ContainerRuntime>,
    directory: &Arc<dyn TenantDirectory>,
    config: PoolConfig,
) -> Arc<TenantPool> {
    Arc::new(
        TenantPool::new(
            runtime,
            keys_from_directory(directory.clone()),
            Arc::new(WahaHealthProbe::new(secs(1)).expect("a health probe")),
            config,
        )
        .expect("a valid pool configuration"),
    )
}

/// Creates `tenant` in `directory` with `limits` and fresh secrets; panics naming the tenant.
pub async fn create_tenant(directory: &dyn TenantDirectory, tenant: &TenantId, limits: PlanLimits) {
    directory
        .create(NewTenant::new(
            tenant.clone(),
            limits,
            TenantSecrets::generate().expect("secrets from the OS random source"),
        ))
        .await
        .unwrap_or_else(|e| panic!("creating tenant {tenant}: {e}"));
}

/// The headers WAHA sends with a body signed under `key`.
pub fn signed(key: &HmacKey, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&webhook::sign(key, body)).expect("hex is a header value"),
    );
    headers.insert(ALGORITHM_HEADER, HeaderValue::from_static("sha512"));
    headers
}
