//! Webhook deliveries: envelope, signature (verified independently), headers, retries.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha512;
use waha_sim::SessionStatus;

use crate::support::{Api, Receiver, WAIT, call, start, start_with};

#[tokio::test]
async fn round_trip_signature_verifies_with_an_independent_hmac() {
    let sim = start().await;
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({
        "metadata": {"tenant": "t1", "chip": "c9"},
        "webhooks": [{
            "url": hook.url, "events": ["session.status"],
            "hmac": {"key": "whsec-test-key"},
            "customHeaders": [{"name": "X-Tenant", "value": "t1"},
                              {"name": "Authorization", "value": "Bearer abc"}]
        }]
    });
    call(api.post(
        "/api/sessions",
        json!({"name": "h", "config": config, "start": true}),
    ))
    .await;
    let delivery = hook.next_event("session.status").await;

    // Independent computation over the exact received bytes.
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(b"whsec-test-key").unwrap();
    mac.update(&delivery.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    let headers = &delivery.headers;
    assert_eq!(headers["x-webhook-hmac"].to_str().unwrap(), expected);
    assert_eq!(headers["x-webhook-hmac-algorithm"], "sha512");
    assert!(!headers["x-webhook-request-id"].is_empty());
    let ts: u64 = headers["x-webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts > 1_600_000_000_000);
    // When the event was created (the body's `timestamp`), not when it was sent.
    assert_eq!(Some(ts), delivery.json["timestamp"].as_u64());
    assert_eq!(headers["x-tenant"], "t1");
    assert_eq!(headers["authorization"], "Bearer abc");
    assert_eq!(headers["content-type"], "application/json");

    // Envelope, in WAHA's field order.
    let text = std::str::from_utf8(&delivery.body).unwrap();
    let order = [
        "\"id\"",
        "\"timestamp\"",
        "\"event\"",
        "\"session\"",
        "\"metadata\"",
        "\"me\"",
        "\"payload\"",
        "\"engine\"",
        "\"environment\"",
    ];
    let positions: Vec<_> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    let body = &delivery.json;
    assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(body["event"], "session.status");
    assert_eq!(body["session"], "h");
    assert_eq!(body["metadata"], json!({"tenant": "t1", "chip": "c9"}));
    assert_eq!(body["me"], json!(null));
    assert_eq!(body["payload"], json!({"name": "h", "status": "STARTING"}));
    assert_eq!(body["engine"], "WEBJS");
    assert_eq!(body["environment"]["engine"], "WEBJS");

    // `me` is filled once logged in.
    sim.control()
        .wait_for_status("h", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    sim.control()
        .scan_as("h", waha_sim::Me::phone("5511988887777", "Bia"))
        .unwrap();
    let working = loop {
        let d = hook.next_event("session.status").await;
        if d.json["payload"]["status"] == "WORKING" {
            break d;
        }
    };
    assert_eq!(
        working.json["me"],
        json!({"id": "5511988887777@c.us", "pushName": "Bia"})
    );
}

#[tokio::test]
async fn unsigned_without_a_key_and_only_wanted_events() {
    let sim = start().await;
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({"webhooks": [{"url": hook.url, "events": ["message"]}]});
    call(api.post(
        "/api/sessions",
        json!({"name": "u", "config": config, "start": true}),
    ))
    .await;
    sim.control()
        .wait_for_status("u", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    sim.control().scan("u").unwrap();
    let id = sim
        .control()
        .receive_message("u", "5511911112222@c.us", "oi")
        .unwrap();
    let delivery = hook.next().await;
    assert_eq!(
        delivery.json["event"], "message",
        "no session.status: not subscribed"
    );
    assert_eq!(delivery.json["payload"]["id"], id);
    assert_eq!(delivery.json["payload"]["body"], "oi");
    assert!(delivery.headers.get("x-webhook-hmac").is_none());
    assert!(delivery.headers.get("x-webhook-request-id").is_some());
}

#[tokio::test]
async fn failed_deliveries_are_retried_per_policy() {
    // The session stays STARTING: one event, so no later event can take the failures.
    let sim = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let api = Api::new(&sim);
    let mut hook = Receiver::failing_first(2).await;
    let config = json!({"webhooks": [{
        "url": hook.url, "events": ["session.status"],
        "retries": {"policy": "exponential", "delaySeconds": 1, "attempts": 3}
    }]});
    call(api.post(
        "/api/sessions",
        json!({"name": "rt", "config": config, "start": true}),
    ))
    .await;
    let first = hook.next().await;
    assert_eq!(first.json["payload"]["status"], "STARTING");
    assert_eq!(hook.hits(), 3, "two failures, then success");
    // One request id per (event, webhook): every retry reuses it.
    let ids = hook.request_ids();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    assert_eq!(
        first.headers["x-webhook-timestamp"].to_str().unwrap(),
        first.json["timestamp"].to_string(),
        "retries keep the event's timestamp"
    );
    tokio::time::timeout(WAIT, async {
        while sim.control().webhook_stats().delivered == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the delivery is counted");
    let stats = sim.control().webhook_stats();
    assert_eq!(
        (stats.attempts, stats.delivered, stats.failed),
        (3, 1, 0),
        "two failed attempts, then the delivery: {stats:?}"
    );
}

#[tokio::test]
async fn deliveries_are_abandoned_after_the_last_retry() {
    let sim = start().await;
    let api = Api::new(&sim);
    let mut hook = Receiver::failing_first(usize::MAX).await;
    let config = json!({"webhooks": [{
        "url": hook.url, "events": ["engine.event"],
        "retries": {"policy": "constant", "delaySeconds": 1, "attempts": 2}
    }]});
    call(api.post(
        "/api/sessions",
        json!({"name": "ab", "config": config, "start": true}),
    ))
    .await;
    sim.control()
        .wait_for_status("ab", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    sim.control()
        .disconnect("ab", waha_sim::DisconnectReason::LoggedOut)
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while sim.control().webhook_stats().failed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the delivery is abandoned");
    assert_eq!(hook.hits(), 3, "first attempt plus two retries");
    let stats = sim.control().webhook_stats();
    assert_eq!(
        (stats.attempts, stats.delivered, stats.failed),
        (3, 0, 1),
        "{stats:?}"
    );
    // Abandoned means no fourth attempt: ten retry delays (10 ms each) pass without one.
    hook.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(hook.hits(), 3, "no attempt after the last retry");
}

#[tokio::test]
async fn retries_wait_the_policy_delays() {
    // The session stays STARTING, so exactly one event is delivered.
    let sim = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let api = Api::new(&sim);
    let hook = Receiver::failing_first(usize::MAX).await;
    // linear, 10 s → 100 ms, 200 ms scaled.
    let config = json!({"webhooks": [{
        "url": hook.url, "events": ["session.status"],
        "retries": {"policy": "linear", "delaySeconds": 10, "attempts": 2}
    }]});
    call(api.post("/api/sessions", json!({"name": "sp", "config": config}))).await;
    call(api.post("/api/sessions/sp/start", json!({}))).await;
    tokio::time::timeout(WAIT, async {
        while sim.control().webhook_stats().failed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the delivery is abandoned");
    let times = hook.hit_times();
    assert_eq!(times.len(), 3, "first attempt plus two retries");
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(95), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(195), "{gaps:?}");
}

/// Waits until the simulator has `n` per-URL dispatcher tasks alive.
async fn dispatchers_become(sim: &waha_sim::RunningSimulator, n: u64) {
    tokio::time::timeout(WAIT, async {
        while sim.control().webhook_stats().dispatchers != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{n} dispatchers expected, {} alive",
            sim.control().webhook_stats().dispatchers
        )
    });
}

/// Idle lanes close after 30 s of simulated time (300 ms here): this is more than two of them.
const MORE_THAN_TWO_IDLE_PERIODS: Duration = Duration::from_millis(650);

/// Fails if the simulator's count of per-URL dispatcher tasks differs from `n` at any time in
/// `window` (polled every 10 ms).
async fn dispatchers_stay(sim: &waha_sim::RunningSimulator, n: u64, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let alive = sim.control().webhook_stats().dispatchers;
        assert_eq!(alive, n, "the dispatcher count changed during the window");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A destination's dispatcher task exits once idle (30 s simulated = 300 ms here), but never
/// while a first attempt is in flight or queued (that would let a newer event overtake it), and
/// the next event to the same URL is delivered through a new one.
#[tokio::test]
async fn idle_dispatchers_exit_without_breaking_order() {
    // The session stays STARTING until stopped: the test decides every event.
    let sim = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let api = Api::new(&sim);
    // Long enough that the stop below is sent while STARTING is still held, even on a loaded
    // machine.
    let hold = Duration::from_secs(2);
    let mut hook = Receiver::slow_first(hold).await;
    let config = json!({"webhooks": [{"url": hook.url, "events": ["session.status"]}]});
    assert_eq!(sim.control().webhook_stats().dispatchers, 0);
    call(api.post(
        "/api/sessions",
        json!({"name": "idle", "config": config, "start": true}),
    ))
    .await;

    // STARTING is in flight (held by the receiver) for longer than two idle periods: the
    // dispatcher stays, and STOPPED queues behind it.
    tokio::time::timeout(WAIT, async {
        while hook.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first attempt arrives");
    let stats = sim.control().webhook_stats();
    assert_eq!(
        (stats.dispatchers, stats.delivered),
        (1, 0),
        "one lane, its first attempt in flight: {stats:?}"
    );
    dispatchers_stay(&sim, 1, MORE_THAN_TWO_IDLE_PERIODS).await;
    let stats = sim.control().webhook_stats();
    assert_eq!(
        (hook.hits(), stats.delivered),
        (1, 0),
        "the first attempt was in flight for the whole window: {stats:?}"
    );
    let (status, _) = call(api.post("/api/sessions/idle/stop", json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(hook.next().await.json["payload"]["status"], "STARTING");
    assert_eq!(hook.next().await.json["payload"]["status"], "STOPPED");
    let times = hook.hit_times();
    assert!(
        times[1] >= times[0] + hold,
        "STOPPED went out before STARTING was answered: {:?}",
        times[1] - times[0]
    );

    // Idle now: the task exits.
    dispatchers_become(&sim, 0).await;

    // A later event to the same URL gets a new dispatcher and is delivered.
    let (status, _) = call(api.post("/api/sessions/idle/start", json!({}))).await;
    assert_eq!(status, 201);
    let again = hook.next().await;
    assert_eq!(again.json["payload"]["status"], "STARTING");
    assert_eq!(hook.hits(), 3);
    dispatchers_become(&sim, 0).await;
    assert_eq!(sim.control().webhook_stats().delivered, 3);
}
