//! Where leases live: the [`LeaseStore`] trait and its backends.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::net::IpAddr;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::endpoint::EndpointId;
use crate::error::{NoCapacityReason, ProxyError};
use crate::lease::{
    Allocation, AllocationRequest, Candidate, EgressIpUpdate, EndpointLoad, LeaseHealth,
    LeaseUpdate, ProxyHistoryEntry, ProxyLease,
};
use tenant_isolation::{ChipId, TenantId};

/// Persistent, atomic bookkeeping of which chip holds which endpoint.
///
/// Contract every backend honours (checked by [`crate::conformance`]):
/// - a chip holds at most one lease; [`allocate`](LeaseStore::allocate) without `replace`
///   returns the chip's existing lease unchanged (stickiness), whatever the candidates are;
/// - choosing a candidate and inserting the lease is atomic with respect to every other call,
///   in this process and (for shared backends) in every other process: an endpoint never carries
///   more active leases than the candidate's `cap`, and an `exclusive` candidate is never given
///   to a tenant while another tenant holds a lease on it;
/// - the store picks, among candidates that are healthy (not marked unhealthy through
///   [`set_endpoint_health`](LeaseStore::set_endpoint_health)), under their cap and allowed by
///   exclusivity, the lowest `tier`, then the fewest active leases, then the earliest position;
///   none eligible → [`ProxyError::NoCapacity`] with [`NoCapacityReason::AllBusy`] and nothing
///   changes;
/// - a rotation (`replace: Some`) of the current generation replaces the lease atomically
///   (failures reset, health healthy); of any other generation it returns the current lease
///   unchanged; for a chip without a lease it is [`ProxyError::NotLeased`];
/// - every new lease (a chip's first, one allocated after a [`release`](LeaseStore::release),
///   a rotation's) gets a generation one more than the highest the chip ever had: a chip's
///   first lease is generation 1, a rotation normally old + 1, and no two of a chip's lease
///   lifetimes share a generation, ever. The store keeps each chip's highest generation apart
///   from its history (which the retention and [`prune_history`](LeaseStore::prune_history)
///   shorten): that record survives release and is never pruned. Choosing the next
///   generation, recording it and writing the lease are one atomic step;
/// - [`record_failure`](LeaseStore::record_failure),
///   [`record_success`](LeaseStore::record_success),
///   [`set_lease_health`](LeaseStore::set_lease_health) and
///   [`record_egress_ip`](LeaseStore::record_egress_ip) name the generation they are about and
///   change the lease only if it still has that generation ([`LeaseUpdate::Applied`],
///   [`EgressIpUpdate::Applied`]); otherwise they change nothing, append no history and return
///   the current lease ([`LeaseUpdate::Superseded`], [`EgressIpUpdate::Superseded`]). The check
///   and the update are one atomic step. Since generations are never reused, a report about a
///   lease released before the chip was allocated again is `Superseded` too;
/// - history is appended for assignment, rotation, release, health transitions and egress-IP
///   changes, and survives release, within the store's
///   [`HistoryRetention`](crate::HistoryRetention): a chip keeps at most
///   `max_entries_per_chip` entries (the newest; older ones are dropped in the step that
///   appends), and [`prune_history`](LeaseStore::prune_history) removes entries older than
///   `max_age`;
/// - [`purge_tenant`](LeaseStore::purge_tenant) removes every lease and every history entry of
///   one tenant in one atomic step, frees their endpoints' capacity (and exclusivity) and
///   touches no other tenant; it keeps the tenant's chips' highest generations, so a chip of a
///   tenant id created again never gets a generation it had before the purge;
/// - calls on a chip without a lease (other than `allocate`, `lease`, `release`, `history`)
///   fail with [`ProxyError::NotLeased`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The chip's lease, if it holds one.
    async fn lease(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<ProxyLease>, ProxyError>;

    /// Returns the existing lease, creates one, or rotates one (see the trait docs).
    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, ProxyError>;

    /// Releases the chip's lease (on chip deletion) and returns it; `None` if it held none.
    async fn release(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        now: SystemTime,
    ) -> Result<Option<ProxyLease>, ProxyError>;

    /// Counts one more consecutive failure on the chip's lease, if it still has `generation`
    /// (see [`LeaseUpdate`]).
    async fn record_failure(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError>;

    /// Resets the chip's consecutive failures to zero, if its lease still has `generation`
    /// (see [`LeaseUpdate`]).
    async fn record_success(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
    ) -> Result<LeaseUpdate, ProxyError>;

    /// Sets one lease's health (a check through that lease, e.g. its gateway session), if the
    /// chip's lease still has `generation`, the one the check went through (see
    /// [`LeaseUpdate`]). A change of health is recorded in the history.
    async fn set_lease_health(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError>;

    /// Sets an endpoint's health and that of every lease on it; returns how many leases changed
    /// state. An unhealthy endpoint gets no new leases until it is healthy again.
    async fn set_endpoint_health(
        &self,
        endpoint: &EndpointId,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<u64, ProxyError>;

    /// Records the egress IP seen through the chip's lease, if it still has `generation`, the
    /// one the IP was seen through (see [`EgressIpUpdate`]). A first or different IP is recorded
    /// in the history.
    async fn record_egress_ip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        ip: IpAddr,
        now: SystemTime,
    ) -> Result<EgressIpUpdate, ProxyError>;

    /// Every active lease, or those of one tenant.
    async fn leases(&self, tenant: Option<TenantId>) -> Result<Vec<ProxyLease>, ProxyError>;

    /// The active leases on one endpoint.
    async fn leases_on_endpoint(
        &self,
        endpoint: &EndpointId,
    ) -> Result<Vec<ProxyLease>, ProxyError>;

    /// Active leases per endpoint the store knows about.
    async fn endpoint_loads(&self) -> Result<Vec<EndpointLoad>, ProxyError>;

    /// The chip's proxy history, oldest first (kept after release, within the store's
    /// [`HistoryRetention`](crate::HistoryRetention)).
    async fn history(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Vec<ProxyHistoryEntry>, ProxyError>;

    /// Applies the age limit of the store's [`HistoryRetention`](crate::HistoryRetention):
    /// removes every history entry (of every chip, leased or released) recorded before
    /// `now - max_age`, and returns how many were removed. Leases and generations are
    /// untouched. Idempotent and safe to run from several replicas at once; call it
    /// periodically (e.g. daily).
    async fn prune_history(&self, now: SystemTime) -> Result<u64, ProxyError>;

    /// Erases a tenant's proxy data, when the tenant is purged: removes every lease of
    /// `tenant` (freeing their endpoints' capacity) and every history entry of its chips,
    /// leased or released, in one atomic step, and returns how many leases were removed (0
    /// for a tenant the store knows nothing of). Other tenants are untouched, and so are
    /// endpoint health records and the chips' highest generations: a chip of a tenant id
    /// created again continues past every generation it had, so a late report about a purged
    /// lease is [`LeaseUpdate::Superseded`]. Idempotent (a second call returns 0) and safe to
    /// retry. A lease allocated for the tenant after the call (a chip not stopped first) is
    /// an ordinary lease: stop the tenant's chips before purging.
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, ProxyError>;
}

/// What a backend knows about one candidate when choosing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CandidateState {
    /// Active leases on the endpoint, not counting the requesting chip's own.
    pub leases: u32,
    /// Active leases of other tenants on it.
    pub other_tenant_leases: u32,
    /// Marked unhealthy.
    pub unhealthy: bool,
}

/// The one choice rule every backend applies (see [`LeaseStore`]).
pub(crate) fn choose(
    candidates: &[Candidate],
    state: impl Fn(&EndpointId) -> CandidateState,
) -> Option<&Candidate> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(index, candidate)| {
            let s = state(&candidate.endpoint);
            let eligible = !s.unhealthy
                && s.leases < candidate.cap
                && !(candidate.exclusive && s.other_tenant_leases > 0);
            eligible.then_some((candidate.tier, s.leases, index, candidate))
        })
        .min_by_key(|&(tier, leases, index, _)| (tier, leases, index))
        .map(|(_, _, _, candidate)| candidate)
}

pub(crate) fn all_busy(tenant: &TenantId, chip: &ChipId) -> ProxyError {
    ProxyError::NoCapacity {
        tenant: tenant.clone(),
        chip: chip.clone(),
        reason: NoCapacityReason::AllBusy,
    }
}

pub(crate) fn not_leased(tenant: &TenantId, chip: &ChipId) -> ProxyError {
    ProxyError::NotLeased {
        tenant: tenant.clone(),
        chip: chip.clone(),
    }
}

pub(crate) fn new_lease(
    request: &AllocationRequest,
    candidate: &Candidate,
    generation: u64,
) -> ProxyLease {
    ProxyLease {
        tenant: request.tenant.clone(),
        chip: request.chip.clone(),
        endpoint: candidate.endpoint.clone(),
        session_id: candidate.session_id.clone(),
        country: candidate.country,
        generation,
        assigned_at: request.now,
        health: LeaseHealth::Healthy,
        consecutive_failures: 0,
        last_failure_at: None,
        egress_ip: None,
    }
}
