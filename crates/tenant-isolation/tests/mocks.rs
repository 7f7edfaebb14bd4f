//! The `mock` feature's mocks drive this crate's real code through its seams: a mocked clock
//! paces the real in-memory pacer, and a mocked directory feeds the real quota ledger.
#![cfg(feature = "mock")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenant_isolation::{
    ChipId, Error, MemoryQuotaLedger, MemorySendPacer, MockClock, MockTenantDirectory, Pace,
    PaceLimit, PacerConfig, QuotaLedger, SendPacer, SlotKind, SystemClock, TenantId,
};

/// A `MockClock` whose time the test moves, handed to the real pacer: the pacer's own rules
/// (minimum gap between two sends of a chip) decide, on the mocked time.
#[tokio::test]
async fn a_mocked_clock_paces_the_real_pacer() {
    let now = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    let mut clock = MockClock::new();
    let shown = now.clone();
    clock.expect_now().returning(move || *shown.lock().unwrap());
    let pacer: Arc<dyn SendPacer> =
        Arc::new(MemorySendPacer::new(PacerConfig::default(), Arc::new(clock)).unwrap());
    let (t, c) = (TenantId::new("acme").unwrap(), ChipId::new("c1").unwrap());
    let activated: SystemTime = *now.lock().unwrap() - Duration::from_secs(40 * 86_400);
    pacer.chip_activated(&t, &c, activated).await.unwrap();

    let Pace::Go { jitter } = pacer.acquire(&t, &c).await.unwrap() else {
        panic!("a warmed-up chip with full buckets may send");
    };
    // At the same instant, the chip must wait for its jitter plus the minimum gap.
    match pacer.acquire(&t, &c).await.unwrap() {
        Pace::RetryAfter {
            after,
            limit: PaceLimit::ChipGap,
        } => assert_eq!(after, jitter + PacerConfig::default().chip_min_gap),
        other => panic!("expected RetryAfter(ChipGap), got {other:?}"),
    }
    // Once the mocked time has moved past it, the chip may send again.
    *now.lock().unwrap() += jitter + Duration::from_secs(60);
    assert!(matches!(
        pacer.acquire(&t, &c).await.unwrap(),
        Pace::Go { .. }
    ));
}

/// A `MockTenantDirectory` feeding the real ledger: the directory's answer reaches the caller
/// unchanged, and nothing is reserved for an unknown tenant.
#[tokio::test]
async fn a_mocked_directory_feeds_the_real_ledger() {
    let mut directory = MockTenantDirectory::new();
    directory.expect_get().returning(|tenant| {
        Err(Error::TenantNotFound {
            tenant: tenant.clone(),
        })
    });
    let ledger: Arc<dyn QuotaLedger> = Arc::new(MemoryQuotaLedger::new(
        Arc::new(directory),
        Arc::new(SystemClock),
    ));
    let t = TenantId::new("ghost").unwrap();
    let c = ChipId::new("c1").unwrap();
    let err = ledger.reserve(&t, SlotKind::Chip, &c).await.unwrap_err();
    assert!(
        matches!(&err, Error::TenantNotFound { tenant } if *tenant == t),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}
