//! Each fault.

use std::time::{Duration, Instant};

use serde_json::json;
use waha_sim::{BootingStatus, Faults, SessionStatus};

use crate::support::{Api, Receiver, WAIT, call, call_json, fast, start, start_with, webhook};

#[tokio::test]
async fn startup_delay_refuses_connections_until_it_listens() {
    let sim = fast()
        .faults(Faults::none().with_startup_delay(Duration::from_secs(30))) // 300 ms
        .start()
        .await
        .unwrap();
    let url = format!("{}/ping", sim.url());
    let http = reqwest::Client::new();
    let error = http.get(&url).send().await.expect_err("not listening yet");
    assert!(error.is_connect(), "{error}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(call(http.get(&url)).await.0, 200);
}

#[tokio::test]
async fn booting_window_ping_answers_sessions_do_not() {
    for (status, code) in [
        (BootingStatus::BadRequest, 400),
        (BootingStatus::ServiceUnavailable, 503),
    ] {
        let sim = fast()
            .faults(Faults::none().with_booting(Duration::from_secs(30), status)) // 300 ms
            .start()
            .await
            .unwrap();
        let api = Api::new(&sim);
        assert_eq!(call(api.get("/ping")).await.0, 200);
        assert_eq!(call(api.get("/health")).await.0, 503);
        assert_eq!(call(api.get("/api/server/version")).await.0, 200);
        let (got, body) = call_json(api.post("/api/sessions", json!({"name": "b"}))).await;
        assert_eq!(got, code);
        assert_eq!(body["statusCode"], code);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            call(api.post("/api/sessions", json!({"name": "b"})))
                .await
                .0,
            201
        );
        assert_eq!(call(api.get("/health")).await.0, 200);
    }
}

#[tokio::test]
async fn booting_can_be_toggled_at_run_time() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.control().set_booting(Some(Duration::from_secs(3600)));
    assert_eq!(call(api.get("/api/sessions")).await.0, 400);
    sim.control().set_booting(None);
    assert_eq!(call(api.get("/api/sessions")).await.0, 200);
}

#[tokio::test]
async fn latency_is_added() {
    let sim = fast()
        .faults(Faults::none().with_latency(Duration::from_secs(20))) // 200 ms
        .start()
        .await
        .unwrap();
    let began = Instant::now();
    assert_eq!(call(Api::new(&sim).get("/ping")).await.0, 200);
    assert!(began.elapsed() >= Duration::from_millis(190));
}

#[tokio::test]
async fn error_rate_answers_500_on_api_calls_only() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.control()
        .set_faults(Faults::none().with_error_rate(1.0))
        .unwrap();
    let (status, body) = call_json(api.get("/api/sessions")).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"statusCode": 500, "message": "Internal server error"})
    );
    assert_eq!(call(api.get("/api/server/status")).await.0, 200);
    assert_eq!(call(api.get("/ping")).await.0, 200);
    assert!(
        sim.control()
            .set_faults(Faults::none().with_error_rate(2.0))
            .is_err()
    );
}

#[tokio::test]
async fn slow_stop_delays_stop_restart_and_delete() {
    let sim = fast()
        .faults(Faults::none().with_slow_stop(Duration::from_secs(20))) // 200 ms
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "s", "start": true}))).await;
    for (path, delete) in [
        ("/api/sessions/s/stop", false),
        ("/api/sessions/s/restart", false),
        ("/api/sessions/s", true),
    ] {
        let began = Instant::now();
        let request = if delete {
            api.delete(path)
        } else {
            api.post(path, json!({}))
        };
        let (status, _) = call(request).await;
        assert!(status == 200 || status == 201);
        assert!(began.elapsed() >= Duration::from_millis(190), "{path}");
    }
}

async fn hooked_session(sim: &waha_sim::RunningSimulator, name: &str) -> Receiver {
    let hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["session.status"])]});
    call(Api::new(sim).post("/api/sessions", json!({"name": name, "config": config}))).await;
    hook
}

#[tokio::test]
async fn dropped_webhooks_never_arrive() {
    let sim = start().await;
    let mut hook = hooked_session(&sim, "dr").await;
    sim.control()
        .set_faults(Faults::none().with_webhook_faults(1.0, 0.0, 0.0))
        .unwrap();
    call(Api::new(&sim).post("/api/sessions/dr/start", json!({}))).await;
    sim.control()
        .wait_for_status("dr", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    hook.expect_silence(Duration::from_millis(150)).await;
    assert!(sim.control().webhook_stats().dropped >= 2);
}

#[tokio::test]
async fn duplicated_webhooks_arrive_twice_with_the_same_event_id() {
    let sim = start().await;
    let mut hook = hooked_session(&sim, "du").await;
    sim.control()
        .set_faults(Faults::none().with_webhook_faults(0.0, 1.0, 0.0))
        .unwrap();
    call(Api::new(&sim).post("/api/sessions/du/start", json!({}))).await;
    let a = hook.next().await;
    let b = hook.next().await;
    assert_eq!(a.json["id"], b.json["id"]);
    assert_eq!(a.json["payload"]["status"], "STARTING");
    assert_ne!(
        a.headers["x-webhook-request-id"],
        b.headers["x-webhook-request-id"]
    );
}

#[tokio::test]
async fn reordered_webhooks_are_overtaken() {
    let sim = start_with(|t| t.reorder_delay = Duration::from_secs(50)).await; // 500 ms scaled
    let mut hook = hooked_session(&sim, "ro").await;
    let control = sim.control();
    control
        .set_faults(Faults::none().with_webhook_faults(0.0, 0.0, 1.0))
        .unwrap();
    call(Api::new(&sim).post("/api/sessions/ro/start", json!({}))).await; // STARTING, held back
    control.set_faults(Faults::none()).unwrap();
    control
        .wait_for_status("ro", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    let first = hook.next().await;
    let second = hook.next().await;
    assert_eq!(first.json["payload"]["status"], "SCAN_QR_CODE");
    assert_eq!(second.json["payload"]["status"], "STARTING");
    assert_eq!(control.webhook_stats().reordered, 1);
}

#[tokio::test]
async fn crash_stops_the_server_abruptly() {
    let sim = start().await;
    let api = Api::new(&sim);
    assert_eq!(call(api.get("/ping")).await.0, 200);
    sim.control().crash();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sim.control().is_running());
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{}/ping", sim.url()))
            .send()
            .await
            .is_err()
    );
    assert!(matches!(
        sim.control().scan("x"),
        Err(waha_sim::SimError::Stopped)
    ));
}
