//! Docker (as in container-pool's `tests/docker.rs`): the daemon, per-run labels, the pool
//! configuration of the `waha-sim` image, and the clean-up of what a run created.

use std::sync::Arc;
use std::time::Duration;

use container_pool::{
    AddressingPolicy, AutoStartStagger, ContainerRuntime, DockerRuntime, Engine, EnvVar, ImageRef,
    LabelSelector, PoolConfig, labels,
};
use tenant_isolation::TenantId;

use super::{ms, secs};

pub async fn docker() -> DockerRuntime {
    DockerRuntime::connect().await.unwrap_or_else(|e| {
        panic!("these tests need the Docker daemon (run scripts/test-env.sh): {e}")
    })
}

/// The Docker daemon (failing loudly when it is missing) and the locally built `waha-sim` image
/// on it (reused when unchanged).
pub async fn docker_with_sim_image() -> (Arc<DockerRuntime>, String) {
    let runtime = Arc::new(docker().await);
    let image = waha_sim::container::build_default_image(runtime.client())
        .await
        .unwrap_or_else(|e| panic!("building the waha-sim image failed: {e}"));
    (runtime, image)
}

/// A short per-run id usable in names and labels.
pub fn run_id() -> String {
    let id = TenantId::generate().as_str().to_ascii_lowercase();
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .rev()
        .take(10)
        .collect()
}

/// A pool configuration for `image` (the `waha-sim` image) on Docker: `managed_by` as the
/// managed-by label and name prefix, NOWEB, `addressing`, volumes on, `startup_deadline`, 50 ms
/// polls, a 30 min idle TTL (never reached), no auto-start stagger, small containers (a
/// 2-core test machine), and the simulator's start shortened (`SIM_STARTING_MS` 500, the first
/// QR after `first_qr`). Callers add their own variables after these.
pub fn docker_pool_config(
    image: &str,
    managed_by: &str,
    addressing: AddressingPolicy,
    startup_deadline: Duration,
    first_qr: Duration,
) -> PoolConfig {
    let mut config = PoolConfig::new(ImageRef::parse(image).expect("a valid image reference"));
    config.managed_by = managed_by.to_owned();
    config.name_prefix = managed_by.to_owned();
    config.engine = Engine::Noweb;
    config.addressing = addressing;
    config.volumes = true;
    config.startup_deadline = startup_deadline;
    config.poll_interval = ms(50);
    config.probe_timeout = secs(1);
    config.stop_grace = secs(2);
    config.idle_ttl = secs(30 * 60);
    config.auto_start = AutoStartStagger {
        base: Duration::ZERO,
        spread: Duration::ZERO,
    };
    // Small limits on a 2-core test machine.
    config.sizing = container_pool::SizingPolicy::waha_guide()
        .with_table(
            Engine::Noweb,
            vec![container_pool::SizingRow {
                sessions: 10,
                millicpus: 500,
                memory_mib: 64,
            }],
        )
        .expect("a valid sizing table");
    config
        .extra_env
        .push(EnvVar::plain("SIM_STARTING_MS", "500"));
    config.extra_env.push(EnvVar::plain(
        "SIM_FIRST_QR_MS",
        first_qr.as_millis().to_string(),
    ));
    config
}

/// Removes every container and volume carrying the managed-by label `managed_by`, then
/// `network` if given (the pool creates its network, labelled, when missing; gone already is
/// fine).
pub async fn remove_docker_leftovers(
    runtime: &DockerRuntime,
    managed_by: &str,
    network: Option<&str>,
) {
    let selector = LabelSelector::new(labels::MANAGED_BY, managed_by);
    match runtime.list(&selector).await {
        Ok(containers) => {
            for c in containers {
                if let Err(e) = runtime.remove(&c.id).await {
                    eprintln!("clean-up: removing container {}: {e}", c.name);
                }
            }
        }
        Err(e) => eprintln!("clean-up: listing containers: {e}"),
    }
    match runtime.list_volumes(&selector).await {
        Ok(volumes) => {
            for v in volumes {
                if let Err(e) = runtime.remove_volume(&v.name).await {
                    eprintln!("clean-up: removing volume {}: {e}", v.name);
                }
            }
        }
        Err(e) => eprintln!("clean-up: listing volumes: {e}"),
    }
    let Some(network) = network else {
        return;
    };
    if let Err(e) = runtime.client().remove_network(network).await {
        let text = e.to_string();
        if !text.contains("404") && !text.to_ascii_lowercase().contains("not found") {
            eprintln!("clean-up: removing network {network}: {e}");
        }
    }
}
