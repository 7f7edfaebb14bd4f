//! Event fan-out in process (issue 13, "Figures for docs/benchmarks.md"): publish on the
//! `InProcessEventBus` → a subscriber's `ChangeStream::next` returns the change, with 1 000
//! subscribers over 100 tenants (10 per tenant: 5 on every chip, 5 on one conversation's room,
//! `ChangeFilter::with_chats`). Goal: p99 < 1 ms.
//!
//! Run: `cargo bench -p session-supervisor --bench fanout -- --warm-up-time 1 --measurement-time 5`
//!
//! Subscribers are 1 000 tokio tasks on a 2-worker multi-thread runtime (the reference
//! machine's two cores), each awaiting its stream. A change carries its publish time (`at`,
//! set just before `publish`); each subscriber records `now - at` when the change reaches it
//! (wall clock on both ends, same process).
//!
//! Printed before criterion runs:
//! - `fanout latency (closed loop, ...)`: 10 000 publishes, round-robin over the tenants, each
//!   waiting until its tenant's 10 subscribers have it: the latency of an otherwise idle bus
//!   (100 000 samples);
//! - `fanout latency (open loop, 10 000 changes/s, ...)`: 20 000 publishes paced at 10 per
//!   millisecond without waiting for subscribers (200 000 samples): latency under load,
//!   queueing included.
//!
//! Criterion: `fanout/publish_to_10_subscribers`: one publish until the last of its tenant's 10
//! subscribers has the change (the closed loop's round, publisher wake-up included).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use session_supervisor::{
    ChangeFilter, ChangeItem, ChangeStream, ChipChange, ChipChangeKind, ChipKey, ChipRecord,
    ChipSpec, EventBus, InProcessEventBus,
};
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::Notify;

const TENANTS: usize = 100;
const PER_TENANT: usize = 10;
const CUSTOMER: &str = "5511999999999@c.us";

/// What the subscribers report to the publisher.
struct Shared {
    /// Deliveries still expected before `done` is notified.
    remaining: AtomicUsize,
    done: Notify,
    /// Whether subscribers record their latencies.
    recording: AtomicBool,
    samples: Mutex<Vec<Duration>>,
}

impl Shared {
    fn expect(&self, deliveries: usize) {
        self.remaining.store(deliveries, Ordering::Release);
    }

    fn take_samples(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

async fn subscriber(mut stream: ChangeStream, shared: Arc<Shared>) {
    while let Some(item) = stream.next().await {
        match item {
            ChangeItem::Change(change) => {
                let latency = SystemTime::now()
                    .duration_since(change.at)
                    .unwrap_or_default();
                if shared.recording.load(Ordering::Acquire) {
                    shared
                        .samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(latency);
                }
                if shared.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    shared.done.notify_one();
                }
            }
            ChangeItem::Gap { missed, .. } => {
                panic!("a subscriber lagged and missed {missed} changes: the bench is broken")
            }
        }
    }
}

/// The bus, one record per tenant (what changes are made of) and the subscribers' channel.
struct Fanout {
    bus: Arc<InProcessEventBus>,
    records: Vec<ChipRecord>,
    shared: Arc<Shared>,
}

async fn fanout() -> Fanout {
    let bus = Arc::new(InProcessEventBus::new());
    let shared = Arc::new(Shared {
        remaining: AtomicUsize::new(0),
        done: Notify::new(),
        recording: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
    });
    let chip = ChipId::new("c0").expect("a valid chip id");
    let mut records = Vec::with_capacity(TENANTS);
    for n in 0..TENANTS {
        let tenant = TenantId::new(format!("t{n}")).expect("a valid tenant id");
        for s in 0..PER_TENANT {
            let filter = if s % 2 == 0 {
                ChangeFilter::all()
            } else {
                ChangeFilter::chips([chip.clone()]).with_chats([CUSTOMER.to_owned()])
            };
            let stream = bus
                .subscribe(&tenant, filter)
                .await
                .expect("the in-process bus subscribes");
            tokio::spawn(subscriber(stream, shared.clone()));
        }
        records.push(ChipRecord::new(
            ChipKey::new(tenant, chip.clone()),
            ChipSpec::qr(),
            true,
            SystemTime::now(),
        ));
    }
    Fanout {
        bus,
        records,
        shared,
    }
}

impl Fanout {
    /// A change of tenant `n % TENANTS`, stamped now.
    fn change(&self, n: usize) -> ChipChange {
        let mut change = ChipChange::of(
            &self.records[n % TENANTS],
            ChipChangeKind::MessageReceived {
                chat: CUSTOMER.to_owned(),
                message_id: format!("false_{CUSTOMER}_F{n:016X}"),
            },
        );
        change.at = SystemTime::now();
        change
    }

    /// One closed-loop round: publish, wait until the tenant's subscribers all have it.
    async fn round(&self, n: usize) -> Duration {
        self.shared.expect(PER_TENANT);
        let started = Instant::now();
        self.bus
            .publish(self.change(n))
            .await
            .expect("the in-process bus publishes");
        tokio::time::timeout(Duration::from_secs(5), self.shared.done.notified())
            .await
            .expect("every subscriber got the change within 5 s");
        started.elapsed()
    }

    async fn closed_loop(&self, rounds: usize) {
        for n in 0..1_000 {
            self.round(n).await;
        }
        self.shared.take_samples();
        self.shared.recording.store(true, Ordering::Release);
        let started = Instant::now();
        for n in 0..rounds {
            self.round(n).await;
        }
        let wall = started.elapsed();
        self.shared.recording.store(false, Ordering::Release);
        let mut samples = self.shared.take_samples();
        assert_eq!(
            samples.len(),
            rounds * PER_TENANT,
            "every subscriber got every change"
        );
        print_percentiles(
            &format!(
                "fanout latency (closed loop, {rounds} publishes, {TENANTS} tenants x {PER_TENANT} subscribers)"
            ),
            &mut samples,
            wall,
        );
    }

    /// `publishes` changes at 10 per millisecond, round-robin over the tenants, without
    /// waiting for the subscribers between them.
    async fn open_loop(&self, publishes: usize) {
        self.shared.take_samples();
        self.shared.expect(publishes * PER_TENANT);
        self.shared.recording.store(true, Ordering::Release);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for n in 0..publishes {
            if n % 10 == 0 {
                tick.tick().await;
            }
            self.bus
                .publish(self.change(n))
                .await
                .expect("the in-process bus publishes");
        }
        tokio::time::timeout(Duration::from_secs(30), self.shared.done.notified())
            .await
            .expect("every subscriber got every change within 30 s");
        let wall = started.elapsed();
        self.shared.recording.store(false, Ordering::Release);
        let mut samples = self.shared.take_samples();
        assert_eq!(samples.len(), publishes * PER_TENANT);
        print_percentiles(
            &format!(
                "fanout latency (open loop, 10 000 changes/s, {publishes} publishes, {TENANTS} tenants x {PER_TENANT} subscribers)"
            ),
            &mut samples,
            wall,
        );
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn print_percentiles(label: &str, samples: &mut [Duration], wall: Duration) {
    samples.sort_unstable();
    println!(
        "{label}: {} deliveries in {wall:?}, p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        samples.len(),
        quantile(samples, 0.50),
        quantile(samples, 0.90),
        quantile(samples, 0.99),
        quantile(samples, 0.999),
        samples.last().copied().unwrap_or_default(),
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread runtime");
    let world = Arc::new(rt.block_on(fanout()));

    // Run on the runtime (not in `block_on`'s thread) so the publisher is a task like the
    // subscribers.
    {
        let world = world.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                world.closed_loop(10_000).await;
                world.open_loop(20_000).await;
            })
            .await
            .expect("the percentile runs finish");
        });
    }

    let mut group = c.benchmark_group("fanout");
    group.bench_function("publish_to_10_subscribers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let world = world.clone();
            async move {
                let mut total = Duration::ZERO;
                for n in 0..iters {
                    total += world.round(n as usize).await;
                }
                total
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
