//! Guards against a silently skipped suite: tests/postgres.rs and the PostgreSQL half of
//! tests/conformance.rs need the `postgres` feature, so a plain `cargo test -p proxy-allocator`
//! would not build or run it. This test is compiled exactly then, and fails saying how to run
//! everything.

#[cfg(not(feature = "postgres"))]
#[test]
fn the_postgres_suite_needs_the_postgres_feature() {
    panic!(
        "the `postgres` tests were not built: run `cargo test -p proxy-allocator --all-features` \
         (a PostgreSQL server is required; run scripts/test-env.sh first)"
    );
}

/// The same guard for the mock test in tests/allocator.rs, which needs the `mock` feature.
#[cfg(not(feature = "mock"))]
#[test]
fn the_mock_suite_needs_the_mock_feature() {
    panic!(
        "the `mock` test (tests/allocator.rs) was not built: run \
         `cargo test -p proxy-allocator --all-features`"
    );
}
