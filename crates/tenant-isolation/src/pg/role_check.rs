//! What makes a database role safe for tenant-scoped access, checked in one place
//! ([`TenantDb::verify_role`](super::TenantDb::verify_role) and
//! [`TenantDb::verify_role_with`](super::TenantDb::verify_role_with) call it).

use tokio_postgres::Client;

use super::migrations::{ADMIN_POLICY, MigrationSet, OWN, protected_tables};
use crate::error::{Error, RowSecurityProblem};

/// Checks that the connected role cannot see other tenants' rows through tenant-isolation's
/// tables or the tenant tables `components` declare ([`MigrationSet::tenant_tables`];
/// tenant-isolation's own set is always included): it is not a superuser and has no
/// `BYPASSRLS`; it is no member, directly or through other roles, of a role that is or has
/// either (it could `SET ROLE` to it); it owns none of the tables (nor is a member of their
/// owner); the admin policy does not cover it; and every one of the tables exists with
/// row-level security enabled and forced.
///
/// # Errors
/// [`Error::UnsafeDatabaseRole`] saying why the role is unsafe; [`Error::UnprotectedTable`]
/// naming the first table (the directory first, then in declaration order) that lacks forced
/// row-level security; database errors otherwise.
pub(crate) async fn verify_app_role(
    client: &Client,
    components: &[MigrationSet],
) -> Result<(), Error> {
    let mut sets = Vec::with_capacity(components.len() + 1);
    sets.push(OWN);
    sets.extend_from_slice(components);
    let tables = protected_tables(&sets);

    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper, r.rolbypassrls
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let role: String = row.try_get(0)?;
    let unsafe_role = |reason: String| {
        Err(Error::UnsafeDatabaseRole {
            role: role.clone(),
            reason,
        })
    };
    if row.try_get::<_, bool>(1)? {
        return unsafe_role("it is a superuser".into());
    }
    if row.try_get::<_, bool>(2)? {
        return unsafe_role("it has BYPASSRLS".into());
    }

    // Role attributes are not inherited, but a member can `SET ROLE` to the role that has them.
    // Every role granted to this one, directly or through other roles.
    let privileged = client
        .query_opt(
            "WITH RECURSIVE granted (roleid) AS (
                 SELECT m.roleid FROM pg_auth_members m
                  WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                 UNION
                 SELECT m.roleid FROM pg_auth_members m JOIN granted g ON m.member = g.roleid
             )
             SELECT r.rolname::text, r.rolsuper
               FROM granted g JOIN pg_roles r ON r.oid = g.roleid
              WHERE r.rolsuper OR r.rolbypassrls
              ORDER BY r.rolsuper DESC, r.rolname::text COLLATE \"C\"
              LIMIT 1",
            &[],
        )
        .await?;
    if let Some(row) = privileged {
        let granted: String = row.try_get(0)?;
        let what = if row.try_get::<_, bool>(1)? {
            "is a superuser"
        } else {
            "has BYPASSRLS"
        };
        return unsafe_role(format!(
            "it is a member of role {granted:?}, which {what} (a member can SET ROLE to it)"
        ));
    }

    let owned = client
        .query(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                AND c.relname = ANY($1)
                AND pg_has_role(current_user, c.relowner, 'MEMBER')",
            &[&tables],
        )
        .await?;
    if let Some(table) = owned.first() {
        return unsafe_role(format!(
            "it owns (or is a member of the owner of) table {}",
            table.try_get::<_, String>(0)?
        ));
    }

    let admin = client
        .query(
            "SELECT p.tablename::text FROM pg_policies p
              WHERE p.schemaname = current_schema() AND p.policyname = $1
                AND EXISTS (SELECT 1 FROM unnest(p.roles) AS r(name)
                             WHERE CASE WHEN r.name = 'public' THEN true
                                        ELSE pg_has_role(current_user, r.name, 'MEMBER') END)",
            &[&ADMIN_POLICY],
        )
        .await?;
    if let Some(table) = admin.first() {
        return unsafe_role(format!(
            "the admin policy on {} applies to it",
            table.try_get::<_, String>(0)?
        ));
    }

    // The flags of each table, in the order of `tables` (NULL: no such table).
    let flags = client
        .query(
            "SELECT t.name, c.relrowsecurity, c.relforcerowsecurity
               FROM unnest($1::text[]) WITH ORDINALITY AS t (name, ord)
               LEFT JOIN pg_class c
                      ON c.relname::text = t.name
                     AND c.relkind IN ('r', 'p')
                     AND c.relnamespace =
                         (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
              ORDER BY t.ord",
            &[&tables],
        )
        .await?;
    for row in &flags {
        let enabled: Option<bool> = row.try_get(1)?;
        let forced: Option<bool> = row.try_get(2)?;
        let problem = match (enabled, forced) {
            (Some(true), Some(true)) => continue,
            (None, _) | (_, None) => RowSecurityProblem::Missing,
            (Some(false), _) => RowSecurityProblem::NotEnabled,
            (Some(true), Some(false)) => RowSecurityProblem::NotForced,
        };
        return Err(Error::UnprotectedTable {
            table: row.try_get(0)?,
            problem,
        });
    }
    Ok(())
}
