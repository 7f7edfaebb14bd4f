//! chip-service end to end on the embedded default, through real HTTP on 127.0.0.1: the REST
//! flow a host uses (tenant, chip, QR, scan, WORKING, send, acks, message status), a chip
//! that logs in with a pairing code, auth (no token, a bad token, another tenant's chip on
//! every chip route, a tenant token on admin routes), the SSE and WebSocket streams resumed
//! after a disconnect and the gaps they report, `/metrics` counting the chips by phase, the
//! admin operations, secrets never leaving the service (but in the one answer that hands each
//! out), every documented route served, and the binary's graceful exit on SIGTERM with its
//! streams closed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use chip_service::EmbeddedOptions;
use chip_service::service::{documented_routes, openapi_document};
use futures::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reqwest::Method;
use serde_json::{Value, json};
use session_supervisor::{ChipKey, PhaseName};
use tenant_isolation::{ChipId, TenantId};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{
    ADMIN, Answer, CHAT, PNG_MAGIC, Service, build_embedded, embedded_options, scan_when_ready,
    serve,
};

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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a request answered ([`Answer`], its fields and methods through `Deref`), and its
/// number among the bodies the client received.
struct Recorded {
    answer: Answer,
    /// Its number among the bodies the client received ([`Api::remember`]).
    seen: usize,
}

impl Deref for Recorded {
    type Target = Answer;

    fn deref(&self) -> &Answer {
        &self.answer
    }
}

/// A body the client received, and what answered it.
#[derive(Clone)]
struct Seen {
    /// `METHOD /path?query`, `SSE /path?query` or `WS /path?query`.
    from: String,
    body: String,
}

/// A secret, and the bodies that may carry it (by number): the one answer that hands it out.
struct Secret {
    what: &'static str,
    value: String,
    allowed: Vec<usize>,
}

/// An HTTP client (the plain [`common::Api`]) that keeps every body it received and the
/// secrets the test learned, for the secrets check ([`Api::assert_no_secret_leaked`]).
#[derive(Clone)]
struct Api {
    plain: common::Api,
    seen: Arc<Mutex<Vec<Seen>>>,
    secrets: Arc<Mutex<Vec<Secret>>>,
}

impl Api {
    fn new(base: String) -> Self {
        Api {
            plain: common::Api::new(base, None),
            seen: Arc::new(Mutex::new(Vec::new())),
            secrets: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Keeps a body received from `from`; answers its number.
    fn remember(&self, from: impl Into<String>, body: String) -> usize {
        let mut seen = lock(&self.seen);
        seen.push(Seen {
            from: from.into(),
            body,
        });
        seen.len() - 1
    }

    /// `value` is a secret (`what` names its kind, never the value): it may appear in the
    /// body numbered `allowed` (`None`: in no body at all). Learning the same value again adds
    /// the body that carried it this time.
    fn secret(&self, what: &'static str, value: &str, allowed: Option<usize>) {
        assert!(
            !value.is_empty(),
            "{what}: an empty secret cannot be searched for"
        );
        let mut secrets = lock(&self.secrets);
        match secrets.iter_mut().find(|known| known.value == value) {
            Some(known) => known.allowed.extend(allowed),
            None => secrets.push(Secret {
                what,
                value: value.to_owned(),
                allowed: allowed.into_iter().collect(),
            }),
        }
    }

    /// No body received (JSON answers, errors, SSE and WebSocket events, `/metrics`,
    /// `/openapi.json`, PNGs) carries a secret the test learned, but the answers that handed
    /// it out. Answers how many bodies were searched.
    fn assert_no_secret_leaked(&self) -> usize {
        let seen = lock(&self.seen).clone();
        let secrets = lock(&self.secrets);
        for secret in secrets.iter() {
            for (number, body) in seen.iter().enumerate() {
                if secret.allowed.contains(&number) {
                    continue;
                }
                assert!(
                    !body.body.contains(secret.value.as_str()),
                    "{} left the service in the answer of {} (body #{number}, {} bytes)",
                    secret.what,
                    body.from,
                    body.body.len()
                );
            }
        }
        seen.len()
    }

    /// Whether a body received from something starting with `from` was kept.
    fn saw_from(&self, from: &str) -> bool {
        lock(&self.seen)
            .iter()
            .any(|seen| seen.from.starts_with(from))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Recorded {
        let from = format!("{method} {path}");
        let answer = self.plain.call(method, path, token, body, headers).await;
        let seen = self.remember(from, answer.text());
        Recorded { answer, seen }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Recorded {
        self.call(Method::GET, path, token, None, &[]).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Recorded {
        self.call(Method::POST, path, token, body, &[]).await
    }

    async fn sse(&self, path: &str, token: &str, last_event_id: Option<u64>) -> Sse {
        let mut request = self
            .plain
            .http
            .get(format!("{}{path}", self.plain.base))
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
            from: format!("SSE {path}"),
        }
    }
}

/// A WebSocket to the service.
type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket `path` (with its query) at `authority` (`host:port`) with `token`.
async fn ws_open(authority: &str, path: &str, token: &str) -> Ws {
    let mut request = format!("ws://{authority}{path}")
        .into_client_request()
        .expect("a WebSocket request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    socket
}

/// The next text message of `socket` as JSON (kept for the secrets check as from `from`),
/// within 10 s.
async fn ws_next(api: &Api, socket: &mut Ws, from: &str) -> Value {
    loop {
        let message = timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let WsMessage::Text(text) = message {
            api.remember(from, text.as_str().to_owned());
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

/// The value of the Prometheus series `series` (name and labels, exactly as rendered) in
/// `text`, rounded to a whole number.
fn gauge(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|value| value.round() as u64)
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
    /// `SSE /path?query`.
    from: String,
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
                self.api.remember(self.from.clone(), data.clone());
                let data = serde_json::from_str(&data).expect("SSE data is JSON");
                return Some(SseEvent { event, id, data });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = timeout(left, self.response.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads the body to its end within `within`: `Ok` when it ended cleanly (its last
    /// chunk), an error naming what happened instead (still open, or the connection failed).
    /// What it still carried is kept for the secrets check.
    async fn end(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.response.chunk()).await {
                Err(_) => return Err(format!("still open after {within:?}")),
                Ok(Err(error)) => return Err(format!("the body failed: {error}")),
                Ok(Ok(None)) => {
                    let rest = std::mem::take(&mut self.buffer);
                    self.api.remember(self.from.clone(), rest);
                    return Ok(());
                }
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
            }
        }
    }
}

/// The embedded default served by the service on 127.0.0.1, and a recording client of it.
struct Harness {
    service: Service,
    api: Api,
}

/// The service on [`embedded_options`], the supervisor running when `started` (with
/// `/metrics`). Only one test of this file starts its supervisor: the supervisors' gauges are
/// the process's.
async fn start(started: bool) -> Harness {
    start_with(started, embedded_options()).await
}

async fn start_with(started: bool, options: EmbeddedOptions) -> Harness {
    let handle = metrics();
    let embedded = build_embedded(options, started).await;
    let service = serve(embedded, started.then_some(handle)).await;
    Harness {
        api: Api::new(format!("http://{}", service.addr)),
        service,
    }
}

impl Harness {
    async fn stop(self) {
        self.service.stop().await;
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
    api.secret("a tenant API token", &token, Some(created.seen));
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
    let authority = harness.service.addr.to_string();
    api.secret("the admin token", ADMIN, None);

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
    for tenant in [&acme, &globex] {
        let stored = harness
            .service
            .embedded
            .directory()
            .get(tenant)
            .await
            .unwrap()
            .secrets;
        let key = stored.container_api_key.expose_secret();
        let hmac = stored.webhook_hmac_key.expose_secret();
        assert!(key.len() >= 16 && hmac.len() >= 16);
        api.secret("a container API key", key, None);
        api.secret("a webhook HMAC key", hmac, None);
    }

    // A third tenant's chip logs in with a pairing code: the code is served by its endpoint
    // only, to its tenant only; the chip's events, view and list say that one is on offer and
    // until when, never the code (the secrets check below searches every other body for it).
    let initech_token = create_tenant(&api, "initech").await;
    let mut pairing_events = api
        .sse("/v1/events?chip=pair-1", &initech_token, None)
        .await;
    let pairing = api
        .post(
            "/v1/chips",
            Some(&initech_token),
            Some(json!({"id": "pair-1", "login": "pairing_code", "phone": "5511999990002"})),
        )
        .await;
    assert_eq!(pairing.status, 201, "{}", pairing.text());
    assert_eq!(pairing.json()["login"], "pairing_code");
    assert_eq!(pairing.json()["phone"], "5511999990002");
    let offered = wait_for_chip(
        &api,
        &initech_token,
        "pair-1",
        Duration::from_secs(60),
        "a pairing code on offer",
        |c| {
            c["phase"] == "awaiting_login"
                && c["login_offer"]["kind"] == "pairing_code"
                && c["login_offer"]["code_available"] == true
        },
    )
    .await;
    assert_eq!(offered["phase"], "awaiting_login", "{offered}");
    assert_eq!(offered["phase_detail"]["method"], "pairing_code");
    assert!(
        offered["login_offer"]["expires_at_ms"].is_u64(),
        "{offered}"
    );
    let code_answer = api
        .get("/v1/chips/pair-1/pairing-code", Some(&initech_token))
        .await;
    assert_eq!(code_answer.status, 200, "{}", code_answer.text());
    assert_eq!(
        code_answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let pairing_code = code_answer.json()["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(pairing_code.len() >= 8, "a pairing code");
    api.secret("a pairing code", &pairing_code, Some(code_answer.seen));
    assert_eq!(
        code_answer.json()["expires_at_ms"],
        offered["login_offer"]["expires_at_ms"]
    );
    let foreign_code = api
        .get("/v1/chips/pair-1/pairing-code", Some(&acme_token))
        .await;
    assert_eq!(
        (foreign_code.status, foreign_code.code()),
        (404, "chip_not_found".to_owned()),
        "another tenant's pairing code"
    );
    let mut pairing_kinds: Vec<String> = Vec::new();
    while !pairing_kinds.iter().any(|k| k == "pairing_code") {
        let event = pairing_events
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("SSE: pairing_code; saw {pairing_kinds:?}"));
        assert_eq!(event.data["chip"], "pair-1");
        if event.data["kind"] == "pairing_code" {
            assert!(event.data["expires_at_ms"].is_u64(), "{}", event.data);
            assert!(event.data.get("code").is_none(), "the event has no code");
        }
        pairing_kinds.push(event.data["kind"].as_str().unwrap_or_default().to_owned());
    }
    drop(pairing_events);
    // The WebSocket replays the same changes, without the code either.
    let mut pairing_socket = ws_open(
        &authority,
        "/v1/events/ws?chip=pair-1&after=0",
        &initech_token,
    )
    .await;
    loop {
        let message = ws_next(&api, &mut pairing_socket, "WS /v1/events/ws?chip=pair-1").await;
        assert_eq!(message["type"], "change", "{message}");
        if message["kind"] == "pairing_code" {
            break;
        }
    }
    let _ = pairing_socket.close(None).await;
    drop(pairing_socket);
    for path in ["/v1/chips/pair-1", "/v1/chips"] {
        let answer = api.get(path, Some(&initech_token)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert!(
            !answer.text().contains(pairing_code.as_str()),
            "{path} shows the pairing code"
        );
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
        "/v1/chips/sales-1/pairing-code",
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
    let foreign_send = api
        .call(
            Method::POST,
            "/v1/chips/sales-1/messages",
            Some(&globex_token),
            Some(json!({"chat": CHAT, "text": "not yours", "choreography": false})),
            &[("Idempotency-Key", "foreign-1")],
        )
        .await;
    assert_eq!(
        (foreign_send.status, foreign_send.code()),
        (404, "chip_not_found".to_owned()),
        "a send from another tenant's chip: {}",
        foreign_send.text()
    );
    let foreign_delete = api
        .call(
            Method::DELETE,
            "/v1/chips/sales-1",
            Some(&globex_token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (foreign_delete.status, foreign_delete.code()),
        (404, "chip_not_found".to_owned()),
        "a delete of another tenant's chip"
    );
    let untouched = api.get("/v1/chips/sales-1", Some(&acme_token)).await;
    assert_eq!(
        untouched.json()["desired"],
        "running",
        "{}",
        untouched.text()
    );
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
        let raw_value = raw.json()["value"].as_str().map(str::to_owned);
        if raw.status == 200
            && let Some(value) = &raw_value
        {
            api.secret("a raw QR value", value, Some(raw.seen));
        }
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
    scan_when_ready(&harness.service.embedded, &acme, session.as_str()).await;
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
            harness.service.addr
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
            api.remember("WS /v1/events/ws?chip=sales-1", text.as_str().to_owned());
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
            api.remember("WS /v1/events/ws?chip=sales-1", text.as_str().to_owned());
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
        .service
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

    // Metrics: the supervisor's chips by phase, and the service's requests. The gauge is
    // refreshed by the supervisor's silent-death scan (every 2 s in the embedded default): it
    // must come to count acme's working chip among the 3 chips (sales-1 working, globex's
    // other-1 and initech's pair-1 not logged in).
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let scraped = api.get("/metrics", None).await;
        assert_eq!(scraped.status, 200);
        let text = scraped.text();
        let working = gauge(&text, "supervisor_chips{phase=\"working\"}");
        let total: u64 = PhaseName::ALL
            .into_iter()
            .filter_map(|phase| {
                gauge(
                    &text,
                    &format!("supervisor_chips{{phase=\"{}\"}}", phase.as_str()),
                )
            })
            .sum();
        if working == Some(1) && total == 3 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "supervisor_chips: {working:?} working of {total} chips, not 1 of 3, within 30 s"
        );
        sleep(Duration::from_millis(500)).await;
    };
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
    api.secret("a tenant API token", &new_token, Some(rotated.seen));
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
        .service
        .embedded
        .directory()
        .get(&acme)
        .await
        .unwrap()
        .secrets;
    api.secret(
        "a webhook HMAC key",
        rotated_secrets.webhook_hmac_key.expose_secret(),
        None,
    );

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

    // No body the service sent (answers, errors, SSE and WebSocket events, `/metrics`,
    // `/openapi.json`) carries the admin token, a tenant's container API key or webhook HMAC
    // key; a tenant API token appears only in the answer that created or rotated it, a raw QR
    // value only in the raw-QR answer that carried it, a pairing code only in the
    // pairing-code answer.
    let openapi = api.get("/openapi.json", None).await;
    assert_eq!(openapi.status, 200);
    // The dashboard's assets too.
    for asset in ["/dashboard", "/dashboard/app.js", "/dashboard/app.css"] {
        assert_eq!(api.get(asset, None).await.status, 200, "{asset}");
    }
    for from in [
        "SSE /v1/events",
        "WS /v1/events/ws",
        "GET /metrics",
        "GET /openapi.json",
        "GET /dashboard",
        "GET /dashboard/app.js",
        "GET /dashboard/app.css",
        "GET /v1/chips/sales-1/qr/raw",
        "GET /v1/chips/pair-1/pairing-code",
        "POST /v1/tenants/acme/token/rotate",
    ] {
        assert!(api.saw_from(from), "the secrets check reads {from}");
    }
    assert!(
        lock(&api.seen)
            .iter()
            .any(|seen| seen.body.contains("\"error\"")),
        "the secrets check reads error bodies"
    );
    let searched = api.assert_no_secret_leaked();
    assert!(
        searched > 50,
        "the check read the traffic ({searched} bodies)"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_what_the_bus_holds_or_ahead_of_it_gets_a_gap() {
    timeout(Duration::from_secs(120), gaps())
        .await
        .expect("the gap checks finish within 120 s");
}

/// What a stream answers first when it resumes from a number the bus no longer holds (or
/// never gave out): a `gap` naming where to resume, then what it still holds.
async fn gaps() {
    // A bus that keeps each tenant's 2 newest changes. The supervisor does not run (the flow
    // test's owns the process's gauges): the changes are the chips' creations, numbered 1 to 4.
    let harness = start_with(
        false,
        EmbeddedOptions {
            event_history: 2,
            ..embedded_options()
        },
    )
    .await;
    let api = harness.api.clone();
    let authority = harness.service.addr.to_string();
    let token = create_tenant(&api, "acme").await;
    for n in 1..=4 {
        let created = api
            .post(
                "/v1/chips",
                Some(&token),
                Some(json!({"id": format!("gap-{n}")})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
    }

    // SSE, resumed after 1: 2 was let go (the bus holds 3 and 4): a gap, then 3 and 4.
    let mut resumed = api.sse("/v1/events", &token, Some(1)).await;
    let gap = resumed
        .next(Duration::from_secs(10))
        .await
        .expect("the resumed stream answers");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.id, None, "a gap has no id");
    assert_eq!(gap.data, json!({"missed": 1, "resume_after": 1}));
    for expected in [3, 4] {
        let change = resumed
            .next(Duration::from_secs(10))
            .await
            .expect("what the bus holds is replayed");
        assert_eq!(
            (change.event.as_str(), change.id),
            ("change", Some(expected))
        );
        assert_eq!(change.data["kind"], "created");
        assert_eq!(change.data["chip"], format!("gap-{expected}"));
    }
    drop(resumed);

    // Resumed after 2, the bus holds everything that follows: no gap.
    let mut whole = api.sse("/v1/events", &token, Some(2)).await;
    let first = whole
        .next(Duration::from_secs(10))
        .await
        .expect("the resumed stream replays");
    assert_eq!((first.event.as_str(), first.id), ("change", Some(3)));
    drop(whole);

    // The WebSocket, resumed after 0: 1 and 2 were let go.
    let mut socket = ws_open(&authority, "/v1/events/ws?after=0", &token).await;
    let gap = ws_next(&api, &mut socket, "WS /v1/events/ws?after=0").await;
    assert_eq!(
        gap,
        json!({"type": "gap", "missed": 2, "resume_after": 0}),
        "{gap}"
    );
    for expected in [3, 4] {
        let change = ws_next(&api, &mut socket, "WS /v1/events/ws?after=0").await;
        assert_eq!(change["type"], "change", "{change}");
        assert_eq!(change["seq"], expected, "{change}");
    }
    let _ = socket.close(None).await;
    drop(socket);

    // A cursor ahead of the head (numbers from before a restart): a gap naming the head, then
    // the live changes from there.
    let mut ahead = api.sse("/v1/events?after=40", &token, None).await;
    let gap = ahead
        .next(Duration::from_secs(10))
        .await
        .expect("the stream answers a cursor ahead of the head");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.data, json!({"missed": 0, "resume_after": 4}));
    let created = api
        .post("/v1/chips", Some(&token), Some(json!({"id": "gap-5"})))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let live = ahead
        .next(Duration::from_secs(10))
        .await
        .expect("the live change after the gap");
    assert_eq!((live.event.as_str(), live.id), ("change", Some(5)));
    assert_eq!(live.data["chip"], "gap-5");
    drop(ahead);

    api.assert_no_secret_leaked();
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

/// How long the binary gets to exit after SIGTERM: well inside its drain timeout
/// ([`DRAIN_TIMEOUT_SECS`]), so a stream that does not close (and holds the drain until it
/// times out) fails the test.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// The drain timeout the binary runs with.
const DRAIN_TIMEOUT_SECS: &str = "30";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_on_sigterm_with_its_streams_closed_and_leases_released() {
    let child = Command::new(env!("CARGO_BIN_EXE_chip-service"))
        .env("CHIPSERVICE_ADMIN_TOKEN", ADMIN)
        .env("CHIPSERVICE_LISTEN", "127.0.0.1:0")
        // Every request is logged at info: the logs are searched for the tokens below.
        .env("CHIPSERVICE_LOG", "info")
        .env("CHIPSERVICE_LOG_JSON", "false")
        .env("CHIPSERVICE_EMBEDDED_TIME_SCALE", "0.25")
        .env("CHIPSERVICE_DRAIN_TIMEOUT_SECS", DRAIN_TIMEOUT_SECS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard
        .0
        .as_mut()
        .and_then(|child| child.stdout.take())
        .expect("its stdout");
    let mut stderr = guard
        .0
        .as_mut()
        .and_then(|child| child.stderr.take())
        .expect("its stderr");
    // Both pipes are read to their end (a full pipe would block the binary); stdout's lines
    // are also handed over as they come.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
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
    api.secret("the admin token", ADMIN, None);
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

    // Two open event streams: the shutdown must end both.
    let mut sse = api.sse("/v1/events", &token, None).await;
    let mut socket = ws_open(&addr, "/v1/events/ws", &token).await;

    let pid = guard.0.as_ref().map(Child::id).expect("a pid");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let signalled = Instant::now();

    // The SSE body ends: its last chunk, not a connection cut when the drain timed out.
    if let Err(problem) = sse.end(EXIT_WITHIN).await {
        panic!("the SSE stream did not end after SIGTERM: {problem}");
    }
    drop(sse);
    // The WebSocket gets a close frame (or ends), not an error.
    let left = EXIT_WITHIN.saturating_sub(signalled.elapsed());
    let closed = timeout(left, async {
        loop {
            match socket.next().await {
                None => return "ended".to_owned(),
                Some(Ok(WsMessage::Close(_))) => return "closed".to_owned(),
                Some(Ok(WsMessage::Text(text))) => {
                    api.remember("WS /v1/events/ws", text.as_str().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return format!("failed: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the WebSocket stayed open {left:?} after SIGTERM"));
    assert!(
        closed == "closed" || closed == "ended",
        "the WebSocket was not closed after SIGTERM: it {closed}"
    );
    drop(socket);

    // The binary exits 0, well inside the drain timeout.
    let mut child = guard.0.take().expect("the child");
    let exited = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let left = EXIT_WITHIN.saturating_sub(signalled.elapsed());
    let (child, status) = match timeout(left, exited).await {
        Ok(joined) => joined.expect("the wait joins"),
        Err(_) => panic!(
            "the binary did not exit within {EXIT_WITHIN:?} of SIGTERM (drain timeout \
             {DRAIN_TIMEOUT_SECS} s)"
        ),
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

    // Neither its output nor its logs carry the admin token or the tenant's API token.
    let stdout = stdout_reader.join().expect("the stdout reader");
    let stderr = stderr_reader.join().expect("the stderr reader");
    assert!(
        stderr.contains("chip-service starting") && stderr.contains("/v1/chips"),
        "the logs were read ({} bytes)",
        stderr.len()
    );
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains(ADMIN),
            "the admin token is in the binary's {name}"
        );
        assert!(
            !text.contains(token.as_str()),
            "the tenant's API token is in the binary's {name}"
        );
    }
    api.assert_no_secret_leaked();
}
