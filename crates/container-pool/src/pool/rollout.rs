//! Rolling replace of containers whose spec drifted (a new image, new limits).

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::{TenantPool, naming};
use crate::{ContainerInfo, ContainerState, Error, TenantId, labels};

/// How [`TenantPool::rolling_replace`] proceeds.
#[derive(Debug, Clone, Default)]
pub struct RolloutOptions {
    /// Replace this tenant first, alone; if any of its containers fails to become ready, stop
    /// there and touch no other tenant.
    pub canary: Option<TenantId>,
    /// Stop at the first tenant that fails (otherwise the failure is recorded and the rollout
    /// goes on with the next tenant).
    pub halt_on_failure: bool,
    /// Replace at most this many tenants in this call (`None`: all).
    pub max_tenants: Option<usize>,
}

/// What [`TenantPool::rolling_replace`] did.
#[derive(Debug, Clone, Default)]
pub struct RolloutReport {
    /// Running containers replaced and ready on the new spec, in order.
    pub replaced: Vec<String>,
    /// Containers that were not running (stopped by idle reaping, exited, never started):
    /// re-created on the new spec but left unstarted; the next `ensure` starts them.
    pub replaced_stopped: Vec<String>,
    /// Containers whose replacement failed, with the error.
    pub failed: Vec<(String, Error)>,
    /// Tenants with drifted containers that were not reached (halted, canary failed, or
    /// `max_tenants`).
    pub pending: Vec<TenantId>,
    /// Whether the canary failed (and the rollout stopped because of it).
    pub canary_failed: bool,
}

impl TenantPool {
    /// The managed containers whose spec-hash label differs from the spec the pool would create
    /// now, grouped by tenant.
    pub async fn drifted(&self) -> Result<BTreeMap<TenantId, Vec<ContainerInfo>>, Error> {
        let mut out: BTreeMap<TenantId, Vec<ContainerInfo>> = BTreeMap::new();
        for c in self.inner.runtime.list(&self.managed_selector()).await? {
            let (Some(tenant), Some(slot)) = (naming::tenant_of(&c), naming::slot_of(&c)) else {
                continue;
            };
            let key = self.inner.keys.container_api_key(&tenant).await?;
            let wanted = self.build_spec(&tenant, slot, &key).await?.spec_hash();
            if c.label(labels::SPEC_HASH) != Some(wanted.as_str()) {
                out.entry(tenant).or_default().push(c);
            }
        }
        Ok(out)
    }

    /// Replaces drifted containers one tenant at a time: each of the tenant's drifted
    /// containers is removed and re-created from the current spec on the same volume, and must
    /// pass the readiness gate before the next tenant starts. A container that was not running
    /// is re-created but not started (idle reaping stopped it for a reason). With a canary,
    /// that tenant goes first and a failure stops the rollout. Each replacement holds its
    /// slot's single-flight lock, so a concurrent `ensure` waits for the new container instead
    /// of racing it.
    ///
    /// The configured image is checked first: when the runtime says it is missing, the rollout
    /// returns [`Error::ImageMissing`] having removed nothing. (A container's name is its
    /// address on the network and its volume may be used by one WAHA at a time, so the old
    /// container is removed before the new one is created; a replacement that fails after the
    /// removal leaves the slot empty until the next `ensure`, and is reported in `failed`.)
    pub async fn rolling_replace(&self, options: &RolloutOptions) -> Result<RolloutReport, Error> {
        let image = &self.inner.config.image;
        if !self.inner.runtime.has_image(image).await? {
            return Err(Error::ImageMissing {
                image: image.to_string(),
            });
        }
        let mut drifted = self.drifted().await?;
        let mut order: Vec<TenantId> = Vec::new();
        if let Some(canary) = &options.canary
            && drifted.contains_key(canary)
        {
            order.push(canary.clone());
        }
        order.extend(
            drifted
                .keys()
                .filter(|t| Some(*t) != options.canary.as_ref())
                .cloned(),
        );
        let mut report = RolloutReport::default();
        let limit = options.max_tenants.unwrap_or(usize::MAX);
        for (done, tenant) in order.iter().enumerate() {
            if done >= limit {
                report.pending.extend(order[done..].iter().cloned());
                break;
            }
            let containers = drifted.remove(tenant).unwrap_or_default();
            let mut tenant_failed = false;
            for c in containers {
                let slot = naming::slot_of(&c).unwrap_or(0);
                match self.replace_slot(tenant, slot, &c).await {
                    Ok(true) => report.replaced.push(c.name),
                    Ok(false) => report.replaced_stopped.push(c.name),
                    Err(e) => {
                        warn!(container = %c.name, error = %e, "replacement failed");
                        tenant_failed = true;
                        report.failed.push((c.name, e));
                    }
                }
            }
            let is_canary = options.canary.as_ref() == Some(tenant);
            if tenant_failed && (is_canary || options.halt_on_failure) {
                report.canary_failed = is_canary;
                report.pending.extend(order[done + 1..].iter().cloned());
                break;
            }
        }
        Ok(report)
    }

    /// Replaces one container; `Ok(true)` when it was running and its replacement is ready,
    /// `Ok(false)` when it was not running and its replacement was only created.
    async fn replace_slot(
        &self,
        tenant: &TenantId,
        slot: u32,
        old: &ContainerInfo,
    ) -> Result<bool, Error> {
        let _hold = self.hold_slot(tenant, slot).await;
        let running = match self.inner.runtime.inspect(&old.id).await {
            Ok(now) => now.state == ContainerState::Running,
            Err(Error::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        info!(container = %old.name, tenant = %tenant, running, "replacing drifted container");
        self.remove_container(old, "spec drift: replaced", false)
            .await?;
        if !running {
            let key = self.inner.keys.container_api_key(tenant).await?;
            let spec = self.build_spec(tenant, slot, &key).await?;
            self.inner.runtime.create(&spec).await?;
            return Ok(false);
        }
        self.ensure_now(tenant, slot).await.map(|_| true)
    }
}
