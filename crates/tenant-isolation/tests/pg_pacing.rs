//! The PostgreSQL send pacer: the same answers as the in-memory pacer, state that survives a
//! restart, and replicas that never grant more than the rule allows (scratch databases, real
//! PostgreSQL; fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pg_support::app_url_for;
use pg_support::scratch::{ScratchDb, owner_client};
use tenant_isolation::pg::{AdminDb, MigrationConfig, PgSendPacer, PgTenantDirectory, TenantDb};
use tenant_isolation::{
    ChipId, Clock, Error, ManualClock, MemorySendPacer, Pace, PaceLimit, PacerConfig, SendPacer,
    TenantId, WarmupCurve,
};

const HOUR: Duration = Duration::from_secs(3600);

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn chip(name: &str) -> ChipId {
    ChipId::new(name).unwrap()
}

/// A migrated scratch database holding one tenant.
struct Scratch {
    db: ScratchDb,
    tenant: TenantId,
}

impl Scratch {
    async fn new() -> Self {
        let db = ScratchDb::create().await;
        let admin = AdminDb::connect(&db.url, &pg_support::options()).unwrap();
        admin
            .migrate(&MigrationConfig::default())
            .await
            .expect("migrate the scratch database");
        let tenant = pg_support::tenant(&PgTenantDirectory::new(admin)).await;
        Scratch { db, tenant }
    }

    /// A new pool of the application role: what a replica, or a restarted process, connects.
    async fn app(&self) -> TenantDb {
        TenantDb::connect(&app_url_for(&self.db), &pg_support::options())
            .await
            .expect("the app role on the scratch database")
    }

    async fn pacer(&self, config: &PacerConfig, clock: &ManualClock) -> PgSendPacer {
        PgSendPacer::new(self.app().await, config.clone(), Arc::new(clock.clone())).unwrap()
    }

    async fn drop_db(self) {
        self.db.drop_db().await;
    }
}

/// One step of a script a pacer is driven through.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `chip_activated(chip, now - ago)`.
    ActivatedAgo(&'static str, Duration),
    /// `chip_activated(chip, now + ahead)`: a later announcement.
    ActivatedAhead(&'static str, Duration),
    /// `n` acquires without waiting.
    Hammer(&'static str, usize),
    /// `n` acquires by a caller that waits as told: the jitter after a go, `after` after a
    /// refusal.
    Obey(&'static str, usize),
    /// One acquire for each chip, without waiting.
    Round(&'static [&'static str]),
    /// The clock moves on.
    Advance(Duration),
    /// The clock goes back.
    Back(Duration),
    /// `forget_chip(chip)`.
    Forget(&'static str),
}

/// Drives `pacer` through `script` on `clock`; returns every answer, in order. The one check
/// both backends go through.
async fn run_script(
    pacer: &dyn SendPacer,
    clock: &ManualClock,
    tenant: &TenantId,
    script: &[Step],
) -> Vec<Pace> {
    let mut answers = Vec::new();
    for step in script {
        match *step {
            Step::ActivatedAgo(c, ago) => pacer
                .chip_activated(tenant, &chip(c), clock.now() - ago)
                .await
                .unwrap(),
            Step::ActivatedAhead(c, ahead) => pacer
                .chip_activated(tenant, &chip(c), clock.now() + ahead)
                .await
                .unwrap(),
            Step::Hammer(c, n) => {
                for _ in 0..n {
                    answers.push(pacer.acquire(tenant, &chip(c)).await.unwrap());
                }
            }
            Step::Obey(c, n) => {
                for _ in 0..n {
                    let pace = pacer.acquire(tenant, &chip(c)).await.unwrap();
                    match pace {
                        Pace::Go { jitter } => clock.advance(jitter),
                        Pace::RetryAfter { after, .. } => clock.advance(after),
                    }
                    answers.push(pace);
                }
            }
            Step::Round(chips) => {
                for c in chips {
                    answers.push(pacer.acquire(tenant, &chip(c)).await.unwrap());
                }
            }
            Step::Advance(by) => clock.advance(by),
            Step::Back(by) => clock.set(clock.now() - by),
            Step::Forget(c) => pacer.forget_chip(tenant, &chip(c)).await.unwrap(),
        }
    }
    answers
}

/// Every limit small enough for a short script to meet it.
fn tight() -> PacerConfig {
    PacerConfig {
        chip_burst: 3,
        chip_refill_every: Duration::from_secs(20),
        tenant_burst: 5,
        tenant_refill_every: Duration::from_secs(2),
        warmup: WarmupCurve::new(vec![6, 10, 15]).unwrap(),
        jitter_min: Duration::from_millis(200),
        jitter_max: Duration::from_millis(900),
        chip_min_gap: Duration::from_secs(1),
    }
}

const SCRIPT: &[Step] = &[
    // Announced 10 h ago: day 1 ends in 14 h.
    Step::ActivatedAgo("a", Duration::from_secs(10 * 3600)),
    // A go, then the gap holds the chip back.
    Step::Hammer("a", 4),
    // Bursts, gaps, the day's 6, the wait for day 2, day 2's sends.
    Step::Obey("a", 40),
    // Five chips at once drain the tenant's bucket of 5.
    Step::Advance(Duration::from_secs(60)),
    Step::Round(&["b", "c", "d", "e", "f", "g"]),
    Step::Obey("g", 3),
    // `b` was first used above; a later announcement must not restart its warm-up.
    Step::ActivatedAhead("b", HOUR),
    Step::Obey("b", 12),
    // An old number: its allowance is the curve's last step.
    Step::ActivatedAgo("h", Duration::from_secs(3 * 86_400)),
    Step::Obey("h", 40),
    // A forgotten chip starts again at day 1.
    Step::Forget("a"),
    Step::Obey("a", 12),
    // A clock gone back neither refills nor returns to an earlier day.
    Step::Back(HOUR),
    Step::Hammer("h", 2),
    Step::Advance(Duration::from_secs(2 * 3600)),
    Step::Obey("h", 4),
    // Days later.
    Step::Advance(Duration::from_secs(2 * 86_400)),
    Step::Obey("b", 6),
    Step::Round(&["a", "b", "c", "d", "e", "f", "g", "h"]),
];

/// The PostgreSQL pacer answers exactly as the in-memory one, call for call, on the same clock
/// and jitter seed.
#[tokio::test]
async fn the_same_script_gets_the_same_answers_from_both_backends() {
    let scratch = Scratch::new().await;
    let tenant = scratch.tenant.clone();

    let memory_clock = ManualClock::new(start());
    let memory = MemorySendPacer::new(tight(), Arc::new(memory_clock.clone()))
        .unwrap()
        .with_jitter_seed(11);
    let expected = run_script(&memory, &memory_clock, &tenant, SCRIPT).await;

    let pg_clock = ManualClock::new(start());
    let pg = scratch
        .pacer(&tight(), &pg_clock)
        .await
        .with_jitter_seed(11);
    let answers = run_script(&pg, &pg_clock, &tenant, SCRIPT).await;

    for (at, (got, want)) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "answer {at} differs");
    }
    assert_eq!(answers.len(), expected.len());
    assert_eq!(pg_clock.now(), memory_clock.now());

    // The script is worth comparing: it met every limit, and sent.
    let met = |wanted: fn(&PaceLimit) -> bool| {
        expected.iter().any(|pace| match pace {
            Pace::RetryAfter { limit, .. } => wanted(limit),
            Pace::Go { .. } => false,
        })
    };
    assert!(met(|l| matches!(l, PaceLimit::ChipBurst)), "{expected:?}");
    assert!(met(|l| matches!(l, PaceLimit::ChipGap)), "{expected:?}");
    assert!(met(|l| matches!(l, PaceLimit::TenantBurst)), "{expected:?}");
    assert!(
        met(|l| matches!(
            l,
            PaceLimit::ChipDaily {
                warmup_day: 1,
                per_day: 6
            }
        )),
        "{expected:?}"
    );
    assert!(
        met(|l| matches!(l, PaceLimit::ChipDaily { per_day: 15, .. })),
        "{expected:?}"
    );
    let gos = expected
        .iter()
        .filter(|p| matches!(p, Pace::Go { .. }))
        .count();
    assert!(gos > 30, "{gos} sends");

    drop(pg);
    scratch.drop_db().await;
}

/// A restart (a new pacer on a new pool, as after a process restart or on the chip's new
/// owner) keeps the warm-up day and the day's count: the chip sends what is left of its
/// allowance, not a new one. Its answers stay those of a memory pacer that never restarted.
#[tokio::test]
async fn state_survives_a_restart() {
    let scratch = Scratch::new().await;
    let tenant = scratch.tenant.clone();
    // A fixed jitter, so the restarted pacer's (unseeded) draws match the memory pacer's.
    let config = PacerConfig {
        chip_burst: 2,
        chip_refill_every: Duration::from_secs(10),
        tenant_burst: 100,
        tenant_refill_every: Duration::from_millis(100),
        warmup: WarmupCurve::new(vec![4, 8, 12]).unwrap(),
        jitter_min: Duration::from_millis(500),
        jitter_max: Duration::from_millis(500),
        chip_min_gap: Duration::from_secs(1),
    };
    let memory_clock = ManualClock::new(start());
    let memory = MemorySendPacer::new(config.clone(), Arc::new(memory_clock.clone())).unwrap();
    let clock = ManualClock::new(start());
    // Activated 30 h ago: warm-up day 2 (8 sends), which ends in 18 h.
    let before: &[Step] = &[
        Step::ActivatedAgo("a", Duration::from_secs(30 * 3600)),
        Step::Obey("a", 9),
    ];
    let first = scratch.pacer(&config, &clock).await;
    let answers = run_script(&first, &clock, &tenant, before).await;
    assert_eq!(
        answers,
        run_script(&memory, &memory_clock, &tenant, before).await
    );
    let sent_before = answers
        .iter()
        .filter(|p| matches!(p, Pace::Go { .. }))
        .count();
    assert!((1..8).contains(&sent_before), "{answers:?}");
    drop(first);

    // The restart: a new pool, a new pacer. The supervisor announces the chip again as it
    // logs in, with the current time; the earliest activation stays.
    let restarted = scratch.pacer(&config, &clock).await;
    let after: &[Step] = &[
        Step::ActivatedAgo("a", Duration::ZERO),
        Step::Hammer("a", 1),
        Step::Obey("a", 20),
    ];
    let answers = run_script(&restarted, &clock, &tenant, after).await;
    assert_eq!(
        answers,
        run_script(&memory, &memory_clock, &tenant, after).await
    );
    let sent_after = answers
        .iter()
        .filter(|p| matches!(p, Pace::Go { .. }))
        .count();
    assert!(sent_after >= 8 - sent_before, "{answers:?}");
    let first_refusal = answers.iter().find_map(|pace| match pace {
        Pace::RetryAfter {
            limit: limit @ PaceLimit::ChipDaily { .. },
            ..
        } => Some(*limit),
        _ => None,
    });
    assert_eq!(
        first_refusal,
        Some(PaceLimit::ChipDaily {
            warmup_day: 2,
            per_day: 8
        }),
        "warm-up day 2 and its count were kept: {answers:?}"
    );

    // What is stored: day 3 by now (the obedient caller waited for it), counted in the row.
    let owner = owner_client(&scratch.db.url).await;
    let row = owner
        .query_one(
            "SELECT warmup_day, sent_on_day FROM pacer_chips
              WHERE tenant_id = $1 AND chip_id = 'a'",
            &[&tenant.as_str()],
        )
        .await
        .unwrap();
    let (day, sent): (i64, i64) = (row.get(0), row.get(1));
    let sent_on_day_3 = i64::try_from(sent_before + sent_after).unwrap() - 8;
    assert_eq!((day, sent), (3, sent_on_day_3), "{answers:?}");

    drop((restarted, owner));
    scratch.drop_db().await;
}

/// Counts the goes of `tasks` concurrent acquires of `chips` (round robin), spread over
/// `pacers` (replicas on their own pools).
async fn concurrent_goes(
    pacers: &[Arc<PgSendPacer>],
    tenant: &TenantId,
    chips: &[&str],
    tasks: usize,
) -> (usize, Vec<Pace>) {
    let handles: Vec<_> = (0..tasks)
        .map(|n| {
            let pacer = pacers[n % pacers.len()].clone();
            let (tenant, chip) = (tenant.clone(), chip(chips[n % chips.len()]));
            tokio::spawn(async move { pacer.acquire(&tenant, &chip).await })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap().expect("no acquire fails"));
    }
    let goes = answers
        .iter()
        .filter(|p| matches!(p, Pace::Go { .. }))
        .count();
    (goes, answers)
}

/// Two replicas pacing one chip (then one tenant's chips) at the same instant: the row locks
/// serialize them, and exactly the burst is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_never_grant_more_than_the_burst() {
    let scratch = Scratch::new().await;
    let tenant = scratch.tenant.clone();
    // The clock stands still: no bucket refills while the tasks race.
    let clock = ManualClock::new(start());
    let quiet = PacerConfig {
        chip_burst: 3,
        chip_refill_every: HOUR,
        tenant_burst: 1000,
        tenant_refill_every: Duration::from_millis(1),
        warmup: WarmupCurve::flat(1000).unwrap(),
        jitter_min: Duration::ZERO,
        jitter_max: Duration::ZERO,
        chip_min_gap: Duration::ZERO,
    };
    let replicas = [
        Arc::new(scratch.pacer(&quiet, &clock).await),
        Arc::new(scratch.pacer(&quiet, &clock).await),
    ];
    // A chip never seen: its row (and the tenant's) is created by the race.
    let (goes, answers) = concurrent_goes(&replicas, &tenant, &["hot"], 24).await;
    assert_eq!(goes, 3, "{answers:?}");
    assert!(
        answers.iter().all(|p| matches!(
            p,
            Pace::Go { .. }
                | Pace::RetryAfter {
                    limit: PaceLimit::ChipBurst,
                    ..
                }
        )),
        "{answers:?}"
    );
    // And a chip with a row: one more token after one refill interval.
    clock.advance(HOUR);
    let (goes, answers) = concurrent_goes(&replicas, &tenant, &["hot"], 12).await;
    assert_eq!(goes, 1, "{answers:?}");
    drop(replicas);

    // The tenant's bucket, shared by its chips, over both replicas.
    let tenant_bound = PacerConfig {
        chip_burst: 1000,
        tenant_burst: 4,
        tenant_refill_every: HOUR,
        ..quiet
    };
    let replicas = [
        Arc::new(scratch.pacer(&tenant_bound, &clock).await),
        Arc::new(scratch.pacer(&tenant_bound, &clock).await),
    ];
    // The stored bucket holds more than the new capacity: it counts as full, i.e. a new
    // bucket of 4.
    let (goes, answers) = concurrent_goes(&replicas, &tenant, &["x", "y", "z"], 24).await;
    assert_eq!(goes, 4, "{answers:?}");
    assert!(
        answers.iter().all(|p| matches!(
            p,
            Pace::Go { .. }
                | Pace::RetryAfter {
                    limit: PaceLimit::TenantBurst,
                    ..
                }
        )),
        "{answers:?}"
    );

    drop(replicas);
    scratch.drop_db().await;
}

/// The rows reference the tenant directory: an unknown tenant is a typed error, and nothing is
/// stored for it; `forget_chip` of a chip never seen is a no-op.
#[tokio::test]
async fn an_unknown_tenant_is_refused() {
    let scratch = Scratch::new().await;
    let clock = ManualClock::new(start());
    let pacer = scratch.pacer(&tight(), &clock).await;
    let stranger = TenantId::generate();
    match pacer.acquire(&stranger, &chip("a")).await {
        Err(Error::TenantNotFound { tenant }) => assert_eq!(tenant, stranger),
        other => panic!("expected TenantNotFound, got {other:?}"),
    }
    match pacer.chip_activated(&stranger, &chip("a"), start()).await {
        Err(Error::TenantNotFound { tenant }) => assert_eq!(tenant, stranger),
        other => panic!("expected TenantNotFound, got {other:?}"),
    }
    pacer.forget_chip(&stranger, &chip("a")).await.unwrap();
    pacer
        .forget_chip(&scratch.tenant, &chip("never"))
        .await
        .unwrap();
    let owner = owner_client(&scratch.db.url).await;
    let rows: i64 = owner
        .query_one(
            "SELECT (SELECT count(*) FROM pacer_chips) + (SELECT count(*) FROM pacer_tenants)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    drop((pacer, owner));
    scratch.drop_db().await;
}
