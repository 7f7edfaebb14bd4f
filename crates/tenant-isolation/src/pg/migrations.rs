//! Embedded migrations, applied under a transaction-scoped advisory lock.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::error::{Error, IdKind, IdRejection};

/// The advisory lock key every migration run takes (`pg_advisory_xact_lock`): the bytes
/// `"cf_tenan"` as a big-endian `i64`.
pub const ADVISORY_LOCK_KEY: i64 = 0x6366_5f74_656e_616e;

/// The tables this crate owns; each has row-level security forced.
pub(crate) const TABLES: [&str; 5] = [
    "tenants",
    "quota_usage",
    "quota_reservations",
    "daily_sends",
    "tenant_records",
];

/// The tables the application role may write (it only reads `tenants`, its own row).
const APP_WRITABLE: [&str; 4] = [
    "quota_usage",
    "quota_reservations",
    "daily_sends",
    "tenant_records",
];

/// Name of the permissive policy that lets the admin role see every row.
pub(crate) const ADMIN_POLICY: &str = "chipfleet_admin";

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "tenancy",
    sql: include_str!("../../migrations/0001_tenancy.sql"),
}];

/// Who gets which access. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationConfig {
    /// The application role that [`TenantDb`](crate::pg::TenantDb) connects as; it is granted
    /// `SELECT` on `tenants` and `SELECT, INSERT, UPDATE, DELETE` on the tenant-owned tables
    /// (default `chipfleet_app`).
    pub app_role: String,
    /// The role the `chipfleet_admin` policy (see every row) applies to; `None` (the default)
    /// means the role running the migration, i.e. the owner behind [`AdminDb`](crate::pg::AdminDb).
    pub admin_role: Option<String>,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            app_role: "chipfleet_app".into(),
            admin_role: None,
        }
    }
}

/// What a migration run did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
    /// Whether the admin policy had to be (re)created for the configured admin role.
    pub admin_policy_changed: bool,
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Validates a role name and returns it double-quoted for SQL.
fn quoted_role(name: &str) -> Result<String, Error> {
    let bad = |reason| Err(Error::invalid_id(IdKind::Role, name, reason));
    if name.is_empty() {
        return bad(IdRejection::Empty);
    }
    if name.len() > 63 {
        return bad(IdRejection::TooManyBytes {
            len: name.len(),
            max: 63,
        });
    }
    if let Some((at, ch)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return bad(IdRejection::InvalidChar {
            ch,
            at,
            allowed: "A-Z, a-z, 0-9 and '_'",
        });
    }
    Ok(format!("\"{name}\""))
}

/// Runs every pending migration and the access step in ONE transaction holding
/// `pg_advisory_xact_lock(ADVISORY_LOCK_KEY)`.
pub(crate) async fn run(
    client: &mut Client,
    config: &MigrationConfig,
) -> Result<MigrationReport, Error> {
    let app = quoted_role(&config.app_role)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADVISORY_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tenant_isolation_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, checksum FROM tenant_isolation_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, Error>>()?;

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: Vec::new(),
        admin_policy_changed: false,
    };
    for migration in MIGRATIONS {
        let sum = checksum(migration.sql);
        match applied.iter().find(|(v, _)| *v == migration.version) {
            Some((_, stored)) if *stored == sum => report.already_applied.push(migration.version),
            Some(_) => {
                return Err(Error::Migration {
                    version: migration.version,
                    name: migration.name,
                    reason: "it was changed after it had been applied (checksum differs); \
                             add a new migration instead of editing an applied one"
                        .into(),
                });
            }
            None => {
                tx.batch_execute(migration.sql)
                    .await
                    .map_err(|e| Error::Migration {
                        version: migration.version,
                        name: migration.name,
                        reason: match e.as_db_error() {
                            Some(db) => db.message().to_owned(),
                            None => e.to_string(),
                        },
                    })?;
                tx.execute(
                    "INSERT INTO tenant_isolation_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&migration.version, &migration.name, &sum],
                )
                .await?;
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "migration applied"
                );
                report.applied.push(migration.version);
            }
        }
    }
    if let Some((newest, _)) = applied.last()
        && MIGRATIONS.iter().all(|m| m.version < *newest)
    {
        tracing::warn!(
            version = newest,
            "the database has a newer tenant-isolation migration than this build knows"
        );
    }

    // Access: grants (idempotent) and the admin policy (recreated only when it differs).
    let admin_name: String = match &config.admin_role {
        Some(name) => name.clone(),
        None => tx
            .query_one("SELECT current_user::text", &[])
            .await?
            .try_get(0)?,
    };
    let admin = quoted_role(&admin_name)?;
    if admin_name == config.app_role {
        return Err(Error::InvalidConfig {
            reason: "the admin role and the application role must differ".into(),
        });
    }
    for role in [&config.app_role, &admin_name] {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await?
            .is_some();
        if !exists {
            return Err(Error::InvalidConfig {
                reason: format!("database role {role:?} does not exist; create it first"),
            });
        }
    }
    let schema_usage: bool = tx
        .query_one(
            "SELECT has_schema_privilege($1, current_schema(), 'USAGE')",
            &[&config.app_role],
        )
        .await?
        .try_get(0)?;
    if !schema_usage {
        return Err(Error::InvalidConfig {
            reason: format!(
                "role {:?} has no USAGE on the current schema; GRANT it first",
                config.app_role
            ),
        });
    }
    tx.batch_execute(&format!("GRANT SELECT ON tenants TO {app}"))
        .await?;
    for table in APP_WRITABLE {
        tx.batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {app}"
        ))
        .await?;
    }
    for table in TABLES {
        let current = tx
            .query_opt(
                "SELECT 1 FROM pg_policies
                  WHERE schemaname = current_schema() AND tablename = $1 AND policyname = $2
                    AND roles = ARRAY[$3]::name[]",
                &[&table, &ADMIN_POLICY, &admin_name],
            )
            .await?;
        if current.is_none() {
            tx.batch_execute(&format!(
                "DROP POLICY IF EXISTS {ADMIN_POLICY} ON {table};
                 CREATE POLICY {ADMIN_POLICY} ON {table} TO {admin} USING (true) WITH CHECK (true);"
            ))
            .await?;
            report.admin_policy_changed = true;
        }
    }
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_validated_before_reaching_sql() {
        assert_eq!(quoted_role("chipfleet_app").unwrap(), "\"chipfleet_app\"");
        assert!(quoted_role("x\"; DROP TABLE tenants; --").is_err());
        assert!(quoted_role("").is_err());
        assert!(quoted_role(&"a".repeat(64)).is_err());
    }

    #[test]
    fn migrations_are_ordered_and_unique() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
