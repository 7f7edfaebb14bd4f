//! Each fault.

use std::time::{Duration, Instant};

use serde_json::json;
use waha_sim::{AckLevel, BootingHealth, BootingStatus, Faults, SessionStatus, WebhookStats};

use crate::support::{
    Api, Delivery, Receiver, WAIT, call, call_json, eventually, fast, hooked_session, start,
    start_with, webhook,
};

const FROM: &str = "5511900000000@c.us";

/// Sends `POST /api/sessions {"name": name}` every 10 ms while the booting window refuses it
/// with `booting` (the body's `statusCode` too), and returns the status of the first answer
/// that is not a refusal; fails after [`WAIT`] of refusals.
async fn create_once_booted(api: &Api, name: &str, booting: u16) -> u16 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = call_json(api.post("/api/sessions", json!({"name": name}))).await;
        if status != booting {
            return status;
        }
        assert_eq!(body["statusCode"], booting, "{body}");
        assert!(
            Instant::now() < deadline,
            "still refused with {booting} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `TimeScale` computes in `f64`: a scaled window may end a hair before its nominal length.
const SCALE_ROUNDING: Duration = Duration::from_millis(5);

#[tokio::test]
async fn startup_delay_refuses_connections_until_it_listens() {
    let delay = Duration::from_millis(500); // 50 s scaled
    let began = Instant::now();
    let sim = fast()
        .faults(Faults::none().with_startup_delay(Duration::from_secs(50)))
        .start()
        .await
        .unwrap();
    let url = format!("{}/ping", sim.url());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let error = http.get(&url).send().await.expect_err("not listening yet");
    assert!(error.is_connect(), "{error}");
    // Every try is refused (a connection error, nothing else) until the server listens.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        match http.get(&url).send().await {
            Ok(response) => break response,
            Err(error) => {
                assert!(error.is_connect(), "{error}");
                assert!(Instant::now() < deadline, "still refused after {WAIT:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(answer.status(), 200);
    let listening_after = began.elapsed();
    assert!(
        listening_after + SCALE_ROUNDING >= delay,
        "it listened before the start-up delay was over: {listening_after:?}"
    );
}

#[tokio::test]
async fn booting_window_ping_answers_sessions_do_not() {
    let window = Duration::from_millis(500); // 50 s scaled
    for (status, code) in [
        (BootingStatus::BadRequest, 400),
        (BootingStatus::ServiceUnavailable, 503),
    ] {
        let began = Instant::now();
        let sim = fast()
            .faults(Faults::none().with_booting(Duration::from_secs(50), status))
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
        // Retried until the window is over: refused with `code` until then, created after.
        assert_eq!(create_once_booted(&api, "b", code).await, 201);
        let open_after = began.elapsed();
        assert!(
            open_after + SCALE_ROUNDING >= window,
            "session calls went through before the booting window was over: {open_after:?}"
        );
        assert_eq!(call(api.get("/health")).await.0, 200);
    }
}

/// What the seed report saw: a booting container whose `/health` already answers 200 while
/// session calls still get 400, for a while.
#[tokio::test]
async fn booting_with_a_healthy_health_check_still_refuses_session_calls() {
    let window = Duration::from_millis(500); // 50 s scaled
    let faults = Faults::none()
        .with_booting(Duration::from_secs(50), BootingStatus::BadRequest)
        .with_booting_health(BootingHealth::Ok);
    let began = Instant::now();
    let sim = fast().faults(faults).start().await.unwrap();
    let api = Api::new(&sim);
    assert_eq!(call(api.get("/health")).await.0, 200);
    let (status, body) = call_json(api.post("/api/sessions", json!({"name": "early"}))).await;
    assert_eq!((status, body["statusCode"].clone()), (400, json!(400)));
    // Retrying (as a client must) gets through once the window is over, not before.
    assert_eq!(create_once_booted(&api, "early", 400).await, 201);
    let open_after = began.elapsed();
    assert!(
        open_after + SCALE_ROUNDING >= window,
        "session calls went through before the booting window was over: {open_after:?}"
    );
    assert_eq!(call(api.get("/health")).await.0, 200);
    // The same mode at run time, over HTTP.
    let (status, faults) =
        call_json(api.put("/_sim/faults", json!({"bootingHealth": "200"}))).await;
    assert_eq!(
        (status, faults["bootingHealth"].clone()),
        (200, json!("200"))
    );
    sim.control().set_booting(Some(Duration::from_secs(3600)));
    assert_eq!(call(api.get("/health")).await.0, 200);
    assert_eq!(call(api.get("/api/sessions")).await.0, 400);
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
    let refused = sim
        .control()
        .set_faults(Faults::none().with_error_rate(2.0))
        .expect_err("a probability above 1 is refused");
    let waha_sim::SimError::InvalidSetting { setting, .. } = &refused else {
        panic!("not an invalid setting: {refused}");
    };
    assert_eq!(setting, "faults.errorRate");
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
    for (path, delete, expected) in [
        ("/api/sessions/s/stop", false, 201),
        ("/api/sessions/s/restart", false, 201),
        ("/api/sessions/s", true, 200),
    ] {
        let began = Instant::now();
        let request = if delete {
            api.delete(path)
        } else {
            api.post(path, json!({}))
        };
        let (status, body) = call(request).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(began.elapsed() >= Duration::from_millis(190), "{path}");
    }
}

async fn status_hook(sim: &waha_sim::RunningSimulator, name: &str) -> Receiver {
    let hook = Receiver::start().await;
    let config = json!({"webhooks": [webhook(&hook.url, &["session.status"])]});
    call(Api::new(sim).post("/api/sessions", json!({"name": name, "config": config}))).await;
    hook
}

/// A session whose webhook takes `session.status` with these retries, created stopped.
async fn session_with_retries(
    sim: &waha_sim::RunningSimulator,
    name: &str,
    retries: serde_json::Value,
) -> Receiver {
    let hook = Receiver::start().await;
    let config = json!({"webhooks": [{
        "url": hook.url, "events": ["session.status"], "retries": retries
    }]});
    call(Api::new(sim).post("/api/sessions", json!({"name": name, "config": config}))).await;
    hook
}

/// Every attempt lost: none reaches the receiver, each is retried on the webhook's policy
/// (here 2 retries), then the delivery is abandoned.
#[tokio::test]
async fn dropped_attempts_are_retried_then_abandoned() {
    // STARTING is held: exactly one event.
    let sim = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let hook = session_with_retries(
        &sim,
        "dr",
        json!({"policy": "constant", "delaySeconds": 1, "attempts": 2}),
    )
    .await;
    sim.control()
        .set_faults(Faults::none().with_webhook_faults(1.0, 0.0, 0.0))
        .unwrap();
    call(Api::new(&sim).post("/api/sessions/dr/start", json!({}))).await;
    let control = sim.control();
    eventually("the delivery to be abandoned", || {
        control.webhook_stats().failed == 1
    })
    .await;
    let stats = control.webhook_stats();
    assert_eq!(
        stats.dropped, 3,
        "the first attempt and two retries were lost"
    );
    assert_eq!((stats.attempts, stats.delivered), (0, 0));
    assert_eq!(hook.hits(), 0, "nothing reached the receiver");
}

/// Dropped attempts are retried as WAHA retries a failed delivery: with half the attempts
/// lost and WAHA's default 15 retries, every event still arrives, exactly once.
#[tokio::test]
async fn dropped_deliveries_arrive_through_retries() {
    let sim = fast()
        .faults(Faults::none().with_seed(11))
        .start()
        .await
        .unwrap();
    let mut hook = Receiver::start().await;
    hooked_session(&sim, "dr", &hook, &["message"], true).await;
    let control = sim.control();
    control
        .set_faults(
            Faults::none()
                .with_seed(11)
                .with_webhook_faults(0.5, 0.0, 0.0),
        )
        .unwrap();
    for i in 0..20 {
        control
            .receive_message("dr", FROM, &format!("m{i:02}"))
            .unwrap();
    }
    eventually("20 deliveries", || control.webhook_stats().delivered == 20).await;
    let stats = control.webhook_stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    let mut texts: Vec<String> = hook
        .drain()
        .iter()
        .map(|d| d.json["payload"]["body"].as_str().unwrap().to_owned())
        .collect();
    texts.sort();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts, expected, "each event arrived once");
    assert_eq!(hook.hits(), 20, "lost attempts never reached the receiver");
}

/// A lost answer makes WAHA retry a delivery the receiver already has: the same body arrives
/// again after the retry delay, with the same event id, request id and timestamp header.
#[tokio::test]
async fn duplicated_webhooks_arrive_twice_as_a_retry() {
    let sim = start_with(|t| t.starting = Duration::from_secs(3600)).await;
    let mut hook = session_with_retries(
        &sim,
        "du",
        json!({"policy": "constant", "delaySeconds": 5, "attempts": 3}), // 50 ms
    )
    .await;
    sim.control()
        .set_faults(Faults::none().with_webhook_faults(0.0, 1.0, 0.0))
        .unwrap();
    call(Api::new(&sim).post("/api/sessions/du/start", json!({}))).await;
    let a = hook.next().await;
    let b = hook.next().await;
    assert_eq!(a.json["payload"]["status"], "STARTING");
    assert_eq!(a.body, b.body);
    assert_eq!(a.json["id"], b.json["id"]);
    for header in ["x-webhook-request-id", "x-webhook-timestamp"] {
        assert_eq!(a.headers[header], b.headers[header], "{header}");
    }
    assert!(
        b.at - a.at >= Duration::from_millis(45),
        "{:?}",
        b.at - a.at
    );
    let control = sim.control();
    eventually("the retry to be counted", || {
        control.webhook_stats().delivered == 1
    })
    .await;
    assert_eq!(control.webhook_stats().duplicated, 1);
    hook.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn reordered_webhooks_are_overtaken() {
    let sim = start_with(|t| t.reorder_delay = Duration::from_secs(50)).await; // 500 ms scaled
    let mut hook = status_hook(&sim, "ro").await;
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
    let control = sim.control().clone();
    let url = format!("{}/ping", sim.url());
    control.crash();
    assert!(!control.is_running(), "a crash takes effect at once");
    // After a crash, shutdown only waits for the simulator's thread, which ends once its
    // runtime (the listener, every task and connection) has been dropped.
    sim.shutdown().await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    let error = fresh
        .get(&url)
        .send()
        .await
        .expect_err("nothing listens after a crash");
    assert!(error.is_connect(), "{error}");
    assert!(matches!(
        control.scan("x"),
        Err(waha_sim::SimError::Stopped)
    ));
}

/// What one seeded run delivered: the first attempts in arrival order, what came later
/// (retries, held-back deliveries) sorted, and the fault counters.
#[derive(Debug, PartialEq)]
struct Run {
    in_order: Vec<String>,
    later: Vec<String>,
    counts: [u64; 6],
}

fn counts(stats: WebhookStats) -> [u64; 6] {
    [
        stats.dropped,
        stats.duplicated,
        stats.reordered,
        stats.attempts,
        stats.delivered,
        stats.failed,
    ]
}

/// 40 incoming messages under drop, duplicate and reorder faults drawn from `seed`.
async fn seeded_run(seed: u64) -> Run {
    // Retries and held-back deliveries wait 300 s (3 s here): long after the first attempts,
    // which all go out in order on one lane, in a few milliseconds on an idle machine. The
    // split at 1.5 s leaves 1.5 s of margin on both sides for a loaded one.
    let sim = start_with(|t| t.reorder_delay = Duration::from_secs(300)).await;
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let config = json!({"webhooks": [{
        "url": hook.url, "events": ["message"],
        "retries": {"policy": "constant", "delaySeconds": 300, "attempts": 1}
    }]});
    call(api.post(
        "/api/sessions",
        json!({"name": "seeded", "config": config, "start": true}),
    ))
    .await;
    let control = sim.control();
    control
        .wait_for_status("seeded", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    control.scan("seeded").unwrap();
    control
        .set_faults(
            Faults::none()
                .with_seed(seed)
                .with_webhook_faults(0.3, 0.3, 0.2),
        )
        .unwrap();
    assert_eq!(control.faults().seed, Some(seed));
    let began = Instant::now();
    for i in 0..40 {
        control
            .receive_message("seeded", FROM, &format!("m{i:02}"))
            .unwrap();
    }
    eventually("every delivery to be delivered or abandoned", || {
        let stats = control.webhook_stats();
        stats.delivered + stats.failed == 40
    })
    .await;
    let split = began + Duration::from_millis(1500);
    let (mut in_order, mut later) = (Vec::new(), Vec::new());
    for delivery in hook.drain() {
        let text = delivery.json["payload"]["body"]
            .as_str()
            .unwrap()
            .to_owned();
        if delivery.at < split {
            in_order.push(text);
        } else {
            later.push(text);
        }
    }
    later.sort();
    Run {
        in_order,
        later,
        counts: counts(control.webhook_stats()),
    }
}

/// A failing run can be replayed: the same seed and the same events give the same delivery
/// sequence (which deliveries are lost, duplicated, held back; the order of first attempts),
/// and another seed another one.
#[tokio::test]
async fn the_same_seed_replays_the_same_delivery_sequence() {
    let (first, again, other) = tokio::join!(seeded_run(7), seeded_run(7), seeded_run(8));
    assert_eq!(first, again);
    assert_ne!(first, other);
    let [dropped, duplicated, reordered, ..] = first.counts;
    assert!(
        dropped > 0 && duplicated > 0 && reordered > 0,
        "every webhook fault took part: {first:?}"
    );
}

/// A random seed is picked and reported when none is given, so any run can be replayed.
#[tokio::test]
async fn a_seed_is_always_reported() {
    let sim = start().await;
    let seed = sim.control().faults().seed.expect("a seed is reported");
    let (status, faults) = call_json(Api::new(&sim).get("/_sim/faults")).await;
    assert_eq!((status, faults["seed"].as_u64()), (200, Some(seed)));
    // Faults without a seed keep the sequence (and the seed reported).
    sim.control()
        .set_faults(Faults::none().with_latency(Duration::ZERO))
        .unwrap();
    assert_eq!(sim.control().faults().seed, Some(seed));
}

/// Has `witness` (a WORKING session whose only webhook, for `message`, has the same URL as
/// `hook`) receive `text`, waits for that delivery and returns what arrived before it. First
/// attempts go out in order per URL, so anything emitted before the witness's message has
/// arrived by then: an empty answer means nothing was emitted (or is still on its way).
async fn deliveries_before_witness(
    sim: &waha_sim::RunningSimulator,
    hook: &mut Receiver,
    witness: &str,
    text: &str,
) -> Vec<Delivery> {
    sim.control().receive_message(witness, FROM, text).unwrap();
    let mut before = Vec::new();
    loop {
        let delivery = hook.next().await;
        if delivery.json["session"] == witness
            && delivery.json["event"] == "message"
            && delivery.json["payload"]["body"] == text
        {
            return before;
        }
        before.push(delivery);
    }
}

/// The negative window of the silent-session test: 20 ack intervals (10 ms each at 0.01).
const ACKS_WOULD_HAVE_COME: Duration = Duration::from_millis(200);

/// GOWS before 2026.7.1, after a replaced, banned or outdated client: the session stays
/// WORKING, nothing is delivered and sends never progress, until it is restarted.
#[tokio::test]
async fn a_silent_session_stays_working_but_delivers_nothing() {
    let sim = start_with(|t| t.ack_interval = Some(Duration::from_secs(1))).await; // 10 ms
    let api = Api::new(&sim);
    let mut hook = Receiver::start().await;
    let events = ["session.status", "message", "message.any", "message.ack"];
    hooked_session(&sim, "quiet", &hook, &events, true).await;
    hook.statuses_until("WORKING").await;
    // A session on the same URL that is never silenced: its messages show how far the
    // receiver's lane has got.
    hooked_session(&sim, "witness", &hook, &["message"], true).await;
    let control = sim.control();
    control.silence("quiet").unwrap();

    control.receive_message("quiet", FROM, "hello?").unwrap();
    let (status, sent) = call_json(api.post(
        "/api/sendText",
        json!({"session": "quiet", "chatId": FROM, "text": "anyone?"}),
    ))
    .await;
    assert_eq!((status, sent["ack"].clone()), (201, json!(0)));
    let (_, info) = call_json(api.get("/api/sessions/quiet")).await;
    assert_eq!(info["status"], "WORKING", "the status still says WORKING");
    assert_eq!(
        control.session_status("quiet"),
        Some(SessionStatus::Working)
    );
    // No message, no message.any: the witness's message, emitted after them, comes first.
    let before = deliveries_before_witness(&sim, &mut hook, "witness", "lane check 1").await;
    assert!(
        before.is_empty(),
        "the silent session delivered: {before:?}"
    );
    // No ack: the acks of a send come 10 ms apart (SERVER, DEVICE, READ); 20 periods pass in
    // silence, then a second witness shows none of them is on its way either.
    hook.expect_silence(ACKS_WOULD_HAVE_COME).await;
    let before = deliveries_before_witness(&sim, &mut hook, "witness", "lane check 2").await;
    assert!(before.is_empty(), "the silent send was acked: {before:?}");
    // Not even an ack asked for through the control API.
    control
        .ack(sent["id"].as_str().unwrap(), AckLevel::Read)
        .unwrap();
    let before = deliveries_before_witness(&sim, &mut hook, "witness", "lane check 3").await;
    assert!(
        before.is_empty(),
        "the control API's ack was delivered: {before:?}"
    );

    // A restart ends it.
    let (status, _) = call(api.post("/api/sessions/quiet/restart", json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(
        hook.statuses_until("WORKING").await,
        ["STOPPED", "STARTING", "WORKING"]
    );
    control.receive_message("quiet", FROM, "back").unwrap();
    assert_eq!(
        hook.next_event("message").await.json["payload"]["body"],
        "back"
    );
}

/// Polls `GET /api/sessions/{name}` until its status is `want`; answers the statuses seen.
async fn status_becomes(api: &Api, name: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (_, body) = call_json(api.get(&format!("/api/sessions/{name}"))).await;
        let status = body["status"].as_str().unwrap_or_default().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == want {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: never {want} within {WAIT:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn with_proxy_dialing_a_dead_proxy_fails_the_session_and_a_live_one_does_not() {
    let sim = fast().dial_proxies(true).start().await.unwrap();
    let api = Api::new(&sim);
    // A proxy that refuses connections: a port bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_address = live.local_addr().unwrap();
    let session = |name: &str, server: String| json!({"name": name, "start": true, "config": {"proxy": {"server": server}}});
    let (status, _) =
        call(api.post("/api/sessions", session("dead", format!("http://{dead}")))).await;
    assert_eq!(status, 201);
    let (status, _) =
        call(api.post("/api/sessions", session("live", live_address.to_string()))).await;
    assert_eq!(status, 201);
    let seen = status_becomes(&api, "dead", "FAILED").await;
    assert!(
        !seen.iter().any(|s| s == "SCAN_QR_CODE"),
        "a session behind a dead proxy never offers a QR code: {seen:?}"
    );
    status_becomes(&api, "live", "SCAN_QR_CODE").await;
    assert!(live.accept().await.is_ok(), "the live proxy was dialled");

    // Without dialling (the default), the simulator never connects anywhere.
    let quiet = start().await;
    let api = Api::new(&quiet);
    let (status, _) =
        call(api.post("/api/sessions", session("dead", format!("http://{dead}")))).await;
    assert_eq!(status, 201);
    status_becomes(&api, "dead", "SCAN_QR_CODE").await;
}
