//! Sessions in a state directory come back after a restart (the stale sessions of a reused
//! volume).

use std::path::{Path, PathBuf};

use serde_json::json;
use waha_sim::SessionStatus;

use crate::support::{Api, PersistenceFailures, TempDir, WAIT, call, call_json, eventually, fast};

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
    let (status, _) = call(Api::new(&sim).post("/api/sessions", json!({"name": "idle"}))).await;
    assert_eq!(status, 201);
    // Crash once the writer has written the session (a crash flushes nothing).
    let file = session_file(&dir.0, "idle");
    eventually("the session file to be written", || {
        stored(&file).is_some_and(|v| v["name"] == "idle" && v["running"].as_bool() == Some(false))
    })
    .await;
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

/// The file a session named `name` (short) is stored in.
fn session_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.json", hex::encode(name.as_bytes())))
}

/// The JSON stored in `file`, if it is there and complete (files are written through a
/// temporary file and renamed, so a readable one is a whole one).
fn stored(file: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[tokio::test]
async fn unreadable_files_are_moved_aside_and_survive_a_session_of_the_same_name() {
    let dir = TempDir::new("corrupt");
    let bad = session_file(&dir.0, "clash");
    std::fs::write(&bad, b"{not json").unwrap();
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    assert_eq!(sim.control().session_count(), 0);
    // A new session with the same name is written where the bad file was.
    let (status, _) = call(Api::new(&sim).post("/api/sessions", json!({"name": "clash"}))).await;
    assert_eq!(status, 201);
    sim.shutdown().await;

    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&bad).unwrap()).unwrap();
    assert_eq!(written["name"], "clash");
    let aside: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &bad)
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        aside[0]
            .to_string_lossy()
            .starts_with(&format!("{}.corrupt-", bad.display())),
        "{aside:?}"
    );
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"{not json");

    // The moved file is not read again: only the new session comes back.
    let again = fast().state_dir(&dir.0).start().await.unwrap();
    assert_eq!(again.control().session_count(), 1);
    again.shutdown().await;
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"{not json");
}

#[tokio::test]
async fn a_failed_write_is_retried_until_it_succeeds() {
    let failures = PersistenceFailures::capture();
    let dir = TempDir::new("write-retry");
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    // A non-empty directory where the session's file goes: every write fails.
    let target = session_file(&dir.0, "blocked");
    std::fs::create_dir_all(target.join("obstacle")).unwrap();
    let (status, _) = call(Api::new(&sim).post("/api/sessions", json!({"name": "blocked"}))).await;
    assert_eq!(status, 201);
    // The first write fails, and so does its first retry (50 ms later).
    eventually("two failed writes of the session file", || {
        failures.of(&target) >= 2
    })
    .await;
    assert!(target.is_dir(), "the obstacle is still in place");

    // Cleared right after a failure: the next retry is a whole pause (100 ms or more) away.
    std::fs::remove_dir_all(&target).unwrap();
    eventually("the session file is written", || {
        stored(&target).is_some_and(|v| v["name"] == "blocked")
    })
    .await;
    sim.shutdown().await;
    assert!(
        !target.with_extension("json.tmp").exists(),
        "no temporary file is left behind"
    );
}

#[tokio::test]
async fn a_failed_removal_is_retried_so_a_deleted_session_stays_deleted() {
    let failures = PersistenceFailures::capture();
    let dir = TempDir::new("remove-retry");
    let sim = fast().state_dir(&dir.0).start().await.unwrap();
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "doomed"}))).await;
    let target = session_file(&dir.0, "doomed");
    eventually("the session file is written", || target.is_file()).await;
    let stale = std::fs::read(&target).unwrap();

    // The file cannot be removed while a non-empty directory stands in its place.
    std::fs::remove_file(&target).unwrap();
    std::fs::create_dir_all(target.join("obstacle")).unwrap();
    let (status, _) = call(api.delete("/api/sessions/doomed")).await;
    assert_eq!(status, 200);
    let side = dir.0.join("stale.side");
    std::fs::write(&side, &stale).unwrap();
    // The first removal fails, and so does its first retry (50 ms later).
    eventually("two failed removals of the session file", || {
        failures.of(&target) >= 2
    })
    .await;

    // The obstacle gives way to the stale file a failed removal leaves behind, right after a
    // failure: no retry runs in between (the next one is a whole pause, 100 ms or more, away).
    std::fs::remove_dir_all(&target).unwrap();
    std::fs::rename(&side, &target).unwrap();
    eventually("the stale file is removed", || !target.exists()).await;
    sim.shutdown().await;

    let again = fast().state_dir(&dir.0).start().await.unwrap();
    assert_eq!(
        again.control().session_count(),
        0,
        "the deleted session does not come back"
    );
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
