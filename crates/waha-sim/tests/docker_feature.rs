//! Guards against a silently skipped suite: tests/container_image.rs (the FROM-scratch image on the
//! real daemon) need the `docker` feature, so a plain `cargo test -p waha-sim` would not build or
//! run it. This test is compiled exactly then, and fails saying how to run everything.

#[cfg(not(feature = "docker"))]
#[test]
fn the_docker_suite_needs_the_docker_feature() {
    panic!(
        "the `docker` tests were not built: run `cargo test -p waha-sim --all-features` \
         (a Docker daemon is required; run scripts/test-env.sh first)"
    );
}
