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

#[tokio::test]
async fn binary_serves_from_env_answers_healthcheck_and_exits_on_crash() {
    let port = free_port();
    let dir = TempDir::new("binary");
    assert!(!healthcheck(port), "nothing listens yet");
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_waha-sim"))
            .env("PORT", port.to_string())
            .env("SIM_HOST", "127.0.0.1")
            .env("WAHA_API_KEY", KEY)
            .env("WHATSAPP_DEFAULT_ENGINE", "GOWS")
            .env("WAHA_WORKER_ID", "bin-worker")
            .env("SIM_STATE_DIR", &dir.0)
            .env("SIM_TIME_SCALE", "0.01")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    let began = Instant::now();
    while !healthcheck(port) {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "binary never became healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let crash = http
        .post(format!("{base}/_sim/crash"))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(crash.status(), 202);
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the process did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(70));
    assert!(
        std::fs::read_dir(&dir.0).unwrap().count() >= 1,
        "the session was written to the state directory"
    );
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
