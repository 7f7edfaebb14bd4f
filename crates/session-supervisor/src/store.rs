//! The `ChipStore` seam: chip records, signals, the work queue and tenant ownership
//! (`docs/session-supervisor.md`, 7.1). [`MemoryChipStore`] is always compiled; `PgChipStore`
//! (PostgreSQL, shared by replicas) with the feature `postgres`. The
//! [`conformance`](crate::conformance) suite holds every backend to the contract below.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenant_isolation::{ChipId, TenantId};

use crate::chip::{ChipKey, ChipRecord, ChipSpec, Desired, ObservedPatch};
use crate::signal::{Signal, SignalBody};

mod memory;
#[cfg(feature = "postgres")]
mod pg;

pub use memory::MemoryChipStore;
#[cfg(feature = "postgres")]
pub use pg::PgChipStore;

/// A chip to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChip {
    /// The chip.
    pub key: ChipKey,
    /// What the host asked for.
    pub spec: ChipSpec,
    /// Whether the caller reserved the chip's quota slot before creating it (it should: the
    /// order is tenant active, reserve, create).
    pub chip_slot: bool,
}

/// What [`ChipStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The chip was recorded (both versions 1, `Pending`, work due now).
    Created(ChipRecord),
    /// A chip with this key exists; it is returned unchanged (compare the spec to tell an
    /// idempotent repeat from a conflict).
    Existing(ChipRecord),
}

impl CreateOutcome {
    /// The record, created or existing.
    pub fn record(&self) -> &ChipRecord {
        match self {
            CreateOutcome::Created(record) | CreateOutcome::Existing(record) => record,
        }
    }
}

/// Why a chip was queued for a reconcile (metrics and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trigger {
    /// The chip was created.
    Created,
    /// An API call changed its desired state.
    Api,
    /// `observe` appended a signal.
    Signal,
    /// A pool event (container removed, stopped, failed).
    Pool,
    /// The container runtime reported a death.
    Runtime,
    /// A quota slot was released.
    Quota,
    /// A monitor (silence, lease health, expired offers).
    Monitor,
    /// The periodic resync, or the requeue a `Wait` asked for.
    Resync,
}

/// The id of a supervisor process (host, pid and a ULID, for example).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerId(String);

impl OwnerId {
    /// Wraps an owner id.
    pub fn new(id: impl Into<String>) -> Self {
        OwnerId(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof of ownership of a tenant: the fencing token its owner lease was acquired with.
/// Tokens grow by one on every change of owner and are never reused, also after a release or
/// a purge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The tenant.
    pub tenant: TenantId,
    /// The token.
    pub token: u64,
}

/// Which version a compare-and-set compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionKind {
    /// `desired_version`.
    Desired,
    /// `observed_version`.
    Observed,
}

impl fmt::Display for VersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionKind::Desired => "desired",
            VersionKind::Observed => "observed",
        })
    }
}

/// Everything a [`ChipStore`] can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such chip.
    #[error("chip {key} not found")]
    NotFound {
        /// The chip.
        key: ChipKey,
    },
    /// A compare-and-set lost: re-read and decide again (not a failure of the chip).
    #[error("chip {key}: {which} version is {actual}, not the expected {expected}")]
    VersionConflict {
        /// The chip.
        key: ChipKey,
        /// Which version.
        which: VersionKind,
        /// What the caller expected.
        expected: u64,
        /// What the record has.
        actual: u64,
    },
    /// The writer's fence is not the tenant's current one: another process owns the tenant.
    /// Stop all work on it at once; nothing was written.
    #[error("tenant {tenant} is owned under token {current}, not {held}: this process lost it")]
    StaleOwner {
        /// The tenant.
        tenant: TenantId,
        /// The token the writer held.
        held: u64,
        /// The tenant's current token.
        current: u64,
    },
    /// Stored data does not decode; repair the row by hand.
    #[error("stored chip data is corrupt: {detail}")]
    Corrupt {
        /// What is wrong (never a secret).
        detail: String,
    },
    /// The database failed; [`StoreError::is_retryable`] asks it whether retrying can help.
    #[error("chip store database: {0}")]
    Database(#[source] tenant_isolation::Error),
}

impl StoreError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::VersionConflict { .. } => "version_conflict",
            StoreError::StaleOwner { .. } => "stale_owner",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Database(_) => "database",
        }
    }

    /// Whether the same call may succeed later without changing anything: only a database
    /// failure the database classifies as retryable. (A version conflict calls for a re-read,
    /// not a retry of the same write.)
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(source) => source.is_retryable(),
            StoreError::NotFound { .. }
            | StoreError::VersionConflict { .. }
            | StoreError::StaleOwner { .. }
            | StoreError::Corrupt { .. } => false,
        }
    }
}

/// Where chips live. The contract every backend honours (checked by
/// [`conformance`](crate::conformance)):
///
/// - **Records.** `create` is idempotent on the key: an existing chip is returned unchanged as
///   [`CreateOutcome::Existing`]. A new one has both versions at 1, phase `Pending`, and work
///   due at once. `list` is one tenant's chips ordered by chip id, after `after`, at most
///   `limit`; no call ever returns another tenant's chip. Every record a call returns is
///   shown as of the store's clock: a pairing code whose `expires_at` has passed is dropped
///   from it (as [`LoginOffer::scrubbed`](crate::LoginOffer::scrubbed) does), also before the
///   next owner write drops it from the stored row.
/// - **Desired state** (API writes, any replica, not fenced): `update_desired` is a
///   compare-and-set on `desired_version`, which it bumps; observed state is untouched.
/// - **Observed state** (the owner only): `write_observed` checks the fence first
///   ([`StoreError::StaleOwner`]), then `observed_version` (compare-and-set), then replaces
///   the observed state, appends the step to the log (32 kept), bumps `observed_version`,
///   drops an expired pairing code and trims the chip's signals up to
///   `observed.signals_applied`, all in one write. `remove` is fenced and versioned the same
///   way and removes the record, its signals and its work.
/// - **Signals** (any replica): numbered per chip, increasing, never reused while the chip
///   exists (also after trimming or coalescing); kept in order of their numbers, at most 64
///   per chip. Activity is coalesced: a new [`SignalBody::Activity`] replaces the pending
///   one (the kept one has the new number and the later of the two times), so a chip has at
///   most one. When 64 are kept, the oldest signal that is not a disconnect makes room; a
///   pending disconnect is never dropped for activity (an activity that finds 64 pending
///   disconnects is numbered but not kept), only for a newer disconnect or status.
/// - **Work**: `enqueue` keeps the earliest due time of a chip; `enqueue` of a chip with no
///   record is ignored (`Ok`, nothing queued), so a late trigger for a removed or purged chip
///   never creates work, nor makes its tenant acquirable. `take_due` returns the due
///   chips of the tenants the given fences still own (each is the tenant's current fence: an
///   expired lease still takes until another owner acquires the tenant), earliest first, and
///   marks them taken until they are enqueued again; a new owner's `acquire` makes all of its
///   tenants' chips due at once, also those taken (in flight) under the old fence (it
///   re-reads every record).
/// - **Ownership**, per tenant: `acquire` takes up to `limit` tenants that have work (queued or
///   in flight) and no live owner, each under a new token (+1, never reused); a lease is live until its expiry
///   (expiry on the store's clock). `renew` extends the leases still held under the same
///   token and returns those; `release` gives them up at once.
/// - **Purge**: `purge_tenant` removes one tenant's records, signals and work and clears its
///   owner and its current fence, keeping its token so a tenant created again under the same id
///   never reuses one: the old owner's fence is refused from the purge on (`StaleOwner` on
///   writes, nothing taken), also once chips are created again under the same id.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChipStore: Send + Sync {
    /// Records a chip, or returns the existing one.
    async fn create(&self, new: NewChip) -> Result<CreateOutcome, StoreError>;

    /// One chip.
    async fn get(&self, key: &ChipKey) -> Result<Option<ChipRecord>, StoreError>;

    /// A page of one tenant's chips, ordered by chip id.
    async fn list<'a>(
        &self,
        tenant: &TenantId,
        after: Option<&'a ChipId>,
        limit: u32,
    ) -> Result<Vec<ChipRecord>, StoreError>;

    /// Replaces the desired state if `desired_version` is `expected`.
    async fn update_desired(
        &self,
        key: &ChipKey,
        expected: u64,
        desired: Desired,
    ) -> Result<ChipRecord, StoreError>;

    /// Writes an owner's step if `fence` is current and `observed_version` is `expected`.
    async fn write_observed(
        &self,
        key: &ChipKey,
        expected: u64,
        patch: ObservedPatch,
        fence: &Fence,
    ) -> Result<ChipRecord, StoreError>;

    /// Removes a chip (its last finalizer) if `fence` is current and `observed_version` is
    /// `expected`.
    async fn remove(&self, key: &ChipKey, expected: u64, fence: &Fence) -> Result<(), StoreError>;

    /// Appends a signal observed at `at`; returns its number.
    async fn append_signal(
        &self,
        key: &ChipKey,
        at: SystemTime,
        body: SignalBody,
    ) -> Result<u64, StoreError>;

    /// The chip's kept signals numbered above `after`, in order.
    async fn signals_after(&self, key: &ChipKey, after: u64) -> Result<Vec<Signal>, StoreError>;

    /// Queues a chip for a reconcile at `due` (the earliest due time wins); a chip with no
    /// record is ignored (`Ok`, nothing queued).
    async fn enqueue(
        &self,
        key: &ChipKey,
        due: SystemTime,
        trigger: Trigger,
    ) -> Result<(), StoreError>;

    /// Takes up to `limit` chips due at `now` of the tenants `owned` still owns.
    async fn take_due(
        &self,
        owned: &[Fence],
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<ChipKey>, StoreError>;

    /// Acquires up to `limit` tenants that have work and no live owner, for `ttl`.
    async fn acquire(
        &self,
        owner: &OwnerId,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError>;

    /// Extends the leases still held under `held`'s tokens by `ttl`; returns those.
    async fn renew(
        &self,
        owner: &OwnerId,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError>;

    /// Gives up the leases held under `held`'s tokens, so others take over at once.
    async fn release(&self, owner: &OwnerId, held: &[Fence]) -> Result<(), StoreError>;

    /// Removes one tenant's records, signals and work and clears its owner and fence (tokens
    /// are kept); returns how many records were removed.
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, StoreError>;
}
