//! No secret appears in `Debug`, `Display` or any error, even when the server echoes it.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use waha_client::{
    ApiKey, ClientConfig, CustomHeader, HmacKey, ProxyConfig, SessionConfig, SessionStatus,
    TransientCause, WahaApi, WahaClient, WahaError, WebhookConfig,
};
use wiremock::ResponseTemplate;

use crate::support::*;

const PROXY_PASSWORD: &str = "proxy-pw-7781";
const HMAC_KEY: &str = "hmac-key-9924";
const HEADER_TOKEN: &str = "Bearer header-token-3310";
/// A webhook URL with credentials, a capability token in the path and one in the query (the
/// shapes of n8n, Slack or Discord hook URLs and of `?token=` receivers).
const WEBHOOK_URL: &str =
    "https://hook-user-1313:hook-pw-1212@hooks.example:8443/hook-path-4545?token=hook-token-8080";
/// A proxy whose credentials sit in `server` rather than in `username`/`password`.
const INLINE_PROXY: &str = "proxy-inline-user-3535:proxy-inline-pw-3434@127.0.0.1:3128";

fn secret_config() -> SessionConfig {
    let mut webhook =
        WebhookConfig::new(WEBHOOK_URL, ["message"]).signed_with(HmacKey::new(HMAC_KEY).unwrap());
    webhook.custom_headers.push(CustomHeader {
        name: "Authorization".into(),
        value: HeaderValueSecret::new(HEADER_TOKEN).unwrap(),
    });
    SessionConfig {
        proxy: Some(
            ProxyConfig::new(INLINE_PROXY)
                .with_credentials("user", ProxyPassword::new(PROXY_PASSWORD).unwrap()),
        ),
        webhooks: vec![webhook],
        ..SessionConfig::default()
    }
}

fn assert_clean(text: &str) {
    for secret in [
        API_KEY,
        PROXY_PASSWORD,
        HMAC_KEY,
        "header-token-3310",
        "hook-user-1313",
        "hook-pw-1212",
        "hook-path-4545",
        "hook-token-8080",
        "proxy-inline-user-3535",
        "proxy-inline-pw-3434",
    ] {
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
    ]
}

#[tokio::test]
async fn client_config_and_errors_never_show_secrets() {
    let server = server().await;
    let config = secret_config();
    let mut echoed = session_json("s1", "WORKING");
    echoed["config"] = serde_json::to_value(&config).unwrap();

    // WAHA echoes secrets in clear text; every error built from such answers must redact them.
    let mut bad_password = echoed.clone();
    bad_password["config"]["proxy"]["password"] = json!(778_123_456);
    for (name, answer) in [
        ("s500", json_response(500, echoed.clone())),
        (
            "s503",
            ResponseTemplate::new(503)
                .set_body_string(format!("upstream said: WAHA_API_KEY={API_KEY}")),
        ),
        ("s400", json_response(400, echoed.clone())),
        (
            "s422",
            json_response(
                422,
                json!({"message": format!("odd {API_KEY}"), "config": echoed["config"]}),
            ),
        ),
        ("decode", json_response(200, bad_password)),
        ("ok", json_response(200, echoed)),
    ] {
        stub(&server, format!("GET /api/sessions/{name}"), answer).await;
    }

    let api = client_with(
        &server,
        ClientConfig {
            retry: waha_client::RetryConfig::disabled(),
            ..ClientConfig::default()
        },
    );
    assert_clean(&format!("{api:?}"));
    let shown = format!("{config:?}");
    assert_clean(&shown);
    // What is left is still useful for diagnosis.
    for kept in [
        "https://<redacted>@hooks.example:8443/<redacted>?<redacted>",
        "<redacted>@127.0.0.1:3128",
        "Authorization",
    ] {
        assert!(shown.contains(kept), "{kept} missing in {shown}");
    }
    assert_clean(&format!(
        "{:?}",
        waha_client::NewSession::new("s1", config.clone())
    ));

    let with_password = WahaClient::new(
        format!("http://user:url-pass-5555@127.0.0.1:{}/", closed_port())
            .parse()
            .unwrap(),
        ApiKey::new(API_KEY).unwrap(),
    )
    .unwrap();
    let shown = format!("{with_password:?}");
    assert!(!shown.contains("url-pass-5555"), "{shown}");
    // A token as the user name (`http://<token>@waha:3000`) is a secret too.
    let with_token = WahaClient::new(
        format!("http://url-token-6666@127.0.0.1:{}/", closed_port())
            .parse()
            .unwrap(),
        ApiKey::new(API_KEY).unwrap(),
    )
    .unwrap();
    for shown in [shown, format!("{with_token:?}")] {
        assert!(
            !shown.contains("url-token-6666") && !shown.contains("user:"),
            "{shown}"
        );
        assert!(shown.contains("http://<redacted>@127.0.0.1:"), "{shown}");
    }

    let mut errors = every_error_kind();
    for name in ["s500", "s503", "s400", "s422", "decode"] {
        errors.push(api.get_session(name).await.unwrap_err());
    }
    errors.push(with_password.ping().await.unwrap_err());
    let kinds: std::collections::BTreeSet<_> = errors.iter().map(WahaError::kind).collect();
    assert_eq!(kinds.len(), 12, "every variant is covered: {kinds:?}");
    for err in &errors {
        assert_clean(&format!("{err} | {err:?}"));
    }

    // A decoded session keeps its secrets usable but prints none of them.
    let info = api.get_session("ok").await.unwrap();
    assert_clean(&format!("{info:?}"));
    let proxy = info.config.unwrap().proxy.unwrap();
    assert_eq!(proxy.password.unwrap().expose_secret(), PROXY_PASSWORD);
    assert_clean(&format!("{:?}", HmacKey::new(HMAC_KEY).unwrap()));
}

#[tokio::test]
async fn decode_errors_never_quote_a_custom_header_value() {
    let server = server().await;
    let mut answer = session_json("s1", "WORKING");
    // A wrong type makes serde quote the value in its message.
    answer["config"] = json!({"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": [],
        "customHeaders": [{"name": "X-Token", "value": 55_443_322}]}]});
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, answer),
        1,
    )
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
    mount(
        &server,
        "GET /api/server/version",
        json_response(
            500,
            json!({"WAHA_API_KEY": API_KEY, "WAHA_DASHBOARD_PASSWORD": "dash-pw-1",
                   "WHATSAPP_SWAGGER_PASSWORD": "swag-pw-2",
                   "WHATSAPP_SESSIONS_POSTGRESQL_URL": "postgres://waha:db-pw-3@db:5432/waha",
                   "WHATSAPP_DEFAULT_ENGINE": "NOWEB"}),
        ),
        1,
    )
    .await;
    let err = client(&server).version().await.unwrap_err();
    let shown = format!("{err} | {err:?}");
    for secret in [API_KEY, "dash-pw-1", "swag-pw-2", "db-pw-3"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(shown.contains("NOWEB") && shown.contains("postgres://waha:<redacted>@db"));
}

/// A secret-bearing parent that arrives with the wrong type (a string where WAHA sends an
/// object or a list) must not be quoted by serde's "invalid type: string ..." message; nor may
/// any other string value, such as a webhook URL carrying a token.
#[tokio::test]
async fn decode_errors_never_quote_a_value_under_a_secret_parent() {
    let server = server().await;
    let cases = [
        (
            "hmac",
            json!({"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": [],
                "hmac": "hmac-as-string-5151"}]}),
            "config.webhooks[0].hmac",
            "hmac-as-string-5151",
        ),
        (
            "hmac-number",
            json!({"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": [],
                "hmac": 51_525_354}]}),
            "config.webhooks[0].hmac",
            "51525354",
        ),
        (
            "proxy",
            json!({"proxy": "proxy-as-string-6161"}),
            "config.proxy",
            "proxy-as-string-6161",
        ),
        (
            "header",
            json!({"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": [],
                "customHeaders": ["X-Token: header-as-string-7171"]}]}),
            "config.webhooks[0].customHeaders[0]",
            "header-as-string-7171",
        ),
        (
            "webhook",
            json!({"webhooks": ["https://h.example/p?token=webhook-as-string-8181"]}),
            "config.webhooks[0]",
            "webhook-as-string-8181",
        ),
    ];
    for (name, config, _, _) in &cases {
        let mut answer = session_json(name, "WORKING");
        answer["config"] = config.clone();
        mount(
            &server,
            format!("GET /api/sessions/{name}"),
            json_response(200, answer),
            1,
        )
        .await;
    }
    let api = client(&server);
    for (name, _, expected_path, secret) in cases {
        let err = api.get_session(name).await.unwrap_err();
        let WahaError::Decode { path, .. } = &err else {
            panic!("{name}: expected Decode, got {err:?}");
        };
        assert_eq!(path, expected_path, "{name}");
        let shown = format!("{err} | {err:?}");
        assert!(!shown.contains(secret), "{name}: {shown}");
    }
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
    mount_first(
        &server,
        "GET /api/sessions/s1",
        json_response(503, unavailable),
        2,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, echoed),
        1,
    )
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
