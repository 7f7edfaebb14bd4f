//! Shared test helpers: a fast simulator, an HTTP client, a webhook receiver.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use waha_sim::{RunningSimulator, Simulator, SimulatorBuilder, Timings};

pub const KEY: &str = "integration-test-key-7f3a";
pub const WAIT: Duration = Duration::from_secs(10);

/// Fast timings: STARTING 1 s → 10 ms, QR wait 5 s → 50 ms, first QR 60 s → 600 ms.
pub fn fast() -> SimulatorBuilder {
    let mut timings = Timings::default();
    timings.ack_interval = None;
    Simulator::builder()
        .api_key(KEY)
        .time_scale(0.01)
        .timings(timings)
}

pub async fn start() -> RunningSimulator {
    fast().start().await.expect("simulator starts")
}

/// A fast simulator whose timings (simulated time, scaled by 0.01; acks only through the
/// control API) are adjusted by `tune` first.
pub async fn start_with(tune: impl FnOnce(&mut Timings)) -> RunningSimulator {
    let mut timings = Timings::default();
    timings.ack_interval = None;
    tune(&mut timings);
    fast()
        .timings(timings)
        .start()
        .await
        .expect("simulator starts")
}

/// A client that sends the API key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(sim: &RunningSimulator) -> Self {
        Self {
            base: sim.url().to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY)
    }

    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY)
            .json(&body)
    }

    pub fn put(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY)
            .json(&body)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY)
    }
}

/// Sends and returns (status, body text).
pub async fn call(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("request reaches the simulator");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Sends and returns (status, JSON body).
pub async fn call_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let (status, text) = call(request).await;
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// One delivery as received: raw bytes and headers.
#[derive(Debug)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
    /// When it arrived.
    pub at: Instant,
}

struct ReceiverState {
    tx: mpsc::UnboundedSender<Delivery>,
    failures_left: AtomicUsize,
    hits: Mutex<Vec<Instant>>,
    /// `X-Webhook-Request-Id` of every request, failed ones included.
    request_ids: Mutex<Vec<String>>,
    /// How long the first request is held before it is answered.
    first_answer_delay: Duration,
}

/// A webhook receiver on 127.0.0.1:0.
pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Delivery>,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::failing_first(0).await
    }

    /// Answers 500 to the first `n` requests (they are not reported).
    pub async fn failing_first(n: usize) -> Self {
        Self::build(n, Duration::ZERO).await
    }

    /// Holds the first request for `delay` before answering it (every request succeeds).
    pub async fn slow_first(delay: Duration) -> Self {
        Self::build(0, delay).await
    }

    async fn build(failures: usize, first_answer_delay: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            tx,
            failures_left: AtomicUsize::new(failures),
            hits: Mutex::new(Vec::new()),
            request_ids: Mutex::new(Vec::new()),
            first_answer_delay,
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, rx, state }
    }

    /// Requests received, failed ones included.
    pub fn hits(&self) -> usize {
        self.hit_times().len()
    }

    /// When each request arrived, failed ones included.
    pub fn hit_times(&self) -> Vec<Instant> {
        self.state.hits.lock().unwrap().clone()
    }

    /// The `X-Webhook-Request-Id` of each request, failed ones included.
    pub fn request_ids(&self) -> Vec<String> {
        self.state.request_ids.lock().unwrap().clone()
    }

    /// Every delivery received and not taken yet, without waiting.
    pub fn drain(&mut self) -> Vec<Delivery> {
        let mut all = Vec::new();
        while let Ok(delivery) = self.rx.try_recv() {
            all.push(delivery);
        }
        all
    }

    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("receiver open")
    }

    /// The next delivery of `event`, skipping others.
    pub async fn next_event(&mut self, event: &str) -> Delivery {
        loop {
            let delivery = self.next().await;
            if delivery.json["event"] == event {
                return delivery;
            }
        }
    }

    /// The next `session.status` deliveries until `status` (returns the statuses seen).
    pub async fn statuses_until(&mut self, status: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let d = self.next_event("session.status").await;
            let s = d.json["payload"]["status"].as_str().unwrap().to_owned();
            seen.push(s.clone());
            if s == status {
                return seen;
            }
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(Some(d)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected delivery: {}", d.json);
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let first = {
        let mut hits = state.hits.lock().unwrap();
        hits.push(at);
        hits.len() == 1
    };
    let request_id = headers
        .get("x-webhook-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state.request_ids.lock().unwrap().push(request_id);
    if first && !state.first_answer_delay.is_zero() {
        tokio::time::sleep(state.first_answer_delay).await;
    }
    let fail = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let json = serde_json::from_slice(&body).expect("webhook body is JSON");
    let _ = state.tx.send(Delivery {
        headers,
        body,
        json,
        at,
    });
    StatusCode::OK
}

/// Polls `check` (every 5 ms) until it holds, panicking after [`WAIT`] with `what`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Everything the simulators of this test binary logged about failed state writes and
/// removals (formatted lines; see [`PersistenceFailures`]).
static PERSISTENCE_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static PERSISTENCE_CAPTURE: Once = Once::new();

/// Appends formatted log lines to [`PERSISTENCE_LOG`].
struct PersistenceLogWriter;

impl std::io::Write for PersistenceLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        PERSISTENCE_LOG
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts the failed writes and removals of state files, as the simulator's state writer
/// logs them (target `waha_sim::persistence`, ERROR, "cannot persist session; will retry",
/// once per failed attempt, with the file's `path`): the simulator has no other outside sign
/// that a write failed and is being retried.
pub struct PersistenceFailures;

impl PersistenceFailures {
    /// Starts counting. The first call installs a global `tracing` subscriber for this test
    /// binary that keeps those events only (nothing else in the binary installs one).
    pub fn capture() -> Self {
        PERSISTENCE_CAPTURE.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "waha_sim::persistence=error",
                ))
                .with_ansi(false)
                .with_writer(|| PersistenceLogWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
        });
        Self
    }

    /// How many writes or removals of `file` have failed so far.
    pub fn of(&self, file: &Path) -> usize {
        let field = format!("path={}", file.display());
        let log = PERSISTENCE_LOG
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&log)
            .lines()
            .filter(|line| {
                line.contains("cannot persist session")
                    && line.split_whitespace().any(|token| token == field)
            })
            .count()
    }
}

/// Creates `name` with a webhook to `hook` for `events`, starts it, and (when `scan`) logs it
/// in once it asks for a QR scan.
pub async fn hooked_session(
    sim: &RunningSimulator,
    name: &str,
    hook: &Receiver,
    events: &[&str],
    scan: bool,
) {
    let config = serde_json::json!({"webhooks": [webhook(&hook.url, events)]});
    let (status, _) = call(Api::new(sim).post(
        "/api/sessions",
        serde_json::json!({"name": name, "config": config, "start": true}),
    ))
    .await;
    assert_eq!(status, 201);
    if scan {
        sim.control()
            .wait_for_status(name, waha_sim::SessionStatus::ScanQrCode, WAIT)
            .await
            .unwrap();
        sim.control().scan(name).unwrap();
    }
}

/// A webhook config for `url` with these events.
pub fn webhook(url: &str, events: &[&str]) -> Value {
    serde_json::json!({ "url": url, "events": events })
}

/// A fresh temporary directory (removed by the caller via `TempDir`'s drop).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("waha-sim-{tag}-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
