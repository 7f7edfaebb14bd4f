//! Disconnects in each engine's own shape (`engine.event`, and `state.change` on WEBJS), and
//! WAHA's reaction per engine, as the contract's "Why a session stopped working" describes.

use serde_json::json;
use waha_sim::{DisconnectReason, Engine, SessionStatus};

use crate::support::{Delivery, Receiver, WAIT, fast, hooked_session};

const EVENTS: &[&str] = &["session.status", "engine.event", "state.change"];

/// A WORKING session on a simulator of `engine`, its webhook taking every event above.
async fn working_on(engine: Engine) -> (waha_sim::RunningSimulator, Receiver) {
    let sim = fast().engine(engine).start().await.unwrap();
    let mut hook = Receiver::start().await;
    hooked_session(&sim, "chip", &hook, EVENTS, true).await;
    hook.statuses_until("WORKING").await;
    (sim, hook)
}

/// The deliveries after a disconnect, up to and including the status `until`, as
/// `(event, payload)`; `state.change` CONNECTED (WEBJS, on every WORKING) is left out.
async fn until_status(hook: &mut Receiver, until: &str) -> Vec<(String, serde_json::Value)> {
    let mut seen = Vec::new();
    loop {
        let Delivery { json, .. } = hook.next().await;
        let event = json["event"].as_str().unwrap().to_owned();
        let payload = json["payload"].clone();
        if event == "state.change" && payload["state"] == "CONNECTED" {
            continue;
        }
        let done = event == "session.status" && payload["status"] == until;
        seen.push((event, payload));
        if done {
            return seen;
        }
    }
}

fn statuses(seen: &[(String, serde_json::Value)]) -> Vec<&str> {
    seen.iter()
        .filter(|(event, _)| event == "session.status")
        .map(|(_, payload)| payload["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn noweb_reports_baileys_status_codes_and_restarts_except_after_a_logout() {
    let (sim, mut hook) = working_on(Engine::Noweb).await;
    let control = sim.control();
    control
        .disconnect("chip", DisconnectReason::ConnectionReplaced)
        .unwrap();
    let seen = until_status(&mut hook, "WORKING").await;
    let (event, payload) = &seen[0];
    assert_eq!(event, "engine.event");
    assert_eq!(payload["event"], "connection.update");
    assert_eq!(payload["data"]["connection"], "close");
    let error = &payload["data"]["lastDisconnect"]["error"];
    assert_eq!(error["output"]["statusCode"], 440);
    assert_eq!(error["output"]["payload"]["statusCode"], 440);
    assert_eq!(error["isBoom"], true);
    assert!(payload["data"]["lastDisconnect"]["date"].is_string());
    // Baileys' fixed 2 s restart, then logged in again.
    assert_eq!(statuses(&seen), ["STARTING", "WORKING"]);

    control
        .disconnect("chip", DisconnectReason::LoggedOut)
        .unwrap();
    let seen = until_status(&mut hook, "FAILED").await;
    assert_eq!(
        seen[0].1["data"]["lastDisconnect"]["error"]["output"]["statusCode"],
        401
    );
    assert_eq!(statuses(&seen), ["FAILED"]);
    assert_eq!(control.session_me("chip"), None, "401 logs the session out");
    hook.expect_silence(std::time::Duration::from_millis(100))
        .await;
    assert_eq!(control.session_status("chip"), Some(SessionStatus::Failed));
}

#[tokio::test]
async fn gows_reports_whatsmeow_events() {
    let (sim, mut hook) = working_on(Engine::Gows).await;
    let control = sim.control();

    // A keep-alive timeout: whatsmeow reconnects.
    control
        .disconnect("chip", DisconnectReason::ConnectionLost)
        .unwrap();
    let seen = until_status(&mut hook, "WORKING").await;
    assert_eq!(seen[0].1["event"], "events.KeepAliveTimeout");
    assert_eq!(seen[0].1["data"]["ErrorCount"], 3);
    assert_eq!(statuses(&seen), ["STARTING", "WORKING"]);

    // A replaced stream: FAILED, still logged in (a restart brings it back).
    control
        .disconnect("chip", DisconnectReason::ConnectionReplaced)
        .unwrap();
    let seen = until_status(&mut hook, "FAILED").await;
    assert_eq!(
        (seen[0].1["event"].clone(), seen[0].1["data"].clone()),
        (json!("events.StreamReplaced"), json!({}))
    );
    assert!(control.session_me("chip").is_some());

    // A temporary ban, after a restart.
    let api = crate::support::Api::new(&sim);
    crate::support::call(api.post("/api/sessions/chip/restart", json!({}))).await;
    until_status(&mut hook, "WORKING").await;
    control
        .disconnect("chip", DisconnectReason::TemporaryBan)
        .unwrap();
    let seen = until_status(&mut hook, "FAILED").await;
    assert_eq!(seen[0].1["event"], "events.TemporaryBan");
    assert_eq!(seen[0].1["data"]["Code"], 101);
    assert!(seen[0].1["data"]["Expire"].as_u64().unwrap() > 0);

    // Logged out: FAILED and the account is gone.
    crate::support::call(api.post("/api/sessions/chip/restart", json!({}))).await;
    until_status(&mut hook, "WORKING").await;
    control
        .disconnect("chip", DisconnectReason::LoggedOut)
        .unwrap();
    let seen = until_status(&mut hook, "FAILED").await;
    assert_eq!(
        (seen[0].1["event"].clone(), seen[0].1["data"].clone()),
        (
            json!("events.LoggedOut"),
            json!({"OnConnect": false, "Reason": 401})
        )
    );
    assert_eq!(control.session_me("chip"), None);
}

#[tokio::test]
async fn webjs_reports_states_and_fails_then_restarts() {
    let (sim, mut hook) = working_on(Engine::Webjs).await;
    let control = sim.control();
    control
        .disconnect("chip", DisconnectReason::ConnectionReplaced)
        .unwrap();
    let seen = until_status(&mut hook, "WORKING").await;
    assert_eq!(
        seen[0],
        ("state.change".to_owned(), json!({"state": "CONFLICT"}))
    );
    assert_eq!(
        seen[1],
        (
            "engine.event".to_owned(),
            json!({"event": "disconnected", "data": {"reason": "CONFLICT"}})
        )
    );
    // A transient FAILED, restarted after 2 s (scaled).
    assert_eq!(statuses(&seen), ["FAILED", "STARTING", "WORKING"]);

    // LOGOUT is no state: no state.change, and FAILED stays.
    control
        .disconnect("chip", DisconnectReason::LoggedOut)
        .unwrap();
    let seen = until_status(&mut hook, "FAILED").await;
    assert_eq!(
        seen,
        [
            (
                "engine.event".to_owned(),
                json!({"event": "disconnected", "data": {"reason": "LOGOUT"}})
            ),
            (
                "session.status".to_owned(),
                json!({"name": "chip", "status": "FAILED"})
            ),
        ]
    );
    hook.expect_silence(std::time::Duration::from_millis(100))
        .await;
    assert_eq!(control.session_me("chip"), None);
}

/// WEBJS reports `state.change` CONNECTED when the session works.
#[tokio::test]
async fn webjs_reports_connected_when_working() {
    let sim = fast().start().await.unwrap();
    let mut hook = Receiver::start().await;
    hooked_session(&sim, "chip", &hook, EVENTS, true).await;
    let connected = hook.next_event("state.change").await;
    assert_eq!(connected.json["payload"], json!({"state": "CONNECTED"}));
    // Right before the WORKING status, as whatsapp-web.js reports its state first.
    let working = hook.next_event("session.status").await;
    assert_eq!(working.json["payload"]["status"], "WORKING");
}

/// Every reason renders on every engine, and the control API takes the reason's name.
#[tokio::test]
async fn every_reason_on_every_engine() {
    for engine in [Engine::Noweb, Engine::Gows, Engine::Webjs] {
        let (sim, mut hook) = working_on(engine).await;
        let api = crate::support::Api::new(&sim);
        for reason in DisconnectReason::ALL {
            let (status, body) = crate::support::call_json(api.post(
                "/_sim/sessions/chip/disconnect",
                json!({"reason": reason.name()}),
            ))
            .await;
            assert_eq!(status, 201, "{engine:?} {reason}: {body}");
            let engine_event = hook.next_event("engine.event").await;
            assert!(
                engine_event.json["payload"]["event"].is_string(),
                "{engine:?} {reason}"
            );
            // Back to WORKING for the next reason: restart (and scan again if logged out).
            let control = sim.control();
            if control.session_status("chip") != Some(SessionStatus::Working) {
                crate::support::call(api.post("/api/sessions/chip/stop", json!({}))).await;
                crate::support::call(api.post("/api/sessions/chip/start", json!({}))).await;
                let deadline = std::time::Instant::now() + WAIT;
                loop {
                    match control.session_status("chip") {
                        Some(SessionStatus::Working) => break,
                        Some(SessionStatus::ScanQrCode) => {
                            let _ = control.scan("chip");
                        }
                        _ => {}
                    }
                    assert!(std::time::Instant::now() < deadline, "{engine:?} {reason}");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
        let (status, body) = crate::support::call_json(api.post(
            "/_sim/sessions/chip/disconnect",
            json!({"reason": "gremlins"}),
        ))
        .await;
        assert_eq!(status, 400, "{body}");
    }
}
