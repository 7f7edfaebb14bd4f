//! Send pacing on a manual clock: no sleeping.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenant_isolation::{
    ChipId, Clock, Error, ManualClock, MemorySendPacer, Pace, PaceLimit, PacerConfig, SendPacer,
    TenantId, WarmupCurve,
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
        chip_min_gap: Duration::ZERO,
    }
}

/// The defaults without jitter and minimum gap, to look at the buckets.
fn no_spacing() -> PacerConfig {
    PacerConfig {
        jitter_min: Duration::ZERO,
        jitter_max: Duration::ZERO,
        chip_min_gap: Duration::ZERO,
        ..PacerConfig::default()
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
        ..no_spacing()
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
            assert_eq!(after, DAY, "the next allowance starts with warm-up day 2");
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
        ..no_spacing()
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
async fn day_one_allows_at_most_the_curve_in_its_24_hours() {
    // Smoothed by the burst bucket (3 per 20 min), a caller retrying as told all day long.
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        chip_burst: 3,
        chip_refill_every: Duration::from_secs(1200),
        ..daily_only(vec![20, 40])
    };
    let pacer = MemorySendPacer::new(config, Arc::new(clock.clone())).unwrap();
    let (t, a, _) = ids();
    pacer.chip_activated(&t, &a, start()).await.unwrap();
    let day_two = start() + DAY;
    let mut sent = 0;
    let mut last_limit = None;
    while clock.now() < day_two {
        match pacer.acquire(&t, &a).await.unwrap() {
            Pace::Go { .. } => sent += 1,
            Pace::RetryAfter { after, limit } => {
                last_limit = Some(limit);
                clock.advance(after);
            }
        }
    }
    assert_eq!(
        sent, 20,
        "the first 24 h allow exactly the curve's 20 sends"
    );
    assert_eq!(
        last_limit,
        Some(PaceLimit::ChipDaily {
            warmup_day: 1,
            per_day: 20
        }),
        "the last refusal of day 1 is the daily allowance"
    );
    assert_eq!(
        clock.now(),
        day_two,
        "retry-after points at the start of day 2"
    );
    assert!(matches!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go { .. }
    ));
}

#[tokio::test]
async fn a_daily_refusal_waits_for_the_next_warm_up_day() {
    let clock = ManualClock::new(start());
    let pacer = MemorySendPacer::new(daily_only(vec![2, 4]), Arc::new(clock.clone())).unwrap();
    let (t, a, _) = ids();
    // Activated 10 hours ago: day 1 ends in 14 hours.
    let activated = start() - Duration::from_secs(10 * 3600);
    pacer.chip_activated(&t, &a, activated).await.unwrap();
    assert_eq!(go_count(&pacer, &t, &a).await.0, 2);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::RetryAfter {
            after: Duration::from_secs(13 * 3600),
            limit: PaceLimit::ChipDaily {
                warmup_day: 1,
                per_day: 2
            }
        }
    );
    clock.advance(Duration::from_secs(13 * 3600));
    assert_eq!(go_count(&pacer, &t, &a).await.0, 4, "day 2 allows 4");
}

/// A caller that does what the pacer says: waits the jitter, sends, and retries after the
/// answer it got. Returns the send times.
async fn obedient_sends(seed: u64, sends: usize) -> Vec<SystemTime> {
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        jitter_min: Duration::from_millis(1000),
        jitter_max: Duration::from_millis(4000),
        chip_min_gap: Duration::from_secs(5),
        ..daily_only(vec![1000])
    };
    let pacer = MemorySendPacer::new(config, Arc::new(clock.clone()))
        .unwrap()
        .with_jitter_seed(seed);
    let (t, a, _) = ids();
    let mut sent_at = Vec::new();
    while sent_at.len() < sends {
        match pacer.acquire(&t, &a).await.unwrap() {
            Pace::Go { jitter } => {
                clock.advance(jitter);
                sent_at.push(clock.now());
            }
            Pace::RetryAfter { after, limit } => {
                assert_eq!(limit, PaceLimit::ChipGap);
                clock.advance(after);
            }
        }
    }
    sent_at
}

#[tokio::test]
async fn sends_of_a_chip_are_spaced_by_the_minimum_gap_plus_jitter() {
    let times = obedient_sends(42, 50).await;
    assert_eq!(
        times,
        obedient_sends(42, 50).await,
        "same seed, same schedule"
    );
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    assert!(
        gaps.iter()
            .all(|g| (Duration::from_secs(6)..=Duration::from_secs(9)).contains(g)),
        "every gap is min gap (5 s) + jitter (1-4 s): {gaps:?}"
    );
    let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 10, "gaps vary with the jitter: {gaps:?}");
}

#[tokio::test]
async fn a_burst_without_waiting_is_held_back_by_the_gap() {
    let clock = ManualClock::new(start());
    let config = PacerConfig {
        jitter_min: Duration::from_millis(1500),
        jitter_max: Duration::from_millis(1500),
        chip_min_gap: Duration::from_secs(2),
        ..daily_only(vec![1000])
    };
    let pacer = MemorySendPacer::new(config, Arc::new(clock.clone())).unwrap();
    let (t, a, b) = ids();
    assert_eq!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go {
            jitter: Duration::from_millis(1500)
        }
    );
    // Asking again at once: the send goes out after its jitter, then the gap must pass.
    assert_eq!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::RetryAfter {
            after: Duration::from_millis(3500),
            limit: PaceLimit::ChipGap
        }
    );
    // Another chip is not held back.
    assert!(matches!(
        pacer.acquire(&t, &b).await.unwrap(),
        Pace::Go { .. }
    ));
    clock.advance(Duration::from_millis(3499));
    assert_eq!(
        pacer.acquire(&t, &a).await.unwrap().retry_after(),
        Some(Duration::from_millis(1))
    );
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go { .. }
    ));
}

#[tokio::test]
async fn jitter_stays_in_range_and_is_reproducible() {
    let config = PacerConfig {
        chip_burst: 1000,
        tenant_burst: 1000,
        jitter_min: Duration::from_millis(500),
        jitter_max: Duration::from_millis(1500),
        ..daily_only(vec![1000])
    };
    let run = |seed| {
        let clock = ManualClock::new(start());
        let pacer = MemorySendPacer::new(config.clone(), Arc::new(clock.clone()))
            .unwrap()
            .with_jitter_seed(seed);
        async move {
            let (t, a, _) = ids();
            let mut jitters = Vec::new();
            for _ in 0..200 {
                match pacer.acquire(&t, &a).await.unwrap() {
                    Pace::Go { jitter } => {
                        jitters.push(jitter);
                        clock.advance(jitter);
                    }
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
    let pacer = MemorySendPacer::new(no_spacing(), Arc::new(clock.clone())).unwrap();
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

/// 10,000 chips of 1,000 tenants go through the pacer a second apart: each is announced as an
/// old number, sends once and is deleted (`forget_chip`). Afterwards the pacer holds no chip,
/// and at any time only the buckets of the tenants that sent within about one refill period
/// (20 s by default), not one per tenant that ever sent: an idle tenant's bucket is full again,
/// so dropping it changes nothing.
#[tokio::test]
async fn many_chips_leave_a_bounded_pacer() {
    let clock = ManualClock::new(start());
    let pacer = MemorySendPacer::new(no_spacing(), Arc::new(clock.clone())).unwrap();
    let mut peak_tenants = 0;
    for n in 0..10_000 {
        let tenant = TenantId::new(format!("t{}", n / 10)).unwrap();
        let chip = ChipId::new(format!("c{n}")).unwrap();
        pacer
            .chip_activated(&tenant, &chip, clock.now() - 30 * DAY)
            .await
            .unwrap();
        assert!(matches!(
            pacer.acquire(&tenant, &chip).await.unwrap(),
            Pace::Go { .. }
        ));
        pacer.forget_chip(&tenant, &chip).await.unwrap();
        peak_tenants = peak_tenants.max(pacer.tracked_tenants());
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(pacer.tracked_chips(), 0, "deleted chips are forgotten");
    // Ten seconds of sends per tenant, and a sweep at least every 20 s.
    assert!(
        peak_tenants <= 5,
        "idle tenant buckets are dropped: {peak_tenants} held at once"
    );

    // A minute later, the next send sweeps every idle bucket away.
    clock.advance(Duration::from_secs(60));
    let (t, a, _) = ids();
    assert!(matches!(
        pacer.acquire(&t, &a).await.unwrap(),
        Pace::Go { .. }
    ));
    assert_eq!(pacer.tracked_tenants(), 1, "only the tenant that just sent");
    assert_eq!(pacer.tracked_chips(), 1);
}
