//! Readiness overhead and concurrent throughput of `TenantPool::ensure` on the in-memory
//! runtime with `waha-sim` in-process on 127.0.0.1 (real HTTP probes).
//!
//! - `readiness_overhead/*`: time from the simulator being ready (it listens when its launch
//!   returns, or after a start-up delay) to `ensure` returning. Measured per run with
//!   `iter_custom`; the p50/p99 over 200 runs are also printed.
//! - `ensure_existing`: the fast path (container found by labels, inspected, probed).
//! - `concurrent_ready/20`: 20 fresh tenants ensured concurrently (tenants per second =
//!   20 / time).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use container_pool::{
    Error, ImageRef, InMemoryRuntime, LaunchSpec, LaunchedServer, PoolConfig, ProcessLauncher,
    TenantId, TenantPool, WahaHealthProbe,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// Records when each launched simulator became ready (around waha-sim's launcher).
struct TimedLauncher {
    inner: waha_sim::SimLauncher,
    delay: Duration,
    ready_at: Mutex<Option<Instant>>,
}

#[async_trait]
impl ProcessLauncher for TimedLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchedServer, Error> {
        let server = self.inner.launch(spec).await?;
        *self.ready_at.lock().unwrap() = Some(Instant::now() + self.delay);
        Ok(server)
    }
}

fn pool(delay: Duration) -> (TenantPool, Arc<TimedLauncher>) {
    let launcher = Arc::new(TimedLauncher {
        inner: waha_sim::SimLauncher::new(),
        delay,
        ready_at: Mutex::new(None),
    });
    let runtime = Arc::new(InMemoryRuntime::new(launcher.clone()));
    let mut config = PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap());
    config.managed_by = format!("bench-{}", support::run_id());
    config.volumes = false;
    config
        .extra_env
        .push(container_pool::EnvVar::plain("SIM_STATE_DIR", "none"));
    if !delay.is_zero() {
        config.extra_env.push(container_pool::EnvVar::plain(
            "SIM_STARTUP_DELAY_MS",
            delay.as_millis().to_string(),
        ));
    }
    let probe = Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap());
    (
        TenantPool::new(runtime, support::tenants(), probe, config).unwrap(),
        launcher,
    )
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn fresh_tenant() -> TenantId {
    TenantId::new(format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))).unwrap()
}

/// One fresh tenant: the overhead from "simulator ready" to `ensure` returning.
async fn overhead(pool: &TenantPool, launcher: &TimedLauncher) -> Duration {
    let tenant = fresh_tenant();
    pool.ensure(&tenant).await.unwrap();
    let done = Instant::now();
    let ready = launcher.ready_at.lock().unwrap().take().unwrap();
    pool.remove_tenant(&tenant, false).await.unwrap();
    done.saturating_duration_since(ready)
}

fn percentiles(rt: &tokio::runtime::Runtime, delay: Duration) {
    let (pool, launcher) = pool(delay);
    let mut samples: Vec<Duration> = (0..200)
        .map(|_| rt.block_on(overhead(&pool, &launcher)))
        .collect();
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "readiness overhead (start-up delay {delay:?}, 200 runs): p50 {:?}, p99 {:?}, max {:?}",
        p(0.50),
        p(0.99),
        samples[samples.len() - 1]
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    percentiles(&rt, Duration::ZERO);
    percentiles(&rt, Duration::from_millis(300));

    let mut group = c.benchmark_group("readiness_overhead");
    for delay in [Duration::ZERO, Duration::from_millis(300)] {
        let (pool, launcher) = pool(delay);
        group.bench_function(format!("startup_delay_{}ms", delay.as_millis()), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (pool, launcher) = (pool.clone(), launcher.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += overhead(&pool, &launcher).await;
                    }
                    total
                }
            });
        });
    }
    group.finish();

    let (existing, _) = pool(Duration::ZERO);
    let tenant = fresh_tenant();
    rt.block_on(existing.ensure(&tenant)).unwrap();
    c.bench_function("ensure_existing", |b| {
        b.to_async(&rt).iter(|| existing.ensure(&tenant))
    });

    let (concurrent, _) = pool(Duration::ZERO);
    c.bench_function("concurrent_ready/20", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = concurrent.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let tenants: Vec<TenantId> = (0..20).map(|_| fresh_tenant()).collect();
                    let started = Instant::now();
                    let calls = tenants.iter().map(|t| pool.ensure(t));
                    for r in futures::future::join_all(calls).await {
                        r.unwrap();
                    }
                    total += started.elapsed();
                    for t in &tenants {
                        pool.remove_tenant(t, false).await.unwrap();
                    }
                }
                total
            }
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
