//! The conformance suite on the PostgreSQL backends (real PostgreSQL; fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;

use tenant_isolation::pg::PgQuotaLedger;
use tenant_isolation::{QuotaLedger, SlotKind, SystemClock, TenantDirectory, conformance};

async fn backends() -> (Arc<dyn TenantDirectory>, Arc<dyn QuotaLedger>) {
    let directory = pg_support::directory().await;
    let ledger = Arc::new(PgQuotaLedger::new(
        pg_support::app().await,
        Arc::new(SystemClock),
    ));
    (directory, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_directory_conforms() {
    conformance::tenant_directory(pg_support::directory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_reserve_is_idempotent() {
    let (d, l) = backends().await;
    conformance::quota_reserve_is_idempotent(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_release_frees_slots() {
    let (d, l) = backends().await;
    conformance::quota_release_frees_slots(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_session_requires_chip_slot() {
    let (d, l) = backends().await;
    conformance::quota_running_session_requires_chip_slot(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_refuses_inactive_tenants() {
    let (d, l) = backends().await;
    conformance::quota_refuses_inactive_tenants(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_tenants_do_not_share_slots() {
    let (d, l) = backends().await;
    conformance::quota_tenants_do_not_share_slots(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_daily_sends() {
    let (d, l) = backends().await;
    conformance::quota_daily_sends(d.as_ref(), l.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_race_50_for_10() {
    let (d, l) = backends().await;
    conformance::quota_race(d, l, SlotKind::Chip, 50, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_quota_race_running_sessions() {
    let (d, l) = backends().await;
    conformance::quota_race(d, l, SlotKind::RunningSession, 20, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_send_race() {
    let (d, l) = backends().await;
    conformance::quota_send_race(d, l, 30, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_full_suite() {
    let (d, l) = backends().await;
    conformance::quota_ledger(d, l).await;
}
