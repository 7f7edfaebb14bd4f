//! Reservations per second (in-memory and PostgreSQL) and the cost of tenant-scoped reads
//! under row-level security versus the same query on a table without RLS.
//!
//! Needs PostgreSQL (`DATABASE_URL`, `APP_DATABASE_URL`, same defaults as the tests).
//! Run: `cargo bench -p tenant-isolation --all-features --bench isolation -- --warm-up-time 1 --measurement-time 3`
//!
//! Besides criterion's groups, a `cargo bench` run prints one line comparing the two read
//! transactions (`tenant_read_transaction/scoped_rls` vs `plain_no_rls`) measured in
//! alternating blocks, so that drift of a shared machine between criterion's separate
//! measurement windows does not end up in the ratio. To run only the read figures, add the
//! filter `tenant_read` after `--` (the reservations groups are then skipped; the ratio line
//! is still printed).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// One tenant-scoped read transaction: `TenantDb::scoped` (`BEGIN` + tenant setting), the
/// `SELECT` under RLS, `commit` (`COMMIT; RESET ALL`).
async fn scoped_read(db: &TenantDb, tenant: &TenantId, key: &str) {
    let tx = db.scoped(tenant).await.unwrap();
    black_box(tx.query_opt(READ, &[&tenant.as_str(), &key]).await.unwrap());
    tx.commit().await.unwrap();
}

/// The same read without RLS, the baseline: `BEGIN`, the `SELECT` on the RLS-free copy,
/// `COMMIT`.
async fn plain_read(plain: &Pool, tenant: &TenantId, key: &str) {
    let conn = plain.get().await.unwrap();
    conn.batch_execute("BEGIN").await.unwrap();
    let statement = conn.prepare_cached(READ_PLAIN).await.unwrap();
    black_box(
        conn.query_opt(&statement, &[&tenant.as_str(), &key])
            .await
            .unwrap(),
    );
    conn.batch_execute("COMMIT").await.unwrap();
}

/// Measures both read transactions in alternating blocks (the order flips every round) and
/// prints reads/s for each and the ratio scoped / plain (the median of the rounds' ratios).
fn print_read_transaction_ratio(
    rt: &tokio::runtime::Runtime,
    db: &TenantDb,
    plain: &Pool,
    tenant: &TenantId,
    key: &str,
) {
    const ROUNDS: usize = 9;
    const BLOCK: u32 = 400;
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut scoped_total = Duration::ZERO;
    let mut plain_total = Duration::ZERO;
    rt.block_on(async {
        for round in 0..ROUNDS {
            let mut scoped_time = Duration::ZERO;
            let mut plain_time = Duration::ZERO;
            let scoped_first = round % 2 == 0;
            for scoped in [scoped_first, !scoped_first] {
                let started = Instant::now();
                for _ in 0..BLOCK {
                    if scoped {
                        scoped_read(db, tenant, key).await;
                    } else {
                        plain_read(plain, tenant, key).await;
                    }
                }
                if scoped {
                    scoped_time = started.elapsed();
                } else {
                    plain_time = started.elapsed();
                }
            }
            // Same number of reads in both blocks: reads/s scoped ÷ reads/s plain.
            ratios.push(plain_time.as_secs_f64() / scoped_time.as_secs_f64());
            scoped_total += scoped_time;
            plain_total += plain_time;
        }
    });
    ratios.sort_by(f64::total_cmp);
    let reads = f64::from(BLOCK) * ROUNDS as f64;
    println!(
        "tenant_read_transaction interleaved ({ROUNDS} rounds of {BLOCK} reads each): \
         scoped_rls {:.0} reads/s, plain_no_rls {:.0} reads/s, \
         scoped/plain {:.3} (median of rounds; min {:.3}, max {:.3})",
        reads / scoped_total.as_secs_f64(),
        reads / plain_total.as_secs_f64(),
        ratios[ROUNDS / 2],
        ratios[0],
        ratios[ROUNDS - 1],
    );
}

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
        b.to_async(&rt).iter(|| scoped_read(&db, &tenant, key))
    });
    group.bench_function("plain_no_rls", |b| {
        b.to_async(&rt).iter(|| plain_read(&plain, &tenant, key))
    });
    group.finish();
    // Only in a real `cargo bench` run (criterion's own test mode runs each routine once).
    if std::env::args().any(|arg| arg == "--bench") {
        print_read_transaction_ratio(&rt, &db, &plain, &tenant, key);
    }

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
