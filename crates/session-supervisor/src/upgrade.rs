//! Fleet upgrade (`docs/session-supervisor.md`, 8): a new WAHA image (or container spec)
//! rolled out through the pool's rolling replace, tenant by tenant, a canary first, with a
//! concurrency limit; each chip's volume follows its container, so logged-in chips come back
//! `Working` without a new QR code. Progress is published per chip as
//! [`ChipChangeKind::Upgrade`].

use std::collections::BTreeMap;
use std::time::Duration;

use container_pool::{ContainerId, ContainerState, RolloutReport, labels};
use futures::StreamExt;
use tenant_isolation::{ChipId, TenantId};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::chip::ChipRecord;
use crate::error::SupervisorError;
use crate::events::{ChipChange, ChipChangeKind, UpgradeStage};
use crate::owner::OwnerGuard;
use crate::phase::Phase;
use crate::store::Trigger;
use crate::supervisor::Supervisor;

/// What replaces a tenant's containers in [`Supervisor::upgrade_tenant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replacement {
    /// The pool's current spec (a new image): the pool's rolling replace.
    Spec,
    /// The tenant's rotated container API key: `ensure` re-creates each running container
    /// that refuses the new key, on its volume.
    ApiKey,
}

/// How [`Supervisor::upgrade_fleet`] proceeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeOptions {
    /// Tenants upgraded at once after the canary (2).
    pub max_concurrent_tenants: usize,
    /// Upgrade one tenant alone first and stop if it fails (on).
    pub canary: bool,
    /// How long a tenant's logged-in chips get to be `Working` again on the new containers
    /// before the tenant counts as failed (5 min).
    pub wait_back: Duration,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        UpgradeOptions {
            max_concurrent_tenants: 2,
            canary: true,
            wait_back: Duration::from_secs(5 * 60),
        }
    }
}

/// What one tenant's upgrade did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantUpgrade {
    /// The tenant.
    pub tenant: Option<TenantId>,
    /// Containers replaced on the new spec (running ones ready, stopped ones re-created).
    pub replaced: Vec<String>,
    /// Containers whose replacement failed, with the error's kind.
    pub failed: Vec<(String, &'static str)>,
    /// Chips that were `Working` before and are `Working` again on the new container.
    pub chips_back: Vec<ChipId>,
    /// Chips that were `Working` before and were not back within `wait_back` (they go on
    /// reconciling).
    pub chips_not_back: Vec<ChipId>,
}

impl TenantUpgrade {
    /// Whether every container was replaced and every logged-in chip came back.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.chips_not_back.is_empty()
    }
}

/// What [`Supervisor::upgrade_fleet`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// The tenants this process upgraded, in order.
    pub tenants: Vec<TenantUpgrade>,
    /// Tenants with drifted containers that another replica owns (its own `upgrade_fleet`
    /// upgrades them), or that no replica owns now.
    pub not_owned: Vec<TenantId>,
    /// Tenants not reached because the canary failed.
    pub pending: Vec<TenantId>,
    /// Whether the canary failed (and nothing else was touched).
    pub canary_failed: bool,
}

impl Supervisor {
    /// Rolls the pool's current container spec (a new WAHA image, resources, environment) out
    /// to the drifted containers of the tenants this process owns: a canary tenant alone
    /// first, then at most `max_concurrent_tenants` at a time. Each tenant's containers are
    /// replaced on their volumes (the pool's rolling replace, which holds the slot so no
    /// reconcile races it), then its chips are reconciled at once; chips that were `Working`
    /// must be `Working` again on the new container within `wait_back`. Each chip gets
    /// [`UpgradeStage`] changes. Running it again continues where it stopped. Call it on
    /// every replica (each upgrades the tenants it owns), after deploying the new pool
    /// configuration.
    ///
    /// An engine change is not an upgrade: another engine cannot read a session's stored login,
    /// so it needs new logins; chipfleet does not detect it here.
    ///
    /// # Errors
    /// Pool failures before any tenant was touched (the image is missing, the runtime is
    /// down); a tenant's own failure is in its [`TenantUpgrade`].
    pub async fn upgrade_fleet(
        &self,
        options: UpgradeOptions,
    ) -> Result<UpgradeReport, SupervisorError> {
        let pool = &self.inner.effects.pool;
        let image = &pool.config().image;
        if !pool.runtime().has_image(image).await? {
            return Err(SupervisorError::Pool(container_pool::Error::ImageMissing {
                image: image.to_string(),
            }));
        }
        let drift = pool.drifted().await?;
        let mut report = UpgradeReport::default();
        let mut mine: Vec<OwnerGuard> = Vec::new();
        for tenant in drift.drifted.keys() {
            match self.inner.owned.guard(tenant) {
                Some(guard) => mine.push(guard),
                None => report.not_owned.push(tenant.clone()),
            }
        }
        if mine.is_empty() {
            return Ok(report);
        }
        let rest = if options.canary {
            let canary = mine.remove(0);
            let upgraded = self
                .upgrade_tenant(&canary, &options, Replacement::Spec)
                .await;
            let ok = upgraded.succeeded();
            report.tenants.push(upgraded);
            if !ok {
                warn!(tenant = %canary.tenant(), "the canary tenant's upgrade failed; stopping");
                report.canary_failed = true;
                report.pending = mine.iter().map(|g| g.tenant().clone()).collect();
                return Ok(report);
            }
            mine
        } else {
            mine
        };
        let options = &options;
        let done: Vec<TenantUpgrade> = futures::stream::iter(rest)
            .map(|guard| async move {
                self.upgrade_tenant(&guard, options, Replacement::Spec)
                    .await
            })
            .buffer_unordered(options.max_concurrent_tenants.max(1))
            .collect()
            .await;
        report.tenants.extend(done);
        Ok(report)
    }

    pub(crate) async fn upgrade_tenant(
        &self,
        guard: &OwnerGuard,
        options: &UpgradeOptions,
        replacement: Replacement,
    ) -> TenantUpgrade {
        let tenant = guard.tenant();
        let effects = &self.inner.effects;
        let mut result = TenantUpgrade {
            tenant: Some(tenant.clone()),
            ..TenantUpgrade::default()
        };
        let before = match self.chips_of(tenant).await {
            Ok(records) => records,
            Err(error) => {
                warn!(tenant = %tenant, %error, "reading the tenant's chips failed");
                result.failed.push((String::new(), error.kind()));
                return result;
            }
        };
        // Chips logged in before, with the container they ran in.
        let working: BTreeMap<ChipId, Option<ContainerId>> = before
            .iter()
            .filter(|r| matches!(r.observed.phase, Phase::Working { .. }))
            .map(|r| {
                (
                    r.key.chip.clone(),
                    r.observed.container.as_ref().map(|c| c.id.clone()),
                )
            })
            .collect();
        self.publish_stage(&before, UpgradeStage::Started).await;
        if guard.check().is_err() {
            result.failed.push((String::new(), "stale_owner"));
            return result;
        }
        // This tenant's containers only (never another replica's tenant), abandoned the
        // moment this process stops owning the tenant.
        let replaced = tokio::select! {
            biased;
            () = guard.lost() => {
                result.failed.push((String::new(), "stale_owner"));
                return result;
            }
            replaced = self.replace_containers(tenant, replacement) => replaced,
        };
        match replaced {
            Ok(done) => {
                result.replaced.extend(done.replaced);
                result.replaced.extend(done.replaced_stopped);
                result
                    .failed
                    .extend(done.failed.into_iter().map(|(name, e)| (name, e.kind())));
            }
            Err(error) => {
                warn!(tenant = %tenant, %error, "replacing the tenant's containers failed");
                result.failed.push((String::new(), error.kind()));
            }
        }
        if !result.failed.is_empty() {
            self.publish_stage(&before, UpgradeStage::Failed).await;
            self.queue_chips(&before).await;
            return result;
        }
        self.publish_stage(&before, UpgradeStage::ContainerReplaced)
            .await;
        self.queue_chips(&before).await;
        // Wait for the logged-in chips to be `Working` on a new container.
        let deadline = Instant::now() + options.wait_back;
        let mut waiting = working;
        loop {
            let mut still = BTreeMap::new();
            for (chip, old) in waiting {
                let back = match self.get_chip(tenant, &chip).await {
                    Ok(record) => {
                        matches!(record.observed.phase, Phase::Working { .. })
                            && record.observed.container.as_ref().map(|c| &c.id) != old.as_ref()
                    }
                    Err(_) => false,
                };
                if back {
                    result.chips_back.push(chip);
                } else {
                    still.insert(chip, old);
                }
            }
            waiting = still;
            if waiting.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(effects.config.tick_interval.max(Duration::from_millis(20))).await;
        }
        result.chips_not_back = waiting.into_keys().collect();
        let after = self.chips_of(tenant).await.unwrap_or_default();
        for record in &after {
            let stage = if result.chips_not_back.contains(&record.key.chip) {
                UpgradeStage::Failed
            } else {
                UpgradeStage::Done
            };
            self.publish(ChipChange::of(record, ChipChangeKind::Upgrade { stage }))
                .await;
        }
        info!(
            tenant = %tenant,
            replaced = result.replaced.len(),
            back = result.chips_back.len(),
            not_back = result.chips_not_back.len(),
            "tenant upgraded"
        );
        result
    }

    /// Replaces the tenant's containers as `replacement` says.
    async fn replace_containers(
        &self,
        tenant: &TenantId,
        replacement: Replacement,
    ) -> Result<RolloutReport, container_pool::Error> {
        let pool = &self.inner.effects.pool;
        match replacement {
            Replacement::Spec => pool.replace_tenant(tenant).await,
            Replacement::ApiKey => {
                // `ensure` probes a running container whose key label differs with the
                // current key and re-creates it on its volume when it refuses (a rotated key
                // is no spec drift); a stopped one is repaired when it is next ensured.
                let mut report = RolloutReport::default();
                for container in pool.containers(tenant).await? {
                    if container.state != ContainerState::Running {
                        continue;
                    }
                    let Some(slot) = container
                        .labels
                        .get(labels::SLOT)
                        .and_then(|slot| slot.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    match pool.ensure_slot(tenant, slot).await {
                        Ok(_) => report.replaced.push(container.name),
                        Err(error) => report.failed.push((container.name, error)),
                    }
                }
                Ok(report)
            }
        }
    }

    async fn publish_stage(&self, records: &[ChipRecord], stage: UpgradeStage) {
        for record in records {
            self.publish(ChipChange::of(record, ChipChangeKind::Upgrade { stage }))
                .await;
        }
    }

    async fn queue_chips(&self, records: &[ChipRecord]) {
        for record in records {
            self.trigger(&record.key, Trigger::Pool).await;
        }
    }
}
