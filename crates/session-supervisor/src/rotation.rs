//! Secret rotation (`docs/ingest.md`, "Secret rotation"): a tenant's webhook HMAC key moved
//! to every session with the previous key accepted meanwhile, and its container API key
//! rolled out by replacing the tenant's containers.
//!
//! The webhook key needs no step of its own: every reconcile compares WAHA's stored session
//! config with the one the supervisor would send (`config_equivalent`), and a session signed
//! with another key is not equivalent, so its next reconcile sends the new config with the
//! budgeted `EnsureSession` (a `PUT`, which restarts a running session). The tenant and
//! process restart budgets ([`RestartBudgets`](crate::RestartBudgets)) therefore bound how
//! many sessions restart at a time. [`Supervisor::rotate_webhook_key`] starts the rotation,
//! queues the tenant's chips, waits for every session to carry the new key, and only then
//! forgets the previous key.

use std::collections::HashSet;
use std::time::Duration;

use container_pool::{ContainerId, ContainerState};
use tenant_isolation::{ChipId, HmacKey, TenantId, TenantSecrets};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use waha_client::{SessionStatus, WahaError};

use crate::chip::ChipRecord;
use crate::error::SupervisorError;
use crate::store::Trigger;
use crate::supervisor::Supervisor;
use crate::upgrade::{Replacement, TenantUpgrade, UpgradeOptions};

/// Compare-and-set rounds on the tenant's secrets before giving up (another writer won each).
const CAS_ROUNDS: u32 = 5;

/// How [`Supervisor::rotate_webhook_key`] proceeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationOptions {
    /// How long to wait for every session to carry the new key (5 min). When it runs out, the
    /// rotation stays in progress (the previous key is still accepted) and calling again
    /// continues it.
    pub wait: Duration,
    /// How often the sessions are checked while waiting (the supervisor's `tick_interval`
    /// when `None`).
    pub poll: Option<Duration>,
}

impl Default for RotationOptions {
    fn default() -> Self {
        RotationOptions {
            wait: Duration::from_secs(5 * 60),
            poll: None,
        }
    }
}

/// What [`Supervisor::rotate_webhook_key`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookKeyRotation {
    /// Whether this call generated the new key (`false`: it continued a rotation in progress).
    pub started: bool,
    /// Chips whose session carries the new key (or that have no session that could send a
    /// webhook: no container, no session, or a stopped session, which gets the new config
    /// before it starts again).
    pub moved: Vec<ChipId>,
    /// Chips whose session still signs with the previous key when the wait ran out.
    pub pending: Vec<ChipId>,
    /// Whether the rotation finished: every session carries the new key and the previous key
    /// is forgotten (webhooks signed with it are refused from now on).
    pub finished: bool,
}

/// Whether one chip's session carries `key`.
enum KeyState {
    Moved,
    Pending,
}

impl Supervisor {
    /// Rotates the tenant's webhook HMAC key.
    ///
    /// A new key is generated and stored with the current one kept as the previous key, which
    /// the ingest keeps accepting. Every chip of the tenant is queued; each reconcile sends its
    /// session the config signed with the new key, within the restart budgets (a `PUT`
    /// restarts a running session, so the budgets bound the restarts at a time). Once every
    /// session carries the new key, the previous key is forgotten. When `options.wait` runs
    /// out first, the rotation stays in progress and the report names the chips still
    /// pending; calling again continues it (it never starts a second rotation over an
    /// unfinished one, since the key before the previous one may still be on a session).
    ///
    /// Any replica may call it: it writes the directory and reads WAHA; the owner's
    /// reconciles push the config.
    ///
    /// # Errors
    /// [`SupervisorError::Tenant`] when the tenant is unknown or deleted, or the directory
    /// fails; [`SupervisorError::Store`] when the chips cannot be listed. A failure leaves the
    /// rotation where it was: calling again continues it.
    pub async fn rotate_webhook_key(
        &self,
        tenant: &TenantId,
        options: RotationOptions,
    ) -> Result<WebhookKeyRotation, SupervisorError> {
        let directory = &self.inner.effects.directory;
        let mut report = WebhookKeyRotation::default();
        // Begin, unless a rotation is in progress: a compare-and-set, so two callers racing
        // start one rotation (the loser re-reads and continues the winner's).
        let mut attempts = 0;
        let secrets = loop {
            let current = directory
                .get(tenant)
                .await
                .map_err(SupervisorError::Tenant)?
                .secrets;
            if current.webhook_key_rotating() {
                break current;
            }
            let next = HmacKey::generate()
                .map_err(|e| SupervisorError::Tenant(tenant_isolation::Error::Secret(e)))?;
            let rotating = current
                .begin_webhook_rotation(next)
                .map_err(SupervisorError::Tenant)?;
            match directory.replace_secrets(tenant, &current, rotating).await {
                Ok(stored) => {
                    report.started = true;
                    info!(tenant = %tenant, "webhook key rotation started");
                    metrics::counter!("supervisor_webhook_key_rotations_total", "stage" => "started")
                        .increment(1);
                    break stored.secrets;
                }
                Err(tenant_isolation::Error::SecretsChanged { .. }) if attempts < CAS_ROUNDS => {
                    attempts += 1;
                }
                Err(error) => return Err(SupervisorError::Tenant(error)),
            }
        };
        let poll = options
            .poll
            .unwrap_or(self.inner.effects.config.tick_interval)
            .max(Duration::from_millis(10));
        let deadline = Instant::now() + options.wait;
        let mut queued = false;
        loop {
            let chips = self.chips_of(tenant).await?;
            // Containers that run now: a chip whose container does not run (reaped, stopped,
            // removed, never created) sends no webhook, and its session gets the current
            // config before it starts again.
            let running: HashSet<ContainerId> = self
                .inner
                .effects
                .pool
                .containers(tenant)
                .await
                .map_err(SupervisorError::Pool)?
                .into_iter()
                .filter(|container| container.state == ContainerState::Running)
                .map(|container| container.id)
                .collect();
            report.moved.clear();
            report.pending.clear();
            for record in &chips {
                match self.key_state(record, &secrets, &running).await {
                    KeyState::Moved => report.moved.push(record.key.chip.clone()),
                    KeyState::Pending => report.pending.push(record.key.chip.clone()),
                }
            }
            if report.pending.is_empty() {
                break;
            }
            if !queued {
                // Once: a queued chip is reconciled until its config matches, and the
                // periodic resync queues it again if this process stops.
                for record in &chips {
                    if report.pending.contains(&record.key.chip) {
                        self.trigger(&record.key, Trigger::Api).await;
                    }
                }
                queued = true;
            }
            if Instant::now() >= deadline {
                warn!(
                    tenant = %tenant,
                    pending = report.pending.len(),
                    "webhook key rotation still in progress; the previous key stays accepted"
                );
                return Ok(report);
            }
            tokio::time::sleep(poll).await;
        }
        // Every session has the new key: forget the previous one, with a compare-and-set on
        // the secrets just read, so only the rotation that was checked is finished.
        let mut attempts = 0;
        loop {
            let now = directory
                .get(tenant)
                .await
                .map_err(SupervisorError::Tenant)?
                .secrets;
            if now.webhook_hmac_key != secrets.webhook_hmac_key {
                // Another rotation replaced the key meanwhile: this one is not what finished.
                warn!(tenant = %tenant, "the webhook key changed during the rotation; call again");
                return Ok(report);
            }
            if !now.webhook_key_rotating() {
                break;
            }
            match directory
                .replace_secrets(tenant, &now, now.finish_webhook_rotation())
                .await
            {
                Ok(_) => {
                    info!(tenant = %tenant, chips = report.moved.len(), "webhook key rotation finished");
                    metrics::counter!("supervisor_webhook_key_rotations_total", "stage" => "finished")
                        .increment(1);
                    break;
                }
                Err(tenant_isolation::Error::SecretsChanged { .. }) if attempts < CAS_ROUNDS => {
                    attempts += 1;
                }
                Err(error) => return Err(SupervisorError::Tenant(error)),
            }
        }
        report.finished = true;
        Ok(report)
    }

    /// Whether the chip's session carries the tenant's current webhook key, read from WAHA
    /// (the session config comes back with its key). A session that cannot send a webhook
    /// (no running container, no session, a stopped session) counts as moved; an unreadable
    /// one as pending.
    async fn key_state(
        &self,
        record: &ChipRecord,
        secrets: &TenantSecrets,
        running: &HashSet<ContainerId>,
    ) -> KeyState {
        let Some(container) = &record.observed.container else {
            return KeyState::Moved;
        };
        if !running.contains(&container.id) {
            return KeyState::Moved;
        }
        let effects = &self.inner.effects;
        let client = match effects.client_at(&container.base_url, secrets) {
            Ok(client) => client,
            Err(error) => {
                debug!(chip = %record.key.chip, %error, "no client for the key check");
                return KeyState::Pending;
            }
        };
        let name = record.key.session_name();
        match client.get_session(name.as_str()).await {
            Err(WahaError::NotFound { .. }) => KeyState::Moved,
            Err(error) => {
                debug!(chip = %record.key.chip, kind = error.kind(), "the key check could not read the session");
                KeyState::Pending
            }
            Ok(info) if info.status == SessionStatus::Stopped => KeyState::Moved,
            Ok(info) => {
                let signed_with_current = info.config.as_ref().is_some_and(|config| {
                    !config.webhooks.is_empty()
                        && config.webhooks.iter().all(|webhook| {
                            webhook
                                .hmac
                                .as_ref()
                                .and_then(|hmac| hmac.key.as_ref())
                                .is_some_and(|key| *key == secrets.webhook_hmac_key)
                        })
                });
                if signed_with_current {
                    KeyState::Moved
                } else {
                    KeyState::Pending
                }
            }
        }
    }

    /// Rotates the tenant's container API key. WAHA holds one key, read from its environment
    /// at start, so there is no overlap to offer: the new key is stored, then each running
    /// container of the tenant is ensured by the pool, which finds it refusing the new key and
    /// re-creates it on its volume (`docs/container-pool.md`, "Key rotation"); the chips are
    /// reconciled at once, and those that were `Working` must be `Working` again on the new
    /// container within `options.wait_back`, as in [`Supervisor::upgrade_fleet`] (with the
    /// same [`UpgradeStage`](crate::UpgradeStage) changes). A stopped container is repaired
    /// when it is next ensured. `canary` and `max_concurrent_tenants` do not apply to one
    /// tenant.
    ///
    /// # Errors
    /// [`SupervisorError::NotOwned`] unless this process owns the tenant (only the owner
    /// touches its containers; nothing was changed); [`SupervisorError::Tenant`] when the key
    /// cannot be stored. A failed replacement is in the returned [`TenantUpgrade`]; calling
    /// [`Supervisor::upgrade_fleet`] or this again finishes it.
    pub async fn rotate_api_key(
        &self,
        tenant: &TenantId,
        options: &UpgradeOptions,
    ) -> Result<TenantUpgrade, SupervisorError> {
        let Some(guard) = self.inner.owned.guard(tenant) else {
            return Err(SupervisorError::NotOwned {
                tenant: tenant.clone(),
            });
        };
        let directory = &self.inner.effects.directory;
        let key = tenant_isolation::ApiKey::generate()
            .map_err(|e| SupervisorError::Tenant(tenant_isolation::Error::Secret(e)))?;
        // A compare-and-set: a webhook key rotation running meanwhile keeps its keys.
        let mut attempts = 0;
        loop {
            let current = directory
                .get(tenant)
                .await
                .map_err(SupervisorError::Tenant)?
                .secrets;
            let next = TenantSecrets {
                container_api_key: key.clone(),
                ..current.clone()
            };
            match directory.replace_secrets(tenant, &current, next).await {
                Ok(_) => break,
                Err(tenant_isolation::Error::SecretsChanged { .. }) if attempts < CAS_ROUNDS => {
                    attempts += 1;
                }
                Err(error) => return Err(SupervisorError::Tenant(error)),
            }
        }
        info!(tenant = %tenant, "container API key rotated; replacing the containers");
        Ok(self
            .upgrade_tenant(&guard, options, Replacement::ApiKey)
            .await)
    }
}
