//! Guards against a silently skipped suite: tests/pg_store.rs (`PgChipStore` against
//! PostgreSQL) needs the `postgres` feature, so a plain `cargo test -p session-supervisor`
//! would not build or run it. This test is compiled exactly then, and fails saying how to run
//! everything.

#[cfg(not(feature = "postgres"))]
#[test]
fn the_postgres_suite_needs_the_postgres_feature() {
    panic!(
        "the `postgres` tests were not built: run `cargo test -p session-supervisor \
         --all-features` (a PostgreSQL server is required; run scripts/test-env.sh first)"
    );
}
