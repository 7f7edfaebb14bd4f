//! The in-memory lease store: one process, no persistence.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::endpoint::EndpointId;
use crate::error::ProxyError;
use crate::lease::{
    Allocation, AllocationRequest, EgressIpChange, EgressIpUpdate, EndpointLoad, HistoryEvent,
    LeaseHealth, LeaseUpdate, ProxyHistoryEntry, ProxyLease,
};
use crate::retention::HistoryRetention;
use crate::store::{CandidateState, LeaseStore, all_busy, choose, new_lease, not_leased};
use tenant_isolation::{ChipId, TenantId};

type ChipKey = (TenantId, ChipId);

/// How often, at most, the store applies its retention's age limit by itself (in the times
/// its calls are given), or its `max_age` if that is shorter.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Leases in a mutex-guarded map: atomic within one process, lost on restart.
///
/// The default for tests, examples and single-process hosts. Every operation takes one lock for
/// a few map updates, so allocation is O(number of candidates).
///
/// What it keeps, and for how long (see [`InMemoryLeaseStore::size`]):
/// - a lease per chip that holds one, and per endpoint its health and lease counts;
/// - each chip's history, within the [`HistoryRetention`] (default 100 entries per chip, 90
///   days): the count is applied on every append, the age by
///   [`LeaseStore::prune_history`] and, at most once an hour of the times the calls carry, by
///   the store itself, so the history of released chips goes away without a caller;
/// - each chip's highest generation, about a hundred bytes per chip ever leased, for the life of
///   the store: it is what keeps generations unique after release, after the history is gone
///   and after [`LeaseStore::purge_tenant`], which removes a tenant's leases and history but
///   keeps these (see [`LeaseStore`]).
#[derive(Debug, Default)]
pub struct InMemoryLeaseStore {
    state: Mutex<State>,
}

/// What an [`InMemoryLeaseStore`] holds at one moment ([`InMemoryLeaseStore::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InMemoryStoreSize {
    /// Active leases.
    pub leases: usize,
    /// Chips with at least one history entry.
    pub chips_with_history: usize,
    /// History entries over all chips.
    pub history_entries: usize,
    /// Chips whose highest generation is remembered: every chip ever leased (never evicted).
    pub generation_counters: usize,
    /// Endpoints with a health record or lease counts.
    pub endpoints: usize,
}

#[derive(Debug, Default)]
struct State {
    retention: HistoryRetention,
    leases: HashMap<ChipKey, ProxyLease>,
    endpoints: HashMap<EndpointId, EndpointState>,
    history: HashMap<ChipKey, VecDeque<ProxyHistoryEntry>>,
    /// The highest generation each chip ever had. Neither release nor the history's retention
    /// touches it.
    generations: HashMap<ChipKey, u64>,
    /// When the store last applied the age limit by itself.
    last_sweep: Option<SystemTime>,
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
    /// An empty store with the default [`HistoryRetention`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store keeping history within `retention`.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] from [`HistoryRetention::validate`].
    pub fn with_retention(retention: HistoryRetention) -> Result<Self, ProxyError> {
        retention.validate()?;
        Ok(Self {
            state: Mutex::new(State {
                retention,
                ..State::default()
            }),
        })
    }

    /// What the store holds now: for monitoring, and for tests that check it stays bounded.
    pub fn size(&self) -> InMemoryStoreSize {
        let state = self.lock();
        InMemoryStoreSize {
            leases: state.leases.len(),
            chips_with_history: state.history.len(),
            history_entries: state.history.values().map(VecDeque::len).sum(),
            generation_counters: state.generations.len(),
            endpoints: state.endpoints.len(),
        }
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

    /// Appends to the chip's history and drops its oldest entries beyond the retention's count.
    fn log(&mut self, lease: &ProxyLease, at: SystemTime, event: HistoryEvent) {
        let keep = usize::try_from(self.retention.max_entries_per_chip)
            .unwrap_or(usize::MAX)
            .max(1);
        let entries = self
            .history
            .entry((lease.tenant.clone(), lease.chip.clone()))
            .or_default();
        entries.push_back(ProxyHistoryEntry {
            at,
            endpoint: lease.endpoint.clone(),
            session_id: lease.session_id.clone(),
            generation: lease.generation,
            event,
        });
        while entries.len() > keep {
            entries.pop_front();
        }
    }

    /// Takes the generation of the chip's next lease: one more than any it ever had (its
    /// counter, and its current lease's), so that a report about an earlier lease (rotated
    /// away, or released before the chip was allocated again) never matches the new one. The
    /// counter is kept apart from the history, which retention shortens, and survives release.
    /// Call it only once the lease will be written (under the same lock).
    fn take_generation(&mut self, key: &ChipKey, current: Option<&ProxyLease>) -> u64 {
        let highest = self
            .generations
            .get(key)
            .copied()
            .unwrap_or(0)
            .max(current.map_or(0, |lease| lease.generation));
        let next = highest.saturating_add(1);
        self.generations.insert(key.clone(), next);
        next
    }

    /// Removes the history entries recorded before `now - max_age`, and the chips left with
    /// none; returns how many entries went.
    fn prune(&mut self, now: SystemTime) -> u64 {
        let Some(cutoff) = self.retention.cutoff(now) else {
            return 0;
        };
        let mut removed = 0_usize;
        self.history.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|entry| entry.at >= cutoff);
            removed += before - entries.len();
            !entries.is_empty()
        });
        u64::try_from(removed).unwrap_or(u64::MAX)
    }

    /// Removes every lease of `tenant` (with its endpoints' counts) and every history entry of
    /// its chips; returns how many leases went. The generation counters stay.
    fn purge(&mut self, tenant: &TenantId) -> u64 {
        let keys: Vec<ChipKey> = self
            .leases
            .keys()
            .filter(|(owner, _)| owner == tenant)
            .cloned()
            .collect();
        let mut removed = 0_u64;
        for key in &keys {
            if self.remove(key).is_some() {
                removed += 1;
            }
        }
        self.history.retain(|(owner, _), _| owner != tenant);
        removed
    }

    /// Applies the age limit by itself, at most once per [`SWEEP_EVERY`] (or `max_age`, if
    /// shorter) of the times the calls carry; a time that jumps back by as much counts too.
    fn sweep(&mut self, now: SystemTime) {
        let every = self.retention.max_age.min(SWEEP_EVERY);
        let due = self
            .last_sweep
            .is_none_or(|last| match now.duration_since(last) {
                Ok(ahead) => ahead >= every,
                Err(behind) => behind.duration() >= every,
            });
        if due {
            self.last_sweep = Some(now);
            self.prune(now);
        }
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
        state.sweep(request.now);
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
        let generation = state.take_generation(&key, old.as_ref());
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
        state.sweep(now);
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
        let mut state = self.lock();
        state.sweep(now);
        state.update_generation(tenant, chip, generation, |lease| {
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
        state.sweep(now);
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
        state.sweep(now);
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
        state.sweep(now);
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
            .map(|entries| entries.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn prune_history(&self, now: SystemTime) -> Result<u64, ProxyError> {
        Ok(self.lock().prune(now))
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, ProxyError> {
        Ok(self.lock().purge(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Candidate;

    /// 10,000 chips of 100 tenants go through the store a minute apart: each is allocated, its
    /// lease flaps three times, and it is released. With a one-hour retention of 4 entries per
    /// chip, the store never holds more than about two hours' worth of released chips' history,
    /// however many chips went through. What it keeps for good is one generation counter per
    /// chip ever leased, by design.
    #[tokio::test]
    async fn many_chips_leave_a_bounded_footprint() {
        const CHIPS: usize = 10_000;
        const STEP: Duration = Duration::from_secs(60);
        let store = InMemoryLeaseStore::with_retention(HistoryRetention {
            max_entries_per_chip: 4,
            max_age: Duration::from_secs(3600),
        })
        .expect("valid retention");
        let tenants: Vec<TenantId> = (0..100)
            .map(|n| TenantId::new(format!("t{n}")).expect("tenant"))
            .collect();
        let candidate = Candidate {
            endpoint: EndpointId::new("e-1").expect("endpoint"),
            tier: 0,
            cap: u32::MAX,
            exclusive: false,
            session_id: None,
            country: None,
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (mut peak_chips, mut peak_entries) = (0, 0);
        let mut last = None;
        for n in 0..CHIPS {
            let now = start + STEP * u32::try_from(n).expect("small");
            let tenant = &tenants[n % tenants.len()];
            let chip = ChipId::new(format!("c{n}")).expect("chip");
            let lease = store
                .allocate(AllocationRequest {
                    tenant: tenant.clone(),
                    chip: chip.clone(),
                    candidates: vec![candidate.clone()],
                    replace: None,
                    now,
                })
                .await
                .expect("allocates")
                .into_lease();
            for flap in 0..3 {
                let health = if flap % 2 == 0 {
                    LeaseHealth::Unhealthy {
                        reason: "down".into(),
                    }
                } else {
                    LeaseHealth::Healthy
                };
                let update = store
                    .set_lease_health(tenant, &chip, lease.generation, health, now)
                    .await
                    .expect("health");
                assert!(update.is_applied(), "{update:?}");
            }
            store.release(tenant, &chip, now).await.expect("release");
            let size = store.size();
            peak_chips = peak_chips.max(size.chips_with_history);
            peak_entries = peak_entries.max(size.history_entries);
            last = Some((tenant.clone(), chip));
        }

        // Released within the last hour, plus up to an hour between two sweeps: ~121 chips.
        assert!(
            peak_chips <= 130,
            "the history of released chips is forgotten after max_age: {peak_chips} chips"
        );
        assert!(peak_entries <= 4 * 130, "{peak_entries} history entries");
        let size = store.size();
        assert_eq!(size.leases, 0);
        assert_eq!(size.endpoints, 1);
        assert_eq!(
            size.generation_counters, CHIPS,
            "one generation counter per chip ever leased, kept for good"
        );

        // The count limit: the last chip's five entries (assigned, three flaps, released) are
        // its newest four.
        let (tenant, chip) = last.expect("a chip went through");
        let events: Vec<HistoryEvent> = store
            .history(&tenant, &chip)
            .await
            .expect("history")
            .into_iter()
            .map(|entry| entry.event)
            .collect();
        assert_eq!(
            events,
            [
                HistoryEvent::MarkedUnhealthy {
                    reason: "down".into()
                },
                HistoryEvent::Recovered,
                HistoryEvent::MarkedUnhealthy {
                    reason: "down".into()
                },
                HistoryEvent::Released,
            ]
        );

        // Everything is older than max_age a day later: an explicit prune empties the history.
        let later =
            start + STEP * u32::try_from(CHIPS).expect("small") + Duration::from_secs(86_400);
        let removed = store.prune_history(later).await.expect("prune");
        assert!(removed > 0);
        assert_eq!(store.size().history_entries, 0);
        assert_eq!(store.size().chips_with_history, 0);
    }
}
