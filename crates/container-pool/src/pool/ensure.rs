//! Finding or creating a tenant slot's container, then gating on readiness.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use tracing::{Instrument, info, info_span, warn};

use super::deadline::Deadline;
use super::{TenantPool, naming};
use crate::config::{HOST_NETWORK_BIND_VAR, HOST_NETWORK_PORT_VARS};
use crate::spec::{API_KEY_VAR, AUTO_START_DELAY_VAR, ENGINE_VAR, WORKER_ID_VAR};
use crate::{
    AddressingPolicy, ApiKey, ContainerId, ContainerInfo, ContainerSpec, ContainerState, EnvVar,
    Error, HostPorts, Incarnation, PoolEventKind, PortAllocationStore, TenantEndpoint, TenantId,
    VolumeMount, WAHA_PORT, WAHA_SESSIONS_DIR, labels,
};

/// How often `ensure` goes round (a name taken by a concurrent creator, a container re-created
/// for a rotated key) before giving up with the last error.
const ATTEMPTS: usize = 3;

/// How [`TenantPool::spec_for`] gets a [`HostPorts::Range`] or
/// [`AddressingPolicy::HostNetwork`] port.
enum HostPort<'a> {
    /// Allocate it in the store (the spec is about to be created), skipping ports a socket on
    /// this host already holds and ports this pool's containers hold by their labels.
    Allocate,
    /// Take it from this snapshot of the store's allocations, writing nothing.
    Preview(&'a BTreeMap<String, u16>),
}

/// Why an existing container of the slot cannot be used and must be re-created, if so: it
/// exited (or died), it belongs to another incarnation of the tenant (a tenant id reused after
/// a purge: it runs on the earlier tenant's volume), or it was created, never started, with
/// another API key.
fn unusable(c: &ContainerInfo, fingerprint: &str, incarnation: &Incarnation) -> Option<String> {
    if c.state.is_terminal() {
        Some(format!("it was {}", c.state))
    } else if c.label(labels::INCARNATION) != Some(incarnation.as_str()) {
        Some(format!(
            "it belongs to another incarnation of the tenant ({}), not {incarnation}",
            c.label(labels::INCARNATION).unwrap_or("none")
        ))
    } else if c.state == ContainerState::Created
        && c.label(labels::KEY_FINGERPRINT) != Some(fingerprint)
    {
        Some("it was created with another API key".to_owned())
    } else {
        None
    }
}

/// Where a slot's container came from in this `ensure`.
enum Found {
    /// It was there already; `key_matches` tells whether its key-fingerprint label is the
    /// current key's.
    Existing { key_matches: bool },
    /// This call created it.
    Created,
}

impl TenantPool {
    pub(super) async fn ensure_now(
        &self,
        tenant: &TenantId,
        slot: u32,
    ) -> Result<TenantEndpoint, Error> {
        let span =
            info_span!("ensure", tenant = %tenant, slot, backend = self.inner.runtime.backend());
        let deadline = Deadline::new(self.inner.config.startup_deadline);
        let name = naming::container_name(&self.inner.config.name_prefix, tenant, slot);
        let result = self
            .ensure_inner(tenant, slot, &name, &deadline)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(_) => "ready",
            Err(e) => {
                span.in_scope(|| warn!(container = %name, error = %e, "container not ready"));
                self.emit(
                    tenant,
                    slot,
                    &name,
                    PoolEventKind::Failed {
                        error: e.kind(),
                        reason: e.to_string(),
                    },
                );
                e.kind()
            }
        };
        metrics::counter!("container_pool_ensure_total", "outcome" => outcome).increment(1);
        metrics::histogram!("container_pool_ensure_seconds")
            .record(deadline.elapsed().as_secs_f64());
        result
    }

    async fn ensure_inner(
        &self,
        tenant: &TenantId,
        slot: u32,
        name: &str,
        deadline: &Deadline,
    ) -> Result<TenantEndpoint, Error> {
        let runtime = &self.inner.runtime;
        let (key, incarnation) = deadline
            .run(
                name,
                "reading the tenant's API key and incarnation",
                self.tenant_record(tenant),
            )
            .await?;
        let fingerprint = self.key_fingerprint(&key);
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let existing = deadline
                .run(name, "listing containers", self.find_slot(tenant, slot))
                .await?;
            if let Some(c) = &existing
                && let Some(reason) = unusable(c, &fingerprint, &incarnation)
            {
                info!(container = %c.name, %reason, "re-creating the container");
                deadline
                    .run(name, "removing the old container", runtime.remove(&c.id))
                    .await?;
                self.emit(tenant, slot, &c.name, PoolEventKind::Removed { reason });
                continue;
            }
            let (id, found) = match existing {
                Some(c) if c.state == ContainerState::Created => {
                    self.emit(tenant, slot, &c.name, PoolEventKind::Starting);
                    deadline
                        .run(name, "starting the container", runtime.start(&c.id))
                        .await?;
                    (c.id, Found::Existing { key_matches: true })
                }
                Some(c) => {
                    let key_matches =
                        c.label(labels::KEY_FINGERPRINT) == Some(fingerprint.as_str());
                    (c.id, Found::Existing { key_matches })
                }
                None => match self
                    .create_and_start(tenant, slot, name, &key, &incarnation, deadline)
                    .await
                {
                    Ok(id) => (id, Found::Created),
                    // Someone else (another pool replica) created it between our list and
                    // create: look again.
                    Err(e @ Error::Conflict { .. }) => {
                        last_error = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match self
                .await_ready(tenant, slot, &id, name, &key, deadline)
                .await
            {
                Ok(base_url) => {
                    self.touch(&id);
                    return Ok(TenantEndpoint {
                        tenant: tenant.clone(),
                        slot,
                        container: id,
                        container_name: name.to_owned(),
                        base_url,
                        api_key: key,
                    });
                }
                // Started with a key that has been rotated since: re-create it (same volume).
                Err(e @ Error::Unauthorized { .. })
                    if matches!(found, Found::Existing { key_matches: false }) =>
                {
                    info!(container = %name, "the container refuses the rotated API key; re-creating it");
                    deadline
                        .run(name, "removing the old container", runtime.remove(&id))
                        .await?;
                    self.emit(
                        tenant,
                        slot,
                        name,
                        PoolEventKind::Removed {
                            reason: "API key rotated".to_owned(),
                        },
                    );
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Conflict {
            name: name.to_owned(),
        }))
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

    /// The tenant's container API key and incarnation, read together.
    pub(super) async fn tenant_record(
        &self,
        tenant: &TenantId,
    ) -> Result<(ApiKey, Incarnation), Error> {
        let keys = &self.inner.keys;
        tokio::try_join!(keys.container_api_key(tenant), keys.incarnation(tenant))
    }

    /// Creates and starts the slot's container; [`Error::Conflict`] when the name is taken,
    /// [`Error::VolumeConflict`] when its volume exists but is not this tenant incarnation's.
    async fn create_and_start(
        &self,
        tenant: &TenantId,
        slot: u32,
        name: &str,
        key: &ApiKey,
        incarnation: &Incarnation,
        deadline: &Deadline,
    ) -> Result<ContainerId, Error> {
        let runtime = &self.inner.runtime;
        let spec = deadline
            .run(
                name,
                "building the spec",
                self.build_spec(tenant, slot, key, incarnation),
            )
            .await?;
        self.emit(tenant, slot, name, PoolEventKind::Creating);
        info!(container = %name, image = %spec.image, spec_hash = %spec.spec_hash(), "creating container");
        let id = deadline
            .run(name, "creating the container", runtime.create(&spec))
            .await?;
        self.emit(tenant, slot, name, PoolEventKind::Starting);
        deadline
            .run(name, "starting the container", runtime.start(&id))
            .await?;
        Ok(id)
    }

    /// The spec the pool creates for a tenant slot now (image, env, limits, labels, volume,
    /// addressing, restart policy). With [`HostPorts::Range`] or
    /// [`AddressingPolicy::HostNetwork`] this allocates (and persists) the container's host
    /// port: never one a socket on this host holds, nor one that a container of this pool
    /// holds by its labels (recorded in the store first if the store lost it).
    pub(crate) async fn build_spec(
        &self,
        tenant: &TenantId,
        slot: u32,
        key: &ApiKey,
        incarnation: &Incarnation,
    ) -> Result<ContainerSpec, Error> {
        self.spec_for(tenant, slot, Some((key, incarnation)), HostPort::Allocate)
            .await
    }

    /// The hash of the spec [`build_spec`](Self::build_spec) would make now, with no side
    /// effect: it needs no key or incarnation (the hash leaves out secret values, the
    /// key-fingerprint label and the incarnation label) and allocates no port. A [`HostPorts::Range`] or host-network port is the one
    /// `ports` (the store's allocations) gives the container, or the one the store would
    /// allocate next (the trait's rule: the lowest free port of the range; whether a socket
    /// holds it is not looked at, so the running container's own port counts as its own).
    pub(crate) async fn wanted_spec_hash(
        &self,
        tenant: &TenantId,
        slot: u32,
        ports: &BTreeMap<String, u16>,
    ) -> Result<String, Error> {
        Ok(self
            .spec_for(tenant, slot, None, HostPort::Preview(ports))
            .await?
            .spec_hash())
    }

    /// The spec for a tenant slot; `record` (the tenant's key and incarnation) is `None` for
    /// the spec-hash preview, which leaves both out.
    async fn spec_for(
        &self,
        tenant: &TenantId,
        slot: u32,
        record: Option<(&ApiKey, &Incarnation)>,
        host_port: HostPort<'_>,
    ) -> Result<ContainerSpec, Error> {
        let key = record.map(|(key, _)| key);
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
                let port = self
                    .host_port(&name, range, store.as_ref(), *bind, host_port)
                    .await?;
                crate::Addressing::HostPort { bind: *bind, port }
            }
            // The container binds the port itself on the host.
            AddressingPolicy::HostNetwork { bind, range, store } => {
                let port = self
                    .host_port(&name, range, store.as_ref(), *bind, host_port)
                    .await?;
                crate::Addressing::HostNetwork { bind: *bind, port }
            }
        };
        // On the host's network the server listens on its allocated port, told through the
        // environment; elsewhere on WAHA's own port inside the container.
        let (container_port, listen_env): (u16, Vec<EnvVar>) = match &addressing {
            crate::Addressing::HostNetwork { bind, port } => (
                *port,
                HOST_NETWORK_PORT_VARS
                    .iter()
                    .map(|var| EnvVar::plain(*var, port.to_string()))
                    .chain([EnvVar::plain(HOST_NETWORK_BIND_VAR, bind.to_string())])
                    .collect(),
            ),
            _ => (WAHA_PORT, Vec::new()),
        };
        // `validate` checked that base + spread fits; the share is at most spread.
        cfg.auto_start.max_delay_secs()?;
        let share = naming::stable_share(&name, cfg.auto_start.spread.as_secs().saturating_add(1));
        let stagger = cfg.auto_start.base.as_secs().saturating_add(share);
        let mut env = vec![
            match key {
                Some(key) => EnvVar::api_key(API_KEY_VAR, key.clone()),
                None => EnvVar::secret(API_KEY_VAR, ""),
            },
            EnvVar::plain(ENGINE_VAR, cfg.engine.as_str()),
            EnvVar::plain(WORKER_ID_VAR, &name),
            EnvVar::plain(AUTO_START_DELAY_VAR, stagger.to_string()),
        ];
        env.extend(listen_env);
        env.extend(cfg.extra_env.iter().cloned());
        let mut spec_labels = BTreeMap::from([
            (labels::MANAGED_BY.to_owned(), cfg.managed_by.clone()),
            (labels::TENANT.to_owned(), tenant.as_str().to_owned()),
            (labels::SLOT.to_owned(), slot.to_string()),
            (labels::ADDRESSING.to_owned(), addressing.label_value()),
            (labels::PORT.to_owned(), container_port.to_string()),
        ]);
        // Not in the spec hash (like the key fingerprint): the preview leaves it out.
        if let Some((_, incarnation)) = record {
            spec_labels.insert(
                labels::INCARNATION.to_owned(),
                incarnation.as_str().to_owned(),
            );
        }
        let mut spec = ContainerSpec {
            volume: cfg.volumes.then(|| VolumeMount {
                name: naming::volume_name(&name),
                target: WAHA_SESSIONS_DIR.to_owned(),
            }),
            name,
            image: cfg.image.clone(),
            env,
            labels: BTreeMap::new(),
            resources: cfg
                .sizing
                .try_resources(cfg.engine, cfg.sessions_per_container)?,
            addressing,
            container_port,
            restart: cfg.restart,
        };
        spec.labels = spec_labels.clone();
        spec_labels.insert(labels::SPEC_HASH.to_owned(), spec.spec_hash());
        if let Some(key) = key {
            spec_labels.insert(
                labels::KEY_FINGERPRINT.to_owned(),
                self.key_fingerprint(key),
            );
        }
        spec.labels = spec_labels;
        Ok(spec)
    }

    /// The host port of container `name` from `range`: allocated in `store` (the spec is about
    /// to be created), or previewed from a snapshot of its allocations.
    ///
    /// Allocating skips every port a socket on this host holds on `bind` (a published port or
    /// a host-network server could not bind it) and, first, records in the store the ports
    /// this pool's existing containers hold by their labels, so a store that lost them (an
    /// in-memory store after a restart, a replaced file) never hands one to another container.
    async fn host_port(
        &self,
        name: &str,
        range: &RangeInclusive<u16>,
        store: &dyn PortAllocationStore,
        bind: IpAddr,
        host_port: HostPort<'_>,
    ) -> Result<u16, Error> {
        match host_port {
            HostPort::Allocate => {
                self.reserve_held_ports(range, store).await?;
                store.allocate_unbound(name, range.clone(), bind).await
            }
            HostPort::Preview(ports) => crate::ports::pick(ports, name, range, |_| false),
        }
    }

    /// Records in `store` the port of every container of this pool whose addressing label
    /// names one in `range` and that the store does not have under the container's name.
    async fn reserve_held_ports(
        &self,
        range: &RangeInclusive<u16>,
        store: &dyn PortAllocationStore,
    ) -> Result<(), Error> {
        let allocations = store.allocations().await?;
        for c in self.inner.runtime.list(&self.managed_selector()).await? {
            let Some(port) = c
                .label(labels::ADDRESSING)
                .and_then(crate::Addressing::from_label_value)
                .and_then(|addressing| addressing.host_port())
            else {
                continue;
            };
            if !range.contains(&port) || allocations.get(&c.name) == Some(&port) {
                continue;
            }
            if !store.reserve(&c.name, port).await? {
                warn!(
                    container = %c.name,
                    port,
                    "a container holds a host port that the port store gives another owner"
                );
            }
        }
        Ok(())
    }

    pub(super) fn touch(&self, id: &ContainerId) {
        let mut idle = self
            .inner
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.insert(id.clone(), self.inner.config.clock.now());
    }
}
