//! [`PgTokenStore`]: the tenants' API token hashes in PostgreSQL, shared by every replica and
//! kept across restarts (the production backend's [`TokenStore`]).

use std::fmt;

use async_trait::async_trait;
use tenant_isolation::TenantId;
use tenant_isolation::pg::{Migration, MigrationSet, TenantDb};

use super::auth::{TokenHash, TokenStore, TokenStoreError};

/// chip-service's migrations, in order. Never edit a released one: add a version.
const TOKEN_MIGRATIONS: &[Migration] = &[Migration::new(
    1,
    "tokens",
    include_str!("../../migrations/0001_tokens.sql"),
)];

/// The tables of [`TOKEN_MIGRATIONS`] that hold tenant rows (row-level security forced).
const TENANT_TABLES: &[&str] = &["chip_service_tokens"];

/// Tenant API token hashes in the tenant table `chip_service_tokens` (one row per tenant:
/// `tenant_id` primary key referring to the directory's `tenants` row, `ON DELETE CASCADE`;
/// `token_hash`, the token's 32-byte SHA-256; `created_at`, when that token was issued).
///
/// Every read and write runs in a transaction scoped to the token's tenant
/// ([`TenantDb::scoped`], the application role, row-level security forced): the tenant a
/// presented token claims is the only tenant whose row the lookup can see. Rotation replaces
/// the row's hash in one statement, so the old token stops working at once on every replica;
/// offboarding deletes the row; erasing the tenant from the directory removes it with the
/// tenant. The token itself is never stored and no error carries a hash.
///
/// Its table comes from [`PgTokenStore::MIGRATIONS`], applied in the host's one migration run
/// (`AdminDb::migrate_with`) next to the other components' sets.
#[derive(Clone)]
pub struct PgTokenStore {
    db: TenantDb,
}

impl fmt::Debug for PgTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTokenStore")
            .field("db", &self.db)
            .finish()
    }
}

impl PgTokenStore {
    /// chip-service's migrations (component `chip-service`, version 1: `chip_service_tokens`,
    /// declared a tenant table): pass it to `tenant_isolation::pg::AdminDb::migrate_with`
    /// (which grants the application role the table and puts it under the admin policy) and
    /// to [`TenantDb::verify_role_with`].
    pub const MIGRATIONS: MigrationSet =
        MigrationSet::new("chip-service", TOKEN_MIGRATIONS).tenant_tables(TENANT_TABLES);

    /// A store over `db`, the application role's pool. No I/O.
    pub fn new(db: TenantDb) -> Self {
        PgTokenStore { db }
    }
}

/// A database failure as the trait's error. The database's message names no hash: the one
/// constraint a hash could break (its length) always holds, and no statement quotes one.
fn unavailable(error: tenant_isolation::Error) -> TokenStoreError {
    TokenStoreError::Unavailable {
        reason: error.to_string(),
    }
}

#[async_trait]
impl TokenStore for PgTokenStore {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TokenHash>, TokenStoreError> {
        let tx = self.db.scoped(tenant).await.map_err(unavailable)?;
        let row = tx
            .query_opt(
                "SELECT token_hash FROM chip_service_tokens WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await;
        let Some(row) = tx.finish_with(row).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row
            .try_get(0)
            .map_err(|error| TokenStoreError::Unavailable {
                reason: format!("reading a stored token hash: {error}"),
            })?;
        let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| TokenStoreError::Unavailable {
            reason: format!("the stored token hash of tenant {tenant} is not 32 bytes"),
        })?;
        Ok(Some(TokenHash::from_bytes(bytes)))
    }

    async fn set(&self, tenant: &TenantId, hash: TokenHash) -> Result<(), TokenStoreError> {
        let bytes = hash.to_bytes();
        let hash: &[u8] = &bytes;
        let tx = self.db.scoped(tenant).await.map_err(unavailable)?;
        let written = tx
            .execute(
                "INSERT INTO chip_service_tokens (tenant_id, token_hash) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE \
                 SET token_hash = EXCLUDED.token_hash, created_at = now()",
                &[&tenant.as_str(), &hash],
            )
            .await;
        tx.finish_with(written).await.map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, tenant: &TenantId) -> Result<bool, TokenStoreError> {
        let tx = self.db.scoped(tenant).await.map_err(unavailable)?;
        let deleted = tx
            .execute(
                "DELETE FROM chip_service_tokens WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await;
        let deleted = tx.finish_with(deleted).await.map_err(unavailable)?;
        Ok(deleted > 0)
    }
}
