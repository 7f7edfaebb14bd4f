//! The migration runner: every component's embedded migrations, applied in one transaction
//! under a transaction-scoped advisory lock, with per-component version tracking and checksums.
//!
//! A component (a crate) declares its ordered migrations as a [`MigrationSet`]; a host applies
//! all of its components' sets in one run: [`AdminDb::migrate_with`](super::AdminDb::migrate_with)
//! (tenant-isolation's own set first, then the others, then the access grants), or
//! [`run_migrations`] for sets that need no tenant schema. Applied versions are recorded per
//! component in [`MIGRATIONS_TABLE`], keyed by `(component, version)`, so two components'
//! version numbers never collide. A set also declares which of its tables hold tenant rows
//! ([`MigrationSet::tenant_tables`]); the access step grants the application role those tables
//! and puts them under the admin policy, and
//! [`TenantDb::verify_role_with`](super::TenantDb::verify_role_with) checks their row-level
//! security.

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tokio_postgres::{CancelToken, Client, NoTls, Transaction};

use super::DiscardGuard;
use crate::error::{DatabaseError, Error, IdKind, IdRejection, MigrationProblem};

/// The advisory lock key every migration run takes (`pg_advisory_xact_lock`, never a
/// session-level lock): the bytes `"cf_tenan"` as a big-endian `i64`. One key for every
/// component, so runs of different hosts and components never interleave.
pub const ADVISORY_LOCK_KEY: i64 = 0x6366_5f74_656e_616e;

/// The table every run records applied migrations in: one row per `(component, version)`, with
/// the migration's name, the SHA-256 of its SQL (hex) and when it was applied.
pub const MIGRATIONS_TABLE: &str = "chipfleet_migrations";

/// The component tenant-isolation records its own migrations under.
const COMPONENT: &str = "tenant-isolation";

/// tenant-isolation's migrations, in order.
const OWN_MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "tenancy",
        include_str!("../../migrations/0001_tenancy.sql"),
    ),
    Migration::new(
        2,
        "incarnation",
        include_str!("../../migrations/0002_incarnation.sql"),
    ),
    Migration::new(3, "pacer", include_str!("../../migrations/0003_pacer.sql")),
    Migration::new(
        4,
        "webhook_key_rotation",
        include_str!("../../migrations/0004_webhook_key_rotation.sql"),
    ),
];

/// The tenant directory: every tenant table refers to it. Row-level security is forced on it
/// like on the tenant tables, but the application role only reads it (its own row), so it is
/// not declared as a tenant table (those are granted `INSERT, UPDATE, DELETE` too).
pub(crate) const DIRECTORY_TABLE: &str = "tenants";

/// tenant-isolation's tenant tables (see [`MigrationSet::tenant_tables`]).
const OWN_TENANT_TABLES: &[&str] = &[
    "quota_usage",
    "quota_reservations",
    "daily_sends",
    "tenant_records",
    "pacer_tenants",
    "pacer_chips",
];

/// tenant-isolation's set. Builds before the shared runner recorded these versions in
/// `tenant_isolation_migrations` (with checksums); that table is adopted.
pub(crate) const OWN: MigrationSet = MigrationSet::new(COMPONENT, OWN_MIGRATIONS)
    .adopting("tenant_isolation_migrations")
    .tenant_tables(OWN_TENANT_TABLES);

/// Name of the permissive policy that lets the admin role see every row.
pub(crate) const ADMIN_POLICY: &str = "chipfleet_admin";

/// One embedded schema migration of a component: a version (unique and increasing within the
/// component), a name, and its SQL. Never edit one that was released: its checksum is recorded
/// when it is applied, and an applied migration whose SQL changed is refused
/// ([`MigrationProblem::Edited`]). Add a new version instead.
///
/// The SQL runs inside the run's transaction, so it cannot use statements that refuse to run
/// in one (`CREATE INDEX CONCURRENTLY`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// A migration; usually `Migration::new(1, "name", include_str!("../migrations/0001_name.sql"))`.
    pub const fn new(version: i32, name: &'static str, sql: &'static str) -> Self {
        Migration { version, name, sql }
    }

    /// Its version within its component.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its SQL.
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// The checksum recorded when it is applied: the SHA-256 of its SQL, in lower-case hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    fn refused(&self, set: &MigrationSet, problem: MigrationProblem) -> Error {
        Error::Migration {
            component: set.component,
            version: self.version,
            name: self.name,
            problem,
        }
    }
}

/// A component's ordered migrations, recorded under the component's name.
///
/// ```
/// use tenant_isolation::pg::{Migration, MigrationSet};
///
/// const MIGRATIONS: &[Migration] = &[
///     Migration::new(1, "widgets", "CREATE TABLE widgets (id integer PRIMARY KEY)"),
///     Migration::new(2, "widget-names", "ALTER TABLE widgets ADD COLUMN name text"),
/// ];
/// // What a host passes to `AdminDb::migrate_with`, next to the other components' sets.
/// const WIDGETS: MigrationSet = MigrationSet::new("widgets", MIGRATIONS);
/// assert_eq!(WIDGETS.migrations().len(), 2);
/// ```
///
/// A run checks every set before it touches the database: the component is 1 to 63 of
/// `[a-z0-9-]` (a letter or digit at both ends) and appears once per run; versions are above 0
/// and strictly increasing; names are not empty; declared tenant tables are 1 to 63 of
/// `[a-z0-9_]` (a letter or digit at both ends), declared once per run, and none of them is
/// `tenants` or the migration table ([`Error::InvalidConfig`] otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationSet {
    component: &'static str,
    migrations: &'static [Migration],
    legacy_table: Option<&'static str>,
    tenant_tables: &'static [&'static str],
}

impl MigrationSet {
    /// The migrations of `component`, in version order. It declares no tenant tables.
    pub const fn new(component: &'static str, migrations: &'static [Migration]) -> Self {
        MigrationSet {
            component,
            migrations,
            legacy_table: None,
            tenant_tables: &[],
        }
    }

    /// Declares the tables of this component that hold tenant rows, in the current schema.
    /// Its migrations must create each one the way tenant-isolation's are (see
    /// `docs/tenant-isolation.md`): a `tenant_id text NOT NULL REFERENCES tenants (tenant_id)
    /// ON DELETE CASCADE` column first in every key and index, row-level security `ENABLE`d and
    /// `FORCE`d, and the `tenant_isolation` policy on `app.tenant_id`.
    ///
    /// Then [`AdminDb::migrate_with`](super::AdminDb::migrate_with) grants the application role
    /// `SELECT, INSERT, UPDATE, DELETE` on them and puts them under the admin policy, exactly
    /// as tenant-isolation's own tenant tables (which its set declares this way), and
    /// [`TenantDb::verify_role_with`](super::TenantDb::verify_role_with) refuses tenant-scoped
    /// access while one of them lacks forced row-level security. A set that declares tenant
    /// tables needs that access step: [`run_migrations`] refuses it.
    ///
    /// ```
    /// use tenant_isolation::pg::{Migration, MigrationSet};
    ///
    /// const MIGRATIONS: &[Migration] = &[Migration::new(1, "notes", "CREATE TABLE notes ...")];
    /// const NOTES: MigrationSet = MigrationSet::new("notes", MIGRATIONS).tenant_tables(&["notes"]);
    /// assert_eq!(NOTES.declared_tenant_tables(), ["notes"]);
    /// ```
    pub const fn tenant_tables(self, tables: &'static [&'static str]) -> Self {
        MigrationSet {
            tenant_tables: tables,
            ..self
        }
    }

    /// The tables it declares tenant-scoped (see [`MigrationSet::tenant_tables`]).
    pub fn declared_tenant_tables(&self) -> &'static [&'static str] {
        self.tenant_tables
    }

    /// Adopts the version table this component kept before it used this runner (a table in the
    /// current schema with an integer `version` column and, optionally, `name`, `checksum` and
    /// `applied_at`): each run first records its versions in [`MIGRATIONS_TABLE`] (once; a
    /// version already recorded there is left alone), with the recorded checksum, or the
    /// embedded migration's when the old table kept none. The old table is left in place, so a
    /// build from before the runner still finds its versions.
    pub const fn adopting(self, legacy_table: &'static str) -> Self {
        MigrationSet {
            legacy_table: Some(legacy_table),
            ..self
        }
    }

    /// The component's name, e.g. `tenant-isolation`.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// Its migrations, in version order.
    pub fn migrations(&self) -> &'static [Migration] {
        self.migrations
    }

    /// The version table it adopts, if any (see [`MigrationSet::adopting`]).
    pub fn legacy_table(&self) -> Option<&'static str> {
        self.legacy_table
    }
}

/// A migration, named by its component and its version within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MigrationId {
    /// The component, e.g. `tenant-isolation`.
    pub component: &'static str,
    /// The version within the component.
    pub version: i32,
}

impl std::fmt::Display for MigrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.component, self.version)
    }
}

/// Who gets which access. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationConfig {
    /// The application role that [`TenantDb`](crate::pg::TenantDb) connects as; it is granted
    /// `SELECT` on `tenants` and `SELECT, INSERT, UPDATE, DELETE` on every table the run's sets
    /// declare tenant-scoped ([`MigrationSet::tenant_tables`]) (default `chipfleet_app`).
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
    /// Migrations applied by this run, in the order they were applied.
    pub applied: Vec<MigrationId>,
    /// Migrations of the run's sets that were already applied (adopted ones included).
    pub already_applied: Vec<MigrationId>,
    /// Versions this run recorded from a component's legacy version table
    /// ([`MigrationSet::adopting`]); only the first run on an older database adopts any.
    pub adopted: Vec<MigrationId>,
    /// Whether the admin policy had to be (re)created for the configured admin role (always
    /// `false` for [`run_migrations`], which grants nothing).
    pub admin_policy_changed: bool,
}

/// Applies `sets` (each component's migrations; components in the order given) in ONE
/// transaction holding `pg_advisory_xact_lock(ADVISORY_LOCK_KEY)`, recording each applied
/// version with its checksum in [`MIGRATIONS_TABLE`]. Safe to call from every replica at
/// start-up: concurrent runs wait for the lock, then find nothing left to do.
///
/// This grants nothing: it is for components whose tables need no tenant schema or roles (such
/// as proxy-allocator's lease store), so a set that declares tenant tables
/// ([`MigrationSet::tenant_tables`]) is refused. A host that uses tenant-isolation's tables runs
/// [`AdminDb::migrate_with`](super::AdminDb::migrate_with) instead, which applies
/// tenant-isolation's own set first and grants access last, in the same transaction. Connect
/// `pool` as the role that owns the tables (`DATABASE_URL`).
///
/// If the future is dropped before the run ends (a start-up timeout, a shutdown), the
/// statement in progress is cancelled on the server and the connection is closed, never pooled:
/// the transaction and its advisory lock end at once instead of waiting on the server.
///
/// # Errors
/// [`Error::InvalidConfig`] for an invalid set (see [`MigrationSet`]) or one that declares
/// tenant tables; [`Error::Migration`] when a migration's SQL fails or an applied one was
/// edited; [`Error::Database`], [`Error::Pool`]. On error nothing of the run is applied.
pub async fn run_migrations(pool: &Pool, sets: &[MigrationSet]) -> Result<MigrationReport, Error> {
    run(pool, sets, None).await
}

/// Runs `sets` and then, with `access`, tenant-isolation's access step (grants, admin policy),
/// all in one transaction under the advisory lock.
pub(crate) async fn run(
    pool: &Pool,
    sets: &[MigrationSet],
    access: Option<&MigrationConfig>,
) -> Result<MigrationReport, Error> {
    validate(sets)?;
    match access {
        Some(config) => {
            quoted_role(&config.app_role)?;
        }
        None => refuse_tenant_tables(sets)?,
    }
    let conn = pool.get().await?;
    let cancel = conn.cancel_token();
    let mut flight = InFlight {
        conn: DiscardGuard(Some(conn)),
        cancel: Some(cancel),
    };
    let result = apply(flight.client()?, sets, access).await;
    match result {
        Ok(report) => {
            flight.release();
            Ok(report)
        }
        Err(err) => {
            flight.discard();
            Err(err)
        }
    }
}

/// The connection of a run in progress. Until the run ends, dropping it (the run's future was
/// dropped mid-statement) asks the server to cancel the statement in progress and closes the
/// connection: the transaction ends with it, and so does its advisory lock, even when the
/// statement was waiting for another session's lock (a session that merely closed its socket
/// would keep waiting, and keep the lock, until then).
struct InFlight {
    conn: DiscardGuard,
    cancel: Option<CancelToken>,
}

impl InFlight {
    fn client(&mut self) -> Result<&mut Client, Error> {
        match self.conn.0.as_mut() {
            Some(conn) => {
                let client: &mut Client = conn;
                Ok(client)
            }
            // Only `release` empties it, and that consumes the guard.
            None => Err(Error::InvalidConfig {
                reason: "the migration connection was already released".into(),
            }),
        }
    }

    /// The run ended (committed): the connection goes back to the pool.
    fn release(mut self) {
        self.cancel = None;
        drop(self.conn.0.take());
    }

    /// The run failed: nothing is in progress, and the connection is closed (its transaction
    /// was rolled back or the connection is gone).
    fn discard(mut self) {
        self.cancel = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(token) = self.cancel.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(err) = token.cancel_query(NoTls).await {
                        tracing::warn!(
                            error = %DatabaseError::from(err),
                            "could not cancel an abandoned migration run"
                        );
                    }
                });
            }
            Err(_) => tracing::warn!(
                "an abandoned migration run could not be cancelled (no Tokio runtime); its \
                 connection is closed"
            ),
        }
        // Then `conn` drops: the connection is closed, never pooled.
    }
}

/// The run itself, in one transaction.
async fn apply(
    client: &mut Client,
    sets: &[MigrationSet],
    access: Option<&MigrationConfig>,
) -> Result<MigrationReport, Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADVISORY_LOCK_KEY])
        .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
             component  text        NOT NULL,
             version    integer     NOT NULL,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (component, version)
         )"
    ))
    .await?;
    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: Vec::new(),
        adopted: Vec::new(),
        admin_policy_changed: false,
    };
    for set in sets {
        if let Some(legacy) = set.legacy_table {
            report.adopted.extend(adopt(&tx, set, legacy).await?);
        }
    }
    let components: Vec<&str> = sets.iter().map(|set| set.component).collect();
    let recorded: Vec<(String, i32, String)> = tx
        .query(
            &format!(
                "SELECT component, version, checksum FROM {MIGRATIONS_TABLE}
                  WHERE component = ANY($1) ORDER BY component, version"
            ),
            &[&components],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, Error>>()?;
    for set in sets {
        apply_set(&tx, set, &recorded, &mut report).await?;
    }
    if let Some(config) = access {
        report.admin_policy_changed = grant_access(&tx, config, sets).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Applies the pending migrations of one set; refuses an applied one whose SQL changed.
async fn apply_set(
    tx: &Transaction<'_>,
    set: &MigrationSet,
    recorded: &[(String, i32, String)],
    report: &mut MigrationReport,
) -> Result<(), Error> {
    for migration in set.migrations {
        let id = MigrationId {
            component: set.component,
            version: migration.version,
        };
        let checksum = migration.checksum();
        let stored = recorded
            .iter()
            .find(|(component, version, _)| {
                component == set.component && *version == migration.version
            })
            .map(|(_, _, stored)| stored);
        match stored {
            Some(stored) if *stored == checksum => report.already_applied.push(id),
            Some(_) => return Err(migration.refused(set, MigrationProblem::Edited)),
            None => {
                tx.batch_execute(migration.sql).await.map_err(|e| {
                    migration.refused(set, MigrationProblem::Refused(DatabaseError::from(e)))
                })?;
                tx.execute(
                    &format!(
                        "INSERT INTO {MIGRATIONS_TABLE} (component, version, name, checksum)
                         VALUES ($1, $2, $3, $4)"
                    ),
                    &[
                        &set.component,
                        &migration.version,
                        &migration.name,
                        &checksum,
                    ],
                )
                .await?;
                tracing::info!(
                    component = set.component,
                    version = migration.version,
                    name = migration.name,
                    "migration applied"
                );
                report.applied.push(id);
            }
        }
    }
    let newest = recorded
        .iter()
        .filter(|(component, ..)| component == set.component)
        .map(|(_, version, _)| *version)
        .max();
    if let Some(newest) = newest
        && set.migrations.iter().all(|m| m.version < newest)
    {
        tracing::warn!(
            component = set.component,
            version = newest,
            "the database has a newer migration of this component than this build knows"
        );
    }
    Ok(())
}

/// Records the versions of `set`'s legacy version table that [`MIGRATIONS_TABLE`] does not
/// hold yet; returns them. Idempotent: a second run finds them recorded and adopts nothing.
/// The legacy table's columns are read through `to_jsonb`, so a table without `name`,
/// `checksum` or `applied_at` takes the embedded migration's name and checksum and the time of
/// adoption (a version unknown to this build and without a checksum is recorded with an empty
/// one, which a later build that embeds it refuses as edited rather than silently accept).
async fn adopt(
    tx: &Transaction<'_>,
    set: &MigrationSet,
    legacy: &str,
) -> Result<Vec<MigrationId>, Error> {
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&legacy])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(Vec::new());
    }
    let versions: Vec<i32> = set.migrations.iter().map(|m| m.version).collect();
    let names: Vec<&str> = set.migrations.iter().map(|m| m.name).collect();
    let checksums: Vec<String> = set.migrations.iter().map(Migration::checksum).collect();
    // `legacy` was validated as an identifier (see `validate`).
    let rows = tx
        .query(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (component, version, name, checksum, applied_at)
                 SELECT $1::text, l.version,
                        COALESCE(l.j ->> 'name', e.name, 'unknown'),
                        COALESCE(l.j ->> 'checksum', e.checksum, ''),
                        COALESCE((l.j ->> 'applied_at')::timestamptz, now())
                   FROM (SELECT (to_jsonb(t) ->> 'version')::integer AS version, to_jsonb(t) AS j
                           FROM \"{legacy}\" t) l
                   LEFT JOIN unnest($2::integer[], $3::text[], $4::text[])
                          AS e(version, name, checksum) ON e.version = l.version
                 ON CONFLICT (component, version) DO NOTHING
                 RETURNING version"
            ),
            &[&set.component, &versions, &names, &checksums],
        )
        .await?;
    let mut adopted = rows
        .iter()
        .map(|row| {
            Ok(MigrationId {
                component: set.component,
                version: row.try_get(0)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    adopted.sort_unstable();
    if !adopted.is_empty() {
        tracing::info!(
            component = set.component,
            table = legacy,
            versions = adopted.len(),
            "versions adopted from the legacy migration table"
        );
    }
    Ok(adopted)
}

/// Every table whose row-level security keeps tenants apart, for a run (or a check) of `sets`:
/// the directory (`tenants`), then each set's declared tenant tables, each once.
pub(crate) fn protected_tables(sets: &[MigrationSet]) -> Vec<&'static str> {
    let mut tables = vec![DIRECTORY_TABLE];
    for &table in sets.iter().flat_map(|set| set.tenant_tables) {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

/// A run without the access step cannot grant declared tenant tables: refuse such sets rather
/// than leave tables that neither the application role nor the admin role can use.
fn refuse_tenant_tables(sets: &[MigrationSet]) -> Result<(), Error> {
    match sets.iter().find(|set| !set.tenant_tables.is_empty()) {
        Some(set) => Err(Error::InvalidConfig {
            reason: format!(
                "component {:?} declares tenant tables; apply it with AdminDb::migrate_with, \
                 which grants the application role access to them and puts them under the admin \
                 policy",
                set.component
            ),
        }),
        None => Ok(()),
    }
}

/// tenant-isolation's access step: grants (idempotent) on the directory and on every tenant
/// table the sets declare, and the admin policy on each of them (recreated only when it
/// differs). Returns whether the policy changed on any table.
async fn grant_access(
    tx: &Transaction<'_>,
    config: &MigrationConfig,
    sets: &[MigrationSet],
) -> Result<bool, Error> {
    let app = quoted_role(&config.app_role)?;
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
    // Table names were validated as identifiers (see `validate`).
    tx.batch_execute(&format!("GRANT SELECT ON \"{DIRECTORY_TABLE}\" TO {app}"))
        .await?;
    for table in sets.iter().flat_map(|set| set.tenant_tables) {
        tx.batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON \"{table}\" TO {app}"
        ))
        .await?;
    }
    let mut changed = false;
    for table in protected_tables(sets) {
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
                "DROP POLICY IF EXISTS {ADMIN_POLICY} ON \"{table}\";
                 CREATE POLICY {ADMIN_POLICY} ON \"{table}\" TO {admin}
                     USING (true) WITH CHECK (true);"
            ))
            .await?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Checks every set of a run before anything touches the database.
fn validate(sets: &[MigrationSet]) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidConfig { reason });
    for (at, set) in sets.iter().enumerate() {
        let component = set.component;
        if !valid_name(component, b'-') {
            return invalid(format!(
                "migration component {component:?} must be 1 to 63 of [a-z0-9-], with a letter \
                 or digit at both ends"
            ));
        }
        if sets[..at].iter().any(|other| other.component == component) {
            return invalid(format!(
                "migration component {component:?} is given more than once in one run"
            ));
        }
        if let Some(table) = set.legacy_table
            && !valid_name(table, b'_')
        {
            return invalid(format!(
                "legacy migration table {table:?} of {component:?} must be 1 to 63 of [a-z0-9_], \
                 with a letter or digit at both ends"
            ));
        }
        for (at_table, table) in set.tenant_tables.iter().enumerate() {
            if !valid_name(table, b'_') {
                return invalid(format!(
                    "tenant table {table:?} of {component:?} must be 1 to 63 of [a-z0-9_], with \
                     a letter or digit at both ends"
                ));
            }
            if *table == DIRECTORY_TABLE || *table == MIGRATIONS_TABLE {
                return invalid(format!(
                    "{component:?} cannot declare {table:?} a tenant table: it belongs to \
                     tenant-isolation"
                ));
            }
            let declared_before = sets[..at]
                .iter()
                .flat_map(|other| other.tenant_tables.iter().copied())
                .chain(set.tenant_tables[..at_table].iter().copied())
                .any(|other| other == *table);
            if declared_before {
                return invalid(format!(
                    "tenant table {table:?} is declared more than once in one run"
                ));
            }
        }
        let mut previous = 0;
        for migration in set.migrations {
            if migration.version <= previous {
                return invalid(format!(
                    "migrations of {component:?} need versions above 0 in increasing order \
                     ({} comes after {previous})",
                    migration.version
                ));
            }
            if migration.name.is_empty() {
                return invalid(format!(
                    "migration {} of {component:?} has no name",
                    migration.version
                ));
            }
            previous = migration.version;
        }
    }
    Ok(())
}

/// Whether `name` is 1 to 63 ASCII lower-case letters, digits and `separator`, with a letter or
/// digit at both ends.
fn valid_name(name: &str, separator: u8) -> bool {
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| edge(b) || *b == separator)
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(sets: &[MigrationSet]) -> String {
        match validate(sets) {
            Err(Error::InvalidConfig { reason }) => reason,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn role_names_are_validated_before_reaching_sql() {
        assert_eq!(quoted_role("chipfleet_app").unwrap(), "\"chipfleet_app\"");
        assert!(quoted_role("x\"; DROP TABLE tenants; --").is_err());
        assert!(quoted_role("").is_err());
        assert!(quoted_role(&"a".repeat(64)).is_err());
    }

    #[test]
    fn the_own_set_is_valid() {
        validate(&[OWN]).expect("tenant-isolation's own set");
        assert_eq!(OWN.component(), "tenant-isolation");
        assert_eq!(OWN.legacy_table(), Some("tenant_isolation_migrations"));
        assert_eq!(OWN.declared_tenant_tables(), OWN_TENANT_TABLES);
        assert_eq!(
            protected_tables(&[OWN]),
            [
                "tenants",
                "quota_usage",
                "quota_reservations",
                "daily_sends",
                "tenant_records",
                "pacer_tenants",
                "pacer_chips"
            ]
        );
    }

    #[test]
    fn protected_tables_are_the_directory_and_every_declared_table_once() {
        const A: &[Migration] = &[Migration::new(1, "a", "SELECT 1")];
        let notes = MigrationSet::new("notes", A).tenant_tables(&["notes", "note_tags"]);
        let tables = protected_tables(&[OWN, notes, OWN]);
        assert_eq!(tables[0], DIRECTORY_TABLE);
        assert_eq!(tables.len(), 1 + OWN_TENANT_TABLES.len() + 2, "{tables:?}");
        assert!(tables.ends_with(&["notes", "note_tags"]), "{tables:?}");
    }

    #[test]
    fn declared_tenant_tables_are_checked_before_any_sql() {
        const A: &[Migration] = &[Migration::new(1, "a", "SELECT 1")];
        let set = |tables: &'static [&'static str]| MigrationSet::new("x", A).tenant_tables(tables);
        validate(&[OWN, set(&["notes", "note_tags"])]).expect("valid tenant tables");
        for bad in ["", "Notes", "_notes", "notes_", "no-tes", "x\"; --"] {
            // Leaked for the test only: table names are `&'static`.
            let tables: &'static [&'static str] = Box::leak(vec![bad].into_boxed_slice());
            assert!(invalid(&[set(tables)]).contains("[a-z0-9_]"), "{bad:?}");
        }
        assert!(invalid(&[set(&["tenants"])]).contains("belongs to tenant-isolation"));
        assert!(invalid(&[set(&[MIGRATIONS_TABLE])]).contains("belongs to tenant-isolation"));
        assert!(invalid(&[set(&["notes", "notes"])]).contains("more than once"));
        assert!(invalid(&[OWN, set(&["tenant_records"])]).contains("more than once"));
    }

    /// `run_migrations` grants nothing, so it refuses a set that declares tenant tables, before
    /// it connects (the pool points nowhere).
    #[tokio::test]
    async fn run_migrations_refuses_sets_with_tenant_tables() {
        const A: &[Migration] = &[Migration::new(1, "a", "SELECT 1")];
        let pool = crate::pg::build_pool(
            "postgres://nobody@127.0.0.1:1/nowhere",
            &crate::pg::PoolOptions::default(),
        )
        .expect("a valid URL");
        let notes = MigrationSet::new("notes", A).tenant_tables(&["notes"]);
        match run_migrations(&pool, &[notes]).await {
            Err(Error::InvalidConfig { reason }) => {
                assert!(reason.contains("AdminDb::migrate_with"), "{reason}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn checksums_are_sha256_hex_of_the_sql() {
        let m = Migration::new(1, "abc", "abc");
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sets_are_checked_before_any_sql() {
        const A: &[Migration] = &[Migration::new(1, "a", "SELECT 1")];
        const UNORDERED: &[Migration] = &[
            Migration::new(2, "b", "SELECT 1"),
            Migration::new(1, "a", "SELECT 1"),
        ];
        const DUPLICATE: &[Migration] = &[
            Migration::new(1, "a", "SELECT 1"),
            Migration::new(1, "b", "SELECT 1"),
        ];
        const ZERO: &[Migration] = &[Migration::new(0, "a", "SELECT 1")];
        const NAMELESS: &[Migration] = &[Migration::new(1, "", "SELECT 1")];

        validate(&[OWN, MigrationSet::new("proxy-allocator", A)]).expect("two components");
        assert!(invalid(&[OWN, OWN]).contains("more than once"));
        assert!(invalid(&[MigrationSet::new("x", UNORDERED)]).contains("increasing"));
        assert!(invalid(&[MigrationSet::new("x", DUPLICATE)]).contains("increasing"));
        assert!(invalid(&[MigrationSet::new("x", ZERO)]).contains("above 0"));
        assert!(invalid(&[MigrationSet::new("x", NAMELESS)]).contains("no name"));
        // Leaked for the test only: components are `&'static str`.
        let long: &'static str = Box::leak("a".repeat(64).into_boxed_str());
        for bad in ["", "Upper", "-edge", "edge-", "a_b", "x\"; --", long] {
            invalid(&[MigrationSet::new(bad, A)]);
        }
        invalid(&[MigrationSet::new("x", A).adopting("bad\"table")]);
        validate(&[MigrationSet::new("x", A).adopting("old_versions")]).expect("legacy table");
    }
}
