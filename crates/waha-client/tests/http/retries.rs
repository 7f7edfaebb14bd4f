//! Only transient errors are retried, only where repeating is safe, within the time budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;
use waha_client::{
    ApiKey, ClientConfig, NewSession, RetryConfig, SessionConfig, TextMessage, TransientCause,
    WahaApi, WahaClient, WahaError,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn create_503_twice_then_201_succeeds() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(json_response(201, session_json("s1", "STOPPED")))
        .expect(1)
        .mount(&server)
        .await;
    let created = client(&server)
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.name, "s1");
}

#[tokio::test]
async fn create_while_booting_400_then_201_succeeds() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(ResponseTemplate::new(400).set_body_string("Bad Request"))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(json_response(201, session_json("s1", "STOPPED")))
        .expect(1)
        .mount(&server)
        .await;
    let created = client(&server)
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap();
    assert!(created.is_some());
}

#[tokio::test]
async fn create_exists_is_not_retried() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(json_response(
            422,
            error_body(
                422,
                "Session 's1' already exists. Use PUT to update it.",
                "Unprocessable Entity",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, WahaError::AlreadyExists { .. }), "{err:?}");
}

#[tokio::test]
async fn send_text_is_not_repeated_once_it_may_have_arrived() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sendText"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .send_text(&TextMessage::new("s1", "5511999999999@c.us", "hello"))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "the error is transient; the call is not repeatable"
    );
}

#[tokio::test]
async fn probes_are_not_retried() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    assert!(client(&server).ping().await.is_err());
}

#[tokio::test]
async fn retries_stop_at_max_retries() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/s1"))
        .respond_with(ResponseTemplate::new(502))
        .expect(4)
        .mount(&server)
        .await;
    let api = client_with(
        &server,
        ClientConfig {
            retry: RetryConfig {
                max_retries: 3,
                ..fast_retries()
            },
            ..ClientConfig::default()
        },
    );
    let err = api.get_session("s1").await.unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Unavailable { status: 502 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn retries_stop_at_the_time_budget() {
    let server = server().await;
    Mock::given(method("DELETE"))
        .and(path("/api/sessions/s1"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let api = client_with(
        &server,
        ClientConfig {
            retry: RetryConfig {
                max_retries: 1000,
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(50),
                max_elapsed: Duration::from_millis(400),
                jitter: false,
            },
            ..ClientConfig::default()
        },
    );
    let started = Instant::now();
    assert!(api.delete_session("s1").await.is_err());
    // A functional bound, not a speed goal: the budget stops a 1000-retry policy early.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let attempts = server.received_requests().await.unwrap().len();
    assert!((2..=9).contains(&attempts), "{attempts} attempts");
}

#[tokio::test]
async fn validation_errors_are_not_retried() {
    let server = server().await;
    Mock::given(method("PUT"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(
            400,
            error_body(
                400,
                json!(["config.proxy.server should not be empty"]),
                "Bad Request",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .update_session("s1", &SessionConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WahaError::Invalid { .. }), "{err:?}");
}

/// `max_elapsed` bounds the whole call: an attempt is cut to the time left, even when the
/// operation's own time-out is much longer.
#[tokio::test]
async fn the_time_budget_bounds_a_slow_attempt() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(
            json_response(201, session_json("s1", "STOPPED")).set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let api = client_with(
        &server,
        ClientConfig {
            // The default session time-out (30 s) is far longer than the budget.
            retry: RetryConfig {
                max_elapsed: Duration::from_millis(300),
                ..fast_retries()
            },
            ..ClientConfig::default()
        },
    );
    let started = Instant::now();
    let err = api
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        WahaError::Transient {
            cause: TransientCause::Timeout,
            detail,
        } => assert!(detail.contains("budget"), "{detail}"),
        other => panic!("expected Transient(Timeout), got {other:?}"),
    }
    // A functional bound, not a speed goal: without the budget this takes 5 s.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

/// Fails the first name lookup (the request never leaves the client), then resolves to
/// 127.0.0.1.
struct FailFirstLookup {
    lookups: AtomicUsize,
}

impl Resolve for FailFirstLookup {
    fn resolve(&self, _name: Name) -> Resolving {
        let first = self.lookups.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if first {
                Err("no such host (test)".into())
            } else {
                let addrs: Addrs = Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
                Ok(addrs)
            }
        })
    }
}

#[tokio::test]
async fn send_text_is_retried_when_the_connection_never_opened() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sendText"))
        .respond_with(json_response(
            201,
            json!({"id": "true_5511999999999@c.us_AAA"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let resolver = Arc::new(FailFirstLookup {
        lookups: AtomicUsize::new(0),
    });
    let http = reqwest::Client::builder()
        .dns_resolver(resolver.clone())
        .build()
        .unwrap();
    let port = server.address().port();
    let api = WahaClient::with_http_client(
        format!("http://waha.test:{port}").parse().unwrap(),
        ApiKey::new(API_KEY),
        ClientConfig {
            retry: fast_retries(),
            ..ClientConfig::default()
        },
        http,
    )
    .unwrap();
    let sent = api
        .send_text(&TextMessage::new("s1", "5511999999999@c.us", "hello"))
        .await
        .unwrap();
    assert_eq!(sent.id.as_deref(), Some("true_5511999999999@c.us_AAA"));
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        2,
        "one failed lookup, one retry"
    );
}
