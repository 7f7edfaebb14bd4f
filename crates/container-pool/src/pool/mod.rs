//! [`TenantPool`]: one ready WAHA container per tenant (and slot).

mod deadline;
mod ensure;
mod gate;
mod lifecycle;
mod naming;
mod rollout;
mod scrub;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

pub use lifecycle::{ReapReport, SlotStats, SweepReport};
pub use rollout::{Drift, RolloutOptions, RolloutReport};

use crate::{
    ContainerId, ContainerRuntime, Error, KeyFingerprintSecret, LabelSelector, Placement,
    PoolConfig, PoolEvent, PoolEventKind, ReadinessProbe, TenantEndpoint, TenantId, TenantKeys,
    labels,
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
    idle_since: Mutex<HashMap<ContainerId, SystemTime>>,
    fingerprints: KeyFingerprintSecret,
}

/// The result an `ensure` leaves for callers that queued behind it.
type CachedResult = Option<Result<TenantEndpoint, Error>>;

/// The single-flight cell of one tenant slot: callers queue on `state`; whoever finds that
/// `completed` moved while it waited takes the result the finished caller left, if a lifecycle
/// step has not cleared it since (removing, stopping or replacing the container makes it stale).
#[derive(Default)]
struct Flight {
    completed: AtomicU64,
    state: Arc<tokio::sync::Mutex<CachedResult>>,
}

/// A lifecycle step's hold on one slot: `ensure` calls for the slot wait until it is dropped,
/// and then do their own work instead of taking a result cached before the step.
pub(super) type SlotHold = tokio::sync::OwnedMutexGuard<CachedResult>;

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
        let fingerprints = match &config.key_fingerprint_secret {
            Some(secret) => secret.clone(),
            None => KeyFingerprintSecret::random()?,
        };
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
                fingerprints,
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
    /// the others wait and get its result (success or error); a later call starts afresh. A
    /// container that exited is removed and re-created on the same volume, and so is one
    /// started with a rotated API key (its key-fingerprint label differs and it refuses the
    /// current key). A container whose spec drifted is used as it is: replacing it is
    /// [`rolling_replace`](Self::rolling_replace)'s job.
    ///
    /// Nothing of another incarnation of the tenant is used (a tenant id reused after a purge):
    /// such a container is removed, and a volume labelled with another incarnation (or another
    /// pool) is never mounted: [`Error::VolumeConflict`], with nothing created and the volume
    /// left as it is. A server that answers at the container's address but reports another
    /// worker id than the container's name is [`Error::WorkerMismatch`].
    ///
    /// Everything (key lookup, listing, creating, starting, readiness) runs under one
    /// [`startup_deadline`](crate::PoolConfig::startup_deadline). Cancelling the call (dropping
    /// the future) is safe: the next call carries on from whatever state the container is in.
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
        self.flights()
            .entry((tenant.clone(), slot))
            .or_default()
            .clone()
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, u32), Arc<Flight>>> {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the slot's single-flight lock and clears the cached result, so that callers
    /// queued behind the lifecycle step do not take an endpoint the step is about to make stale.
    pub(super) async fn hold_slot(&self, tenant: &TenantId, slot: u32) -> SlotHold {
        let state = self.flight(tenant, slot).state.clone();
        let mut hold = state.lock_owned().await;
        *hold = None;
        hold
    }

    /// Forgets the tenant's single-flight cells nobody uses (after its containers were removed).
    pub(super) fn prune_flights(&self, tenant: &TenantId) {
        self.flights().retain(|(t, _), flight| {
            t != tenant || Arc::strong_count(flight) > 1 || Arc::strong_count(&flight.state) > 1
        });
    }

    /// The key-fingerprint label value of `key`.
    pub(super) fn key_fingerprint(&self, key: &crate::ApiKey) -> String {
        self.inner.fingerprints.fingerprint(key)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::{
        ApiKey, ImageRef, InMemoryRuntime, LaunchSpec, LaunchedServer, ProcessLauncher,
        ServerHandle, TenantExists, WahaHealthProbe,
    };

    struct Sims;
    struct Running(waha_sim::RunningSimulator);

    #[async_trait]
    impl ServerHandle for Running {
        async fn stop(self: Box<Self>) {
            self.0.shutdown().await
        }
    }

    #[async_trait]
    impl ProcessLauncher for Sims {
        async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchedServer, Error> {
            let key = spec.env_value("WAHA_API_KEY").unwrap_or_default();
            let sim = waha_sim::Simulator::builder()
                .api_key(key)
                .start()
                .await
                .unwrap();
            Ok(LaunchedServer {
                url: sim.url().parse().unwrap(),
                handle: Box::new(Running(sim)),
            })
        }
    }

    struct Keys;

    #[async_trait]
    impl TenantKeys for Keys {
        async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error> {
            Ok(ApiKey::new(format!("key-of-{tenant}-0123456789")).unwrap())
        }

        async fn incarnation(&self, _: &TenantId) -> Result<crate::Incarnation, Error> {
            Ok(incarnation())
        }
    }

    #[async_trait]
    impl TenantExists for Keys {
        async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, Error> {
            Ok(tenant.as_str() != "gone")
        }
    }

    /// The directory's own error is kept as the source, with its retryability: a pool time-out
    /// (a busy database) stays retryable through `ensure`, an unknown tenant does not.
    #[tokio::test]
    async fn directory_errors_keep_their_cause_and_retryability_through_ensure() {
        use tenant_isolation::MockTenantDirectory;
        let mut directory = MockTenantDirectory::new();
        directory.expect_get().returning(|tenant| {
            if tenant.as_str() == "busy" {
                Err(tenant_isolation::Error::Pool(
                    deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait),
                ))
            } else {
                Err(tenant_isolation::Error::TenantNotFound {
                    tenant: tenant.clone(),
                })
            }
        });
        let mut config = PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap());
        config.volumes = false;
        let pool = TenantPool::new(
            Arc::new(InMemoryRuntime::new(Arc::new(Sims))),
            crate::keys_from_directory(Arc::new(directory)),
            Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
            config,
        )
        .unwrap();
        let busy = TenantId::new("busy").unwrap();
        let err = pool.ensure(&busy).await.unwrap_err();
        assert!(
            matches!(&err, Error::TenantDirectory { tenant, .. } if *tenant == busy),
            "{err:?}"
        );
        assert!(
            err.is_retryable(),
            "a pool time-out stays retryable: {err:?}"
        );
        assert_eq!(err.kind(), "tenant_directory");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Arc<tenant_isolation::Error>>())
            .expect("the directory's error is the source");
        assert!(
            matches!(**source, tenant_isolation::Error::Pool(_)),
            "{source:?}"
        );

        let unknown = TenantId::new("unknown").unwrap();
        let err = pool.ensure(&unknown).await.unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Arc<tenant_isolation::Error>>())
            .expect("the directory's error is the source");
        assert!(
            matches!(**source, tenant_isolation::Error::TenantNotFound { .. }),
            "{source:?}"
        );
    }

    #[tokio::test]
    async fn removing_or_sweeping_a_tenant_forgets_its_single_flight_cells() {
        let mut config = PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap());
        config.volumes = false;
        let pool = TenantPool::new(
            Arc::new(InMemoryRuntime::new(Arc::new(Sims))),
            Arc::new(Keys),
            Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
            config,
        )
        .unwrap();
        let (kept, removed, gone) = (
            TenantId::new("kept").unwrap(),
            TenantId::new("removed").unwrap(),
            TenantId::new("gone").unwrap(),
        );
        for t in [&kept, &removed, &gone] {
            pool.ensure(t).await.unwrap();
        }
        pool.ensure_slot(&removed, 1).await.unwrap();
        assert_eq!(pool.flights().len(), 4);
        pool.remove_tenant(&removed, false).await.unwrap();
        pool.sweep_orphans(&Keys, false).await.unwrap();
        let left: Vec<_> = pool.flights().keys().cloned().collect();
        assert_eq!(left, vec![(kept, 0)]);
    }

    /// The one incarnation of every tenant here.
    fn incarnation() -> crate::Incarnation {
        crate::Incarnation::parse("first-life").unwrap()
    }

    fn pool_with(config: PoolConfig) -> TenantPool {
        TenantPool::new(
            Arc::new(InMemoryRuntime::new(Arc::new(Sims))),
            Arc::new(Keys),
            Arc::new(WahaHealthProbe::new(Duration::from_secs(1)).unwrap()),
            config,
        )
        .unwrap()
    }

    fn image() -> PoolConfig {
        PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap())
    }

    #[tokio::test]
    async fn host_network_containers_listen_on_their_own_allocated_port() {
        use crate::PortAllocationStore;
        // The first port of the range is held by a socket: the allocator must skip it.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let first = held.local_addr().unwrap().port();
        let range = first..=first.saturating_add(50);
        let store = Arc::new(crate::InMemoryPortStore::new());
        let mut config = image();
        config.volumes = false;
        config.addressing =
            crate::AddressingPolicy::loopback_host_network(range.clone(), store.clone());
        let pool = pool_with(config);
        let key = ApiKey::new("key-0123456789").unwrap();
        let acme = TenantId::new("acme").unwrap();
        let spec = pool
            .build_spec(&acme, 0, &key, &incarnation())
            .await
            .unwrap();
        let crate::Addressing::HostNetwork { bind, port } = spec.addressing.clone() else {
            panic!("not host-network: {:?}", spec.addressing);
        };
        assert_eq!(bind.to_string(), "127.0.0.1");
        assert!(
            port != first && range.contains(&port),
            "{port} not in {range:?} or the held {first}"
        );
        // The server is told its port and address; labels and spec agree with them.
        assert_eq!(spec.container_port, port);
        for var in ["PORT", "WHATSAPP_API_PORT"] {
            assert_eq!(
                spec.env_value(var),
                Some(port.to_string().as_str()),
                "{var}"
            );
        }
        assert_eq!(spec.env_value("SIM_HOST"), Some("127.0.0.1"));
        assert_eq!(spec.labels[labels::PORT], port.to_string());
        assert_eq!(
            spec.labels[labels::ADDRESSING],
            format!("hostnet:127.0.0.1:{port}")
        );
        let allocations = store.allocations().await.unwrap();
        assert_eq!(allocations[&spec.name], port);
        // A re-creation keeps the port, and the read-only drift hash agrees with the spec.
        assert_eq!(
            pool.build_spec(&acme, 0, &key, &incarnation())
                .await
                .unwrap()
                .container_port,
            port
        );
        assert_eq!(
            pool.wanted_spec_hash(&acme, 0, &allocations).await.unwrap(),
            spec.spec_hash()
        );
        // The in-memory runtime ignores the addressing (its servers are on loopback anyway):
        // `ensure` works, and removing the tenant frees the port.
        let endpoint = pool.ensure(&acme).await.unwrap();
        assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
        pool.remove_tenant(&acme, false).await.unwrap();
        assert!(store.allocations().await.unwrap().is_empty());
        drop(held);
    }

    #[tokio::test]
    async fn the_longest_auto_start_stagger_builds_a_spec_without_overflowing() {
        let tenant = TenantId::new("acme").unwrap();
        let key = ApiKey::new("key-0123456789").unwrap();
        for (base, spread) in [(0, u64::MAX), (7, u64::MAX - 7), (u64::MAX, 0)] {
            let mut config = image();
            config.auto_start = crate::AutoStartStagger {
                base: Duration::from_secs(base),
                spread: Duration::from_secs(spread),
            };
            let spec = pool_with(config)
                .build_spec(&tenant, 0, &key, &incarnation())
                .await
                .unwrap();
            let delay: u64 = spec
                .env_value("WAHA_AUTO_START_DELAY_SECONDS")
                .unwrap()
                .parse()
                .unwrap();
            assert!(delay >= base, "{delay} < {base}");
        }
    }

    #[tokio::test]
    async fn secret_extra_env_reaches_the_container_but_not_the_spec_hash() {
        let tenant = TenantId::new("acme").unwrap();
        let key = ApiKey::new("key-0123456789").unwrap();
        let spec_with = |plain: &str, secret: &str| {
            let mut config = image();
            config.extra_env = vec![
                crate::EnvVar::plain("WAHA_LOG_LEVEL", plain),
                crate::EnvVar::secret("WAHA_DASHBOARD_PASSWORD", secret),
            ];
            let pool = pool_with(config);
            let tenant = tenant.clone();
            let key = key.clone();
            async move {
                pool.build_spec(&tenant, 0, &key, &incarnation())
                    .await
                    .unwrap()
            }
        };
        let spec = spec_with("info", "hunter2-dashboard").await;
        let password = spec
            .env
            .iter()
            .find(|e| e.name == "WAHA_DASHBOARD_PASSWORD")
            .unwrap();
        assert_eq!(password.value.expose_secret(), "hunter2-dashboard");
        assert_eq!(spec.env_value("WAHA_DASHBOARD_PASSWORD"), None, "not plain");
        assert!(!format!("{spec:?}").contains("hunter2"));
        let hash = spec.spec_hash();
        assert_eq!(
            spec_with("info", "another-password").await.spec_hash(),
            hash
        );
        assert_ne!(
            spec_with("debug", "hunter2-dashboard").await.spec_hash(),
            hash
        );
    }
}
