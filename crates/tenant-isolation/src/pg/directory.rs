//! The PostgreSQL tenant directory (administration: goes through [`AdminDb`]).

use std::fmt;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{AdminDb, stored_u32, to_i32};
use crate::error::Error;
use crate::{
    ApiKey, HmacKey, Incarnation, NewTenant, PlanLimits, Tenant, TenantDirectory, TenantId,
    TenantSecrets, TenantStatus,
};

pub(crate) const TENANT_COLUMNS: &str = "tenant_id, incarnation, status, max_chips, \
     max_running_sessions, max_sends_per_day, container_api_key, webhook_hmac_key, \
     previous_webhook_hmac_key";

/// Decodes a `tenants` row, re-validating everything (data written around this crate is
/// reported as [`Error::CorruptData`], never trusted).
pub(crate) fn tenant_from_row(row: &Row) -> Result<Tenant, Error> {
    let raw_id: String = row.try_get("tenant_id")?;
    let id = TenantId::new(raw_id.as_str()).map_err(|e| Error::CorruptData {
        detail: format!("tenants.tenant_id: {e}"),
    })?;
    let incarnation =
        Incarnation::parse(&row.try_get::<_, String>("incarnation")?).map_err(|e| {
            Error::CorruptData {
                detail: format!("tenants.incarnation of tenant {id}: {e}"),
            }
        })?;
    let status: TenantStatus = row.try_get::<_, String>("status")?.parse()?;
    let limits = PlanLimits::new(
        stored_u32(row.try_get("max_chips")?, "max_chips")?,
        stored_u32(row.try_get("max_running_sessions")?, "max_running_sessions")?,
        stored_u32(row.try_get("max_sends_per_day")?, "max_sends_per_day")?,
    );
    let corrupt_secret = |what: &str| {
        let what = what.to_owned();
        let tenant = id.clone();
        move |_| Error::CorruptData {
            detail: format!("the stored {what} of tenant {tenant} is not valid"),
        }
    };
    let secrets = TenantSecrets {
        container_api_key: ApiKey::new(row.try_get::<_, String>("container_api_key")?)
            .map_err(corrupt_secret("container API key"))?,
        webhook_hmac_key: HmacKey::new(row.try_get::<_, String>("webhook_hmac_key")?)
            .map_err(corrupt_secret("webhook HMAC key"))?,
        previous_webhook_hmac_key: row
            .try_get::<_, Option<String>>("previous_webhook_hmac_key")?
            .map(HmacKey::new)
            .transpose()
            .map_err(corrupt_secret("previous webhook HMAC key"))?,
    };
    Ok(Tenant::new(id, incarnation, status, limits, secrets))
}

/// Locks the tenant's row for the rest of `tx` and reads its status.
async fn lock_status(
    tx: &tokio_postgres::Transaction<'_>,
    id: &TenantId,
) -> Result<TenantStatus, Error> {
    let row = tx
        .query_opt(
            "SELECT status FROM tenants WHERE tenant_id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await?
        .ok_or_else(|| Error::TenantNotFound { tenant: id.clone() })?;
    row.try_get::<_, String>(0)?.parse()
}

/// The tenant directory in PostgreSQL. Creating, listing and changing tenants is cross-tenant
/// administration, so it goes through the explicitly named [`AdminDb`]. (A tenant-scoped
/// transaction can read its own entry with [`TenantTx::tenant_record`](super::TenantTx::tenant_record).)
#[derive(Clone)]
pub struct PgTenantDirectory {
    admin: AdminDb,
}

impl fmt::Debug for PgTenantDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTenantDirectory").finish_non_exhaustive()
    }
}

impl PgTenantDirectory {
    /// A directory over `admin`.
    pub fn new(admin: AdminDb) -> Self {
        PgTenantDirectory { admin }
    }

    /// Runs `sql` (an `UPDATE ... RETURNING` of one tenant) in a transaction that first locks
    /// the row and says why it cannot change (missing, deleted), and commits only when the
    /// returned row reads back whole: a stored value that is corrupt fails the call and the
    /// change is rolled back, so nothing is half-applied.
    async fn update_live(
        &self,
        id: &TenantId,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Tenant, Error> {
        let mut conn = self.admin.connection().await?;
        let tx = conn.transaction().await?;
        let status = lock_status(&tx, id).await?;
        if status == TenantStatus::Deleted {
            return Err(Error::TenantDeleted { tenant: id.clone() });
        }
        // No row: the statement's own condition refused (a compare-and-set).
        let row = tx
            .query_opt(sql, params)
            .await?
            .ok_or_else(|| Error::SecretsChanged { tenant: id.clone() })?;
        // Dropping `tx` on an error rolls the update back.
        let tenant = tenant_from_row(&row)?;
        tx.commit().await?;
        Ok(tenant)
    }
}

#[async_trait]
impl TenantDirectory for PgTenantDirectory {
    async fn create(&self, new: NewTenant) -> Result<Tenant, Error> {
        new.limits.validate()?;
        let conn = self.admin.connection().await?;
        let sql = format!(
            "INSERT INTO tenants (tenant_id, status, max_chips, max_running_sessions,
                                  max_sends_per_day, container_api_key, webhook_hmac_key,
                                  incarnation, previous_webhook_hmac_key)
             VALUES ($1, 'active', $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id) DO NOTHING
             RETURNING {TENANT_COLUMNS}"
        );
        let row = conn
            .query_opt(
                &sql,
                &[
                    &new.id.as_str(),
                    &to_i32(new.limits.max_chips),
                    &to_i32(new.limits.max_running_sessions),
                    &to_i32(new.limits.max_sends_per_day),
                    &new.secrets.container_api_key.expose_secret(),
                    &new.secrets.webhook_hmac_key.expose_secret(),
                    &new.incarnation.as_str(),
                    &new.secrets
                        .previous_webhook_hmac_key
                        .as_ref()
                        .map(HmacKey::expose_secret),
                ],
            )
            .await?;
        match row {
            Some(row) => {
                tracing::info!(tenant = %new.id, "tenant created");
                tenant_from_row(&row)
            }
            None => Err(Error::TenantAlreadyExists { tenant: new.id }),
        }
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant, Error> {
        let conn = self.admin.connection().await?;
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1");
        match conn.query_opt(&sql, &[&id.as_str()]).await? {
            Some(row) => tenant_from_row(&row),
            None => Err(Error::TenantNotFound { tenant: id.clone() }),
        }
    }

    async fn list(&self) -> Result<Vec<Tenant>, Error> {
        let conn = self.admin.connection().await?;
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant_id COLLATE \"C\"");
        conn.query(&sql, &[])
            .await?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant, Error> {
        let mut conn = self.admin.connection().await?;
        let tx = conn.transaction().await?;
        let from = lock_status(&tx, id).await?;
        if !from.can_become(status) {
            return Err(Error::InvalidStatusTransition {
                tenant: id.clone(),
                from,
                to: status,
            });
        }
        let sql = format!(
            "UPDATE tenants SET status = $2, updated_at = now() WHERE tenant_id = $1
             RETURNING {TENANT_COLUMNS}"
        );
        let row = tx
            .query_one(&sql, &[&id.as_str(), &status.as_str()])
            .await?;
        let tenant = tenant_from_row(&row)?;
        tx.commit().await?;
        tracing::info!(tenant = %id, %status, "tenant status set");
        Ok(tenant)
    }

    async fn set_limits(&self, id: &TenantId, limits: PlanLimits) -> Result<Tenant, Error> {
        limits.validate()?;
        let sql = format!(
            "UPDATE tenants SET max_chips = $2, max_running_sessions = $3, max_sends_per_day = $4,
                    updated_at = now()
              WHERE tenant_id = $1 RETURNING {TENANT_COLUMNS}"
        );
        self.update_live(
            id,
            &sql,
            &[
                &id.as_str(),
                &to_i32(limits.max_chips),
                &to_i32(limits.max_running_sessions),
                &to_i32(limits.max_sends_per_day),
            ],
        )
        .await
    }

    async fn set_secrets(&self, id: &TenantId, secrets: TenantSecrets) -> Result<Tenant, Error> {
        let sql = format!(
            "UPDATE tenants SET container_api_key = $2, webhook_hmac_key = $3,
                    previous_webhook_hmac_key = $4, updated_at = now()
              WHERE tenant_id = $1 RETURNING {TENANT_COLUMNS}"
        );
        self.update_live(
            id,
            &sql,
            &[
                &id.as_str(),
                &secrets.container_api_key.expose_secret(),
                &secrets.webhook_hmac_key.expose_secret(),
                &secrets
                    .previous_webhook_hmac_key
                    .as_ref()
                    .map(HmacKey::expose_secret),
            ],
        )
        .await
    }

    async fn replace_secrets(
        &self,
        id: &TenantId,
        expected: &TenantSecrets,
        new: TenantSecrets,
    ) -> Result<Tenant, Error> {
        // The row is locked by `update_live`; the condition compares every secret.
        let sql = format!(
            "UPDATE tenants SET container_api_key = $2, webhook_hmac_key = $3,
                    previous_webhook_hmac_key = $4, updated_at = now()
              WHERE tenant_id = $1 AND container_api_key = $5 AND webhook_hmac_key = $6
                AND previous_webhook_hmac_key IS NOT DISTINCT FROM $7
              RETURNING {TENANT_COLUMNS}"
        );
        self.update_live(
            id,
            &sql,
            &[
                &id.as_str(),
                &new.container_api_key.expose_secret(),
                &new.webhook_hmac_key.expose_secret(),
                &new.previous_webhook_hmac_key
                    .as_ref()
                    .map(HmacKey::expose_secret),
                &expected.container_api_key.expose_secret(),
                &expected.webhook_hmac_key.expose_secret(),
                &expected
                    .previous_webhook_hmac_key
                    .as_ref()
                    .map(HmacKey::expose_secret),
            ],
        )
        .await
    }
}
