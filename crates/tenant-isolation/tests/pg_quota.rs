//! The PostgreSQL quota ledger beyond the conformance suite: lock waits and UTC days (real
//! PostgreSQL; fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tenant_isolation::pg::PgQuotaLedger;
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::{
    ChipId, Error, ManualClock, NewTenant, PlanLimits, QuotaLedger, QuotaLimit, SlotKind,
    SystemClock, TenantDirectory, TenantId, TenantSecrets, TenantStatus,
};

async fn tenant_with(directory: &dyn TenantDirectory, limits: PlanLimits) -> TenantId {
    let id = TenantId::generate();
    directory
        .create(NewTenant::new(
            id.clone(),
            limits,
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .unwrap();
    id
}

/// Waits until some backend is blocked by `holder_pid` (the reservation waits for the lock).
async fn wait_until_blocked_by(observer: &tokio_postgres::Client, holder_pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&holder_pid],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reservation never waited for the row lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A reservation waiting for the usage-row lock while the tenant is suspended (or its limit
/// lowered) must act on the state after the wait, not before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_rereads_status_and_limits_after_waiting_for_the_lock() {
    let directory = pg_support::directory().await;
    let ledger = Arc::new(PgQuotaLedger::new(
        pg_support::app().await,
        Arc::new(SystemClock),
    ));
    let chip = |n: u32| ChipId::new(format!("chip-{n}")).unwrap();
    for change in ["suspend", "lower"] {
        let t = tenant_with(directory.as_ref(), PlanLimits::new(5, 5, 5)).await;
        ledger.reserve(&t, SlotKind::Chip, &chip(1)).await.unwrap();

        // Another transaction holds the tenant's chip usage row.
        let mut holder = pg_support::owner_client().await;
        let holder_tx = holder.transaction().await.unwrap();
        let holder_pid: i32 = holder_tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        holder_tx
            .query_one(
                "SELECT in_use FROM quota_usage WHERE tenant_id = $1 AND kind = 'chip' FOR UPDATE",
                &[&t.as_str()],
            )
            .await
            .unwrap();

        let waiting = {
            let (ledger, t) = (ledger.clone(), t.clone());
            tokio::spawn(async move { ledger.reserve(&t, SlotKind::Chip, &chip(2)).await })
        };
        let observer = pg_support::owner_client().await;
        wait_until_blocked_by(&observer, holder_pid).await;
        match change {
            "suspend" => {
                directory
                    .set_status(&t, TenantStatus::Suspended)
                    .await
                    .unwrap();
            }
            _ => {
                directory
                    .set_limits(&t, PlanLimits::new(1, 5, 5))
                    .await
                    .unwrap();
            }
        }
        holder_tx.rollback().await.unwrap();
        let result = waiting.await.unwrap();
        match (change, result) {
            ("suspend", Err(Error::TenantSuspended { .. })) => {}
            (
                "lower",
                Err(Error::QuotaExceeded {
                    limit: QuotaLimit::MaxChips,
                    max: 1,
                    in_use: 1,
                    ..
                }),
            ) => {}
            (change, other) => {
                panic!("after the lock wait, the {change} must count: got {other:?}")
            }
        }
        assert_eq!(
            ledger.holders(&t, SlotKind::Chip).await.unwrap(),
            vec![chip(1)]
        );
    }
}

#[tokio::test]
async fn send_quota_resets_at_utc_midnight() {
    // One second before a UTC midnight.
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 86_399));
    let directory = pg_support::directory().await;
    let ledger = PgQuotaLedger::new(pg_support::app().await, Arc::new(clock.clone()));
    let t = tenant_with(directory.as_ref(), PlanLimits::new(0, 0, 2)).await;
    assert_eq!(ledger.admit_send(&t).await.unwrap().sent, 1);
    assert_eq!(ledger.admit_send(&t).await.unwrap().sent, 2);
    assert!(matches!(
        ledger.admit_send(&t).await,
        Err(Error::QuotaExceeded {
            limit: QuotaLimit::MaxSendsPerDay,
            max: 2,
            in_use: 2,
            ..
        })
    ));
    assert_eq!(ledger.usage(&t).await.unwrap().sends_today, 2);
    clock.advance(Duration::from_secs(1));
    let next = ledger.admit_send(&t).await.expect("a new UTC day");
    assert_eq!(next.sent, 1);
    assert_eq!(next.day.0, 20_001);
    let usage = ledger.usage(&t).await.unwrap();
    assert_eq!((usage.sends_today, usage.day.0), (1, 20_001));
}

/// A send waiting for today's counter-row lock while the tenant is suspended (or its daily limit
/// lowered) must act on the state after the wait, and count nothing when it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_send_rereads_status_and_limits_after_waiting_for_the_lock() {
    let directory = pg_support::directory().await;
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(20_100 * 86_400 + 3_600));
    let ledger = Arc::new(PgQuotaLedger::new(pg_support::app().await, Arc::new(clock)));
    for change in ["suspend", "lower"] {
        let t = tenant_with(directory.as_ref(), PlanLimits::new(0, 0, 5)).await;
        assert_eq!(ledger.admit_send(&t).await.unwrap().sent, 1);

        // Another transaction holds the tenant's counter row for the day.
        let mut holder = pg_support::owner_client().await;
        let holder_tx = holder.transaction().await.unwrap();
        let holder_pid: i32 = holder_tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let locked = holder_tx
            .execute(
                "SELECT sent FROM daily_sends WHERE tenant_id = $1 AND day = 20100 FOR UPDATE",
                &[&t.as_str()],
            )
            .await
            .unwrap();
        assert_eq!(locked, 1, "today's counter row exists after the first send");

        let waiting = {
            let (ledger, t) = (ledger.clone(), t.clone());
            tokio::spawn(async move { ledger.admit_send(&t).await })
        };
        let observer = pg_support::owner_client().await;
        wait_until_blocked_by(&observer, holder_pid).await;
        match change {
            "suspend" => directory
                .set_status(&t, TenantStatus::Suspended)
                .await
                .unwrap(),
            _ => directory
                .set_limits(&t, PlanLimits::new(0, 0, 1))
                .await
                .unwrap(),
        };
        holder_tx.rollback().await.unwrap();
        let result = waiting.await.unwrap();
        match (change, result) {
            ("suspend", Err(Error::TenantSuspended { .. })) => {}
            (
                "lower",
                Err(Error::QuotaExceeded {
                    limit: QuotaLimit::MaxSendsPerDay,
                    max: 1,
                    in_use: 1,
                    ..
                }),
            ) => {}
            (change, other) => {
                panic!("after the lock wait, the {change} must count: got {other:?}")
            }
        }
        let sent: i32 = observer
            .query_one(
                "SELECT sent FROM daily_sends WHERE tenant_id = $1 AND day = 20100",
                &[&t.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(sent, 1, "a refused send is not counted ({change})");
    }
}
