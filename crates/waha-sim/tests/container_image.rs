//! The `FROM scratch` image on the real Docker daemon: build it, run it with its port published
//! on 127.0.0.1, wait for its HEALTHCHECK, reach it over HTTP, remove it.
//!
//! Needs the Docker daemon: without it this test fails (it never skips).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthStatusEnum, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use serde_json::json;
use waha_sim::container::{DEFAULT_IMAGE_TAG, IMAGE_PORT, build_default_image};
use waha_sim::{ApiKey, SessionStatus, SimControlClient};

const KEY: &str = "container-test-key-91b2";

async fn docker() -> Docker {
    let docker = Docker::connect_with_socket_defaults()
        .expect("Docker is required for this test: cannot reach /var/run/docker.sock");
    docker
        .ping()
        .await
        .expect("Docker is required for this test: the daemon does not answer");
    docker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_runs_gets_healthy_and_answers() {
    let docker = docker().await;
    let tag = build_default_image(&docker).await.expect("image builds");
    assert_eq!(tag, DEFAULT_IMAGE_TAG);

    let name = format!(
        "waha-sim-test-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let port_key = format!("{IMAGE_PORT}/tcp");
    let body = ContainerCreateBody {
        image: Some(tag.clone()),
        env: Some(vec![
            format!("WAHA_API_KEY={KEY}"),
            "SIM_TIME_SCALE=0.01".to_owned(),
        ]),
        labels: Some(HashMap::from([(
            "chipfleet.test".to_owned(),
            "waha-sim".to_owned(),
        )])),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .expect("container is created");
    let outcome = exercise(&docker, &name, &port_key).await;
    docker
        .remove_container(
            &name,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .expect("container is removed");
    outcome.unwrap();
}

async fn exercise(docker: &Docker, name: &str, port_key: &str) -> Result<(), String> {
    docker
        .start_container(name, None)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let began = Instant::now();
    let host_port = loop {
        let info = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        let state = info.state.clone().unwrap_or_default();
        if state.running == Some(false) {
            return Err(format!("container exited: {state:?}"));
        }
        let healthy = state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .is_some_and(|s| s == HealthStatusEnum::HEALTHY);
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(port_key).cloned().flatten())
            .and_then(|b| b.first().and_then(|b| b.host_port.clone()));
        if let (true, Some(port)) = (healthy, port) {
            break port;
        }
        if began.elapsed() > Duration::from_secs(60) {
            return Err(format!("not healthy after 60 s: {state:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let base = format!("http://127.0.0.1:{host_port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ping: serde_json::Value = http
        .get(format!("{base}/ping"))
        .send()
        .await
        .map_err(|e| format!("ping: {e}"))?
        .json()
        .await
        .map_err(|e| format!("ping body: {e}"))?;
    assert_eq!(ping, json!({"message": "pong"}));
    let unauthorised = http
        .get(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let created = http
        .post(format!("{base}/api/sessions"))
        .header("X-Api-Key", KEY)
        .json(&json!({"name": "in-container", "start": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The QR route waits for SCAN_QR_CODE (scaled), then the control API scans it.
    let qr = http
        .get(format!("{base}/api/in-container/auth/qr?format=raw"))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(qr.status(), 200);
    // A test of a simulator in a container drives it through the typed control client.
    let control =
        SimControlClient::new(&base, Some(ApiKey::new(KEY))).map_err(|e| e.to_string())?;
    let scanned = control
        .scan("in-container")
        .await
        .map_err(|e| format!("scan: {e}"))?;
    assert_eq!(scanned.status, SessionStatus::Working);
    let calls = control
        .calls_for("in-container")
        .await
        .map_err(|e| format!("calls: {e}"))?;
    assert_eq!(
        calls.iter().filter(|c| c.is_create()).count(),
        1,
        "{calls:?}"
    );
    Ok(())
}
