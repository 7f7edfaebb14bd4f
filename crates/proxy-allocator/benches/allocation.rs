//! Allocations per second: new chips and sticky re-allocations, in memory and (with the
//! `postgres` feature) in PostgreSQL.
//!
//! `cargo bench -p proxy-allocator --all-features -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proxy_allocator::{
    AllocationPolicy, ChipProxyRequest, InMemoryLeaseStore, LeaseStore, ProxyAddress,
    ProxyAllocator, ProxyScheme, StaticListSource, StaticProxyEntry,
};
use tenant_isolation::{ChipId, TenantId};

/// 100 endpoints, every one a candidate for every chip (the worst case for the store).
fn allocator(store: Arc<dyn LeaseStore>, run: &str) -> ProxyAllocator {
    let entries = (0..100u16).map(|n| {
        let address = ProxyAddress::new(ProxyScheme::Http, "127.0.0.1", 30_000 + n)
            .expect("address")
            .with_credentials(
                "bench",
                Some(proxy_allocator::ProxyPassword::new("secret").expect("a valid password")),
            )
            .expect("credentials");
        StaticProxyEntry::new(address)
            .expect("entry")
            .with_id(format!("bench-{run}-{n}").parse().expect("id"))
    });
    let policy = AllocationPolicy {
        max_chips_per_endpoint: u32::MAX,
        ..AllocationPolicy::default()
    };
    ProxyAllocator::new(
        Arc::new(StaticListSource::new(entries).expect("source")),
        store,
        policy,
    )
    .expect("allocator")
}

fn bench_store(c: &mut Criterion, name: &str, store: Arc<dyn LeaseStore>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = format!("{:08x}", fastrand::u32(..));
    let allocator = allocator(store, &run);
    let tenant = TenantId::generate();
    let counter = AtomicUsize::new(0);
    let mut group = c.benchmark_group(format!("allocate/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("new_chip", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let chip = ChipId::new(format!("b{run}-{n}")).expect("chip");
            allocator
                .allocate(&ChipProxyRequest::new(tenant.clone(), chip))
                .await
                .expect("allocates")
        });
    });
    let sticky = ChipProxyRequest::new(
        tenant.clone(),
        ChipId::new(format!("b{run}-0")).expect("chip"),
    );
    group.bench_function("sticky_existing", |b| {
        b.to_async(&runtime)
            .iter(|| async { allocator.allocate(&sticky).await.expect("allocates") });
    });
    group.finish();
    // Leave the shared database as we found it (history rows stay: they are the audit trail).
    runtime.block_on(async {
        let leases = allocator
            .store()
            .leases(Some(tenant.clone()))
            .await
            .expect("list");
        for lease in leases {
            allocator
                .release(&lease.tenant, &lease.chip)
                .await
                .expect("release");
        }
    });
}

fn in_memory(c: &mut Criterion) {
    bench_store(c, "in_memory", Arc::new(InMemoryLeaseStore::new()));
}

#[cfg(feature = "postgres")]
fn postgres(c: &mut Criterion) {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet".into());
    let store = proxy_allocator::PostgresLeaseStore::from_url(&url, 8).expect("store");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(store.migrate())
        .expect("PostgreSQL must be running for this benchmark (scripts/test-env.sh)");
    bench_store(c, "postgres", Arc::new(store));
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &mut Criterion) {}

criterion_group!(benches, in_memory, postgres);
criterion_main!(benches);
