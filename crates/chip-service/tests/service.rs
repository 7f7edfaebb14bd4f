//! chip-service end to end on the embedded default, through real HTTP on 127.0.0.1: the REST
//! flow a host uses (tenant, chip, QR, scan, WORKING, send, acks, message status), auth (no
//! token, a bad token, another tenant's chip, a tenant token on admin routes), the SSE and
//! WebSocket streams resumed after a disconnect, `/metrics`, the admin operations, secrets
//! never leaving the service, every documented route served, and the binary's graceful exit
//! on SIGTERM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chip_service::service::{
    AdminToken, MemoryTokenStore, ServiceParts, ShutdownSignal, documented_routes,
    openapi_document, router,
};
use chip_service::{Embedded, EmbeddedOptions};
use futures::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use session_supervisor::{ChipKey, PhaseName};
use tenant_isolation::{ChipId, PacerConfig, TenantId};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ADMIN: &str = "test-admin-token-0123456789abcdef0123456789abcdef";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const CHAT: &str = "5511988887777@c.us";

/// The process's one metrics recorder (installed before any supervisor starts).
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the Prometheus recorder installs")
        })
        .clone()
}

/// What a request answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client that keeps every body it received (the secrets check reads them all).
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn new(base: String) -> Self {
        Api {
            base,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn remember(&self, text: String) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("a body").to_vec();
        self.remember(String::from_utf8_lossy(&body).into_owned());
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None, &[]).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        self.call(Method::POST, path, token, body, &[]).await
    }

    async fn sse(&self, path: &str, token: &str, last_event_id: Option<u64>) -> Sse {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status().as_u16(), 200, "SSE {path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Sse {
            response,
            buffer: String::new(),
            api: self.clone(),
        }
    }
}

/// One SSE event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// An open SSE response, read frame by frame.
struct Sse {
    response: reqwest::Response,
    buffer: String,
    api: Api,
}

impl Sse {
    /// The next event (keep-alive comments skipped), within `within`.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..at + 2).collect();
                let mut event = String::from("message");
                let mut id = None;
                let mut data = String::new();
                for line in frame.lines() {
                    let Some((field, value)) = line.split_once(':') else {
                        continue;
                    };
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = value.to_owned(),
                        "id" => id = value.parse().ok(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                self.api.remember(data.clone());
                let data = serde_json::from_str(&data).expect("SSE data is JSON");
                return Some(SseEvent { event, id, data });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = timeout(left, self.response.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The embedded default served by the service on 127.0.0.1.
struct Harness {
    embedded: Embedded,
    api: Api,
    addr: std::net::SocketAddr,
    shutdown: ShutdownSignal,
    server: JoinHandle<()>,
}

async fn start(started: bool) -> Harness {
    let handle = metrics();
    let mut embedded = Embedded::build(EmbeddedOptions {
        // WAHA's 60 s first QR code lasts 15 s, its window 40 s: room for a loaded machine.
        time_scale: 0.25,
        pacer: PacerConfig {
            jitter_min: Duration::ZERO,
            jitter_max: Duration::from_millis(50),
            ..PacerConfig::default()
        },
        ..EmbeddedOptions::default()
    })
    .await
    .expect("the embedded default builds");
    if started {
        embedded.start().await.expect("the supervisor starts");
    }
    let shutdown = ShutdownSignal::new();
    let mut parts = ServiceParts::new(
        embedded.supervisor().clone(),
        embedded.ingest().clone(),
        embedded.directory().clone(),
        Arc::new(MemoryTokenStore::new()),
        AdminToken::new(ADMIN).expect("a valid admin token"),
    );
    if started {
        parts = parts.with_metrics(handle);
    }
    parts.shutdown = shutdown.clone();
    let app = router(parts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("its address");
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let stopped = async move {
            while !stop.is_triggered() {
                sleep(Duration::from_millis(50)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
            .expect("the service serves");
    });
    Harness {
        embedded,
        api: Api::new(format!("http://{addr}")),
        addr,
        shutdown,
        server,
    }
}

impl Harness {
    async fn stop(self) {
        self.shutdown.trigger();
        if timeout(Duration::from_secs(10), self.server).await.is_err() {
            panic!("the service did not drain within 10 s");
        }
        self.embedded.shutdown().await;
    }
}

/// Creates a tenant; answers its API token.
async fn create_tenant(api: &Api, id: &str) -> String {
    let created = api
        .post(
            "/v1/tenants",
            Some(ADMIN),
            Some(json!({
                "id": id,
                "limits": {"max_chips": 5, "max_running_sessions": 5, "max_sends_per_day": 100},
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body = created.json();
    assert_eq!(body["tenant"]["id"], id);
    assert_eq!(body["tenant"]["status"], "active");
    let token = body["api_token"].as_str().expect("a token").to_owned();
    assert!(
        token.starts_with(&format!("cft_{id}_")),
        "the token names its tenant"
    );
    token
}

/// Polls the chip until `done` holds (within `within`); answers its last view.
async fn wait_for_chip(
    api: &Api,
    token: &str,
    chip: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let answer = api.get(&format!("/v1/chips/{chip}"), Some(token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let view = answer.json();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{chip}: {what} within {within:?}; last seen {view}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_flow_auth_streams_metrics_and_secrets() {
    timeout(Duration::from_secs(240), flow())
        .await
        .expect("the flow finishes within 240 s");
}

async fn flow() {
    let harness = start(true).await;
    let api = harness.api.clone();

    // Health.
    assert_eq!(api.get("/healthz", None).await.json()["status"], "ok");
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    // Tenants (admin), and the admin routes refuse everyone else.
    let no_token = api
        .post("/v1/tenants", None, Some(json!({"id": "acme"})))
        .await;
    assert_eq!(
        (no_token.status, no_token.code()),
        (401, "unauthorized".to_owned())
    );
    assert_eq!(
        no_token
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let wrong = api
        .post(
            "/v1/tenants",
            Some("not-the-admin-token-0123456789abcdef"),
            Some(json!({"id": "acme"})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let acme_token = create_tenant(&api, "acme").await;
    let globex_token = create_tenant(&api, "globex").await;
    let again = api
        .post("/v1/tenants", Some(ADMIN), Some(json!({"id": "acme"})))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "tenant_already_exists".to_owned())
    );
    let bad_id = api
        .post("/v1/tenants", Some(ADMIN), Some(json!({"id": "Not_Valid"})))
        .await;
    assert_eq!(
        (bad_id.status, bad_id.code()),
        (400, "invalid_id".to_owned())
    );
    for admin_route in ["/v1/tenants", "/v1/tenants/acme"] {
        let refused = api.get(admin_route, Some(&acme_token)).await;
        assert_eq!(refused.status, 401, "a tenant token on {admin_route}");
    }
    let listed = api.get("/v1/tenants", Some(ADMIN)).await.json();
    assert_eq!(listed["tenants"].as_array().map(Vec::len), Some(2));

    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let mut secrets_seen = Vec::new();
    for tenant in [&acme, &globex] {
        let stored = harness
            .embedded
            .directory()
            .get(tenant)
            .await
            .unwrap()
            .secrets;
        secrets_seen.push(stored.container_api_key.expose_secret().to_owned());
        secrets_seen.push(stored.webhook_hmac_key.expose_secret().to_owned());
    }

    // The tenant's live stream, opened before its chip exists.
    let mut stream = api.sse("/v1/events", &acme_token, None).await;

    // Chips.
    let spec =
        json!({"id": "sales-1", "login": "qr", "phone": "5511999990001", "proxy_country": "BR"});
    let created = api
        .post("/v1/chips", Some(&acme_token), Some(spec.clone()))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let chip = created.json();
    assert_eq!(chip["id"], "sales-1");
    assert_eq!(chip["login"], "qr");
    assert_eq!(chip["phone"], "5511999990001");
    assert_eq!(chip["proxy_country"], "BR");
    assert_eq!(chip["desired"], "running");
    let repeat = api.post("/v1/chips", Some(&acme_token), Some(spec)).await;
    assert_eq!(
        repeat.status, 201,
        "the same id and spec answer the same chip"
    );
    assert_eq!(repeat.json()["created_at_ms"], chip["created_at_ms"]);
    let conflict = api
        .post(
            "/v1/chips",
            Some(&acme_token),
            Some(json!({"id": "sales-1", "login": "pairing_code", "phone": "5511999990001"})),
        )
        .await;
    assert_eq!(
        (conflict.status, conflict.code()),
        (409, "chip_conflict".to_owned())
    );
    for (body, code) in [
        (json!({"id": "Bad_Id"}), "invalid_id"),
        (
            json!({"id": "p-1", "login": "pairing_code"}),
            "invalid_input",
        ),
        (json!({"id": "p-1", "phone": "0123"}), "invalid_input"),
        (
            json!({"id": "p-1", "proxy_country": "Brazil"}),
            "invalid_input",
        ),
        (json!({"id": "p-1", "unknown": true}), "invalid_input"),
    ] {
        let refused = api
            .post("/v1/chips", Some(&acme_token), Some(body.clone()))
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, code.to_owned()),
            "{body}"
        );
    }
    let other = api
        .post(
            "/v1/chips",
            Some(&globex_token),
            Some(json!({"id": "other-1"})),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.text());

    // Auth on the tenant routes: no token, a bad one, another tenant's chip.
    assert_eq!(api.get("/v1/chips/sales-1", None).await.status, 401);
    let forged = format!("cft_acme_{}", "0".repeat(64));
    for bad in [
        forged.as_str(),
        "garbage",
        acme_token.trim_end_matches(char::is_alphanumeric),
    ] {
        let refused = api.get("/v1/chips/sales-1", Some(bad)).await;
        assert_eq!(
            (refused.status, refused.code()),
            (401, "unauthorized".to_owned()),
            "{bad}"
        );
    }
    for path in [
        "/v1/chips/sales-1",
        "/v1/chips/sales-1/qr",
        "/v1/chips/sales-1/qr/raw",
    ] {
        let foreign = api.get(path, Some(&globex_token)).await;
        assert_eq!(
            (foreign.status, foreign.code()),
            (404, "chip_not_found".to_owned()),
            "{path}"
        );
    }
    let foreign_stop = api
        .post("/v1/chips/sales-1/stop", Some(&globex_token), None)
        .await;
    assert_eq!(foreign_stop.status, 404);
    let globex_chips = api.get("/v1/chips", Some(&globex_token)).await.json();
    let ids: Vec<&str> = globex_chips["chips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["other-1"], "a tenant lists its own chips only");

    // The chip waits for a scan: its QR code as PNG and raw.
    let waiting = wait_for_chip(
        &api,
        &acme_token,
        "sales-1",
        Duration::from_secs(60),
        "awaiting login",
        |c| c["phase"] == "awaiting_login" && c["login_offer"]["kind"] == "qr",
    )
    .await;
    assert_eq!(waiting["phase_detail"]["method"], "qr");
    let no_code = api
        .get("/v1/chips/sales-1/pairing-code", Some(&acme_token))
        .await;
    assert_eq!(
        (no_code.status, no_code.code()),
        (409, "not_ready".to_owned())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (png, raw) = loop {
        let png = api.get("/v1/chips/sales-1/qr", Some(&acme_token)).await;
        let raw = api.get("/v1/chips/sales-1/qr/raw", Some(&acme_token)).await;
        if png.status == 200 && raw.status == 200 {
            break (png, raw);
        }
        assert!(
            Instant::now() < deadline,
            "QR: {} {} / {} {}",
            png.status,
            png.text(),
            raw.status,
            raw.text()
        );
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        png.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert!(png.body.starts_with(PNG_MAGIC), "a PNG image");
    let qr_value = raw.json()["value"].as_str().unwrap_or_default().to_owned();
    assert!(!qr_value.is_empty(), "a raw QR value");

    // The live stream saw the chip created and its QR window open; then the client goes away.
    let mut last_seen = 0;
    let mut kinds: Vec<String> = Vec::new();
    while !kinds.iter().any(|k| k == "qr_available") {
        let event = stream
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("SSE: qr_available; saw {kinds:?}"));
        assert_eq!(event.event, "change");
        let id = event.id.expect("a change carries its sequence as its id");
        assert_eq!(event.data["seq"], id);
        assert_eq!(event.data["chip"], "sales-1");
        assert!(id > last_seen, "ids increase");
        last_seen = id;
        kinds.push(event.data["kind"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("created"),
        "{kinds:?}"
    );
    drop(stream);

    // The simulated phone scans; the chip works.
    let session = ChipKey::new(acme.clone(), ChipId::new("sales-1").unwrap()).session_name();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scanned = match harness.embedded.control_for(&acme).await {
            Some(control) => control.scan(session.as_str()).map_err(|e| e.to_string()),
            None => Err("no simulator yet".to_owned()),
        };
        match scanned {
            Ok(()) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "the scan: {error}");
                sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let working = wait_for_chip(
        &api,
        &acme_token,
        "sales-1",
        Duration::from_secs(60),
        "working",
        |c| c["phase"] == "working",
    )
    .await;
    assert!(working["account"]["id"].is_string(), "{working}");
    assert!(working["login_offer"].is_null());

    // SSE resume: reconnecting with Last-Event-ID replays what happened meanwhile, from the
    // next number on.
    let mut resumed = api.sse("/v1/events", &acme_token, Some(last_seen)).await;
    let first = resumed
        .next(Duration::from_secs(10))
        .await
        .expect("the resumed stream replays");
    assert_eq!(first.event, "change");
    assert_eq!(
        first.id,
        Some(last_seen + 1),
        "resumed right after {last_seen}"
    );
    let mut previous = last_seen + 1;
    let mut logged_in = first.data["kind"] == "logged_in";
    while !logged_in {
        let event = resumed
            .next(Duration::from_secs(10))
            .await
            .expect("the login while disconnected is replayed");
        let id = event.id.expect("an id");
        assert!(id > previous, "no change twice: {id} after {previous}");
        previous = id;
        logged_in = event.data["kind"] == "logged_in";
        if logged_in {
            assert!(event.data["account"]["id"].is_string());
        }
    }
    drop(resumed);

    // WebSocket, filtered by chip, resumed with ?after=.
    let ws_url = |after: u64| {
        format!(
            "ws://{}/v1/events/ws?chip=sales-1&after={after}",
            harness.addr
        )
    };
    let connect = |after: u64| {
        let mut request = ws_url(after)
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {acme_token}")).unwrap(),
        );
        tokio_tungstenite::connect_async(request)
    };
    let (mut socket, _) = connect(0).await.expect("the WebSocket opens");
    let mut seqs: Vec<u64> = Vec::new();
    while seqs.len() < 3 {
        let message = timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let WsMessage::Text(text) = message {
            api.remember(text.as_str().to_owned());
            let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
            assert_eq!(value["type"], "change", "{value}");
            assert_eq!(value["chip"], "sales-1");
            seqs.push(value["seq"].as_u64().expect("a seq"));
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let _ = socket.close(None).await;
    drop(socket);
    let (mut socket, _) = connect(seqs[2]).await.expect("the WebSocket opens again");
    let next = loop {
        let message = timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let WsMessage::Text(text) = message {
            api.remember(text.as_str().to_owned());
            break serde_json::from_str::<Value>(text.as_str()).expect("JSON");
        }
    };
    assert_eq!(
        next["seq"].as_u64(),
        Some(seqs[2] + 1),
        "resumed right after {}",
        seqs[2]
    );
    let _ = socket.close(None).await;
    drop(socket);
    let no_ws_token = api.get("/v1/events/ws", None).await;
    assert_eq!(no_ws_token.status, 401);

    // A send: the Idempotency-Key is required; the same key answers the same message without
    // a second send; another request under it is a conflict.
    let send = |key: Option<&'static str>, text: &'static str| {
        let api = api.clone();
        let token = acme_token.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
            api.call(
                Method::POST,
                "/v1/chips/sales-1/messages",
                Some(&token),
                Some(json!({"chat": CHAT, "text": text, "choreography": false})),
                &headers,
            )
            .await
        }
    };
    let keyless = send(None, "hello").await;
    assert_eq!(
        (keyless.status, keyless.code()),
        (400, "idempotency_key_required".to_owned())
    );
    let sent = send(Some("order-1"), "hello").await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let receipt = sent.json();
    assert_eq!(receipt["status"], "sent");
    assert_eq!(receipt["replayed"], false);
    let message_id = receipt["message_id"]
        .as_str()
        .expect("WAHA's message id")
        .to_owned();
    let replay = send(Some("order-1"), "hello").await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["replayed"], true);
    assert_eq!(replay.json()["message_id"], message_id.as_str());
    let reused = send(Some("order-1"), "another text").await;
    assert_eq!(
        (reused.status, reused.code()),
        (409, "idempotency_conflict".to_owned())
    );
    let control = harness
        .embedded
        .control_for(&acme)
        .await
        .expect("acme's simulator");
    let sends = control
        .calls_for(session.as_str())
        .into_iter()
        .filter(|call| call.route.starts_with("/api/sendText"))
        .count();
    assert_eq!(sends, 1, "one key, one sendText");

    // Message status, by id and by key, moved forward by the acks; another tenant sees none.
    let path = format!("/v1/messages/{message_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let answer = api.get(&path, Some(&acme_token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let status = answer.json();
        if status["ack"] == "read" {
            break status;
        }
        assert!(Instant::now() < deadline, "acked to read: {status}");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["idempotency_key"], "order-1");
    assert_eq!(status["chip"], "sales-1");
    assert_eq!(status["chat"], CHAT);
    assert_eq!(status["status"], "sent");
    let by_key = api
        .get("/v1/messages?idempotency_key=order-1", Some(&acme_token))
        .await;
    assert_eq!(by_key.json()["message_id"], message_id.as_str());
    assert_eq!(api.get(&path, Some(&globex_token)).await.status, 404);
    assert_eq!(
        api.get("/v1/messages?idempotency_key=order-1", Some(&globex_token))
            .await
            .status,
        404
    );

    // Metrics: the supervisor's chips by phase, and the service's requests.
    let scraped = api.get("/metrics", None).await;
    assert_eq!(scraped.status, 200);
    let text = scraped.text();
    for phase in PhaseName::ALL {
        let series = format!("supervisor_chips{{phase=\"{}\"}}", phase.as_str());
        assert!(text.contains(&series), "{series} in /metrics");
    }
    assert!(
        text.contains("chipservice_http_requests_total{"),
        "request counters"
    );

    // Admin: limits, suspension, token rotation, webhook key rotation, offboarding.
    let limited = api
        .call(
            Method::PUT,
            "/v1/tenants/acme/limits",
            Some(ADMIN),
            Some(json!({"max_chips": 1, "max_running_sessions": 5, "max_sends_per_day": 100})),
            &[],
        )
        .await;
    assert_eq!(limited.status, 200, "{}", limited.text());
    assert_eq!(limited.json()["limits"]["max_chips"], 1);
    let full = api
        .post(
            "/v1/chips",
            Some(&acme_token),
            Some(json!({"id": "sales-2"})),
        )
        .await;
    assert_eq!(
        (full.status, full.code()),
        (422, "quota_exceeded".to_owned()),
        "{}",
        full.text()
    );
    let full_body = full.json();
    let error = &full_body["error"];
    assert_eq!(
        (
            error["limit"].clone(),
            error["max"].clone(),
            error["in_use"].clone()
        ),
        (json!("max_chips"), json!(1), json!(1))
    );

    let suspended = api
        .post("/v1/tenants/globex/suspend", Some(ADMIN), None)
        .await;
    assert_eq!(suspended.json()["status"], "suspended");
    let refused = api
        .post(
            "/v1/chips",
            Some(&globex_token),
            Some(json!({"id": "other-2"})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "tenant_inactive".to_owned())
    );
    assert_eq!(refused.json()["error"]["reason"], "suspended");
    let reactivated = api
        .post("/v1/tenants/globex/reactivate", Some(ADMIN), None)
        .await;
    assert_eq!(reactivated.json()["status"], "active");

    let rotated = api
        .post("/v1/tenants/acme/token/rotate", Some(ADMIN), None)
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_token = rotated.json()["api_token"]
        .as_str()
        .expect("a new token")
        .to_owned();
    assert_ne!(new_token, acme_token);
    assert_eq!(
        api.get("/v1/chips", Some(&acme_token)).await.status,
        401,
        "the old token stops working"
    );
    assert_eq!(api.get("/v1/chips", Some(&new_token)).await.status, 200);
    let acme_token = new_token;

    let rotation = api
        .post(
            "/v1/tenants/acme/webhook-key/rotate?wait_secs=30",
            Some(ADMIN),
            None,
        )
        .await;
    assert!(matches!(rotation.status, 200 | 202), "{}", rotation.text());
    assert_eq!(rotation.json()["started"], true);
    let rotated_secrets = harness
        .embedded
        .directory()
        .get(&acme)
        .await
        .unwrap()
        .secrets;
    secrets_seen.push(rotated_secrets.webhook_hmac_key.expose_secret().to_owned());

    let offboarded = api
        .post(
            "/v1/tenants/globex/offboard?wait_secs=60",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(offboarded.status, 200, "{}", offboarded.text());
    assert_eq!(offboarded.json()["tenant"]["status"], "deleted");
    assert_eq!(offboarded.json()["chips"], json!(["other-1"]));
    assert_eq!(
        api.get("/v1/chips", Some(&globex_token)).await.status,
        401,
        "an offboarded tenant's token"
    );

    // The chip's lifecycle actions, then its deletion.
    for (action, desired) in [
        ("stop", "stopped"),
        ("start", "running"),
        ("restart", "running"),
        ("logout", "running"),
    ] {
        let answer = api
            .post(
                &format!("/v1/chips/sales-1/{action}"),
                Some(&acme_token),
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{action}: {}", answer.text());
        assert_eq!(answer.json()["desired"], desired, "{action}");
    }
    let deleted = api
        .call(
            Method::DELETE,
            "/v1/chips/sales-1",
            Some(&acme_token),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    assert_eq!(deleted.json()["desired"], "deleted");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = api.get("/v1/chips/sales-1", Some(&acme_token)).await;
        if answer.status == 404 {
            assert_eq!(answer.code(), "chip_not_found");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleted within 60 s: {}",
            answer.text()
        );
        sleep(Duration::from_millis(200)).await;
    }

    // No body, event or message the service sent carries a tenant's container API key or
    // webhook HMAC key.
    let seen = api
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        seen.len() > 50,
        "the check read the traffic ({} bodies)",
        seen.len()
    );
    for secret in &secrets_seen {
        assert!(secret.len() >= 16);
        for body in &seen {
            assert!(
                !body.contains(secret.as_str()),
                "a tenant secret left the service in a body of {} bytes",
                body.len()
            );
        }
    }

    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_unknown_ones_are_json_404() {
    let harness = start(false).await;
    let api = harness.api.clone();
    let documented: BTreeSet<_> = documented_routes().into_iter().collect();
    assert!(documented.len() >= 30, "{documented:?}");
    for (method, path) in &documented {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{chip}", "sales-1")
            .replace("{message_id}", "m1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let answer = api.call(method.clone(), &concrete, None, None, &[]).await;
        assert_ne!(answer.status, 405, "{method} {path} is routed");
        assert_ne!(
            answer.code(),
            "route_not_found",
            "{method} {path} is routed"
        );
    }
    let unknown = api.get("/v1/nothing-here", None).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "route_not_found".to_owned())
    );
    let served = api.get("/openapi.json", None).await.json();
    assert_eq!(served, openapi_document());
    for (method, path) in &documented {
        assert!(
            served["paths"][*path][method.to_ascii_lowercase().as_str()].is_object(),
            "{method} {path} in /openapi.json"
        );
    }
    let disabled = api.get("/metrics", None).await;
    assert_eq!(
        (disabled.status, disabled.code()),
        (404, "metrics_disabled".to_owned())
    );
    harness.stop().await;
}

/// Kills the child if the test ends before it exited.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_on_sigterm_with_its_leases_released() {
    let child = Command::new(env!("CARGO_BIN_EXE_chip-service"))
        .env("CHIPSERVICE_ADMIN_TOKEN", ADMIN)
        .env("CHIPSERVICE_LISTEN", "127.0.0.1:0")
        .env("CHIPSERVICE_LOG", "warn")
        .env("CHIPSERVICE_EMBEDDED_TIME_SCALE", "0.25")
        .env("CHIPSERVICE_DRAIN_TIMEOUT_SECS", "5")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard
        .0
        .as_mut()
        .and_then(|child| child.stdout.take())
        .expect("its stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let addr = timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if let Some(addr) = line.strip_prefix("chip-service listening on http://") {
                return Some(addr.to_owned());
            }
        }
        None
    })
    .await
    .expect("it listens within 60 s")
    .expect("it prints its address");
    let api = Api::new(format!("http://{addr}"));
    assert_eq!(api.get("/readyz", None).await.status, 200);
    let token = create_tenant(&api, "acme").await;
    let created = api
        .post("/v1/chips", Some(&token), Some(json!({"id": "sales-1"})))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    // Owned once its owner worked on it.
    wait_for_chip(
        &api,
        &token,
        "sales-1",
        Duration::from_secs(60),
        "provisioned",
        |c| c["phase"] == "awaiting_login",
    )
    .await;

    let pid = guard.0.as_ref().map(Child::id).expect("a pid");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut child = guard.0.take().expect("the child");
    let exited = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let (child, status) = match timeout(Duration::from_secs(60), exited).await {
        Ok(joined) => joined.expect("the wait joins"),
        Err(_) => panic!("the binary did not exit within 60 s of SIGTERM"),
    };
    drop(child);
    let status = status.expect("its exit status");
    assert!(status.success(), "exit status {status}");
    let mut stopped = None;
    while let Ok(Some(line)) = timeout(Duration::from_secs(5), lines.recv()).await {
        if let Some(report) = line.strip_prefix("chip-service stopped: ") {
            stopped = Some(report.to_owned());
        }
    }
    let report = stopped.expect("it printed its shutdown report");
    assert!(report.contains("1 tenants released"), "{report}");
}
