//! sendText and acks.

use std::time::Duration;

use serde_json::json;
use waha_sim::{AckLevel, SessionStatus};

use crate::support::{Api, Receiver, WAIT, call, call_json, start, start_with, webhook};

async fn working(sim: &waha_sim::RunningSimulator, name: &str, hook: &Receiver) {
    let config = json!({"webhooks": [webhook(&hook.url, &["message.ack"])]});
    call(Api::new(sim).post(
        "/api/sessions",
        json!({"name": name, "config": config, "start": true}),
    ))
    .await;
    sim.control()
        .wait_for_status(name, SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    sim.control().scan(name).unwrap();
}

#[tokio::test]
async fn send_text_is_201_with_an_id_and_acks_follow_on_a_timer() {
    let sim = start_with(|t| t.ack_interval = Some(Duration::from_secs(1))).await; // 10 ms scaled
    let mut hook = Receiver::start().await;
    working(&sim, "m", &hook).await;
    let (status, body) = call_json(Api::new(&sim).post(
        "/api/sendText",
        json!({"session": "m", "chatId": "5511977776666@c.us", "text": "olá"}),
    ))
    .await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("true_5511977776666@c.us_"), "{id}");
    assert_eq!(body["fromMe"], true);
    assert_eq!(body["body"], "olá");

    let mut acks = Vec::new();
    for _ in 0..3 {
        let d = hook.next_event("message.ack").await;
        assert_eq!(d.json["payload"]["id"], id);
        acks.push((
            d.json["payload"]["ack"].as_i64().unwrap(),
            d.json["payload"]["ackName"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        acks,
        [
            (1, "SERVER".to_owned()),
            (2, "DEVICE".to_owned()),
            (3, "READ".to_owned())
        ]
    );
}

#[tokio::test]
async fn acks_can_be_driven_by_the_control_api() {
    let sim = start().await;
    let mut hook = Receiver::start().await;
    working(&sim, "c", &hook).await;
    let (_, body) = call_json(Api::new(&sim).post(
        "/api/sendText",
        json!({"session": "c", "chatId": "5511977776666@c.us", "text": "x"}),
    ))
    .await;
    let id = body["id"].as_str().unwrap();
    hook.expect_silence(Duration::from_millis(100)).await;
    sim.control().ack(id, AckLevel::Read).unwrap();
    let d = hook.next_event("message.ack").await;
    assert_eq!(d.json["payload"]["ack"], 3);
    assert_eq!(d.json["payload"]["fromMe"], true);
    assert!(sim.control().ack("true_nope", AckLevel::Read).is_err());
}

#[tokio::test]
async fn send_text_needs_a_working_session() {
    let sim = start().await;
    let api = Api::new(&sim);
    let (status, _) = call_json(api.post(
        "/api/sendText",
        json!({"session": "ghost", "chatId": "1@c.us", "text": "x"}),
    ))
    .await;
    assert_eq!(status, 404);
    call(api.post("/api/sessions", json!({"name": "w", "start": true}))).await;
    sim.control()
        .wait_for_status("w", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    let (status, body) = call_json(api.post(
        "/api/sendText",
        json!({"session": "w", "chatId": "1@c.us", "text": "x"}),
    ))
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["expected"], json!(["WORKING"]));
    let (status, body) = call_json(api.post("/api/sendText", json!({"session": "w"}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        json!(["chatId must be a string", "text must be a string"])
    );
}

#[tokio::test]
async fn seen_and_typing_are_201() {
    let sim = start().await;
    let hook = Receiver::start().await;
    working(&sim, "t", &hook).await;
    let api = Api::new(&sim);
    let body = json!({"session": "t", "chatId": "5511@c.us"});
    let (status, seen) = call_json(api.post("/api/sendSeen", body.clone())).await;
    assert_eq!((status, seen), (201, json!({})));
    for path in ["/api/startTyping", "/api/stopTyping"] {
        let (status, text) = call(api.post(path, body.clone())).await;
        assert_eq!((status, text.as_str()), (201, ""));
    }
}
