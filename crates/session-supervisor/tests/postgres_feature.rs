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

/// The same guard for tests/mocks.rs, which needs the `mock` feature.
#[cfg(not(feature = "mock"))]
#[test]
fn the_mock_suite_needs_the_mock_feature() {
    panic!(
        "the `mock` tests (tests/mocks.rs) were not built: run \
         `cargo test -p session-supervisor --all-features`"
    );
}

/// The same guard for tests/fleet_docker.rs, which needs the `docker` feature.
#[cfg(not(feature = "docker"))]
#[test]
fn the_docker_suite_needs_the_docker_feature() {
    panic!(
        "the Docker tests (tests/fleet_docker.rs) were not built: run \
         `cargo test -p session-supervisor --all-features` (Docker is required; run \
         scripts/test-env.sh first)"
    );
}
