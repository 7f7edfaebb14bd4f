//! Reservations per second (in-memory and PostgreSQL) and the cost of tenant-scoped reads
//! under row-level security versus the same query on a table without RLS.
//!
//! Needs PostgreSQL (`DATABASE_URL`, `APP_DATABASE_URL`, same defaults as the tests).
//! Run: `cargo bench -p tenant-isolation --all-features --bench isolation -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tenant_isolation::pg::reexports::deadpool_postgres::{
    Manager, ManagerConfig, Pool, RecyclingMethod,
};
use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{
    AdminDb, Expect, MigrationConfig, PgQuotaLedger, PgTenantDirectory, PoolOptions, TenantDb,
};
use tenant_isolation::{
    ChipId, MemoryQuotaLedger, MemoryTenantDirectory, NewTenant, PlanLimits, QuotaLedger, SlotKind,
    SystemClock, TenantDirectory, TenantId, TenantSecrets,
};

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

fn admin_url() -> String {
    url(
        "DATABASE_URL",
        "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet",
    )
}

fn app_url() -> String {
    url(
        "APP_DATABASE_URL",
        "postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet",
    )
}

const UNLIMITED: u32 = PlanLimits::MAX_VALUE;

async fn new_tenant(directory: &dyn TenantDirectory) -> TenantId {
    let id = TenantId::generate();
    directory
        .create(NewTenant::new(
            id.clone(),
            PlanLimits::new(UNLIMITED, UNLIMITED, UNLIMITED),
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .unwrap();
    id
}

fn next_chip(counter: &AtomicU64) -> ChipId {
    ChipId::new(format!("c{}", counter.fetch_add(1, Ordering::Relaxed))).unwrap()
}

fn reservations(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("reservations");
    group.throughput(Throughput::Elements(1));

    let directory = Arc::new(MemoryTenantDirectory::new());
    let ledger = MemoryQuotaLedger::new(directory.clone(), Arc::new(SystemClock));
    let tenant = rt.block_on(new_tenant(directory.as_ref()));
    let counter = AtomicU64::new(0);
    group.bench_function("memory", |b| {
        b.to_async(&rt).iter(|| async {
            let chip = next_chip(&counter);
            black_box(
                ledger
                    .reserve(&tenant, SlotKind::Chip, &chip)
                    .await
                    .unwrap(),
            );
        })
    });

    let (admin, ledger, tenant) = rt.block_on(async {
        let admin = AdminDb::connect(&admin_url(), &PoolOptions::default()).unwrap();
        admin
            .migrate(&MigrationConfig::default())
            .await
            .expect("PostgreSQL is required for this benchmark (DATABASE_URL)");
        let directory = PgTenantDirectory::new(admin.clone());
        let tenant = new_tenant(&directory).await;
        let db = TenantDb::connect(&app_url(), &PoolOptions::default())
            .await
            .expect("PostgreSQL is required for this benchmark (APP_DATABASE_URL)");
        (admin, PgQuotaLedger::new(db, Arc::new(SystemClock)), tenant)
    });
    group.bench_function("postgres", |b| {
        b.to_async(&rt).iter(|| async {
            let chip = next_chip(&counter);
            black_box(
                ledger
                    .reserve(&tenant, SlotKind::Chip, &chip)
                    .await
                    .unwrap(),
            );
        })
    });
    group.finish();
    rt.block_on(admin.purge_tenant(&tenant)).unwrap();
}

fn single_pool(url: &str) -> Pool {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(1).build().unwrap()
}

const READ: &str = "SELECT key, value, version FROM tenant_records WHERE tenant_id = $1 AND kind = 'bench' AND key = $2";
const READ_PLAIN: &str = "SELECT key, value, version FROM bench_plain_records WHERE tenant_id = $1 AND kind = 'bench' AND key = $2";

fn scoped_reads(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (admin, db, plain, tenant) = rt.block_on(async {
        let admin = AdminDb::connect(&admin_url(), &PoolOptions::default()).unwrap();
        admin.migrate(&MigrationConfig::default()).await.expect("PostgreSQL is required");
        let directory = PgTenantDirectory::new(admin.clone());
        let tenant = new_tenant(&directory).await;
        let other = new_tenant(&directory).await;
        let db = TenantDb::from_pool(single_pool(&app_url()));
        for t in [&tenant, &other] {
            let tx = db.scoped(t).await.unwrap();
            for n in 0..100 {
                tx.put_record("bench", &format!("k{n}"), &json!({ "n": n }), Expect::Any)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        // The same rows in a table without RLS (a temp table on the owner's only connection).
        let plain = single_pool(&admin_url());
        let conn = plain.get().await.unwrap();
        conn.batch_execute(
            "CREATE TEMP TABLE bench_plain_records (LIKE tenant_records INCLUDING ALL)",
        )
        .await
        .unwrap();
        conn.execute(
            "INSERT INTO bench_plain_records SELECT * FROM tenant_records WHERE tenant_id = ANY($1)",
            &[&vec![tenant.as_str(), other.as_str()]],
        )
        .await
        .unwrap();
        conn.batch_execute("ANALYZE bench_plain_records").await.unwrap();
        drop(conn);
        let _ = other;
        (admin, db, plain, tenant)
    });
    let key = "k42";

    let mut group = c.benchmark_group("tenant_read_transaction");
    group.throughput(Throughput::Elements(1));
    group.bench_function("scoped_rls", |b| {
        b.to_async(&rt).iter(|| async {
            let tx = db.scoped(&tenant).await.unwrap();
            black_box(tx.query_opt(READ, &[&tenant.as_str(), &key]).await.unwrap());
            tx.commit().await.unwrap();
        })
    });
    group.bench_function("plain_no_rls", |b| {
        b.to_async(&rt).iter(|| async {
            let conn = plain.get().await.unwrap();
            conn.batch_execute("BEGIN").await.unwrap();
            let statement = conn.prepare_cached(READ_PLAIN).await.unwrap();
            black_box(
                conn.query_opt(&statement, &[&tenant.as_str(), &key])
                    .await
                    .unwrap(),
            );
            conn.batch_execute("COMMIT").await.unwrap();
        })
    });
    group.finish();

    let mut group = c.benchmark_group("tenant_read_query");
    group.throughput(Throughput::Elements(1));
    let tx = rt.block_on(db.scoped(&tenant)).unwrap();
    group.bench_function("rls", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(tx.query_opt(READ, &[&tenant.as_str(), &key]).await.unwrap());
        })
    });
    rt.block_on(tx.commit()).unwrap();
    let conn = rt.block_on(plain.get()).unwrap();
    group.bench_function("no_rls", |b| {
        b.to_async(&rt).iter(|| async {
            let statement = conn.prepare_cached(READ_PLAIN).await.unwrap();
            black_box(
                conn.query_opt(&statement, &[&tenant.as_str(), &key])
                    .await
                    .unwrap(),
            );
        })
    });
    group.finish();
    drop(conn);
    rt.block_on(admin.execute(
        "DELETE FROM tenants WHERE tenant_id IN (SELECT tenant_id FROM tenant_records WHERE kind = 'bench')",
        &[],
    ))
    .unwrap();
}

criterion_group!(benches, reservations, scoped_reads);
criterion_main!(benches);
