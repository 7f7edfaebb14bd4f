//! Quotas and admission: atomic check-and-reserve of a tenant's plan limits.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::{ChipId, PlanLimits, TenantId, UtcDay};

pub mod memory;

/// A plan limit, as named in [`Error::QuotaExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// [`PlanLimits::max_chips`].
    MaxChips,
    /// [`PlanLimits::max_running_sessions`].
    MaxRunningSessions,
    /// [`PlanLimits::max_sends_per_day`].
    MaxSendsPerDay,
}

impl QuotaLimit {
    /// `max_chips`, `max_running_sessions` or `max_sends_per_day`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::MaxChips => "max_chips",
            QuotaLimit::MaxRunningSessions => "max_running_sessions",
            QuotaLimit::MaxSendsPerDay => "max_sends_per_day",
        }
    }
}

impl fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of slot a chip holds against its tenant's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// The chip exists (counts against [`QuotaLimit::MaxChips`]).
    Chip,
    /// The chip's session is running (counts against [`QuotaLimit::MaxRunningSessions`]).
    RunningSession,
}

impl SlotKind {
    /// The limit this kind of slot counts against.
    pub fn limit(self) -> QuotaLimit {
        match self {
            SlotKind::Chip => QuotaLimit::MaxChips,
            SlotKind::RunningSession => QuotaLimit::MaxRunningSessions,
        }
    }

    /// `chip` or `running_session`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Chip => "chip",
            SlotKind::RunningSession => "running_session",
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A granted (or already held) slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// The tenant.
    pub tenant: TenantId,
    /// The slot's kind.
    pub kind: SlotKind,
    /// The chip holding it.
    pub chip: ChipId,
    /// `false` when the chip already held this slot (reserving is idempotent).
    pub newly_reserved: bool,
    /// Slots of this kind in use after the call.
    pub in_use: u32,
    /// The limit.
    pub max: u32,
}

/// A granted send, counted against [`QuotaLimit::MaxSendsPerDay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendAdmission {
    /// The UTC day it counts against.
    pub day: UtcDay,
    /// Sends counted that day, this one included.
    pub sent: u32,
    /// The limit.
    pub max: u32,
}

/// A tenant's quota usage.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// Its current limits.
    pub limits: PlanLimits,
    /// Chip slots in use.
    pub chips: u32,
    /// Running-session slots in use.
    pub running_sessions: u32,
    /// Sends counted today.
    pub sends_today: u32,
    /// Today (UTC).
    pub day: UtcDay,
}

/// Admission control against a tenant's [`PlanLimits`].
///
/// Contract (checked for every backend by [`conformance::quota_ledger`](crate::conformance)):
/// - `reserve` is an atomic check-and-reserve: however many callers race, the number of held
///   slots of a kind never exceeds the tenant's limit; a refused caller gets
///   [`Error::QuotaExceeded`] naming the limit. Reserving a slot the chip already holds
///   succeeds without consuming another ([`Reservation::newly_reserved`] is `false`);
/// - a [`SlotKind::RunningSession`] slot needs the chip's [`SlotKind::Chip`] slot: without it,
///   `reserve` answers [`Error::ChipSlotRequired`] and reserves nothing;
/// - `reserve` sees every status or limit change that completed before it took its lock
///   (it never acts on a status read before waiting for another reservation);
/// - `reserve` and `admit_send` refuse a suspended or deleted tenant with
///   [`Error::TenantSuspended`] / [`Error::TenantDeleted`] and an unknown one with
///   [`Error::TenantNotFound`];
/// - `release` always works (also for suspended and deleted tenants) and is idempotent; it
///   returns whether a slot was freed. Releasing [`SlotKind::Chip`] is how a chip deletion
///   frees its slots: it also releases that chip's [`SlotKind::RunningSession`] slot;
/// - `admit_send` counts one send against today's (UTC) [`QuotaLimit::MaxSendsPerDay`],
///   atomically, and refuses once the limit is reached.
///
/// Lowering a limit below current usage frees nothing: new reservations are refused until
/// usage falls below the new limit.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QuotaLedger: Send + Sync {
    /// Atomically checks the limit and reserves a slot of `kind` for `chip` (a running-session
    /// slot only for a chip that holds its chip slot).
    async fn reserve(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<Reservation, Error>;
    /// Releases `chip`'s slot of `kind` (and, for [`SlotKind::Chip`], its running-session slot).
    async fn release(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<bool, Error>;
    /// The chips holding a slot of `kind`, ordered by id.
    async fn holders(&self, tenant: &TenantId, kind: SlotKind) -> Result<Vec<ChipId>, Error>;
    /// Current usage and limits.
    async fn usage(&self, tenant: &TenantId) -> Result<QuotaUsage, Error>;
    /// Atomically counts one send against today's limit.
    async fn admit_send(&self, tenant: &TenantId) -> Result<SendAdmission, Error>;
}

/// Builds [`Error::QuotaExceeded`] and records it (metric and trace). Shared by all backends.
pub(crate) fn exceeded(tenant: &TenantId, limit: QuotaLimit, max: u32, in_use: u32) -> Error {
    metrics::counter!("tenant_isolation_quota_rejections_total", "limit" => limit.as_str())
        .increment(1);
    tracing::debug!(tenant = %tenant, %limit, max, in_use, "quota exceeded");
    Error::QuotaExceeded {
        tenant: tenant.clone(),
        limit,
        max,
        in_use,
    }
}
