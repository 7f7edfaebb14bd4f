//! QR code and pairing code routes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;
use waha_sim::{Engine, SessionStatus};

use crate::support::{Api, Receiver, WAIT, call, call_json, fast, start, start_with, webhook};

async fn scan_ready(sim: &waha_sim::RunningSimulator, api: &Api, name: &str) {
    call(api.post("/api/sessions", json!({"name": name, "start": true}))).await;
    sim.control()
        .wait_for_status(name, SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn qr_is_a_png_base64_json_with_exact_accept_or_raw() {
    let sim = start().await;
    let api = Api::new(&sim);
    scan_ready(&sim, &api, "q").await;

    let response = api.get("/api/q/auth/qr").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let png = response.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let (status, body) = call_json(
        api.get("/api/q/auth/qr")
            .header("Accept", "application/json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["mimetype"], "image/png");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&decoded[..8], b"\x89PNG\r\n\x1a\n");

    // Not exactly application/json: the PNG.
    let response = api
        .get("/api/q/auth/qr")
        .header("Accept", "application/json, text/plain, */*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");

    let (status, body) = call_json(api.get("/api/q/auth/qr?format=raw")).await;
    assert_eq!(status, 200);
    let value = body["value"].as_str().unwrap();
    assert!(value.starts_with("2@"), "{value}");
}

/// WAHA's `format` parameter (`image` by default) has no validator: the controller only tests
/// `format == 'raw'`, so `image` and every other value give the image forms, never a 400.
#[tokio::test]
async fn qr_format_other_than_raw_gives_the_image() {
    let sim = start().await;
    let api = Api::new(&sim);
    scan_ready(&sim, &api, "f").await;

    for query in [
        "format=image",
        "format=svg",
        "format=RAW",
        "format=",
        // A repeated key is a list in Express; `['raw','raw'] == 'raw'` is false in JavaScript.
        "format=raw&format=raw",
    ] {
        let response = api
            .get(&format!("/api/f/auth/qr?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(response.headers()["content-type"], "image/png", "{query}");
        let png = response.bytes().await.unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{query}");
    }

    let (status, body) = call_json(
        api.get("/api/f/auth/qr?format=image")
            .header("Accept", "application/json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["mimetype"], "image/png");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&decoded[..8], b"\x89PNG\r\n\x1a\n");

    // `raw` wins over `Accept`.
    let (status, body) = call_json(
        api.get("/api/f/auth/qr?format=raw")
            .header("Accept", "application/json"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["value"].as_str().unwrap().starts_with("2@"), "{body}");
}

#[tokio::test]
async fn qr_waits_then_answers_422_without_status_code() {
    let sim = start_with(|t| {
        t.starting = Duration::from_secs(3600);
        t.qr_wait = Duration::from_secs(5);
    })
    .await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "default", "start": true}))).await;
    let began = Instant::now();
    let (status, body) = call_json(api.get("/api/default/auth/qr")).await;
    assert!(
        began.elapsed() >= Duration::from_millis(45),
        "it waited (5 s scaled)"
    );
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": "Session status is not as expected. Try again later or restart the session",
               "session": "default", "status": "STARTING", "expected": ["SCAN_QR_CODE"]})
    );
}

#[tokio::test]
async fn qr_wait_returns_as_soon_as_the_qr_is_there() {
    let sim = start_with(|t| {
        t.starting = Duration::from_secs(20); // 200 ms scaled
        t.qr_wait = Duration::from_secs(6000); // 60 s scaled
    })
    .await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "w", "start": true}))).await;
    let began = Instant::now();
    let (status, body) = call_json(api.get("/api/w/auth/qr?format=raw")).await;
    assert_eq!(status, 200);
    assert!(body["value"].is_string());
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "answered when SCAN_QR_CODE came, not at the end of the 60 s wait"
    );
}

#[tokio::test]
async fn qr_of_a_session_not_running_is_404() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "idle"}))).await;
    for name in ["idle", "missing"] {
        let (status, body) = call_json(api.get(&format!("/api/{name}/auth/qr"))).await;
        assert_eq!(status, 404);
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("We didn't find a session with name '{name}'")));
    }
}

#[tokio::test]
async fn qr_refreshes_then_fails_after_the_last_refresh() {
    let sim = start_with(|t| {
        t.first_qr = Duration::from_secs(10); // 100 ms
        t.qr_refresh = Duration::from_secs(5); // 50 ms
        t.qr_refreshes = 2;
    })
    .await;
    let api = Api::new(&sim);
    let mut hook = crate::support::Receiver::start().await;
    let config = json!({"webhooks": [crate::support::webhook(&hook.url, &["session.status", "engine.event"])]});
    call(api.post(
        "/api/sessions",
        json!({"name": "r", "start": true, "config": config}),
    ))
    .await;
    let mut seen = Vec::new();
    loop {
        let delivery = hook.next().await;
        let payload = &delivery.json["payload"];
        let entry = match delivery.json["event"].as_str().unwrap() {
            "session.status" => payload["status"].as_str().unwrap().to_owned(),
            // WEBJS (the default engine): whatsapp-web.js's own words.
            "engine.event" => format!(
                "engine.event {} ({})",
                payload["event"].as_str().unwrap(),
                payload["data"]["reason"].as_str().unwrap()
            ),
            other => panic!("unexpected event {other}"),
        };
        seen.push(entry);
        if seen.last().is_some_and(|e| e == "FAILED") {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "STARTING",
            "SCAN_QR_CODE",
            "SCAN_QR_CODE",
            "SCAN_QR_CODE",
            "engine.event disconnected (Max qrcode retries reached)",
            "FAILED"
        ],
        "first QR plus two refreshes, each re-emitting SCAN_QR_CODE, then the reason and FAILED"
    );
}

/// WAHA's QR window with its own timings, at the simulator's time scale (0.01): the first QR
/// lives 60 s, each later one 20 s, 6 codes in all, then FAILED; on NOWEB, Baileys' close with
/// 408 ("QR refs attempts ended") comes right before FAILED.
#[tokio::test]
async fn qr_window_is_60_s_then_20_s_six_codes_then_failed() {
    let sim = fast().engine(Engine::Noweb).start().await.unwrap();
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["session.status", "engine.event"])]});
    call(api.post(
        "/api/sessions",
        json!({"name": "window", "start": true, "config": config}),
    ))
    .await;
    let mut codes = Vec::new(); // when each SCAN_QR_CODE (a new code) happened
    let engine = loop {
        let delivery = hook.next().await;
        let json = &delivery.json;
        match (
            json["event"].as_str().unwrap(),
            json["payload"]["status"].as_str(),
        ) {
            ("session.status", Some("SCAN_QR_CODE")) => {
                codes.push(json["timestamp"].as_u64().unwrap());
            }
            ("engine.event", _) => break delivery,
            ("session.status", Some("STARTING")) => {}
            other => panic!("unexpected {other:?}: {json}"),
        }
    };
    assert_eq!(codes.len(), 6, "six QR codes");
    let gaps: Vec<u64> = codes.windows(2).map(|w| w[1] - w[0]).collect();
    // Event timestamps are whole milliseconds: 600 ms and 200 ms scaled, give or take one.
    assert!(gaps[0] >= 599, "first QR lives 60 s: {gaps:?}");
    assert!(
        gaps[1..].iter().all(|g| *g >= 199),
        "refreshes 20 s apart: {gaps:?}"
    );
    let payload = &engine.json["payload"];
    assert_eq!(payload["event"], "connection.update");
    let error = &payload["data"]["lastDisconnect"]["error"]["output"];
    assert_eq!(error["statusCode"], 408);
    assert_eq!(error["payload"]["message"], "QR refs attempts ended");
    let expired_after = engine.json["timestamp"].as_u64().unwrap() - codes[5];
    assert!(
        expired_after >= 199,
        "the last code lives 20 s too: {expired_after}"
    );
    let failed = hook.next_event("session.status").await;
    assert_eq!(failed.json["payload"]["status"], "FAILED");
    assert_eq!(
        sim.control().session_status("window"),
        Some(SessionStatus::Failed)
    );
}

/// Milliseconds since the Unix epoch, as the webhooks' `timestamp` counts them.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970");
    u64::try_from(since_epoch.as_millis()).expect("milliseconds since 1970 fit in a u64")
}

#[tokio::test]
async fn qr_value_changes_at_refresh() {
    let sim = start_with(|t| t.first_qr = Duration::from_secs(50)).await; // 500 ms
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["session.status"])]});
    call(api.post(
        "/api/sessions",
        json!({"name": "v", "start": true, "config": config}),
    ))
    .await;
    assert_eq!(
        hook.statuses_until("SCAN_QR_CODE").await,
        ["STARTING", "SCAN_QR_CODE"]
    );
    let (status, first) = call_json(api.get("/api/v/auth/qr?format=raw")).await;
    assert_eq!(status, 200);
    let first_read_ms = now_ms();
    // The refresh re-emits SCAN_QR_CODE, with a new code.
    let refresh = hook.next_event("session.status").await;
    assert_eq!(refresh.json["payload"]["status"], "SCAN_QR_CODE");
    let refreshed_ms = refresh.json["timestamp"].as_u64().unwrap();
    assert!(
        first_read_ms < refreshed_ms,
        "the first code was read before the refresh ({first_read_ms} < {refreshed_ms})"
    );
    let (status, second) = call_json(api.get("/api/v/auth/qr?format=raw")).await;
    assert_eq!(status, 200);
    assert!(second["value"].is_string(), "{second}");
    assert_ne!(first["value"], second["value"]);
}

#[tokio::test]
async fn pairing_code_is_201_with_a_code() {
    let sim = start().await;
    let api = Api::new(&sim);
    scan_ready(&sim, &api, "pc").await;
    let (status, body) = call_json(api.post(
        "/api/pc/auth/request-code",
        json!({"phoneNumber": "5511999999999"}),
    ))
    .await;
    assert_eq!(status, 201);
    let code = body["code"].as_str().unwrap();
    assert_eq!(code.len(), 9);
    assert_eq!(&code[4..5], "-");

    let (status, body) = call_json(api.post("/api/pc/auth/request-code", json!({}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], json!(["phoneNumber must be a string"]));

    // While STARTING it is bounded by the same wait and answers 422.
    let slow = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let api = Api::new(&slow);
    call(api.post("/api/sessions", json!({"name": "pc", "start": true}))).await;
    let (status, body) = call_json(api.post(
        "/api/pc/auth/request-code",
        json!({"phoneNumber": "5511999999999"}),
    ))
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["status"], "STARTING");
}
