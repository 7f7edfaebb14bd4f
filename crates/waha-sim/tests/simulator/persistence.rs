//! Sessions in a state directory come back after a restart (the stale sessions of a reused
//! volume).

use serde_json::json;
use waha_sim::SessionStatus;

use crate::support::{Api, TempDir, WAIT, call, call_json, fast};

#[tokio::test]
async fn sessions_come_back_after_a_restart() {
    let dir = TempDir::new("persist");
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    let api = Api::new(&sim);
    let config = json!({"metadata": {"tenant": "t1"}});
    call(api.post(
        "/api/sessions",
        json!({"name": "chip_test_1", "config": config, "start": true}),
    ))
    .await;
    call(api.post("/api/sessions", json!({"name": "default"}))).await;
    call(api.post("/api/sessions", json!({"name": "gone"}))).await;
    call(api.delete("/api/sessions/gone")).await;
    sim.control()
        .wait_for_status("chip_test_1", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    sim.control().scan("chip_test_1").unwrap();
    sim.shutdown().await;

    let again = fast().state_dir(&dir.0).start().await.unwrap();
    let api = Api::new(&again);
    let (_, all) = call_json(api.get("/api/sessions?all=true")).await;
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["chip_test_1", "default"]);
    // The running, logged-in session is started again and needs no QR.
    again
        .control()
        .wait_for_status("chip_test_1", SessionStatus::Working, WAIT)
        .await
        .unwrap();
    let (_, body) = call_json(api.get("/api/sessions/chip_test_1")).await;
    assert_eq!(body["config"]["metadata"]["tenant"], "t1");
    assert!(body["me"]["id"].as_str().unwrap().ends_with("@c.us"));
    assert_eq!(
        again.control().session_status("default"),
        Some(SessionStatus::Stopped)
    );
}

#[tokio::test]
async fn restart_all_starts_stopped_sessions_too_and_crash_keeps_written_state() {
    let dir = TempDir::new("restart-all");
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    call(Api::new(&sim).post("/api/sessions", json!({"name": "idle"}))).await;
    // Give the writer time, then crash (no flush on crash).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    sim.control().crash();
    sim.shutdown().await;

    let again = fast()
        .state_dir(&dir.0)
        .restart_all_sessions(true)
        .start()
        .await
        .unwrap();
    again
        .control()
        .wait_for_status("idle", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn unreadable_files_are_skipped_and_left_alone() {
    let dir = TempDir::new("corrupt");
    let bad = dir.0.join("broken.json");
    std::fs::write(&bad, b"{not json").unwrap();
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    assert_eq!(sim.control().session_count(), 0);
    sim.shutdown().await;
    assert_eq!(std::fs::read(&bad).unwrap(), b"{not json");
}

#[tokio::test]
async fn an_unusable_state_dir_is_a_typed_error() {
    let dir = TempDir::new("file");
    let file = dir.0.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let error = fast().state_dir(&file).start().await.unwrap_err();
    assert!(
        matches!(error, waha_sim::SimError::StateDir { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn long_multibyte_names_survive_a_restart() {
    // 54 UTF-16 units is the limit, but 54 CJK characters are 162 bytes of UTF-8: too long for
    // a hex file name (255 bytes at most on common file systems).
    let name = "会".repeat(54);
    let dir = TempDir::new("long-name");
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    let (status, _) = call(Api::new(&sim).post("/api/sessions", json!({"name": name}))).await;
    assert_eq!(status, 201);
    sim.shutdown().await;

    let again = fast().state_dir(&dir.0).start().await.unwrap();
    assert_eq!(
        again.control().session_status(&name),
        Some(SessionStatus::Stopped)
    );
    call(Api::new(&again).delete(&format!("/api/sessions/{name}"))).await;
    again.shutdown().await;
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "deleting removes the file"
    );
}
