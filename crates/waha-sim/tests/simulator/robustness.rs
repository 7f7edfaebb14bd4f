//! Hostile or extreme input: no panic, no unbounded read, always a typed answer.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waha_sim::SessionStatus;

use crate::support::{Api, KEY, WAIT, call, call_json, fast, start};

#[tokio::test]
async fn huge_durations_from_the_control_api_do_not_panic() {
    // A slow-motion simulator: scaling u64::MAX ms overflows a Duration.
    let sim = fast().time_scale(1e6).start().await.unwrap();
    let api = Api::new(&sim);
    let (status, body) =
        call_json(api.post("/_sim/booting", json!({"durationMs": u64::MAX}))).await;
    assert_eq!((status, body), (201, json!({"booting": true})));
    assert_eq!(call(api.get("/api/sessions")).await.0, 400, "booting");
    let (status, _) = call_json(api.put("/_sim/faults", json!({"slowStopMs": u64::MAX}))).await;
    assert_eq!(status, 200);
    assert!(sim.control().is_running());
}

#[tokio::test]
async fn huge_timings_do_not_panic() {
    let mut timings = waha_sim::Timings::default();
    timings.starting = Duration::MAX;
    timings.qr_wait = Duration::MAX;
    let sim = fast()
        .time_scale(1.0)
        .timings(timings)
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let (status, body) =
        call_json(api.post("/api/sessions", json!({"name": "forever", "start": true}))).await;
    assert_eq!((status, body["status"].clone()), (201, json!("STARTING")));
    assert_eq!(
        sim.control().session_status("forever"),
        Some(SessionStatus::Starting)
    );
    let (status, _) = call(api.post("/api/sessions/forever/stop", json!({}))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn wait_for_status_accepts_an_unbounded_timeout() {
    let sim = start().await;
    call(Api::new(&sim).post("/api/sessions", json!({"name": "w", "start": true}))).await;
    tokio::time::timeout(
        WAIT,
        sim.control()
            .wait_for_status("w", SessionStatus::ScanQrCode, Duration::MAX),
    )
    .await
    .expect("it returns once the status is reached")
    .unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_a_nestjs_413() {
    let sim = start().await;
    let api = Api::new(&sim);
    let padding = "x".repeat(3 * 1024 * 1024);
    let (status, body) = call_json(api.post(
        "/api/sessions",
        json!({"name": "big", "config": {"metadata": {"pad": padding}}}),
    ))
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"statusCode": 413, "message": "request entity too large",
               "error": "Payload Too Large"})
    );
    assert_eq!(
        call(api.get("/api/sessions/big")).await.0,
        404,
        "nothing stored"
    );
    // The same holds without a Content-Length (a chunked upload that never ends).
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let head = format!(
        "POST /api/sendText HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    // 4 MiB, or until the server stops reading (it may leave the socket open: bounded).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        for _ in 0..64 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    })
    .await;
    // Read the head: the status, and `connection: close` (the unread rest of the body means the
    // connection cannot carry another request; a pooling client must not reuse it).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await
    .expect("the 413 head arrives");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}
