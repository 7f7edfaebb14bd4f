//! The session state machine, observed through webhooks.

use serde_json::json;
use waha_sim::{SessionStatus, SimError};

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
async fn fail_emits_the_reason_and_goes_failed() {
    let sim = start().await;
    let mut hook = session_with_hook(&sim, "f").await;
    hook.statuses_until("SCAN_QR_CODE").await;
    sim.control().fail("f", "connection_replaced").unwrap();
    let engine = hook.next_event("engine.event").await;
    assert_eq!(
        engine.json["payload"]["data"]["reason"],
        "connection_replaced"
    );
    assert_eq!(hook.statuses_until("FAILED").await, ["FAILED"]);
    // FAILED stays until restarted.
    let error = sim.control().fail("f", "again").unwrap_err();
    assert!(
        matches!(error, SimError::InvalidSessionState { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn disconnect_reconnects_a_logged_in_session() {
    let sim = start().await;
    let mut hook = session_with_hook(&sim, "d").await;
    hook.statuses_until("SCAN_QR_CODE").await;
    sim.control().scan("d").unwrap();
    hook.statuses_until("WORKING").await;
    sim.control().disconnect("d", "stream errored").unwrap();
    let engine = hook.next_event("engine.event").await;
    assert_eq!(engine.json["payload"]["event"], "connection.closed");
    assert_eq!(engine.json["payload"]["data"]["reason"], "stream errored");
    assert_eq!(
        hook.statuses_until("WORKING").await,
        ["STARTING", "WORKING"]
    );
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
    let error = control.disconnect("x", "r").unwrap_err();
    assert!(error.to_string().contains("STOPPED"), "{error}");
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
