//! A conformance suite that every backend of [`TenantDirectory`] and [`QuotaLedger`] must pass.
//!
//! Each check panics with a message naming the broken rule. Host crates with their own
//! backends can run it too. Every check creates tenants with fresh random ids
//! ([`unique_tenant`]), so checks may run in parallel against one shared database.
//!
//! ```
//! use std::sync::Arc;
//! use tenant_isolation::{conformance, MemoryQuotaLedger, MemoryTenantDirectory, SystemClock};
//! # #[tokio::main] async fn main() {
//! let directory = Arc::new(MemoryTenantDirectory::new());
//! let ledger = Arc::new(MemoryQuotaLedger::new(directory.clone(), Arc::new(SystemClock)));
//! conformance::tenant_directory(directory.clone()).await;
//! conformance::quota_ledger(directory, ledger).await;
//! # }
//! ```

use std::sync::Arc;

use crate::{
    ChipId, Error, NewTenant, PlanLimits, QuotaLedger, QuotaLimit, SlotKind, TenantDirectory,
    TenantId, TenantSecrets, TenantStatus,
};

mod directory;
mod quota;

pub use directory::*;
pub use quota::*;

/// A fresh random tenant id (`t` + 16 random characters).
pub fn unique_tenant() -> TenantId {
    TenantId::generate()
}

/// Creates an active tenant with fresh secrets and the given limits; panics on failure.
pub async fn create_tenant(directory: &dyn TenantDirectory, limits: PlanLimits) -> TenantId {
    let id = unique_tenant();
    let secrets = TenantSecrets::generate().expect("OS random source");
    directory
        .create(NewTenant::new(id.clone(), limits, secrets))
        .await
        .unwrap_or_else(|e| panic!("creating tenant {id}: {e}"));
    id
}

/// Runs every directory check.
pub async fn tenant_directory(directory: Arc<dyn TenantDirectory>) {
    directory_create_and_get(directory.as_ref()).await;
    directory_refuses_duplicates(directory.as_ref()).await;
    directory_status_transitions(directory.as_ref()).await;
    directory_updates_limits_and_secrets(directory.as_ref()).await;
    directory_lists_tenants(directory.as_ref()).await;
    directory_keeps_incarnations(directory.as_ref()).await;
}

/// Runs every quota check, including the 50-for-10 race.
pub async fn quota_ledger(directory: Arc<dyn TenantDirectory>, ledger: Arc<dyn QuotaLedger>) {
    quota_reserve_is_idempotent(directory.as_ref(), ledger.as_ref()).await;
    quota_release_frees_slots(directory.as_ref(), ledger.as_ref()).await;
    quota_running_session_requires_chip_slot(directory.as_ref(), ledger.as_ref()).await;
    quota_refuses_inactive_tenants(directory.as_ref(), ledger.as_ref()).await;
    quota_tenants_do_not_share_slots(directory.as_ref(), ledger.as_ref()).await;
    quota_daily_sends(directory.as_ref(), ledger.as_ref()).await;
    quota_race(directory.clone(), ledger.clone(), SlotKind::Chip, 50, 10).await;
    quota_race(
        directory.clone(),
        ledger.clone(),
        SlotKind::RunningSession,
        20,
        3,
    )
    .await;
    quota_send_race(directory, ledger, 30, 7).await;
}

fn expect_exceeded(result: Result<impl std::fmt::Debug, Error>, limit: QuotaLimit, max: u32) {
    match result {
        Err(Error::QuotaExceeded {
            limit: got, max: m, ..
        }) => {
            assert_eq!(got, limit, "QuotaExceeded must name the limit that was hit");
            assert_eq!(m, max, "QuotaExceeded must carry the limit's value");
        }
        other => panic!("expected QuotaExceeded({limit}), got {other:?}"),
    }
}

fn chip(n: usize) -> ChipId {
    ChipId::new(format!("chip-{n}")).expect("valid chip id")
}

fn expect_status_error(result: Result<impl std::fmt::Debug, Error>, status: TenantStatus) {
    match (status, result) {
        (TenantStatus::Suspended, Err(Error::TenantSuspended { .. }))
        | (TenantStatus::Deleted, Err(Error::TenantDeleted { .. })) => {}
        (_, other) => panic!("expected the {status} tenant to be refused, got {other:?}"),
    }
}
