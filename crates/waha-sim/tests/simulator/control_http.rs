//! The control API over HTTP (`/_sim`).

use serde_json::json;
use waha_sim::SessionStatus;

use crate::support::{Api, Receiver, WAIT, call, call_json, eventually, start, webhook};

#[tokio::test]
async fn scan_fail_messages_ack_over_http() {
    let sim = start().await;
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["message", "message.ack"])]});
    call(api.post(
        "/api/sessions",
        json!({"name": "h", "config": config, "start": true}),
    ))
    .await;
    sim.control()
        .wait_for_status("h", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();

    let (status, body) = call_json(api.post(
        "/_sim/sessions/h/scan",
        json!({"id": "5511900001111@c.us", "pushName": "Caio"}),
    ))
    .await;
    assert_eq!((status, body["status"].clone()), (201, json!("WORKING")));
    assert_eq!(body["me"]["pushName"], "Caio");

    let (status, body) = call_json(api.post(
        "/_sim/sessions/h/messages",
        json!({"from": "5511922223333@c.us", "text": "hi"}),
    ))
    .await;
    assert_eq!(status, 201);
    let incoming = hook.next_event("message").await;
    assert_eq!(incoming.json["payload"]["id"], body["id"]);

    let (_, sent) = call_json(api.post(
        "/api/sendText",
        json!({"session": "h", "chatId": "5511922223333@c.us", "text": "x"}),
    ))
    .await;
    let path = format!("/_sim/messages/{}/ack", sent["id"].as_str().unwrap());
    assert_eq!(call(api.post(&path, json!({"ack": "DEVICE"}))).await.0, 201);
    assert_eq!(
        hook.next_event("message.ack").await.json["payload"]["ack"],
        2
    );
    assert_eq!(call(api.post(&path, json!({"ack": "LOUD"}))).await.0, 400);

    let (status, body) = call_json(api.post(
        "/_sim/sessions/h/disconnect",
        json!({"reason": "connectionLost"}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        call(api.post("/_sim/sessions/h/disconnect", json!({"reason": "net"})))
            .await
            .0,
        400,
        "not a reason"
    );
    sim.control()
        .wait_for_status("h", SessionStatus::Working, WAIT)
        .await
        .unwrap();
    let (status, body) = call_json(api.post("/_sim/sessions/h/silence", json!({}))).await;
    assert_eq!((status, body["status"].clone()), (201, json!("WORKING")));
    let (status, body) = call_json(api.get("/_sim/sessions/h")).await;
    assert_eq!((status, body["name"].clone()), (200, json!("h")));
    let (status, body) = call_json(api.post("/_sim/sessions/h/fail", json!({}))).await;
    assert_eq!((status, body["status"].clone()), (201, json!("FAILED")));
    let (status, _) = call(api.post("/_sim/sessions/h/scan", json!({}))).await;
    assert_eq!(status, 409);
    let (status, _) = call(api.post("/_sim/sessions/nobody/scan", json!({}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn faults_booting_stats_and_crash_over_http() {
    let sim = start().await;
    let api = Api::new(&sim);
    let (status, faults) = call_json(api.get("/_sim/faults")).await;
    assert_eq!(status, 200);
    assert_eq!(faults["errorRate"], 0.0);
    let (status, _) =
        call_json(api.put("/_sim/faults", json!({"latencyMs": 0, "errorRate": 1.0}))).await;
    assert_eq!(status, 200);
    assert_eq!(call(api.get("/api/sessions")).await.0, 500);
    assert_eq!(
        call(api.put("/_sim/faults", json!({"errorRate": 7})))
            .await
            .0,
        400
    );
    assert_eq!(
        call(api.put("/_sim/faults", json!({"nonsense": 1})))
            .await
            .0,
        400
    );
    assert_eq!(call(api.put("/_sim/faults", json!({}))).await.0, 200);

    assert_eq!(
        call(api.post("/_sim/booting", json!({"durationMs": 3_600_000})))
            .await
            .0,
        201
    );
    assert_eq!(call(api.get("/api/sessions")).await.0, 400);
    let (status, body) = call_json(api.post("/_sim/booting", json!({"durationMs": 0}))).await;
    assert_eq!((status, body), (201, json!({"booting": false})));
    assert_eq!(call(api.get("/api/sessions")).await.0, 200);

    let (status, stats) = call_json(api.get("/_sim/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(stats["sessions"], 0);
    // No webhook, and no mutating `/api` call (`/_sim` is not logged).
    assert_eq!(stats["webhooks"]["attempts"], 0, "{stats}");
    assert_eq!(stats["webhooks"]["dispatchers"], 0, "{stats}");
    assert_eq!(stats["calls"], 0, "{stats}");
    assert!(stats["pendingTimers"].is_u64(), "{stats}");

    // The crash comes right after the answer.
    let (status, body) = call_json(api.post("/_sim/crash", json!({}))).await;
    assert_eq!((status, body), (202, json!({"crashing": true})));
    let control = sim.control();
    eventually("the simulator to stop after /_sim/crash", || {
        !control.is_running()
    })
    .await;
}
