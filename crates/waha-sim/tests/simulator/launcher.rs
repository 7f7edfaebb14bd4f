//! `SimLauncher` (feature `pool`): a container-pool `LaunchSpec` becomes an in-process
//! simulator configured by the container's environment, with one state directory per volume.

use std::time::Duration;

use container_pool::{EnvVar, LaunchSpec, ProcessLauncher, ServerHandle};
use serde_json::json;
use waha_sim::{SessionStatus, SimLauncher};

use crate::support::{TempDir, WAIT, call, call_json};

const KEY: &str = "launcher-test-key-5150";

fn spec(name: &str, volume: Option<&str>, extra: &[(&str, &str)]) -> LaunchSpec {
    let mut env = vec![
        EnvVar::secret("WAHA_API_KEY", KEY),
        EnvVar::plain("WAHA_WORKER_ID", name),
        EnvVar::plain("SIM_TIME_SCALE", "0.01"),
    ];
    env.extend(extra.iter().map(|(k, v)| EnvVar::plain(*k, *v)));
    LaunchSpec {
        name: name.to_owned(),
        image: "chipfleet/waha-sim:dev".to_owned(),
        env,
        volume: volume.map(str::to_owned),
    }
}

fn api(url: &url::Url, path: &str) -> String {
    format!("{}{}", url.as_str().trim_end_matches('/'), path)
}

#[tokio::test]
async fn a_launch_follows_the_spec_and_a_reused_volume_brings_sessions_back() {
    let root = TempDir::new("launcher");
    let launcher = SimLauncher::with_state_root(&root.0);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let first = launcher
        .launch(&spec("cp-acme-0", Some("vol-acme-0"), &[]))
        .await
        .unwrap();
    assert_eq!(first.url.host_str(), Some("127.0.0.1"));
    // The container's key is required; its worker id is reported.
    let unkeyed = http.get(api(&first.url, "/api/server/status"));
    assert_eq!(call(unkeyed).await.0, 401);
    let (status, body) = call_json(
        http.get(api(&first.url, "/api/server/status"))
            .header("X-Api-Key", KEY),
    )
    .await;
    assert_eq!(
        (status, body["worker"]["id"].clone()),
        (200, json!("cp-acme-0"))
    );
    let created = http
        .post(api(&first.url, "/api/sessions"))
        .header("X-Api-Key", KEY)
        .json(&json!({"name": "chip-old", "start": true}));
    assert_eq!(call(created).await.0, 201);
    // SIM_TIME_SCALE applies: STARTING (1 s) is 10 ms here.
    let control = launcher.control("cp-acme-0").expect("a running simulator");
    control
        .wait_for_status("chip-old", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    assert_eq!(launcher.running(), ["cp-acme-0"]);
    ServerHandle::stop(first.handle).await;
    assert!(launcher.control("cp-acme-0").is_none());

    // A new container on the same volume: the session is back (and starts again).
    let second = launcher
        .launch(&spec("cp-acme-0-new", Some("vol-acme-0"), &[]))
        .await
        .unwrap();
    let control = launcher.control("cp-acme-0-new").unwrap();
    assert!(control.session_status("chip-old").is_some(), "restored");
    control
        .wait_for_status("chip-old", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    ServerHandle::stop(second.handle).await;

    // Another volume, no volume, or SIM_STATE_DIR=none: a clean slate.
    for (name, volume, extra) in [
        ("other", Some("vol-other"), &[][..]),
        ("none", None, &[][..]),
        ("off", Some("vol-acme-0"), &[("SIM_STATE_DIR", "none")][..]),
    ] {
        let server = launcher.launch(&spec(name, volume, extra)).await.unwrap();
        let control = launcher.control(name).unwrap();
        assert_eq!(control.session_count(), 0, "{name}");
        ServerHandle::stop(server.handle).await;
    }
    assert!(root.0.join("vol-acme-0").is_dir());
}

#[tokio::test]
async fn bad_variables_fail_the_launch_and_crashes_stay_in_process() {
    let launcher = SimLauncher::new().configure(|b| b.time_scale(0.01));
    let state_root = launcher.state_root().to_owned();
    match launcher
        .launch(&spec("bad", None, &[("SIM_ERROR_RATE", "2")]))
        .await
    {
        Err(container_pool::Error::StartFailed { container, reason }) => {
            assert_eq!(container, "bad");
            assert!(reason.contains("errorRate"), "{reason}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }

    // A crash stops that simulator only (the binary would exit; a test process must not).
    let server = launcher
        .launch(&spec("crashy", Some("v"), &[("PORT", "1")]))
        .await
        .unwrap();
    let control = launcher.control("crashy").unwrap();
    control.crash();
    let deadline = std::time::Instant::now() + WAIT;
    while control.is_running() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ServerHandle::stop(server.handle).await;
    drop(launcher);
    assert!(!state_root.exists(), "a launcher's own root goes with it");
}
