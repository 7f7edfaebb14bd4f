//! [`TenantPool`]: one ready WAHA container per tenant (and slot).

mod ensure;
mod gate;
mod lifecycle;
mod naming;
mod rollout;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;

pub use lifecycle::{ReapReport, SlotStats, SweepReport};
pub use rollout::{RolloutOptions, RolloutReport};

use crate::{
    ContainerId, ContainerRuntime, Error, LabelSelector, Placement, PoolConfig, PoolEvent,
    PoolEventKind, ReadinessProbe, TenantEndpoint, TenantId, TenantKeys, labels,
};

/// Keeps one ready WAHA container per tenant slot.
///
/// - [`ensure`](Self::ensure) returns the tenant's endpoint (base URL and API key), finding the
///   container by its labels or creating it, and waiting until it passes every readiness check.
///   It is idempotent and single-flight per tenant slot: any number of concurrent calls make
///   one container and share one readiness wait.
/// - Lifecycle is explicit and async: [`remove_tenant`](Self::remove_tenant),
///   [`reap_idle`](Self::reap_idle), [`sweep_orphans`](Self::sweep_orphans),
///   [`rolling_replace`](Self::rolling_replace). Nothing happens in `Drop`.
///
/// Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct TenantPool {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn ContainerRuntime>,
    keys: Arc<dyn TenantKeys>,
    probe: Arc<dyn ReadinessProbe>,
    config: PoolConfig,
    placement: Placement,
    events: broadcast::Sender<PoolEvent>,
    flights: Mutex<HashMap<(TenantId, u32), Arc<Flight>>>,
    idle_since: Mutex<HashMap<ContainerId, Instant>>,
}

/// The single-flight cell of one tenant slot: callers queue on `state`; whoever finds that
/// `completed` moved while it waited takes the result the finished caller left.
#[derive(Default)]
struct Flight {
    completed: AtomicU64,
    state: tokio::sync::Mutex<Option<Result<TenantEndpoint, Error>>>,
}

impl std::fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPool")
            .field("runtime", &self.inner.runtime.backend())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl TenantPool {
    /// A pool on `runtime`, taking API keys from `keys` and probing readiness with `probe`.
    /// Does no I/O; fails only on an invalid configuration.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        keys: Arc<dyn TenantKeys>,
        probe: Arc<dyn ReadinessProbe>,
        config: PoolConfig,
    ) -> Result<Self, Error> {
        let placement = config.validate()?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                keys,
                probe,
                config,
                placement,
                events,
                flights: Mutex::new(HashMap::new()),
                idle_since: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The placement rule (which slot a new chip goes to).
    pub fn placement(&self) -> Placement {
        self.inner.placement
    }

    /// The runtime the pool drives.
    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.inner.runtime
    }

    /// Progress events from now on (creating, starting, waiting, ready, failed, removed).
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.inner.events.subscribe()
    }

    /// The tenant's first container (slot 0), ready. See [`ensure_slot`](Self::ensure_slot).
    pub async fn ensure(&self, tenant: &TenantId) -> Result<TenantEndpoint, Error> {
        self.ensure_slot(tenant, 0).await
    }

    /// The tenant's container for `slot`, found or created, and ready.
    ///
    /// Concurrent calls for one tenant slot share one attempt: the first caller does the work,
    /// the others wait and get its result (success or error). A container that exited is
    /// removed and re-created on the same volume. A container whose spec drifted is used as it
    /// is: replacing it is [`rolling_replace`](Self::rolling_replace)'s job.
    pub async fn ensure_slot(&self, tenant: &TenantId, slot: u32) -> Result<TenantEndpoint, Error> {
        let flight = self.flight(tenant, slot);
        let seen = flight.completed.load(Ordering::Acquire);
        let mut last = flight.state.lock().await;
        if flight.completed.load(Ordering::Acquire) != seen
            && let Some(result) = last.as_ref()
        {
            return result.clone();
        }
        let result = self.ensure_now(tenant, slot).await;
        *last = Some(result.clone());
        flight.completed.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Every container this pool manages for `tenant`, in slot order.
    pub async fn containers(&self, tenant: &TenantId) -> Result<Vec<crate::ContainerInfo>, Error> {
        let mut all = self
            .inner
            .runtime
            .list(&self.tenant_selector(tenant))
            .await?;
        all.sort_by_key(|c| naming::slot_of(c).unwrap_or(u32::MAX));
        Ok(all)
    }

    fn flight(&self, tenant: &TenantId, slot: u32) -> Arc<Flight> {
        let mut flights = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flights.entry((tenant.clone(), slot)).or_default().clone()
    }

    fn managed_selector(&self) -> LabelSelector {
        LabelSelector::new(labels::MANAGED_BY, &self.inner.config.managed_by)
    }

    fn tenant_selector(&self, tenant: &TenantId) -> LabelSelector {
        self.managed_selector().and(labels::TENANT, tenant.as_str())
    }

    fn emit(&self, tenant: &TenantId, slot: u32, container: &str, kind: PoolEventKind) {
        // Nobody listening is fine.
        let _ = self.inner.events.send(PoolEvent {
            tenant: tenant.clone(),
            slot,
            container: container.to_owned(),
            kind,
        });
    }
}
