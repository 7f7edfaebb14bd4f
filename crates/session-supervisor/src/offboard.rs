//! Offboarding a tenant (`docs/session-supervisor.md`, 8): every chip deleted through its
//! finalizers, then the containers and volumes, the proxy rows, leftover quota reservations
//! and the store's rows.

use std::collections::BTreeSet;
use std::time::Duration;

use tenant_isolation::{ChipId, SlotKind, TenantId, TenantStatus};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::chip::RunState;
use crate::error::SupervisorError;
use crate::store::Trigger;
use crate::supervisor::Supervisor;

/// What [`Supervisor::offboard_tenant`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffboardReport {
    /// Chips whose finalizers ran (session logged out and deleted, lease and slots
    /// released, record removed), in id order.
    pub chips: Vec<ChipId>,
    /// Containers removed.
    pub containers: Vec<String>,
    /// Whether the tenant's session volumes were removed (its WhatsApp logins are gone).
    pub volumes_removed: bool,
    /// Proxy rows purged (leases and history).
    pub proxy_rows: u64,
    /// Quota reservations released that no chip held any more.
    pub stray_reservations: u64,
    /// Store rows purged after the chips were gone (0 when the finalizers removed all).
    pub records: u64,
}

impl Supervisor {
    /// Offboards a tenant: suspends it in the directory if it is active (no new chips), deletes
    /// every chip (each session logged out and deleted, its proxy
    /// lease, running and chip slots released, its record removed; the tenant's owner does
    /// this, on whichever replica), waits up to `wait` for that, then removes the tenant's
    /// containers and volumes, purges its proxy rows, releases quota reservations no chip
    /// holds and purges its store rows. Running it again is safe. Erasing the tenant from
    /// the directory stays the host's call, after this.
    ///
    /// # Errors
    /// [`SupervisorError::OffboardIncomplete`] when chips are still being deleted after
    /// `wait` (run it again; nothing is half-removed); store, pool and allocator failures.
    pub async fn offboard_tenant(
        &self,
        tenant: &TenantId,
        wait: Duration,
    ) -> Result<OffboardReport, SupervisorError> {
        let effects = &self.inner.effects;
        let mut report = OffboardReport::default();
        // A leaving tenant takes no new chips: suspended first, so a create racing the
        // offboarding is refused instead of being purged after it succeeded.
        match effects.directory.get(tenant).await {
            Ok(found) if found.status == TenantStatus::Active => {
                effects
                    .directory
                    .set_status(tenant, TenantStatus::Suspended)
                    .await?;
                info!(tenant = %tenant, "tenant suspended for offboarding");
            }
            Ok(_) | Err(tenant_isolation::Error::TenantNotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let mut deleted = BTreeSet::new();
        let deadline = Instant::now() + wait;
        loop {
            let chips = self.chips_of(tenant).await?;
            if chips.is_empty() {
                break;
            }
            for record in &chips {
                deleted.insert(record.key.chip.clone());
                if record.desired.run != RunState::Deleted {
                    self.delete_chip(tenant, &record.key.chip).await?;
                } else {
                    self.trigger(&record.key, Trigger::Api).await;
                }
            }
            if Instant::now() >= deadline {
                return Err(SupervisorError::OffboardIncomplete {
                    tenant: tenant.clone(),
                    remaining: chips.len(),
                });
            }
            tokio::time::sleep(effects.config.tick_interval.max(Duration::from_millis(20))).await;
        }
        report.chips = deleted.into_iter().collect();
        report.containers = effects.pool.remove_tenant(tenant, true).await?;
        report.volumes_removed = true;
        report.proxy_rows = effects.proxies.purge_tenant(tenant).await?;
        for kind in [SlotKind::RunningSession, SlotKind::Chip] {
            for chip in effects.quota.holders(tenant, kind).await? {
                if effects.quota.release(tenant, kind, &chip).await? {
                    warn!(tenant = %tenant, chip = %chip, ?kind, "stray quota reservation released");
                    report.stray_reservations += 1;
                }
            }
        }
        report.records = effects.store.purge_tenant(tenant).await?;
        self.inner.owned.drop_tenant(tenant);
        self.inner
            .placement_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
        info!(
            tenant = %tenant,
            chips = report.chips.len(),
            containers = report.containers.len(),
            "tenant offboarded"
        );
        Ok(report)
    }
}
