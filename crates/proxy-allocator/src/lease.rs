//! Leases, their health and history, and the requests a [`crate::LeaseStore`] answers.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::country::CountryCode;
use crate::endpoint::EndpointId;
use tenant_isolation::{ChipId, TenantId};

/// A chip's hold on an egress endpoint (and, on a gateway, on one sticky session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLease {
    /// The tenant owning the chip.
    pub tenant: TenantId,
    /// The chip.
    pub chip: ChipId,
    /// The endpoint the chip's traffic goes through.
    pub endpoint: EndpointId,
    /// The gateway session id, for gateway endpoints.
    pub session_id: Option<String>,
    /// The country requested from a gateway for this lease (fixed endpoints: `None`).
    pub country: Option<CountryCode>,
    /// Which of the chip's leases this is: one more than the highest generation the chip ever
    /// had (1 for its first lease, +1 per rotation, and a lease allocated after a release
    /// continues from the released one's), so it is unique across the chip's lease lifetimes.
    /// A rotation names the generation it replaces, so two replicas cannot rotate the same
    /// lease twice, and failure and success reports name the generation they are about, so a
    /// report about an earlier lease never counts against this one.
    pub generation: u64,
    /// When this generation was assigned.
    pub assigned_at: SystemTime,
    /// The last health verdict.
    pub health: LeaseHealth,
    /// Failures reported since the last success or rotation.
    pub consecutive_failures: u32,
    /// When the last failure was reported.
    pub last_failure_at: Option<SystemTime>,
    /// The egress IP last observed through this lease.
    pub egress_ip: Option<IpAddr>,
}

/// Health of a lease or an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LeaseHealth {
    /// Not known to be failing.
    Healthy,
    /// The last check through it failed.
    Unhealthy {
        /// Why (an error message, free of secrets).
        reason: String,
    },
}

impl LeaseHealth {
    /// Whether this is [`LeaseHealth::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, LeaseHealth::Healthy)
    }
}

/// One event in a chip's proxy history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHistoryEntry {
    /// When it happened.
    pub at: SystemTime,
    /// The endpoint concerned.
    pub endpoint: EndpointId,
    /// The gateway session concerned.
    pub session_id: Option<String>,
    /// The lease generation concerned.
    pub generation: u64,
    /// What happened.
    pub event: HistoryEvent,
}

/// What happened to a chip's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HistoryEvent {
    /// The chip got this endpoint (first allocation or after a rotation).
    Assigned,
    /// The chip left this endpoint after repeated failures or because the endpoint is gone.
    RotatedAway {
        /// Why.
        reason: String,
    },
    /// The lease was released (chip deleted).
    Released,
    /// A check through the lease saw a different egress IP than before.
    EgressIpChanged {
        /// The previous IP (`None` on the first observation).
        from: Option<IpAddr>,
        /// The IP now seen.
        to: IpAddr,
    },
    /// The lease was marked unhealthy.
    MarkedUnhealthy {
        /// Why.
        reason: String,
    },
    /// The lease was healthy again after being unhealthy.
    Recovered,
}

impl HistoryEvent {
    /// The event recorded when a lease's health becomes `health`.
    pub(crate) fn health_change(health: &LeaseHealth) -> Self {
        match health {
            LeaseHealth::Healthy => HistoryEvent::Recovered,
            LeaseHealth::Unhealthy { reason } => HistoryEvent::MarkedUnhealthy {
                reason: reason.clone(),
            },
        }
    }
}

/// One endpoint a request may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Preference tier: the store uses the lowest tier that has room (0 = country match).
    pub tier: u8,
    /// The most active leases the endpoint may carry.
    pub cap: u32,
    /// Tenant exclusivity: the endpoint is eligible only if no other tenant holds a lease on it.
    pub exclusive: bool,
    /// For a gateway: the session id and country the new lease gets on this endpoint.
    pub session_id: Option<String>,
    /// The country recorded on the lease (gateways).
    pub country: Option<CountryCode>,
}

/// What a [`crate::LeaseStore::allocate`] call should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    /// The tenant.
    pub tenant: TenantId,
    /// The chip.
    pub chip: ChipId,
    /// Eligible endpoints in preference order.
    pub candidates: Vec<Candidate>,
    /// `None`: return the chip's lease if it has one, else create one. `Some(generation)`:
    /// replace the lease of that generation with one on another candidate (rotation); if the
    /// chip's lease has another generation already, return it unchanged.
    pub replace: Option<Replace>,
    /// The time to record.
    pub now: SystemTime,
}

/// A rotation's expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// The generation being replaced.
    pub generation: u64,
    /// Why (recorded in history).
    pub reason: String,
}

/// The result of [`crate::LeaseStore::allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// The chip already held this lease (stickiness, or someone else rotated first).
    Existing(ProxyLease),
    /// A new lease was created.
    Created(ProxyLease),
    /// The lease was replaced by this one.
    Rotated(ProxyLease),
}

impl Allocation {
    /// The lease, whatever happened.
    pub fn lease(&self) -> &ProxyLease {
        match self {
            Allocation::Existing(l) | Allocation::Created(l) | Allocation::Rotated(l) => l,
        }
    }

    /// The lease, whatever happened.
    pub fn into_lease(self) -> ProxyLease {
        match self {
            Allocation::Existing(l) | Allocation::Created(l) | Allocation::Rotated(l) => l,
        }
    }
}

/// The result of a report about one lease generation ([`crate::LeaseStore::record_failure`],
/// [`crate::LeaseStore::record_success`], [`crate::LeaseStore::set_lease_health`]).
///
/// A report is about the connection the caller made through the lease it read. If the chip was
/// rotated since (by another replica, or by an earlier report), that connection went through the
/// old endpoint or session: counting it against the new lease would blame a proxy the caller
/// never used. So a report names the generation it is about and is applied only while the chip's
/// lease still has that generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseUpdate {
    /// The chip's lease had the generation named: the report was applied. The lease after it.
    Applied(ProxyLease),
    /// The chip's lease has another generation: nothing changed. The chip's current lease,
    /// which the caller should switch to.
    Superseded(ProxyLease),
}

impl LeaseUpdate {
    /// The lease, whatever happened.
    pub fn lease(&self) -> &ProxyLease {
        match self {
            LeaseUpdate::Applied(l) | LeaseUpdate::Superseded(l) => l,
        }
    }

    /// The lease, whatever happened.
    pub fn into_lease(self) -> ProxyLease {
        match self {
            LeaseUpdate::Applied(l) | LeaseUpdate::Superseded(l) => l,
        }
    }

    /// Whether the report was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, LeaseUpdate::Applied(_))
    }
}

/// The result of recording an egress IP observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressIpChange {
    /// The first IP seen for this lease.
    First(IpAddr),
    /// The same IP as last time.
    Unchanged(IpAddr),
    /// A different IP than last time.
    Changed {
        /// The previous IP.
        from: IpAddr,
        /// The new IP.
        to: IpAddr,
    },
}

impl EgressIpChange {
    /// Compares a new observation with the previous one.
    pub(crate) fn observe(previous: Option<IpAddr>, ip: IpAddr) -> Self {
        match previous {
            None => EgressIpChange::First(ip),
            Some(from) if from == ip => EgressIpChange::Unchanged(ip),
            Some(from) => EgressIpChange::Changed { from, to: ip },
        }
    }
}

/// The result of [`crate::LeaseStore::record_egress_ip`], which, like [`LeaseUpdate`], names
/// the lease generation the observation was made through and is applied only while the chip's
/// lease still has it: an IP seen through a proxy the chip has left is not the new lease's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressIpUpdate {
    /// The chip's lease had the generation named: the observation was recorded.
    Applied {
        /// How the IP compares with the one recorded before on this lease.
        change: EgressIpChange,
        /// The lease after it.
        lease: ProxyLease,
    },
    /// The chip's lease has another generation: nothing changed (no IP recorded, no history).
    /// The chip's current lease.
    Superseded(ProxyLease),
}

impl EgressIpUpdate {
    /// The lease, whatever happened.
    pub fn lease(&self) -> &ProxyLease {
        match self {
            EgressIpUpdate::Applied { lease, .. } | EgressIpUpdate::Superseded(lease) => lease,
        }
    }

    /// The change, if the observation was recorded.
    pub fn change(&self) -> Option<EgressIpChange> {
        match self {
            EgressIpUpdate::Applied { change, .. } => Some(*change),
            EgressIpUpdate::Superseded(_) => None,
        }
    }

    /// Whether the observation was recorded.
    pub fn is_applied(&self) -> bool {
        matches!(self, EgressIpUpdate::Applied { .. })
    }
}

/// Active leases per endpoint, as reported by [`crate::LeaseStore::endpoint_loads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLoad {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Active leases on it.
    pub leases: u32,
    /// Distinct tenants among them.
    pub tenants: u32,
    /// The endpoint's health.
    pub health: LeaseHealth,
}
