//! The in-memory quota ledger reads the directory under its lock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tenant_isolation::{
    ChipId, Error, MemoryQuotaLedger, MemoryTenantDirectory, NewTenant, PlanLimits, QuotaLedger,
    SlotKind, SystemClock, Tenant, TenantDirectory, TenantId, TenantSecrets, TenantStatus,
};
use tokio::sync::Notify;

/// A directory whose next `get` pauses (after reading) until released: a slow directory.
struct PausingDirectory {
    inner: MemoryTenantDirectory,
    pause_next_get: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
}

#[async_trait]
impl TenantDirectory for PausingDirectory {
    async fn create(&self, tenant: NewTenant) -> Result<Tenant, Error> {
        self.inner.create(tenant).await
    }
    async fn get(&self, id: &TenantId) -> Result<Tenant, Error> {
        let read = self.inner.get(id).await;
        let pause = self.pause_next_get.lock().unwrap().take();
        if let Some((entered, release)) = pause {
            entered.notify_one();
            release.notified().await;
        }
        read
    }
    async fn list(&self) -> Result<Vec<Tenant>, Error> {
        self.inner.list().await
    }
    async fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant, Error> {
        self.inner.set_status(id, status).await
    }
    async fn set_limits(&self, id: &TenantId, limits: PlanLimits) -> Result<Tenant, Error> {
        self.inner.set_limits(id, limits).await
    }
    async fn set_secrets(&self, id: &TenantId, secrets: TenantSecrets) -> Result<Tenant, Error> {
        self.inner.set_secrets(id, secrets).await
    }
    async fn replace_secrets(
        &self,
        id: &TenantId,
        expected: &TenantSecrets,
        new: TenantSecrets,
    ) -> Result<Tenant, Error> {
        self.inner.replace_secrets(id, expected, new).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_limit_lowered_while_a_reservation_reads_the_directory_holds() {
    let directory = Arc::new(PausingDirectory {
        inner: MemoryTenantDirectory::new(),
        pause_next_get: Mutex::new(None),
    });
    let ledger = Arc::new(MemoryQuotaLedger::new(
        directory.clone(),
        Arc::new(SystemClock),
    ));
    let t = TenantId::new("acme").unwrap();
    directory
        .create(NewTenant::new(
            t.clone(),
            PlanLimits::new(2, 2, 2),
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .unwrap();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    *directory.pause_next_get.lock().unwrap() = Some((entered.clone(), release.clone()));

    // A reads "limit 2" and is slow to come back.
    let a = {
        let (ledger, t) = (ledger.clone(), t.clone());
        tokio::spawn(async move {
            ledger
                .reserve(&t, SlotKind::Chip, &ChipId::new("a").unwrap())
                .await
        })
    };
    entered.notified().await;
    // B tries meanwhile.
    let b = {
        let (ledger, t) = (ledger.clone(), t.clone());
        tokio::spawn(async move {
            ledger
                .reserve(&t, SlotKind::Chip, &ChipId::new("b").unwrap())
                .await
        })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    // The administrator lowers the limit to 1; from now on at most one chip may hold a slot.
    directory
        .set_limits(&t, PlanLimits::new(1, 2, 2))
        .await
        .unwrap();
    release.notify_one();
    let results = [a.await.unwrap(), b.await.unwrap()];
    let held = ledger.holders(&t, SlotKind::Chip).await.unwrap();
    assert_eq!(
        held.len(),
        1,
        "a reservation acting on a limit read before the change let usage pass the new limit: {results:?}"
    );
}
