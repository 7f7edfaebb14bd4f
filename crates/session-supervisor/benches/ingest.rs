//! The webhook ingest in memory (issue 13, "Figures for docs/benchmarks.md"): verify the HMAC,
//! parse, route to the tenant's chip, de-duplicate in a `MemoryInbox`, apply (`observe`: a
//! signal appended to the `MemoryChipStore`), publish on the `InProcessEventBus`, answer.
//! Goal: ≥ 100 000 events/s on one core, p99 < 1 ms.
//!
//! Run: `cargo bench -p session-supervisor --bench ingest -- --warm-up-time 1 --measurement-time 5`
//!
//! Everything runs on one current-thread tokio runtime (one core). Bodies are built and signed
//! before the clock starts (that is the sender's work); every timed delivery carries an event
//! id and a message id never seen before, so the inbox admits it, except in `duplicate`, which
//! re-sends one admitted delivery (verify, parse, de-duplication refuses: `Dropped(Duplicate)`).
//! Each criterion sample gets a fresh ingest over a fresh `MemoryInbox` sized for the sample, so
//! the inbox never fills and its maps hold only that sample's entries.
//!
//! Criterion groups (throughput in events/s):
//! - `ingest_memory/message_new`: new `message` events, 1 tenant, 1 chip;
//! - `ingest_memory/ack_new`: the first ack of new sent messages (ack mark, outbox, publish);
//! - `ingest_memory/message_new_100_tenants`: new `message` events round-robin over 100
//!   tenants with 1 chip each;
//! - `ingest_memory/duplicate`: a duplicate of an admitted `message`.
//!
//! Before them the bench prints per-call percentiles over 100 000 timed calls in one run
//! (criterion reports means, the goal is a p99), one line per kind, with the events/s of that
//! run: `ingest latency (...): 100000 calls, p50 .., p90 .., p99 .., p99.9 .., max ..; N events/s`.
//! No subscriber listens during these runs: publishing is the bus's numbering, history and
//! broadcast send; delivery to subscribers is `benches/fanout.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use session_supervisor::{DropReason, IngestOutcome};

use common::{Delivery, Kind, World, deliveries, print_percentiles, world};

/// Timed calls per percentile run.
const LATENCY_CALLS: usize = 100_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn expect_accepted(outcome: &IngestOutcome) {
    assert!(
        matches!(outcome, IngestOutcome::Accepted { .. }),
        "a new delivery must be accepted, got {}",
        outcome.kind()
    );
}

fn expect_duplicate(outcome: &IngestOutcome) {
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
}

/// Ingests every delivery once, in order, on a fresh inbox; answers the time taken.
async fn ingest_all(world: &World, batch: &[Delivery]) -> Duration {
    let (ingest, _inbox) = world.memory_ingest(batch.len() + 16);
    let started = Instant::now();
    for d in batch {
        let outcome = ingest.ingest(&d.tenant, &d.headers, &d.body).await;
        expect_accepted(&outcome);
    }
    started.elapsed()
}

/// `LATENCY_CALLS` new deliveries of `kind`, each call timed; prints the percentile line.
async fn latency_new(world: &World, kind: Kind, label: &str) {
    // Warm-up: allocator, maps, branch predictors.
    let warm = deliveries(world, kind, 10_000);
    ingest_all(world, &warm).await;

    let batch = deliveries(world, kind, LATENCY_CALLS);
    let (ingest, inbox) = world.memory_ingest(LATENCY_CALLS + 16);
    let mut samples = Vec::with_capacity(batch.len());
    let started = Instant::now();
    for d in &batch {
        let call = Instant::now();
        let outcome = ingest.ingest(&d.tenant, &d.headers, &d.body).await;
        samples.push(call.elapsed());
        expect_accepted(&outcome);
    }
    let wall = started.elapsed();
    assert_eq!(inbox.len(), LATENCY_CALLS, "every delivery admitted once");
    print_percentiles(label, &mut samples, wall);
}

/// `LATENCY_CALLS` duplicates of one admitted delivery, each call timed.
async fn latency_duplicate(world: &World, label: &str) {
    let original = deliveries(world, Kind::Message, 1).remove(0);
    let (ingest, inbox) = world.memory_ingest(16);
    expect_accepted(
        &ingest
            .ingest(&original.tenant, &original.headers, &original.body)
            .await,
    );
    let mut samples = Vec::with_capacity(LATENCY_CALLS);
    let started = Instant::now();
    for _ in 0..LATENCY_CALLS {
        let call = Instant::now();
        let outcome = ingest
            .ingest(&original.tenant, &original.headers, &original.body)
            .await;
        samples.push(call.elapsed());
        expect_duplicate(&outcome);
    }
    let wall = started.elapsed();
    assert_eq!(inbox.len(), 1, "a duplicate stores nothing");
    print_percentiles(label, &mut samples, wall);
}

fn percentiles(rt: &tokio::runtime::Runtime, one: &World, hundred: &World) {
    rt.block_on(async {
        latency_new(
            one,
            Kind::Message,
            "ingest latency (message, new, 1 tenant, one core)",
        )
        .await;
        latency_new(
            one,
            Kind::Ack,
            "ingest latency (first ack, new, 1 tenant, one core)",
        )
        .await;
        latency_new(
            hundred,
            Kind::Message,
            "ingest latency (message, new, 100 tenants round-robin, one core)",
        )
        .await;
        latency_duplicate(one, "ingest latency (duplicate message, one core)").await;
    });
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let one = Arc::new(rt.block_on(world(1, 1)));
    let hundred = Arc::new(rt.block_on(world(100, 1)));

    percentiles(&rt, &one, &hundred);

    let mut group = c.benchmark_group("ingest_memory");
    group.throughput(Throughput::Elements(1));
    for (name, world, kind) in [
        ("message_new", &one, Kind::Message),
        ("ack_new", &one, Kind::Ack),
        ("message_new_100_tenants", &hundred, Kind::Message),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let world = Arc::clone(world);
                async move {
                    let count = usize::try_from(iters).expect("iterations fit in usize");
                    // Built and signed before the clock starts.
                    let batch = deliveries(&world, kind, count);
                    ingest_all(&world, &batch).await
                }
            });
        });
    }

    let original = deliveries(&one, Kind::Message, 1).remove(0);
    let (duplicates, _inbox) = one.memory_ingest(16);
    expect_accepted(&rt.block_on(duplicates.ingest(
        &original.tenant,
        &original.headers,
        &original.body,
    )));
    group.bench_function("duplicate", |b| {
        b.to_async(&rt).iter(|| async {
            let outcome = duplicates
                .ingest(&original.tenant, &original.headers, &original.body)
                .await;
            expect_duplicate(&outcome);
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
