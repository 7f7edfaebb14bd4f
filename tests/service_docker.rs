//! Smoke test: the Docker daemon that `scripts/test-env.sh` starts is real, and images can be
//! built locally `FROM scratch` (no registry is reachable from these machines).
//!
//! The test compiles a tiny statically linked program with `rustc`, builds an image around it
//! through the Docker API (bollard), runs a container, reads its output, and removes both.
//! It fails (never skips) when Docker is missing: run `scripts/test-env.sh` first.

use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::body_full;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, WaitContainerOptions,
};
use futures::StreamExt;

const GREETING: &str = "chipfleet smoke test: hello from a FROM-scratch container";

async fn docker() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .unwrap_or_else(|e| panic!("cannot set up a Docker client ({e})"));
    let docker = docker.negotiate_version().await.unwrap_or_else(|e| {
        panic!(
            "Docker is required for this test and the daemon does not answer ({e}). \
             Run `scripts/test-env.sh` (as root) to install and start it."
        )
    });
    docker.ping().await.expect("docker ping");
    docker
}

/// Compiles a statically linked hello-world with the same `rustc` that runs this test.
fn build_static_binary(dir: &Path) -> PathBuf {
    let source = dir.join("hello.rs");
    std::fs::write(
        &source,
        format!("fn main() {{ println!(\"{GREETING}\"); }}\n"),
    )
    .unwrap();
    let binary = dir.join("hello");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let status = Command::new(rustc)
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "opt-level=1",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("run rustc");
    assert!(
        status.success(),
        "rustc could not build the static test binary"
    );
    binary
}

/// A build context in memory: a `FROM scratch` Dockerfile and the binary.
fn build_context(binary: &Path) -> Vec<u8> {
    let dockerfile = "FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\"]\n";
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let bytes = std::fs::read(binary).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    archive
        .append_data(&mut header, "hello", bytes.as_slice())
        .unwrap();
    archive.into_inner().unwrap()
}

#[tokio::test]
async fn builds_runs_and_removes_a_scratch_image() {
    let docker = docker().await;
    let dir = std::env::temp_dir().join(format!("chipfleet-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = build_static_binary(&dir);
    let tag = format!("chipfleet/smoke:{}", std::process::id());

    // Build.
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut build = docker.build_image(
        options,
        None,
        Some(body_full(build_context(&binary).into())),
    );
    while let Some(step) = build.next().await {
        let info = step.unwrap_or_else(|e| panic!("image build failed: {e}"));
        if let Some(error) = info.error_detail {
            panic!("image build failed: {error:?}");
        }
    }

    // Run.
    let name = format!("chipfleet-smoke-{}", std::process::id());
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(tag.clone()),
                labels: Some([("chipfleet.test".to_owned(), "smoke".to_owned())].into()),
                ..Default::default()
            },
        )
        .await
        .expect("create container");
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start container");
    let exit = docker
        .wait_container(&created.id, None::<WaitContainerOptions>)
        .next()
        .await
        .expect("wait yields")
        .expect("wait ok");
    assert_eq!(exit.status_code, 0);
    let logs: Vec<String> = docker
        .logs(
            &created.id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .map(|chunk| chunk.expect("log chunk").to_string())
        .collect()
        .await;
    assert!(
        logs.concat().contains(GREETING),
        "container output was {logs:?}"
    );

    // Remove, explicitly.
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .expect("remove container");
    docker
        .remove_image(
            &tag,
            Some(RemoveImageOptionsBuilder::default().force(true).build()),
            None,
        )
        .await
        .expect("remove image");
    let gone = docker.inspect_container(&created.id, None).await;
    assert!(gone.is_err(), "the container should be gone");
    let _ = std::fs::remove_dir_all(&dir);
}
