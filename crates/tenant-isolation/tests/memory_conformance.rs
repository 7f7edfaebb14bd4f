//! The conformance suite on the in-memory backends.

use std::sync::Arc;

use tenant_isolation::{MemoryQuotaLedger, MemoryTenantDirectory, SystemClock, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_directory_conforms() {
    conformance::tenant_directory(Arc::new(MemoryTenantDirectory::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_quota_ledger_conforms() {
    let directory = Arc::new(MemoryTenantDirectory::new());
    let ledger = Arc::new(MemoryQuotaLedger::new(
        directory.clone(),
        Arc::new(SystemClock),
    ));
    conformance::quota_ledger(directory, ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_quota_race_50_for_10() {
    let directory = Arc::new(MemoryTenantDirectory::new());
    let ledger = Arc::new(MemoryQuotaLedger::new(
        directory.clone(),
        Arc::new(SystemClock),
    ));
    conformance::quota_race(directory, ledger, tenant_isolation::SlotKind::Chip, 50, 10).await;
}

#[tokio::test]
async fn memory_send_quota_resets_at_utc_midnight() {
    use std::time::{Duration, UNIX_EPOCH};
    use tenant_isolation::{ManualClock, PlanLimits, QuotaLedger};
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 86_399));
    let directory = Arc::new(MemoryTenantDirectory::new());
    let ledger = MemoryQuotaLedger::new(directory.clone(), Arc::new(clock.clone()));
    let t = conformance::create_tenant(directory.as_ref(), PlanLimits::new(0, 0, 1)).await;
    ledger.admit_send(&t).await.expect("first send of the day");
    assert!(ledger.admit_send(&t).await.is_err());
    clock.advance(Duration::from_secs(1));
    let next = ledger.admit_send(&t).await.expect("a new UTC day");
    assert_eq!(next.sent, 1);
}
