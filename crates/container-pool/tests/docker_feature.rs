//! Guards against a silently skipped Docker suite: `tests/docker.rs` needs the `docker`
//! feature, so a plain `cargo test -p container-pool` would not build or run it. This test is
//! compiled exactly then, and fails saying how to run everything.

#[cfg(not(feature = "docker"))]
#[test]
fn the_docker_suite_needs_the_docker_feature() {
    panic!(
        "the Docker tests (tests/docker.rs) were not built: run \
         `cargo test -p container-pool --all-features` (a Docker daemon is required)"
    );
}

/// The same guard for the Swarm suite (`tests/swarm.rs`, feature `swarm`).
#[cfg(not(feature = "swarm"))]
#[test]
fn the_swarm_suite_needs_the_swarm_feature() {
    panic!(
        "the Swarm tests (tests/swarm.rs) were not built: run \
         `cargo test -p container-pool --all-features` (a Docker daemon is required)"
    );
}
