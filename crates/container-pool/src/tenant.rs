//! The seams to the tenant directory: API keys and incarnations, existence, chip activity.
//!
//! [`TenantKeys`] and [`TenantExists`] are implemented for every
//! [`tenant_isolation::TenantDirectory`], so a host passes its directory as it is.

use std::sync::Arc;

use async_trait::async_trait;
use tenant_isolation::{TenantDirectory, TenantStatus};

use crate::Error;

pub use tenant_isolation::{Incarnation, TenantId};
pub use waha_client::ApiKey;

/// Where the pool gets what it needs of a tenant's record: its container API key (from the
/// tenant's secrets) and its incarnation.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TenantKeys: Send + Sync {
    /// The API key the tenant's containers are started with and the endpoint carries.
    async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error>;

    /// The tenant's incarnation (minted when the tenant was created; a tenant id reused after
    /// a purge has a new one). The pool labels the tenant's containers and volumes with it
    /// ([`labels::INCARNATION`](crate::labels::INCARNATION)) and never mounts a volume, or
    /// uses a container, labelled with another one: a reused tenant id does not inherit the
    /// old tenant's WhatsApp logins.
    async fn incarnation(&self, tenant: &TenantId) -> Result<Incarnation, Error>;
}

/// Whether a tenant still exists, for the orphan sweep.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TenantExists: Send + Sync {
    /// `false` when the tenant is unknown or deleted: its containers are orphans.
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, Error>;
}

/// How many chips run in a container, for idle reaping.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChipActivity: Send + Sync {
    /// Chips of `tenant` in slot `slot` that should be running now.
    async fn running_chips(&self, tenant: &TenantId, slot: u32) -> Result<u32, Error>;
}

fn directory_error(tenant: &TenantId, e: tenant_isolation::Error) -> Error {
    // tenant-isolation's errors never carry secret values.
    Error::TenantDirectory {
        tenant: tenant.clone(),
        source: Arc::new(e),
    }
}

#[async_trait]
impl<D: TenantDirectory + ?Sized> TenantKeys for D {
    async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error> {
        let record = self
            .get(tenant)
            .await
            .map_err(|e| directory_error(tenant, e))?;
        Ok(record.secrets.container_api_key)
    }

    async fn incarnation(&self, tenant: &TenantId) -> Result<Incarnation, Error> {
        let record = self
            .get(tenant)
            .await
            .map_err(|e| directory_error(tenant, e))?;
        Ok(record.incarnation)
    }
}

#[async_trait]
impl<D: TenantDirectory + ?Sized> TenantExists for D {
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, Error> {
        match self.get(tenant).await {
            Ok(record) => Ok(record.status != TenantStatus::Deleted),
            Err(tenant_isolation::Error::TenantNotFound { .. }) => Ok(false),
            Err(e) => Err(directory_error(tenant, e)),
        }
    }
}

/// Shares one directory as both seams: `Arc<dyn TenantDirectory>` → `Arc<dyn TenantKeys>`.
pub fn keys_from_directory(directory: Arc<dyn TenantDirectory>) -> Arc<dyn TenantKeys> {
    Arc::new(DirectoryKeys(directory))
}

struct DirectoryKeys(Arc<dyn TenantDirectory>);

#[async_trait]
impl TenantKeys for DirectoryKeys {
    async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error> {
        self.0.container_api_key(tenant).await
    }

    async fn incarnation(&self, tenant: &TenantId) -> Result<Incarnation, Error> {
        self.0.incarnation(tenant).await
    }
}
