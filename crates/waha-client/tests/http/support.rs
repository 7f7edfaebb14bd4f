//! A fake WAHA server with a loud catch-all, and a client with fast retries.

use std::time::Duration;

use serde_json::{Value, json};
use waha_client::{ApiKey, ClientConfig, RetryConfig, WahaClient};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

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
    WahaClient::with_config(server.uri().parse().unwrap(), ApiKey::new(API_KEY), config).unwrap()
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

/// A 127.0.0.1 port with nothing listening.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
