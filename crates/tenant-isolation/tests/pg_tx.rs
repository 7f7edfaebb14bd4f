//! `TenantTx` when a statement's future is dropped mid-flight (a cancelled statement), against
//! the real PostgreSQL (fails if it is missing).
//!
//! Each test starts a statement that waits on the server (`pg_sleep`), waits until
//! `pg_stat_activity` shows that backend sleeping (seen from a second connection of the same
//! role; no fixed sleep), drops the statement's future, and then finishes the transaction.
#![cfg(feature = "postgres")]

mod pg_support;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use pg_support::backend_pid;
use serde_json::json;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{Expect, TenantDb, TenantTx};
use tenant_isolation::{Error, TenantId};

/// Waits 30 s on the server, then fails there (division by zero, evaluated only after the
/// sleep): abandoned and left to run, it aborts the transaction behind the client's back, and
/// PostgreSQL turns a later `COMMIT` into a silent `ROLLBACK`.
const SLEEP_THEN_FAIL: &str = "SELECT count(*) / 0 FROM pg_sleep(30)";
/// Waits 30 s on the server, then succeeds.
const SLEEP: &str = "SELECT pg_sleep(30)";
/// A write that lands after a 5 s wait.
const LATE_WRITE: &str = "INSERT INTO tenant_records (tenant_id, kind, key, value)
                          SELECT $1::text, 'note', 'late', '1'::jsonb FROM pg_sleep(5)";

/// How long the abandoned session may take to go away: far less than the statements' sleeps,
/// so a session that is left running (or pooled) is told apart from one that was cancelled
/// and closed.
const GONE_WITHIN: Duration = Duration::from_secs(10);

async fn new_tenant() -> TenantId {
    let directory = pg_support::directory().await;
    pg_support::tenant(directory.as_ref()).await
}

/// A plain connection as the application role: `pg_stat_activity` shows a session's state
/// and wait event only to its own role (or a superuser).
async fn watcher() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg_support::app_url(), NoTls)
        .await
        .expect("PostgreSQL is required for this test (APP_DATABASE_URL)");
    tokio::spawn(connection);
    client
}

async fn is_sleeping(watcher: &tokio_postgres::Client, pid: i32) -> bool {
    let n: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    n == 1
}

/// Drives `statement` until backend `pid` is sleeping in it on the server, then drops it:
/// the statement has reached the server and its answer has not come back.
async fn abandon_once_running<F>(statement: F, watcher: &tokio_postgres::Client, pid: i32)
where
    F: Future,
    F::Output: Debug,
{
    let mut statement = std::pin::pin!(statement);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::select! {
            biased;
            outcome = &mut statement => {
                panic!("the statement finished before it could be abandoned: {outcome:?}")
            }
            // Polls the statement along (it must be polled to go out), and the watcher below.
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if is_sleeping(watcher, pid).await {
            return; // `statement` is dropped here, mid-flight.
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never showed the statement running"
        );
    }
}

/// Waits until backend `pid` has ended: its connection was closed, not pooled, and nothing
/// keeps it running.
async fn assert_backend_gone(watcher: &tokio_postgres::Client, pid: i32) {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} still exists {GONE_WITHIN:?} after the transaction ended: the \
             connection with the abandoned statement was pooled or left running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the pool's next connection: no open transaction, no tenant, no rows visible.
/// Returns its backend pid.
async fn assert_next_connection_clean(pool: &Pool) -> i32 {
    let (conn, pid) = pg_support::next_connection(pool).await;
    pg_support::assert_no_tenant_state(&conn).await;
    pid
}

/// Whether `key` of kind `note` is committed for `tenant`, read through a fresh transaction.
async fn committed(db: &TenantDb, tenant: &TenantId, key: &str) -> bool {
    let tx = db.scoped(tenant).await.unwrap();
    let found = tx.get_record("note", key).await.unwrap().is_some();
    tx.rollback().await.unwrap();
    found
}

/// A fresh tenant, a `TenantDb` on a pool of one connection, and a watcher.
struct Fixture {
    tenant: TenantId,
    pool: Pool,
    db: TenantDb,
    watcher: tokio_postgres::Client,
}

impl Fixture {
    async fn new() -> Self {
        let tenant = new_tenant().await;
        let pool = pg_support::single_connection_pool();
        let db = TenantDb::from_pool(pool.clone());
        let watcher = watcher().await;
        Self {
            tenant,
            pool,
            db,
            watcher,
        }
    }

    /// A transaction of the tenant, and the backend pid it runs on.
    async fn scoped(&self) -> (TenantTx, i32) {
        let tx = self.db.scoped(&self.tenant).await.unwrap();
        let pid = backend_pid(&tx).await;
        (tx, pid)
    }

    /// After the transaction on backend `pid` that abandoned a statement has ended: the
    /// backend goes away (its connection was closed, not pooled, and nothing keeps it
    /// running), the pool's next connection is another one and clean, and `key` was never
    /// committed.
    async fn assert_abandoned_connection_discarded(&self, pid: i32, key: &str) {
        assert_backend_gone(&self.watcher, pid).await;
        let next = assert_next_connection_clean(&self.pool).await;
        assert_ne!(
            next, pid,
            "{key}: the connection with the abandoned statement is never pooled again"
        );
        assert!(
            !committed(&self.db, &self.tenant, key).await,
            "{key}: nothing written in the transaction was committed"
        );
    }
}

/// `commit` after an abandoned statement is refused as `TransactionAborted` for `tenant`
/// (`why` says what a success would have meant).
fn assert_commit_refused(outcome: Result<(), Error>, tenant: &TenantId, why: &str) {
    match outcome {
        Err(Error::TransactionAborted { tenant: t }) => assert_eq!(&t, tenant),
        other => panic!("{why}: {other:?}"),
    }
}

#[tokio::test]
async fn commit_after_an_abandoned_statement_never_reports_success() {
    let f = Fixture::new().await;

    let (tx, pid) = f.scoped().await;
    tx.put_record("note", "before-abandon", &json!(1), Expect::Absent)
        .await
        .unwrap();
    abandon_once_running(tx.query_one(SLEEP_THEN_FAIL, &[]), &f.watcher, pid).await;
    let flagged = tx.is_aborted();
    let started = Instant::now();
    assert_commit_refused(
        tx.commit().await,
        &f.tenant,
        "commit after an abandoned statement must not report success (the server rolls this \
         transaction back)",
    );
    assert!(flagged, "is_aborted() reports an abandoned statement");
    assert!(
        started.elapsed() < GONE_WITHIN,
        "commit must not wait behind the abandoned statement ({:?})",
        started.elapsed()
    );
    f.assert_abandoned_connection_discarded(pid, "before-abandon")
        .await;
}

#[tokio::test]
async fn an_abandoned_write_is_never_committed_even_after_later_statements_succeed() {
    let f = Fixture::new().await;

    let (tx, pid) = f.scoped().await;
    abandon_once_running(
        tx.execute(LATE_WRITE, &[&f.tenant.as_str()]),
        &f.watcher,
        pid,
    )
    .await;
    // The next statement queues behind the abandoned write, which runs to its end and writes:
    // the caller gave the write up, but the server kept it.
    let seen = tx
        .query_opt(
            "SELECT 1 FROM tenant_records WHERE kind = 'note' AND key = 'late'",
            &[],
        )
        .await
        .unwrap();
    assert!(seen.is_some(), "the abandoned write ran on the server");
    let flagged = tx.is_aborted();
    assert_commit_refused(
        tx.commit().await,
        &f.tenant,
        "a write whose caller gave it up must not be committed",
    );
    assert!(
        flagged,
        "a later statement that succeeds does not make the abandoned one known-good"
    );
    f.assert_abandoned_connection_discarded(pid, "late").await;
}

#[tokio::test]
async fn rollback_or_drop_after_an_abandoned_statement_cancels_it_and_closes_the_connection() {
    let f = Fixture::new().await;

    for explicit_rollback in [true, false] {
        let key = if explicit_rollback {
            "rolled-back"
        } else {
            "dropped"
        };
        let (tx, pid) = f.scoped().await;
        tx.put_record("note", key, &json!(1), Expect::Absent)
            .await
            .unwrap();
        abandon_once_running(tx.query_one(SLEEP, &[]), &f.watcher, pid).await;
        let started = Instant::now();
        if explicit_rollback {
            tx.rollback()
                .await
                .expect("rollback after an abandoned statement");
            assert!(
                started.elapsed() < GONE_WITHIN,
                "rollback must not wait behind the abandoned statement ({:?})",
                started.elapsed()
            );
        } else {
            drop(tx);
        }
        // Without the cancel, the session would live until the 30 s sleep ends (pooled again
        // after a ROLLBACK queued behind it, or closed).
        f.assert_abandoned_connection_discarded(pid, key).await;
    }
}

#[tokio::test]
async fn statements_that_finish_or_never_start_leave_the_transaction_committable() {
    let f = Fixture::new().await;

    let (tx, pid) = f.scoped().await;
    {
        // Never polled: nothing was sent, so nothing is left running.
        let _never_polled = tx.query_one(SLEEP, &[]);
    }
    // Two statements in flight at once (pipelined on the one connection), both finishing.
    let (one, two) = (json!(1), json!(2));
    let (a, b) = tokio::join!(
        tx.put_record("note", "a", &one, Expect::Absent),
        tx.put_record("note", "b", &two, Expect::Absent),
    );
    a.unwrap();
    b.unwrap();
    assert!(!tx.is_aborted());
    tx.commit().await.expect("nothing was abandoned");
    assert_eq!(
        assert_next_connection_clean(&f.pool).await,
        pid,
        "a cleanly committed connection goes back to the pool"
    );
    assert!(committed(&f.db, &f.tenant, "a").await && committed(&f.db, &f.tenant, "b").await);
}
