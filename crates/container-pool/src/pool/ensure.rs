//! Finding or creating a tenant slot's container, then gating on readiness.

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{Instrument, info, info_span, warn};

use super::{TenantPool, naming};
use crate::{
    AddressingPolicy, ApiKey, ContainerId, ContainerInfo, ContainerSpec, ContainerState, EnvVar,
    Error, HostPorts, PoolEventKind, TenantEndpoint, TenantId, VolumeMount, WAHA_PORT,
    WAHA_SESSIONS_DIR, labels,
};

impl TenantPool {
    pub(super) async fn ensure_now(
        &self,
        tenant: &TenantId,
        slot: u32,
    ) -> Result<TenantEndpoint, Error> {
        let span =
            info_span!("ensure", tenant = %tenant, slot, backend = self.inner.runtime.backend());
        let started = Instant::now();
        let result = self.ensure_inner(tenant, slot).instrument(span).await;
        let outcome = match &result {
            Ok(_) => "ready",
            Err(e) => e.kind(),
        };
        metrics::counter!("container_pool_ensure_total", "outcome" => outcome).increment(1);
        metrics::histogram!("container_pool_ensure_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn ensure_inner(&self, tenant: &TenantId, slot: u32) -> Result<TenantEndpoint, Error> {
        let runtime = &self.inner.runtime;
        let name = naming::container_name(&self.inner.config.name_prefix, tenant, slot);
        let key = self.inner.keys.container_api_key(tenant).await?;
        let existing = self.find_slot(tenant, slot).await?;
        let (id, name) = match existing {
            Some(c) if c.state.is_terminal() => {
                info!(container = %c.name, state = %c.state, "container is not running; re-creating it");
                runtime.remove(&c.id).await?;
                self.emit(
                    tenant,
                    slot,
                    &c.name,
                    PoolEventKind::Removed {
                        reason: format!("it was {}", c.state),
                    },
                );
                self.create_and_start(tenant, slot, &name, &key).await?
            }
            Some(c) if c.state == ContainerState::Created => {
                self.emit(tenant, slot, &c.name, PoolEventKind::Starting);
                runtime.start(&c.id).await?;
                (c.id, c.name)
            }
            Some(c) => (c.id, c.name),
            None => self.create_and_start(tenant, slot, &name, &key).await?,
        };
        self.touch(&id);
        match self.await_ready(tenant, slot, &id, &name, &key).await {
            Ok(base_url) => Ok(TenantEndpoint {
                tenant: tenant.clone(),
                slot,
                container: id,
                container_name: name,
                base_url,
                api_key: key,
            }),
            Err(e) => {
                warn!(container = %name, error = %e, "container not ready");
                self.emit(
                    tenant,
                    slot,
                    &name,
                    PoolEventKind::Failed {
                        error: e.kind(),
                        reason: e.to_string(),
                    },
                );
                Err(e)
            }
        }
    }

    pub(super) async fn find_slot(
        &self,
        tenant: &TenantId,
        slot: u32,
    ) -> Result<Option<ContainerInfo>, Error> {
        let selector = self
            .tenant_selector(tenant)
            .and(labels::SLOT, slot.to_string());
        let mut found = self.inner.runtime.list(&selector).await?;
        // Names are unique per host, so there is at most one; prefer a live one if a runtime
        // ever reports more.
        found.sort_by_key(|c| c.state.is_terminal());
        Ok(found.into_iter().next())
    }

    async fn create_and_start(
        &self,
        tenant: &TenantId,
        slot: u32,
        name: &str,
        key: &ApiKey,
    ) -> Result<(ContainerId, String), Error> {
        let runtime = &self.inner.runtime;
        let spec = self.build_spec(tenant, slot, key).await?;
        self.emit(tenant, slot, name, PoolEventKind::Creating);
        info!(container = %name, image = %spec.image, spec_hash = %spec.spec_hash(), "creating container");
        let id = match runtime.create(&spec).await {
            Ok(id) => id,
            Err(Error::Conflict { name: taken }) => {
                // Someone else (another pool replica) created it between our list and create.
                match self.find_slot(tenant, slot).await? {
                    Some(c) if !c.state.is_terminal() => return Ok((c.id, c.name)),
                    _ => return Err(Error::Conflict { name: taken }),
                }
            }
            Err(e) => {
                self.emit(
                    tenant,
                    slot,
                    name,
                    PoolEventKind::Failed {
                        error: e.kind(),
                        reason: e.to_string(),
                    },
                );
                return Err(e);
            }
        };
        self.emit(tenant, slot, name, PoolEventKind::Starting);
        if let Err(e) = runtime.start(&id).await {
            self.emit(
                tenant,
                slot,
                name,
                PoolEventKind::Failed {
                    error: e.kind(),
                    reason: e.to_string(),
                },
            );
            return Err(e);
        }
        Ok((id, name.to_owned()))
    }

    /// The spec the pool creates for a tenant slot now (image, env, limits, labels, volume,
    /// addressing, restart policy).
    pub(crate) async fn build_spec(
        &self,
        tenant: &TenantId,
        slot: u32,
        key: &ApiKey,
    ) -> Result<ContainerSpec, Error> {
        let cfg = &self.inner.config;
        let name = naming::container_name(&cfg.name_prefix, tenant, slot);
        let addressing = match &cfg.addressing {
            AddressingPolicy::NetworkName { network } => crate::Addressing::NetworkName {
                network: network.clone(),
            },
            AddressingPolicy::NetworkIp { network } => crate::Addressing::NetworkIp {
                network: network.clone(),
            },
            AddressingPolicy::HostPort {
                bind,
                ports: HostPorts::Ephemeral,
            } => crate::Addressing::HostPort {
                bind: *bind,
                port: 0,
            },
            AddressingPolicy::HostPort {
                bind,
                ports: HostPorts::Range { range, store },
            } => {
                let port = store.allocate(&name, range.clone()).await?;
                crate::Addressing::HostPort { bind: *bind, port }
            }
        };
        let stagger = cfg.auto_start.base.as_secs()
            + naming::stable_share(&name, cfg.auto_start.spread.as_secs() + 1);
        let mut env = vec![
            EnvVar::secret("WAHA_API_KEY", key.expose_secret()),
            EnvVar::plain("WHATSAPP_DEFAULT_ENGINE", cfg.engine.as_str()),
            EnvVar::plain("WAHA_WORKER_ID", &name),
            EnvVar::plain("WAHA_AUTO_START_DELAY_SECONDS", stagger.to_string()),
        ];
        env.extend(cfg.extra_env.iter().map(|(k, v)| EnvVar::plain(k, v)));
        let mut spec_labels = BTreeMap::from([
            (labels::MANAGED_BY.to_owned(), cfg.managed_by.clone()),
            (labels::TENANT.to_owned(), tenant.as_str().to_owned()),
            (labels::SLOT.to_owned(), slot.to_string()),
            (labels::ADDRESSING.to_owned(), addressing.label_value()),
            (labels::PORT.to_owned(), WAHA_PORT.to_string()),
        ]);
        let mut spec = ContainerSpec {
            volume: cfg.volumes.then(|| VolumeMount {
                name: naming::volume_name(&name),
                target: WAHA_SESSIONS_DIR.to_owned(),
            }),
            name,
            image: cfg.image.clone(),
            env,
            labels: BTreeMap::new(),
            resources: cfg.sizing.resources(cfg.engine, cfg.sessions_per_container),
            addressing,
            container_port: WAHA_PORT,
            restart: cfg.restart,
        };
        spec.labels = spec_labels.clone();
        spec_labels.insert(labels::SPEC_HASH.to_owned(), spec.spec_hash());
        spec.labels = spec_labels;
        Ok(spec)
    }

    pub(super) fn touch(&self, id: &ContainerId) {
        let mut idle = self
            .inner
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.insert(id.clone(), Instant::now());
    }
}
