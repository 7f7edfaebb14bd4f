//! The session state machine, observed through webhooks.

use serde_json::json;
use waha_sim::{DisconnectReason, SessionStatus, SimError};

use crate::support::{Api, Receiver, call, start, webhook};

async fn session_with_hook(sim: &waha_sim::RunningSimulator, name: &str) -> Receiver {
    let hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["session.status", "engine.event"])]});
    call(Api::new(sim).post(
        "/api/sessions",
        json!({"name": name, "config": config, "start": true}),
    ))
    .await;
    hook
}

#[tokio::test]
async fn starting_then_qr_then_working_on_scan() {
    let sim = start().await;
    let mut hook = session_with_hook(&sim, "s").await;
    assert_eq!(
        hook.statuses_until("SCAN_QR_CODE").await,
        ["STARTING", "SCAN_QR_CODE"]
    );
    sim.control().scan("s").unwrap();
    assert_eq!(hook.statuses_until("WORKING").await, ["WORKING"]);
    assert_eq!(
        sim.control().session_status("s"),
        Some(SessionStatus::Working)
    );
}

#[tokio::test]
async fn fail_goes_failed_without_an_engine_event_and_stays() {
    let sim = start().await;
    let mut hook = session_with_hook(&sim, "f").await;
    hook.statuses_until("SCAN_QR_CODE").await;
    sim.control().fail("f").unwrap();
    // A blocked account shows only as FAILED: the next delivery (past any QR refresh that came
    // first) is the status, no engine.event.
    let next = loop {
        let delivery = hook.next().await;
        if delivery.json["payload"]["status"] != "SCAN_QR_CODE" {
            break delivery;
        }
    };
    assert_eq!(next.json["event"], "session.status", "{}", next.json);
    assert_eq!(next.json["payload"]["status"], "FAILED");
    // FAILED stays until restarted.
    let error = sim.control().fail("f").unwrap_err();
    assert!(
        matches!(error, SimError::InvalidSessionState { .. }),
        "{error}"
    );
    hook.expect_silence(std::time::Duration::from_millis(100))
        .await;
    assert_eq!(
        sim.control().session_status("f"),
        Some(SessionStatus::Failed)
    );
}

#[tokio::test]
async fn a_dropped_connection_comes_back_on_a_logged_in_session() {
    // WEBJS (the default engine): FAILED, then restarted after the restart delay (2 s scaled).
    let sim = start().await;
    let mut hook = session_with_hook(&sim, "d").await;
    hook.statuses_until("SCAN_QR_CODE").await;
    sim.control().scan("d").unwrap();
    hook.statuses_until("WORKING").await;
    sim.control()
        .disconnect("d", DisconnectReason::ConnectionLost)
        .unwrap();
    let engine = hook.next_event("engine.event").await;
    assert_eq!(engine.json["payload"]["event"], "disconnected");
    assert_eq!(engine.json["payload"]["data"]["reason"], "TIMEOUT");
    assert_eq!(
        hook.statuses_until("WORKING").await,
        ["FAILED", "STARTING", "WORKING"]
    );
    assert!(sim.control().session_me("d").is_some(), "still logged in");
}

#[tokio::test]
async fn control_refuses_actions_that_do_not_apply() {
    let sim = start().await;
    let control = sim.control();
    assert!(matches!(
        control.scan("ghost"),
        Err(SimError::SessionNotFound(_))
    ));
    call(Api::new(&sim).post("/api/sessions", json!({"name": "x"}))).await;
    let error = control
        .disconnect("x", DisconnectReason::ConnectionReplaced)
        .unwrap_err();
    assert!(error.to_string().contains("STOPPED"), "{error}");
    let error = control.silence("x").unwrap_err();
    assert!(error.to_string().contains("STOPPED"), "{error}");
    assert!(matches!(
        control.fail("x"),
        Err(SimError::InvalidSessionState { .. })
    ));
    assert!(matches!(
        control
            .wait_for_status(
                "x",
                SessionStatus::Working,
                std::time::Duration::from_millis(50)
            )
            .await,
        Err(SimError::Timeout { .. })
    ));
}
