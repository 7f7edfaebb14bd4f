//! The webhook ingest with its inbox in PostgreSQL (`PgInbox`; issue 13, "Figures for
//! docs/benchmarks.md"): the same verify, parse, route, dedupe, apply, publish as
//! `benches/ingest.rs`, with step 6 (de-duplicate and store) one PostgreSQL transaction per
//! delivery, and the ack mark (`record_ack`) one more. Goal: ≥ 20 000 events/s on the
//! reference machine (2 cores, PostgreSQL on the same machine).
//!
//! Run (PostgreSQL required; start it with `scripts/test-env.sh`):
//! `DATABASE_URL=... APP_DATABASE_URL=... cargo bench -p session-supervisor --features postgres --bench ingest_pg -- --warm-up-time 1 --measurement-time 5`
//!
//! Fails, never skips, without `DATABASE_URL` (the owner role: creates a scratch database and
//! migrates it as a host does) and `APP_DATABASE_URL` (the application role the inbox uses).
//! The scratch database is dropped at the end.
//!
//! **No batching.** The `Inbox` trait admits one delivery per call (`admit`, one statement in
//! one transaction), and WAHA posts one event per request, so there is no batch to form; the
//! throughput comes from concurrent ingests. Each figure is measured with N ingests in flight
//! at once (`buffer_unordered(N)`) on a 2-worker runtime, over a pool of
//! [`POOL_SIZE`] application-role connections. Each transaction commits on its own
//! (`synchronous_commit` as the server has it): the WAL flush per commit, which PostgreSQL
//! groups across concurrent commits, is what bounds the rate.
//!
//! Only the inbox is in PostgreSQL: the tenant directory the ingest reads (the tenant also
//! exists in the database's directory, with the same secrets, for the inbox's foreign key), the
//! chip store and the bus are in memory, so the figure is the inbox's cost on top of
//! `benches/ingest.rs`.
//!
//! Printed before criterion runs, for each N: `ingest_pg (message, new, N in flight): M calls,
//! p50 .., p99 ..; R events/s` over 20 000 deliveries (each call timed from its start).
//!
//! Criterion (throughput in events/s): `ingest_pg/message_new/{1,8,32}` (in flight),
//! `ingest_pg/ack_new/32`, `ingest_pg/duplicate/1`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use session_supervisor::store::PgChipStore;
use session_supervisor::{DropReason, Ingest, IngestOutcome, PgInbox};
use tenant_isolation::pg::{self, PgTenantDirectory};
use tenant_isolation::{NewTenant, PlanLimits, TenantDirectory};

use common::shared::pg::{app_db, migrated_admin, on_database, pool_options, scratch};
use common::{Delivery, Kind, World, deliveries, print_percentiles, world};

/// Connections per pool (the application role's, and the owner's used for pruning only).
const POOL_SIZE: usize = 32;

/// Deliveries per printed percentile run.
const LATENCY_CALLS: usize = 20_000;

/// Both URLs must be set: a benchmark figure against a database nobody named is no figure.
fn require_urls() {
    for (var, role) in [
        ("DATABASE_URL", "the owner role, which may create databases"),
        ("APP_DATABASE_URL", "the application role"),
    ] {
        if !std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
            panic!(
                "benches/ingest_pg.rs needs PostgreSQL: set {var} ({role}), e.g. \
                 postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet and \
                 postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet \
                 (start PostgreSQL with scripts/test-env.sh)"
            );
        }
    }
}

/// The scratch database (dropped last) and the ingest over a `PgInbox` on it.
struct PgWorld {
    world: World,
    ingest: Arc<Ingest>,
    db: scratch::ScratchDb,
}

async fn pg_world() -> PgWorld {
    let options = pool_options(POOL_SIZE);
    let db = scratch::ScratchDb::create().await;
    let admin = migrated_admin(&db.url, &options, &[PgChipStore::MIGRATIONS]).await;
    let app_url = on_database(&common::shared::pg::app_url(), &db.name);
    let tenant_db = app_db(&app_url, &options).await;
    let owner = pg::build_pool(&db.url, &options).expect("DATABASE_URL is a valid URL");

    let world = world(1, 1).await;
    // The inbox's rows refer to the tenant directory: the same tenant, same secrets.
    let directory = PgTenantDirectory::new(admin);
    for tenant in &world.tenants {
        directory
            .create(NewTenant::new(
                tenant.id.clone(),
                PlanLimits::new(1, 1, 100_000),
                tenant.secrets.clone(),
            ))
            .await
            .unwrap_or_else(|err| panic!("creating tenant {} in PostgreSQL: {err}", tenant.id));
    }
    let inbox = Arc::new(PgInbox::new(tenant_db, owner));
    let ingest = Arc::new(world.ingest(inbox));
    PgWorld { world, ingest, db }
}

fn expect_accepted(outcome: &IngestOutcome) {
    assert!(
        matches!(outcome, IngestOutcome::Accepted { .. }),
        "a new delivery must be accepted, got {} ({outcome:?})",
        outcome.kind()
    );
}

/// Ingests `batch` with `in_flight` calls at once; answers the wall time and each call's time.
async fn ingest_concurrently(
    ingest: &Ingest,
    batch: &[Delivery],
    in_flight: usize,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let samples: Vec<Duration> = futures::stream::iter(batch)
        .map(|d| async move {
            let call = Instant::now();
            let outcome = ingest.ingest(&d.tenant, &d.headers, &d.body).await;
            let took = call.elapsed();
            expect_accepted(&outcome);
            took
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    (started.elapsed(), samples)
}

fn bench(c: &mut Criterion) {
    require_urls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread runtime");
    let PgWorld { world, ingest, db } = rt.block_on(pg_world());
    let world = Arc::new(world);

    rt.block_on(async {
        // Warm-up: connections opened, statements prepared.
        let warm = deliveries(&world, Kind::Message, 2_000);
        ingest_concurrently(&ingest, &warm, POOL_SIZE).await;
        for in_flight in [1, 8, 32] {
            let batch = deliveries(&world, Kind::Message, LATENCY_CALLS);
            let (wall, mut samples) = ingest_concurrently(&ingest, &batch, in_flight).await;
            print_percentiles(
                &format!("ingest_pg (message, new, {in_flight} in flight, pool {POOL_SIZE})"),
                &mut samples,
                wall,
            );
        }
        let batch = deliveries(&world, Kind::Ack, LATENCY_CALLS);
        let (wall, mut samples) = ingest_concurrently(&ingest, &batch, 32).await;
        print_percentiles(
            &format!("ingest_pg (first ack, new, 32 in flight, pool {POOL_SIZE})"),
            &mut samples,
            wall,
        );
    });

    let mut group = c.benchmark_group("ingest_pg");
    group.throughput(Throughput::Elements(1));
    for (name, kind, in_flight) in [
        ("message_new/1", Kind::Message, 1),
        ("message_new/8", Kind::Message, 8),
        ("message_new/32", Kind::Message, 32),
        ("ack_new/32", Kind::Ack, 32),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (world, ingest) = (world.clone(), ingest.clone());
                async move {
                    let count = usize::try_from(iters).expect("iterations fit in usize");
                    let batch = deliveries(&world, kind, count);
                    ingest_concurrently(&ingest, &batch, in_flight).await.0
                }
            });
        });
    }

    let original = deliveries(&world, Kind::Message, 1).remove(0);
    expect_accepted(&rt.block_on(ingest.ingest(
        &original.tenant,
        &original.headers,
        &original.body,
    )));
    group.bench_function("duplicate/1", |b| {
        b.to_async(&rt).iter(|| async {
            let outcome = ingest
                .ingest(&original.tenant, &original.headers, &original.body)
                .await;
            assert!(
                matches!(
                    outcome,
                    IngestOutcome::Dropped {
                        reason: DropReason::Duplicate
                    }
                ),
                "a repeated delivery must be dropped as a duplicate, got {}",
                outcome.kind()
            );
        });
    });
    group.finish();

    // The pools go first, then the scratch database.
    drop(ingest);
    drop(world);
    rt.block_on(db.drop_db());
}

criterion_group!(benches, bench);
criterion_main!(benches);
