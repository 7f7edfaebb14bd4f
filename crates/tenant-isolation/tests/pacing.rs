//! Send pacing on a manual clock: no sleeping.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenant_isolation::{
    ChipId, Error, ManualClock, MemorySendPacer, Pace, PaceLimit, PacerConfig, SendPacer, TenantId,
    WarmupCurve,
};

const DAY: Duration = Duration::from_secs(86_400);

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn ids() -> (TenantId, ChipId, ChipId) {
    (
        TenantId::new("acme").unwrap(),
        ChipId::new("a").unwrap(),
        ChipId::new("b").unwrap(),
    )
}

/// Bursts and the tenant bucket out of the way, to look at the daily allowance alone.
fn daily_only(warmup: Vec<u32>) -> PacerConfig {
    PacerConfig {
        chip_burst: 10_000,
        chip_refill_every: Duration::from_millis(1),
        tenant_burst: 10_000,
        tenant_refill_every: Duration::from_millis(1),
        warmup: WarmupCurve::new(warmup).unwrap(),
        jitter_min: Duration::ZERO,
        jitter_max: Duration::ZERO,
    }
}

async fn go_count(pacer: &MemorySendPacer, t: &TenantId, c: &ChipId) -> (usize, Pace) {
    let mut n = 0;
    loop {
        match pacer.acquire(t, c).await.unwrap() {
            Pace::Go { .. } => n += 1,
            throttled => return (n, throttled),
        }
        assert!(n < 100_000, "never throttled");
    }
}

#[tokio::test]
async fn burst_then_exact_retry_after() {
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        chip_burst: 3,
        chip_refill_every: Duration::from_secs(20),
        ..PacerConfig::default()
    };
    let pacer = MemorySendPacer::new(config, Arc::new(clock.clone())).unwrap();
    let (t, a, _) = ids();
    let (sent, throttled) = go_count(&pacer, &t, &a).await;
    assert_eq!(sent, 3);
    assert_eq!(
        throttled,
        Pace::RetryAfter {
            after: Duration::from_secs(20),
            limit: PaceLimit::ChipBurst
        }
    );
    // Asking again counts nothing: the answer does not grow.
    assert_eq!(pacer.acquire(&t, &a).await.unwrap(), throttled);
    clock.advance(Duration::from_millis(19_999));
    assert_eq!(
        pacer.acquire(&t, &a).await.unwrap().retry_after(),
        Some(Duration::from_millis(1))
    );
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go { .. }
    ));
    assert!(pacer.acquire(&t, &a).await.unwrap().retry_after().is_some());
}

#[tokio::test]
async fn warmup_curve_raises_the_daily_allowance() {
    let clock = ManualClock::new(start());
    let pacer =
        MemorySendPacer::new(daily_only(vec![20, 40, 80]), Arc::new(clock.clone())).unwrap();
    let (t, a, _) = ids();
    pacer.chip_activated(&t, &a, start()).await.unwrap();
    let (sent, throttled) = go_count(&pacer, &t, &a).await;
    assert_eq!(sent, 20, "day 1 allows 20");
    match throttled {
        Pace::RetryAfter { after, limit } => {
            assert_eq!(
                limit,
                PaceLimit::ChipDaily {
                    warmup_day: 1,
                    per_day: 20
                }
            );
            assert_eq!(
                after,
                Duration::from_secs(86_400 / 20),
                "one send every 72 minutes"
            );
        }
        other => panic!("{other:?}"),
    }
    clock.advance(DAY);
    let (sent, throttled) = go_count(&pacer, &t, &a).await;
    assert_eq!(sent, 40, "day 2 allows 40");
    assert!(matches!(
        throttled,
        Pace::RetryAfter {
            limit: PaceLimit::ChipDaily {
                warmup_day: 2,
                per_day: 40
            },
            ..
        }
    ));
    clock.advance(DAY * 30);
    let (sent, _) = go_count(&pacer, &t, &a).await;
    assert_eq!(sent, 80, "the last step holds from then on");
}

#[tokio::test]
async fn an_old_number_starts_at_full_allowance() {
    let clock = ManualClock::new(start());
    let pacer =
        MemorySendPacer::new(daily_only(vec![20, 40, 80]), Arc::new(clock.clone())).unwrap();
    let (t, a, b) = ids();
    pacer
        .chip_activated(&t, &a, start() - DAY * 10)
        .await
        .unwrap();
    assert_eq!(go_count(&pacer, &t, &a).await.0, 80);
    // A chip never announced starts its warm-up at first use.
    assert_eq!(go_count(&pacer, &t, &b).await.0, 20);
    // Forgetting a chip restarts its warm-up.
    pacer.forget_chip(&t, &a).await.unwrap();
    assert_eq!(go_count(&pacer, &t, &a).await.0, 20);
}

#[tokio::test]
async fn tenant_bucket_is_shared_by_its_chips_only() {
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        chip_burst: 3,
        tenant_burst: 5,
        tenant_refill_every: Duration::from_secs(2),
        ..PacerConfig::default()
    };
    let pacer = MemorySendPacer::new(config, Arc::new(clock.clone())).unwrap();
    let (t, a, b) = ids();
    assert_eq!(go_count(&pacer, &t, &a).await.0, 3);
    let (sent, throttled) = go_count(&pacer, &t, &b).await;
    assert_eq!(sent, 2);
    assert_eq!(
        throttled,
        Pace::RetryAfter {
            after: Duration::from_secs(2),
            limit: PaceLimit::TenantBurst
        }
    );
    let other = TenantId::new("other").unwrap();
    assert_eq!(
        go_count(&pacer, &other, &a).await.0,
        3,
        "another tenant has its own buckets"
    );
}

#[tokio::test]
async fn jitter_stays_in_range_and_is_reproducible() {
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        chip_burst: 1000,
        tenant_burst: 1000,
        jitter_min: Duration::from_millis(500),
        jitter_max: Duration::from_millis(1500),
        ..daily_only(vec![1000])
    };
    let run = |seed| {
        let pacer = MemorySendPacer::new(config.clone(), Arc::new(clock.clone()))
            .unwrap()
            .with_jitter_seed(seed);
        async move {
            let (t, a, _) = ids();
            let mut jitters = Vec::new();
            for _ in 0..200 {
                match pacer.acquire(&t, &a).await.unwrap() {
                    Pace::Go { jitter } => jitters.push(jitter),
                    other => panic!("{other:?}"),
                }
            }
            jitters
        }
    };
    let first = run(7).await;
    assert_eq!(first, run(7).await, "same seed, same jitter");
    assert!(
        first
            .iter()
            .all(|j| (Duration::from_millis(500)..=Duration::from_millis(1500)).contains(j))
    );
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(distinct.len() > 50, "jitter actually varies");
}

#[tokio::test]
async fn a_clock_going_backwards_is_tolerated() {
    let clock = ManualClock::new(start());
    let pacer = MemorySendPacer::new(PacerConfig::default(), Arc::new(clock.clone())).unwrap();
    let (t, a, _) = ids();
    assert_eq!(go_count(&pacer, &t, &a).await.0, 3);
    clock.set(start() - Duration::from_secs(3600));
    assert!(pacer.acquire(&t, &a).await.unwrap().retry_after().is_some());
    clock.set(start() + Duration::from_secs(20));
    assert!(matches!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go { .. }
    ));
}

#[test]
fn bad_settings_are_refused() {
    let clock = Arc::new(ManualClock::new(start()));
    for config in [
        PacerConfig {
            chip_burst: 0,
            ..PacerConfig::default()
        },
        PacerConfig {
            tenant_refill_every: Duration::ZERO,
            ..PacerConfig::default()
        },
        PacerConfig {
            jitter_min: Duration::from_secs(5),
            jitter_max: Duration::from_secs(1),
            ..PacerConfig::default()
        },
    ] {
        assert!(matches!(
            MemorySendPacer::new(config, clock.clone()),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert!(WarmupCurve::new(vec![]).is_err());
    assert!(WarmupCurve::new(vec![10, 0]).is_err());
    assert!(WarmupCurve::new(vec![40, 20]).is_err());
    assert_eq!(WarmupCurve::flat(5).unwrap().per_day(100), 5);
}
