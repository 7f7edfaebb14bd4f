//! Explicit lifecycle: removal, idle reaping, orphan sweep, per-tenant stats.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use tracing::{info, warn};

use super::{TenantPool, naming};
use crate::{
    ChipActivity, ContainerId, ContainerInfo, ContainerState, ContainerStats, Error, IdleAction,
    PoolEventKind, TenantExists, TenantId,
};

/// What [`TenantPool::reap_idle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Containers stopped.
    pub stopped: Vec<String>,
    /// Containers removed.
    pub removed: Vec<String>,
    /// Containers that are idle but not yet for the full TTL.
    pub idle: Vec<String>,
}

/// What [`TenantPool::sweep_orphans`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Removed containers (their tenant no longer exists, or their tenant label is unreadable).
    pub removed: Vec<String>,
    /// Removed volumes (only with `remove_volumes`).
    pub removed_volumes: Vec<String>,
}

/// Resource use of one tenant container.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotStats {
    /// Its slot.
    pub slot: u32,
    /// Its name.
    pub container: String,
    /// Its state.
    pub state: ContainerState,
    /// Usage (only measured while running).
    pub stats: Option<ContainerStats>,
}

impl TenantPool {
    /// Removes every container of `tenant` (and, with `remove_volumes`, its session volumes,
    /// which deletes its WhatsApp logins), and frees its host ports. Returns the removed names.
    pub async fn remove_tenant(
        &self,
        tenant: &TenantId,
        remove_volumes: bool,
    ) -> Result<Vec<String>, Error> {
        let containers = self.containers(tenant).await?;
        let mut removed = Vec::new();
        for c in containers {
            // A container with an unreadable slot label is still the tenant's and goes too;
            // no `ensure` can be using it (they look slots up by label), so no slot is held
            // (holding slot 0 would wait on, and clear, another container's flight).
            let _hold = match naming::slot_of(&c) {
                Some(slot) => Some(self.hold_slot(tenant, slot).await),
                None => {
                    warn!(container = %c.name, tenant = %tenant, "removing a container with an unreadable slot label");
                    None
                }
            };
            self.remove_container(&c, "tenant removed", true).await?;
            removed.push(c.name);
        }
        if remove_volumes {
            for volume in self
                .inner
                .runtime
                .list_volumes(&self.tenant_selector(tenant))
                .await?
            {
                self.inner.runtime.remove_volume(&volume.name).await?;
            }
        }
        self.prune_flights(tenant);
        Ok(removed)
    }

    /// Stops (or removes, by [`PoolConfig::idle_action`](crate::PoolConfig::idle_action)) every
    /// running managed container that ran no chip for [`PoolConfig::idle_ttl`](crate::PoolConfig::idle_ttl).
    ///
    /// A container counts as active when `activity` reports running chips for its tenant slot,
    /// and when `ensure` returned it. A container first seen by this pool (after a restart of
    /// the host application) starts its idle clock now, so nothing is reaped on start-up. Call
    /// it periodically (the supervisor does).
    pub async fn reap_idle(&self, activity: &dyn ChipActivity) -> Result<ReapReport, Error> {
        let mut report = ReapReport::default();
        let all = self.inner.runtime.list(&self.managed_selector()).await?;
        self.forget_missing(&all);
        for c in all
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let (Some(tenant), Some(slot)) = (naming::tenant_of(&c), naming::slot_of(&c)) else {
                continue;
            };
            if !self
                .idle_for_ttl(&c, &tenant, slot, activity, &mut report)
                .await?
            {
                continue;
            }
            // Hold the slot's flight so a concurrent ensure does not race the stop, then look
            // again: an ensure that finished while we waited has just used the container.
            let _hold = self.hold_slot(&tenant, slot).await;
            match self.inner.runtime.inspect(&c.id).await {
                Ok(now) if now.state == ContainerState::Running => {}
                Ok(_) | Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
            let mut recheck = ReapReport::default();
            if !self
                .idle_for_ttl(&c, &tenant, slot, activity, &mut recheck)
                .await?
            {
                report.idle.extend(recheck.idle);
                continue;
            }
            match self.inner.config.idle_action {
                IdleAction::Stop => {
                    info!(container = %c.name, tenant = %tenant, "stopping idle container");
                    self.inner
                        .runtime
                        .stop(&c.id, self.inner.config.stop_grace)
                        .await?;
                    self.idle_map().remove(&c.id);
                    self.emit(&tenant, slot, &c.name, PoolEventKind::Stopped);
                    report.stopped.push(c.name);
                }
                IdleAction::Remove => {
                    info!(container = %c.name, tenant = %tenant, "removing idle container");
                    self.remove_container(&c, "idle", true).await?;
                    report.removed.push(c.name);
                }
            }
        }
        Ok(report)
    }

    /// Removes every managed container whose tenant no longer exists (or whose tenant label is
    /// missing or unreadable), with its host port; with `remove_volumes`, also such tenants'
    /// volumes. Containers of other pools (another managed-by value) are never touched.
    pub async fn sweep_orphans(
        &self,
        tenants: &dyn TenantExists,
        remove_volumes: bool,
    ) -> Result<SweepReport, Error> {
        let mut report = SweepReport::default();
        let mut verdicts = Verdicts::new(tenants);
        let mut swept = BTreeSet::new();
        for c in self.inner.runtime.list(&self.managed_selector()).await? {
            let tenant = naming::tenant_of(&c);
            if verdicts.exists(tenant.as_ref()).await? {
                continue;
            }
            warn!(container = %c.name, "removing orphaned container");
            let _hold = match (&tenant, naming::slot_of(&c)) {
                (Some(tenant), Some(slot)) => Some(self.hold_slot(tenant, slot).await),
                _ => None,
            };
            self.remove_container(&c, "orphan: tenant no longer exists", true)
                .await?;
            report.removed.push(c.name);
            swept.extend(tenant);
        }
        if remove_volumes {
            for volume in self
                .inner
                .runtime
                .list_volumes(&self.managed_selector())
                .await?
            {
                let tenant = volume
                    .labels
                    .get(crate::labels::TENANT)
                    .and_then(|t| TenantId::new(t.as_str()).ok());
                if !verdicts.exists(tenant.as_ref()).await? {
                    self.inner.runtime.remove_volume(&volume.name).await?;
                    report.removed_volumes.push(volume.name);
                }
            }
        }
        for tenant in &swept {
            self.prune_flights(tenant);
        }
        Ok(report)
    }

    /// Resource use of each of the tenant's containers, in slot order. A container whose slot
    /// label is unreadable is left out (with a warning in the log).
    pub async fn tenant_stats(&self, tenant: &TenantId) -> Result<Vec<SlotStats>, Error> {
        let mut out = Vec::new();
        for c in self.containers(tenant).await? {
            let Some(slot) = naming::slot_of(&c) else {
                warn!(container = %c.name, tenant = %tenant, "no stats for a container with an unreadable slot label");
                continue;
            };
            let stats = if c.state == ContainerState::Running {
                match self.inner.runtime.stats(&c.id).await {
                    Ok(s) => Some(s),
                    Err(Error::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            out.push(SlotStats {
                slot,
                container: c.name,
                state: c.state,
                stats,
            });
        }
        Ok(out)
    }

    pub(super) async fn remove_container(
        &self,
        c: &ContainerInfo,
        reason: &str,
        release_port: bool,
    ) -> Result<(), Error> {
        self.inner.runtime.remove(&c.id).await?;
        self.idle_map().remove(&c.id);
        if release_port && let Some((_, store)) = self.inner.config.addressing.port_allocation() {
            store.release(&c.name).await?;
        }
        if let (Some(tenant), Some(slot)) = (naming::tenant_of(c), naming::slot_of(c)) {
            self.emit(
                &tenant,
                slot,
                &c.name,
                PoolEventKind::Removed {
                    reason: reason.to_owned(),
                },
            );
        }
        Ok(())
    }

    /// Whether a running container has run no chip for the idle TTL (records it as idle, or
    /// touches it when chips run).
    async fn idle_for_ttl(
        &self,
        c: &ContainerInfo,
        tenant: &TenantId,
        slot: u32,
        activity: &dyn ChipActivity,
        report: &mut ReapReport,
    ) -> Result<bool, Error> {
        if activity.running_chips(tenant, slot).await? > 0 {
            self.touch(&c.id);
            return Ok(false);
        }
        let now = self.inner.config.clock.now();
        let since = *self.idle_map().entry(c.id.clone()).or_insert(now);
        // A clock set back reads as "not idle yet", never as a negative idle time.
        let idle_for = now.duration_since(since).unwrap_or_default();
        if idle_for < self.inner.config.idle_ttl {
            report.idle.push(c.name.clone());
            return Ok(false);
        }
        Ok(true)
    }

    fn idle_map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ContainerId, SystemTime>> {
        self.inner
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget_missing(&self, present: &[ContainerInfo]) {
        let ids: std::collections::HashSet<&ContainerId> = present.iter().map(|c| &c.id).collect();
        self.idle_map().retain(|id, _| ids.contains(id));
    }
}

/// Whether tenants exist, asking the directory once per tenant in one sweep. A missing or
/// unreadable tenant label counts as "does not exist".
struct Verdicts<'a> {
    tenants: &'a dyn TenantExists,
    known: BTreeMap<TenantId, bool>,
}

impl<'a> Verdicts<'a> {
    fn new(tenants: &'a dyn TenantExists) -> Self {
        Self {
            tenants,
            known: BTreeMap::new(),
        }
    }

    async fn exists(&mut self, tenant: Option<&TenantId>) -> Result<bool, Error> {
        let Some(tenant) = tenant else {
            return Ok(false);
        };
        if let Some(v) = self.known.get(tenant) {
            return Ok(*v);
        }
        let v = self.tenants.tenant_exists(tenant).await?;
        self.known.insert(tenant.clone(), v);
        Ok(v)
    }
}
