//! Every error answer of `docs/waha-contract.md` maps to its typed error.

use std::time::Duration;

use serde_json::json;
use waha_client::{
    ApiKey, ClientConfig, HealthSource, NewSession, RetryConfig, SessionConfig, SessionStatus,
    Timeouts, TransientCause, WahaApi, WahaClient, WahaError, WebhookConfig,
};
use wiremock::ResponseTemplate;

use crate::support::*;

/// Old Core's answer to `GET /health`.
fn plus_only() -> ResponseTemplate {
    unprocessable("The feature is available only in Plus version")
}

#[tokio::test]
async fn unauthorized() {
    let server = server().await;
    mount(
        &server,
        "GET /api/sessions",
        json_response(401, json!({"statusCode":401,"message":"Unauthorized"})),
        1,
    )
    .await;
    let err = client(&server).list_sessions(false).await.unwrap_err();
    assert!(
        matches!(err, WahaError::Unauthorized { status: 401 }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

/// `docs/waha-contract.md`, "Session config": a metadata value that is not a string, an
/// unknown event name (`"*"` included), a webhook `url` that is not a URL and a proxy without
/// `server` are each a 400, in NestJS's ValidationPipe shape (`message` a list). Two of them
/// this client can send (events and URLs are free strings).
#[tokio::test]
async fn create_with_an_unknown_event_or_a_bad_url_is_invalid() {
    let server = server().await;
    on("POST /api/sessions")
        .and(wiremock::matchers::body_partial_json(
            json!({"config": {"webhooks": [{"events": ["*"]}]}}),
        ))
        .respond_with(bad_request(json!([
            "config.webhooks.0.each value in events must be one of the following values: session.status, message, message.any, message.ack"
        ])))
        .expect(1)
        .mount(&server)
        .await;
    on("POST /api/sessions")
        .and(wiremock::matchers::body_partial_json(
            json!({"config": {"webhooks": [{"url": "not a url"}]}}),
        ))
        .respond_with(bad_request(json!([
            "config.webhooks.0.url must be a URL address"
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let api = client(&server);
    let with_webhook = |url: &str, event: &str| {
        let mut config = SessionConfig::default();
        config.webhooks.push(WebhookConfig::new(url, [event]));
        NewSession::new("s1", config)
    };
    match api
        .create_session(&with_webhook("http://127.0.0.1:9/hook", "*"))
        .await
        .unwrap_err()
    {
        WahaError::Invalid { messages } => assert!(messages[0].contains("events"), "{messages:?}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    match api
        .create_session(&with_webhook("not a url", "message"))
        .await
        .unwrap_err()
    {
        WahaError::Invalid { messages } => {
            assert_eq!(messages, ["config.webhooks.0.url must be a URL address"]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A NestJS error body whose `message` is a string (a parse pipe's `Validation failed (...)`,
/// the body parser's JSON message) judges the request: `Invalid`, not retried. Only a 400
/// that is not a NestJS error body is taken for a booting server.
#[tokio::test]
async fn which_400s_are_invalid_and_which_are_booting() {
    let server = server().await;
    let invalid = [
        (
            "s-pipe",
            bad_request("Validation failed (boolean string is expected)"),
            "Validation failed (boolean string is expected)",
        ),
        (
            "s-parser",
            bad_request("Unexpected token } in JSON at position 10"),
            "Unexpected token } in JSON at position 10",
        ),
        (
            "s-bare",
            json_response(400, json!({"statusCode": 400, "error": "Bad Request"})),
            "Bad Request",
        ),
    ];
    let booting = [
        ("b-empty", ResponseTemplate::new(400)),
        (
            "b-html",
            ResponseTemplate::new(400)
                .set_body_raw("<html><h1>400 Bad Request</h1></html>", "text/html"),
        ),
        (
            "b-text",
            ResponseTemplate::new(400).set_body_string("Bad Request"),
        ),
        (
            "b-json",
            json_response(400, json!({"message": "server is starting"})),
        ),
    ];
    for (name, answer, _) in &invalid {
        mount(
            &server,
            format!("GET /api/sessions/{name}"),
            answer.clone(),
            1,
        )
        .await;
    }
    for (name, answer) in &booting {
        mount(
            &server,
            format!("GET /api/sessions/{name}"),
            answer.clone(),
            1,
        )
        .await;
    }
    // Retries on: an Invalid answer must be asked once only (`expect(1)`).
    let api = client(&server);
    for (name, _, message) in invalid {
        match api.get_session(name).await.unwrap_err() {
            WahaError::Invalid { messages } => assert_eq!(messages, [message], "{name}"),
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
    }
    let api = single_shot(&server);
    for (name, _) in booting {
        let err = api.get_session(name).await.unwrap_err();
        assert!(
            matches!(
                err,
                WahaError::Transient {
                    cause: TransientCause::Booting,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
    }
}

#[tokio::test]
async fn long_non_ascii_value_in_a_wrong_typed_field_is_a_decode_error() {
    let server = server().await;
    // Both parities: one of them puts byte 300 of serde's message inside a character.
    for (name, prefix) in [("even", ""), ("odd", "x")] {
        let mut answer = session_json(name, "WORKING");
        answer["config"] = json!({"debug": format!("{prefix}{}", "é".repeat(400))});
        mount(
            &server,
            format!("GET /api/sessions/{name}"),
            json_response(200, answer),
            1,
        )
        .await;
    }
    let api = client(&server);
    for name in ["even", "odd"] {
        match api.get_session(name).await.unwrap_err() {
            WahaError::Decode { path, message, .. } => {
                assert_eq!(path, "config.debug");
                assert!(message.starts_with("invalid type: string"), "{message}");
                // String values are never quoted (one could hold a secret).
                assert!(!message.contains('é'), "{message}");
                assert!(message.len() < 340, "bounded: {} bytes", message.len());
            }
            other => panic!("expected Decode, got {other:?}"),
        }
    }
}

/// `docs/waha-contract.md`, "Sessions": `GET /api/sessions` always answers an array. An empty
/// 200 is not "no sessions" (a reconciler would conclude that every session is gone) but an
/// answer it cannot read.
#[tokio::test]
async fn an_empty_session_list_body_is_a_decode_error() {
    let server = server().await;
    mount(&server, "GET /api/sessions", ResponseTemplate::new(200), 2).await;
    let api = client(&server);
    for all in [false, true] {
        match api.list_sessions(all).await {
            Err(WahaError::Decode {
                operation,
                path,
                message,
            }) => {
                assert_eq!(operation, "list_sessions");
                assert_eq!(path, ".");
                assert!(message.contains("empty"), "{message}");
            }
            other => panic!("expected Decode, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn health_fallback_reports_a_failing_ping() {
    let server = server().await;
    mount(&server, "GET /health", plus_only(), 1).await;
    mount(&server, "GET /ping", ResponseTemplate::new(503), 1).await;
    let err = client(&server).health().await.unwrap_err();
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
async fn an_answer_over_the_size_limit_is_refused() {
    let server = server().await;
    let mut big = session_json("big", "WORKING");
    big["config"] = json!({"metadata": {"filler": "x".repeat(4096)}});
    mount(
        &server,
        "GET /api/sessions/big",
        json_response(200, big.clone()),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/bigerror",
        json_response(500, big),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/small",
        json_response(200, session_json("small", "WORKING")),
        1,
    )
    .await;
    let api = client_with(
        &server,
        ClientConfig {
            retry: fast_retries(),
            max_response_bytes: 1024,
            ..ClientConfig::default()
        },
    );
    for name in ["big", "bigerror"] {
        let err = api.get_session(name).await.unwrap_err();
        assert!(
            matches!(
                err,
                WahaError::ResponseTooLarge {
                    operation: "get_session",
                    limit: 1024
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(api.get_session("small").await.unwrap().name, "small");
}

/// A chunked answer (no `Content-Length`) is cut off while it streams in.
#[tokio::test]
async fn a_chunked_answer_over_the_size_limit_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let _ = socket.read(&mut request).await;
                let chunk = format!("{:x}\r\n{}\r\n", 600, "x".repeat(600));
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                for _ in 0..3 {
                    let _ = socket.write_all(chunk.as_bytes()).await;
                    let _ = socket.flush().await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let api = WahaClient::with_config(
        format!("http://{address}").parse().unwrap(),
        ApiKey::new(API_KEY).unwrap(),
        ClientConfig {
            retry: RetryConfig::disabled(),
            max_response_bytes: 1024,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let err = api.list_sessions(true).await.unwrap_err();
    assert!(
        matches!(err, WahaError::ResponseTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn session_not_found_on_get_put_start_restart_logout_me() {
    let server = server().await;
    for route in [
        "GET /api/sessions/ghost",
        "PUT /api/sessions/ghost",
        "POST /api/sessions/ghost/start",
        "POST /api/sessions/ghost/restart",
        "POST /api/sessions/ghost/logout",
        "GET /api/sessions/ghost/me",
    ] {
        mount(&server, route, not_found("Session not found"), 1).await;
    }
    let api = client(&server);
    let results = [
        api.get_session("ghost").await.map(drop),
        api.update_session("ghost", &SessionConfig::default())
            .await
            .map(drop),
        api.start_session("ghost").await.map(drop),
        api.restart_session("ghost").await.map(drop),
        api.logout_session("ghost").await,
        api.me("ghost").await.map(drop),
    ];
    for result in results {
        match result {
            Err(WahaError::NotFound { message }) => assert_eq!(message, "Session not found"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn create_conflicts_and_validation() {
    let server = server().await;
    on("POST /api/sessions")
        .and(wiremock::matchers::body_partial_json(
            json!({"name": "taken"}),
        ))
        .respond_with(already_exists("taken"))
        .expect(1)
        .mount(&server)
        .await;
    on("POST /api/sessions")
        .and(wiremock::matchers::body_partial_json(json!({"name": "other"})))
        .respond_with(unprocessable(
            "WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - please get WAHA PLUS version.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    on("POST /api/sessions")
        .and(wiremock::matchers::body_partial_json(
            json!({"name": "bad"}),
        ))
        .respond_with(bad_request(json!([
            "config.webhooks.0.url must be a URL address",
            "config.metadata must be a string map"
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let api = client(&server);
    let create = |name: &str| NewSession::new(name, SessionConfig::default());

    let err = api.create_session(&create("taken")).await.unwrap_err();
    assert!(
        matches!(&err, WahaError::AlreadyExists { message } if message.contains("taken")),
        "{err:?}"
    );
    let err = api.create_session(&create("other")).await.unwrap_err();
    assert!(
        matches!(err, WahaError::SingleSessionServer { .. }),
        "{err:?}"
    );
    match api.create_session(&create("bad")).await.unwrap_err() {
        WahaError::Invalid { messages } => assert_eq!(messages.len(), 2),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_answer_is_invalid() {
    let server = server().await;
    mount(
        &server,
        "PUT /api/sessions/s1",
        bad_request("Unexpected token } in JSON at position 10"),
        1,
    )
    .await;
    let err = client(&server)
        .update_session("s1", &SessionConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, WahaError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn already_started() {
    let server = server().await;
    mount(
        &server,
        "POST /api/sessions/s1/start",
        crate::support::already_started("s1"),
        1,
    )
    .await;
    let err = client(&server).start_session("s1").await.unwrap_err();
    assert!(matches!(err, WahaError::AlreadyStarted { .. }), "{err:?}");
}

#[tokio::test]
async fn qr_not_ready_without_status_code_and_qr_not_running() {
    let server = server().await;
    mount(
        &server,
        "GET /api/starting/auth/qr",
        json_response(
            422,
            json!({"error":"Session status is not as expected. Try again later or restart the session",
                   "session":"starting","status":"STARTING","expected":["SCAN_QR_CODE"]}),
        ),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/stopped/auth/qr",
        not_found(
            "We didn't find a session with name 'stopped'. Please start it first by using POST /api/sessions/stopped/start request",
        ),
        1,
    )
    .await;
    let api = client(&server);
    match api.qr_png("starting").await.unwrap_err() {
        WahaError::NotReady {
            session,
            status,
            expected,
        } => {
            assert_eq!(session.as_deref(), Some("starting"));
            assert_eq!(status, Some(SessionStatus::Starting));
            assert_eq!(expected, [SessionStatus::ScanQrCode]);
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(matches!(
        api.qr_raw("stopped").await.unwrap_err(),
        WahaError::NotFound { .. }
    ));
}

#[tokio::test]
async fn health_falls_back_to_ping_on_old_core() {
    let server = server().await;
    mount(&server, "GET /health", plus_only(), 1).await;
    mount(
        &server,
        "GET /ping",
        json_response(200, json!({"message":"pong"})),
        1,
    )
    .await;
    let health = client(&server).health().await.unwrap();
    assert_eq!(health.source, HealthSource::Ping);
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn health_report_and_unhealthy() {
    let server = server().await;
    on("GET /health")
        .respond_with(json_response(
            200,
            json!({"status":"ok","info":{},"error":{},"details":{"sessions":{"status":"up"}}}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    stub(
        &server,
        "GET /health",
        json_response(503, json!({"status":"error","details":{}})),
    )
    .await;
    let api = client(&server);
    let health = api.health().await.unwrap();
    assert_eq!(health.source, HealthSource::Health);
    assert!(health.details.contains_key("sessions"));
    let err = api.health().await.unwrap_err();
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
async fn gateway_errors_and_booting_400_are_transient() {
    let server = server().await;
    for (status, session) in [(502, "a"), (503, "b"), (504, "c")] {
        mount(
            &server,
            format!("GET /api/sessions/{session}"),
            ResponseTemplate::new(status).set_body_string("<html>bad gateway</html>"),
            1,
        )
        .await;
    }
    mount(&server, "POST /api/sessions", ResponseTemplate::new(400), 1).await;
    let api = single_shot(&server);
    for (status, session) in [(502, "a"), (503, "b"), (504, "c")] {
        let err = api.get_session(session).await.unwrap_err();
        assert!(
            matches!(err, WahaError::Transient { cause: TransientCause::Unavailable { status: s }, .. } if s == status),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }
    let err = api
        .create_session(&NewSession::new("s1", SessionConfig::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Booting,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn unexpected_status_is_api_with_status_and_body() {
    let server = server().await;
    mount(
        &server,
        "GET /api/server/version",
        json_response(500, error_body(500, "Internal server error", "Internal")),
        1,
    )
    .await;
    match client(&server).version().await.unwrap_err() {
        WahaError::Api { status, body } => {
            assert_eq!(status, 500);
            assert!(body.contains("Internal server error"));
        }
        other => panic!("expected Api, got {other:?}"),
    }
}

#[tokio::test]
async fn decode_error_names_the_path() {
    let server = server().await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, json!({"name":"s1","status":"WORKING","me":{"id":42}})),
        1,
    )
    .await;
    match client(&server).get_session("s1").await.unwrap_err() {
        WahaError::Decode {
            operation, path, ..
        } => {
            assert_eq!(operation, "get_session");
            assert_eq!(path, "me.id");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_transient_connect() {
    let port = closed_port();
    let api = WahaClient::with_config(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
        ApiKey::new(API_KEY).unwrap(),
        ClientConfig {
            retry: RetryConfig::disabled(),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let err = api.ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.request_not_sent());
    assert!(
        !err.to_string().contains(&port.to_string()),
        "URL stripped: {err}"
    );
}

#[tokio::test]
async fn per_operation_timeouts() {
    let server = server().await;
    stub(
        &server,
        "GET /ping",
        json_response(200, json!({"message":"pong"})).set_delay(Duration::from_secs(2)),
    )
    .await;
    mount(
        &server,
        "POST /api/sessions/slow/stop",
        json_response(201, session_json("slow", "STOPPED")).set_delay(Duration::from_millis(400)),
        1,
    )
    .await;
    let api = client_with(
        &server,
        ClientConfig {
            timeouts: Timeouts {
                probe: Duration::from_millis(100),
                session: Duration::from_secs(5),
                ..Timeouts::default()
            },
            retry: fast_retries(),
            ..ClientConfig::default()
        },
    );
    let err = api.ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            WahaError::Transient {
                cause: TransientCause::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    // The slow session operation outlives the probe time-out and succeeds.
    let stopped = api.stop_session("slow").await.unwrap().unwrap();
    assert_eq!(stopped.status, SessionStatus::Stopped);
}

#[tokio::test]
async fn bad_input_is_refused_before_sending() {
    let server = server().await;
    let api = client(&server);
    let long = "x".repeat(55);
    for name in ["", "..", long.as_str()] {
        assert!(
            matches!(api.get_session(name).await, Err(WahaError::Invalid { .. })),
            "{name:?}"
        );
    }
    assert!(matches!(
        api.request_pairing_code("s1", "+55 11 9999").await,
        Err(WahaError::Invalid { .. })
    ));
    assert!(matches!(
        WahaClient::new(
            "ftp://127.0.0.1/".parse().unwrap(),
            ApiKey::new("k").unwrap()
        ),
        Err(WahaError::Invalid { .. })
    ));
    // A key that could not travel in a header (a line break) cannot even be built.
    assert!(ApiKey::new("bad\nkey").is_err());
    assert!(server.received_requests().await.unwrap().is_empty());
}
