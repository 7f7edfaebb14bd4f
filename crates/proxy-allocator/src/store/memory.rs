//! The in-memory lease store: one process, no persistence.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::endpoint::EndpointId;
use crate::error::ProxyError;
use crate::lease::{
    Allocation, AllocationRequest, EgressIpChange, EgressIpUpdate, EndpointLoad, HistoryEvent,
    LeaseHealth, LeaseUpdate, ProxyHistoryEntry, ProxyLease,
};
use crate::store::{CandidateState, LeaseStore, all_busy, choose, new_lease, not_leased};
use tenant_isolation::{ChipId, TenantId};

type ChipKey = (TenantId, ChipId);

/// Leases in a mutex-guarded map: atomic within one process, lost on restart.
///
/// The default for tests, examples and single-process hosts. Every operation takes one lock for
/// a few map updates, so allocation is O(number of candidates).
#[derive(Debug, Default)]
pub struct InMemoryLeaseStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<ChipKey, ProxyLease>,
    endpoints: HashMap<EndpointId, EndpointState>,
    history: HashMap<ChipKey, Vec<ProxyHistoryEntry>>,
}

#[derive(Debug)]
struct EndpointState {
    health: LeaseHealth,
    per_tenant: HashMap<TenantId, u32>,
    total: u32,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            health: LeaseHealth::Healthy,
            per_tenant: HashMap::new(),
            total: 0,
        }
    }
}

impl InMemoryLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied update (each update is
        // computed before it is written), so a poisoned lock is safe to reuse.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn add(&mut self, lease: ProxyLease) {
        let endpoint = self.endpoints.entry(lease.endpoint.clone()).or_default();
        endpoint.total += 1;
        *endpoint.per_tenant.entry(lease.tenant.clone()).or_default() += 1;
        self.leases
            .insert((lease.tenant.clone(), lease.chip.clone()), lease);
    }

    fn remove(&mut self, key: &ChipKey) -> Option<ProxyLease> {
        let lease = self.leases.remove(key)?;
        if let Some(endpoint) = self.endpoints.get_mut(&lease.endpoint) {
            endpoint.total = endpoint.total.saturating_sub(1);
            if let Some(count) = endpoint.per_tenant.get_mut(&lease.tenant) {
                *count -= 1;
                if *count == 0 {
                    endpoint.per_tenant.remove(&lease.tenant);
                }
            }
        }
        Some(lease)
    }

    fn log(&mut self, lease: &ProxyLease, at: SystemTime, event: HistoryEvent) {
        self.history
            .entry((lease.tenant.clone(), lease.chip.clone()))
            .or_default()
            .push(ProxyHistoryEntry {
                at,
                endpoint: lease.endpoint.clone(),
                session_id: lease.session_id.clone(),
                generation: lease.generation,
                event,
            });
    }

    /// The generation of the chip's next lease: one more than any it ever had, so that a report
    /// about an earlier lease (rotated away, or released before the chip was allocated again)
    /// never matches the new one. The history keeps every generation (each lease is recorded as
    /// assigned) and survives release.
    fn next_generation(&self, key: &ChipKey, current: Option<&ProxyLease>) -> u64 {
        let recorded = self
            .history
            .get(key)
            .into_iter()
            .flatten()
            .map(|entry| entry.generation);
        current
            .map(|lease| lease.generation)
            .into_iter()
            .chain(recorded)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    fn candidate_state(
        &self,
        endpoint: &EndpointId,
        tenant: &TenantId,
        own: Option<&ProxyLease>,
    ) -> CandidateState {
        let Some(state) = self.endpoints.get(endpoint) else {
            return CandidateState::default();
        };
        let mine = u32::from(own.is_some_and(|l| &l.endpoint == endpoint));
        let tenant_leases = state.per_tenant.get(tenant).copied().unwrap_or(0);
        CandidateState {
            leases: state.total - mine,
            other_tenant_leases: state.total - tenant_leases,
            unhealthy: !state.health.is_healthy(),
        }
    }

    fn lease_mut(
        &mut self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<&mut ProxyLease, ProxyError> {
        self.leases
            .get_mut(&(tenant.clone(), chip.clone()))
            .ok_or_else(|| not_leased(tenant, chip))
    }

    /// Applies `update` to the chip's lease if it has `generation` (see [`LeaseUpdate`]).
    fn update_generation(
        &mut self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        update: impl FnOnce(&mut ProxyLease),
    ) -> Result<LeaseUpdate, ProxyError> {
        let lease = self.lease_mut(tenant, chip)?;
        if lease.generation != generation {
            return Ok(LeaseUpdate::Superseded(lease.clone()));
        }
        update(lease);
        Ok(LeaseUpdate::Applied(lease.clone()))
    }

    fn set_health(&mut self, key: &ChipKey, health: &LeaseHealth, now: SystemTime) -> bool {
        let Some(lease) = self.leases.get_mut(key) else {
            return false;
        };
        if lease.health == *health {
            return false;
        }
        lease.health = health.clone();
        let lease = lease.clone();
        self.log(&lease, now, HistoryEvent::health_change(health));
        true
    }
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    async fn lease(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        Ok(self
            .lock()
            .leases
            .get(&(tenant.clone(), chip.clone()))
            .cloned())
    }

    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, ProxyError> {
        let mut state = self.lock();
        let key = (request.tenant.clone(), request.chip.clone());
        let existing = state.leases.get(&key).cloned();
        let old = match (existing, &request.replace) {
            (Some(lease), None) => return Ok(Allocation::Existing(lease)),
            (Some(lease), Some(replace)) if lease.generation != replace.generation => {
                return Ok(Allocation::Existing(lease));
            }
            (None, Some(_)) => return Err(not_leased(&request.tenant, &request.chip)),
            (old, _) => old,
        };
        let candidate = choose(&request.candidates, |endpoint| {
            state.candidate_state(endpoint, &request.tenant, old.as_ref())
        })
        .ok_or_else(|| all_busy(&request.tenant, &request.chip))?
        .clone();
        let generation = state.next_generation(&key, old.as_ref());
        if let (Some(old), Some(replace)) = (&old, &request.replace) {
            state.remove(&key);
            state.log(
                old,
                request.now,
                HistoryEvent::RotatedAway {
                    reason: replace.reason.clone(),
                },
            );
        }
        let lease = new_lease(&request, &candidate, generation);
        state.add(lease.clone());
        state.log(&lease, request.now, HistoryEvent::Assigned);
        Ok(if old.is_some() {
            Allocation::Rotated(lease)
        } else {
            Allocation::Created(lease)
        })
    }

    async fn release(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        now: SystemTime,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        let mut state = self.lock();
        let removed = state.remove(&(tenant.clone(), chip.clone()));
        if let Some(lease) = &removed {
            state.log(lease, now, HistoryEvent::Released);
        }
        Ok(removed)
    }

    async fn record_failure(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.lock()
            .update_generation(tenant, chip, generation, |lease| {
                lease.consecutive_failures = lease.consecutive_failures.saturating_add(1);
                lease.last_failure_at = Some(now);
            })
    }

    async fn record_success(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.lock()
            .update_generation(tenant, chip, generation, |lease| {
                lease.consecutive_failures = 0;
            })
    }

    async fn set_lease_health(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        let mut state = self.lock();
        let lease = state.lease_mut(tenant, chip)?;
        if lease.generation != generation {
            return Ok(LeaseUpdate::Superseded(lease.clone()));
        }
        let key = (tenant.clone(), chip.clone());
        state.set_health(&key, &health, now);
        state
            .leases
            .get(&key)
            .cloned()
            .map(LeaseUpdate::Applied)
            .ok_or_else(|| not_leased(tenant, chip))
    }

    async fn set_endpoint_health(
        &self,
        endpoint: &EndpointId,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<u64, ProxyError> {
        let mut state = self.lock();
        state.endpoints.entry(endpoint.clone()).or_default().health = health.clone();
        let keys: Vec<ChipKey> = state
            .leases
            .iter()
            .filter(|(_, l)| &l.endpoint == endpoint)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed = 0;
        for key in keys {
            if state.set_health(&key, &health, now) {
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn record_egress_ip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        ip: IpAddr,
        now: SystemTime,
    ) -> Result<EgressIpUpdate, ProxyError> {
        let mut state = self.lock();
        let lease = state.lease_mut(tenant, chip)?;
        if lease.generation != generation {
            return Ok(EgressIpUpdate::Superseded(lease.clone()));
        }
        let previous = lease.egress_ip.replace(ip);
        let change = EgressIpChange::observe(previous, ip);
        let lease = lease.clone();
        if !matches!(change, EgressIpChange::Unchanged(_)) {
            state.log(
                &lease,
                now,
                HistoryEvent::EgressIpChanged {
                    from: previous,
                    to: ip,
                },
            );
        }
        Ok(EgressIpUpdate::Applied { change, lease })
    }

    async fn leases(&self, tenant: Option<TenantId>) -> Result<Vec<ProxyLease>, ProxyError> {
        let state = self.lock();
        let mut leases: Vec<ProxyLease> = state
            .leases
            .values()
            .filter(|l| tenant.as_ref().is_none_or(|t| &l.tenant == t))
            .cloned()
            .collect();
        leases.sort_by(|a, b| {
            (a.tenant.to_string(), a.chip.to_string())
                .cmp(&(b.tenant.to_string(), b.chip.to_string()))
        });
        Ok(leases)
    }

    async fn leases_on_endpoint(
        &self,
        endpoint: &EndpointId,
    ) -> Result<Vec<ProxyLease>, ProxyError> {
        let state = self.lock();
        Ok(state
            .leases
            .values()
            .filter(|l| &l.endpoint == endpoint)
            .cloned()
            .collect())
    }

    async fn endpoint_loads(&self) -> Result<Vec<EndpointLoad>, ProxyError> {
        let state = self.lock();
        let mut loads: Vec<EndpointLoad> = state
            .endpoints
            .iter()
            .map(|(id, s)| EndpointLoad {
                endpoint: id.clone(),
                leases: s.total,
                tenants: s.per_tenant.len() as u32,
                health: s.health.clone(),
            })
            .collect();
        loads.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        Ok(loads)
    }

    async fn history(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Vec<ProxyHistoryEntry>, ProxyError> {
        Ok(self
            .lock()
            .history
            .get(&(tenant.clone(), chip.clone()))
            .cloned()
            .unwrap_or_default())
    }
}
