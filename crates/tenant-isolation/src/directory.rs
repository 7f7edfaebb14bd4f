//! The tenant directory: who the tenants are, their status, limits and secrets.

use async_trait::async_trait;

use crate::error::Error;
use crate::{NewTenant, PlanLimits, Tenant, TenantId, TenantSecrets, TenantStatus};

pub mod memory;

/// The tenant directory.
///
/// Contract (checked for every backend by [`conformance::tenant_directory`](crate::conformance)):
/// - `create` refuses an id that exists or ever existed ([`Error::TenantAlreadyExists`]);
///   a new tenant is [`TenantStatus::Active`];
/// - `get` returns the tenant in any status, or [`Error::TenantNotFound`];
/// - `list` returns every tenant (including suspended and deleted ones) ordered by id;
/// - `set_status` follows [`TenantStatus::can_become`] ([`Error::InvalidStatusTransition`]);
/// - `set_limits` and `set_secrets` refuse a deleted tenant ([`Error::TenantDeleted`]);
/// - limits are validated ([`PlanLimits::validate`]) before anything is stored.
///
/// Operational checks ("may this tenant do X?") go through [`Tenant::ensure_active`] or
/// [`require_active`]: a suspended tenant gets [`Error::TenantSuspended`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TenantDirectory: Send + Sync {
    /// Creates a tenant.
    async fn create(&self, tenant: NewTenant) -> Result<Tenant, Error>;
    /// One tenant, in any status.
    async fn get(&self, id: &TenantId) -> Result<Tenant, Error>;
    /// Every tenant, ordered by id.
    async fn list(&self) -> Result<Vec<Tenant>, Error>;
    /// Changes a tenant's status.
    async fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant, Error>;
    /// Replaces a tenant's plan limits.
    async fn set_limits(&self, id: &TenantId, limits: PlanLimits) -> Result<Tenant, Error>;
    /// Replaces (rotates) a tenant's secrets.
    async fn set_secrets(&self, id: &TenantId, secrets: TenantSecrets) -> Result<Tenant, Error>;
    /// Replaces a tenant's secrets with `new` only if they still are `expected` (a
    /// compare-and-set over every secret, atomic in each backend), so two rotations running at
    /// once never overwrite each other's key.
    ///
    /// # Errors
    /// [`Error::SecretsChanged`] when the stored secrets are not `expected` (re-read and
    /// decide again; nothing changed); [`Error::TenantNotFound`], [`Error::TenantDeleted`], or
    /// the backend's error.
    async fn replace_secrets(
        &self,
        id: &TenantId,
        expected: &TenantSecrets,
        new: TenantSecrets,
    ) -> Result<Tenant, Error>;
}

/// The tenant, if it is active.
///
/// # Errors
/// [`Error::TenantNotFound`], [`Error::TenantSuspended`], [`Error::TenantDeleted`], or the
/// backend's error.
pub async fn require_active(
    directory: &dyn TenantDirectory,
    id: &TenantId,
) -> Result<Tenant, Error> {
    let tenant = directory.get(id).await?;
    tenant.ensure_active()?;
    Ok(tenant)
}
