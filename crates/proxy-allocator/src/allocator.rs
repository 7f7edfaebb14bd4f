//! The allocator: sources, a lease store and the policy put together.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::address::ProxyAddress;
use crate::clock::{Clock, SystemClock};
use crate::country::{CountryCode, country_for_phone};
use crate::endpoint::{EndpointId, EndpointKind, ProxyEndpoint};
use crate::error::{NoCapacityReason, ProxyError};
use crate::health::{EgressIpProbe, HealthChecker, HealthReport};
use crate::lease::{
    Allocation, AllocationRequest, Candidate, EgressIpChange, EgressIpUpdate, HistoryEvent,
    LeaseHealth, LeaseUpdate, ProxyHistoryEntry, ProxyLease, Replace,
};
use crate::policy::{AllocationPolicy, CountryMatch};
use crate::source::ProxySource;
use crate::store::LeaseStore;
use tenant_isolation::{ChipId, TenantId};

/// What the allocator needs to know about a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipProxyRequest {
    /// The tenant owning the chip.
    pub tenant: TenantId,
    /// The chip.
    pub chip: ChipId,
    /// The chip's phone number in international form, when known; its calling code gives the
    /// country if [`ChipProxyRequest::country`] is not set.
    pub phone: Option<String>,
    /// The chip's country, when the host knows it; wins over the phone number.
    pub country: Option<CountryCode>,
    /// Labels every endpoint used for this chip must carry.
    pub labels: BTreeSet<String>,
}

impl ChipProxyRequest {
    /// A request with no phone, country or labels.
    pub fn new(tenant: TenantId, chip: ChipId) -> Self {
        Self {
            tenant,
            chip,
            phone: None,
            country: None,
            labels: BTreeSet::new(),
        }
    }

    /// Sets the phone number.
    pub fn with_phone(mut self, phone: impl Into<String>) -> Self {
        self.phone = Some(phone.into());
        self
    }

    /// Sets the country.
    pub fn with_country(mut self, country: CountryCode) -> Self {
        self.country = Some(country);
        self
    }

    /// Requires a label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.labels.insert(label.into());
        self
    }

    /// The country used for matching: the explicit one, else the phone's.
    pub fn effective_country(&self) -> Option<CountryCode> {
        self.country
            .or_else(|| self.phone.as_deref().and_then(country_for_phone))
    }
}

/// What [`ProxyAllocator::report_failure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureOutcome {
    /// The failure was counted; the threshold is not reached yet.
    Counted {
        /// The lease, with its failure count.
        lease: ProxyLease,
    },
    /// The threshold is reached but the lease is younger than the cooldown: it is kept.
    CoolingDown {
        /// The lease.
        lease: ProxyLease,
        /// When rotation becomes possible.
        until: SystemTime,
    },
    /// This call moved the chip to another endpoint (or gateway session).
    Rotated {
        /// The lease given up.
        from: ProxyLease,
        /// The new lease.
        to: ProxyLease,
    },
    /// The chip's lease is no longer the generation the failure was reported on: it was rotated
    /// since the caller read it (by another replica, or by an earlier report). The failure was
    /// not counted against the new lease and nothing was rotated; reconnect through `lease`.
    Superseded {
        /// The chip's current lease.
        lease: ProxyLease,
    },
    /// Rotation was due but no other endpoint has room: the lease is kept.
    NoAlternative {
        /// The lease, unchanged apart from its failure count.
        lease: ProxyLease,
        /// Why nothing else was eligible.
        reason: NoCapacityReason,
    },
}

/// The outcome of checking one endpoint.
#[derive(Debug)]
pub struct EndpointCheck {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The check's result. An error that is not a proxy failure
    /// ([`ProxyError::is_proxy_failure`], e.g. a custom checker's [`ProxyError::Store`]) says
    /// nothing about the endpoint: it is reported here and the endpoint's health is left as
    /// it was.
    pub result: Result<HealthReport, ProxyError>,
    /// Leases whose health changed because of it.
    pub leases_changed: u64,
    /// Whether the verdict was recorded. It is not for an error that is not a proxy failure
    /// (it says nothing about the proxy), nor for any endpoint when no endpoint of the pass
    /// passed and two or more failed as proxy failures: that says more about the checker or
    /// its target than about the proxies ([`ProxyAllocator::check_endpoints`]).
    pub recorded: bool,
}

/// The outcome of checking one chip's lease ([`ProxyAllocator::check_lease`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LeaseCheck {
    /// The chip still held the checked lease: the verdict (and, when probed, the egress IP)
    /// is recorded on it.
    Recorded {
        /// The lease after the check was recorded.
        lease: ProxyLease,
        /// The connectivity check's result (a proxy failure: see
        /// [`ProxyError::is_proxy_failure`]).
        result: Result<HealthReport, ProxyError>,
        /// The egress IP check's result, when a probe was given and the proxy was reachable.
        egress: Option<Result<EgressIpChange, ProxyError>>,
    },
    /// The chip's lease was rotated (by another replica, or by a failure report) while the
    /// check ran: the check went through a proxy the chip no longer uses, so nothing of it is
    /// recorded on the current lease (no health verdict, no egress IP, no history entry for its
    /// generation). A verdict recorded before the rotation stays in the history under the
    /// checked generation. Check again to check the current lease.
    Superseded {
        /// The generation that was checked.
        checked: u64,
        /// The chip's current lease, untouched by this check.
        lease: ProxyLease,
        /// The connectivity check's result, about the checked (old) proxy.
        result: Result<HealthReport, ProxyError>,
    },
}

impl LeaseCheck {
    /// The lease: after the check ([`LeaseCheck::Recorded`]) or the chip's current one
    /// ([`LeaseCheck::Superseded`]).
    pub fn lease(&self) -> &ProxyLease {
        match self {
            LeaseCheck::Recorded { lease, .. } | LeaseCheck::Superseded { lease, .. } => lease,
        }
    }

    /// The connectivity check's result.
    pub fn result(&self) -> &Result<HealthReport, ProxyError> {
        match self {
            LeaseCheck::Recorded { result, .. } | LeaseCheck::Superseded { result, .. } => result,
        }
    }

    /// Whether the check was recorded on the lease it went through.
    pub fn is_recorded(&self) -> bool {
        matches!(self, LeaseCheck::Recorded { .. })
    }
}

/// Hands out sticky proxy leases to chips.
///
/// Building one does no I/O. Every method takes `&self`; share it behind an `Arc`. Several
/// allocators (in several processes) may share one [`LeaseStore`] if the store is shared, as
/// the PostgreSQL store is.
#[derive(Clone)]
pub struct ProxyAllocator {
    source: Arc<dyn ProxySource>,
    store: Arc<dyn LeaseStore>,
    policy: AllocationPolicy,
    clock: Arc<dyn Clock>,
    check_concurrency: usize,
}

impl std::fmt::Debug for ProxyAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAllocator")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ProxyAllocator {
    /// An allocator. Fails if the policy is invalid (a zero cap or threshold).
    pub fn new(
        source: Arc<dyn ProxySource>,
        store: Arc<dyn LeaseStore>,
        policy: AllocationPolicy,
    ) -> Result<Self, ProxyError> {
        policy.validate()?;
        Ok(Self {
            source,
            store,
            policy,
            clock: Arc::new(SystemClock),
            check_concurrency: 8,
        })
    }

    /// Uses another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many endpoint checks [`ProxyAllocator::check_endpoints`] runs at once. Default 8.
    pub fn with_check_concurrency(mut self, concurrency: usize) -> Self {
        self.check_concurrency = concurrency.max(1);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &AllocationPolicy {
        &self.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// The chip's lease: the one it holds (sticky, whatever its health), or a new one.
    ///
    /// A lease on an endpoint the source no longer offers is moved to a live endpoint.
    pub async fn allocate(&self, request: &ChipProxyRequest) -> Result<ProxyLease, ProxyError> {
        let span = info_span!("proxy_allocate", tenant = %request.tenant, chip = %request.chip);
        async move {
            let endpoints = self.source.endpoints().await?;
            if let Some(lease) = self.store.lease(&request.tenant, &request.chip).await? {
                if endpoints.iter().any(|e| e.id == lease.endpoint) {
                    metrics::counter!("proxy_allocator_allocations_total", "outcome" => "existing")
                        .increment(1);
                    return Ok(lease);
                }
                warn!(endpoint = %lease.endpoint, "leased endpoint is gone from the source; moving the chip");
                let candidates = self.candidates(&endpoints, request, &HashSet::new())?;
                let allocation = self
                    .store
                    .allocate(AllocationRequest {
                        tenant: request.tenant.clone(),
                        chip: request.chip.clone(),
                        candidates,
                        replace: Some(Replace {
                            generation: lease.generation,
                            reason: "endpoint removed from the source".into(),
                        }),
                        now: self.clock.now(),
                    })
                    .await?;
                return Ok(self.observe(allocation));
            }
            let candidates = self.candidates(&endpoints, request, &HashSet::new())?;
            let allocation = self
                .store
                .allocate(AllocationRequest {
                    tenant: request.tenant.clone(),
                    chip: request.chip.clone(),
                    candidates,
                    replace: None,
                    now: self.clock.now(),
                })
                .await
                .inspect_err(|err| {
                    if matches!(err, ProxyError::NoCapacity { .. }) {
                        metrics::counter!("proxy_allocator_allocations_total", "outcome" => "no_capacity")
                            .increment(1);
                    }
                })?;
            Ok(self.observe(allocation))
        }
        .instrument(span)
        .await
    }

    fn observe(&self, allocation: Allocation) -> ProxyLease {
        let outcome = match &allocation {
            Allocation::Existing(_) => "existing",
            Allocation::Created(_) => "created",
            Allocation::Rotated(_) => "rotated",
        };
        metrics::counter!("proxy_allocator_allocations_total", "outcome" => outcome).increment(1);
        let lease = allocation.into_lease();
        debug!(endpoint = %lease.endpoint, generation = lease.generation, outcome, "proxy lease");
        lease
    }

    /// The chip's lease, if it holds one.
    pub async fn lease(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        self.store.lease(tenant, chip).await
    }

    /// Releases the chip's lease; call it when the chip is deleted. Idempotent.
    pub async fn release(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        let released = self.store.release(tenant, chip, self.clock.now()).await?;
        if let Some(lease) = &released {
            info!(tenant = %tenant, chip = %chip, endpoint = %lease.endpoint, "proxy lease released");
            metrics::counter!("proxy_allocator_releases_total").increment(1);
        }
        Ok(released)
    }

    /// Resets the chip's failure count: its session connected fine through the lease of
    /// `generation` (the [`ProxyLease::generation`] it was configured with). If the chip has been
    /// rotated since, nothing changes and the current lease comes back as
    /// [`LeaseUpdate::Superseded`]: a success on the old proxy says nothing about the new one.
    pub async fn report_success(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.store.record_success(tenant, chip, generation).await
    }

    /// Counts a failure of the chip's connection through the lease of `generation` (the
    /// [`ProxyLease::generation`] the connection was configured with) and rotates the chip when
    /// the policy says so: after `rotate_after_failures` consecutive failures, and only once the
    /// lease is older than `rotation_cooldown`. Endpoints the chip left less than a cooldown ago
    /// are avoided. Nothing is lost if rotation finds no room: the lease is kept.
    ///
    /// A report about a generation the chip has left ([`FailureOutcome::Superseded`]) counts
    /// nothing and rotates nothing, whether the chip moved before the failure was counted or
    /// while this call was choosing a new endpoint: the failure was on a proxy the chip no
    /// longer uses. [`FailureOutcome::Rotated`] means this call did the rotation, so across
    /// replicas each rotation is reported once.
    pub async fn report_failure(
        &self,
        request: &ChipProxyRequest,
        generation: u64,
    ) -> Result<FailureOutcome, ProxyError> {
        let span = info_span!(
            "proxy_failure",
            tenant = %request.tenant,
            chip = %request.chip,
            generation
        );
        async move {
            let now = self.clock.now();
            let lease = match self
                .store
                .record_failure(&request.tenant, &request.chip, generation, now)
                .await?
            {
                LeaseUpdate::Applied(lease) => lease,
                LeaseUpdate::Superseded(current) => {
                    debug!(current = current.generation, "failure reported on a superseded lease");
                    return Ok(FailureOutcome::Superseded { lease: current });
                }
            };
            if lease.consecutive_failures < self.policy.rotate_after_failures {
                return Ok(FailureOutcome::Counted { lease });
            }
            // The policy bounds the cooldown, so this only saturates on a clock near the end of
            // time; never panic on it.
            let until = lease
                .assigned_at
                .checked_add(self.policy.rotation_cooldown)
                .unwrap_or(lease.assigned_at);
            if now < until {
                debug!(failures = lease.consecutive_failures, "rotation due but cooling down");
                return Ok(FailureOutcome::CoolingDown { lease, until });
            }
            let endpoints = self.source.endpoints().await?;
            let history = self.store.history(&request.tenant, &request.chip).await?;
            let mut avoid = recently_left(&history, now, self.policy.rotation_cooldown);
            avoid.insert(lease.endpoint.clone());
            let candidates = match self.candidates(&endpoints, request, &avoid) {
                Ok(candidates) => candidates,
                Err(ProxyError::NoCapacity { reason, .. }) => {
                    return Ok(FailureOutcome::NoAlternative { lease, reason });
                }
                Err(err) => return Err(err),
            };
            let result = self
                .store
                .allocate(AllocationRequest {
                    tenant: request.tenant.clone(),
                    chip: request.chip.clone(),
                    candidates,
                    replace: Some(Replace {
                        generation: lease.generation,
                        reason: format!("{} consecutive failures", lease.consecutive_failures),
                    }),
                    now,
                })
                .await;
            match result {
                Ok(Allocation::Rotated(to)) => {
                    info!(from = %lease.endpoint, to = %to.endpoint, generation = to.generation, "chip rotated to another proxy");
                    metrics::counter!("proxy_allocator_rotations_total").increment(1);
                    Ok(FailureOutcome::Rotated { from: lease, to })
                }
                // The chip moved after the failure was counted (another replica rotated it
                // first; the store fenced this rotation on the generation): not ours to report.
                // A rotation never creates (that is `NotLeased`), so this is `Existing`.
                Ok(other) => {
                    let current = other.into_lease();
                    debug!(current = current.generation, "another rotation came first");
                    Ok(FailureOutcome::Superseded { lease: current })
                }
                Err(ProxyError::NoCapacity { reason, .. }) => {
                    warn!(endpoint = %lease.endpoint, "rotation due but no other endpoint has room");
                    Ok(FailureOutcome::NoAlternative { lease, reason })
                }
                Err(err) => Err(err),
            }
        }
        .instrument(span)
        .await
    }

    /// The connectable proxy for a lease (the gateway user name filled in for its session).
    pub async fn proxy_address(&self, lease: &ProxyLease) -> Result<ProxyAddress, ProxyError> {
        let endpoints = self.source.endpoints().await?;
        let endpoint = endpoints
            .iter()
            .find(|e| e.id == lease.endpoint)
            .ok_or_else(|| ProxyError::EndpointGone {
                endpoint: lease.endpoint.clone(),
            })?;
        match &endpoint.kind {
            EndpointKind::Fixed(address) => Ok(address.clone()),
            EndpointKind::Gateway(gateway) => {
                let session = lease
                    .session_id
                    .as_deref()
                    .ok_or_else(|| ProxyError::Corrupt {
                        reason: format!("lease on gateway {} has no session id", lease.endpoint),
                    })?;
                gateway.session_address(session, lease.country)
            }
        }
    }

    /// The WAHA session `proxy` object for a lease. Fails with [`ProxyError::InvalidConfig`]
    /// when the lease is on a SOCKS5 proxy, which WAHA cannot use (see [`ProxyAddress::waha_proxy`]).
    pub async fn waha_proxy(
        &self,
        lease: &ProxyLease,
    ) -> Result<waha_client::ProxyConfig, ProxyError> {
        self.proxy_address(lease).await?.waha_proxy()
    }

    /// The chip's proxy history, oldest first (within the store's
    /// [`HistoryRetention`](crate::HistoryRetention)).
    pub async fn history(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Vec<ProxyHistoryEntry>, ProxyError> {
        self.store.history(tenant, chip).await
    }

    /// Removes the history entries older than the store's retention allows, as of the
    /// allocator's clock ([`LeaseStore::prune_history`]), and returns how many went. Call it
    /// periodically, e.g. daily; generations and leases are untouched.
    pub async fn prune_history(&self) -> Result<u64, ProxyError> {
        let removed = self.store.prune_history(self.clock.now()).await?;
        if removed > 0 {
            info!(removed, "proxy lease history pruned");
        }
        Ok(removed)
    }

    /// Erases the tenant's proxy data when the tenant is purged ([`LeaseStore::purge_tenant`]):
    /// every lease of `tenant` (their endpoints' capacity is free at once) and its chips'
    /// history; returns how many leases were removed (0 for an unknown tenant). Other tenants
    /// are untouched, and the chips' generations are kept, so a tenant id created again never
    /// sees a generation reused. The allocator keeps no per-tenant or per-endpoint state of
    /// its own (endpoint load lives in the store), so there is nothing else to release.
    ///
    /// Call it from the host's tenant offboarding, after the tenant's chips are stopped and
    /// before `tenant_isolation::pg::AdminDb::purge_tenant`: if that second step fails,
    /// running both again is safe (this one then answers 0). See `docs/proxy-allocator.md`,
    /// "Tenant purge".
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, ProxyError> {
        let removed = self.store.purge_tenant(tenant).await?;
        info!(tenant = %tenant, leases = removed, "tenant's proxy leases and history purged");
        Ok(removed)
    }

    /// Checks every endpoint the source offers (gateways through a throw-away session) and
    /// records each verdict: an endpoint failing with a proxy failure
    /// ([`ProxyError::is_proxy_failure`]) marks its leases unhealthy and gets no new leases until
    /// a later check passes. Any other error from the checker (or from building a gateway's
    /// check address) is reported in that endpoint's [`EndpointCheck::result`] and changes no
    /// health state. When no endpoint passes and two or more fail as proxy failures, nothing
    /// is recorded ([`EndpointCheck::recorded`] is `false` throughout): a dead check target or
    /// a broken checker must not shut every endpoint out of new leases.
    pub async fn check_endpoints(
        &self,
        checker: &dyn HealthChecker,
    ) -> Result<Vec<EndpointCheck>, ProxyError> {
        let endpoints = self.source.endpoints().await?;
        // By index, not by reference: a closure taking `&ProxyEndpoint` makes this future
        // fail the `Send` check of callers that spawn it (rustc's higher-ranked closure
        // lifetimes), e.g. a supervisor's monitor task.
        let checks = futures::stream::iter(0..endpoints.len())
            .map(|index| {
                let endpoint = &endpoints[index];
                async move {
                    let result = match probe_address(endpoint) {
                        Ok(address) => checker.check(&address).await,
                        Err(err) => Err(err),
                    };
                    (index, result)
                }
            })
            .buffer_unordered(self.check_concurrency)
            .collect::<Vec<_>>()
            .await;
        // Every endpoint failing at once is the checker's (or its target's) failure far more
        // often than every proxy's: nothing is recorded, or one dead target would shut every
        // endpoint out of new leases.
        let proxy_failures = checks
            .iter()
            .filter(|(_, result)| matches!(result, Err(err) if err.is_proxy_failure()))
            .count();
        let all_failed = proxy_failures >= 2 && checks.iter().all(|(_, result)| result.is_err());
        if all_failed {
            warn!(
                endpoints = checks.len(),
                "every proxy endpoint failed its health check: blaming the checker or its target; no health recorded"
            );
            metrics::counter!("proxy_allocator_endpoint_passes_discarded_total").increment(1);
            return Ok(checks
                .into_iter()
                .map(|(index, result)| EndpointCheck {
                    endpoint: endpoints[index].id.clone(),
                    result,
                    leases_changed: 0,
                    recorded: false,
                })
                .collect());
        }
        let mut reports = Vec::with_capacity(checks.len());
        for (index, result) in checks {
            let endpoint = &endpoints[index];
            let (leases_changed, result, recorded) = match verdict(result) {
                Ok((health, result)) => {
                    if let Err(err) = &result {
                        warn!(endpoint = %endpoint.id, proxy = %endpoint.host_port(), error = %err, "proxy endpoint failed its health check");
                    }
                    let changed = self
                        .store
                        .set_endpoint_health(&endpoint.id, health, self.clock.now())
                        .await?;
                    (changed, result, true)
                }
                Err(err) => {
                    warn!(endpoint = %endpoint.id, proxy = %endpoint.host_port(), error = %err, "endpoint health check failed for a reason other than the proxy; health left as it was");
                    (0, Err(err), false)
                }
            };
            reports.push(EndpointCheck {
                endpoint: endpoint.id.clone(),
                result,
                leases_changed,
                recorded,
            });
        }
        Ok(reports)
    }

    /// Checks one chip's lease through its own proxy (its own gateway session), records the
    /// verdict on the lease, and, when `egress` is given and the proxy answered, records the
    /// egress IP (a change is kept in the chip's history).
    ///
    /// Both records are fenced on the generation of the lease that was checked: if the chip is
    /// rotated while the check runs (by another replica, or by a failure report), the result
    /// is [`LeaseCheck::Superseded`] and the new lease is neither marked with the old proxy's
    /// verdict nor given the old proxy's egress IP.
    ///
    /// A checker error that is not a proxy failure ([`ProxyError::is_proxy_failure`], e.g. a
    /// custom checker's [`ProxyError::Store`]) says nothing about the proxy: it is returned as
    /// this call's error and no health state changes. So are store errors and
    /// [`ProxyError::NotLeased`] for a chip without a lease.
    pub async fn check_lease(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        checker: &dyn HealthChecker,
        egress: Option<&dyn EgressIpProbe>,
    ) -> Result<LeaseCheck, ProxyError> {
        let span = info_span!("proxy_check_lease", tenant = %tenant, chip = %chip);
        async move {
            let checked = self
                .store
                .lease(tenant, chip)
                .await?
                .ok_or_else(|| crate::store::not_leased(tenant, chip))?;
            let generation = checked.generation;
            let address = self.proxy_address(&checked).await?;
            let (health, result) = verdict(checker.check(&address).await)?;
            let superseded = |lease: ProxyLease, result| {
                debug!(
                    checked = generation,
                    current = lease.generation,
                    "lease rotated during its check; nothing recorded"
                );
                Ok(LeaseCheck::Superseded {
                    checked: generation,
                    lease,
                    result,
                })
            };
            let lease = match self
                .store
                .set_lease_health(tenant, chip, generation, health, self.clock.now())
                .await?
            {
                LeaseUpdate::Applied(lease) => lease,
                LeaseUpdate::Superseded(current) => return superseded(current, result),
            };
            let (Some(probe), Ok(_)) = (egress, &result) else {
                return Ok(LeaseCheck::Recorded {
                    lease,
                    result,
                    egress: None,
                });
            };
            let ip = match probe.egress_ip(&address).await {
                Ok(ip) => ip,
                Err(err) => {
                    return Ok(LeaseCheck::Recorded {
                        lease,
                        result,
                        egress: Some(Err(err)),
                    });
                }
            };
            match self
                .store
                .record_egress_ip(tenant, chip, generation, ip, self.clock.now())
                .await?
            {
                EgressIpUpdate::Applied { change, lease } => {
                    if let EgressIpChange::Changed { from, to } = change {
                        info!(%from, %to, "egress IP changed");
                        metrics::counter!("proxy_allocator_egress_ip_changes_total").increment(1);
                    }
                    Ok(LeaseCheck::Recorded {
                        lease,
                        result,
                        egress: Some(Ok(change)),
                    })
                }
                EgressIpUpdate::Superseded(current) => superseded(current, result),
            }
        }
        .instrument(span)
        .await
    }

    fn candidates(
        &self,
        endpoints: &[ProxyEndpoint],
        request: &ChipProxyRequest,
        avoid: &HashSet<EndpointId>,
    ) -> Result<Vec<Candidate>, ProxyError> {
        let no_capacity = |reason| ProxyError::NoCapacity {
            tenant: request.tenant.clone(),
            chip: request.chip.clone(),
            reason,
        };
        if endpoints.is_empty() {
            return Err(no_capacity(NoCapacityReason::NoEndpoints));
        }
        let country = request.effective_country();
        let mut candidates = Vec::new();
        for endpoint in endpoints {
            if !request.labels.is_subset(&endpoint.labels) {
                continue;
            }
            let matches = country.map(|c| endpoint.serves_country(c));
            let tier = match (self.policy.country_match, matches) {
                (CountryMatch::Off, _) | (_, None) | (_, Some(true)) => 0,
                (CountryMatch::Prefer, Some(false)) => 1,
                (CountryMatch::Require, Some(false)) => continue,
            };
            match &endpoint.kind {
                EndpointKind::Fixed(_) => {
                    if avoid.contains(&endpoint.id) {
                        continue;
                    }
                    candidates.push(Candidate {
                        endpoint: endpoint.id.clone(),
                        tier,
                        cap: self.policy.max_chips_per_endpoint,
                        exclusive: self.policy.tenant_exclusive,
                        session_id: None,
                        country: None,
                    });
                }
                EndpointKind::Gateway(gateway) => {
                    // A gateway is never avoided: a new session is a new egress.
                    let lease_country = if gateway.targets_countries() {
                        country
                            .filter(|c| endpoint.serves_country(*c))
                            .or(gateway.default_country)
                    } else {
                        None
                    };
                    if gateway.template.requires_country() && lease_country.is_none() {
                        continue;
                    }
                    candidates.push(Candidate {
                        endpoint: endpoint.id.clone(),
                        tier,
                        cap: gateway.max_sessions.unwrap_or(u32::MAX),
                        exclusive: false,
                        session_id: Some(gateway.new_session_id()),
                        country: lease_country,
                    });
                }
            }
        }
        if candidates.is_empty() {
            return Err(no_capacity(if avoid.is_empty() {
                NoCapacityReason::NoMatchingEndpoint
            } else {
                NoCapacityReason::AllBusy
            }));
        }
        Ok(candidates)
    }
}

/// The address used to check an endpoint: the fixed proxy, or the gateway with a fresh session.
fn probe_address(endpoint: &ProxyEndpoint) -> Result<ProxyAddress, ProxyError> {
    match &endpoint.kind {
        EndpointKind::Fixed(address) => Ok(address.clone()),
        EndpointKind::Gateway(gateway) => gateway.session_address(
            &gateway.new_session_id(),
            gateway.default_country.or(endpoint.country),
        ),
    }
}

/// A check's result with the health it says the proxy has: healthy, or unhealthy for a proxy
/// failure ([`ProxyError::is_proxy_failure`]). Any other error (the store, the input, a custom
/// checker's own trouble) says nothing about the proxy and comes back as `Err`.
type Verdict = (LeaseHealth, Result<HealthReport, ProxyError>);

fn verdict(result: Result<HealthReport, ProxyError>) -> Result<Verdict, ProxyError> {
    match result {
        Ok(report) => Ok((LeaseHealth::Healthy, Ok(report))),
        Err(err) if err.is_proxy_failure() => Ok((
            LeaseHealth::Unhealthy {
                reason: err.to_string(),
            },
            Err(err),
        )),
        Err(err) => Err(err),
    }
}

fn recently_left(
    history: &[ProxyHistoryEntry],
    now: SystemTime,
    window: std::time::Duration,
) -> HashSet<EndpointId> {
    history
        .iter()
        .filter(|entry| matches!(entry.event, HistoryEvent::RotatedAway { .. }))
        .filter(|entry| {
            now.duration_since(entry.at).is_ok_and(|age| age < window) || entry.at > now
        })
        .map(|entry| entry.endpoint.clone())
        .collect()
}
