//! The in-memory tenant directory.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::error::Error;
use crate::{
    NewTenant, PlanLimits, Tenant, TenantDirectory, TenantId, TenantSecrets, TenantStatus,
};

/// A tenant directory in process memory: for tests, examples and single-process embedding.
#[derive(Debug, Default)]
pub struct MemoryTenantDirectory {
    tenants: RwLock<BTreeMap<TenantId, Tenant>>,
}

impl MemoryTenantDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(
        &self,
        id: &TenantId,
        change: impl FnOnce(&mut Tenant) -> Result<(), Error>,
    ) -> Result<Tenant, Error> {
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let tenant = tenants
            .get_mut(id)
            .ok_or_else(|| Error::TenantNotFound { tenant: id.clone() })?;
        let mut changed = tenant.clone();
        change(&mut changed)?;
        *tenant = changed.clone();
        Ok(changed)
    }
}

fn refuse_deleted(tenant: &Tenant) -> Result<(), Error> {
    if tenant.status == TenantStatus::Deleted {
        return Err(Error::TenantDeleted {
            tenant: tenant.id.clone(),
        });
    }
    Ok(())
}

#[async_trait]
impl TenantDirectory for MemoryTenantDirectory {
    async fn create(&self, new: NewTenant) -> Result<Tenant, Error> {
        new.limits.validate()?;
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        if tenants.contains_key(&new.id) {
            return Err(Error::TenantAlreadyExists { tenant: new.id });
        }
        let tenant = Tenant::new(
            new.id,
            new.incarnation,
            TenantStatus::Active,
            new.limits,
            new.secrets,
        );
        tenants.insert(tenant.id.clone(), tenant.clone());
        tracing::info!(tenant = %tenant.id, "tenant created");
        Ok(tenant)
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant, Error> {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        tenants
            .get(id)
            .cloned()
            .ok_or_else(|| Error::TenantNotFound { tenant: id.clone() })
    }

    async fn list(&self) -> Result<Vec<Tenant>, Error> {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        Ok(tenants.values().cloned().collect())
    }

    async fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant, Error> {
        let tenant = self.update(id, |t| {
            if !t.status.can_become(status) {
                return Err(Error::InvalidStatusTransition {
                    tenant: t.id.clone(),
                    from: t.status,
                    to: status,
                });
            }
            t.status = status;
            Ok(())
        })?;
        tracing::info!(tenant = %id, %status, "tenant status set");
        Ok(tenant)
    }

    async fn set_limits(&self, id: &TenantId, limits: PlanLimits) -> Result<Tenant, Error> {
        limits.validate()?;
        self.update(id, |t| {
            refuse_deleted(t)?;
            t.limits = limits;
            Ok(())
        })
    }

    async fn set_secrets(&self, id: &TenantId, secrets: TenantSecrets) -> Result<Tenant, Error> {
        self.update(id, |t| {
            refuse_deleted(t)?;
            t.secrets = secrets;
            Ok(())
        })
    }

    async fn replace_secrets(
        &self,
        id: &TenantId,
        expected: &TenantSecrets,
        new: TenantSecrets,
    ) -> Result<Tenant, Error> {
        self.update(id, |t| {
            refuse_deleted(t)?;
            if t.secrets != *expected {
                return Err(Error::SecretsChanged {
                    tenant: t.id.clone(),
                });
            }
            t.secrets = new;
            Ok(())
        })
    }
}
