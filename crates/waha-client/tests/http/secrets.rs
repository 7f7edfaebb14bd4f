//! No secret appears in `Debug`, `Display` or any error, even when the server echoes it.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use waha_client::{
    ApiKey, ClientConfig, CustomHeader, HmacKey, ProxyConfig, SessionConfig, SessionStatus,
    TransientCause, WahaApi, WahaClient, WahaError, WebhookConfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const PROXY_PASSWORD: &str = "proxy-pw-7781";
const HMAC_KEY: &str = "hmac-key-9924";
const HEADER_TOKEN: &str = "Bearer header-token-3310";

fn secret_config() -> SessionConfig {
    let mut webhook = WebhookConfig::new("http://127.0.0.1:9/hook", ["message"])
        .signed_with(HMAC_KEY)
        .unwrap();
    webhook.custom_headers.push(CustomHeader {
        name: "Authorization".into(),
        value: HEADER_TOKEN.into(),
    });
    SessionConfig {
        proxy: Some(ProxyConfig::new("127.0.0.1:3128").with_credentials("user", PROXY_PASSWORD)),
        webhooks: vec![webhook],
        ..SessionConfig::default()
    }
}

fn assert_clean(text: &str) {
    for secret in [API_KEY, PROXY_PASSWORD, HMAC_KEY, "header-token-3310"] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked in: {text}"
        );
    }
}

fn every_error_kind() -> Vec<WahaError> {
    vec![
        WahaError::Unauthorized { status: 401 },
        WahaError::NotFound {
            message: "Session not found".into(),
        },
        WahaError::AlreadyExists {
            message: "exists".into(),
        },
        WahaError::AlreadyStarted {
            message: "started".into(),
        },
        WahaError::NotReady {
            session: Some("s1".into()),
            status: Some(SessionStatus::Starting),
            expected: vec![SessionStatus::ScanQrCode],
        },
        WahaError::Invalid {
            messages: vec!["bad".into()],
        },
        WahaError::SingleSessionServer {
            message: "only default".into(),
        },
        WahaError::Transient {
            cause: TransientCause::Booting,
            detail: "booting".into(),
        },
        WahaError::Api {
            status: 500,
            body: "{}".into(),
        },
        WahaError::Decode {
            operation: "get_session",
            path: "config".into(),
            message: "x".into(),
        },
        WahaError::SessionNotCreated { name: "s1".into() },
        WahaError::ResponseTooLarge {
            operation: "get_session",
            limit: 1024,
        },
        WahaError::EmptyHmacKey,
        WahaError::SignatureMissing,
        WahaError::SignatureMalformed {
            reason: "not hexadecimal",
        },
        WahaError::SignatureMismatch,
        WahaError::UnsupportedSignatureAlgorithm {
            algorithm: "md5".into(),
        },
    ]
}

#[tokio::test]
async fn client_config_and_errors_never_show_secrets() {
    let server = server().await;
    let config = secret_config();
    let mut echoed = session_json("s1", "WORKING");
    echoed["config"] = serde_json::to_value(&config).unwrap();

    // WAHA echoes secrets in clear text; every error built from such answers must redact them.
    Mock::given(method("GET"))
        .and(path("/api/sessions/s500"))
        .respond_with(json_response(500, echoed.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/s503"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_string(format!("upstream said: WAHA_API_KEY={API_KEY}")),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/s400"))
        .respond_with(json_response(400, echoed.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/s422"))
        .respond_with(json_response(
            422,
            json!({"message": format!("odd {API_KEY}"), "config": echoed["config"]}),
        ))
        .mount(&server)
        .await;
    let mut bad_password = echoed.clone();
    bad_password["config"]["proxy"]["password"] = json!(778_123_456);
    Mock::given(method("GET"))
        .and(path("/api/sessions/decode"))
        .respond_with(json_response(200, bad_password))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/ok"))
        .respond_with(json_response(200, echoed))
        .mount(&server)
        .await;

    let api = client_with(
        &server,
        ClientConfig {
            retry: waha_client::RetryConfig::disabled(),
            ..ClientConfig::default()
        },
    );
    assert_clean(&format!("{api:?}"));
    assert_clean(&format!("{config:?}"));

    let with_password = WahaClient::new(
        format!("http://user:url-pass-5555@127.0.0.1:{}/", closed_port())
            .parse()
            .unwrap(),
        ApiKey::new(API_KEY),
    )
    .unwrap();
    let shown = format!("{with_password:?}");
    assert!(!shown.contains("url-pass-5555"), "{shown}");

    let mut errors = every_error_kind();
    for name in ["s500", "s503", "s400", "s422", "decode"] {
        errors.push(api.get_session(name).await.unwrap_err());
    }
    errors.push(with_password.ping().await.unwrap_err());
    let kinds: std::collections::BTreeSet<_> = errors.iter().map(WahaError::kind).collect();
    assert_eq!(kinds.len(), 17, "every variant is covered: {kinds:?}");
    for err in &errors {
        assert_clean(&format!("{err} | {err:?}"));
    }

    // A decoded session keeps its secrets usable but prints none of them.
    let info = api.get_session("ok").await.unwrap();
    assert_clean(&format!("{info:?}"));
    let proxy = info.config.unwrap().proxy.unwrap();
    assert_eq!(proxy.password.unwrap().expose_secret(), PROXY_PASSWORD);
    assert_clean(&format!("{:?}", HmacKey::new(HMAC_KEY)));
}

#[tokio::test]
async fn decode_errors_never_quote_a_custom_header_value() {
    let server = server().await;
    let mut answer = session_json("s1", "WORKING");
    // A wrong type makes serde quote the value in its message.
    answer["config"] = json!({"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": [],
        "customHeaders": [{"name": "X-Token", "value": 55_443_322}]}]});
    Mock::given(method("GET"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(200, answer))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).get_session("s1").await.unwrap_err();
    let WahaError::Decode { path, .. } = &err else {
        panic!("expected Decode, got {err:?}");
    };
    assert_eq!(path, "config.webhooks[0].customHeaders[0].value");
    let shown = format!("{err} | {err:?}");
    assert!(!shown.contains("55443322"), "{shown}");
}

#[tokio::test]
async fn environment_answers_are_redacted_in_errors() {
    let server = server().await;
    // What `GET /api/server/environment` returns, here as the body of an unexpected answer.
    Mock::given(method("GET"))
        .and(path("/api/server/version"))
        .respond_with(json_response(
            500,
            json!({"WAHA_API_KEY": API_KEY, "WAHA_DASHBOARD_PASSWORD": "dash-pw-1",
                   "WHATSAPP_SWAGGER_PASSWORD": "swag-pw-2",
                   "WHATSAPP_SESSIONS_POSTGRESQL_URL": "postgres://waha:db-pw-3@db:5432/waha",
                   "WHATSAPP_DEFAULT_ENGINE": "NOWEB"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).version().await.unwrap_err();
    let shown = format!("{err} | {err:?}");
    for secret in [API_KEY, "dash-pw-1", "swag-pw-2", "db-pw-3"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(shown.contains("NOWEB") && shown.contains("postgres://waha:<redacted>@db"));
}

/// Every log line of the test's thread, as text.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A retried call logs a warning per retry; no log line carries a secret or the body.
#[tokio::test]
async fn retry_logs_carry_no_secret_and_no_body() {
    const BODY_MARKER: &str = "body-marker-4471";
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = server().await;
    let mut echoed = session_json("s1", "WORKING");
    echoed["config"] = serde_json::to_value(secret_config()).unwrap();
    let mut unavailable = echoed.clone();
    unavailable["note"] = json!(format!("{BODY_MARKER} key={API_KEY}"));
    Mock::given(method("GET"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(503, unavailable))
        .up_to_n_times(2)
        .expect(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/sessions/s1"))
        .respond_with(json_response(200, echoed))
        .expect(1)
        .mount(&server)
        .await;
    let info = client(&server).get_session("s1").await.unwrap();
    assert_eq!(info.name, "s1");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("retrying").count(),
        2,
        "two retries are logged: {text}"
    );
    assert!(
        text.contains("get_session") && text.contains("503"),
        "{text}"
    );
    assert_clean(&text);
    assert!(
        !text.contains(BODY_MARKER),
        "the body reached the logs: {text}"
    );
}
