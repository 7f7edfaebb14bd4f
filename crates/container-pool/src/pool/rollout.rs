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
    /// Containers whose drift could not be determined (see [`Drift::unknown`]), with the
    /// error: left untouched, while the rollout went on with the others.
    pub unknown: Vec<(String, Error)>,
    /// Tenants with drifted containers that were not reached (halted, canary failed, or
    /// `max_tenants`).
    pub pending: Vec<TenantId>,
    /// Whether the canary failed (and the rollout stopped because of it).
    pub canary_failed: bool,
}

/// What [`TenantPool::drifted`] found.
#[derive(Debug, Clone, Default)]
pub struct Drift {
    /// Containers whose spec-hash label differs from the spec the pool would create now, by
    /// tenant (each with a readable slot label).
    pub drifted: BTreeMap<TenantId, Vec<ContainerInfo>>,
    /// Containers whose wanted spec could not be computed, with the error (e.g.
    /// [`Error::PortsExhausted`]: a container with no host-port allocation and no free port).
    pub unknown: Vec<(String, Error)>,
}

impl TenantPool {
    /// The managed containers whose spec-hash label differs from the spec the pool would create
    /// now, grouped by tenant. A read-only query: it reads no API key and allocates no host
    /// port. A container whose wanted spec cannot be computed is listed in
    /// [`Drift::unknown`] and the others are still checked; `Err` only when listing the
    /// containers or reading the port allocations fails. Containers without a readable tenant
    /// or slot label are not the pool's to replace and are skipped.
    pub async fn drifted(&self) -> Result<Drift, Error> {
        let ports = match self.inner.config.addressing.port_allocation() {
            Some((_, store)) => store.allocations().await?,
            None => BTreeMap::new(),
        };
        let mut out = Drift::default();
        for c in self.inner.runtime.list(&self.managed_selector()).await? {
            let (Some(tenant), Some(slot)) = (naming::tenant_of(&c), naming::slot_of(&c)) else {
                continue;
            };
            match self.wanted_spec_hash(&tenant, slot, &ports).await {
                Ok(wanted) if c.label(labels::SPEC_HASH) == Some(wanted.as_str()) => {}
                Ok(_) => out.drifted.entry(tenant).or_default().push(c),
                Err(e) => {
                    warn!(container = %c.name, error = %e, "cannot tell whether the container drifted");
                    out.unknown.push((c.name, e));
                }
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
    /// removal leaves the slot empty until the next `ensure`, and is reported in `failed`.) A
    /// container whose drift cannot be determined is reported in `unknown` and left alone; it
    /// neither stops the rollout nor counts as a failure of its tenant.
    pub async fn rolling_replace(&self, options: &RolloutOptions) -> Result<RolloutReport, Error> {
        self.rollout(options, None).await
    }

    /// Replaces the drifted containers of one tenant only, as
    /// [`rolling_replace`](Self::rolling_replace) does for each tenant (same image check, same
    /// slot hold, same readiness gate). Other tenants' containers are never touched, also when
    /// this tenant has nothing drifted (then the report is empty): what a supervisor that owns
    /// some tenants of a shared pool uses to upgrade just those.
    pub async fn replace_tenant(&self, tenant: &TenantId) -> Result<RolloutReport, Error> {
        let options = RolloutOptions {
            canary: Some(tenant.clone()),
            halt_on_failure: true,
            max_tenants: Some(1),
        };
        self.rollout(&options, Some(tenant)).await
    }

    async fn rollout(
        &self,
        options: &RolloutOptions,
        only: Option<&TenantId>,
    ) -> Result<RolloutReport, Error> {
        let image = &self.inner.config.image;
        if !self.inner.runtime.has_image(image).await? {
            return Err(Error::ImageMissing {
                image: image.to_string(),
            });
        }
        let Drift {
            mut drifted,
            unknown,
        } = self.drifted().await?;
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
        if let Some(only) = only {
            order.retain(|t| t == only);
        }
        let mut report = RolloutReport {
            unknown,
            ..RolloutReport::default()
        };
        let limit = options.max_tenants.unwrap_or(usize::MAX);
        for (done, tenant) in order.iter().enumerate() {
            if done >= limit {
                report.pending.extend(order[done..].iter().cloned());
                break;
            }
            let containers = drifted.remove(tenant).unwrap_or_default();
            let mut tenant_failed = false;
            for c in containers {
                // `drifted` keeps only containers with a slot label.
                let Some(slot) = naming::slot_of(&c) else {
                    continue;
                };
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
            let (key, incarnation) = self.tenant_record(tenant).await?;
            let spec = self.build_spec(tenant, slot, &key, &incarnation).await?;
            self.inner.runtime.create(&spec).await?;
            return Ok(false);
        }
        self.ensure_now(tenant, slot).await.map(|_| true)
    }
}
