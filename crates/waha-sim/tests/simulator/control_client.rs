//! `SimControlClient`: the control API over HTTP with typed requests, answers and errors, as a
//! test of a simulator in a container uses it.

use std::time::Duration;

use serde_json::json;
use waha_sim::{
    AckLevel, ApiKey, DisconnectReason, Faults, Me, SessionStatus, SimControlClient,
    SimControlError,
};

use crate::support::{Api, KEY, Receiver, WAIT, call, call_json, start, webhook};

#[tokio::test]
async fn a_simulator_driven_through_the_typed_client() {
    let sim = start().await;
    let api = Api::new(&sim);
    let client = SimControlClient::new(sim.url(), Some(ApiKey::new(KEY))).unwrap();
    let mut hook = Receiver::start().await;
    let events = ["session.status", "message", "message.ack", "engine.event"];
    let config = json!({"webhooks": [webhook(&hook.url, &events)]});
    call(api.post(
        "/api/sessions",
        json!({"name": "typed", "config": config, "start": true}),
    ))
    .await;

    let waiting = client
        .wait_for_status("typed", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    assert_eq!(waiting.name, "typed");
    let me = Me::phone("5511977770000", "Bia");
    let working = client.scan_as("typed", &me).await.unwrap();
    assert_eq!(
        (working.status, working.me),
        (SessionStatus::Working, Some(me))
    );

    let id = client
        .receive_message("typed", "5511922221111@c.us", "oi")
        .await
        .unwrap();
    assert_eq!(
        hook.next_event("message").await.json["payload"]["id"],
        id.as_str()
    );
    let (_, sent) = call_json(api.post(
        "/api/sendText",
        json!({"session": "typed", "chatId": "5511922221111@c.us", "text": "x"}),
    ))
    .await;
    client
        .ack(sent["id"].as_str().unwrap(), AckLevel::Device)
        .await
        .unwrap();
    assert_eq!(
        hook.next_event("message.ack").await.json["payload"]["ack"],
        2
    );

    let seeded = client
        .set_faults(&Faults::none().with_seed(5).with_latency(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(seeded.seed, Some(5));
    assert_eq!(client.faults().await.unwrap(), seeded);

    // The engine drops the session (WEBJS: a transient FAILED), then it works again.
    let dropped = client
        .disconnect("typed", DisconnectReason::ConnectionReplaced)
        .await
        .unwrap();
    assert_eq!(dropped.status, SessionStatus::Failed);
    let engine = hook.next_event("engine.event").await;
    assert_eq!(engine.json["payload"]["data"]["reason"], "CONFLICT");
    client
        .wait_for_status("typed", SessionStatus::Working, WAIT)
        .await
        .unwrap();
    assert_eq!(
        client.silence("typed").await.unwrap().status,
        SessionStatus::Working
    );
    assert_eq!(
        client.fail("typed").await.unwrap().status,
        SessionStatus::Failed
    );

    // Typed refusals.
    assert!(matches!(
        client.scan("typed").await,
        Err(SimControlError::WrongStatus(_))
    ));
    assert!(matches!(
        client.scan("nobody").await,
        Err(SimControlError::NotFound(_))
    ));
    assert!(matches!(
        client.ack("no-such-message", AckLevel::Read).await,
        Err(SimControlError::NotFound(_))
    ));
    let stranger = SimControlClient::new(sim.url(), Some(ApiKey::new("wrong-key-0000"))).unwrap();
    assert!(matches!(
        stranger.stats().await,
        Err(SimControlError::Unauthorized)
    ));
    assert!(matches!(
        client
            .wait_for_status("typed", SessionStatus::Working, Duration::from_millis(50))
            .await,
        Err(SimControlError::Timeout { .. })
    ));

    // Booting, calls and stats.
    client.set_booting(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(call(api.get("/api/sessions")).await.0, 400);
    client.set_booting(Duration::ZERO).await.unwrap();
    assert_eq!(call(api.get("/api/sessions")).await.0, 200);
    let calls = client.calls_for("typed").await.unwrap();
    assert_eq!(
        calls.iter().filter(|c| c.is_create()).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        client.calls().await.unwrap().len(),
        2,
        "create and sendText"
    );
    client.clear_calls().await.unwrap();
    assert!(client.calls().await.unwrap().is_empty());
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.sessions, 1);
    assert!(stats.webhooks.delivered >= 3, "{stats:?}");
    assert_eq!(stats.calls, sim.control().stats().calls);

    // A crash, then nothing answers.
    client.crash().await.unwrap();
    let control = sim.control().clone();
    let deadline = std::time::Instant::now() + WAIT;
    while control.is_running() {
        assert!(std::time::Instant::now() < deadline, "it crashed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        client.stats().await,
        Err(SimControlError::Transport(_))
    ));
}

/// A base URL is never echoed (it could carry credentials), and one with credentials is
/// refused: the key travels in `X-Api-Key`, never in the URL or the client's `Debug`.
#[test]
fn urls_with_credentials_are_refused_and_never_echoed() {
    for url in [
        "http://user:hunter2@127.0.0.1:3000",
        "http://hunter2@127.0.0.1:3000",
        "ftp://hunter2@127.0.0.1/",
        "not a url hunter2",
    ] {
        let err = SimControlClient::new(url, None).unwrap_err();
        assert!(
            matches!(err, SimControlError::InvalidUrl(_)),
            "{url}: {err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{url}: {text}");
    }
    let client = SimControlClient::new("http://127.0.0.1:3000", Some(ApiKey::new(KEY))).unwrap();
    assert!(!format!("{client:?}").contains(KEY));
}
