//! A fake WAHA server with a loud catch-all, and a client with fast retries.

use std::time::Duration;

use serde_json::{Value, json};
use waha_client::{ApiKey, ClientConfig, RetryConfig, WahaClient};
pub use waha_client::{HeaderValueSecret, HmacKey, ProxyPassword};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

pub const API_KEY: &str = "test-api-key-5f1d";

/// Answers any request no test expected with 599 and its route, so a test fails naming it.
struct Unmatched;

impl Respond for Unmatched {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(599).set_body_string(format!(
            "unmatched route: {} {}{}",
            request.method,
            request.url.path(),
            request
                .url
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ))
    }
}

pub async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(Unmatched)
        .with_priority(u8::MAX)
        .named("catch-all")
        .mount(&server)
        .await;
    server
}

pub fn fast_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
        jitter: true,
    }
}

pub fn client_with(server: &MockServer, config: ClientConfig) -> WahaClient {
    WahaClient::with_config(
        server.uri().parse().unwrap(),
        ApiKey::new(API_KEY).unwrap(),
        config,
    )
    .unwrap()
}

pub fn client(server: &MockServer) -> WahaClient {
    client_with(
        server,
        ClientConfig {
            retry: fast_retries(),
            ..ClientConfig::default()
        },
    )
}

/// A client that never retries, to see the first answer's mapping.
pub fn single_shot(server: &MockServer) -> WahaClient {
    client_with(
        server,
        ClientConfig {
            retry: RetryConfig::disabled(),
            ..ClientConfig::default()
        },
    )
}

pub fn json_response(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json")
}

pub fn session_json(name: &str, status: &str) -> Value {
    json!({"name": name, "status": status, "config": null, "me": null})
}

/// WAHA's error body.
pub fn error_body(status: u16, message: impl Into<Value>, error: &str) -> Value {
    json!({"statusCode": status, "message": message.into(), "error": error})
}

/// WAHA's error response: `status` with its error body.
fn error_response(status: u16, message: impl Into<Value>, error: &str) -> ResponseTemplate {
    json_response(status, error_body(status, message, error))
}

/// 400 with WAHA's error body; `message` is a string or NestJS's list of messages.
pub fn bad_request(message: impl Into<Value>) -> ResponseTemplate {
    error_response(400, message, "Bad Request")
}

/// 404 with WAHA's error body.
pub fn not_found(message: impl Into<Value>) -> ResponseTemplate {
    error_response(404, message, "Not Found")
}

/// 422 with WAHA's error body.
pub fn unprocessable(message: impl Into<Value>) -> ResponseTemplate {
    error_response(422, message, "Unprocessable Entity")
}

/// WAHA's 422 to creating a session that exists.
pub fn already_exists(name: &str) -> ResponseTemplate {
    unprocessable(format!(
        "Session '{name}' already exists. Use PUT to update it."
    ))
}

/// WAHA's 422 to starting a session that runs.
pub fn already_started(name: &str) -> ResponseTemplate {
    unprocessable(format!("Session '{name}' is already started."))
}

/// A mock for `route`, written `"VERB /path"` (e.g. `"GET /api/sessions/s1"`): it matches that
/// method and that path. Add matchers, then answer and mount it.
pub fn on(route: impl AsRef<str>) -> MockBuilder {
    let route = route.as_ref();
    let (verb, route_path) = route
        .split_once(' ')
        .unwrap_or_else(|| panic!("route {route:?} is not \"VERB /path\""));
    Mock::given(method(verb)).and(path(route_path))
}

/// Answers `route` (`"VERB /path"`) with `response`, which must be asked exactly `times` times.
pub async fn mount(
    server: &MockServer,
    route: impl AsRef<str>,
    response: ResponseTemplate,
    times: u64,
) {
    on(route)
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

/// Answers the first `times` requests to `route` (`"VERB /path"`) with `response`, ahead of
/// the route's other mocks, and expects exactly that many.
pub async fn mount_first(
    server: &MockServer,
    route: impl AsRef<str>,
    response: ResponseTemplate,
    times: u64,
) {
    on(route)
        .respond_with(response)
        .up_to_n_times(times)
        .expect(times)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Answers `route` (`"VERB /path"`) with `response` as often as asked, with no expected count.
pub async fn stub(server: &MockServer, route: impl AsRef<str>, response: ResponseTemplate) {
    on(route).respond_with(response).mount(server).await;
}

/// A 127.0.0.1 port with nothing listening.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
