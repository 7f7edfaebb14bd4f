//! Thousands of sessions stay cheap.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use waha_sim::SessionStatus;

use crate::support::{Api, call, call_json, start};

const SESSIONS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sessions_start_scan_and_list() {
    let sim = start().await;
    let api = Api::new(&sim);
    futures::stream::iter(0..SESSIONS)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            async move {
                let (status, _) = call(api.post(
                    "/api/sessions",
                    json!({"name": format!("chip-{i:05}"), "start": true}),
                ))
                .await;
                assert_eq!(status, 201);
            }
        })
        .await;
    let control = sim.control();
    for i in 0..SESSIONS {
        let name = format!("chip-{i:05}");
        control
            .wait_for_status(&name, SessionStatus::ScanQrCode, Duration::from_secs(30))
            .await
            .unwrap();
        control.scan(&name).unwrap();
    }
    let (status, list) = call_json(api.get("/api/sessions")).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), SESSIONS);
    assert!(list.iter().all(|s| s["status"] == "WORKING"));
}
