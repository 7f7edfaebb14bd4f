//! Every error row of CONTRACT.md maps to its typed error.

use std::time::Duration;

use serde_json::json;
use waha_client::{
    ApiKey, ClientConfig, HealthSource, NewSession, RetryConfig, SessionConfig, SessionStatus,
    Timeouts, TransientCause, WahaApi, WahaClient, WahaError,
};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn unauthorized() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/api/sessions"))
        .respond_with(json_response(
            401,
            json!({"statusCode":401,"message":"Unauthorized"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).list_sessions(false).await.unwrap_err();
    assert!(
        matches!(err, WahaError::Unauthorized { status: 401 }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn list_with_a_bad_all_is_invalid() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/api/sessions"))
        .and(query_param("all", "true"))
        .respond_with(json_response(
            400,
            error_body(400, json!(["all must be a boolean value"]), "Bad Request"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).list_sessions(true).await.unwrap_err();
    match err {
        WahaError::Invalid { messages } => assert_eq!(messages, ["all must be a boolean value"]),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn session_not_found_on_get_put_start_restart_logout_me() {
    let server = server().await;
    let not_found = || json_response(404, error_body(404, "Session not found", "Not Found"));
    for (verb, route) in [
        ("GET", "/api/sessions/ghost"),
        ("PUT", "/api/sessions/ghost"),
        ("POST", "/api/sessions/ghost/start"),
        ("POST", "/api/sessions/ghost/restart"),
        ("POST", "/api/sessions/ghost/logout"),
        ("GET", "/api/sessions/ghost/me"),
    ] {
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(not_found())
            .expect(1)
            .mount(&server)
            .await;
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
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .and(wiremock::matchers::body_partial_json(
            json!({"name": "taken"}),
        ))
        .respond_with(json_response(
            422,
            error_body(
                422,
                "Session 'taken' already exists. Use PUT to update it.",
                "Unprocessable Entity",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .and(wiremock::matchers::body_partial_json(json!({"name": "other"})))
        .respond_with(json_response(
            422,
            error_body(
                422,
                "WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - please get WAHA PLUS version.",
                "Unprocessable Entity",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .and(wiremock::matchers::body_partial_json(
            json!({"name": "bad"}),
        ))
        .respond_with(json_response(
            400,
            error_body(
                400,
                json!([
                    "config.webhooks.0.url must be a URL address",
                    "config.metadata must be a string map"
                ]),
                "Bad Request",
            ),
        ))
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
    Mock::given(method("PUT"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(
            400,
            error_body(
                400,
                "Unexpected token } in JSON at position 10",
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

#[tokio::test]
async fn already_started() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path("/api/sessions/s1/start"))
        .respond_with(json_response(
            422,
            error_body(
                422,
                "Session 's1' is already started.",
                "Unprocessable Entity",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).start_session("s1").await.unwrap_err();
    assert!(matches!(err, WahaError::AlreadyStarted { .. }), "{err:?}");
}

#[tokio::test]
async fn qr_not_ready_without_status_code_and_qr_not_running() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/api/starting/auth/qr"))
        .respond_with(json_response(
            422,
            json!({"error":"Session status is not as expected. Try again later or restart the session",
                   "session":"starting","status":"STARTING","expected":["SCAN_QR_CODE"]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/stopped/auth/qr"))
        .respond_with(json_response(
            404,
            error_body(
                404,
                "We didn't find a session with name 'stopped'. Please start it first by using POST /api/sessions/stopped/start request",
                "Not Found",
            ),
        ))
        .expect(1)
        .mount(&server)
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
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(json_response(
            422,
            error_body(
                422,
                "The feature is available only in Plus version",
                "Unprocessable Entity",
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(json_response(200, json!({"message":"pong"})))
        .expect(1)
        .mount(&server)
        .await;
    let health = client(&server).health().await.unwrap();
    assert_eq!(health.source, HealthSource::Ping);
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn health_report_and_unhealthy() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(json_response(
            200,
            json!({"status":"ok","info":{},"error":{},"details":{"sessions":{"status":"up"}}}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(json_response(503, json!({"status":"error","details":{}})))
        .mount(&server)
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
        Mock::given(method("GET"))
            .and(path(format!("/api/sessions/{session}")))
            .respond_with(ResponseTemplate::new(status).set_body_string("<html>bad gateway</html>"))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/api/sessions"))
        .respond_with(ResponseTemplate::new(400))
        .expect(1)
        .mount(&server)
        .await;
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
    Mock::given(method("GET"))
        .and(path("/api/server/version"))
        .respond_with(json_response(
            500,
            error_body(500, "Internal server error", "Internal"),
        ))
        .expect(1)
        .mount(&server)
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
    Mock::given(method("GET"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(
            200,
            json!({"name":"s1","status":"WORKING","me":{"id":42}}),
        ))
        .expect(1)
        .mount(&server)
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
        ApiKey::new(API_KEY),
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
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(
            json_response(200, json!({"message":"pong"})).set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/sessions/slow/stop"))
        .respond_with(
            json_response(201, session_json("slow", "STOPPED"))
                .set_delay(Duration::from_millis(400)),
        )
        .expect(1)
        .mount(&server)
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
        WahaClient::new("ftp://127.0.0.1/".parse().unwrap(), ApiKey::new("k")),
        Err(WahaError::Invalid { .. })
    ));
    assert!(matches!(
        WahaClient::new(
            "http://127.0.0.1/".parse().unwrap(),
            ApiKey::new("bad\nkey")
        ),
        Err(WahaError::Invalid { .. })
    ));
    assert!(server.received_requests().await.unwrap().is_empty());
}
