//! What the PostgreSQL backends (`PgInbox`, `PgOutbox`, `PgEventBus`, `PgChipStore`) share:
//! the SQL rank of a stored ack, the tenants `prune` visits (read with the owner pool), the
//! reason of a database failure, and `bigint` conversions.

use tenant_isolation::TenantId;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::Row;

/// The rank of a stored ack (an SQL expression over a `bigint` ack number `$ack`), in the order
/// of [`MessageAck::supersedes`](waha_client::webhook::MessageAck::supersedes): the number
/// doubled, every failure (`-1` and below) ranked `1`, between `Pending` (0) and `Server` (2).
/// `numeric`, so doubling never overflows.
macro_rules! ack_rank {
    ($ack:literal) => {
        concat!(
            "(CASE WHEN ",
            $ack,
            " < 0 THEN 1::numeric ELSE ",
            $ack,
            "::numeric * 2 END)"
        )
    };
}
pub(crate) use ack_rank;

/// The tenants `prune` visits: the `tenant_id` column of `sql`'s rows, read with the `owner`
/// pool. A failure of the database is `unavailable`'s, a value that does not read as text
/// `unreadable`'s; a stored id that is not valid is skipped with a warning naming `what`.
pub(crate) async fn tenants_to_prune<E>(
    owner: &Pool,
    sql: &str,
    what: &str,
    unavailable: impl Fn(tenant_isolation::Error) -> E,
    unreadable: impl Fn() -> E,
) -> Result<Vec<TenantId>, E> {
    let client = owner.get().await.map_err(|err| unavailable(err.into()))?;
    let rows = client
        .query(sql, &[])
        .await
        .map_err(|err| unavailable(err.into()))?;
    let mut tenants = Vec::with_capacity(rows.len());
    for row in &rows {
        let raw: String = row.try_get("tenant_id").map_err(|_| unreadable())?;
        match TenantId::new(raw) {
            Ok(tenant) => tenants.push(tenant),
            Err(_) => {
                tracing::warn!("{what} prune: a stored tenant id is not valid; skipped");
            }
        }
    }
    Ok(tenants)
}

/// The reason of a database failure of `store`, without row contents (the database's message
/// and SQL state only).
pub(crate) fn db_reason(store: &str, err: impl Into<tenant_isolation::Error>) -> String {
    format!("{store}: {}", err.into())
}

/// Why a stored `bigint` is not a `u64` (see [`unsigned`]).
pub(crate) enum UnsignedError {
    /// The column does not read as `bigint`.
    Unreadable,
    /// It is negative.
    Negative(i64),
}

/// A stored `bigint` that must not be negative.
pub(crate) fn unsigned(row: &Row, name: &str) -> Result<u64, UnsignedError> {
    let value: i64 = row.try_get(name).map_err(|_| UnsignedError::Unreadable)?;
    u64::try_from(value).map_err(|_| UnsignedError::Negative(value))
}

/// A number for a `bigint` comparison or bound; one beyond its range becomes `fallback` (a
/// value no row holds, or the range's end for a bound).
pub(crate) fn bigint(value: u64, fallback: i64) -> i64 {
    i64::try_from(value).unwrap_or(fallback)
}
