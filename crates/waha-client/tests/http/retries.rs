//! Only transient errors are retried, only where repeating is safe, within the time budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;
use waha_client::{
    ApiKey, ClientConfig, NewSession, RetryConfig, SessionConfig, SessionStatus, TextMessage,
    TransientCause, WahaApi, WahaClient, WahaError,
};
use wiremock::ResponseTemplate;

use crate::support::*;

#[tokio::test]
async fn create_503_twice_then_201_succeeds() {
    let server = server().await;
    mount_first(&server, "POST /api/sessions", ResponseTemplate::new(503), 2).await;
    mount(
        &server,
        "POST /api/sessions",
        json_response(201, session_json("s1", "STOPPED")),
        1,
    )
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
    mount_first(
        &server,
        "POST /api/sessions",
        ResponseTemplate::new(400).set_body_string("Bad Request"),
        1,
    )
    .await;
    mount(
        &server,
        "POST /api/sessions",
        json_response(201, session_json("s1", "STOPPED")),
        1,
    )
    .await;
    let created = client(&server)
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap()
        .expect("the retried create answers the session");
    assert_eq!(created.name, "s1");
    assert_eq!(created.status, SessionStatus::Stopped);
}

#[tokio::test]
async fn create_exists_is_not_retried() {
    let server = server().await;
    mount(&server, "POST /api/sessions", already_exists("s1"), 1).await;
    let err = client(&server)
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, WahaError::AlreadyExists { .. }), "{err:?}");
}

#[tokio::test]
async fn send_text_is_not_repeated_once_it_may_have_arrived() {
    let server = server().await;
    mount(&server, "POST /api/sendText", ResponseTemplate::new(503), 1).await;
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
    mount(&server, "GET /ping", ResponseTemplate::new(503), 1).await;
    let err = client(&server).ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Unavailable { status: 503 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn retries_stop_at_max_retries() {
    let server = server().await;
    mount(
        &server,
        "GET /api/sessions/s1",
        ResponseTemplate::new(502),
        4,
    )
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
    stub(
        &server,
        "DELETE /api/sessions/s1",
        ResponseTemplate::new(503),
    )
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
    let err = api.delete_session("s1").await.unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Unavailable { status: 503 } | TransientCause::Timeout,
                ..
            }
        ),
        "the budget ends the retries with the last transient answer: {err:?}"
    );
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
    mount(
        &server,
        "PUT /api/sessions/s1",
        bad_request(json!(["config.proxy.server should not be empty"])),
        1,
    )
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
    stub(
        &server,
        "POST /api/sessions",
        json_response(201, session_json("s1", "STOPPED")).set_delay(Duration::from_secs(5)),
    )
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
    mount(
        &server,
        "POST /api/sendText",
        json_response(201, json!({"id": "true_5511999999999@c.us_AAA"})),
        1,
    )
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
        ApiKey::new(API_KEY).unwrap(),
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
