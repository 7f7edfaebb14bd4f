//! The log of mutating calls: who (API key fingerprint, remote address), what (method, route,
//! session), when (wall clock and simulated time), read in-process and over `/_sim/calls`.

use std::time::Duration;

use serde_json::json;
use waha_sim::{CallRecord, SessionStatus};

use crate::support::{Api, KEY, WAIT, call, call_json, start};

fn summary(calls: &[CallRecord]) -> Vec<(String, String, Option<String>, u16)> {
    calls
        .iter()
        .map(|c| {
            (
                c.method.clone(),
                c.route.clone(),
                c.session.clone(),
                c.status,
            )
        })
        .collect()
}

fn row(
    method: &str,
    route: &str,
    session: Option<&str>,
    status: u16,
) -> (String, String, Option<String>, u16) {
    (
        method.to_owned(),
        route.to_owned(),
        session.map(str::to_owned),
        status,
    )
}

#[tokio::test]
async fn mutating_calls_are_logged_with_who_what_and_when() {
    let sim = start().await;
    let api = Api::new(&sim);
    let control = sim.control();

    call(api.post("/api/sessions", json!({"name": "chip-a", "start": true}))).await;
    call(api.post("/api/sessions", json!({"name": "chip-a"}))).await; // 422: exists
    call(api.get("/api/sessions")).await; // a read: not logged
    let (_, generated) = call_json(api.post("/api/sessions", json!({}))).await;
    let generated = generated["name"].as_str().unwrap().to_owned();
    control
        .wait_for_status("chip-a", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    control.scan("chip-a").unwrap(); // the control handle: not a call
    call(api.post(
        "/api/sendText",
        json!({"session": "chip-a", "chatId": "5511900000000@c.us", "text": "x"}),
    ))
    .await;
    call(api.post("/api/sessions/..%2Fodd/stop", json!({}))).await;
    call(api.post("/_sim/sessions/chip-a/silence", json!({}))).await; // control route: not logged
    let intruder = api
        .http
        .delete(format!("{}/api/sessions/chip-a", sim.url()))
        .header("X-Api-Key", "someone-else-key-0000");
    assert_eq!(call(intruder).await.0, 401);
    control.set_booting(Some(Duration::from_secs(3600)));
    call(api.post("/api/sessions", json!({"name": "chip-b"}))).await; // 400 while booting
    control.set_booting(None);

    let calls = control.calls();
    assert_eq!(
        summary(&calls),
        [
            row("POST", "/api/sessions", Some("chip-a"), 201),
            row("POST", "/api/sessions", Some("chip-a"), 422),
            row("POST", "/api/sessions", Some(&generated), 201),
            row("POST", "/api/sendText", Some("chip-a"), 201),
            row("POST", "/api/sessions/{session}/stop", Some("../odd"), 201),
            row("DELETE", "/api/sessions/{session}", Some("chip-a"), 401),
            // Refused before its body was read: the session is unknown.
            row("POST", "/api/sessions", None, 400),
        ]
    );
    assert_eq!(
        calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );

    // Who: a fingerprint of the key (never the key), the same for the same key.
    let ours = calls[0].api_key.clone().expect("a key was presented");
    assert!(ours.starts_with("sha256:") && !ours.contains(KEY), "{ours}");
    assert!(
        calls
            .iter()
            .filter(|c| c.status != 401)
            .all(|c| c.api_key.as_ref() == Some(&ours))
    );
    assert_ne!(
        calls[5].api_key.as_ref(),
        Some(&ours),
        "another key, another caller"
    );
    assert_eq!(calls[0].caller(), ours);
    assert!(
        calls
            .iter()
            .all(|c| c.remote_addr.is_some_and(|a| a.ip().is_loopback()))
    );

    // When: wall clock in order; simulated time is the wall clock divided by the scale (0.01).
    assert!(calls.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let wall = calls[6].at_ms - calls[0].at_ms;
    let simulated = calls[6].sim_ms - calls[0].sim_ms;
    // Both sides are whole milliseconds read a moment apart: allow two of them.
    assert!(
        simulated >= wall.saturating_sub(2) * 100 && simulated <= (wall + 2) * 100,
        "wall {wall} ms, simulated {simulated} ms"
    );

    // "At most one create per chip", as a test of a supervisor would prove it.
    let created = calls
        .iter()
        .filter(|c| c.is_create() && c.status == 201 && c.session.as_deref() == Some("chip-a"))
        .count();
    assert_eq!(created, 1);

    // The same over HTTP, filtered by session.
    let (status, body) = call_json(api.get("/_sim/calls?session=chip-a")).await;
    assert_eq!(status, 200);
    let over_http: Vec<CallRecord> = serde_json::from_value(body).unwrap();
    let for_a = control.calls_for("chip-a");
    assert_eq!(over_http, for_a);
    assert_eq!(for_a.len(), 4);

    // Cleared, numbering goes on.
    assert_eq!(call(api.delete("/_sim/calls")).await.0, 200);
    assert!(control.calls().is_empty());
    call(api.post("/api/sessions/chip-a/restart", json!({}))).await;
    assert_eq!(control.calls()[0].seq, 8);
    assert_eq!(control.stats().calls, 8);
}
