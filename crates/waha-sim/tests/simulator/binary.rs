//! The `waha-sim` binary: environment configuration, the healthcheck subcommand, crash exits.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{KEY, TempDir};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthcheck(port: u16) -> bool {
    Command::new(env!("CARGO_BIN_EXE_waha-sim"))
        .arg("healthcheck")
        .env("PORT", port.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Starts the binary on 127.0.0.1:`port` with these variables and waits until it is healthy.
fn spawn_healthy(port: u16, vars: &[(&str, &str)], stdout: Stdio, stderr: Stdio) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waha-sim"));
    command
        .env("PORT", port.to_string())
        .env("SIM_HOST", "127.0.0.1")
        .env("SIM_TIME_SCALE", "0.01")
        .envs(vars.iter().copied())
        .stdout(stdout)
        .stderr(stderr);
    let child = Running(command.spawn().expect("the binary runs"));
    let began = Instant::now();
    while !healthcheck(port) {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "binary never became healthy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits (10 s at most) for the process to exit.
fn wait_exit(child: &mut Running) -> std::process::ExitStatus {
    let began = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the process did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_serves_from_env_answers_healthcheck_and_exits_on_crash() {
    let port = free_port();
    let dir = TempDir::new("binary");
    assert!(!healthcheck(port), "nothing listens yet");
    let state_dir = dir.0.to_str().unwrap();
    let mut child = spawn_healthy(
        port,
        &[
            ("WAHA_API_KEY", KEY),
            ("WHATSAPP_DEFAULT_ENGINE", "GOWS"),
            ("WAHA_WORKER_ID", "bin-worker"),
            ("SIM_STATE_DIR", state_dir),
            ("RUST_LOG", "warn"),
        ],
        Stdio::null(),
        Stdio::inherit(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let version: serde_json::Value = http
        .get(format!("{base}/api/server/version"))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["engine"], "GOWS");
    let created = http
        .post(format!("{base}/api/sessions"))
        .header("X-Api-Key", KEY)
        .json(&json!({"name": "persisted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // `SIM_STATE_DIR` is where the session is written (hex of its name); a crash flushes
    // nothing, so wait for the writer first.
    let file = dir.0.join(format!("{}.json", hex::encode("persisted")));
    let began = Instant::now();
    let stored = loop {
        let stored = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if let Some(stored) = stored {
            break stored;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the session was never written to the state directory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored["name"], "persisted");
    let crash = http
        .post(format!("{base}/_sim/crash"))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(crash.status(), 202);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(70));
    assert!(file.is_file(), "the written session survives the crash");
}

#[test]
fn bad_configuration_exits_2_with_the_variable_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_waha-sim"))
        .env("WHATSAPP_DEFAULT_ENGINE", "CHROME")
        .env("SIM_STATE_DIR", "none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("WHATSAPP_DEFAULT_ENGINE"));
}

#[tokio::test]
async fn the_binary_never_prints_keys_or_config_secrets() {
    const API_KEY: &str = "api-key-S3CR3T-9f2c";
    const SECRETS: [&str; 4] = [
        API_KEY,
        "hmac-key-S3CR3T",
        "proxy-pass-S3CR3T",
        "header-token-S3CR3T",
    ];
    let port = free_port();
    let dir = TempDir::new("secrets");
    let out = std::fs::File::create(dir.0.join("out.log")).unwrap();
    let err = std::fs::File::create(dir.0.join("err.log")).unwrap();
    let mut child = spawn_healthy(
        port,
        &[
            ("WAHA_API_KEY", API_KEY),
            ("SIM_STATE_DIR", "none"),
            ("RUST_LOG", "debug"),
        ],
        out.into(),
        err.into(),
    );
    let mut hook = crate::support::Receiver::failing_first(1).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // A wrong key, then the right one as a query parameter.
    let refused = http
        .get(format!("{base}/api/sessions"))
        .header("X-Api-Key", "api-key-S3CR3T-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let config = json!({
        "proxy": {"server": "127.0.0.1:9", "username": "u", "password": "proxy-pass-S3CR3T"},
        "webhooks": [{"url": hook.url, "events": ["session.status"],
                      "hmac": {"key": "hmac-key-S3CR3T"},
                      "retries": {"delaySeconds": 1, "attempts": 2},
                      "customHeaders": [{"name": "Authorization",
                                         "value": "Bearer header-token-S3CR3T"}]}]
    });
    let created = http
        .post(format!("{base}/api/sessions?x-api-key={API_KEY}"))
        .json(&json!({"name": "s", "config": config, "start": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The first delivery (STARTING) failed and was retried (a logged failure), then signed and
    // delivered: its request id was seen twice.
    let delivery = loop {
        let delivery = hook.next_event("session.status").await;
        if delivery.json["payload"]["status"] == "STARTING" {
            break delivery;
        }
    };
    assert!(delivery.headers.contains_key("x-webhook-hmac"));
    let request_id = delivery.headers["x-webhook-request-id"].to_str().unwrap();
    assert_eq!(
        hook.request_ids()
            .iter()
            .filter(|id| id.as_str() == request_id)
            .count(),
        2,
        "the failed first attempt, then its retry"
    );
    let invalid = http
        .put(format!("{base}/api/sessions/s"))
        .header("X-Api-Key", API_KEY)
        .json(&json!({"config": {"proxy": {"password": "proxy-pass-S3CR3T"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let crash = http
        .post(format!("{base}/_sim/crash"))
        .header("X-Api-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(crash.status(), 202);
    assert_eq!(wait_exit(&mut child).code(), Some(70));
    let output = std::fs::read_to_string(dir.0.join("out.log")).unwrap()
        + &std::fs::read_to_string(dir.0.join("err.log")).unwrap();
    assert!(
        output.contains("waha-sim"),
        "the binary logged something at debug: {output}"
    );
    for secret in SECRETS {
        assert!(
            !output.contains(secret),
            "{secret} leaked into the output:\n{output}"
        );
    }
}
